//! The mail client against hostile input: arguments that would inject SMTP or
//! IMAP commands are refused before connecting, and scripted servers that
//! announce absurd literals, stream huge messages, or never end a line or a
//! reply get a diagnosed error — quickly, in bounded memory, never an abort.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A server running `script` for each connection; counts connections.
fn serve(
    script: impl Fn(&mut BufReader<TcpStream>, &mut TcpStream) + Send + Sync + 'static,
) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let conns = Arc::new(AtomicUsize::new(0));
    let c2 = conns.clone();
    let script = Arc::new(script);
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            c2.fetch_add(1, Ordering::SeqCst);
            let script = script.clone();
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                script(&mut r, &mut w);
            });
        }
    });
    (port, conns)
}

/// Play an IMAP server up to `UID FETCH` (one message, UID 1): `Some(tag)` of
/// the FETCH; `select` is what answers SELECT before its tagged OK.
fn imap_until_fetch(
    r: &mut BufReader<TcpStream>,
    w: &mut TcpStream,
    select: &[u8],
) -> Option<String> {
    w.write_all(b"* OK hostile IMAP\r\n").ok()?;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let tag = line.split(' ').next()?.to_owned();
        let cmd = line[tag.len()..].trim();
        let reply: Vec<u8> = if cmd.starts_with("CAPABILITY") {
            format!("* CAPABILITY IMAP4rev1 AUTH=XOAUTH2 SASL-IR\r\n{tag} OK done\r\n").into()
        } else if cmd.starts_with("AUTHENTICATE") {
            format!("{tag} OK done\r\n").into()
        } else if cmd.starts_with("SELECT") {
            let mut v = select.to_vec();
            v.extend_from_slice(
                format!("* OK [UIDVALIDITY 7] v\r\n{tag} OK [READ-WRITE] done\r\n").as_bytes(),
            );
            v
        } else if cmd.starts_with("UID SEARCH") {
            format!("* SEARCH 1\r\n{tag} OK done\r\n").into()
        } else if cmd.starts_with("UID FETCH") {
            return Some(tag);
        } else {
            format!("{tag} OK done\r\n").into()
        };
        w.write_all(&reply).ok()?;
    }
}

/// A Microsoft account whose servers are the scripts, with a stored valid token.
fn sandbox(extra: &str) -> Sandbox {
    let sb = Sandbox::new(&format!(
        "[accounts.ms]\nprovider = \"microsoft\"\nuser = \"alice@contoso.com\"\nclient_id = \"app-1234\"\n\
         tenant = \"contoso.com\"\nstore = \"file\"\n{extra}"
    ));
    sb.store_valid_token("ms", "opaque-token-value");
    sb
}

