//! Watching IMAP folders for new mail on a logged-in session: what the
//! service's watchers run — one folder per connection ([`watch`]), or
//! several on one connection where the server offers NOTIFY, RFC 5465
//! ([`watch_folders`]).
//!
//! Owns: `EXAMINE` (read-only: watching never changes `\Seen`), with
//! `(CONDSTORE)` where offered so an unchanged folder needs no FETCH after a
//! reconnect; the cursor (UIDVALIDITY + last UID reported, HIGHESTMODSEQ) and
//! what a changed UIDVALIDITY means (the old UIDs are void: start after the
//! newest); catching up with `UID FETCH last+1:* (UID RFC822.SIZE ENVELOPE)`
//! in batches handed to a [`Sink`] in UID order; IDLE re-issued every
//! [`Options::renew`] (servers end an IDLE after 29–30 minutes), polling with
//! `NOOP` where IDLE is not offered; and how the session ended. Must not:
//! log in, obtain tokens, keep time beyond its waits, or decide what to do
//! after an end (the caller reconnects, with its backoff).

use std::time::{Duration, Instant};

use super::Failure;
use super::imap::Session;
use crate::proto::imap::Response;
use crate::proto::imap::data::{Envelope, Selected, Value, fetch_response};
use crate::proto::imap::idle::{self, Ending, Heard, Idle};
use crate::service::Service;

mod notify;
pub use notify::watch_folders;

/// Where a folder's watch stands: the last message reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The folder's UIDVALIDITY the UIDs belong to.
    pub uidvalidity: u32,
    /// The highest UID reported (0: none yet).
    pub last_uid: u32,
    /// The folder's HIGHESTMODSEQ when it was last looked at (CONDSTORE).
    pub modseq: Option<u64>,
}

/// A message that arrived.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Its UID (under the cursor's UIDVALIDITY).
    pub uid: u32,
    /// `RFC822.SIZE`.
    pub size: u64,
    /// Its envelope.
    pub envelope: Envelope,
}

/// Where the watch reports to.
pub trait Sink {
    /// New messages in UID order and the cursor after them; the watch goes on
    /// only once this returned (so what it reports is durable first). `Err`
    /// ends the watch (the caller could not keep them).
    fn seen(&mut self, folder: &str, cursor: Cursor, batch: Vec<NewMessage>) -> Result<(), String>;
    /// The folder's cursor moved without new messages (first look, a new
    /// UIDVALIDITY, a new HIGHESTMODSEQ).
    fn moved(&mut self, folder: &str, cursor: Cursor) -> Result<(), String>;
    /// An IDLE was renewed (the wake-ups an idle watcher costs, counted).
    fn renewed(&mut self) {}
    /// Whether the watch should end (checked after every wake-up).
    fn stopping(&self) -> bool;
}

/// How the watch waits and how much it takes at once.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// IDLE is ended and re-issued this often (below the servers' 29 minutes).
    pub renew: Duration,
    /// Without IDLE: how often to look.
    pub poll: Duration,
    /// One command's timeout.
    pub timeout: Duration,
    /// Messages per [`Sink::seen`] call.
    pub batch: usize,
}

/// Longest FETCH response (envelope fields) accepted.
const MAX_ENVELOPE: u64 = 256 * 1024;

/// How a watch ended (without a transport failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// [`Sink::stopping`] said so; the session was logged out.
    Stopped,
    /// The server ended the session (`* BYE`); `token_expired` when it said
    /// the access token ran out (log in again at once, with a fresh token).
    Bye {
        /// The BYE line.
        line: String,
        /// Exchange's `AccessTokenExpired`-style end.
        token_expired: bool,
    },
    /// The server asked to be left alone this long.
    Throttled(Duration, String),
    /// The folder is not there (EXAMINE answered `NO [NONEXISTENT]` or
    /// said so in words): a configuration to fix, not a failure to retry
    /// soon.
    NoFolder {
        /// The folder.
        folder: String,
        /// The server's reply.
        reply: String,
    },
    /// [`watch_folders`]: the server refused `NOTIFY` (its reply): watch
    /// each folder on its own connection instead.
    NoNotify(String),
}

