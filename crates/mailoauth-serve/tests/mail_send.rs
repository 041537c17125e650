//! Sending mail from connected mailboxes: `POST /v1/mailboxes/{id}/messages`
//! into the durable outbox, delivered through the private Dovecot's
//! submission (XOAUTH2 with the authorization server's real tokens, relayed by
//! Postfix into the recipients' Maildirs), with signed `message.sent` events;
//! what is refused before anything is stored; and, against scripted peers for
//! what Dovecot will not say, Exchange's `535 5.7.139` (SMTP AUTH disabled →
//! Graph `sendMail`) and `554 5.2.252 SendAsDenied` (failed, with the fix).
//! On SQLite and PostgreSQL.

#[path = "support/harness.rs"]
mod harness;
#[path = "../../mailoauth-cli/tests/common/oauth_server.rs"]
mod oauth_server;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use harness::*;

const SECRET: &str = "whsec-mail-secret";
const FROM: &str = "shared@example.test";

/// The app-only connector `sender` with `smtp` and extra lines.
fn sender_connector(s: &Setup, smtp: &str, extra: &str) -> String {
    format!(
        "[serve.connectors.sender]\nprovider = \"custom\"\nclient_id = \"app-secret\"\n\
         client_secret = \"app-secret-value\"\nflow = \"client-credentials\"\n\
         token_url = \"{}/token\"\nscopes = [\"https://outlook.test/.default\"]\n{smtp}{extra}\n",
        s.oauth.issuer
    )
}

