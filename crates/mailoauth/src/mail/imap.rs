//! IMAP sessions for `check` and `fetch`: the login is [`super::login`] driving
//! [`crate::proto::imap`]; here are tagged commands on the logged-in connection
//! and the harmless `SELECT INBOX`, which is where Exchange reports
//! "authenticated but not connected".
//!
//! Must not: parse login replies (the `proto` machine does).

use std::time::Duration;

use super::conn::Conn;
use super::{Failure, Success};
use crate::config::Service;
use crate::proto::imap::{Response, command};
use crate::providers::{Account, Server};

/// An authenticated IMAP session.
pub struct Session {
    /// The connection.
    pub conn: Conn,
    /// Capabilities after login.
    pub caps: Vec<String>,
    /// Mechanism used (`None` after a PREAUTH greeting).
    pub mechanism: Option<crate::sasl::Mechanism>,
    next_tag: u32,
}

impl Session {
    /// Send a command with a fresh tag; return (untagged lines, status line).
    pub fn command(&mut self, cmd: &str) -> Result<(Vec<String>, String), Failure> {
        let tag = self.send(cmd)?;
        let mut r = Response::new(&tag);
        loop {
            if let Some(status) = r.feed(&self.conn.read_text()?)? {
                return Ok((r.untagged(), status));
            }
        }
    }

    /// Send a command with a fresh tag and return the tag (the caller reads the response).
    pub fn send(&mut self, cmd: &str) -> Result<String, Failure> {
        let tag = self.next_tag();
        self.conn.write_all(&command(&tag, cmd))?;
        Ok(tag)
    }

    /// A fresh tag (for a command the caller frames itself, like IDLE).
    pub fn next_tag(&mut self) -> String {
        self.next_tag += 1;
        format!("m{}", self.next_tag)
    }

    /// Read one response whole, its literals inline as on the wire (what
    /// [`crate::proto::imap::data`] parses), at most `max` bytes of them.
    pub fn read_response(&mut self, max: u64) -> Result<Vec<u8>, Failure> {
        let mut raw = self.conn.read_line()?;
        while let Some(n) = crate::proto::imap::data::literal_at_end(&raw) {
            // The whole response counts, so endless `{0}` literals end too.
            if (raw.len() as u64).saturating_add(n) > max {
                return Err(crate::proto::misbehaving(&format!(
                    "a response with literals over {max} bytes where an envelope was asked for"
                )));
            }
            raw.extend_from_slice(b"\r\n");
            self.conn.copy_exact(n, &mut raw).map_err(|e| match e {
                super::conn::CopyError::Read(c) => Failure::from(c),
                super::conn::CopyError::Write(e) => Failure::Protocol(e.to_string()),
            })?;
            raw.extend_from_slice(&self.conn.read_line()?);
        }
        Ok(raw)
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
    let (conn, a) = super::login(Service::Imap, account, server, token, timeout)?;
    Ok(Session {
        conn,
        caps: a.caps,
        mechanism: a.mechanism,
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
    if !status_ok(&st) {
        return Err(crate::proto::refused(
            Service::Imap,
            st,
            None,
            "SELECT INBOX",
        ));
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
    crate::proto::imap::is_ok(status)
}