/// Watch `folder` from `cursor` (`None`: a first look, which reports nothing
/// already there) until the sink says stop or the server ends the session.
pub fn watch(
    s: &mut Session,
    folder: &str,
    cursor: Option<Cursor>,
    opts: &Options,
    sink: &mut dyn Sink,
) -> Result<Ended, Failure> {
    let mut cur = match look(s, folder, cursor, opts, sink)? {
        Look::At(c, _) => c,
        Look::Ended(e) => return Ok(e),
    };
    let can_idle = s.has("IDLE");
    loop {
        if sink.stopping() {
            let _ = s.command("LOGOUT");
            return Ok(Ended::Stopped);
        }
        let woke = if can_idle {
            idle_once(s, opts, sink, &mut |_, heard| {
                matches!(heard, Heard::NewMail(_))
            })?
        } else {
            match poll_once(s, opts)? {
                Some(end) => return Ok(Ended::from_ending(end)),
                None => Wake::Look,
            }
        };
        match woke {
            Wake::Look => {
                if let Some(end) = catch_up(s, folder, &mut cur, opts, sink)? {
                    return Ok(end);
                }
            }
            Wake::Renewed => {}
            Wake::Stop => {
                let _ = s.command("LOGOUT");
                return Ok(Ended::Stopped);
            }
            Wake::Ended(e) => return Ok(Ended::from_ending(e)),
        }
    }
}

/// What looking at a folder left: its cursor and the UIDNEXT its EXAMINE
/// said, or how the session ended.
enum Look {
    At(Cursor, Option<u32>),
    Ended(Ended),
}

/// EXAMINE `folder`, settle the cursor (first look, new UIDVALIDITY) and
/// report what came after it.
fn look(
    s: &mut Session,
    folder: &str,
    cursor: Option<Cursor>,
    opts: &Options,
    sink: &mut dyn Sink,
) -> Result<Look, Failure> {
    let name = super::fetch::quote(folder)?;
    let examine = if s.has("CONDSTORE") {
        format!("EXAMINE {name} (CONDSTORE)")
    } else {
        format!("EXAMINE {name}")
    };
    let (lines, st) = s.command(&examine)?;
    if let Some(end) = ended_by(&lines, &st) {
        return Ok(Look::Ended(end));
    }
    if !super::imap::status_ok(&st) {
        if no_such_folder(&st) {
            return Ok(Look::Ended(Ended::NoFolder {
                folder: folder.to_owned(),
                reply: st,
            }));
        }
        return Err(crate::proto::refused(Service::Imap, st, None, "EXAMINE"));
    }
    let sel = Selected::from_lines(&lines);
    let Some(uidvalidity) = sel.uidvalidity else {
        return Err(crate::proto::misbehaving(
            "its EXAMINE reply has no UIDVALIDITY (RFC 9051 requires it)",
        ));
    };
    let mut cur = match cursor {
        Some(c) if c.uidvalidity == uidvalidity => c,
        // First look, or the UIDs were renumbered: what is there now is old.
        _ => {
            let c = Cursor {
                uidvalidity,
                last_uid: newest_uid(s, &sel)?,
                modseq: sel.highestmodseq,
            };
            sink.moved(folder, c).map_err(Failure::Protocol)?;
            c
        }
    };
    let unchanged = cur.modseq.is_some()
        && cur.modseq == sel.highestmodseq
        && sel
            .uidnext
            .is_some_and(|n| n <= cur.last_uid.saturating_add(1));
    if !unchanged {
        if let Some(end) = catch_up(s, folder, &mut cur, opts, sink)? {
            return Ok(Look::Ended(end));
        }
        if sel.highestmodseq.is_some() && sel.highestmodseq > cur.modseq {
            cur.modseq = sel.highestmodseq;
            sink.moved(folder, cur).map_err(Failure::Protocol)?;
        }
    }
    Ok(Look::At(cur, sel.uidnext))
}

impl Ended {
    fn from_ending(e: Ending) -> Ended {
        match e {
            Ending::Bye(line) => Ended::Bye {
                token_expired: idle::token_expired(&line),
                line,
            },
            Ending::Throttled(d, st) => Ended::Throttled(d, st),
            // A refused IDLE after it worked before: log in again.
            Ending::Refused(st) => Ended::Bye {
                line: st,
                token_expired: false,
            },
        }
    }
}

/// A BYE among a command's lines, or a throttling status.
fn ended_by(lines: &[String], status: &str) -> Option<Ended> {
    if let Some(bye) = lines
        .iter()
        .find(|l| l.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("* BYE")))
    {
        return Some(Ended::from_ending(Ending::Bye(bye.clone())));
    }
    idle::throttled(status).map(|d| Ended::Throttled(d, status.to_owned()))
}

/// Whether a refused EXAMINE says the folder does not exist: RFC 5530's
/// `NONEXISTENT` code, or the words servers without it use.
fn no_such_folder(status: &str) -> bool {
    let upper = status.to_ascii_uppercase();
    upper.contains("[NONEXISTENT]")
        || [
            "DOESN'T EXIST",
            "DOES NOT EXIST",
            "NOT FOUND",
            "UNKNOWN MAILBOX",
            "NO SUCH",
        ]
        .iter()
        .any(|w| upper.contains(w))
}

