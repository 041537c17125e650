//! `fetch`: download new messages of an IMAP folder (or a POP3 maildrop) into
//! a Maildir.
//!
//! Owns: the incremental state (UIDVALIDITY + last UID, or the UIDLs seen; kept
//! in the Maildir by `maildir::StateFile` and checked against what the
//! Maildir holds), batched `UID FETCH … BODY.PEEK[]` with literal parsing, the
//! message size limit (`max_message_size`), and the optional delete / move
//! afterwards. Must not: hold a message in memory (literals and POP3 bodies
//! stream into `tmp/`), or decode one (bodies are bytes).
//!
//! Resumable by construction: a message's Maildir name is derived from
//! (folder, UIDVALIDITY, UID), so a message delivered before a kill but not yet
//! recorded in the state is recognised and skipped on the next run — no
//! duplicates — and the state only ever records UIDs already on disk — no losses.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Failure;
use super::conn::CopyError;
use super::imap;
use super::maildir::{self, Delivery, StateFile, io_failure};
use crate::proto::{MAX_REPLY_LINES, misbehaving};
use crate::providers::{Account, Server};
use crate::service::Service;

/// UIDs per `UID FETCH` command.
const BATCH: usize = 250;

/// What to do with fetched messages on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    /// Leave them.
    Keep,
    /// Delete (flag \Deleted and expunge).
    Delete,
    /// Move to this folder.
    MoveTo(String),
}

/// Per-folder incremental state.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct State {
    uidvalidity: u64,
    last_uid: u64,
}

/// Outcome of a fetch.
#[derive(Debug, Default)]
pub struct Fetched {
    /// Messages written to the Maildir this run.
    pub delivered: usize,
    /// Messages found already on disk from an interrupted run.
    pub skipped: usize,
    /// Bytes written.
    pub bytes: u64,
}

/// What to fetch where.
#[derive(Debug, Clone)]
pub struct Request {
    /// IMAP folder.
    pub folder: String,
    /// Local Maildir.
    pub dir: PathBuf,
    /// What to do with the fetched messages on the server.
    pub after: After,
    /// Network timeout.
    pub timeout: Duration,
}

