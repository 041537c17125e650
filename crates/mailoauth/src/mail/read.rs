//! One message by folder and UID, streamed: what the service's
//! `GET …/folders/{folder}/messages/{uid}` serves.
//!
//! Owns: `EXAMINE` (read-only: reading never changes `\Seen` or anything
//! else) then `UID FETCH uid BODY.PEEK[]`, the literal copied to the caller's
//! writer as it arrives, the size announced first (so an HTTP answer can
//! carry it) and bounded by `max_message_size`. Must not: buffer the message
//! or parse it.

use std::io::Write;
use std::time::Duration;

use super::Failure;
use super::conn::CopyError;
use super::fetch::{literal_size, quote, too_big, uid_in};
use super::imap;
use crate::proto::{MAX_REPLY_LINES, misbehaving};
use crate::providers::{Account, Server};
use crate::service::Service;

/// How reading one message ended.
#[derive(Debug)]
pub enum Read {
    /// Copied whole: this many bytes.
    Copied(u64),
    /// The folder has no message with that UID.
    NoSuchMessage,
    /// The server refused to open the folder (no such folder, or no right).
    NoSuchFolder(String),
}

/// Log in, open `folder` read-only and copy message `uid` to `out`;
/// `on_size` hears its size before the first byte is written.
#[allow(clippy::too_many_arguments)]
pub fn message(
    account: &Account,
    server: &Server,
    token: &str,
    folder: &str,
    uid: u32,
    timeout: Duration,
    on_size: &mut dyn FnMut(u64),
    out: &mut dyn Write,
) -> Result<Read, Failure> {
    let name = quote(folder)?;
    let mut s = imap::login(account, server, token, timeout)?;
    let (_, st) = s.command(&format!("EXAMINE {name}"))?;
    if !imap::status_ok(&st) {
        let _ = s.command("LOGOUT");
        if crate::proto::is_temporary(Service::Imap, &st) {
            return Err(crate::proto::refused(Service::Imap, st, None, "EXAMINE"));
        }
        return Ok(Read::NoSuchFolder(crate::text::printable(&st).into_owned()));
    }
    let tag = s.send(&format!("UID FETCH {uid} (UID BODY.PEEK[])"))?;
    let mut copied = None;
    let mut chatter = 0usize;
    loop {
        let line = s.conn.read_text()?;
        if let Some(st) = line.strip_prefix(&tag).and_then(|r| r.strip_prefix(' ')) {
            if !imap::status_ok(st) {
                return Err(Failure::Protocol(format!("UID FETCH failed: {st}")));
            }
            break;
        }
        let size = if copied.is_none() && line.starts_with("* ") && line.contains(" FETCH ") {
            literal_size(&line)?
        } else {
            None
        };
        let Some(size) = size else {
            chatter += 1;
            if chatter > MAX_REPLY_LINES {
                return Err(misbehaving(&format!(
                    "more than {MAX_REPLY_LINES} lines without the message in its FETCH reply"
                )));
            }
            continue;
        };
        if uid_in(&line).is_some_and(|u| u != u64::from(uid)) {
            return Err(misbehaving(&format!(
                "it answered UID FETCH {uid} with another message"
            )));
        }
        if size > account.max_message_size {
            return Err(too_big(size, account.max_message_size));
        }
        on_size(size);
        s.conn.copy_exact(size, out).map_err(|e| match e {
            CopyError::Read(c) => Failure::from(c),
            CopyError::Write(e) => Failure::Unreachable(format!("the reader went away: {e}")),
        })?;
        copied = Some(size);
    }
    let _ = s.command("LOGOUT");
    Ok(copied.map_or(Read::NoSuchMessage, Read::Copied))
}
