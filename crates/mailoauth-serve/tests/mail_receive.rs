//! Receiving mail for connected mailboxes: watchers (IMAP IDLE on the private
//! Dovecot, logged in with the authorization server's real tokens) report
//! each message delivered through Postfix → LMTP as a signed `message.new`
//! webhook with its envelope; the message reads back raw by the event's path;
//! a restarted node catches up from the durable cursor; a node killed with
//! `kill -9` hands its watchers to the other within the lease time, with no
//! message missed and none reported under two ids; and, against a scripted
//! IMAP server, Exchange's `BYE … AccessTokenExpired` (log in again) and
//! `BAD Request is throttled. Suggested Backoff Time` (wait as asked).
//! On SQLite and PostgreSQL.

#[path = "support/harness.rs"]
mod harness;
#[path = "../../mailoauth-cli/tests/common/oauth_server.rs"]
mod oauth_server;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use harness::*;

const SECRET: &str = "whsec-receive-secret";

/// The app-only connector `watched`, IMAP on the Dovecot (or `imap`), watching INBOX.
fn connector(s: &Setup, imap: &str) -> String {
    format!(
        "[serve.connectors.watched]\nprovider = \"custom\"\nclient_id = \"app-secret\"\n\
         client_secret = \"app-secret-value\"\nflow = \"client-credentials\"\n\
         token_url = \"{}/token\"\nscopes = [\"https://outlook.test/.default\"]\n\
         watch = [\"INBOX\"]\n{imap}\n",
        s.oauth.issuer
    )
}

fn dovecot_imap(mail: &Dovecot) -> String {
    format!(
        "imap = {{ host = \"localhost\", port = {}, tls = \"implicit\" }}\nca_file = \"{}\"\n",
        mail.ports["imap_tls"],
        mail.ports["ca"].as_str().unwrap()
    )
}

/// `[serve]` lines: webhooks, short leases and IDLE renewals so the test sees them.
fn configure(s: &Setup, hook: &Webhook, connector: &str) {
    s.write_config_with(
        &format!(
            "webhooks = [\"{}\"]\nwebhook_secret = \"{SECRET}\"\nwatch_lease = 3\nidle_renew = 4\n",
            hook.url
        ),
        connector,
    );
}

fn add_mailbox(node: &Node, key: &str, email: &str) -> String {
    let (st, v) = node.call(
        "POST",
        "/v1/mailboxes",
        Some(key),
        Some(&json!({"connector": "watched", "email": email})),
    );
    assert_eq!(st, 201, "{v} {}", node.log());
    v["id"].as_str().unwrap().to_owned()
}

