//! `fetch`: download new messages of an IMAP folder into a Maildir.
//!
//! Owns: the incremental state (UIDVALIDITY + last UID, under
//! `$XDG_STATE_HOME/mailoauth/fetch/`), batched `UID FETCH … BODY.PEEK[]`
//! streaming with literal parsing, Maildir delivery (tmp → fsync → new), and
//! the optional delete / move afterwards.
//!
//! Resumable by construction: a message's Maildir name is derived from
//! (folder, UIDVALIDITY, UID), so a message delivered before a kill but not yet
//! recorded in the state is recognised and skipped on the next run — no
//! duplicates — and the state only ever records UIDs already on disk — no losses.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Failure;
use super::imap;
use crate::paths;
use crate::providers::{Account, Server};
use crate::store::file::{read_optional, write_atomic};

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

fn folder_key(folder: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, folder.as_bytes());
    d.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect()
}

fn state_path(account: &Account, folder: &str, dir: &Path) -> PathBuf {
    // The state belongs to (account, folder, destination): two Maildirs fetched
    // from the same folder keep separate progress.
    let key = folder_key(&format!("{folder}\0{}", dir.display()));
    paths::state_dir()
        .join("fetch")
        .join(paths::file_stem(&account.name))
        .join(format!("{key}.json"))
}

fn message_name(folder: &str, uidvalidity: u64, uid: u64) -> String {
    format!("{uidvalidity}_{uid}_{}.mailoauth", folder_key(folder))
}

/// UIDs of this folder already in the Maildir (new/ or cur/, any flags).
fn on_disk(dir: &Path, folder: &str, uidvalidity: u64) -> HashSet<u64> {
    let suffix = format!("_{}.mailoauth", folder_key(folder));
    let prefix = format!("{uidvalidity}_");
    let mut out = HashSet::new();
    for sub in ["new", "cur"] {
        for e in fs::read_dir(dir.join(sub)).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let base = name.split(':').next().unwrap_or("");
            if let Some(mid) = base
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(&suffix))
                && let Ok(uid) = mid.parse()
            {
                out.insert(uid);
            }
        }
    }
    out
}

fn deliver(dir: &Path, name: &str, body: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join("tmp").join(name);
    let mut f = fs::File::create(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join("new").join(name))
}

fn ensure_maildir(dir: &Path) -> Result<(), Failure> {
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(dir.join(sub))
            .map_err(|e| io_failure(&format!("cannot create {}", dir.display()), e))?;
    }
    Ok(())
}

