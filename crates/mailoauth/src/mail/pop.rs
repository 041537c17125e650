//! POP3 (RFC 1939) with SASL (RFC 5034): `CAPA`, `STLS`, `AUTH <mech>` with the
//! continuation form always (one-line initial responses are capped at 255
//! octets and Office 365 tokens are far longer), then `STAT`.

use std::time::Duration;

use super::conn::Conn;
use super::{Failure, Success, challenge_answer, choose, decode_challenge, initial_response};
use crate::config::TlsMode;
use crate::providers::{Account, Server};

fn multiline(conn: &mut Conn) -> Result<Vec<String>, Failure> {
    let mut out = Vec::new();
    loop {
        let l = conn.read_line()?;
        if l == "." {
            return Ok(out);
        }
        out.push(l.strip_prefix('.').map(str::to_owned).unwrap_or(l));
    }
}

/// An authenticated POP3 session.
pub struct Session {
    /// The connection.
    pub conn: Conn,
    /// Mechanism used.
    pub mechanism: crate::sasl::Mechanism,
}

impl Session {
    /// Send a command and read its status line; `-ERR` is a refusal of `step`.
    pub fn command(&mut self, cmd: &str, step: &'static str) -> Result<String, Failure> {
        self.conn.write_line(cmd)?;
        let r = self.conn.read_line()?;
        if !r.starts_with("+OK") {
            return Err(Failure::Refused {
                reply: r,
                challenge: None,
                step,
            });
        }
        Ok(r)
    }

    /// Read a multi-line response body (dot-unstuffed lines).
    pub fn multiline(&mut self) -> Result<Vec<String>, Failure> {
        multiline(&mut self.conn)
    }

    /// Read a multi-line message body as CRLF-terminated bytes (dot-unstuffed).
    pub fn message(&mut self) -> Result<Vec<u8>, Failure> {
        let mut out = Vec::new();
        loop {
            let l = self.conn.read_line()?;
            if l == "." {
                return Ok(out);
            }
            out.extend_from_slice(l.strip_prefix('.').unwrap_or(&l).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Connect, STLS when configured, authenticate with the token.
pub fn login(
    account: &Account,
    server: &Server,
    token: &str,
    timeout: Duration,
) -> Result<Session, Failure> {
    let mut conn = Conn::connect(server, account.ca_file.as_deref(), timeout)?;
    let greeting = conn.read_line()?;
    if !greeting.starts_with("+OK") {
        return Err(Failure::Protocol(format!(
            "not a POP3 greeting: {greeting}"
        )));
    }
    if server.tls == TlsMode::Starttls {
        conn.write_line("STLS")?;
        let r = conn.read_line()?;
        if !r.starts_with("+OK") {
            return Err(Failure::Protocol(format!("STLS refused: {r}")));
        }
        conn = conn.upgrade()?;
    }
    conn.write_line("CAPA")?;
    let r = conn.read_line()?;
    let caps = if r.starts_with("+OK") {
        multiline(&mut conn)?
    } else {
        vec![]
    };
    let offered: Vec<String> = caps
        .iter()
        .filter_map(|c| c.strip_prefix("SASL "))
        .flat_map(|m| m.split_whitespace().map(str::to_owned))
        .collect();
    let mech = choose(&offered)?;
    conn.write_line(&format!("AUTH {}", mech.name().to_uppercase()))?;
    let cont = conn.read_line()?;
    if !cont.starts_with('+') || cont.starts_with("+OK") {
        return Err(Failure::Refused {
            reply: cont,
            challenge: None,
            step: "AUTH",
        });
    }
    conn.write_line(&initial_response(mech, account, server, token))?;
    let mut challenge = None;
    let result = loop {
        let l = conn.read_line()?;
        if l.starts_with("+OK") || l.starts_with("-ERR") {
            break l;
        }
        if let Some(c) = l.strip_prefix('+') {
            challenge = Some(decode_challenge(c));
            conn.write_line(challenge_answer(mech))?;
        }
    };
    if !result.starts_with("+OK") {
        return Err(Failure::Refused {
            reply: result,
            challenge,
            step: "AUTH",
        });
    }
    Ok(Session {
        conn,
        mechanism: mech,
    })
}

/// Connect, authenticate, `STAT`, `QUIT`.
pub fn check(
    account: &Account,
    server: &Server,
    token: &str,
    timeout: Duration,
) -> Result<Success, Failure> {
    let mut s = login(account, server, token, timeout)?;
    let stat = s.command("STAT", "STAT")?;
    let _ = s.command("QUIT", "QUIT");
    let count = stat.split_whitespace().nth(1).unwrap_or("?");
    Ok(Success {
        mechanism: s.mechanism,
        detail: format!("maildrop: {count} messages"),
    })
}
