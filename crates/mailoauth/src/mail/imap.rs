//! IMAP (RFC 9051/3501) with SASL bearer tokens: implicit TLS or STARTTLS,
//! SASL-IR (RFC 4959) when advertised, else the `+` continuation; then
//! `SELECT INBOX`, which is where Exchange reports "authenticated but not connected".

use std::time::Duration;

use super::conn::Conn;
use super::{Failure, Success, challenge_answer, choose, decode_challenge, initial_response};
use crate::config::TlsMode;
use crate::providers::{Account, Server};

/// Send a tagged command; return (untagged lines, tagged status line).
fn command(conn: &mut Conn, tag: &str, cmd: &str) -> Result<(Vec<String>, String), Failure> {
    conn.write_line(&format!("{tag} {cmd}"))?;
    tagged(conn, tag)
}

fn tagged(conn: &mut Conn, tag: &str) -> Result<(Vec<String>, String), Failure> {
    let mut untagged = Vec::new();
    loop {
        let line = conn.read_line()?;
        if let Some(rest) = line.strip_prefix(tag).and_then(|r| r.strip_prefix(' ')) {
            return Ok((untagged, rest.to_owned()));
        }
        untagged.push(line);
    }
}

fn is_ok(status: &str) -> bool {
    status.len() >= 2 && status[..2].eq_ignore_ascii_case("OK")
}

/// Capabilities from `* CAPABILITY` lines or a `[CAPABILITY …]` response code.
pub fn capabilities(lines: &[String], status: &str) -> Vec<String> {
    // From `* CAPABILITY …` or the `[CAPABILITY …]` response code of a status line.
    let mut caps = Vec::new();
    for l in lines
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(status))
    {
        let text = if let Some(r) = l.strip_prefix("* CAPABILITY ") {
            r
        } else if let Some(i) = l.find("[CAPABILITY ") {
            l[i + 12..].split(']').next().unwrap_or("")
        } else {
            continue;
        };
        caps.extend(text.split_whitespace().map(str::to_owned));
    }
    caps
}

/// An authenticated IMAP session.
pub struct Session {
    /// The connection.
    pub conn: Conn,
    /// Capabilities after login.
    pub caps: Vec<String>,
    /// Mechanism used.
    pub mechanism: crate::sasl::Mechanism,
    next_tag: u32,
}

impl Session {
    /// Send a command with a fresh tag; return (untagged lines, status line).
    pub fn command(&mut self, cmd: &str) -> Result<(Vec<String>, String), Failure> {
        let tag = self.tag();
        command(&mut self.conn, &tag, cmd)
    }

    /// Send a command with a fresh tag and return the tag (the caller reads the response).
    pub fn send(&mut self, cmd: &str) -> Result<String, Failure> {
        let tag = self.tag();
        self.conn.write_line(&format!("{tag} {cmd}"))?;
        Ok(tag)
    }

    fn tag(&mut self) -> String {
        self.next_tag += 1;
        format!("m{}", self.next_tag)
    }

    /// True if the server advertises capability `c`.
    pub fn has(&self, c: &str) -> bool {
        self.caps.iter().any(|x| x.eq_ignore_ascii_case(c))
    }
}

/// Connect, STARTTLS when configured, authenticate with the token.
pub fn login(
    account: &Account,
    server: &Server,
    token: &str,
    timeout: Duration,
) -> Result<Session, Failure> {
    let mut conn = Conn::connect(server, account.ca_file.as_deref(), timeout)?;
    let greeting = conn.read_line()?;
    if !greeting.starts_with("* OK") && !greeting.starts_with("* PREAUTH") {
        return Err(Failure::Protocol(format!(
            "not an IMAP greeting: {greeting}"
        )));
    }
    if server.tls == TlsMode::Starttls {
        let (_, st) = command(&mut conn, "s1", "STARTTLS")?;
        if !is_ok(&st) {
            return Err(Failure::Protocol(format!("STARTTLS refused: {st}")));
        }
        conn = conn.upgrade()?;
    }
    let (lines, st) = command(&mut conn, "c1", "CAPABILITY")?;
    let caps = capabilities(&lines, &st);
    let offered: Vec<String> = caps
        .iter()
        .filter_map(|c| c.strip_prefix("AUTH=").or_else(|| c.strip_prefix("auth=")))
        .map(str::to_owned)
        .collect();
    let mech = choose(&offered)?;
    let ir = initial_response(mech, account, server, token);
    let name = mech.name().to_uppercase();
    if caps.iter().any(|c| c.eq_ignore_ascii_case("SASL-IR")) {
        conn.write_line(&format!("a1 AUTHENTICATE {name} {ir}"))?;
    } else {
        conn.write_line(&format!("a1 AUTHENTICATE {name}"))?;
        let cont = conn.read_line()?;
        if !cont.starts_with('+') {
            return Err(refused(cont, None, "AUTHENTICATE"));
        }
        conn.write_line(&ir)?;
    }
    // Either the tagged result, or an error challenge to acknowledge first.
    let mut challenge = None;
    let mut untagged = Vec::new();
    let status = loop {
        let line = conn.read_line()?;
        if let Some(c) = line.strip_prefix('+') {
            challenge = Some(decode_challenge(c));
            conn.write_line(challenge_answer(mech))?;
            continue;
        }
        if let Some(rest) = line.strip_prefix("a1 ") {
            break rest.to_owned();
        }
        untagged.push(line);
    };
    if !is_ok(&status) {
        return Err(refused(format!("a1 {status}"), challenge, "AUTHENTICATE"));
    }
    // Servers may announce new capabilities after login.
    let after = capabilities(&untagged, &status);
    let caps = if after.is_empty() { caps } else { after };
    Ok(Session {
        conn,
        caps,
        mechanism: mech,
        next_tag: 1,
    })
}

/// Connect, authenticate, `SELECT INBOX`, `LOGOUT`.
pub fn check(
    account: &Account,
    server: &Server,
    token: &str,
    timeout: Duration,
) -> Result<Success, Failure> {
    let mut s = login(account, server, token, timeout)?;
    let (lines, st) = s.command("SELECT INBOX")?;
    if !is_ok(&st) {
        return Err(refused(st, None, "SELECT INBOX"));
    }
    let exists = lines
        .iter()
        .find_map(|l| {
            l.strip_prefix("* ")
                .and_then(|r| r.strip_suffix(" EXISTS"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "?".into());
    let _ = s.command("LOGOUT");
    Ok(Success {
        mechanism: s.mechanism,
        detail: format!("INBOX: {exists} messages"),
    })
}

/// True for an `OK` status.
pub fn status_ok(status: &str) -> bool {
    is_ok(status)
}

fn refused(reply: String, challenge: Option<String>, step: &'static str) -> Failure {
    Failure::Refused {
        reply,
        challenge,
        step,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_from_untagged_and_response_code() {
        let caps = capabilities(
            &["* CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2".into()],
            "OK done",
        );
        assert!(caps.contains(&"AUTH=XOAUTH2".to_owned()) && caps.contains(&"SASL-IR".to_owned()));
        let caps = capabilities(&[], "OK [CAPABILITY IMAP4rev1 AUTH=OAUTHBEARER] Pre-login");
        assert_eq!(caps, ["IMAP4rev1", "AUTH=OAUTHBEARER"]);
    }
}
