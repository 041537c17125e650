//! IMAP (RFC 9051/3501) without I/O: the login machine — greeting (`* OK` or
//! `* PREAUTH`), STARTTLS, CAPABILITY (untagged or the `[CAPABILITY]` code,
//! `AUTH=` in any case), AUTHENTICATE with SASL-IR (RFC 4959) when offered else
//! the `+` continuation, the error challenge — and [`Response`], which collects
//! a tagged command's untagged lines and status for the callers. What a
//! watcher needs after login lives beside it: [`data`] (FETCH values,
//! ENVELOPE, what SELECT says incl. CONDSTORE) and [`idle`].
//!
//! Must not: do I/O, or put the SASL payload anywhere but a `SendSecret` step.

pub mod data;
pub mod idle;

use super::line::{Lines, strip_prefix_ci};
use super::{Core, Credentials, Failure, refused};

/// Longest server line accepted (IMAP literals aside, replies are short).
pub const MAX_LINE: usize = 64 * 1024;
/// The login's tags: fixed, so scripted servers and traces can rely on them.
const TAG_STARTTLS: &str = "s1";
const TAG_CAPABILITY: &str = "c1";
const TAG_AUTH: &str = "a1";

/// The IMAP login machine (drive it through [`super::Login`]).
#[derive(Debug)]
pub struct Login {
    pub(super) core: Core,
    pub(super) state: State,
}

#[derive(Debug)]
pub(super) enum State {
    Greeting { starttls: bool },
    StartTls,
    Capability { untagged: Lines, preauth: bool },
    Continuation { caps: Vec<String> },
    Authenticating { untagged: Lines, caps: Vec<String> },
    Over,
}

impl Login {
    pub(super) fn new(starttls: bool, creds: Credentials) -> Login {
        Login {
            core: Core::new(crate::service::Service::Imap, creds),
            state: State::Greeting { starttls },
        }
    }
}

impl State {
    pub(super) fn on(&mut self, c: &mut Core, line: &str) {
        let state = std::mem::replace(self, State::Over);
        *self = match state {
            State::Greeting { starttls } => greeting(c, line, starttls),
            State::StartTls => match tagged(line, TAG_STARTTLS) {
                None => State::StartTls,
                Some(st) if is_ok(st) => {
                    c.out.push_back(super::Step::StartTls);
                    capability(c, false)
                }
                Some(st) => {
                    c.fail(super::Failure::Protocol(format!("STARTTLS refused: {st}")));
                    State::Over
                }
            },
            State::Capability {
                mut untagged,
                preauth,
            } => match tagged(line, TAG_CAPABILITY) {
                None => match untagged.push(line) {
                    Ok(()) => State::Capability { untagged, preauth },
                    Err(f) => {
                        c.fail(f);
                        State::Over
                    }
                },
                Some(st) => {
                    let caps = capabilities(untagged.as_slice(), st);
                    if preauth {
                        // Already authenticated by the connection itself: no SASL.
                        c.done(caps);
                        State::Over
                    } else {
                        authenticate(c, caps)
                    }
                }
            },
            State::Continuation { caps } => {
                if line.starts_with('+') {
                    let ir = c.ir().to_owned();
                    c.send_secret(&ir);
                    State::Authenticating {
                        untagged: Lines::default(),
                        caps,
                    }
                } else if tagged(line, TAG_AUTH).is_some() {
                    c.fail(refused(
                        crate::service::Service::Imap,
                        line.to_owned(),
                        None,
                        "AUTHENTICATE",
                    ));
                    State::Over
                } else {
                    State::Continuation { caps }
                }
            }
            State::Authenticating { mut untagged, caps } => {
                if let Some(b64) = line.strip_prefix('+') {
                    c.on_challenge(b64);
                    State::Authenticating { untagged, caps }
                } else if let Some(st) = tagged(line, TAG_AUTH) {
                    if is_ok(st) {
                        // Servers may announce new capabilities after login.
                        let after = capabilities(untagged.as_slice(), st);
                        c.done(if after.is_empty() { caps } else { after });
                    } else {
                        c.refuse(line.to_owned(), "AUTHENTICATE");
                    }
                    State::Over
                } else if let Err(f) = untagged.push(line) {
                    c.fail(f);
                    State::Over
                } else {
                    State::Authenticating { untagged, caps }
                }
            }
            State::Over => State::Over,
        };
    }
}