/// A number from `/metrics`: the line starting with `name`.
fn metric(node: &Node, name: &str) -> f64 {
    let (_, m) = node.call("GET", "/metrics", None, None);
    let text = m.as_str().unwrap_or_default().to_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn wait_until(
    what: &str,
    within: Duration,
    mut ok: impl FnMut() -> bool,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "{what} not within {within:?}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until `/metrics` shows `name` at `at_least` or more.
fn wait_metric(node: &Node, name: &str, at_least: f64, within: Duration) {
    wait_until(
        &format!("{name} at {at_least}"),
        within,
        || metric(node, name) >= at_least,
        || node.log(),
    );
}

/// Add `users` as mailboxes and wait until each one's watcher is connected.
fn add_watched(node: &Node, key: &str, users: &[String]) {
    for u in users {
        add_mailbox(node, key, u);
    }
    wait_metric(
        node,
        "mailoauth_watch_connections",
        users.len() as f64,
        Duration::from_secs(20),
    );
}

/// Deliver a message to `to` through Postfix (plain SMTP on loopback, which
/// relays to Dovecot's LMTP): what arrives while a watcher runs.
fn deliver(mail: &Dovecot, to: &str, subject: &str) {
    let mut r = Relay::open(mail);
    r.send(to, subject);
    r.cmd("QUIT", "221");
}

/// The `message.new` deliveries received so far: event id → body.
fn new_mail(hook: &Webhook) -> Vec<(String, Value)> {
    hook.deliveries()
        .into_iter()
        .filter(|d| {
            d.status == 200
                && d.headers
                    .get("mailoauth-event")
                    .is_some_and(|k| k == "message.new")
        })
        .map(|d| {
            assert!(d.signed_with(SECRET), "unsigned: {d:?}");
            (
                d.headers["mailoauth-event-id"].clone(),
                serde_json::from_str(&d.body).unwrap(),
            )
        })
        .collect()
}

/// Wait for `n` distinct `message.new` events; by subject, each with its id.
fn wait_new(
    hook: &Webhook,
    n: usize,
    within: Duration,
    log: impl Fn() -> String,
) -> BTreeMap<String, String> {
    let mut by_subject = BTreeMap::new();
    wait_until(
        &format!("{n} message.new events"),
        within,
        || {
            by_subject.clear();
            for (id, v) in new_mail(hook) {
                let subject = v["message"]["envelope"]["subject"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                if let Some(other) = by_subject.insert(subject.clone(), id.clone()) {
                    assert_eq!(other, id, "{subject} reported under two ids");
                }
            }
            by_subject.len() >= n
        },
        log,
    );
    by_subject
}

#[test]
fn new_mail_is_a_signed_event_with_its_envelope_and_a_restart_misses_nothing() {
    both(|db| {
        let s = Setup::new(db, &[]);
        let mail = Dovecot::start(&s.oauth.issuer);
        let hook = Webhook::start(0);
        configure(&s, &hook, &connector(&s, &dovecot_imap(&mail)));
        let key = s.key(&["accounts:write", "mail:read"], &[]);
        let mut node = s.start();
        // Mail already there when the watch starts is not new.
        deliver(&mail, "watched@example.test", "before the watch");
        std::thread::sleep(Duration::from_millis(500));
        let id = add_mailbox(&node, &key, "watched@example.test");
        let log = || node.log();
        wait_until(
            "the watcher's IMAP connection",
            Duration::from_secs(20),
            || metric(&node, "mailoauth_watch_connections") == 1.0,
            log,
        );
        let t0 = Instant::now();
        deliver(&mail, "watched@example.test", "first news");
        let got = wait_new(&hook, 1, Duration::from_secs(10), || node.log());
        let latency = t0.elapsed();
        assert!(latency < Duration::from_secs(3), "{latency:?}");
        assert_eq!(got.keys().collect::<Vec<_>>(), ["first news"], "{got:?}");
        let (_, v) = new_mail(&hook).remove(0);
        let m = &v["message"];
        assert_eq!(v["type"], "message.new");
        assert_eq!(v["mailbox"]["id"], id.as_str());
        assert_eq!(m["folder"], "INBOX");
        assert_eq!(m["envelope"]["from"][0]["email"], "sender@example.test");
        assert_eq!(m["envelope"]["from"][0]["name"], "Sender");
        assert_eq!(m["envelope"]["to"][0]["email"], "watched@example.test");
        assert_eq!(m["envelope"]["message_id"], "<first-news@example.test>");
        assert!(m["size"].as_u64().unwrap() > 50, "{m}");
        let (st, _, raw) = node.send(
            "GET",
            m["path"].as_str().unwrap(),
            &[("Authorization", &format!("Bearer {key}"))],
            "",
        );
        assert_eq!(st, 200, "{raw}");
        assert!(
            raw.contains("Subject: first news") && raw.contains("Body of first news"),
            "{raw}"
        );

        // IDLE is renewed (every 4 s here) and the watch goes on through it.
        wait_metric(
            &node,
            "mailoauth_watch_events_total{outcome=\"idle_renewal\"}",
            1.0,
            Duration::from_secs(15),
        );
        deliver(&mail, "watched@example.test", "after a renewal");
        wait_new(&hook, 2, Duration::from_secs(10), || node.log());

        // Down: mail arrives meanwhile; back up, it is reported from the cursor.
        node.kill();
        deliver(&mail, "watched@example.test", "while down 1");
        deliver(&mail, "watched@example.test", "while down 2");
        // The dead node's lease runs out (3 s) before the new one can take it.
        node = s.start();
        let got = wait_new(&hook, 4, Duration::from_secs(20), || node.log());
        assert_eq!(
            got.keys().cloned().collect::<BTreeSet<_>>(),
            [
                "after a renewal",
                "first news",
                "while down 1",
                "while down 2"
            ]
            .map(str::to_owned)
            .into(),
            "{got:?}"
        );
        std::thread::sleep(Duration::from_secs(2));
        let ids: BTreeSet<String> = new_mail(&hook).into_iter().map(|(id, _)| id).collect();
        assert_eq!(
            ids.len(),
            4,
            "one id per message, however often sent: {ids:?}"
        );
    });
}

#[test]
fn a_killed_node_hands_its_watchers_over_within_the_lease_and_nothing_is_missed_or_doubled() {
    both(|db| {
        let s = Setup::new(db, &[]);
        let mail = Dovecot::start(&s.oauth.issuer);
        let hook = Webhook::start(0);
        configure(&s, &hook, &connector(&s, &dovecot_imap(&mail)));
        let key = s.key(&["accounts:write"], &[]);
        let mut a = s.start();
        let users: Vec<String> = (0..6).map(|i| format!("w{i}@example.test")).collect();
        for u in &users {
            add_mailbox(&a, &key, u);
        }
        wait_until(
            "node A watching all six",
            Duration::from_secs(30),
            || metric(&a, "mailoauth_watch_connections") == 6.0,
            || a.log(),
        );
        let b = s.start_another();
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(
            metric(&b, "mailoauth_watch_connections"),
            0.0,
            "B takes nothing A holds"
        );
        let mut subjects = BTreeSet::new();
        for u in &users {
            let subject = format!("to {u} before");
            deliver(&mail, u, &subject);
            subjects.insert(subject);
        }
        wait_new(&hook, 6, Duration::from_secs(15), || a.log());
        a.kill();
        let killed = Instant::now();
        for u in &users {
            let subject = format!("to {u} after");
            deliver(&mail, u, &subject);
            subjects.insert(subject);
        }
        wait_until(
            "node B watching all six",
            Duration::from_secs(20),
            || metric(&b, "mailoauth_watch_connections") == 6.0,
            || b.log(),
        );
        let took = killed.elapsed();
        // Lease 3 s, B's beat every second, connections paced: well within 10 s.
        assert!(took < Duration::from_secs(10), "takeover took {took:?}");
        let got = wait_new(&hook, 12, Duration::from_secs(20), || b.log());
        assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), subjects);
        std::thread::sleep(Duration::from_secs(2));
        let ids: BTreeSet<String> = new_mail(&hook).into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids.len(), 12, "{ids:?}");
        eprintln!(
            "FIGURE takeover after kill -9: {:.1} s (lease 3 s)",
            took.as_secs_f64()
        );
    });
}

