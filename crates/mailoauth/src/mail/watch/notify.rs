//! Several folders on one connection with NOTIFY (RFC 5465): what the
//! service's watcher runs when the server offers it, instead of a
//! connection per folder.
//!
//! Owns: `NOTIFY SET` for the watched folders, reading the `STATUS`
//! responses it brings (during IDLE, or among other replies) into "this
//! folder has news", and the round of looks and `STATUS` questions that
//! leaves no gap between a look and the next notification. Must not: look
//! at a folder itself (the parent's `look` does, as for a single folder).

use super::{
    Cursor, Ended, Look, Options, Sink, Wake, ended_by, idle_once, look, no_such_folder, poll_once,
};
use crate::mail::Failure;
use crate::mail::imap::Session;
use crate::proto::imap::data::status_response;
use crate::service::Service;

/// Watch several folders on one connection with NOTIFY (RFC 5465), where
/// the server offers it (`Session::has("NOTIFY")`): each folder is looked at
/// as [`super::watch`] does, then the server is asked to tell of new messages in
/// any of them (`* STATUS` responses, heard during IDLE), and only the
/// folders it names are looked at again. After every round each folder's
/// `STATUS` is asked, so mail that came while the session was busy is not
/// missed. [`Ended::NoNotify`] when the server refuses NOTIFY.
pub fn watch_folders(
    s: &mut Session,
    folders: &[(String, Option<Cursor>)],
    opts: &Options,
    sink: &mut dyn Sink,
) -> Result<Ended, Failure> {
    let names = folders
        .iter()
        .map(|(f, _)| crate::mail::fetch::quote(f))
        .collect::<Result<Vec<_>, _>>()?;
    let mut curs: Vec<Option<Cursor>> = folders.iter().map(|(_, c)| *c).collect();
    // UIDNEXT as each folder's last look saw it: a STATUS at or below it is
    // no news (UIDNEXT stays above the last UID when the newest messages
    // were expunged, and that must not mean "look again" forever).
    let mut nexts: Vec<u32> = vec![0; folders.len()];
    let mut dirty = vec![true; folders.len()];
    let mut notifying = false;
    let can_idle = s.has("IDLE");
    loop {
        let mut looked = false;
        for i in 0..folders.len() {
            if !std::mem::take(&mut dirty[i]) {
                continue;
            }
            match look(s, &folders[i].0, curs[i], opts, sink)? {
                Look::At(c, next) => {
                    curs[i] = Some(c);
                    nexts[i] = next.unwrap_or(0);
                }
                Look::Ended(e) => return Ok(e),
            }
            looked = true;
        }
        if looked {
            // Nothing selected: every folder's news comes as STATUS.
            let close = if s.has("UNSELECT") {
                "UNSELECT"
            } else {
                "CLOSE"
            };
            let (lines, st) = s.command(close)?;
            if let Some(end) = ended_by(&lines, &st) {
                return Ok(end);
            }
        }
        if !notifying {
            let (lines, st) = s.command(&format!(
                "NOTIFY SET (mailboxes ({}) (MessageNew MessageExpunge))",
                names.join(" ")
            ))?;
            if let Some(end) = ended_by(&lines, &st) {
                return Ok(end);
            }
            if !crate::mail::imap::status_ok(&st) {
                return Ok(Ended::NoNotify(st));
            }
            notifying = true;
        }
        if looked {
            // Set before asking, so nothing falls between the two.
            for (i, name) in names.iter().enumerate() {
                let (lines, st) = s.command(&format!("STATUS {name} (UIDNEXT UIDVALIDITY)"))?;
                if let Some(end) = ended_by(&lines, &st) {
                    return Ok(end);
                }
                if !crate::mail::imap::status_ok(&st) {
                    if no_such_folder(&st) {
                        return Ok(Ended::NoFolder {
                            folder: folders[i].0.clone(),
                            reply: st,
                        });
                    }
                    return Err(crate::proto::refused(Service::Imap, st, None, "STATUS"));
                }
                for l in &lines {
                    changed(l, folders, &curs, &nexts, &mut dirty);
                }
            }
            if dirty.iter().any(|d| *d) {
                continue;
            }
        }
        if sink.stopping() {
            let _ = s.command("LOGOUT");
            return Ok(Ended::Stopped);
        }
        let woke = if can_idle {
            idle_once(s, opts, sink, &mut |line, _| {
                changed(line, folders, &curs, &nexts, &mut dirty)
            })?
        } else {
            match poll_once(s, opts)? {
                Some(end) => return Ok(Ended::from_ending(end)),
                None => {
                    dirty.iter_mut().for_each(|d| *d = true);
                    Wake::Look
                }
            }
        };
        match woke {
            Wake::Look | Wake::Renewed => {}
            Wake::Stop => {
                let _ = s.command("LOGOUT");
                return Ok(Ended::Stopped);
            }
            Wake::Ended(e) => return Ok(Ended::from_ending(e)),
        }
    }
}

