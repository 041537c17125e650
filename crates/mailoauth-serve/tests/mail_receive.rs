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

/// Deliver a message to `to` through Postfix (plain SMTP on loopback, which
/// relays to Dovecot's LMTP): what arrives while a watcher runs.
fn deliver(mail: &Dovecot, to: &str, subject: &str) {
    let mut s = TcpStream::connect((
        "127.0.0.1",
        mail.ports["smtp_relay"].as_u64().unwrap() as u16,
    ))
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let expect = |code: &str, r: &mut BufReader<TcpStream>| loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        assert!(l.starts_with(code), "wanted {code}, got {l:?}");
        if l.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    };
    expect("220", &mut r);
    for (cmd, code) in [
        ("EHLO test".to_owned(), "250"),
        ("MAIL FROM:<sender@example.test>".to_owned(), "250"),
        (format!("RCPT TO:<{to}>"), "250"),
        ("DATA".to_owned(), "354"),
    ] {
        write!(s, "{cmd}\r\n").unwrap();
        expect(code, &mut r);
    }
    write!(
        s,
        "From: Sender <sender@example.test>\r\nTo: {to}\r\nSubject: {subject}\r\n\
         Message-ID: <{}@example.test>\r\n\r\nBody of {subject}\r\n.\r\n",
        subject.replace(' ', "-")
    )
    .unwrap();
    expect("250", &mut r);
    write!(s, "QUIT\r\n").unwrap();
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
        let id = add_mailbox(&node, &key, "watched@example.test");
        // Mail already there when the watch starts is not new.
        deliver(&mail, "watched@example.test", "before the watch");
        std::thread::sleep(Duration::from_millis(500));
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
        wait_until(
            "an IDLE renewal",
            Duration::from_secs(15),
            || {
                metric(
                    &node,
                    "mailoauth_watch_events_total{outcome=\"idle_renewal\"}",
                ) >= 1.0
            },
            || node.log(),
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
/// message. Records the times of each login.
struct Exchangeish {
    port: u16,
    logins: Arc<Mutex<Vec<Instant>>>,
}

impl Exchangeish {
    fn start(backoff_ms: u64) -> Exchangeish {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let logins = Arc::new(Mutex::new(Vec::new()));
        let lg = logins.clone();
        std::thread::spawn(move || {
            for (n, s) in l.incoming().enumerate() {
                let Ok(s) = s else { return };
                let lg = lg.clone();
                std::thread::spawn(move || session(s, n, backoff_ms, &lg));
            }
        });
        Exchangeish { port, logins }
    }
}

fn session(s: TcpStream, n: usize, backoff_ms: u64, logins: &Mutex<Vec<Instant>>) {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let _ =
        w.write_all(b"* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2 SASL-IR IDLE] Exchangeish ready\r\n");
    let mut line = String::new();
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
            "CAPABILITY" => {
                format!("* CAPABILITY IMAP4rev1 AUTH=XOAUTH2 SASL-IR IDLE\r\n{tag} OK done\r\n")
            }
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
            "EXAMINE" => {
                let next = if n == 0 { 5 } else { 6 };
                let mut o = format!(
                    "* {} EXISTS\r\n* OK [UIDVALIDITY 77] UIDs valid\r\n* OK [UIDNEXT {next}] next\r\n",
                    next - 1
                );
                o.push_str(&format!("{tag} OK [READ-ONLY] EXAMINE completed.\r\n"));
                o
            }
            "UID" => {
                let mut o = String::new();
                if n >= 2 {
                    o.push_str(
                        "* 5 FETCH (UID 5 RFC822.SIZE 321 ENVELOPE (\"Fri, 4 Dec 2026 10:00:00 +0000\" \"from exchange\" \
                         ((NIL NIL \"boss\" \"contoso.test\")) NIL NIL ((NIL NIL \"x\" \"contoso.test\")) NIL NIL NIL \"<e5@contoso.test>\"))\r\n",
                    );
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
    let got = wait_new(&hook, 1, Duration::from_secs(20), || node.log());
    assert!(got.contains_key("from exchange"), "{got:?}");
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
