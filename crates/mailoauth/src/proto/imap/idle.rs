//! IMAP IDLE (RFC 2177) without I/O: start it, hear the folder change, end it
//! with `DONE`; and how a server ends a session or asks to be left alone.
//!
//! Owns: the IDLE exchange's states (waiting for the `+`, idling, waiting for
//! the tagged reply after `DONE`), what counts as a change (`EXISTS`; an
//! `EXPUNGE` or flag `FETCH` is not new mail), and the readings of an end:
//! `* BYE` (Exchange's `Session invalidated - AccessTokenExpired` is an
//! expected end, answered by logging in again) and Exchange's throttling
//! `BAD Request is throttled. Suggested Backoff Time: N milliseconds`. Must
//! not: keep time (the driver re-issues IDLE before the server's 29-minute
//! limit) or do I/O.

use std::time::Duration;

use super::{command, is_ok, tagged};

/// An IDLE exchange on one connection.
#[derive(Debug)]
pub struct Idle {
    tag: String,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Idling,
    Ending,
    Over,
}

/// What a line meant to the IDLE exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// The server accepted IDLE: wait.
    Idling,
    /// The folder has more messages (`* N EXISTS`): end IDLE and look.
    NewMail(u32),
    /// Nothing that matters (expunges, flag changes, keep-alive `* OK`s).
    Nothing,
    /// The IDLE command is over (after `DONE`): the connection can take commands.
    Finished,
    /// The session is over.
    Ended(Ending),
}

/// How a server ended an IDLE (or any) session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// `* BYE …`: the server is closing (shutdown, token expired, idle limit).
    Bye(String),
    /// The server throttles us: wait this long before trying again.
    Throttled(Duration, String),
    /// IDLE was refused (`NO`/`BAD`).
    Refused(String),
}

impl Idle {
    /// Start IDLE under `tag`: the command line to send.
    pub fn start(tag: &str) -> (Idle, Vec<u8>) {
        let i = Idle {
            tag: tag.to_owned(),
            state: State::Starting,
        };
        (i, command(tag, "IDLE"))
    }

    /// The line that ends IDLE; then feed lines until [`Heard::Finished`].
    pub fn done(&mut self) -> &'static [u8] {
        if self.state != State::Over {
            self.state = State::Ending;
        }
        b"DONE\r\n"
    }

    /// Whether IDLE is on (the `+` came, `DONE` not yet sent).
    pub fn idling(&self) -> bool {
        self.state == State::Idling
    }

    /// Feed one line (CRLF stripped).
    pub fn feed(&mut self, line: &str) -> Heard {
        if let Some(st) = tagged(line, &self.tag) {
            self.state = State::Over;
            if is_ok(st) {
                return Heard::Finished;
            }
            return Heard::Ended(match throttled(st) {
                Some(d) => Ending::Throttled(d, st.to_owned()),
                None => Ending::Refused(st.to_owned()),
            });
        }
        if self.state == State::Starting && line.starts_with('+') {
            self.state = State::Idling;
            return Heard::Idling;
        }
        let Some(r) = line.strip_prefix("* ") else {
            return Heard::Nothing;
        };
        if r.len() >= 3 && r[..3].eq_ignore_ascii_case("BYE") {
            self.state = State::Over;
            return Heard::Ended(Ending::Bye(line.to_owned()));
        }
        match r.split_once(' ') {
            Some((n, what)) if what.eq_ignore_ascii_case("EXISTS") => match n.parse() {
                Ok(n) => Heard::NewMail(n),
                Err(_) => Heard::Nothing,
            },
            _ => Heard::Nothing,
        }
    }
}

/// Exchange's throttling reply: `… Suggested Backoff Time: N milliseconds`
/// (any command may get it, not only IDLE).
pub fn throttled(status: &str) -> Option<Duration> {
    let up = status.to_ascii_uppercase();
    if !up.contains("THROTTLED") {
        return None;
    }
    let after = &up[up.find("BACKOFF TIME:")? + 13..];
    let ms: u64 = after.split_whitespace().next()?.parse().ok()?;
    // A server asking for more than an hour is capped: the watcher must come back.
    Some(Duration::from_millis(ms.min(3_600_000)))
}

/// A `BYE` that says the access token ran out (Exchange Online ends a session
/// at the token's expiry): log in again with a fresh token, not an error.
pub fn token_expired(bye: &str) -> bool {
    let up = bye.to_ascii_uppercase();
    up.contains("ACCESSTOKENEXPIRED") || up.contains("SESSION INVALIDATED")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_hears_new_mail_then_ends_with_done() {
        let (mut i, cmd) = Idle::start("w3");
        assert_eq!(cmd, b"w3 IDLE\r\n");
        assert_eq!(i.feed("+ idling"), Heard::Idling);
        assert!(i.idling());
        assert_eq!(i.feed("* 4 EXPUNGE"), Heard::Nothing);
        assert_eq!(i.feed("* 2 FETCH (FLAGS (\\Seen))"), Heard::Nothing);
        assert_eq!(i.feed("* OK Still here"), Heard::Nothing);
        assert_eq!(i.feed("* 9 EXISTS"), Heard::NewMail(9));
        assert_eq!(i.done(), b"DONE\r\n");
        assert!(!i.idling());
        assert_eq!(i.feed("w3 OK Idle completed"), Heard::Finished);
    }

    #[test]
    fn bye_throttling_and_refusal_end_the_session() {
        let (mut i, _) = Idle::start("w1");
        let bye = "* BYE Session invalidated - AccessTokenExpired";
        assert_eq!(i.feed(bye), Heard::Ended(Ending::Bye(bye.into())));
        assert!(token_expired(bye));
        assert!(!token_expired("* BYE Server shutting down."));

        let (mut i, _) = Idle::start("w2");
        let st = "BAD Request is throttled. Suggested Backoff Time: 1500 milliseconds";
        assert_eq!(
            i.feed(&format!("w2 {st}")),
            Heard::Ended(Ending::Throttled(Duration::from_millis(1500), st.into()))
        );
        let (mut i, _) = Idle::start("w3");
        assert_eq!(
            i.feed("w3 NO IDLE not allowed"),
            Heard::Ended(Ending::Refused("NO IDLE not allowed".into()))
        );
        assert_eq!(throttled("BAD Request is throttled"), None);
        assert_eq!(
            throttled("BAD Request is throttled. Suggested Backoff Time: 99999999999 milliseconds"),
            Some(Duration::from_secs(3600))
        );
    }
}
