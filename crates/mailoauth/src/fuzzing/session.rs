//! The blocking mail clients (`fetch`, `check`, `send`) against a loopback
//! peer that plays the input as the server's side of the conversation: the
//! real connection, line reader, literal copy and Maildir delivery, with the
//! account's `max_message_size` small enough to be hit.
//!
//! Input: one byte choosing what the client does, then the server's bytes
//! (sent at once; the peer then closes its side and waits for ours).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{MAX_MESSAGE, TOKEN, account, assert_no_secret};
use crate::config::Service;
use crate::mail::fetch::{After, Fetched, Request};
use crate::mail::{self, Failure};
use crate::providers::Account;

/// IMAP: `fetch` (keep, delete or move afterwards) or `check`.
pub fn imap_session(data: &[u8]) {
    let Some((&mode, script)) = data.split_first() else {
        return;
    };
    run(Service::Imap, script, |a, dir| match mode % 4 {
        0 => fetched(
            dir,
            mail::fetch::fetch(
                a,
                server(a, Service::Imap),
                TOKEN,
                &request(dir, After::Keep),
                &mut |_, _, _| {},
            ),
        ),
        1 => fetched(
            dir,
            mail::fetch::fetch(
                a,
                server(a, Service::Imap),
                TOKEN,
                &request(dir, After::Delete),
                &mut |_, _, _| {},
            ),
        ),
        2 => fetched(
            dir,
            mail::fetch::fetch(
                a,
                server(a, Service::Imap),
                TOKEN,
                &request(dir, After::MoveTo("Archive".into())),
                &mut |_, _, _| {},
            ),
        ),
        _ => mail::imap::check(a, server(a, Service::Imap), TOKEN, TIMEOUT).map(|_| ()),
    });
}

/// POP3: `fetch` (keep or delete afterwards) or `check`.
pub fn pop_session(data: &[u8]) {
    let Some((&mode, script)) = data.split_first() else {
        return;
    };
    run(Service::Pop, script, |a, dir| match mode % 3 {
        0 => fetched(
            dir,
            mail::fetch::fetch_pop(
                a,
                server(a, Service::Pop),
                TOKEN,
                &request(dir, After::Keep),
                &mut |_, _, _| {},
            ),
        ),
        1 => fetched(
            dir,
            mail::fetch::fetch_pop(
                a,
                server(a, Service::Pop),
                TOKEN,
                &request(dir, After::Delete),
                &mut |_, _, _| {},
            ),
        ),
        _ => mail::pop::check(a, server(a, Service::Pop), TOKEN, TIMEOUT).map(|_| ()),
    });
}

/// SMTP: `send` of a small message, or `check`.
pub fn smtp_session(data: &[u8]) {
    let Some((&mode, script)) = data.split_first() else {
        return;
    };
    run(Service::Smtp, script, |a, _| {
        if mode % 2 == 0 {
            let raw = b"From: alice@example.com\nTo: bob@example.com\nSubject: x\n\n.hi\n";
            let msg = mail::send::prepare(a, raw, true, None, &[], false).expect("a valid message");
            mail::send::submit(a, server(a, Service::Smtp), TOKEN, &msg, TIMEOUT).map(|_| ())
        } else {
            mail::smtp::check(a, server(a, Service::Smtp), TOKEN, TIMEOUT).map(|_| ())
        }
    });
}

/// Long enough never to fire: the peer always closes after its script.
const TIMEOUT: Duration = Duration::from_secs(10);

fn server(a: &Account, s: Service) -> &crate::providers::Server {
    mail::server_for(a, s).expect("the fuzz account has all three servers")
}

fn request(dir: &Path, after: After) -> Request {
    Request {
        folder: "INBOX".into(),
        dir: dir.to_owned(),
        after,
        timeout: TIMEOUT,
    }
}

/// What a fetch left in the Maildir matches what it says it delivered, each
/// message within `max_message_size`, and no unfinished delivery stays in `tmp/`.
fn fetched(dir: &Path, r: Result<Fetched, Failure>) -> Result<(), Failure> {
    let files = |sub: &str| -> Vec<u64> {
        std::fs::read_dir(dir.join(sub))
            .map(|d| {
                d.filter_map(|e| e.ok()?.metadata().ok().map(|m| m.len()))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        files("tmp").is_empty(),
        "an unfinished delivery stayed in tmp/"
    );
    let new = files("new");
    assert!(
        new.iter().all(|&n| n <= MAX_MESSAGE),
        "a message over max_message_size"
    );
    let f = r?;
    assert_eq!(f.delivered, new.len(), "delivered count vs. files");
    assert_eq!(
        f.bytes,
        new.iter().sum::<u64>(),
        "delivered bytes vs. files"
    );
    Ok(())
}

/// The peer's listener (one per process) and a scratch Maildir.
struct Peer {
    listener: TcpListener,
    scratch: PathBuf,
}

fn peer() -> &'static Peer {
    static PEER: OnceLock<Peer> = OnceLock::new();
    PEER.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener.set_nonblocking(true).expect("non-blocking accept");
        // Kept for the process's life: the targets run in one process for hours.
        let scratch = tempfile::Builder::new()
            .prefix("mailoauth-fuzz-")
            .tempdir()
            .expect("a scratch directory")
            .keep();
        Peer { listener, scratch }
    })
}

/// Serialises runs: one peer, one scratch Maildir (the stable test runs
/// corpora on several threads).
static RUN: Mutex<()> = Mutex::new(());

/// Play `script` to the client `client` runs, then check its failure (if any)
/// for leaked secrets and diagnose it.
fn run(
    service: Service,
    script: &[u8],
    client: impl FnOnce(&Account, &Path) -> Result<(), Failure>,
) {
    let _one = RUN.lock().unwrap_or_else(|e| e.into_inner());
    let p = peer();
    let port = p.listener.local_addr().expect("bound").port();
    let account = account(port);
    let dir = p.scratch.join("Maildir");
    let _ = std::fs::remove_dir_all(&dir);
    let done = Arc::new(AtomicBool::new(false));
    let server = {
        let listener = p.listener.try_clone().expect("a listener handle");
        let (script, done) = (script.to_vec(), done.clone());
        std::thread::spawn(move || play(&listener, &script, &done))
    };
    let result = client(&account, &dir);
    done.store(true, Ordering::SeqCst);
    server.join().expect("the peer thread");
    if let Err(f) = result {
        let secrets = super::secrets(&account, service, script);
        assert_no_secret("a session failure", &f.to_string(), &secrets);
        if let Some(d) = mail::diagnose(&account, service, &f) {
            assert_no_secret("a diagnosis", &format!("{d:?}"), &secrets);
        }
    }
}

/// Accept the client's connection (until it is `done` without one), send
/// `script`, close our side, and read until the client closes: reset, not
/// TIME_WAIT, so hours of runs do not use up the ports.
fn play(listener: &TcpListener, script: &[u8], done: &AtomicBool) {
    let mut s = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(_) if done.load(Ordering::SeqCst) => return,
            Err(_) => std::thread::sleep(Duration::from_micros(50)),
        }
    };
    let _ = s.set_nonblocking(false);
    linger_zero(&s);
    let _ = s.write_all(script);
    let _ = s.shutdown(Shutdown::Write);
    let _ = s.set_read_timeout(Some(TIMEOUT));
    let mut sink = [0u8; 16 * 1024];
    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
}

fn linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `l` (its size passed along) on a socket we own.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}
