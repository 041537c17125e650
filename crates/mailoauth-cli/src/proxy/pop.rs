//! The POP3 proxy's client side: `USER`/`PASS` and `AUTH PLAIN` (with or
//! without an initial response), `STLS` when the listener has TLS.
//!
//! Must not: answer anything but CAPA, STLS, USER, PASS, AUTH PLAIN, NOOP and
//! QUIT before login; echo credentials.

use std::io;

use zeroize::Zeroizing;

use super::session::{Conn, Dialect, Login, Step, sasl_plain};
use super::trace;
use super::upstream::Upstream;
use mailoauth::config::Service;

/// RFC 1939 allows 255 octets a command; leave room for a long AUTH PLAIN line.
const MAX_LINE: usize = 4096;
/// All a client may send before login (commands, AUTH answers, pipelined
/// junk): a dozen long lines; a client past this is not logging in.
pub const MAX_INPUT: usize = 16 * 1024;

/// The POP3 dialect: remembers the `USER` given before `PASS`.
#[derive(Default)]
pub(crate) struct Pop {
    user: Option<String>,
}

/// Trace a command as parsed: its name, and of AUTH the mechanism; arguments
/// (USER's name, PASS's password, an AUTH initial response) never.
fn trace_command(cmd: &str, arg: &str) {
    const KNOWN: [&str; 15] = [
        "CAPA", "STLS", "USER", "PASS", "AUTH", "NOOP", "QUIT", "STAT", "LIST", "RETR", "DELE",
        "RSET", "TOP", "UIDL", "APOP",
    ];
    let Some(cmd) = trace::verb(cmd, &KNOWN) else {
        return trace::command(&[], true);
    };
    let (mech, rest) = match cmd {
        "AUTH" => {
            let (m, ir) = arg.split_once(' ').unwrap_or((arg, ""));
            match trace::mechanism(m) {
                Some(m) => (m, ir),
                None => ("", arg),
            }
        }
        _ => ("", arg),
    };
    trace::command(&[cmd, mech], !rest.is_empty());
}

impl Dialect for Pop {
    const SERVICE: Service = Service::Pop;
    const MAX_INPUT: usize = MAX_INPUT;

    fn greeting(&self, _need_tls: bool) -> String {
        "+OK mailoauth proxy ready".into()
    }

    async fn next(&mut self, c: &mut Conn, need_tls: bool) -> io::Result<Step> {
        loop {
            let Some(line) = c.line(MAX_LINE).await? else {
                return Ok(Step::Closed);
            };
            let (cmd, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            let cmd = cmd.to_ascii_uppercase();
            trace_command(&cmd, arg);
            match cmd.as_str() {
                "CAPA" if need_tls => c.reply("+OK\r\nSTLS\r\n.").await?,
                "CAPA" => c.reply("+OK\r\nUSER\r\nSASL PLAIN\r\n.").await?,
                "NOOP" => c.reply("+OK").await?,
                "QUIT" => {
                    c.reply("+OK bye").await?;
                    return Ok(Step::Closed);
                }
                "STLS" if need_tls => {
                    c.reply("+OK begin TLS negotiation").await?;
                    return Ok(Step::StartTls);
                }
                "USER" | "PASS" | "AUTH" if need_tls => c.reply("-ERR [AUTH] STLS first").await?,
                "USER" if !arg.is_empty() => {
                    self.user = Some(arg.to_owned());
                    c.reply("+OK").await?;
                }
                "PASS" => match self.user.take() {
                    Some(user) => {
                        return Ok(Step::Login(Login {
                            tag: String::new(),
                            user,
                            pass: Zeroizing::new(arg.to_owned()),
                        }));
                    }
                    None => c.reply("-ERR USER first").await?,
                },
                "AUTH" => {
                    let (mech, ir) = arg.split_once(' ').unwrap_or((arg, ""));
                    if !mech.eq_ignore_ascii_case("PLAIN") {
                        c.reply("-ERR only AUTH PLAIN here").await?;
                        continue;
                    }
                    let b64 = if ir.is_empty() {
                        c.reply("+ ").await?;
                        c.secret_line(MAX_LINE).await?.unwrap_or_default()
                    } else {
                        Zeroizing::new(ir.to_owned())
                    };
                    if b64.as_str() == "*" {
                        c.reply("-ERR AUTH cancelled").await?;
                        continue;
                    }
                    match sasl_plain(&b64) {
                        Some((user, pass)) => {
                            return Ok(Step::Login(Login {
                                tag: String::new(),
                                user,
                                pass,
                            }));
                        }
                        None => c.reply("-ERR invalid base64 or PLAIN message").await?,
                    }
                }
                _ => {
                    c.reply("-ERR log in first (USER/PASS or AUTH PLAIN)")
                        .await?
                }
            }
        }
    }

    fn refused(&self, _: &Login) -> String {
        "-ERR [AUTH] wrong user or proxy password".into()
    }

    fn unavailable(&self, _: &Login, why: &str) -> String {
        format!("-ERR [SYS/TEMP] {why}")
    }

    fn welcome(&self, _: &Login, _: &Upstream) -> String {
        "+OK logged in".into()
    }

    fn bye(&self, why: &str) -> String {
        format!("-ERR {why}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endless_auth_answers_and_junk_before_login_end_the_session() {
        // AUTH PLAIN, a bad continuation answer, junk: over and over.
        let round = b"AUTH PLAIN\r\n%%%%\r\nSTAT\r\n".repeat(MAX_INPUT / 20 + 100);
        let mut c = super::super::session::flooded(round, MAX_INPUT).await;
        let e = Pop::default()
            .next(&mut c, false)
            .await
            .err()
            .expect("cut off");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("too much input"), "{e}");
    }
}
