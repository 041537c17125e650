//! SMTP submission (RFC 6409) with AUTH (RFC 4954) without I/O: the login
//! machine — 220 greeting (possibly multi-line), EHLO, STARTTLS and EHLO again,
//! `AUTH`/`AUTH=` keywords, `AUTH <mech> <ir>` only when the line fits in 512
//! octets else the two-step form (`AUTH <mech>`, `334`, the base64 alone) —
//! Office 365 tokens never fit, Gmail rejects long lines, Dovecot's submission
//! caps at ~1 KB — the `334` error challenge; and [`Reply`], the multi-line
//! reply reader the callers use for `MAIL FROM`, `RCPT TO` and `DATA`.
//!
//! Must not: do I/O, or put the SASL payload anywhere but a `SendSecret` step.

use super::line::{Lines, strip_prefix_ci};
use super::{Core, Credentials, Failure, Step, refused};

/// Longest server reply line accepted (RFC 5321 says 512 octets; be lenient).
pub const MAX_LINE: usize = 64 * 1024;
/// RFC 5321 command line limit, CRLF included.
pub const MAX_COMMAND: usize = 512;
/// What we call ourselves in EHLO (the host name is nobody's business).
const EHLO: &str = "EHLO mailoauth.localhost";

/// The SMTP login machine (drive it through [`super::Login`]).
#[derive(Debug)]
pub struct Login {
    pub(super) core: Core,
    pub(super) state: State,
}

/// Where the dialogue is, and the reply being read.
#[derive(Debug)]
pub(super) struct State {
    stage: Stage,
    reply: Reply,
}

#[derive(Debug)]
enum Stage {
    Greeting { starttls: bool },
    Ehlo { starttls: bool },
    StartTls,
    Prompt { caps: Vec<String> },
    Authenticating { caps: Vec<String> },
    Over,
}

impl Login {
    pub(super) fn new(starttls: bool, creds: Credentials) -> Login {
        Login {
            core: Core::new(crate::service::Service::Smtp, creds),
            state: State {
                stage: Stage::Greeting { starttls },
                reply: Reply::default(),
            },
        }
    }
}

impl State {
    /// One line: collected until the reply is complete, then handled whole.
    pub(super) fn on(&mut self, c: &mut Core, line: &str) {
        match self.reply.feed(line) {
            Ok(None) => {}
            Ok(Some((code, lines))) => self.stage.on(c, code, lines),
            Err(f) => c.fail(f),
        }
    }
}

impl Stage {
    fn on(&mut self, c: &mut Core, code: u16, lines: Vec<String>) {
        let joined = || lines.join(" / ");
        let state = std::mem::replace(self, Stage::Over);
        *self = match state {
            Stage::Greeting { starttls } if code == 220 => {
                c.send(EHLO);
                Stage::Ehlo { starttls }
            }
            Stage::Greeting { .. } => {
                c.fail(Failure::Protocol(format!(
                    "not an SMTP greeting: {}",
                    joined()
                )));
                Stage::Over
            }
            Stage::Ehlo { .. } if code != 250 => {
                c.fail(Failure::Protocol(format!("EHLO refused: {}", joined())));
                Stage::Over
            }
            Stage::Ehlo { starttls: true } => {
                c.send("STARTTLS");
                Stage::StartTls
            }
            Stage::Ehlo { starttls: false } => authenticate(c, keywords(&lines)),
            Stage::StartTls if code == 220 => {
                c.out.push_back(Step::StartTls);
                // RFC 3207: forget what was said in clear text and ask again.
                c.send(EHLO);
                Stage::Ehlo { starttls: false }
            }
            Stage::StartTls => {
                c.fail(Failure::Protocol(format!("STARTTLS refused: {}", joined())));
                Stage::Over
            }
            Stage::Prompt { caps } if code == 334 => {
                let ir = c.ir().to_owned();
                c.send_secret(&ir);
                Stage::Authenticating { caps }
            }
            Stage::Prompt { .. } => {
                c.fail(refused(
                    crate::service::Service::Smtp,
                    joined(),
                    None,
                    "AUTH",
                ));
                Stage::Over
            }
            Stage::Authenticating { caps } if code == 334 => {
                c.on_challenge(lines[0].get(4..).unwrap_or(""));
                Stage::Authenticating { caps }
            }
            Stage::Authenticating { caps } if code == 235 => {
                c.done(caps);
                Stage::Over
            }
            Stage::Authenticating { .. } => {
                c.refuse(joined(), "AUTH");
                Stage::Over
            }
            Stage::Over => Stage::Over,
        };
    }
}

/// The EHLO keywords (`AUTH XOAUTH2 PLAIN`, `8BITMIME`…), without the codes.
fn keywords(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .skip(1)
        .filter_map(|l| l.get(4..))
        .map(str::to_owned)
        .collect()
}

fn authenticate(c: &mut Core, caps: Vec<String>) -> Stage {
    let offered: Vec<String> = caps
        .iter()
        .filter_map(|l| strip_prefix_ci(l, "AUTH ").or_else(|| strip_prefix_ci(l, "AUTH=")))
        .flat_map(|m| m.split_whitespace().map(str::to_owned))
        .collect();
    let Some(mech) = c.choose(&offered) else {
        return Stage::Over;
    };
    let name = mech.name().to_uppercase();
    let one_line = format!("AUTH {name} {}", c.ir());
    if one_line.len() + 2 <= MAX_COMMAND {
        c.send_secret(&one_line);
        Stage::Authenticating { caps }
    } else {
        c.send(&format!("AUTH {name}"));
        Stage::Prompt { caps }
    }
}

/// A (possibly multi-line) reply being read: `250-…` lines until `250 …`, at
/// most [`super::MAX_REPLY_LINES`] lines and [`super::MAX_REPLY_BYTES`].
#[derive(Debug, Default)]
pub struct Reply {
    lines: Lines,
}

impl Reply {
    /// Feed one line (CRLF stripped): the code and all lines once the reply is
    /// complete; an error for a line that is not a reply.
    pub fn feed(&mut self, line: &str) -> Result<Option<(u16, Vec<String>)>, Failure> {
        let code = line
            .get(..3)
            .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| Failure::Protocol(format!("not an SMTP reply: {line}")))?;
        let more = line.as_bytes().get(3) == Some(&b'-');
        self.lines.push(line)?;
        if more {
            return Ok(None);
        }
        Ok(Some((code, self.lines.take())))
    }
}

#[cfg(test)]
mod tests;
