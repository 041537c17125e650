//! POP3 sessions for `check` and `fetch`: the login is [`super::login`] driving
//! [`crate::proto::pop`]; here are status commands, multi-line responses
//! (dot-unstuffed by `proto`, bounded by its reply limits), message bodies
//! streamed to a writer as bytes, and the harmless `STAT`.
//!
//! Must not: parse login replies (the `proto` machine does), or decode or
//! hold a message body.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::conn::Conn;
use super::{Failure, Success};
use crate::config::Service;
use crate::proto::pop::{is_ok, unstuff};
use crate::proto::{Lines, misbehaving};
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
        let r = self.conn.read_text()?;
        if !is_ok(&r) {
            return Err(crate::proto::refused(Service::Pop, r, None, step));
        }
        Ok(r)
    }

    /// Read a multi-line response (dot-unstuffed lines, as text: `UIDL`, `LIST`).
    pub fn multiline(&mut self) -> Result<Vec<String>, Failure> {
        let mut out = Lines::default();
        loop {
            let l = self.conn.read_text()?;
            match unstuff(&l) {
                None => return Ok(out.take()),
                Some(x) => out.push(x)?,
            }
        }
    }

    /// Copy a multi-line message body to `out` as CRLF-terminated bytes
    /// (dot-unstuffed, never decoded); refused past `max` bytes. `dir` names
    /// the destination in write errors. Returns the size.
    pub fn message_to(
        &mut self,
        out: &mut dyn Write,
        max: u64,
        dir: &Path,
    ) -> Result<u64, Failure> {
        let mut size = 0u64;
        loop {
            let l = self.conn.read_line()?;
            if l == b"." {
                return Ok(size);
            }
            let x = l.strip_prefix(b".").unwrap_or(&l);
            size += x.len() as u64 + 2;
            if size > max {
                return Err(misbehaving(&format!(
                    "it sent a message over max_message_size ({max} bytes; \
                     raise `max_message_size` in the account's config if the message is real)"
                )));
            }
            out.write_all(x)
                .and_then(|()| out.write_all(b"\r\n"))
                .map_err(|e| {
                    Failure::Protocol(format!("cannot write into {}: {e}", dir.display()))
                })?;
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
