//! The service's edge, key management and failures, end to end: the real
//! executable, hostile scripted clients over raw TCP, TLS with a generated
//! certificate, the key commands, and the PostgreSQL cluster stopped under a
//! running node.

#[path = "support/browser.rs"]
mod browser;
#[path = "../../mailoauth-cli/tests/common/oauth_server.rs"]
mod oauth_server;

#[path = "support/harness.rs"]
mod harness;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::*;

/// One raw request; the whole response as text (status line, headers, body).
fn raw(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn get(addr: &str, path: &str, key: Option<&str>) -> String {
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    raw(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"),
    )
}

fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Whether the server closed `s` within `within` (EOF or reset).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

fn refused(s: &Setup, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut c = s.command();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} succeeded: {err}");
    err
}

#[test]
fn a_non_loopback_listen_without_tls_or_a_proxy_is_refused_naming_both_fixes() {
    let s = Setup::new("sqlite", &[]);
    let err = refused(&s, &["--listen", "0.0.0.0:8470"], &[]);
    assert!(
        err.contains("tls_cert") && err.contains("tls_key") && err.contains("behind_proxy"),
        "{err}"
    );
    assert!(err.contains("config.toml"), "names the file: {err}");
    s.write_config("behind_proxy = [\"not-an-address\"]\n");
    let err = refused(&s, &[], &[]);
    assert!(
        err.contains("`behind_proxy`") && err.contains("not-an-address"),
        "{err}"
    );
    s.write_config("tls_cert = \"cert.pem\"\n");
    let err = refused(&s, &[], &[]);
    assert!(err.contains("`tls_key`"), "{err}");
    s.write_config("max_connections = 0\n");
    let err = refused(&s, &[], &[]);
    assert!(err.contains("`max_connections`"), "{err}");
}

#[test]
fn tls_is_served_with_the_configured_certificate() {
    let s = Setup::new("sqlite", &[]);
    let dir = s.dir.path();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    // A file that is not PEM: refused, naming the key and the file.
    std::fs::write(dir.join("bad.pem"), "not a certificate").unwrap();
    s.write_config(&format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        dir.join("bad.pem").display(),
        dir.join("key.pem").display()
    ));
    let err = refused(&s, &[], &[]);
    assert!(
        err.contains("`tls_cert`") && err.contains("bad.pem"),
        "{err}"
    );

    s.write_config(&format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    ));
    // (The harness found its address on the `listening on https://` line.)
    let node = s.start();
    oauth_server::need("python3", "apt-get install -y python3");
    let out = stdout_of(
        Command::new("python3")
            .arg("-c")
            .arg(
                "import ssl,sys,urllib.request\n\
         ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
         print(urllib.request.urlopen(sys.argv[2], context=ctx, timeout=20).read().decode())",
            )
            .arg(dir.join("cert.pem"))
            .arg(format!("https://{}/healthz", node.addr)),
    );
    assert_eq!(out.trim(), "ok");
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = get(&node.addr, "/healthz", None);
    assert!(!plain.starts_with("HTTP/1.1 200"), "{plain}");
}

#[test]
fn headers_sent_byte_by_byte_slower_than_the_timeout_are_cut_off() {
    let s = Setup::new("sqlite", &[]);
    s.write_config("header_read_timeout = 2\n");
    let node = s.start();
    let mut slow = TcpStream::connect(&node.addr).unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let t = Instant::now();
    let mut sent = 0;
    for b in request {
        if slow.write_all(&[*b]).is_err() {
            break;
        }
        sent += 1;
        // Meanwhile a real request is answered at once.
        if sent == 5 {
            assert_eq!(status(&get(&node.addr, "/healthz", None)), 200);
        }
        std::thread::sleep(Duration::from_millis(200));
        if t.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    // 70-odd bytes at 5 a second would take 14 s: the server gave up at 2 s.
    assert!(sent < request.len(), "the whole slow request was taken");
    assert!(
        closed_within(&mut slow, Duration::from_secs(3)),
        "not closed"
    );
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(7),
        "{took:?}"
    );
    // Oversized headers: 431, not a buffer that grows.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(status(&raw(&node.addr, &big)), 431);
}