/// The highest UID in the folder now (UIDNEXT − 1 when the server says it).
fn newest_uid(s: &mut Session, sel: &Selected) -> Result<u32, Failure> {
    if let Some(n) = sel.uidnext {
        return Ok(n.saturating_sub(1));
    }
    if sel.exists == Some(0) {
        return Ok(0);
    }
    let (lines, st) = s.command("UID FETCH * (UID)")?;
    if !super::imap::status_ok(&st) {
        return Ok(0);
    }
    let mut max = 0;
    for l in lines {
        if let Ok(Some((_, items))) = fetch_response(l.as_bytes())
            && let Some(u) = item(&items, "UID").and_then(Value::number)
        {
            max = max.max(u32::try_from(u).unwrap_or(0));
        }
    }
    Ok(max)
}

fn item<'a>(items: &'a [(String, Value)], name: &str) -> Option<&'a Value> {
    items.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

/// Fetch what came after the cursor and report it in batches; again while
/// the folder grew during the fetch. A message that arrives while a FETCH is
/// answered is announced by an `EXISTS` among its lines, and the server
/// does not repeat it when the next IDLE starts: ignored, that message
/// would wait for the next one to be seen.
fn catch_up(
    s: &mut Session,
    folder: &str,
    cur: &mut Cursor,
    opts: &Options,
    sink: &mut dyn Sink,
) -> Result<Option<Ended>, Failure> {
    for _ in 0..MAX_CATCH_UP_ROUNDS {
        match fetch_new(s, folder, cur, opts, sink)? {
            Fetched::Ended(end) => return Ok(Some(end)),
            Fetched::Grew => continue,
            Fetched::Done => return Ok(None),
        }
    }
    Ok(None)
}

/// Rounds of [`catch_up`] in a row before it lets the folder's IDLE tell it
/// of the rest (a server announcing growth forever must not hold it).
const MAX_CATCH_UP_ROUNDS: usize = 100;

/// What one `UID FETCH` round of a catch-up left.
enum Fetched {
    Done,
    Grew,
    Ended(Ended),
}

/// One `UID FETCH last+1:*` round.
fn fetch_new(
    s: &mut Session,
    folder: &str,
    cur: &mut Cursor,
    opts: &Options,
    sink: &mut dyn Sink,
) -> Result<Fetched, Failure> {
    let from = cur.last_uid.saturating_add(1);
    let tag = s.send(&format!("UID FETCH {from}:* (UID RFC822.SIZE ENVELOPE)"))?;
    let mut r = Response::new(&tag);
    let mut batch = Vec::new();
    let status = loop {
        let raw = s.read_response(MAX_ENVELOPE)?;
        if raw.starts_with(b"* ") {
            // `from:*` also names the newest message when none is newer than the cursor.
            if let Some((_, items)) = fetch_response(&raw)? {
                let uid = item(&items, "UID").and_then(Value::number).unwrap_or(0);
                let Ok(uid) = u32::try_from(uid) else {
                    continue;
                };
                if uid > cur.last_uid {
                    batch.push(NewMessage {
                        uid,
                        size: item(&items, "RFC822.SIZE")
                            .and_then(Value::number)
                            .unwrap_or(0),
                        envelope: item(&items, "ENVELOPE")
                            .and_then(Envelope::from_value)
                            .unwrap_or_default(),
                    });
                }
                if batch.len() >= opts.batch {
                    report(folder, cur, &mut batch, sink)?;
                }
                continue;
            }
        }
        let text = String::from_utf8_lossy(&raw).into_owned();
        if let Some(st) = r.feed(&text)? {
            break st;
        }
    };
    let lines = r.untagged();
    if let Some(end) = ended_by(&lines, &status) {
        report(folder, cur, &mut batch, sink)?;
        return Ok(Fetched::Ended(end));
    }
    if !super::imap::status_ok(&status) {
        return Err(crate::proto::refused(
            Service::Imap,
            status,
            None,
            "UID FETCH",
        ));
    }
    report(folder, cur, &mut batch, sink)?;
    let grew = lines.iter().any(|l| {
        l.strip_prefix("* ")
            .and_then(|r| r.split_once(' '))
            .is_some_and(|(n, what)| {
                n.bytes().all(|b| b.is_ascii_digit()) && what.eq_ignore_ascii_case("EXISTS")
            })
    });
    Ok(if grew { Fetched::Grew } else { Fetched::Done })
}

