//! The service as a cluster: the provider's refresh rate shared by the live
//! nodes, API key revocations reaching every node, admin sessions any node
//! serves, clients turned away after too many refused keys, and imports of
//! refresh tokens alone. Real executables, the scripted provider of the scale
//! benchmark (it counts every refresh per second), SQLite and PostgreSQL.

#[path = "support/browser.rs"]
mod browser;
#[path = "support/harness.rs"]
mod harness;
#[path = "../../mailoauth-cli/tests/common/oauth_server.rs"]
mod oauth_server;

use std::time::{Duration, Instant};

use harness::*;
use serde_json::Value;

const SECRET: &str = "whsec-cluster-secret";

/// Poll `f` every 200 ms until it is `Some`, at most `within`.
fn wait_for<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_provider_refresh_rate_is_shared_by_the_live_nodes() {
    // PostgreSQL: the cluster's database.
    let s = Setup::new("postgres", &[]);
    let provider = ScriptedProvider::start();
    s.write_config_with("refresh_rate = 8\n", &provider.connector("bench"));
    let a = s.start();
    let b = s.start_another();
    // Both have beaten and counted each other before work arrives.
    let key = s.key(&["admin"], &[]);
    for n in [&a, &b] {
        wait_for(Duration::from_secs(15), "two live nodes", || {
            let (_, _, text) = n.send(
                "GET",
                "/metrics",
                &[("Authorization", &format!("Bearer {key}"))],
                "",
            );
            text.contains("mailoauth_cluster_nodes 2").then_some(())
        });
    }
    // 96 sign-ins whose tokens are all due now (they expire in 60–70 s):
    // more than one node claims at once (32), so both work at the same time.
    let (ok, out, err) = import(&s, &provider.mint(96, 60, 10, "bench"));
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 96);
    let stats = wait_for(Duration::from_secs(60), "96 refreshes", || {
        let st = provider.stats();
        (st["mailboxes_refreshed"] == 96).then_some(st)
    });
    // Per node, the two would have made up to 16 a second.
    assert!(
        stats["max_per_second"].as_i64().unwrap() <= 8,
        "the provider saw more than the cluster's rate: {stats}\n{}\n{}",
        a.log(),
        b.log()
    );
    assert_eq!(stats["refreshed_twice"], 0, "{stats}");
    assert_eq!(stats["refused"], 0, "{stats}");
    let took = stats["last"].as_f64().unwrap() - stats["first"].as_f64().unwrap();
    assert!(
        took >= 6.0,
        "32 refreshes at 4/s take about 8 s, not {took:.1} s"
    );
    // Both nodes did a share (each logs the count it divides by).
    for n in [&a, &b] {
        assert!(n.log().contains("2 live node(s)"), "{}", n.log());
    }
}

