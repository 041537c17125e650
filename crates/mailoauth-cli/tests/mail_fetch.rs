//! `mailoauth fetch` against the real Dovecot (IMAP and POP3): bodies are bytes,
//! delivered mail is private whatever the umask, and the fetch state belongs to
//! the Maildir — a deleted, moved or emptied Maildir is fetched again in full,
//! one that still holds the messages gets no duplicates.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

/// A message that is not UTF-8 (Latin-1 and stray bytes), with a dot line.
const ODD: &[u8] =
    b"From: seed@example.test\r\nTo: alice@example.test\r\nSubject: latin1 caf\xe9\r\n\
Message-ID: <odd@example.test>\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\n\
caf\xe9 \xff\xfe\x80 not UTF-8\r\n.leading dot\r\n\r\nend\r\n";

fn fetch(sb: &Sandbox, dir: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["fetch", "m", "--to", dir.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let o = sb.run(&args);
    assert_exit(&o, 0);
    serde_json::from_str(&stdout(&o)).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn pop_fetch_keeps_non_utf8_bodies_byte_exact() {
    let (_srv, mail, sb) = mail_world(|c| c);
    seed_raw(&mail, "alice@example.test", "1700000000.Modd.seed", ODD);
    for (name, extra) in [("pop", &["--pop"][..]), ("imap", &[][..])] {
        let dir = sb.dir.path().join(name);
        let v = fetch(&sb, &dir, extra);
        assert_eq!(v["delivered"], 1, "{name}: {v}");
        let files = messages(&dir);
        assert_eq!(files.len(), 1, "{name}");
        assert_eq!(
            std::fs::read(&files[0]).unwrap(),
            ODD,
            "{name}: the bytes as the server has them"
        );
    }
}

#[test]
fn fetched_mail_is_private_whatever_the_umask() {
    let (_srv, mail, sb) = mail_world(|c| c);
    seed_mailbox(&mail, "alice@example.test", 3, 1_000);
    // A Maildir the user made, world-readable on purpose: left as it is.
    let mine = sb.dir.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ours = sb.dir.path().join("Mail/deep/box");
    for (dir, extra) in [(&ours, &[][..]), (&mine, &["--pop"][..])] {
        let mut c = sb.cmd(&["fetch", "m", "--to", dir.to_str().unwrap()]);
        c.args(extra);
        // SAFETY: umask is async-signal-safe and touches nothing else.
        unsafe {
            c.pre_exec(|| {
                libc::umask(0);
                Ok(())
            });
        }
        assert_exit(&run_with_timeout(c, Duration::from_secs(60)), 0);
        let files = messages(dir);
        assert_eq!(files.len(), 3);
        for f in &files {
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
        for sub in ["tmp", "new", "cur"] {
            assert_eq!(mode(&dir.join(sub)), 0o700, "{sub}");
        }
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with(".mailoauth-") {
                assert_eq!(mode(&e.path()), 0o600, "the state file");
            }
        }
    }
    assert_eq!(mode(&ours), 0o700);
    assert_eq!(mode(ours.parent().unwrap()), 0o700, "parents we created");
    assert_eq!(mode(&mine), 0o755, "the user's own directory is left alone");
}

#[test]
fn a_deleted_maildir_is_fetched_again_in_full() {
    let (_srv, mail, sb) = mail_world(|c| c);
    seed_mailbox(&mail, "alice@example.test", 5, 1_000);
    for (name, extra) in [("imap", &[][..]), ("pop", &["--pop"][..])] {
        let dir = sb.dir.path().join(name);
        assert_eq!(fetch(&sb, &dir, extra)["delivered"], 5, "{name}");
        assert_eq!(fetch(&sb, &dir, extra)["delivered"], 0, "{name}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            fetch(&sb, &dir, extra)["delivered"],
            5,
            "{name} after rm -rf"
        );
        assert_eq!(subjects(&dir).len(), 5);
        // Moved away: a new Maildir in its place gets everything, the moved one keeps its own.
        let moved = sb.dir.path().join(format!("{name}.old"));
        std::fs::rename(&dir, &moved).unwrap();
        assert_eq!(fetch(&sb, &dir, extra)["delivered"], 5, "{name} after mv");
        assert_eq!(fetch(&sb, &moved, extra)["delivered"], 0, "{name} moved");
    }
}

#[test]
fn an_emptied_maildir_is_fetched_again_without_duplicates() {
    let (_srv, mail, sb) = mail_world(|c| c);
    seed_mailbox(&mail, "alice@example.test", 5, 1_000);
    for (name, extra) in [("imap", &[][..]), ("pop", &["--pop"][..])] {
        let dir = sb.dir.path().join(name);
        assert_eq!(fetch(&sb, &dir, extra)["delivered"], 5, "{name}");
        // Two read and deleted locally: they stay deleted.
        for f in &messages(&dir)[..2] {
            std::fs::remove_file(f).unwrap();
        }
        assert_eq!(fetch(&sb, &dir, extra)["delivered"], 0, "{name}");
        assert_eq!(messages(&dir).len(), 3);
        // Emptied: everything again, once.
        for f in messages(&dir) {
            std::fs::remove_file(f).unwrap();
        }
        assert_eq!(fetch(&sb, &dir, extra)["delivered"], 5, "{name} emptied");
        assert_eq!(fetch(&sb, &dir, extra)["delivered"], 0, "{name}");
        // The state lost while the messages are there: recognised, not fetched twice.
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with(".mailoauth-") {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
        let v = fetch(&sb, &dir, extra);
        assert_eq!(
            (v["delivered"].as_u64(), v["skipped"].as_u64()),
            (Some(0), Some(5)),
            "{name}: {v}"
        );
        let got = subjects(&dir);
        let mut unique = got.clone();
        unique.dedup();
        assert_eq!((got.len(), unique.len()), (5, 5), "{name}");
    }
}
