//! The SMTP proxy's client side: EHLO offering AUTH PLAIN and LOGIN (and
//! STARTTLS when the listener has TLS), then the mail transaction goes to the
//! server untouched.
//!
//! Must not: accept MAIL, RCPT or DATA before authentication (530), or echo
//! credentials.

use std::io;

use zeroize::Zeroizing;

use super::session::{Conn, Dialect, Login, Step, base64_text, sasl_plain};
use super::trace;
use super::upstream::Upstream;
use mailoauth::config::Service;

/// RFC 5321 allows 512 octets a command line; AUTH lines get more (RFC 4954).
const MAX_LINE: usize = 4096;
/// All a client may send before login (EHLO, AUTH and its continuation
/// lines, pipelined junk): a dozen long lines; a client past this is not
/// logging in.
pub const MAX_INPUT: usize = 16 * 1024;

/// The SMTP dialect (stateless between commands).
#[derive(Default)]
pub(crate) struct Smtp;

fn login(user: String, pass: Zeroizing<String>) -> Step {
    Step::Login(Login {
        tag: String::new(),
        user,
        pass,
    })
}

/// An initial response, else a 334 prompt and the client's answer (LOGIN:
/// smtplib sends the user as initial response).
async fn answer(c: &mut Conn, ir: &str, prompt: &str) -> io::Result<Zeroizing<String>> {
    if !ir.is_empty() {
        return Ok(Zeroizing::new(ir.to_owned()));
    }
    c.reply(prompt).await?;
    Ok(c.secret_line(MAX_LINE).await?.unwrap_or_default())
}

impl Smtp {
    /// The SASL exchange after `AUTH mech [ir]`: `None` when the client
    /// cancelled or sent something undecodable (already answered).
    async fn auth(&self, c: &mut Conn, mech: &str, ir: &str) -> io::Result<Option<Step>> {
        let cancelled = |s: &str| s == "*";
        match mech.to_ascii_uppercase().as_str() {
            "PLAIN" => {
                let msg = answer(c, ir, "334 ").await?;
                if cancelled(&msg) {
                    c.reply("501 5.7.0 AUTH cancelled").await?;
                    return Ok(None);
                }
                match sasl_plain(&msg) {
                    Some((user, pass)) => Ok(Some(login(user, pass))),
                    None => {
                        c.reply("501 5.5.2 invalid base64 or PLAIN message").await?;
                        Ok(None)
                    }
                }
            }
            "LOGIN" => {
                let user = answer(c, ir, "334 VXNlcm5hbWU6").await?;
                if cancelled(&user) {
                    c.reply("501 5.7.0 AUTH cancelled").await?;
                    return Ok(None);
                }
                let pass = answer(c, "", "334 UGFzc3dvcmQ6").await?;
                match (base64_text(&user), base64_text(&pass)) {
                    (Some(u), Some(p)) => Ok(Some(login(u.to_string(), p))),
                    _ => {
                        c.reply("501 5.5.2 invalid base64").await?;
                        Ok(None)
                    }
                }
            }
            _ => {
                c.reply("504 5.5.4 only AUTH PLAIN or LOGIN here").await?;
                Ok(None)
            }
        }
    }
}

/// Trace a command as parsed: its name; of AUTH the mechanism, of EHLO/HELO
/// the client's host name; no other argument (an initial response, or
/// whatever a confused client sends before authenticating).
fn trace_command(cmd: &str, arg: &str) {
    const KNOWN: [&str; 14] = [
        "EHLO", "HELO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT",
        "VRFY", "EXPN", "HELP",
    ];
    let Some(cmd) = trace::verb(cmd, &KNOWN) else {
        return trace::command(&[], true);
    };
    match cmd {
        "EHLO" | "HELO" => trace::command(&[cmd, arg], false),
        "AUTH" => {
            let (m, ir) = arg.split_once(' ').unwrap_or((arg, ""));
            match trace::mechanism(m) {
                Some(m) => trace::command(&[cmd, m], !ir.is_empty()),
                None => trace::command(&[cmd], !arg.is_empty()),
            }
        }
        _ => trace::command(&[cmd], !arg.is_empty()),
    }
}

impl Dialect for Smtp {
    const SERVICE: Service = Service::Smtp;
    const MAX_INPUT: usize = MAX_INPUT;

    fn greeting(&self, _need_tls: bool) -> String {
        "220 mailoauth proxy ESMTP ready".into()
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
                "EHLO" if need_tls => {
                    c.reply("250-mailoauth proxy\r\n250-STARTTLS\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES")
                        .await?
                }
                "EHLO" => {
                    c.reply("250-mailoauth proxy\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES")
                        .await?
                }
                "HELO" => c.reply("250 mailoauth proxy").await?,
                "NOOP" | "RSET" => c.reply("250 2.0.0 OK").await?,
                "QUIT" => {
                    c.reply("221 2.0.0 bye").await?;
                    return Ok(Step::Closed);
                }
                "STARTTLS" if need_tls => {
                    c.reply("220 2.0.0 ready to start TLS").await?;
                    return Ok(Step::StartTls);
                }
                "AUTH" if need_tls => {
                    c.reply("530 5.7.0 Must issue a STARTTLS command first")
                        .await?
                }
                "AUTH" => {
                    let (mech, ir) = arg.split_once(' ').unwrap_or((arg, ""));
                    if let Some(step) = self.auth(c, mech, ir).await? {
                        return Ok(step);
                    }
                }
                _ => c.reply("530 5.7.0 Authentication required").await?,
            }
        }
    }

    fn refused(&self, _: &Login) -> String {
        "535 5.7.8 wrong user or proxy password".into()
    }

    fn unavailable(&self, _: &Login, why: &str) -> String {
        format!("454 4.7.0 {why}")
    }

    fn welcome(&self, _: &Login, _: &Upstream) -> String {
        "235 2.7.0 Authentication successful".into()
    }

    fn bye(&self, why: &str) -> String {
        format!("421 4.7.0 {why}, closing")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endless_auth_continuations_and_junk_before_login_end_the_session() {
        let round = b"AUTH LOGIN\r\n***\r\n***\r\nMAIL FROM:<a@b>\r\n".repeat(MAX_INPUT / 30 + 100);
        let mut c = super::super::session::flooded(round, MAX_INPUT).await;
        let e = Smtp.next(&mut c, false).await.err().expect("cut off");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("too much input"), "{e}");
    }
}