/// Sign in to `/admin` on `node` with `key`: the session cookie.
fn admin_cookie(s: &Setup, node: &Node, key: &str) -> String {
    let origin = format!("http://127.0.0.1:{}", s.port);
    let (st, head, body) = node.send(
        "POST",
        "/admin/sign-in",
        &[
            ("Origin", &origin),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &format!("key={key}"),
    );
    assert_eq!(st, 303, "{head}\n{body}");
    head.lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned()
}

fn admin_page(node: &Node, cookie: &str) -> String {
    node.send("GET", "/admin", &[("Cookie", cookie)], "").2
}

#[test]
fn a_revoked_key_is_refused_by_every_node_and_its_admin_sessions_end() {
    both(|db| {
        let s = Setup::new(db, &[]);
        let a = s.start();
        let b = s.start_another();
        let key = s.key(&["admin"], &[]);
        let other = s.key(&["admin"], &[]);
        // A session opened on one node is served by the other.
        let cookie = admin_cookie(&s, &a, &key);
        assert!(
            admin_page(&b, &cookie).contains("Sign out"),
            "{}",
            admin_page(&b, &cookie)
        );
        let kept = admin_cookie(&s, &b, &other);
        for n in [&a, &b] {
            assert_eq!(n.call("GET", "/v1/mailboxes", Some(&key), None).0, 200);
        }
        let id = stdout_of(s.command().args(["keys", "list"]))
            .lines()
            .next()
            .unwrap()
            .split('\t')
            .next()
            .unwrap()
            .to_owned();
        let out = s.command().args(["keys", "revoke", &id]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The session ends at once; the key on every node within a heartbeat.
        for n in [&a, &b] {
            let page = admin_page(n, &cookie);
            assert!(
                !page.contains("Sign out") && page.contains("Sign in"),
                "{page}"
            );
        }
        for n in [&a, &b] {
            wait_for(Duration::from_secs(5), "the revoked key refused", || {
                (n.call("GET", "/v1/mailboxes", Some(&key), None).0 == 401).then_some(())
            });
        }
        // Other keys and their sessions go on.
        assert!(admin_page(&a, &kept).contains("Sign out"));
        assert_eq!(a.call("GET", "/v1/mailboxes", Some(&other), None).0, 200);
        assert!(stdout_of(s.command().args(["keys", "list"])).contains("revoked"));
        // An unknown id is named, with where to find the right one.
        let out = s
            .command()
            .args(["keys", "revoke", "key_nope"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("keys list"));
    });
}

#[test]
fn a_client_presenting_wrong_keys_is_turned_away_and_honest_clients_are_not() {
    let s = Setup::new("sqlite", &[]);
    let n = s.start();
    let key = s.key(&["accounts:read"], &[]);
    let mut statuses = Vec::new();
    for i in 0..70 {
        statuses.push(
            n.call("GET", "/v1/mailboxes", Some(&format!("mos_wrong{i}")), None)
                .0,
        );
    }
    assert!(statuses[..59].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(statuses[69], 429, "{statuses:?}");
    let (st, head, body) = n.send(
        "GET",
        "/v1/mailboxes",
        &[("Authorization", &format!("Bearer {key}"))],
        "",
    );
    // The same address is turned away even with a good key, with the time to wait.
    assert_eq!(st, 429, "{body}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["fix"].as_str().unwrap().contains("keys list"), "{v}");
    assert!(
        n.log().contains("refused credentials within"),
        "{}",
        n.log()
    );
    assert!(!n.log().contains("mos_wrong"), "no key in the log");
}

#[test]
fn an_import_of_refresh_tokens_alone_redeems_each_once() {
    both(|db| {
        let s = Setup::new(db, &[]);
        let provider = ScriptedProvider::start();
        s.write_config_with("refresh_rate = 20\n", &provider.connector("bench"));
        // The minted lines without their access tokens: a move from a system
        // that kept only refresh tokens.
        let lines: String = provider
            .mint(5, 3600, 60, "bench")
            .lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                let o = v.as_object_mut().unwrap();
                o.remove("access_token");
                o.remove("expires_at");
                o.remove("obtained_at");
                format!("{v}\n")
            })
            .collect();
        let (ok, out, err) = import(&s, &lines);
        assert!(ok, "{err}");
        let ids: Vec<&str> = out.lines().map(|l| l.split('\t').next().unwrap()).collect();
        assert_eq!(ids.len(), 5);
        let stats = provider.stats();
        assert_eq!(stats["refreshes"], 5, "{stats}");
        // Served from what the import stored: the rotated chain's token.
        let n = s.start();
        let key = s.key(&["token:read"], &[]);
        let (st, v) = n.token(&key, ids[0]);
        assert_eq!(st, 200, "{v}");
        assert!(v["access_token"].as_str().unwrap().ends_with("-1"), "{v}");
        assert_eq!(provider.stats()["refreshes"], 5, "no second refresh");

        // A refused one stops the import at its line, and leaves no mailbox behind.
        let used = lines.lines().next().unwrap().replace("user0@", "late@");
        let (ok, _, err) = import(&s, &format!("{used}\n"));
        assert!(!ok);
        assert!(
            err.contains("import line 1") && err.contains("not accepted"),
            "{err}"
        );
        assert!(!err.contains("rt-0-0"), "no token in the error: {err}");
        let (_, list) = n.call(
            "GET",
            "/v1/mailboxes",
            Some(&s.key(&["accounts:read"], &[])),
            None,
        );
        assert!(!list.to_string().contains("late@"), "{list}");
        // Half an access token is a usage error naming both fields.
        let half = r#"{"connector":"bench","email":"h@bench.test","refresh_token":"x","access_token":"y"}"#;
        let (ok, _, err) = import(&s, half);
        assert!(!ok && err.contains("`expires_at` together"), "{err}");
    });
}

/// This node's `mailoauth_background_rounds_total` per worker.
fn rounds(n: &Node, key: &str) -> [f64; 4] {
    let (_, _, text) = n.send(
        "GET",
        "/metrics",
        &[("Authorization", &format!("Bearer {key}"))],
        "",
    );
    ["heartbeat", "refresher", "sender", "deliverer"].map(|w| {
        let series = format!("mailoauth_background_rounds_total{{worker=\"{w}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{series}` in:\n{text}"))
    })
}

#[test]
fn an_idle_node_sleeps_until_work_falls_due_and_takes_up_a_peers_within_a_heartbeat() {
    both(|db| {
        let s = Setup::new(db, &[]);
        let provider = ScriptedProvider::start();
        let hook = Webhook::start(0);
        s.write_config_with(
            &format!(
                "webhooks = [\"{}\"]\nwebhook_secret = \"{SECRET}\"\n",
                hook.url
            ),
            &provider.connector("bench"),
        );
        // Tokens good for two hours: nothing is due for the refresher.
        let minted = provider.mint(3, 7200, 60, "bench");
        let (ok, _, err) = import(&s, &minted);
        assert!(ok, "{err}");
        let n = s.start();
        let key = s.key(&["admin"], &[]);
        // The start-up rounds, then quiet.
        std::thread::sleep(Duration::from_secs(3));
        let before = rounds(&n, &key);
        std::thread::sleep(Duration::from_secs(10));
        let after = rounds(&n, &key);
        let woke = |i: usize| after[i] - before[i];
        assert!(
            (4.0..=6.0).contains(&woke(0)),
            "one heartbeat per 2 s over 10 s, not {}",
            woke(0)
        );
        for (i, w) in ["refresher", "sender", "deliverer"].iter().enumerate() {
            assert_eq!(
                woke(i + 1),
                0.0,
                "the {w} woke with nothing due ({before:?} → {after:?})"
            );
        }

        // A peer (here the command line, another process) stores a mailbox
        // whose token is due now: this node's refresher hears of it from its
        // next heartbeat, not from a poll of its own.
        let due = provider.mint(1, 60, 0, "bench").replace("user0@", "peer@");
        let t0 = Instant::now();
        let (ok, _, err) = import(&s, &due);
        assert!(ok, "{err}");
        wait_for(
            Duration::from_secs(6),
            "the peer's mailbox refreshed",
            || (provider.stats()["mailboxes_refreshed"] == 1).then_some(()),
        );
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "taken up after {:?} (heartbeat 2 s)",
            t0.elapsed()
        );
        assert!(rounds(&n, &key)[1] > after[1], "the refresher woke for it");
    });
}