/// A scripted IMAP server (plain TCP) for what Dovecot will not say: the
/// first session is ended with Exchange's `BYE … AccessTokenExpired` while
/// idling, the second login is throttled, the third works and reports one
/// message. Records the times of each login. With `polling`, a server
/// without IDLE whose folder holds `messages` (set by the test) instead.
struct Exchangeish {
    port: u16,
    logins: Arc<Mutex<Vec<Instant>>>,
    messages: Arc<std::sync::atomic::AtomicU32>,
}

/// How a scripted session behaves.
#[derive(Clone)]
struct Script {
    backoff_ms: u64,
    polling: bool,
    logins: Arc<Mutex<Vec<Instant>>>,
    messages: Arc<std::sync::atomic::AtomicU32>,
}

impl Exchangeish {
    fn start(backoff_ms: u64) -> Exchangeish {
        Exchangeish::with(backoff_ms, false)
    }

    fn with(backoff_ms: u64, polling: bool) -> Exchangeish {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let script = Script {
            backoff_ms,
            polling,
            logins: Arc::default(),
            messages: Arc::default(),
        };
        let (logins, messages) = (script.logins.clone(), script.messages.clone());
        std::thread::spawn(move || {
            for (n, s) in l.incoming().enumerate() {
                let Ok(s) = s else { return };
                let script = script.clone();
                std::thread::spawn(move || session(s, n, &script));
            }
        });
        Exchangeish {
            port,
            logins,
            messages,
        }
    }
}

/// The FETCH line of scripted message `uid`.
fn scripted_fetch(uid: u32, subject: &str) -> String {
    format!(
        "* {uid} FETCH (UID {uid} RFC822.SIZE 321 ENVELOPE (\"Fri, 4 Dec 2026 10:00:00 +0000\" \"{subject}\" \
         ((NIL NIL \"boss\" \"contoso.test\")) NIL NIL ((NIL NIL \"x\" \"contoso.test\")) NIL NIL NIL \"<e{uid}@contoso.test>\"))\r\n"
    )
}

