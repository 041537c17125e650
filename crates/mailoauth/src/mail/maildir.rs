//! The local side of `fetch`: a private Maildir and the fetch state kept in it.
//!
//! Owns: creating the Maildir (0700 for the directories we create; a directory
//! the user made keeps its mode), delivering one message (streamed into
//! `tmp/` as a 0600 file, fsync, rename into `new/`; removed from `tmp/` if the
//! delivery fails halfway), the names that tie a file to (folder, UIDVALIDITY,
//! UID) or a POP3 UIDL, and the per-folder state file inside the Maildir —
//! deleting or replacing the Maildir takes its state with it, like mbsync's
//! `.mbsyncstate`. Must not: speak a protocol, or decode a message (bytes in,
//! the same bytes on disk).

use std::collections::HashSet;
use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Failure;
use crate::paths;
use crate::providers::Account;
use crate::store::file::{read_optional, write_atomic};

/// A short stable key for a folder name (or UIDL): file names stay short and
/// free of the name's characters.
pub(super) fn key(name: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    d.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// The Maildir name of an IMAP message.
pub(super) fn imap_name(folder: &str, uidvalidity: u64, uid: u64) -> String {
    format!("{uidvalidity}_{uid}_{}.mailoauth", key(folder))
}

/// The Maildir name of a POP3 message.
pub(super) fn pop_name(uidl: &str) -> String {
    format!("pop_{}.mailoauth", key(uidl))
}

/// Base names (flags stripped) of the files in new/ and cur/.
pub(super) fn names(dir: &Path) -> HashSet<String> {
    let mut out = HashSet::new();
    for sub in ["new", "cur"] {
        for e in fs::read_dir(dir.join(sub)).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            out.insert(name.split(':').next().unwrap_or("").to_owned());
        }
    }
    out
}

/// UIDs of this folder and UIDVALIDITY already in the Maildir (new/ or cur/, any flags).
pub(super) fn on_disk(dir: &Path, folder: &str, uidvalidity: u64) -> HashSet<u64> {
    let suffix = format!("_{}.mailoauth", key(folder));
    let prefix = format!("{uidvalidity}_");
    names(dir)
        .iter()
        .filter_map(|n| n.strip_prefix(&prefix)?.strip_suffix(&suffix)?.parse().ok())
        .collect()
}

/// True if the Maildir holds any POP3-fetched message.
pub(super) fn holds_pop(dir: &Path) -> bool {
    names(dir)
        .iter()
        .any(|n| n.starts_with("pop_") && n.ends_with(".mailoauth"))
}

/// Create the Maildir and its tmp/new/cur, private: mail is nobody else's
/// business whatever the umask says. Existing directories are left as they are.
pub(super) fn ensure(dir: &Path) -> Result<(), Failure> {
    for d in [
        dir.to_owned(),
        dir.join("tmp"),
        dir.join("new"),
        dir.join("cur"),
    ] {
        if d.is_dir() {
            continue;
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&d)
            .map_err(|e| io_failure(&format!("cannot create {}", d.display()), e))?;
    }
    Ok(())
}

/// `what: e` as a failure (the local side, not the server).
pub(super) fn io_failure(what: &str, e: std::io::Error) -> Failure {
    Failure::Protocol(format!("{what}: {e}"))
}

/// One message being written into `tmp/`; [`Delivery::finish`] moves it to
/// `new/`, dropping it unfinished removes it.
pub(super) struct Delivery {
    dir: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<fs::File>>,
}