/// Whether `line` is a STATUS response telling of news in a watched folder
/// (marked in `dirty`). A STATUS that cannot be read marks them all: a look
/// too many is cheap, a message missed is not.
fn changed(
    line: &str,
    folders: &[(String, Option<Cursor>)],
    curs: &[Option<Cursor>],
    nexts: &[u32],
    dirty: &mut [bool],
) -> bool {
    let (name, st) = match status_response(line.as_bytes()) {
        Ok(Some(x)) => x,
        Ok(None) => return false,
        Err(_) => {
            dirty.iter_mut().for_each(|d| *d = true);
            return true;
        }
    };
    let Some(i) = folders.iter().position(|(f, _)| {
        f == &name || (f.eq_ignore_ascii_case("INBOX") && name.eq_ignore_ascii_case("INBOX"))
    }) else {
        return false;
    };
    let news = match curs[i] {
        None => true,
        Some(c) => {
            st.uidvalidity.is_some_and(|v| v != c.uidvalidity)
                || st
                    .uidnext
                    .is_none_or(|n| n > c.last_uid.saturating_add(1).max(nexts[i]))
        }
    };
    dirty[i] |= news;
    news
}

#[cfg(test)]
mod tests {
    use super::{Cursor, changed};

    #[test]
    fn a_notify_status_marks_only_the_folder_with_news() {
        let folders = [("INBOX".to_owned(), None), ("Projects/Q4".to_owned(), None)];
        let c = |last_uid| {
            Some(Cursor {
                uidvalidity: 7,
                last_uid,
                modseq: None,
            })
        };
        let curs = [c(4), c(9)];
        // Projects' last look saw UIDNEXT 12: its newest two were expunged since.
        let nexts = [5, 12];
        let mut dirty = [false, false];
        let mut hear = |line: &str| changed(line, &folders, &curs, &nexts, &mut dirty);
        assert!(!hear("* STATUS inbox (MESSAGES 3 UIDNEXT 5)"));
        assert!(!hear("* STATUS \"Projects/Q4\" (UIDNEXT 12 UIDVALIDITY 7)"));
        assert!(!hear("* STATUS Other (UIDNEXT 99)"));
        assert!(!hear("* 3 EXISTS"));
        assert!(hear("* STATUS \"Projects/Q4\" (UIDNEXT 13)"));
        assert_eq!(dirty, [false, true]);
        let mut dirty = [false, false];
        // A new UIDVALIDITY, or no UIDNEXT to go by, is news.
        assert!(changed(
            "* STATUS INBOX (UIDNEXT 5 UIDVALIDITY 8)",
            &folders,
            &curs,
            &nexts,
            &mut dirty
        ));
        assert!(changed(
            "* STATUS \"Projects/Q4\" (MESSAGES 2)",
            &folders,
            &curs,
            &nexts,
            &mut dirty
        ));
        assert_eq!(dirty, [true, true]);
        // What cannot be read marks them all.
        let mut dirty = [false, false];
        assert!(changed(
            "* STATUS \"broken",
            &folders,
            &curs,
            &nexts,
            &mut dirty
        ));
        assert_eq!(dirty, [true, true]);
    }
}