#[test]
fn many_idle_connections_do_not_stop_a_real_request_and_close_by_themselves() {
    let s = Setup::new("sqlite", &[]);
    s.write_config("max_connections = 8\nidle_timeout = 3\nheader_read_timeout = 2\n");
    let node = s.start();
    // Five times the limit, silent.
    let mut idle: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(&node.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let r = get(&node.addr, "/healthz", None);
    assert_eq!(status(&r), 200, "{r}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "answered only after {:?}",
        t.elapsed()
    );
    // And a keep-alive client that goes quiet is closed after idle_timeout.
    let mut quiet = TcpStream::connect(&node.addr).unwrap();
    quiet
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    let n = quiet.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let t = Instant::now();
    assert!(
        closed_within(&mut quiet, Duration::from_secs(6)),
        "kept open"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
    // Every idle one is gone by now (made room, or timed out).
    for c in &mut idle {
        assert!(
            closed_within(c, Duration::from_secs(5)),
            "an idle connection stayed"
        );
    }
    assert!(node.child.try_wait_alive(), "{}", node.log());
}

trait Alive {
    fn try_wait_alive(&self) -> bool;
}

impl Alive for std::process::Child {
    fn try_wait_alive(&self) -> bool {
        // A signal 0 to the pid: it exists (kill -9 or a crash would end it).
        Command::new("kill")
            .args(["-0", &self.id().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

/// The token's tail, to look for in the stored bytes.
fn tail(t: &serde_json::Value) -> String {
    let t = t["access_token"].as_str().unwrap();
    t[t.len() - 40..].to_owned()
}

#[test]
fn rotate_key_rewraps_the_data_keys_and_the_old_master_key_no_longer_opens() {
    both(|db| {
        let s = Setup::new(db, &[]);
        let key = s.key(&["admin"], &[]);
        let (id, first) = {
            let node = s.start();
            let id = node.add_app_mailbox(&key, "shared@example.test");
            let (st, t) = node.token(&key, &id);
            assert_eq!(st, 200, "{db}: {t}");
            (id, t)
        };
        let new_file = s.dir.path().join("new.key");
        let new = stdout_of(s.command().arg("keygen"));
        std::fs::write(&new_file, &new).unwrap();
        let before = s.dump();
        // A new key that is not a key, and a wrong current key: refused, unchanged.
        std::fs::write(s.dir.path().join("junk.key"), "junk").unwrap();
        let junk = s.dir.path().join("junk.key");
        let err = refused(
            &s,
            &[
                "rotate-key",
                "--new-master-key-file",
                junk.to_str().unwrap(),
            ],
            &[],
        );
        assert!(err.contains("not a master key"), "{db}: {err}");
        s.write_config("master_key = { env = \"MK\" }\n");
        let wrong = stdout_of(s.command().arg("keygen"));
        let err = refused(
            &s,
            &[
                "rotate-key",
                "--new-master-key-file",
                new_file.to_str().unwrap(),
            ],
            &[("MK", wrong.trim())],
        );
        assert!(
            err.contains("is not the one") && err.contains("nothing was changed"),
            "{db}: {err}"
        );
        assert!(!err.contains(wrong.trim()), "{db}: the key is echoed");
        assert!(s.dump() == before, "{db}: changed by a refused rotate-key");
        s.write_config("");

        let out = stdout_of(s.command().args([
            "rotate-key",
            "--new-master-key-file",
            new_file.to_str().unwrap(),
        ]));
        let line = format!("master_key_file = \"{}\"", new_file.display());
        assert!(out.contains(&line), "{db}: says what to change: {out}");
        assert!(!out.contains(new.trim()), "{db}: the key is printed");
        // The old master key (the default key file) no longer starts the service.
        let err = refused(&s, &[], &[]);
        assert!(err.contains("is not the one"), "{db}: {err}");
        // The new one does, and the stored token opens: served without the provider.
        s.write_config(&format!("{line}\n"));
        let grants = s.oauth.grant_requests("client_credentials");
        let node = s.start();
        let (st, t) = node.token(&key, &id);
        assert_eq!(st, 200, "{db}: {t}");
        assert_eq!(t["access_token"], first["access_token"], "{db}");
        assert_eq!(s.oauth.grant_requests("client_credentials"), grants, "{db}");
        assert!(
            !s.stored().contains(&tail(&t)),
            "{db}: token stored in clear"
        );
    });
}

#[test]
fn reencrypt_reseals_every_row_under_a_new_data_key_while_nodes_run() {
    both(|db| {
        // 8 s tokens: after 5.2 s the running node must refresh and write.
        let s = Setup::new(db, &[("ACCESS_TOKEN_TTL", "8")]);
        let key = s.key(&["admin"], &[]);
        let n1 = s.start();
        let a = n1.add_app_mailbox(&key, "a@example.test");
        let b = n1.add_app_mailbox(&key, "b@example.test");
        let (_, ta) = n1.token(&key, &a);
        // A second node started before the new key exists, holding nothing in memory.
        let n2 = s.start_another();
        let old_keys = s.query("SELECT id FROM data_keys");
        let before = s.dump();

        // A wrong master key: refused, nothing changed.
        s.write_config("master_key = { env = \"MK\" }\n");
        let wrong = stdout_of(s.command().arg("keygen"));
        let err = refused(&s, &["reencrypt"], &[("MK", wrong.trim())]);
        assert!(err.contains("is not the one"), "{db}: {err}");
        assert!(s.dump() == before, "{db}: changed by a refused reencrypt");
        s.write_config("");

        let out = stdout_of(s.command().arg("reencrypt"));
        assert!(out.contains("re-sealed 2 mailbox record(s)"), "{db}: {out}");
        let records = s.query("SELECT DISTINCT record_key FROM mailboxes");
        let new_key = records.trim();
        assert!(out.contains(new_key), "{db}: {out} / {records}");
        assert!(!old_keys.contains(new_key), "{db}: not a new key");
        let active = s.query("SELECT id FROM data_keys WHERE active = 1");
        assert_eq!(active.trim(), new_key, "{db}: the old keys are retired");

        // Tokens still served: from n1's memory, and by n2 from the re-sealed
        // rows (it learns the new data key by itself).
        let (st, t) = n1.token(&key, &a);
        assert_eq!((st, &t["access_token"]), (200, &ta["access_token"]), "{db}");
        let (st, t) = n2.token(&key, &b);
        assert_eq!(st, 200, "{db}: {t} {}", n2.log());
        // n1 refreshes after the change: its write is sealed under the new key.
        std::thread::sleep(Duration::from_millis(5200));
        let (st, t) = n1.token(&key, &a);
        assert_eq!(st, 200, "{db}: {t}");
        assert_ne!(t["access_token"], ta["access_token"], "{db}: refreshed");
        let records = s.query("SELECT DISTINCT record_key FROM mailboxes");
        assert_eq!(records.trim(), new_key, "{db}: written under the old key");
        assert!(
            !s.stored().contains(&tail(&t)),
            "{db}: token stored in clear"
        );
        // A fresh start opens everything.
        drop((n1, n2));
        let n = s.start();
        assert_eq!(n.token(&key, &a).0, 200, "{db}");
        assert_eq!(n.token(&key, &b).0, 200, "{db}");
    });
}

#[test]
fn with_postgresql_down_tokens_in_memory_are_served_others_get_503_and_it_recovers() {
    // PostgreSQL only: the embedded SQLite file cannot go down under the node.
    let s = Setup::new("postgres", &[]);
    let Database::Postgres(pg) = &s.db else {
        unreachable!()
    };
    let key = s.key(&["admin"], &[]);
    let node = s.start();
    let warm = node.add_app_mailbox(&key, "warm@example.test");
    let cold = node.add_app_mailbox(&key, "cold@example.test");
    // A node started afresh holds neither in memory (the refresher has no
    // reason to look at tokens good for an hour); it serves `warm` once.
    assert_eq!(node.token(&key, &cold).0, 200);
    drop(node);
    let node = s.start();
    let (_, t) = node.token(&key, &warm);
    pg.stop();

    let path = |id: &str| format!("/v1/mailboxes/{id}/token");
    let t0 = Instant::now();
    let r = get(&node.addr, &path(&warm), Some(&key));
    assert_eq!(status(&r), 200, "{r}");
    assert!(r.contains(t["access_token"].as_str().unwrap()), "{r}");
    let t1 = Instant::now();
    let r = get(&node.addr, &path(&cold), Some(&key));
    assert_eq!(status(&r), 503, "{r}");
    assert!(r.to_ascii_lowercase().contains("retry-after: "), "{r}");
    let body: serde_json::Value =
        serde_json::from_str(r.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"], "unavailable", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("database"),
        "{body}"
    );
    assert!(!r.contains(&key), "the key is echoed");
    let r = get(&node.addr, "/healthz", None);
    assert_eq!(status(&r), 503, "{r}");
    // The outage is known now: the token in memory is served at once.
    let t2 = Instant::now();
    let r = get(&node.addr, &path(&warm), Some(&key));
    assert_eq!(status(&r), 200, "{r}");
    assert!(t2.elapsed() < Duration::from_secs(1), "{:?}", t2.elapsed());
    assert!(
        t0.elapsed() < Duration::from_secs(15) && t1.elapsed() < Duration::from_secs(10),
        "requests hung: {:?}",
        t0.elapsed()
    );

    pg.start_again();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = get(&node.addr, &path(&cold), Some(&key));
        if status(&r) == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "not recovered: {r}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(status(&get(&node.addr, "/healthz", None)), 200);
    // The hand-outs of the outage were kept and written once it was over:
    // the warm mailbox's token was handed out once before and twice during it.
    std::thread::sleep(Duration::from_secs(3));
    let (_, audit) = node.call("GET", "/v1/audit", Some(&key), None);
    let warm_count: i64 = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["mailbox"] == warm.as_str())
        .map(|e| e["count"].as_i64().unwrap())
        .sum();
    assert_eq!(warm_count, 3, "{audit}");
    assert!(node.child.try_wait_alive(), "{}", node.log());
    assert!(!node.log().contains(&key), "the key is in the log");
}