impl Delivery {
    /// Start `dir/tmp/name`, mode 0600.
    pub(super) fn start(dir: &Path, name: &str) -> Result<Delivery, Failure> {
        let tmp = dir.join("tmp").join(name);
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_failure(&format!("cannot create {}", tmp.display()), e))?;
        Ok(Delivery {
            dir: dir.to_owned(),
            tmp,
            file: Some(BufWriter::with_capacity(64 * 1024, file)),
        })
    }

    /// Where to write the message's bytes.
    pub(super) fn writer(&mut self) -> &mut dyn Write {
        self.file.as_mut().expect("open until finished")
    }

    /// Flush, fsync, and rename into `new/` as `name` (known only after the
    /// body when an IMAP server sends the UID last).
    pub(super) fn finish(mut self, name: &str) -> Result<(), Failure> {
        let w = self.file.take().expect("open until finished");
        let done = w
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .and_then(|()| fs::rename(&self.tmp, self.dir.join("new").join(name)));
        done.map_err(|e| {
            let _ = fs::remove_file(&self.tmp);
            io_failure(&format!("cannot write {}", self.tmp.display()), e)
        })
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Deliver `body` whole (for tests and small messages).
#[cfg(test)]
pub(super) fn deliver(dir: &Path, name: &str, body: &[u8]) -> Result<(), Failure> {
    let mut d = Delivery::start(dir, name)?;
    d.writer().write_all(body).unwrap();
    d.finish(name)
}

/// Where a fetch state lives: in the Maildir, `.mailoauth-<what>.json`.
pub(super) struct StateFile {
    path: PathBuf,
    legacy: PathBuf,
}

impl StateFile {
    /// The state of `what` (an IMAP folder, or `"\0pop3"`) fetched into `dir`.
    pub(super) fn new(account: &Account, what: &str, dir: &Path) -> StateFile {
        let stem = if what == "\0pop3" {
            "pop3".to_owned()
        } else {
            format!("imap-{}", key(what))
        };
        // Before the state moved into the Maildir it lived here, keyed by
        // (folder, destination path).
        let legacy = paths::state_dir()
            .join("fetch")
            .join(paths::file_stem(&account.name))
            .join(format!(
                "{}.json",
                key(&format!("{what}\0{}", dir.display()))
            ));
        StateFile {
            path: dir.join(format!(".mailoauth-{stem}.json")),
            legacy,
        }
    }

    /// The saved state, or the default. A state from before it moved into the
    /// Maildir is adopted (and its old file removed): dropping it would fetch
    /// again what the user deleted locally. The caller still checks the state
    /// against what the Maildir holds, so an adopted state of a Maildir that
    /// was deleted since is discarded like any other.
    pub(super) fn load<T: DeserializeOwned + Default + Serialize>(&self) -> Result<T, Failure> {
        let parse = |p: &Path| -> Option<T> {
            serde_json::from_slice(&read_optional(p).ok().flatten()?).ok()
        };
        if let Some(s) = parse(&self.path) {
            return Ok(s);
        }
        if let Some(s) = parse(&self.legacy) {
            self.save(&s)?;
            let _ = fs::remove_file(&self.legacy);
            return Ok(s);
        }
        Ok(T::default())
    }

    /// Save the state atomically (0600).
    pub(super) fn save<T: Serialize>(&self, state: &T) -> Result<(), Failure> {
        let bytes = serde_json::to_vec(state).expect("state serialises");
        write_atomic(&self.path, &bytes).map_err(|e| Failure::Protocol(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn maildir_names_identify_interrupted_deliveries() {
        let d = tempfile::tempdir().unwrap();
        ensure(d.path()).unwrap();
        deliver(d.path(), &imap_name("INBOX", 9, 5), b"x").unwrap();
        fs::write(
            d.path()
                .join("cur")
                .join(format!("{}:2,S", imap_name("INBOX", 9, 6))),
            b"y",
        )
        .unwrap();
        fs::write(d.path().join("new").join(imap_name("Other", 9, 7)), b"z").unwrap();
        assert_eq!(on_disk(d.path(), "INBOX", 9), HashSet::from([5, 6]));
        assert!(on_disk(d.path(), "INBOX", 10).is_empty());
        assert!(!holds_pop(d.path()));
        deliver(d.path(), &pop_name("uidl-1"), b"p").unwrap();
        assert!(holds_pop(d.path()));
    }

    #[test]
    fn deliveries_are_private_and_an_unfinished_one_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("a/b");
        ensure(&dir).unwrap();
        for sub in ["", "tmp", "new", "cur"] {
            let m = fs::metadata(dir.join(sub)).unwrap().permissions().mode();
            assert_eq!(m & 0o777, 0o700, "{sub}");
        }
        deliver(&dir, "m1", b"\xff\xfe bytes").unwrap();
        let p = dir.join("new/m1");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read(&p).unwrap(), b"\xff\xfe bytes");
        let mut half = Delivery::start(&dir, "m2").unwrap();
        half.writer().write_all(b"part").unwrap();
        drop(half);
        assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_state_from_before_it_moved_into_the_maildir_is_adopted_once() {
        #[derive(Debug, Default, Serialize, serde::Deserialize, PartialEq)]
        struct S {
            n: u32,
        }
        let d = tempfile::tempdir().unwrap();
        let legacy = d.path().join("old/state.json");
        fs::create_dir_all(legacy.parent().unwrap()).unwrap();
        fs::write(&legacy, br#"{"n":7}"#).unwrap();
        let f = StateFile {
            path: d.path().join("Maildir/.mailoauth-x.json"),
            legacy: legacy.clone(),
        };
        ensure(&d.path().join("Maildir")).unwrap();
        assert_eq!(f.load::<S>().unwrap(), S { n: 7 });
        assert!(!legacy.exists() && f.path.exists());
        f.save(&S { n: 8 }).unwrap();
        assert_eq!(f.load::<S>().unwrap(), S { n: 8 });
        let mode = fs::metadata(&f.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