fn session(s: TcpStream, n: usize, script: &Script) {
    use std::sync::atomic::Ordering::SeqCst;
    let (backoff_ms, logins) = (script.backoff_ms, &script.logins);
    // Without IDLE, sessions are neither ended nor throttled: n counts from the third.
    let n = if script.polling { n + 2 } else { n };
    let caps = if script.polling {
        "IMAP4rev1 AUTH=XOAUTH2 SASL-IR"
    } else {
        "IMAP4rev1 AUTH=XOAUTH2 SASL-IR IDLE"
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let _ = w.write_all(format!("* OK [CAPABILITY {caps}] Exchangeish ready\r\n").as_bytes());
    let mut line = String::new();
    let mut fetches = 0;
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let (tag, rest) = line.trim_end().split_once(' ').unwrap_or(("*", ""));
        let (tag, cmd) = (
            tag.to_owned(),
            rest.split(' ').next().unwrap_or("").to_ascii_uppercase(),
        );
        let out = match cmd.as_str() {
            "CAPABILITY" => format!("* CAPABILITY {caps}\r\n{tag} OK done\r\n"),
            "AUTHENTICATE" => {
                logins.lock().unwrap().push(Instant::now());
                if n == 1 {
                    format!(
                        "{tag} BAD Request is throttled. Suggested Backoff Time: {backoff_ms} milliseconds\r\n"
                    )
                } else {
                    format!("{tag} OK AUTHENTICATE completed.\r\n")
                }
            }
            "EXAMINE" if script.polling => {
                let m = script.messages.load(SeqCst);
                format!(
                    "* {m} EXISTS\r\n* OK [UIDVALIDITY 77] UIDs valid\r\n* OK [UIDNEXT {}] next\r\n\
                     {tag} OK [READ-ONLY] EXAMINE completed.\r\n",
                    m + 1
                )
            }
            // `UID FETCH from:*`: the messages from `from` (the newest if none).
            "UID" if script.polling => {
                let from: u32 = rest
                    .split([' ', ':'])
                    .nth(2)
                    .and_then(|f| f.parse().ok())
                    .unwrap_or(1);
                let m = script.messages.load(SeqCst);
                let mut o = String::new();
                for uid in from.min(m.max(1))..=m {
                    o.push_str(&scripted_fetch(uid, &format!("polled {uid}")));
                }
                o.push_str(&format!("{tag} OK FETCH completed.\r\n"));
                o
            }
            "NOOP" if script.polling => {
                format!(
                    "* {} EXISTS\r\n{tag} OK NOOP completed.\r\n",
                    script.messages.load(SeqCst)
                )
            }
            "EXAMINE" => {
                let next = if n == 0 { 5 } else { 6 };
                let mut o = format!(
                    "* {} EXISTS\r\n* OK [UIDVALIDITY 77] UIDs valid\r\n* OK [UIDNEXT {next}] next\r\n",
                    next - 1
                );
                o.push_str(&format!("{tag} OK [READ-ONLY] EXAMINE completed.\r\n"));
                o
            }
            // The working session's first FETCH: message 6 arrives while it
            // is answered (an EXISTS among its lines, never repeated in IDLE).
            "UID" => {
                fetches += 1;
                let mut o = String::new();
                if n >= 2 && fetches == 1 {
                    o.push_str(&scripted_fetch(5, "from exchange"));
                    o.push_str("* 6 EXISTS\r\n");
                } else if n >= 2 {
                    o.push_str(&scripted_fetch(6, "during the fetch"));
                }
                o.push_str(&format!("{tag} OK FETCH completed.\r\n"));
                o
            }
            "IDLE" => {
                let _ = w.write_all(b"+ IDLE accepted, awaiting DONE command.\r\n");
                if n == 0 {
                    std::thread::sleep(Duration::from_millis(300));
                    let _ = w.write_all(b"* BYE Session invalidated - AccessTokenExpired\r\n");
                    return;
                }
                // Hold the IDLE until DONE.
                let mut done = String::new();
                if r.read_line(&mut done).unwrap_or(0) == 0 {
                    return;
                }
                format!("{tag} OK IDLE completed.\r\n")
            }
            "LOGOUT" => {
                let _ =
                    w.write_all(format!("* BYE bye\r\n{tag} OK LOGOUT completed.\r\n").as_bytes());
                return;
            }
            _ => format!("{tag} OK\r\n"),
        };
        if w.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn an_expired_token_bye_is_a_new_login_and_throttling_waits_as_the_server_asks() {
    let s = Setup::new("sqlite", &[]);
    let hook = Webhook::start(0);
    let ex = Exchangeish::start(1500);
    configure(
        &s,
        &hook,
        &connector(
            &s,
            &format!(
                "imap = {{ host = \"127.0.0.1\", port = {}, tls = \"none\" }}\n",
                ex.port
            ),
        ),
    );
    let key = s.key(&["accounts:write"], &[]);
    let node = s.start();
    add_mailbox(&node, &key, "boss@contoso.test");
    let got = wait_new(&hook, 2, Duration::from_secs(20), || node.log());
    assert!(got.contains_key("from exchange"), "{got:?}");
    // Announced during the FETCH: fetched again, not left for the next mail.
    assert!(got.contains_key("during the fetch"), "{got:?}");
    let logins = ex.logins.lock().unwrap().clone();
    assert!(logins.len() >= 3, "{logins:?}");
    // The BYE was answered at once (paced only), the throttle with the time asked.
    assert!(
        logins[1] - logins[0] < Duration::from_secs(1),
        "{:?}",
        logins[1] - logins[0]
    );
    assert!(
        logins[2] - logins[1] >= Duration::from_millis(1500),
        "{:?}",
        logins[2] - logins[1]
    );
    assert_eq!(
        metric(
            &node,
            "mailoauth_watch_events_total{outcome=\"token_expired\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&node, "mailoauth_watch_events_total{outcome=\"throttled\"}"),
        1.0
    );
    assert!(!node.log().contains("app-secret-value"), "{}", node.log());
}

/// A server without IDLE is looked at every `watch_poll` seconds (NOOP,
/// then a UID FETCH from the cursor): messages that appear are reported
/// within about one interval, each once.
#[test]
fn without_idle_a_folder_is_polled_at_the_configured_interval() {
    let s = Setup::new("sqlite", &[]);
    let hook = Webhook::start(0);
    let ex = Exchangeish::with(0, true);
    ex.messages.store(2, std::sync::atomic::Ordering::SeqCst);
    let conn = connector(
        &s,
        &format!(
            "imap = {{ host = \"127.0.0.1\", port = {}, tls = \"none\" }}\nwatch_poll = 1\n",
            ex.port
        ),
    );
    configure(&s, &hook, &conn);
    let key = s.key(&["accounts:write"], &[]);
    let node = s.start();
    add_mailbox(&node, &key, "boss@contoso.test");
    wait_until(
        "the polling connection",
        Duration::from_secs(20),
        || metric(&node, "mailoauth_watch_connections") == 1.0,
        || node.log(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(new_mail(&hook).is_empty(), "the two already there are old");
    let t = Instant::now();
    ex.messages.store(4, std::sync::atomic::Ordering::SeqCst);
    let got = wait_new(&hook, 2, Duration::from_secs(10), || node.log());
    let took = t.elapsed();
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        ["polled 3", "polled 4"]
    );
    assert!(took < Duration::from_millis(2500), "{took:?}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(new_mail(&hook).len(), 2, "nothing reported twice");
    assert_eq!(ex.logins.lock().unwrap().len(), 1, "one session throughout");
}

/// One SMTP session to Postfix carrying many messages.
struct Relay {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Relay {
    fn open(mail: &Dovecot) -> Relay {
        let s = TcpStream::connect((
            "127.0.0.1",
            mail.ports["smtp_relay"].as_u64().unwrap() as u16,
        ))
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        // Each command is one small write waiting for its reply: without
        // this, Nagle and delayed ACKs cost ~40 ms a round.
        s.set_nodelay(true).unwrap();
        let mut r = Relay {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        r.expect("220");
        r.cmd("EHLO test", "250");
        r
    }

    fn expect(&mut self, code: &str) {
        loop {
            let mut l = String::new();
            self.r.read_line(&mut l).unwrap();
            assert!(l.starts_with(code), "wanted {code}, got {l:?}");
            if l.as_bytes().get(3) != Some(&b'-') {
                return;
            }
        }
    }

    fn cmd(&mut self, c: &str, code: &str) {
        self.w.write_all(format!("{c}\r\n").as_bytes()).unwrap();
        self.expect(code);
    }

    /// One message; its Message-ID is the subject's words joined by `-`.
    fn send(&mut self, to: &str, subject: &str) {
        self.cmd("MAIL FROM:<sender@example.test>", "250");
        self.cmd(&format!("RCPT TO:<{to}>"), "250");
        self.cmd("DATA", "354");
        let data = format!(
            "From: Sender <sender@example.test>\r\nTo: {to}\r\nSubject: {subject}\r\n\
             Message-ID: <{}@example.test>\r\n\r\nBody of {subject}\r\n.\r\n",
            subject.replace(' ', "-")
        );
        self.w.write_all(data.as_bytes()).unwrap();
        self.expect("250");
    }
}

/// Per thread of `pid`: (name, voluntary + involuntary context switches).
fn switches(pid: u32) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let n: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        out.push((
            format!("{}#{}", name.trim(), t.file_name().to_string_lossy()),
            n,
        ));
    }
    out
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// WATCH_N watched mailboxes (default 100; `bench/receive.sh` runs 1,000) on
/// one node: all connected at the reconnect rate; RSS; over WATCH_IDLE
/// seconds (default 10) without mail, the watcher threads' wake-ups (none
/// but IDLE renewals) and the node's lease beats; new-mail latency (p50,
/// p99) from Postfix's 250 to the signed webhook; then Dovecot restarted:
/// every watcher back within 30 s, never faster than the rate, and the
/// mail delivered meanwhile reported once.
#[test]
fn watchers_at_scale_idle_quietly_report_fast_and_all_come_back_after_a_dovecot_restart() {
    let n: usize = std::env::var("WATCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let idle: u64 = std::env::var("WATCH_IDLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let db = std::env::var("WATCH_DB").unwrap_or_else(|_| "sqlite".into());
    let rate = 50.0;
    let s = Setup::new(&db, &[]);
    let conns = (n + 100).to_string();
    let mail = Dovecot::start_with(
        &s.oauth.issuer,
        &[
            ("MAILSERVER_CONNECTIONS", &conns),
            ("MAILSERVER_IDLE_NOTIFY", "29 mins"),
        ],
    );
    let hook = Webhook::start(0);
    s.write_config_with(
        &format!(
            "webhooks = [\"{}\"]\nwebhook_secret = \"{SECRET}\"\nreconnect_rate = {rate}\n",
            hook.url
        ),
        &connector(&s, &dovecot_imap(&mail)),
    );
    let key = s.key(&["accounts:write"], &[]);
    let node = s.start();
    let pid = node.child.id();
    let users: Vec<String> = (0..n).map(|i| format!("u{i}@example.test")).collect();
    let t = Instant::now();
    for u in &users {
        add_mailbox(&node, &key, u);
    }
    let added = t.elapsed();
    let up = |want: f64| metric(&node, "mailoauth_watch_connections") >= want;
    wait_until(
        &format!("{n} watchers connected"),
        Duration::from_secs_f64(n as f64 / rate + 60.0),
        || up(n as f64),
        || node.log(),
    );
    let connected = t.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let rss = rss_kib(pid);

    // Idle: nothing but the lease beat (every 10 s) and IDLE renewals (25 min).
    let beats0 = metric(
        &node,
        "mailoauth_watch_events_total{outcome=\"lease_beat\"}",
    );
    let renew0 = metric(
        &node,
        "mailoauth_watch_events_total{outcome=\"idle_renewal\"}",
    );
    let before = switches(pid);
    std::thread::sleep(Duration::from_secs(idle));
    let after = switches(pid);
    let beats = metric(
        &node,
        "mailoauth_watch_events_total{outcome=\"lease_beat\"}",
    ) - beats0;
    let renewals = metric(
        &node,
        "mailoauth_watch_events_total{outcome=\"idle_renewal\"}",
    ) - renew0;
    let diff = |watchers: bool| -> (usize, u64) {
        let mut threads = 0;
        let mut woke = 0;
        for (name, a) in &after {
            if name.starts_with("watch-") != watchers {
                continue;
            }
            threads += 1;
            let b = before
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, b)| *b);
            woke += a - b;
        }
        (threads, woke)
    };
    let (wthreads, wwoke) = diff(true);
    let (othreads, owoke) = diff(false);
    assert_eq!(wthreads, n, "one thread per watched folder");
    assert!(
        wwoke as f64 <= renewals * 4.0,
        "idle watcher threads woke {wwoke} times over {idle} s with {renewals} IDLE renewals"
    );

    // Latency: messages to the watched mailboxes, one every 20 ms.
    let k = n.min(200);
    let mut relay = Relay::open(&mail);
    let mut sent = BTreeMap::new();
    for i in 0..k {
        let subject = format!("lat {i}");
        relay.send(&users[(i * 7919) % n], &subject);
        sent.insert(subject, Instant::now());
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_new(&hook, k, Duration::from_secs(60), || node.log());
    let mut lat: Vec<Duration> = Vec::new();
    for d in hook.deliveries() {
        let v: Value = serde_json::from_str(&d.body).unwrap();
        if let Some(t) = v["message"]["envelope"]["subject"]
            .as_str()
            .and_then(|s| sent.get(s))
        {
            lat.push(d.at.saturating_duration_since(*t));
        }
    }
    lat.sort();
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));

    // Dovecot restarted: every connection ends; all come back at the rate.
    let connects0 = metric(&node, "mailoauth_watch_events_total{outcome=\"connect\"}");
    let mut samples = Vec::new();
    let restarted = {
        let mut relay = Relay::open(&mail);
        let back = mail.restart(1.0);
        // Mail that arrives while the watchers reconnect.
        for (i, u) in users.iter().enumerate().take(20) {
            relay.send(u, &format!("after restart {i}"));
        }
        back
    };
    let deadline = restarted + Duration::from_secs(60);
    loop {
        let c = metric(&node, "mailoauth_watch_events_total{outcome=\"connect\"}") - connects0;
        samples.push((Instant::now(), c));
        if c >= n as f64 && up(n as f64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{c} of {n} watchers back after 60 s\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let back_after = restarted.elapsed();
    // The most connections within any one second.
    let mut burst = 0.0f64;
    for (i, (t0, c0)) in samples.iter().enumerate() {
        for (t1, c1) in &samples[i..] {
            if *t1 - *t0 <= Duration::from_secs(1) {
                burst = burst.max(c1 - c0);
            }
        }
    }
    wait_new(&hook, k + 20, Duration::from_secs(60), || node.log());
    assert!(
        back_after < Duration::from_secs(30),
        "all back after {back_after:?}"
    );
    assert!(
        burst <= rate * 1.2 + 2.0,
        "{burst} connections within one second (rate {rate})"
    );
    let ids: BTreeSet<String> = new_mail(&hook).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), k + 20, "each message once");

    eprintln!(
        "FIGURE watchers={n} db={db} added={:.1}s connected_after={:.1}s rss={:.1}MiB ({:.0} KiB/watcher) \
         idle={idle}s watcher_threads={wthreads} watcher_wakeups={wwoke} idle_renewals={renewals} \
         lease_beats={beats} other_threads={othreads} other_wakeups={owoke} \
         latency_p50={:.0}ms p99={:.0}ms max={:.0}ms (n={}) \
         restart_all_back={:.1}s max_connects_per_second={burst}",
        added.as_secs_f64(),
        connected.as_secs_f64(),
        rss as f64 / 1024.0,
        rss as f64 / n as f64,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        lat.last().unwrap().as_secs_f64() * 1e3,
        lat.len(),
        back_after.as_secs_f64(),
    );
    assert!(p50 < Duration::from_secs(1), "p50 {p50:?}");
    assert!(p99 < Duration::from_secs(2), "p99 {p99:?}");
    assert!(rss < 150 * 1024, "RSS {rss} KiB");
}

/// Per mailbox id: the UIDs of its `message.new` events in the order the
/// receiver accepted them (each event counted at its first 200).
fn accepted_order(hook: &Webhook) -> BTreeMap<String, Vec<u64>> {
    let mut seen = BTreeSet::new();
    let mut order: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (id, v) in new_mail(hook) {
        if seen.insert(id) {
            order
                .entry(v["mailbox"]["id"].as_str().unwrap().to_owned())
                .or_default()
                .push(v["message"]["uid"].as_u64().unwrap());
        }
    }
    order
}

fn assert_in_order(order: &BTreeMap<String, Vec<u64>>, per_mailbox: usize) {
    for (mailbox, uids) in order {
        assert_eq!(uids.len(), per_mailbox, "{mailbox}: {uids:?}");
        assert!(
            uids.windows(2).all(|w| w[0] < w[1]),
            "{mailbox}'s events out of order: {uids:?}"
        );
    }
}

/// The receiver is down (nothing listens) for a minute while mail arrives
/// for three mailboxes: nothing is lost, and once it is back each mailbox's
/// events arrive in the order the messages did, each under one id.
/// PostgreSQL (the slow receiver below runs on SQLite).
#[test]
fn a_webhook_receiver_down_for_a_minute_gets_every_event_afterwards_in_order() {
    let s = Setup::new("postgres", &[]);
    let mail = Dovecot::start(&s.oauth.issuer);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    s.write_config_with(
        &format!("webhooks = [\"{url}\"]\nwebhook_secret = \"{SECRET}\"\nwatch_lease = 3\n"),
        &connector(&s, &dovecot_imap(&mail)),
    );
    let key = s.key(&["accounts:write"], &[]);
    let node = s.start();
    let users: Vec<String> = (0..3).map(|i| format!("d{i}@example.test")).collect();
    add_watched(&node, &key, &users);
    let down = Duration::from_secs(60);
    let hook = Webhook::with(Receiver {
        port,
        down,
        ..Receiver::default()
    });
    let t = Instant::now();
    let mut relay = Relay::open(&mail);
    for i in 0..4 {
        for u in &users {
            relay.send(u, &format!("{u} while down {i}"));
            // Each its own IDLE report, so each its own cursor move.
            std::thread::sleep(Duration::from_millis(700));
        }
    }
    // The first tries failed; what the outbox holds is retried after it.
    wait_metric(
        &node,
        "mailoauth_webhook_deliveries_total{outcome=\"retrying\"}",
        3.0,
        Duration::from_secs(30),
    );
    assert!(t.elapsed() < down, "the receiver came back too early");
    assert!(hook.deliveries().is_empty());
    wait_new(&hook, 12, Duration::from_secs(150), || node.log());
    assert!(t.elapsed() >= down);
    assert_in_order(&accepted_order(&hook), 4);
}

/// A receiver that takes 500 ms over each answer while 240 events queue up
/// for 12 mailboxes: at most the deliverer's 8 requests in flight (and more
/// than one: it does not serialise everything), every event delivered, in
/// order per mailbox, and the node's memory does not grow with the backlog.
#[test]
fn a_slow_webhook_receiver_gets_bounded_concurrency_in_order_and_no_memory_growth() {
    let s = Setup::new("sqlite", &[]);
    let mail = Dovecot::start(&s.oauth.issuer);
    let hook = Webhook::with(Receiver {
        delay: Duration::from_millis(500),
        ..Receiver::default()
    });
    configure(&s, &hook, &connector(&s, &dovecot_imap(&mail)));
    let key = s.key(&["accounts:write"], &[]);
    let node = s.start();
    let users: Vec<String> = (0..12).map(|i| format!("slow{i}@example.test")).collect();
    add_watched(&node, &key, &users);
    let pid = node.child.id();
    let before = rss_kib(pid);
    let mut relay = Relay::open(&mail);
    for i in 0..20 {
        for u in &users {
            relay.send(u, &format!("{u} slow {i}"));
        }
    }
    let mut most_rss = before;
    let mut pending_seen = 0.0f64;
    wait_until(
        "240 events delivered to the slow receiver",
        Duration::from_secs(120),
        || {
            most_rss = most_rss.max(rss_kib(pid));
            pending_seen = pending_seen.max(metric(&node, "mailoauth_webhooks_pending"));
            accepted_order(&hook).values().map(Vec::len).sum::<usize>() >= 240
        },
        || {
            format!(
                "reported by the watchers: {}; accepted per mailbox: {:?}\n{}",
                metric(&node, "mailoauth_watch_events_total{outcome=\"message\"}"),
                accepted_order(&hook)
                    .values()
                    .map(Vec::len)
                    .collect::<Vec<_>>(),
                node.log()
            )
        },
    );
    assert_in_order(&accepted_order(&hook), 20);
    let most = hook.most_at_once();
    assert!(most <= 8, "{most} requests at once");
    assert!(most >= 4, "only {most} request(s) at once");
    assert!(
        pending_seen >= 30.0,
        "the backlog never built up: {pending_seen}"
    );
    let growth = most_rss.saturating_sub(before);
    eprintln!(
        "FIGURE slow receiver: at most {most} at once, backlog up to {pending_seen} events, \
         RSS {} KiB before, at most {most_rss} KiB (+{growth} KiB)",
        before
    );
    assert!(
        growth < 16 * 1024,
        "RSS grew by {growth} KiB with the backlog"
    );
}

/// A watched folder the server does not have: a clear log line naming the
/// folder and the fix, counted as `no_folder`, while INBOX of the same
/// mailbox is watched as before.
#[test]
fn an_unknown_watched_folder_is_named_with_the_fix_and_inbox_goes_on() {
    let s = Setup::new("sqlite", &[]);
    let mail = Dovecot::start(&s.oauth.issuer);
    let hook = Webhook::start(0);
    let conn = connector(&s, &dovecot_imap(&mail)).replace(
        "watch = [\"INBOX\"]",
        "watch = [\"INBOX\", \"Projects/Nope\"]",
    );
    configure(&s, &hook, &conn);
    let key = s.key(&["accounts:write"], &[]);
    let node = s.start();
    add_mailbox(&node, &key, "folders@example.test");
    wait_metric(
        &node,
        "mailoauth_watch_events_total{outcome=\"no_folder\"}",
        1.0,
        Duration::from_secs(20),
    );
    let log = node.log();
    assert!(
        log.contains("the server has no folder \"Projects/Nope\"")
            && log.contains("fix `watch` of connector watched"),
        "{log}"
    );
    wait_metric(
        &node,
        "mailoauth_watch_connections",
        1.0,
        Duration::from_secs(20),
    );
    deliver(&mail, "folders@example.test", "inbox still works");
    let got = wait_new(&hook, 1, Duration::from_secs(10), || node.log());
    assert!(got.contains_key("inbox still works"), "{got:?}");
    // It waits minutes before looking again, not a tight loop.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        metric(&node, "mailoauth_watch_events_total{outcome=\"no_folder\"}"),
        1.0
    );
}

/// Dovecot offers NOTIFY (RFC 5465): a mailbox watching INBOX and Projects
/// holds one connection, not two; mail saved into Projects (by doveadm, as
/// a local delivery agent would) and delivered to INBOX is reported with its
/// folder, also after an IDLE renewal; and a restarted node catches up both
/// folders from their cursors, nothing twice.
#[test]
fn one_connection_watches_several_folders_where_the_server_offers_notify() {
    let s = Setup::new("sqlite", &[]);
    let mail = Dovecot::start(&s.oauth.issuer);
    let user = "notify@example.test";
    mail.doveadm(&["mailbox", "create", "-u", user, "Projects"], b"");
    let save = |subject: &str| {
        let msg = format!(
            "From: Sender <sender@example.test>\r\nTo: {user}\r\nSubject: {subject}\r\n\
             Message-ID: <{}@example.test>\r\n\r\nBody\r\n",
            subject.replace(' ', "-")
        );
        mail.doveadm(&["save", "-u", user, "-m", "Projects"], msg.as_bytes());
    };
    let hook = Webhook::start(0);
    let conn = connector(&s, &dovecot_imap(&mail))
        .replace("watch = [\"INBOX\"]", "watch = [\"INBOX\", \"Projects\"]");
    configure(&s, &hook, &conn);
    let key = s.key(&["accounts:write"], &[]);
    let mut node = s.start();
    let id = add_mailbox(&node, &key, user);
    wait_metric(
        &node,
        "mailoauth_watch_events_total{outcome=\"connect\"}",
        1.0,
        Duration::from_secs(20),
    );
    std::thread::sleep(Duration::from_secs(1));
    save("in projects");
    deliver(&mail, user, "in inbox");
    let got = wait_new(&hook, 2, Duration::from_secs(15), || node.log());
    assert_eq!(
        metric(&node, "mailoauth_watch_connections"),
        1.0,
        "two folders, one connection\n{}",
        node.log()
    );
    let folder_of = |subject: &str| {
        new_mail(&hook)
            .into_iter()
            .find(|(_, v)| v["message"]["envelope"]["subject"] == subject)
            .map(|(_, v)| v["message"].clone())
            .unwrap()
    };
    let p = folder_of("in projects");
    assert_eq!(p["folder"], "Projects", "{p}");
    assert_eq!(
        p["path"],
        format!("/v1/mailboxes/{id}/folders/Projects/messages/1")
    );
    assert_eq!(folder_of("in inbox")["folder"], "INBOX");
    assert!(got.len() == 2);

    // Past an IDLE renewal (idle_renew = 4 s) NOTIFY still reports.
    wait_metric(
        &node,
        "mailoauth_watch_events_total{outcome=\"idle_renewal\"}",
        1.0,
        Duration::from_secs(15),
    );
    let t = Instant::now();
    save("after a renewal");
    wait_new(&hook, 3, Duration::from_secs(10), || node.log());
    // Told by the server (a STATUS during IDLE), not found at a renewal.
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    // Mail that comes while the node is down, in both folders.
    node.kill();
    save("while down");
    deliver(&mail, user, "inbox while down");
    node = s.start();
    let got = wait_new(&hook, 5, Duration::from_secs(20), || node.log());
    assert!(got.contains_key("while down") && got.contains_key("inbox while down"));
    std::thread::sleep(Duration::from_secs(1));
    let ids: BTreeSet<String> = new_mail(&hook).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 5, "each message once: {got:?}");
}

/// PostgreSQL draws an event's `seq` when the row is inserted, so two
/// transactions writing one mailbox's events could commit out of `seq`
/// order; each takes the mailbox's advisory lock first. Held here from a
/// psql session, the lock keeps a new message's event unwritten (and
/// undelivered) until it is let go — then the event comes, once.
#[test]
fn event_rows_of_a_mailbox_wait_for_its_event_lock_on_postgresql() {
    let s = Setup::new("postgres", &[]);
    let Database::Postgres(pg) = &s.db else {
        unreachable!()
    };
    let mail = Dovecot::start(&s.oauth.issuer);
    let hook = Webhook::start(0);
    configure(&s, &hook, &connector(&s, &dovecot_imap(&mail)));
    let key = s.key(&["accounts:write"], &[]);
    let node = s.start();
    let id = add_mailbox(&node, &key, "locked@example.test");
    wait_metric(
        &node,
        "mailoauth_watch_connections",
        1.0,
        Duration::from_secs(20),
    );
    let mut psql = std::process::Command::new(format!("{PG_BIN}/psql"))
        .args(["-At", "-h", "127.0.0.1", "-p", &pg.port.to_string()])
        .args(["-U", "mailoauth", "postgres"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_psql = psql.stdin.take().unwrap();
    let mut from_psql = BufReader::new(psql.stdout.take().unwrap());
    writeln!(
        to_psql,
        "BEGIN;\nSELECT pg_advisory_xact_lock(28015, hashtext('{id}'));\nSELECT 'held';"
    )
    .unwrap();
    let mut line = String::new();
    while line.trim() != "held" {
        line.clear();
        assert!(from_psql.read_line(&mut line).unwrap() > 0, "psql ended");
    }
    deliver(&mail, "locked@example.test", "behind the lock");
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        new_mail(&hook).is_empty(),
        "an event was written past the mailbox's lock"
    );
    writeln!(to_psql, "COMMIT;\n\\q").unwrap();
    drop(to_psql);
    let _ = psql.wait();
    let got = wait_new(&hook, 1, Duration::from_secs(10), || node.log());
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        ["behind the lock"],
        "{got:?}"
    );
}