fn greeting(c: &mut Core, line: &str, starttls: bool) -> State {
    let preauth = strip_prefix_ci(line, "* PREAUTH").is_some();
    if !preauth && strip_prefix_ci(line, "* OK").is_none() {
        c.fail(super::Failure::Protocol(format!(
            "not an IMAP greeting: {line}"
        )));
        return State::Over;
    }
    if preauth && starttls {
        // Authenticated state allows no STARTTLS: going on would be in clear text.
        c.fail(super::Failure::Protocol(format!(
            "the server greets with PREAUTH on a connection that must use STARTTLS; refusing to go on unencrypted: {line}"
        )));
        return State::Over;
    }
    if starttls {
        c.send(&format!("{TAG_STARTTLS} STARTTLS"));
        return State::StartTls;
    }
    capability(c, preauth)
}

fn capability(c: &mut Core, preauth: bool) -> State {
    c.send(&format!("{TAG_CAPABILITY} CAPABILITY"));
    State::Capability {
        untagged: Lines::default(),
        preauth,
    }
}

fn authenticate(c: &mut Core, caps: Vec<String>) -> State {
    let offered: Vec<String> = caps
        .iter()
        .filter_map(|x| strip_prefix_ci(x, "AUTH="))
        .map(str::to_owned)
        .collect();
    let Some(mech) = c.choose(&offered) else {
        return State::Over;
    };
    let name = mech.name().to_uppercase();
    if caps.iter().any(|x| x.eq_ignore_ascii_case("SASL-IR")) {
        let line = format!("{TAG_AUTH} AUTHENTICATE {name} {}", c.ir());
        c.send_secret(&line);
        State::Authenticating {
            untagged: Lines::default(),
            caps,
        }
    } else {
        c.send(&format!("{TAG_AUTH} AUTHENTICATE {name}"));
        State::Continuation { caps }
    }
}

/// The status part of `line` if it is the tagged reply to `tag`.
fn tagged<'a>(line: &'a str, tag: &str) -> Option<&'a str> {
    line.strip_prefix(tag).and_then(|r| r.strip_prefix(' '))
}

/// True for an `OK` status (`OK …`, any case).
pub fn is_ok(status: &str) -> bool {
    status
        .get(..2)
        .is_some_and(|s| s.eq_ignore_ascii_case("OK"))
}

/// Capabilities from `* CAPABILITY` lines or a `[CAPABILITY …]` response code.
pub fn capabilities(lines: &[String], status: &str) -> Vec<String> {
    let mut caps = Vec::new();
    for l in lines
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(status))
    {
        let text = if let Some(r) = strip_prefix_ci(l, "* CAPABILITY ") {
            r
        } else if let Some(i) = l.to_ascii_uppercase().find("[CAPABILITY ") {
            l[i + 12..].split(']').next().unwrap_or("")
        } else {
            continue;
        };
        caps.extend(text.split_whitespace().map(str::to_owned));
    }
    caps
}

/// The reply to one tagged command: untagged lines until the tagged status,
/// at most [`super::MAX_REPLY_LINES`] of them and [`super::MAX_REPLY_BYTES`].
#[derive(Debug)]
pub struct Response {
    tag: String,
    untagged: Lines,
}

impl Response {
    /// Wait for the reply to `tag`.
    pub fn new(tag: &str) -> Response {
        Response {
            tag: tag.to_owned(),
            untagged: Lines::default(),
        }
    }

    /// Feed one line (CRLF stripped): `Some(status)` when it was the tagged
    /// one; an error when the untagged lines outgrow the limits.
    pub fn feed(&mut self, line: &str) -> Result<Option<String>, Failure> {
        if let Some(st) = tagged(line, &self.tag) {
            return Ok(Some(st.to_owned()));
        }
        self.untagged.push(line)?;
        Ok(None)
    }

    /// The untagged lines collected (the reply is complete once `feed` said so).
    pub fn untagged(&mut self) -> Vec<String> {
        self.untagged.take()
    }
}

/// The command line `tag cmd` with its CRLF.
pub fn command(tag: &str, cmd: &str) -> Vec<u8> {
    super::line::crlf(format!("{tag} {cmd}").as_bytes())
}

#[cfg(test)]
mod tests;
