//! POP3 (RFC 1939) with SASL (RFC 5034) without I/O: the login machine —
//! `+OK` greeting, `STLS`, `CAPA` (`SASL` line), `AUTH <mech>` with the
//! continuation always (one-line initial responses are capped at 255 octets and
//! Office 365 tokens are far longer), the error challenge — and the status and
//! dot-unstuffing helpers for `STAT`, `UIDL`, `RETR`.
//!
//! Must not: do I/O, or put the SASL payload anywhere but a `SendSecret` step.

use super::line::{Lines, strip_prefix_ci};
use super::{Core, Credentials, Failure, Step, refused};

/// Longest server line accepted (RFC 1939 says 512 octets; be lenient with texts).
pub const MAX_LINE: usize = 64 * 1024;

/// The POP3 login machine (drive it through [`super::Login`]).
#[derive(Debug)]
pub struct Login {
    pub(super) core: Core,
    pub(super) state: State,
}

#[derive(Debug)]
pub(super) enum State {
    Greeting { starttls: bool },
    Stls,
    CapaStatus,
    Capa { lines: Lines },
    Continuation { caps: Vec<String> },
    Authenticating { caps: Vec<String> },
    Over,
}

impl Login {
    pub(super) fn new(starttls: bool, creds: Credentials) -> Login {
        Login {
            core: Core::new(crate::service::Service::Pop, creds),
            state: State::Greeting { starttls },
        }
    }
}

impl State {
    pub(super) fn on(&mut self, c: &mut Core, line: &str) {
        let state = std::mem::replace(self, State::Over);
        *self = match state {
            State::Greeting { .. } if !is_ok(line) => {
                c.fail(Failure::Protocol(format!("not a POP3 greeting: {line}")));
                State::Over
            }
            State::Greeting { starttls: true } => {
                c.send("STLS");
                State::Stls
            }
            State::Greeting { starttls: false } => capa(c),
            State::Stls if is_ok(line) => {
                c.out.push_back(Step::StartTls);
                capa(c)
            }
            State::Stls => {
                c.fail(Failure::Protocol(format!("STLS refused: {line}")));
                State::Over
            }
            // A server without CAPA offers no SASL: `choose` says so.
            State::CapaStatus if is_ok(line) => State::Capa {
                lines: Lines::default(),
            },
            State::CapaStatus => authenticate(c, Vec::new()),
            State::Capa { mut lines } => match unstuff(line) {
                None => authenticate(c, lines.take()),
                Some(l) => match lines.push(l) {
                    Ok(()) => State::Capa { lines },
                    Err(f) => {
                        c.fail(f);
                        State::Over
                    }
                },
            },
            State::Continuation { caps } => {
                if line.starts_with('+') && !is_ok(line) {
                    let ir = c.ir().to_owned();
                    c.send_secret(&ir);
                    State::Authenticating { caps }
                } else {
                    c.fail(refused(
                        crate::service::Service::Pop,
                        line.to_owned(),
                        None,
                        "AUTH",
                    ));
                    State::Over
                }
            }
            State::Authenticating { caps } => {
                if is_ok(line) {
                    c.done(caps);
                    State::Over
                } else if is_err(line) {
                    c.refuse(line.to_owned(), "AUTH");
                    State::Over
                } else if let Some(b64) = line.strip_prefix('+') {
                    c.on_challenge(b64);
                    State::Authenticating { caps }
                } else {
                    c.fail(Failure::Protocol(format!("not a POP3 reply: {line}")));
                    State::Over
                }
            }
            State::Over => State::Over,
        };
    }
}

fn capa(c: &mut Core) -> State {
    c.send("CAPA");
    State::CapaStatus
}

fn authenticate(c: &mut Core, caps: Vec<String>) -> State {
    let offered: Vec<String> = caps
        .iter()
        .filter_map(|l| strip_prefix_ci(l, "SASL "))
        .flat_map(|m| m.split_whitespace().map(str::to_owned))
        .collect();
    let Some(mech) = c.choose(&offered) else {
        return State::Over;
    };
    c.send(&format!("AUTH {}", mech.name().to_uppercase()));
    State::Continuation { caps }
}

/// True for a `+OK` status line.
pub fn is_ok(line: &str) -> bool {
    line.starts_with("+OK")
}

/// True for a `-ERR` status line.
pub fn is_err(line: &str) -> bool {
    line.starts_with("-ERR")
}

/// One line of a multi-line response: `None` for the terminating `.`, else the
/// line with its byte-stuffing dot removed.
pub fn unstuff(line: &str) -> Option<&str> {
    if line == "." {
        return None;
    }
    Some(line.strip_prefix('.').unwrap_or(line))
}

#[cfg(test)]
mod tests {
    use super::super::script::{creds, run};
    use super::super::{Failure, Login};
    use super::*;
    use crate::config::Service;

    #[test]
    fn pop_auth_always_uses_the_continuation() {
        let r = run(
            Login::new(Service::Pop, false, creds("tok")),
            &[
                "+OK POP3 ready",
                "+OK",
                "USER",
                "SASL PLAIN XOAUTH2",
                ".",
                "+ ",
                "+OK logged in",
            ],
        );
        assert_eq!(r.said, ["CAPA", "AUTH XOAUTH2", "[secret 58 bytes]"]);
        assert_eq!(r.end.unwrap().caps, ["USER", "SASL PLAIN XOAUTH2"]);
    }

    #[test]
    fn pop_stls_then_capa_and_exchange_refusal_is_kept() {
        let r = run(
            Login::new(Service::Pop, true, creds("tok")),
            &[
                "+OK The Microsoft Exchange POP3 service is ready.",
                "+OK Begin TLS",
                "+OK",
                "SASL XOAUTH2",
                ".",
                "+ ",
                "-ERR Authentication failure: unknown user name or bad password.",
            ],
        );
        assert_eq!(r.said[..3], ["STLS", "TLS", "CAPA"]);
        match r.end {
            Err(Failure::Refused { reply, step, .. }) => {
                assert_eq!(step, "AUTH");
                assert!(reply.starts_with("-ERR Authentication failure"));
            }
            e => panic!("{:?}", e.map(|_| ())),
        }
    }

    #[test]
    fn pop_oauthbearer_challenge_is_answered_with_aq() {
        let r = run(
            Login::new(Service::Pop, false, creds("tok")),
            &[
                "+OK",
                "+OK",
                "SASL OAUTHBEARER",
                ".",
                "+ ",
                "+ eyJzdGF0dXMiOiI0MDEifQ==",
                "-ERR no",
            ],
        );
        assert_eq!(r.said.last().unwrap(), "AQ==");
        match r.end {
            Err(Failure::Refused { challenge, .. }) => {
                assert_eq!(challenge.as_deref(), Some("{\"status\":\"401\"}"))
            }
            e => panic!("{:?}", e.map(|_| ())),
        }
    }

    #[test]
    fn pop_without_capa_says_no_oauth_is_offered() {
        let r = run(
            Login::new(Service::Pop, false, creds("t")),
            &["+OK", "-ERR unknown command"],
        );
        assert!(matches!(r.end, Err(Failure::Protocol(m)) if m.contains("offers no XOAUTH2")));
    }

    #[test]
    fn dot_unstuffing_and_terminator() {
        assert_eq!(unstuff(".."), Some("."));
        assert_eq!(unstuff(".x"), Some("x"));
        assert_eq!(unstuff("."), None);
    }
}
