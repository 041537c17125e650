//! POP3 sessions for `check` and `fetch`: the login is [`super::login`] driving
//! [`crate::proto::pop`]; here are status commands, multi-line responses
//! (dot-unstuffed by `proto`) and the harmless `STAT`.
//!
//! Must not: parse login replies (the `proto` machine does).

use std::time::Duration;

use super::conn::Conn;
use super::{Failure, Success};
use crate::config::Service;
use crate::proto::pop::{is_ok, unstuff};
use crate::providers::{Account, Server};

/// An authenticated POP3 session.
pub struct Session {
    /// The connection.
    pub conn: Conn,
    /// Mechanism used.
    pub mechanism: Option<crate::sasl::Mechanism>,
}

impl Session {
    /// Send a command and read its status line; `-ERR` is a refusal of `step`.
    pub fn command(&mut self, cmd: &str, step: &'static str) -> Result<String, Failure> {
        self.conn.write_line(cmd)?;
        let r = self.conn.read_line()?;
        if !is_ok(&r) {
            return Err(crate::proto::refused(r, None, step));
        }
        Ok(r)
    }

    /// Read a multi-line response body (dot-unstuffed lines).
    pub fn multiline(&mut self) -> Result<Vec<String>, Failure> {
        let mut out = Vec::new();
        loop {
            let l = self.conn.read_line()?;
            match unstuff(&l) {
                None => return Ok(out),
                Some(x) => out.push(x.to_owned()),
            }
        }
    }

    /// Read a multi-line message body as CRLF-terminated bytes (dot-unstuffed).
    pub fn message(&mut self) -> Result<Vec<u8>, Failure> {
        let mut out = Vec::new();
        loop {
            let l = self.conn.read_line()?;
            let Some(x) = unstuff(&l) else {
                return Ok(out);
            };
            out.extend_from_slice(x.as_bytes());
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
    let (conn, a) = super::login(Service::Pop, account, server, token, timeout)?;
    Ok(Session {
        conn,
        mechanism: a.mechanism,
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