/// Fetch new messages of `req.folder` into the Maildir `req.dir`; `progress` gets
/// (messages done, messages to do, bytes).
pub fn fetch(
    account: &Account,
    server: &Server,
    token: &str,
    req: &Request,
    progress: &mut dyn FnMut(usize, usize, u64),
) -> Result<Fetched, Failure> {
    let Request {
        folder,
        dir,
        after,
        timeout,
    } = req;
    let (folder, dir, timeout) = (folder.as_str(), dir.as_path(), *timeout);
    let quoted = quote(folder)?;
    let target = match after {
        After::MoveTo(t) => Some(quote(t)?),
        _ => None,
    };
    maildir::ensure(dir)?;
    let mut s = imap::login(account, server, token, timeout)?;
    let (lines, st) = s.command(&format!("SELECT {quoted}"))?;
    if !imap::status_ok(&st) {
        return Err(crate::proto::refused(Service::Imap, st, None, "SELECT"));
    }
    let uidvalidity = lines
        .iter()
        .find_map(|l| {
            l.split("[UIDVALIDITY ")
                .nth(1)
                .and_then(|r| r.split(']').next())
                .and_then(|n| n.trim().parse().ok())
        })
        .ok_or_else(|| Failure::Protocol("the server sent no UIDVALIDITY".into()))?;
    let sfile = StateFile::new(account, folder, dir);
    let mut state: State = sfile.load()?;
    let have = maildir::on_disk(dir, folder, uidvalidity);
    if state.uidvalidity != uidvalidity || have.is_empty() {
        // The folder was recreated, or first run, or the Maildir holds none of
        // this folder's messages (deleted, emptied or replaced since): fetch
        // it all again; what is still on disk is skipped by name.
        state = State {
            uidvalidity,
            last_uid: 0,
        };
    }
    let (lines, st) = s.command(&format!("UID SEARCH UID {}:*", state.last_uid + 1))?;
    if !imap::status_ok(&st) {
        return Err(Failure::Protocol(format!("UID SEARCH failed: {st}")));
    }
    let mut uids: Vec<u64> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("* SEARCH"))
        .flat_map(|r| r.split_whitespace().filter_map(|n| n.parse().ok()))
        .filter(|&u| u > state.last_uid) // `n:*` always includes the highest UID
        .collect();
    uids.sort_unstable();
    let mut out = Fetched::default();
    let total = uids.len();
    let started = Instant::now();
    let mut done_uids = Vec::with_capacity(total);
    for batch in uids.chunks(BATCH) {
        let want: Vec<u64> = batch
            .iter()
            .copied()
            .filter(|u| !have.contains(u))
            .collect();
        out.skipped += batch.len() - want.len();
        if !want.is_empty() {
            let set = want
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let tag = s.send(&format!("UID FETCH {set} (UID BODY.PEEK[])"))?;
            // Lines that carry no message: bounded, or a server could keep us
            // here forever.
            let mut chatter = 0usize;
            // One delivery per UID asked for: a server that sends a message
            // twice (or one we did not ask for) must not overwrite the Maildir
            // or inflate the count.
            let mut delivered_now = std::collections::HashSet::new();
            loop {
                let line = s.conn.read_text()?;
                if let Some(st) = line.strip_prefix(&tag).and_then(|r| r.strip_prefix(' ')) {
                    if !imap::status_ok(st) {
                        return Err(Failure::Protocol(format!("UID FETCH failed: {st}")));
                    }
                    break;
                }
                let size = if line.starts_with("* ") && line.contains(" FETCH ") {
                    literal_size(&line)?
                } else {
                    None
                };
                let Some(size) = size else {
                    chatter += 1;
                    if chatter > MAX_REPLY_LINES {
                        return Err(misbehaving(&format!(
                            "more than {MAX_REPLY_LINES} lines without a message in one FETCH reply"
                        )));
                    }
                    continue;
                };
                if size > account.max_message_size {
                    return Err(too_big(size, account.max_message_size));
                }
                let uid = uid_in(&line);
                let wanted = |u: u64| want.contains(&u) && !delivered_now.contains(&u);
                if uid.is_some_and(|u| !wanted(u)) {
                    // Not asked for, or sent again: read past it (counted as
                    // chatter, so an endless stream of them still ends).
                    chatter += 1;
                    s.conn
                        .copy_exact(size, &mut std::io::sink())
                        .map_err(|e| match e {
                            CopyError::Read(c) => Failure::from(c),
                            CopyError::Write(e) => io_failure("discarding", e),
                        })?;
                    s.conn.read_text()?;
                    continue;
                }
                let pending = match uid {
                    Some(u) => maildir::imap_name(folder, uidvalidity, u),
                    None => format!("pending-{}.mailoauth", std::process::id()),
                };
                let mut d = Delivery::start(dir, &pending)?;
                s.conn.copy_exact(size, d.writer()).map_err(|e| match e {
                    CopyError::Read(c) => Failure::from(c),
                    CopyError::Write(e) => {
                        io_failure(&format!("cannot write into {}", dir.display()), e)
                    }
                })?;
                let tail = s.conn.read_text()?;
                let Some(uid) = uid.or_else(|| uid_in(&tail)) else {
                    return Err(Failure::Protocol("a FETCH response without UID".into()));
                };
                if !wanted(uid) {
                    // Dropping the delivery removes its file from tmp/.
                    chatter += 1;
                    continue;
                }
                d.finish(&maildir::imap_name(folder, uidvalidity, uid))?;
                delivered_now.insert(uid);
                out.delivered += 1;
                out.bytes += size;
                progress(out.delivered + out.skipped, total, out.bytes);
            }
        }
        // Everything of this batch is on disk: record it, then go on.
        let max = *batch.last().expect("chunks are never empty");
        std::fs::File::open(dir.join("new"))
            .and_then(|d| d.sync_all())
            .ok();
        state.last_uid = state.last_uid.max(max);
        sfile.save(&state)?;
        done_uids.extend_from_slice(batch);
    }
    log::info!(
        "fetched {} messages ({} bytes) in {:.2} s",
        out.delivered,
        out.bytes,
        started.elapsed().as_secs_f32()
    );
    if !done_uids.is_empty() {
        let set = compress(&done_uids);
        match (after, target) {
            (After::Delete, _) => {
                s.command(&format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"))?;
                let cmd = if s.has("UIDPLUS") {
                    format!("UID EXPUNGE {set}")
                } else {
                    "EXPUNGE".into()
                };
                s.command(&cmd)?;
            }
            (After::MoveTo(_), Some(t)) => {
                if s.has("MOVE") {
                    let (_, st) = s.command(&format!("UID MOVE {set} {t}"))?;
                    if !imap::status_ok(&st) {
                        return Err(Failure::Protocol(format!("UID MOVE failed: {st}")));
                    }
                } else {
                    let (_, st) = s.command(&format!("UID COPY {set} {t}"))?;
                    if !imap::status_ok(&st) {
                        return Err(Failure::Protocol(format!("UID COPY failed: {st}")));
                    }
                    s.command(&format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"))?;
                    s.command("EXPUNGE")?;
                }
            }
            _ => {}
        }
    }
    let _ = s.command("LOGOUT");
    Ok(out)
}

/// A mailbox name as an IMAP quoted string; CR, LF and NUL cannot be quoted
/// (and would end the command), so they are refused — the CLI refuses them
/// earlier, with a usage error.
pub(super) fn quote(name: &str) -> Result<String, Failure> {
    if name.contains(['\r', '\n', '\0']) {
        return Err(Failure::Protocol(format!(
            "the folder name {:?} holds a line break or NUL",
            name
        )));
    }
    Ok(format!(
        "\"{}\"",
        name.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// The failure for a message over `max_message_size`.
pub(super) fn too_big(size: u64, max: u64) -> Failure {
    misbehaving(&format!(
        "it announced a message of {size} bytes, over max_message_size ({max} bytes; \
         raise `max_message_size` in the account's config if the message is real)"
    ))
}

/// Per-maildrop POP3 state: the UIDLs already delivered.
#[derive(Debug, Default, Serialize, Deserialize)]
struct PopState {
    seen: std::collections::BTreeSet<String>,
}

/// Fetch new messages of a POP3 maildrop (for POP-only accounts) into `req.dir`.
/// New means a UIDL not delivered before; names derive from the UIDL, so a run
/// killed halfway resumes without duplicates. `After::Delete` deletes what was
/// fetched; POP3 has no folders to move to.
pub fn fetch_pop(
    account: &Account,
    server: &Server,
    token: &str,
    req: &Request,
    progress: &mut dyn FnMut(usize, usize, u64),
) -> Result<Fetched, Failure> {
    let dir = req.dir.as_path();
    if let After::MoveTo(_) = req.after {
        return Err(Failure::Protocol(
            "POP3 has no folders: use --delete or keep the messages".into(),
        ));
    }
    maildir::ensure(dir)?;
    let mut s = super::pop::login(account, server, token, req.timeout)?;
    s.command("UIDL", "UIDL")?;
    let mut list: Vec<(u64, String)> = Vec::new();
    for l in s.multiline()? {
        let mut it = l.split_whitespace();
        let (Some(n), Some(uidl)) = (it.next().and_then(|n| n.parse().ok()), it.next()) else {
            continue;
        };
        // RFC 1939: a UIDL is printable ASCII; anything else cannot name a file
        // reliably (two invalid ones could decode alike).
        if !uidl.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(misbehaving(&format!(
                "a UIDL that is not printable ASCII ({uidl:?})"
            )));
        }
        list.push((n, uidl.to_owned()));
    }
    let sfile = StateFile::new(account, "\0pop3", dir);
    let mut state: PopState = sfile.load()?;
    if !maildir::holds_pop(dir) {
        // Deleted, emptied or replaced since the last run: fetch it all again.
        state.seen.clear();
    }
    let on_disk = maildir::names(dir);
    let todo: Vec<&(u64, String)> = list
        .iter()
        .filter(|(_, u)| !state.seen.contains(u))
        .collect();
    let mut out = Fetched::default();
    let mut fetched = Vec::new();
    for (i, (n, uidl)) in todo.iter().enumerate() {
        let file = maildir::pop_name(uidl);
        if on_disk.contains(&file) {
            out.skipped += 1;
        } else {
            s.command(&format!("RETR {n}"), "RETR")?;
            let mut d = Delivery::start(dir, &file)?;
            let size = s.message_to(d.writer(), account.max_message_size, dir)?;
            d.finish(&file)?;
            out.delivered += 1;
            out.bytes += size;
        }
        state.seen.insert(uidl.clone());
        fetched.push(*n);
        progress(out.delivered + out.skipped, todo.len(), out.bytes);
        if (i + 1) % 50 == 0 || i + 1 == todo.len() {
            sfile.save(&state)?;
        }
    }
    if req.after == After::Delete {
        for n in &fetched {
            s.command(&format!("DELE {n}"), "DELE")?;
        }
    }
    // QUIT commits deletions (RFC 1939 UPDATE state).
    s.command("QUIT", "QUIT")?;
    Ok(out)
}

/// `UID n` inside a FETCH response line.
pub(super) fn uid_in(line: &str) -> Option<u64> {
    let mut it = line.split([' ', '(', ')']);
    while let Some(w) = it.next() {
        if w.eq_ignore_ascii_case("UID") {
            return it.next().and_then(|n| n.parse().ok());
        }
    }
    None
}

/// The `{N}` literal size at the end of a line (`None`: no literal); a size
/// that is not a number is the server's error, not a line to skip (its bytes
/// would then be read as responses).
pub(super) fn literal_size(line: &str) -> Result<Option<u64>, Failure> {
    let Some(inner) = line.strip_suffix('}') else {
        return Ok(None);
    };
    let Some(open) = inner.rfind('{') else {
        return Ok(None);
    };
    let n = inner[open + 1..].trim_end_matches('+');
    n.parse().map(Some).map_err(|_| {
        let shown: String = n.chars().take(40).collect();
        misbehaving(&format!("a literal size that is not a number ({shown:?})"))
    })
}

/// A compact UID set: `1:5,7,9:10`.
fn compress(uids: &[u64]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end + 1 {
            i += 1;
            end = uids[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}:{end}")
        });
        i += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_helpers() {
        assert_eq!(uid_in("* 3 FETCH (UID 42 BODY[] {120}"), Some(42));
        assert_eq!(uid_in(" UID 7)"), Some(7));
        assert_eq!(
            literal_size("* 3 FETCH (UID 42 BODY[] {120}").unwrap(),
            Some(120)
        );
        assert_eq!(literal_size("* 3 FETCH (FLAGS (\\Seen))").unwrap(), None);
        let e = literal_size("* 1 FETCH (BODY[] {99999999999999999999999}").unwrap_err();
        assert!(e.to_string().contains("misbehaving"), "{e}");
        assert!(quote("a\r\nb").is_err());
        assert_eq!(quote("a\"b").unwrap(), "\"a\\\"b\"");
        assert_eq!(compress(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
    }
}