fn configure(s: &Setup, hook: &Webhook, connector: &str) {
    s.write_config_with(
        &format!(
            "webhooks = [\"{}\"]\nwebhook_secret = \"{SECRET}\"\n",
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
        Some(&json!({"connector": "sender", "email": email})),
    );
    assert_eq!(st, 201, "{v} {}", node.log());
    v["id"].as_str().unwrap().to_owned()
}

/// POST a message: (status, head, body as JSON).
fn post(
    node: &Node,
    key: &str,
    id: &str,
    content_type: &str,
    idempotency: Option<&str>,
    body: &str,
) -> (u16, String, Value) {
    let auth = format!("Bearer {key}");
    let mut h = vec![
        ("Authorization", auth.as_str()),
        ("Content-Type", content_type),
    ];
    if let Some(k) = idempotency {
        h.push(("Idempotency-Key", k));
    }
    let (st, head, text) = node.send("POST", &format!("/v1/mailboxes/{id}/messages"), &h, body);
    (
        st,
        head,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Wait until message `msg` is no longer queued: its state.
fn settled(node: &Node, key: &str, id: &str, msg: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (st, v) = node.call(
            "GET",
            &format!("/v1/mailboxes/{id}/outbox/{msg}"),
            Some(key),
            None,
        );
        assert_eq!(st, 200, "{v}");
        if v["state"] != "queued" {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "still queued after {within:?}: {v}\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The messages in `user`'s Maildir INBOX.
fn inbox(mail: &Dovecot, user: &str) -> Vec<String> {
    let dir = std::path::Path::new(mail.ports["maildir_root"].as_str().unwrap())
        .join(user)
        .join("new");
    let mut out: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn wait_inbox(mail: &Dovecot, user: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = inbox(mail, user);
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{user} has {} of {n} messages",
            got.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn messages_are_accepted_durably_then_delivered_through_dovecot_with_signed_events() {
    both(|db| {
        let s = Setup::new(db, &[]);
        let mail = Dovecot::start(&s.oauth.issuer);
        let hook = Webhook::start(0);
        let smtp = format!(
            "smtp = {{ host = \"localhost\", port = {}, tls = \"starttls\" }}\nca_file = \"{}\"\n",
            mail.ports["submission"],
            mail.ports["ca"].as_str().unwrap()
        );
        configure(&s, &hook, &sender_connector(&s, &smtp, ""));
        let key = s.key(&["accounts:write", "mail:send"], &[]);
        let node = s.start();
        let id = add_mailbox(&node, &key, FROM);

        // JSON, with an idempotency key: a retry is the same message.
        let body = json!({
            "to": ["bob@example.test"], "bcc": ["carol@example.test"],
            "subject": "Ticket 42 — résolu", "text": "Hello Bob,\n.\nthe fix is in.",
            "headers": {"X-Ticket": "42"},
            "attachments": [{"filename": "log.txt", "content_type": "text/plain", "content": "bG9nIGxpbmUK"}]
        })
        .to_string();
        let (st, head, first) = post(&node, &key, &id, "application/json", Some("k-1"), &body);
        assert_eq!(st, 202, "{db}: {first}\n{}", node.log());
        assert!(
            head.to_lowercase()
                .contains(&format!("location: /v1/mailboxes/{id}/outbox/").to_lowercase()),
            "{head}"
        );
        let msg = first["id"].as_str().unwrap().to_owned();
        let (st, head, again) = post(&node, &key, &id, "application/json", Some("k-1"), &body);
        assert_eq!(
            (st, again["id"].as_str()),
            (200, Some(msg.as_str())),
            "{db}: {again}"
        );
        assert!(
            head.to_lowercase().contains("idempotent-replayed: true"),
            "{head}"
        );
        let (st, _, other) = post(
            &node,
            &key,
            &id,
            "application/json",
            Some("k-1"),
            "{\"to\":[\"x@example.test\"]}",
        );
        assert_eq!(
            (st, other["error"].as_str()),
            (409, Some("conflict")),
            "{db}: {other}"
        );

        // Raw, recipients from its header fields, Bcc removed.
        let raw = "From: shared@example.test\r\nTo: bob@example.test\r\nBcc: dave@example.test\r\n\
                   Subject: raw one\r\nMessage-ID: <raw-1@example.test>\r\n\r\n.leading dot\r\nbye\r\n";
        let (st, _, r) = post(&node, &key, &id, "message/rfc822", None, raw);
        assert_eq!(st, 202, "{db}: {r}");
        let raw_id = r["id"].as_str().unwrap().to_owned();

        for m in [&msg, &raw_id] {
            let v = settled(&node, &key, &id, m, Duration::from_secs(30));
            assert_eq!(
                (v["state"].as_str(), v["via"].as_str()),
                (Some("sent"), Some("smtp")),
                "{db}: {v}"
            );
            assert!(
                v["reply"]
                    .as_str()
                    .unwrap()
                    .starts_with("2 recipient(s): 250 2.0.0"),
                "{v}"
            );
        }
        let bob = wait_inbox(&mail, "bob@example.test", 2);
        let json_copy = bob
            .iter()
            .find(|m| m.contains("X-Ticket: 42"))
            .expect("the JSON message");
        assert!(
            json_copy.contains(&format!("Message-ID: <{msg}@example.test>")),
            "{json_copy}"
        );
        assert!(
            json_copy.contains("filename=\"log.txt\"") && json_copy.contains("log line"),
            "{json_copy}"
        );
        assert!(
            !json_copy.contains("carol"),
            "Bcc never in the message: {json_copy}"
        );
        let raw_copy = bob
            .iter()
            .find(|m| m.contains("raw-1@example.test"))
            .expect("the raw one");
        assert!(
            raw_copy.contains("\n.leading dot\r\n") || raw_copy.contains("\n.leading dot\n"),
            "dot-stuffing undone: {raw_copy}"
        );
        assert!(!raw_copy.to_lowercase().contains("bcc"), "{raw_copy}");
        assert_eq!(wait_inbox(&mail, "carol@example.test", 1).len(), 1);
        assert_eq!(wait_inbox(&mail, "dave@example.test", 1).len(), 1);

        // message.sent, signed, once per message, ids stable.
        let deadline = Instant::now() + Duration::from_secs(20);
        let sent = loop {
            let sent: Vec<Delivery> = hook
                .deliveries()
                .into_iter()
                .filter(|d| {
                    d.headers
                        .get("mailoauth-event")
                        .is_some_and(|k| k == "message.sent")
                })
                .collect();
            if sent.len() >= 2 || Instant::now() > deadline {
                break sent;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(sent.len(), 2, "{db}: {sent:?}");
        let mut ids = std::collections::BTreeSet::new();
        for d in &sent {
            assert!(d.signed_with(SECRET), "{d:?}");
            let v: Value = serde_json::from_str(&d.body).unwrap();
            assert_eq!(v["mailbox"]["id"], id.as_str());
            assert_eq!(v["message"]["via"], "smtp");
            ids.insert(v["message"]["id"].as_str().unwrap().to_owned());
        }
        assert_eq!(
            ids,
            [msg.clone(), raw_id.clone()].into_iter().collect(),
            "{db}"
        );
        let (st, metrics) = node.call("GET", "/metrics", None, None);
        assert_eq!(st, 200);
        assert!(
            metrics
                .as_str()
                .unwrap()
                .contains("mailoauth_send_attempts_total{outcome=\"sent\"} 2"),
            "{metrics}"
        );
    });
}

#[test]
fn bad_messages_are_refused_before_anything_is_stored_and_each_says_what_to_fix() {
    let s = Setup::new("sqlite", &[]);
    let hook = Webhook::start(0);
    let smtp =
        "smtp = { host = \"127.0.0.1\", port = 9, tls = \"none\" }\nmax_message_size = 65536\n";
    configure(&s, &hook, &sender_connector(&s, smtp, ""));
    let key = s.key(&["accounts:write", "mail:send"], &[]);
    let read_only = s.key(&["token:read"], &[]);
    let node = s.start();
    let id = add_mailbox(&node, &key, FROM);
    let j = |v: Value| post(&node, &key, &id, "application/json", None, &v.to_string());
    let cases: Vec<((u16, String, Value), u16, &str)> = vec![
        (
            j(json!({"to": ["bob@example.test\r\nRCPT TO:<evil@x.test>"]})),
            400,
            "to `bob@example.test\\r\\n",
        ),
        (
            j(json!({"to": ["b@example.test"], "subject": "x\r\nBcc: evil@x.test"})),
            400,
            "line break",
        ),
        (
            j(json!({"to": ["b@example.test"], "from": "boss@example.test"})),
            403,
            "allow_send_as",
        ),
        (
            j(json!({"to": ["b@example.test"], "colour": "red"})),
            400,
            "unknown field `colour`",
        ),
        (
            j(json!({"to": ["b@example.test"], "text": "a".repeat(70_000)})),
            413,
            "max_message_size of 65536",
        ),
        (
            post(
                &node,
                &key,
                &id,
                "message/rfc822",
                None,
                "this is not a message\r\n",
            ),
            400,
            "not a header field",
        ),
        (
            post(
                &node,
                &key,
                &id,
                "message/rfc822",
                None,
                "To: b@example.test\r\nSubject: x\r\n",
            ),
            400,
            "no empty line",
        ),
        (
            post(
                &node,
                &key,
                &id,
                "message/rfc822",
                None,
                "From: boss@example.test\r\nTo: b@example.test\r\n\r\nhi\r\n",
            ),
            403,
            "SendAs",
        ),
        (
            post(&node, &key, &id, "text/csv", None, "a,b"),
            415,
            "message/rfc822",
        ),
        (
            post(&node, &read_only, &id, "application/json", None, "{}"),
            403,
            "mail:send",
        ),
        (
            post(
                &node,
                &key,
                &id,
                "application/json",
                Some(&"k".repeat(300)),
                "{}",
            ),
            400,
            "Idempotency-Key",
        ),
    ];
    for (i, ((st, _, v), want, says)) in cases.iter().enumerate() {
        assert_eq!(st, want, "case {i}: {v}");
        let text = format!(
            "{} {}",
            v["message"].as_str().unwrap_or_default(),
            v["fix"].as_str().unwrap_or_default()
        );
        assert!(text.contains(says), "case {i}: `{says}` not in {v}");
    }
    // The body over what any connector takes is not read at all.
    let big = "a".repeat(64 * 1024 * 4 / 3 + 1024 * 1024 + 4096);
    let (st, _, v) = post(&node, &key, &id, "message/rfc822", None, &big);
    assert_eq!(st, 413, "{v}");
    assert_eq!(
        s.query("SELECT COUNT(*) FROM messages").trim(),
        "0",
        "nothing stored"
    );
    let (st, v) = node.call(
        "GET",
        &format!("/v1/mailboxes/{id}/outbox/msg_nope"),
        Some(&key),
        None,
    );
    assert_eq!(st, 404, "{v}");
}

/// A scripted Exchange submission server: greets, offers XOAUTH2, and answers
/// AUTH with `auth`; when that is 235, the final DATA reply is `data`.
fn exchange_smtp(auth: &'static str, data: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().take(20) {
            let Ok(mut s) = s else { return };
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let _ = s.write_all(
                b"220 BN9PR03CA0001.outlook.office365.com Microsoft ESMTP MAIL Service ready\r\n",
            );
            let mut line = String::new();
            let mut in_data = false;
            let mut awaiting_ir = false;
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                let cmd = line.trim_end().to_owned();
                line.clear();
                let answer: String = if in_data {
                    if cmd != "." {
                        continue;
                    }
                    in_data = false;
                    format!("{data}\r\n")
                } else if cmd.starts_with("EHLO") {
                    "250-BN9PR03CA0001.outlook.office365.com Hello\r\n250-SIZE 37748736\r\n250-AUTH LOGIN XOAUTH2\r\n250 8BITMIME\r\n".into()
                } else if awaiting_ir {
                    // The base64 of the two-step form (tokens never fit one line).
                    awaiting_ir = false;
                    format!("{auth}\r\n")
                } else if cmd.starts_with("AUTH") && cmd.split(' ').count() == 2 {
                    awaiting_ir = true;
                    "334 \r\n".into()
                } else if cmd.starts_with("AUTH") {
                    format!("{auth}\r\n")
                } else if cmd.starts_with("MAIL") || cmd.starts_with("RCPT") || cmd == "RSET" {
                    "250 2.1.0 OK\r\n".into()
                } else if cmd == "DATA" {
                    in_data = true;
                    "354 Start mail input; end with <CRLF>.<CRLF>\r\n".into()
                } else if cmd == "QUIT" {
                    let _ = s.write_all(b"221 2.0.0 Service closing transmission channel\r\n");
                    break;
                } else {
                    "500 5.3.3 Unrecognized command\r\n".into()
                };
                if s.write_all(answer.as_bytes()).is_err() {
                    break;
                }
            }
        }
    });
    port
}

/// A scripted Graph: records each sendMail (path, authorization, decoded
/// MIME) and answers 202.
/// What the scripted Graph got: (path, Authorization, decoded MIME) each.
type GraphCalls = Arc<Mutex<Vec<(String, String, String)>>>;

fn graph() -> (u16, GraphCalls) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming().take(50) {
            let Ok(mut s) = s else { return };
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut first = String::new();
            r.read_line(&mut first).unwrap_or(0);
            let (mut len, mut auth) = (0usize, String::new());
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 && !line.trim().is_empty() {
                let (k, v) = line.split_once(':').unwrap_or(("", ""));
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap_or(0),
                    "authorization" => auth = v.trim().to_owned(),
                    _ => {}
                }
                line.clear();
            }
            let mut body = vec![0; len.min(1 << 20)];
            let _ = r.read_exact(&mut body);
            let mime = base64_decode(&String::from_utf8_lossy(&body));
            let path = first.split_whitespace().nth(1).unwrap_or("").to_owned();
            g.lock().unwrap().push((path, auth, mime));
            let _ = s.write_all(
                b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (port, got)
}

#[test]
fn smtp_auth_disabled_sends_through_graph_and_send_as_denied_fails_with_the_fix() {
    both(|db| {
        let s = Setup::new(db, &[]);
        let hook = Webhook::start(0);
        let disabled = exchange_smtp(
            "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. [BN9PR03CA0001.namprd03.prod.outlook.com]",
            "250 unused",
        );
        let denied = exchange_smtp(
            "235 2.7.0 Authentication successful",
            "554 5.2.252 SendAsDenied; shared@example.test not allowed to send as boss@example.test; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied",
        );
        let (gport, graph_got) = graph();
        let mut tables = sender_connector(
            &s,
            &format!("smtp = {{ host = \"127.0.0.1\", port = {disabled}, tls = \"none\" }}\n"),
            &format!(
                "resources = {{ graph = [\"https://graph.test/.default\"] }}\ngraph_url = \"http://127.0.0.1:{gport}\"\n"
            ),
        );
        // Exchange's family (the catalog's Exchange entries apply): the
        // Microsoft preset, its sign-in host moved to the test server.
        tables.push_str(&format!(
            "[serve.connectors.sendas]\nprovider = \"microsoft\"\n\
             tenant = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"\nclient_id = \"app-secret\"\n\
             client_secret = \"app-secret-value\"\nflow = \"client-credentials\"\n\
             smtp = {{ host = \"127.0.0.1\", port = {denied}, tls = \"none\" }}\nallow_send_as = true\n"
        ));
        configure(&s, &hook, &tables);
        let key = s.key(&["accounts:write", "mail:send"], &[]);
        let node = s.start_another_with(&[("MAILOAUTH_MICROSOFT_LOGIN_HOST", &s.oauth.issuer)]);

        // 535 5.7.139 → Graph sendMail for the app-only mailbox, with a Graph token.
        let id = add_mailbox(&node, &key, FROM);
        let body =
            json!({"to": ["bob@example.test"], "subject": "via graph", "text": "hi"}).to_string();
        let (st, _, v) = post(&node, &key, &id, "application/json", None, &body);
        assert_eq!(st, 202, "{v}");
        let v = settled(
            &node,
            &key,
            &id,
            v["id"].as_str().unwrap(),
            Duration::from_secs(30),
        );
        assert_eq!(
            (v["state"].as_str(), v["via"].as_str()),
            (Some("sent"), Some("graph")),
            "{db}: {v}\n{}",
            node.log()
        );
        let calls = graph_got.lock().unwrap().clone();
        assert_eq!(calls.len(), 1, "{calls:?}");
        let (path, auth, mime) = &calls[0];
        assert_eq!(path, "/v1.0/users/shared%40example.test/sendMail");
        let payload = auth
            .trim_start_matches("Bearer ")
            .split('.')
            .nth(1)
            .unwrap();
        use base64::Engine;
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            claims["aud"], "https://graph.test",
            "a Graph token, not the mail one"
        );
        assert!(mime.contains("Subject: via graph"), "{mime}");

        // 554 5.2.252 after the upload: failed, with the catalog's cause and fix.
        let (st, v) = node.call(
            "POST",
            "/v1/mailboxes",
            Some(&key),
            Some(&json!({"connector": "sendas", "email": FROM})),
        );
        assert_eq!(st, 201, "{v}");
        let id2 = v["id"].as_str().unwrap().to_owned();
        let raw =
            "From: boss@example.test\r\nTo: bob@example.test\r\nSubject: as the boss\r\n\r\nhi\r\n";
        let (st, _, v) = post(&node, &key, &id2, "message/rfc822", None, raw);
        assert_eq!(st, 202, "allow_send_as passes it on: {v}");
        let v = settled(
            &node,
            &key,
            &id2,
            v["id"].as_str().unwrap(),
            Duration::from_secs(30),
        );
        assert_eq!(v["state"], "failed", "{db}: {v}");
        assert!(v["error"].as_str().unwrap().contains("5.2.252"), "{v}");
        assert!(v["fix"].as_str().unwrap().contains("SendAs"), "{v}");
        let failed = hook.wait_for("message.failed", Duration::from_secs(20));
        assert_eq!(failed["message"]["id"], v["id"]);
        assert!(
            failed["fix"].as_str().unwrap().contains("SendAs"),
            "{failed}"
        );
    });
}

/// The send figure: `SEND_N` (default 1,000) messages over 10 mailboxes,
/// accepted over 8 client connections at once and delivered through
/// Dovecot's submission; each mailbox's connections carry many messages per
/// login (at most 3 at once). `bench/send.sh` runs it on a release build.
#[test]
fn a_thousand_queued_messages_over_ten_mailboxes_leave_at_fifty_a_second_or_more() {
    let n: usize = std::env::var("SEND_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let db = std::env::var("SEND_DB").unwrap_or_else(|_| "sqlite".into());
    let s = Setup::new(&db, &[]);
    let mail = Dovecot::start(&s.oauth.issuer);
    let hook = Webhook::start(0);
    let smtp = format!(
        "smtp = {{ host = \"localhost\", port = {}, tls = \"starttls\" }}\nca_file = \"{}\"\n",
        mail.ports["submission"],
        mail.ports["ca"].as_str().unwrap()
    );
    configure(&s, &hook, &sender_connector(&s, &smtp, ""));
    let key = s.key(&["accounts:write", "mail:send"], &[]);
    let node = s.start();
    let ids: Vec<String> = (0..10)
        .map(|i| add_mailbox(&node, &key, &format!("sender{i}@example.test")))
        .collect();
    // Dovecot's own count of submission logins.
    let logins = || {
        std::fs::read_to_string(mail.ports["dovecot_log"].as_str().unwrap())
            .unwrap_or_default()
            .matches("submission-login: Info: Login: ")
            .count()
    };
    let logins_before = logins();
    let start = Instant::now();
    std::thread::scope(|sc| {
        for t in 0..8 {
            let (node, key, ids) = (&node, &key, &ids);
            sc.spawn(move || {
                for i in (t..n).step_by(8) {
                    let body = json!({"to": [format!("rcpt{}@example.test", i % 50)],
                        "subject": format!("load {i}"), "text": "x".repeat(2000)})
                    .to_string();
                    let (st, _, v) = post(node, key, &ids[i % 10], "application/json", None, &body);
                    assert_eq!(st, 202, "{v}");
                }
            });
        }
    });
    let accepted = start.elapsed();
    let sent_count = || -> usize {
        let (_, m) = node.call("GET", "/metrics", None, None);
        let text = m.as_str().unwrap_or_default().to_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("mailoauth_send_attempts_total{outcome=\"sent\"} "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while sent_count() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} sent\n{}",
            sent_count(),
            node.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = start.elapsed();
    let logins = logins() - logins_before;
    let rate = n as f64 / took.as_secs_f64();
    eprintln!(
        "FIGURE send ({db}): {n} messages over 10 mailboxes accepted in {accepted:.2?} \
         ({:.0}/s), all sent after {took:.2?}: {rate:.0} messages/s; {logins} SMTP logins",
        n as f64 / accepted.as_secs_f64()
    );
    assert!(rate >= 50.0, "{rate:.1} messages/s");
    assert!(
        logins * 10 <= n,
        "{logins} logins for {n} messages: connections are not reused"
    );
    assert_eq!(
        s.query("SELECT COUNT(*) FROM messages WHERE state <> 'sent'")
            .trim(),
        "0"
    );
}

#[test]
fn a_delivered_message_is_read_back_raw_by_folder_and_uid() {
    let s = Setup::new("sqlite", &[]);
    let mail = Dovecot::start(&s.oauth.issuer);
    let hook = Webhook::start(0);
    let servers = format!(
        "smtp = {{ host = \"localhost\", port = {}, tls = \"starttls\" }}\n\
         imap = {{ host = \"localhost\", port = {}, tls = \"implicit\" }}\nca_file = \"{}\"\n",
        mail.ports["submission"],
        mail.ports["imap_tls"],
        mail.ports["ca"].as_str().unwrap()
    );
    configure(&s, &hook, &sender_connector(&s, &servers, ""));
    let key = s.key(&["accounts:write", "mail:send", "mail:read"], &[]);
    let send_only = s.key(&["mail:send"], &[]);
    let node = s.start();
    let id = add_mailbox(&node, &key, "reader@example.test");
    let text = "line\r\n".repeat(20_000);
    let body =
        json!({"to": ["reader@example.test"], "subject": "read me", "text": text}).to_string();
    let (st, _, v) = post(&node, &key, &id, "application/json", None, &body);
    assert_eq!(st, 202, "{v}");
    let v = settled(
        &node,
        &key,
        &id,
        v["id"].as_str().unwrap(),
        Duration::from_secs(30),
    );
    assert_eq!(v["state"], "sent", "{v}");
    let on_disk = wait_inbox(&mail, "reader@example.test", 1).remove(0);

    let auth = format!("Bearer {key}");
    let get = |path: &str, auth: &str| node.send("GET", path, &[("Authorization", auth)], "");
    let (st, head, raw) = get(
        &format!("/v1/mailboxes/{id}/folders/INBOX/messages/1"),
        &auth,
    );
    assert_eq!(st, 200, "{raw}");
    assert!(
        head.to_lowercase().contains("content-type: message/rfc822"),
        "{head}"
    );
    assert!(
        raw.contains("Subject: read me"),
        "{}",
        &raw[..raw.len().min(500)]
    );
    // Maildir keeps LF line ends; IMAP hands the message out with CRLF.
    let stored = on_disk.replace("\r\n", "\n").replace('\n', "\r\n");
    assert_eq!(raw.len(), stored.len(), "the message as stored, whole");
    assert_eq!(raw, stored, "the message as stored, byte for byte");
    assert!(
        head.to_lowercase()
            .contains(&format!("content-length: {}", raw.len())),
        "{head}"
    );

    for (path, want, says) in [
        ("/folders/INBOX/messages/99", 404, "no message with UID 99"),
        (
            "/folders/Nope%2FSub/messages/1",
            404,
            "cannot open folder `Nope/Sub`",
        ),
        ("/folders/INBOX/messages/0", 400, "UID"),
        ("/folders/IN%0D%0ABOX/messages/1", 400, "control character"),
    ] {
        let (st, _, text) = get(&format!("/v1/mailboxes/{id}{path}"), &auth);
        assert_eq!(st, want, "{path}: {text}");
        assert!(text.contains(says), "{path}: `{says}` not in {text}");
    }
    let (st, _, text) = get(
        &format!("/v1/mailboxes/{id}/folders/INBOX/messages/1"),
        &format!("Bearer {send_only}"),
    );
    assert_eq!(st, 403, "{text}");
    assert!(text.contains("mail:read"), "{text}");
}