fn io_failure(what: &str, e: std::io::Error) -> Failure {
    Failure::Protocol(format!("{what}: {e}"))
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
    ensure_maildir(dir)?;
    let mut s = imap::login(account, server, token, timeout)?;
    let quoted = format!("\"{}\"", folder.replace('\\', "\\\\").replace('"', "\\\""));
    let (lines, st) = s.command(&format!("SELECT {quoted}"))?;
    if !imap::status_ok(&st) {
        return Err(Failure::Refused {
            reply: st,
            challenge: None,
            step: "SELECT",
        });
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
    let spath = state_path(account, folder, dir);
    let mut state: State = read_optional(&spath)
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if state.uidvalidity != uidvalidity {
        // The folder was recreated (or first run): UIDs mean something new.
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
    let have = on_disk(dir, folder, uidvalidity);
    let mut out = Fetched::default();
    let total = uids.len();
    let started = Instant::now();
    let mut done_uids = Vec::with_capacity(total);
    let mut buf = Vec::new();
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
            loop {
                let line = s.conn.read_line()?;
                if let Some(st) = line.strip_prefix(&tag).and_then(|r| r.strip_prefix(' ')) {
                    if !imap::status_ok(st) {
                        return Err(Failure::Protocol(format!("UID FETCH failed: {st}")));
                    }
                    break;
                }
                if !line.starts_with("* ") || !line.contains(" FETCH ") {
                    continue;
                }
                let mut uid = uid_in(&line);
                let Some(size) = literal_size(&line) else {
                    continue;
                };
                s.conn.read_exact_into(size, &mut buf)?;
                let tail = s.conn.read_line()?;
                uid = uid.or_else(|| uid_in(&tail));
                let Some(uid) = uid else {
                    return Err(Failure::Protocol("a FETCH response without UID".into()));
                };
                deliver(dir, &message_name(folder, uidvalidity, uid), &buf)
                    .map_err(|e| io_failure(&format!("cannot write into {}", dir.display()), e))?;
                out.delivered += 1;
                out.bytes += size as u64;
                progress(out.delivered + out.skipped, total, out.bytes);
            }
        }
        // Everything of this batch is on disk: record it, then go on.
        let max = *batch.last().expect("chunks are never empty");
        fs::File::open(dir.join("new"))
            .and_then(|d| d.sync_all())
            .ok();
        state.last_uid = state.last_uid.max(max);
        let bytes = serde_json::to_vec(&state).expect("state serialises");
        write_atomic(&spath, &bytes).map_err(|e| Failure::Protocol(e.to_string()))?;
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
        match after {
            After::Keep => {}
            After::Delete => {
                s.command(&format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"))?;
                let cmd = if s.has("UIDPLUS") {
                    format!("UID EXPUNGE {set}")
                } else {
                    "EXPUNGE".into()
                };
                s.command(&cmd)?;
            }
            After::MoveTo(target) => {
                let t = format!("\"{}\"", target.replace('\\', "\\\\").replace('"', "\\\""));
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
        }
    }
    let _ = s.command("LOGOUT");
    Ok(out)
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
    ensure_maildir(dir)?;
    let mut s = super::pop::login(account, server, token, req.timeout)?;
    s.command("UIDL", "UIDL")?;
    let list: Vec<(u64, String)> = s
        .multiline()?
        .iter()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()?.to_owned()))
        })
        .collect();
    let spath = state_path(account, "\0pop3", dir);
    let mut state: PopState = read_optional(&spath)
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let name = |uidl: &str| format!("pop_{}.mailoauth", folder_key(uidl));
    let exists = |n: &str| {
        dir.join("new").join(n).exists()
            || fs::read_dir(dir.join("cur"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().split(':').next() == Some(n))
    };
    let todo: Vec<&(u64, String)> = list
        .iter()
        .filter(|(_, u)| !state.seen.contains(u))
        .collect();
    let mut out = Fetched::default();
    let mut fetched = Vec::new();
    for (i, (n, uidl)) in todo.iter().enumerate() {
        let file = name(uidl);
        if exists(&file) {
            out.skipped += 1;
        } else {
            s.command(&format!("RETR {n}"), "RETR")?;
            let body = s.message()?;
            deliver(dir, &file, &body)
                .map_err(|e| io_failure(&format!("cannot write into {}", dir.display()), e))?;
            out.delivered += 1;
            out.bytes += body.len() as u64;
        }
        state.seen.insert(uidl.clone());
        fetched.push(*n);
        progress(out.delivered + out.skipped, todo.len(), out.bytes);
        if (i + 1) % 50 == 0 || i + 1 == todo.len() {
            let bytes = serde_json::to_vec(&state).expect("state serialises");
            write_atomic(&spath, &bytes).map_err(|e| Failure::Protocol(e.to_string()))?;
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
fn uid_in(line: &str) -> Option<u64> {
    let mut it = line.split([' ', '(', ')']);
    while let Some(w) = it.next() {
        if w.eq_ignore_ascii_case("UID") {
            return it.next().and_then(|n| n.parse().ok());
        }
    }
    None
}

/// The `{N}` literal size at the end of a line.
fn literal_size(line: &str) -> Option<usize> {
    let inner = line.strip_suffix('}')?;
    let open = inner.rfind('{')?;
    inner[open + 1..].trim_end_matches('+').parse().ok()
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
        assert_eq!(literal_size("* 3 FETCH (UID 42 BODY[] {120}"), Some(120));
        assert_eq!(literal_size("* 3 FETCH (FLAGS (\\Seen))"), None);
        assert_eq!(compress(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
    }

    #[test]
    fn maildir_names_identify_interrupted_deliveries() {
        let d = tempfile::tempdir().unwrap();
        for s in ["new", "cur", "tmp"] {
            fs::create_dir_all(d.path().join(s)).unwrap();
        }
        deliver(d.path(), &message_name("INBOX", 9, 5), b"x").unwrap();
        fs::write(
            d.path()
                .join("cur")
                .join(format!("{}:2,S", message_name("INBOX", 9, 6))),
            b"y",
        )
        .unwrap();
        fs::write(d.path().join("new").join(message_name("Other", 9, 7)), b"z").unwrap();
        assert_eq!(on_disk(d.path(), "INBOX", 9), HashSet::from([5, 6]));
        assert!(on_disk(d.path(), "INBOX", 10).is_empty());
    }
}