fn count(dir: &std::path::Path) -> usize {
    ["tmp", "new", "cur"]
        .iter()
        .map(|s| {
            std::fs::read_dir(dir.join(s))
                .map(|r| r.count())
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn recipients_with_crlf_are_refused_before_connecting() {
    let (port, conns) = serve(|_, _| {});
    let sb = sandbox(&format!(
        "{}{}",
        plain_server("smtp", port),
        plain_server("imap", port)
    ));
    let msg = b"From: alice@contoso.com\nSubject: x\n\nhi\n";
    let send = |args: &[&str]| run_with_input(sb.cmd(args), msg, Duration::from_secs(30));
    let o = send(&[
        "send",
        "ms",
        "bob@x.com>\r\nRSET\r\nMAIL FROM:<boss@contoso.com",
    ]);
    assert_exit(&o, 2);
    let e = stderr(&o);
    assert!(
        e.contains("recipient `bob@x.com>\\r\\nRSET\\r\\nMAIL FROM:"),
        "{e}"
    );
    assert!(
        !e.contains("\r\nRSET"),
        "control characters are not echoed raw: {e:?}"
    );
    assert_exit(
        &send(&["send", "ms", "-f", "alice@contoso.com\nX", "bob@x.com"]),
        2,
    );
    assert_exit(&send(&["send", "ms", "bob smith@x.com"]), 2);
    let dir = sb.dir.path().join("M");
    let d = dir.to_str().unwrap();
    for args in [
        &[
            "fetch",
            "ms",
            "--to",
            d,
            "--folder",
            "INBOX\r\nm9 DELETE INBOX",
        ][..],
        &[
            "fetch",
            "ms",
            "--to",
            d,
            "--move-to",
            "Archive\r\nm9 DELETE INBOX",
        ][..],
        &["fetch", "ms", "--folder", "../../.ssh"][..],
    ] {
        let o = sb.run(args);
        assert_exit(&o, 2);
        assert!(
            stderr(&o).contains("not a usable folder name"),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(conns.load(Ordering::SeqCst), 0, "nothing was sent anywhere");
}

#[test]
fn a_huge_literal_is_a_diagnosed_error_not_an_abort() {
    for (announce, says) in [
        ("{99999999999999}", "max_message_size"),
        ("{99999999999999999999999999}", "not a number"),
    ] {
        let (port, _) = serve(move |r, w| {
            if let Some(_tag) = imap_until_fetch(r, w, b"* 1 EXISTS\r\n") {
                let _ = write!(w, "* 1 FETCH (UID 1 BODY[] {announce}\r\nFrom: x\r\n");
                // Keep the connection open: the error must not wait for the bytes.
                std::thread::sleep(Duration::from_secs(10));
            }
        });
        let sb = sandbox(&plain_server("imap", port));
        let dir = sb.dir.path().join("M");
        let t = Instant::now();
        let o = sb.run(&["fetch", "ms", "--to", dir.to_str().unwrap()]);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_exit(&o, 1);
        let e = stderr(&o);
        assert!(e.contains("misbehaving") && e.contains(says), "{e}");
        assert_eq!(count(&dir), 0, "nothing half-written left behind");
    }
}

#[test]
fn a_message_sent_twice_or_unasked_is_delivered_once_and_counted_once() {
    let (port, _) = serve(|r, w| {
        let Some(tag) = imap_until_fetch(r, w, b"* 1 EXISTS\r\n") else {
            return;
        };
        let m = "Subject: one\r\n\r\nfirst\r\n";
        let other = "Subject: two\r\n\r\nnever asked for\r\n";
        let mut reply = String::new();
        for (uid, body) in [
            (1, m),
            (1, "Subject: again\r\n\r\nreplaced\r\n"),
            (9, other),
        ] {
            reply += &format!(
                "* 1 FETCH (UID {uid} BODY[] {{{}}}\r\n{body})\r\n",
                body.len()
            );
        }
        // The UID after the literal, for a message not asked for either.
        reply += &format!(
            "* 2 FETCH (BODY[] {{{}}}\r\n{other} UID 8)\r\n",
            other.len()
        );
        reply += &format!("{tag} OK done\r\n");
        let _ = w.write_all(reply.as_bytes());
        let mut line = String::new();
        while r.read_line(&mut line).is_ok_and(|n| n > 0) {
            let t = line.split(' ').next().unwrap_or("*").to_owned();
            let _ = write!(w, "{t} OK done\r\n");
            line.clear();
        }
    });
    let sb = sandbox(&plain_server("imap", port));
    let dir = sb.dir.path().join("M");
    let o = sb.run(&["fetch", "ms", "--to", dir.to_str().unwrap()]);
    assert_exit(&o, 0);
    assert!(stderr(&o).contains(" 1 new message"), "{}", stderr(&o));
    let new: Vec<_> = std::fs::read_dir(dir.join("new"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(new, ["Subject: one\r\n\r\nfirst\r\n"]);
    assert_eq!(count(&dir), 1, "nothing else left in tmp/ or cur/");
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_large_message_is_streamed_not_held() {
    // A "3 GB" message, of which a few tens of MB are actually sent.
    const SENT: u64 = 48 << 20;
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let done_tx = std::sync::Mutex::new(done_tx);
    let (close_tx, close_rx) = std::sync::mpsc::channel::<()>();
    let close_rx = std::sync::Mutex::new(close_rx);
    let (port, _) = serve(move |r, w| {
        if imap_until_fetch(r, w, b"* 1 EXISTS\r\n").is_some() {
            let _ = w.write_all(b"* 1 FETCH (UID 1 BODY[] {3000000000}\r\n");
            let line = [b"x".repeat(78), b"\r\n".to_vec()].concat();
            let chunk = line.repeat(8192);
            let mut sent = 0u64;
            while sent < SENT {
                if w.write_all(&chunk).is_err() {
                    return;
                }
                sent += chunk.len() as u64;
            }
            let _ = done_tx.lock().unwrap().send(());
            let _ = close_rx
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(30));
        }
    });
    let sb = sandbox(&format!(
        "{}max_message_size = 4294967296\n",
        plain_server("imap", port)
    ));
    let dir = sb.dir.path().join("M");
    let mut c = sb.cmd(&["fetch", "ms", "--to", dir.to_str().unwrap()]);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let pid = child.id();
    done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server sent its bytes");
    let deadline = Instant::now() + Duration::from_secs(15);
    let in_tmp = || {
        std::fs::read_dir(dir.join("tmp"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum::<u64>()
    };
    while in_tmp() < SENT {
        assert!(
            Instant::now() < deadline,
            "the message is not being streamed into tmp/ ({} bytes there)",
            in_tmp()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let peak = peak_rss_kib(pid);
    close_tx.send(()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        peak < 32 * 1024,
        "peak RSS {peak} KiB while {} MiB went through",
        SENT >> 20
    );
    assert_exit(&o, 1);
    let e = stderr(&o);
    assert!(e.contains("closed the connection inside a literal"), "{e}");
    assert_eq!(
        count(&dir),
        0,
        "the unfinished message is removed from tmp/"
    );
}

#[test]
fn endless_lines_and_replies_are_diagnosed_errors() {
    let overlong = [b"* OK ".to_vec(), vec![b'x'; 2 << 20], b"\r\n".to_vec()].concat();
    let endless = b"* OK chatter\r\n".repeat(1_000_001);
    for (select, says) in [
        (overlong, "line over 1 MiB"),
        (endless, "more than 1000000 lines in one reply"),
    ] {
        let select = Arc::new(select);
        let (port, _) = serve(move |r, w| {
            let _ = imap_until_fetch(r, w, &select);
        });
        let sb = sandbox(&plain_server("imap", port));
        let dir = sb.dir.path().join("M");
        let t = Instant::now();
        let o = sb.run(&["fetch", "ms", "--to", dir.to_str().unwrap()]);
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
        assert_exit(&o, 1);
        let e = stderr(&o);
        assert!(e.contains("misbehaving") && e.contains(says), "{e}");
    }
}