fn report(
    folder: &str,
    cur: &mut Cursor,
    batch: &mut Vec<NewMessage>,
    sink: &mut dyn Sink,
) -> Result<(), Failure> {
    if batch.is_empty() {
        return Ok(());
    }
    // Servers answer in UID order; a hostile one must not move the cursor back.
    batch.sort_by_key(|m| m.uid);
    batch.dedup_by_key(|m| m.uid);
    cur.last_uid = cur.last_uid.max(batch.last().map_or(0, |m| m.uid));
    sink.seen(folder, *cur, std::mem::take(batch))
        .map_err(Failure::Protocol)
}

enum Wake {
    Look,
    Renewed,
    Stop,
    Ended(Ending),
}

/// One IDLE: until new mail, the renewal time, a stop or an end.
/// `news` reads each line the server sends (with what the IDLE machine made
/// of it): true when it tells of mail to look for.
fn idle_once(
    s: &mut Session,
    opts: &Options,
    sink: &mut dyn Sink,
    news: &mut dyn FnMut(&str, &Heard) -> bool,
) -> Result<Wake, Failure> {
    let (mut i, cmd) = Idle::start(&s.next_tag());
    s.conn.write_all(&cmd)?;
    let deadline = Instant::now() + opts.renew;
    // Set once DONE is sent: what to do when the tagged reply comes.
    let mut after: Option<Wake> = None;
    let mut lines_after = 0usize;
    let stopped = |sink: &dyn Sink, e: Failure| {
        if sink.stopping() {
            Ok(Wake::Stop)
        } else {
            Err(e)
        }
    };
    loop {
        if after.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match s.conn.wait(left, opts.timeout) {
                Ok(true) => {}
                Ok(false) => {
                    if !i.idling() {
                        // The `+` never came within the renewal time: a stuck server.
                        return Err(crate::proto::misbehaving(
                            "it did not start IDLE (no `+` continuation)",
                        ));
                    }
                    after = Some(if sink.stopping() {
                        Wake::Stop
                    } else {
                        sink.renewed();
                        Wake::Renewed
                    });
                    s.conn.write_all(i.done())?;
                    continue;
                }
                Err(e) => return stopped(sink, e.into()),
            }
        } else {
            lines_after += 1;
            if lines_after > crate::proto::MAX_REPLY_LINES {
                return Err(crate::proto::misbehaving("IDLE did not end after DONE"));
            }
        }
        let line = match s.conn.read_text() {
            Ok(l) => l,
            Err(e) => return stopped(sink, e.into()),
        };
        let heard = i.feed(&line);
        let new = news(&line, &heard);
        match heard {
            Heard::Finished => return Ok(after.unwrap_or(Wake::Look)),
            Heard::Ended(e) => return Ok(Wake::Ended(e)),
            _ if new => match after {
                None => {
                    after = Some(Wake::Look);
                    s.conn.write_all(i.done())?;
                }
                // Mail that came while the renewal's DONE was on its way.
                Some(Wake::Renewed) => after = Some(Wake::Look),
                Some(_) => {}
            },
            _ => {
                if after.is_none() && sink.stopping() && i.idling() {
                    after = Some(Wake::Stop);
                    s.conn.write_all(i.done())?;
                }
            }
        }
    }
}

/// Without IDLE: wait the poll interval (ending early if the connection is
/// ended under us), then NOOP.
fn poll_once(s: &mut Session, opts: &Options) -> Result<Option<Ending>, Failure> {
    // Unasked-for lines (a BYE) end the wait early; NOOP reads them.
    let _ = s.conn.wait(opts.poll, opts.timeout)?;
    let (lines, st) = s.command("NOOP")?;
    if let Some(bye) = lines
        .iter()
        .find(|l| l.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("* BYE")))
    {
        return Ok(Some(Ending::Bye(bye.clone())));
    }
    if let Some(d) = idle::throttled(&st) {
        return Ok(Some(Ending::Throttled(d, st)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::no_such_folder;

    #[test]
    fn a_missing_folder_is_told_from_other_refusals() {
        // Dovecot, Gmail, and servers without RFC 5530's codes.
        assert!(no_such_folder(
            "a3 NO [NONEXISTENT] Mailbox doesn't exist: Nope (0.001 + 0.000 secs)."
        ));
        assert!(no_such_folder(
            "a3 NO [NONEXISTENT] Unknown Mailbox: Nope (Failure)"
        ));
        assert!(no_such_folder("a3 NO Folder not found"));
        assert!(!no_such_folder("a3 NO [UNAVAILABLE] try later"));
        assert!(!no_such_folder("a3 NO [NOPERM] Permission denied"));
    }
}
