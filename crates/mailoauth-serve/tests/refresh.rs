//! The service keeps mailboxes alive and tells the application when one
//! needs its owner: the background refresher, a provider outage (degraded,
//! still-valid tokens served), a revoked sign-in (424 with a re-consent link),
//! and the signed webhooks for each — against the real authorization server,
//! on SQLite and PostgreSQL.

#[path = "support/browser.rs"]
mod browser;
#[path = "support/harness.rs"]
mod harness;
#[path = "../../mailoauth-cli/tests/common/oauth_server.rs"]
mod oauth_server;

use std::time::{Duration, Instant};

use serde_json::Value;

use harness::*;

const SECRET: &str = "whsec-test-secret";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Check a delivery's signature as a receiver would.
fn signed_correctly(d: &Delivery) -> bool {
    d.signed_with(SECRET)
}

/// Configure `s` for request-only refreshes and events to `hook`.
fn with_webhook(s: &Setup, hook: &Webhook) {
    s.write_config(&format!(
        "keep_fresh = false\nwebhooks = [\"{}\"]\nwebhook_secret = \"{SECRET}\"\n",
        hook.url
    ));
}

fn mailbox(node: &Node, key: &str, id: &str) -> Value {
    let (st, m) = node.call("GET", &format!("/v1/mailboxes/{id}"), Some(key), None);
    assert_eq!(st, 200, "{m}");
    m
}

#[test]
fn the_background_refresher_renews_tokens_ahead_of_expiry_once_across_nodes() {
    both(|db| {
        // 8 s tokens: renewed at half-life, about every 4 s, with no request.
        let s = Setup::new(db, &[("ACCESS_TOKEN_TTL", "8")]);
        let key = s.key(&["admin"], &[]);
        let n1 = s.start();
        let _n2 = s.start_another();
        let id = n1.add_app_mailbox(&key, "idle@example.test");
        let before = s.oauth.grant_requests("client_credentials");
        std::thread::sleep(Duration::from_secs(10));
        let grants = s.oauth.grant_requests("client_credentials") - before;
        // Two nodes share the schedule: each renewal happens once, not per node.
        assert!(
            (2..=3).contains(&grants),
            "{db}: {grants} grants in 10 s for one mailbox on 2 nodes; {}",
            n1.log()
        );
        let m = mailbox(&n1, &key, &id);
        assert_eq!(m["state"], "ok", "{db}: {m}");
        assert!(
            m["refreshed_at"].as_i64().unwrap() >= now() - 6,
            "{db}: {m}"
        );
        let (st, t) = n1.token(&key, &id);
        assert_eq!(st, 200, "{db}: {t}");
        assert!(t["expires_at"].as_i64().unwrap() - now() >= 3, "{db}: {t}");
    });
}

#[test]
fn a_provider_outage_degrades_the_mailbox_serves_its_still_valid_token_and_recovers() {
    both(|db| {
        let hook = Webhook::start(0);
        // 20 s tokens: fresh for 10 s, valid for 20.
        let mut s = Setup::new(db, &[("ACCESS_TOKEN_TTL", "20")]);
        with_webhook(&s, &hook);
        let key = s.key(&["admin"], &[]);
        let node = s.start();
        let id = node.add_app_mailbox(&key, "outage@example.test");
        hook.wait_for("mailbox.connected", Duration::from_secs(10));
        let (_, first) = node.token(&key, &id);
        let first = first["access_token"].as_str().unwrap().to_owned();

        s.oauth.stop();
        std::thread::sleep(Duration::from_millis(11_200));
        let t = Instant::now();
        let (st, v) = node.token(&key, &id);
        assert_eq!(st, 200, "{db}: the still-valid token is served: {v}");
        assert_eq!(v["access_token"].as_str(), Some(first.as_str()), "{db}");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{db}: no retries while a valid token exists"
        );
        let m = mailbox(&node, &key, &id);
        assert_eq!(m["state"], "degraded", "{db}: {m}");
        let error = m["last_error"].as_str().unwrap();
        assert!(
            error.contains("token endpoint") && error.contains("fix:"),
            "{db}: {error}"
        );
        // In the cooldown the provider is not asked again: straight from memory.
        let t = Instant::now();
        let (st, _) = node.token(&key, &id);
        assert_eq!(st, 200, "{db}");
        assert!(t.elapsed() < Duration::from_millis(500), "{db}");

        s.oauth.restart();
        // The cooldown after one failure is 5 s.
        std::thread::sleep(Duration::from_secs(6));
        let (st, v) = node.token(&key, &id);
        assert_eq!(st, 200, "{db}: {v}");
        assert_ne!(v["access_token"].as_str(), Some(first.as_str()), "{db}");
        assert_eq!(mailbox(&node, &key, &id)["state"], "ok", "{db}");
        let ev = hook.wait_for("mailbox.recovered", Duration::from_secs(10));
        assert_eq!(
            ev["mailbox"]["id"].as_str(),
            Some(id.as_str()),
            "{db}: {ev}"
        );
        assert!(hook.deliveries().iter().all(signed_correctly), "{db}");
    });
}

#[test]
fn a_provider_outage_without_a_valid_token_is_503_with_retry_after_and_no_hammering() {
    both(|db| {
        let mut s = Setup::new(db, &[("ACCESS_TOKEN_TTL", "4")]);
        s.write_config("keep_fresh = false\n");
        let key = s.key(&["admin"], &[]);
        let node = s.start();
        let id = node.add_app_mailbox(&key, "down@example.test");
        s.oauth.stop();
        std::thread::sleep(Duration::from_secs(5));
        let (st, v) = node.token(&key, &id);
        assert_eq!(st, 503, "{db}: {v}");
        assert_eq!(v["error"], "unavailable", "{db}: {v}");
        assert!(
            v["fix"].as_str().unwrap().contains("Retry-After"),
            "{db}: {v}"
        );
        // The next caller within the cooldown is answered at once, with the time left.
        let t = Instant::now();
        let auth = format!("Bearer {key}");
        let (_, raw, _) = node.send(
            "GET",
            &format!("/v1/mailboxes/{id}/token"),
            &[("Authorization", &auth)],
            "",
        );
        assert!(t.elapsed() < Duration::from_millis(500), "{db}");
        let retry: i64 = raw
            .lines()
            .find_map(|l| l.strip_prefix("retry-after: "))
            .unwrap_or_else(|| panic!("{db}: no Retry-After: {raw}"))
            .trim()
            .parse()
            .unwrap();
        assert!((1..=5).contains(&retry), "{db}: {raw}");
        assert_eq!(mailbox(&node, &key, &id)["state"], "degraded", "{db}");
    });
}

#[test]
fn a_revoked_sign_in_is_login_required_with_a_re_consent_link_and_the_app_is_told() {
    both(|db| {
        // The first delivery fails: the outbox retries it with the same event id.
        let hook = Webhook::start(1);
        let mut s = Setup::new(db, &[("ACCESS_TOKEN_TTL", "4")]);
        with_webhook(&s, &hook);
        let key = s.key(&["admin"], &[]);
        let node = s.start();
        let link = connect_link(&node, &key, "bob@example.test");
        let b = browser::Browser::start();
        b.open(&link);
        b.click("button");
        b.wait_for_title("Mailbox connected");
        let connected = hook.wait_for("mailbox.connected", Duration::from_secs(30));
        let attempts: Vec<_> = hook
            .deliveries()
            .into_iter()
            .filter(|d| d.headers["mailoauth-event"] == "mailbox.connected")
            .collect();
        assert_eq!(attempts.len(), 2, "{db}: one failed, one retried");
        assert_eq!(
            attempts[0].headers["mailoauth-event-id"], attempts[1].headers["mailoauth-event-id"],
            "{db}: a retry keeps its event id"
        );
        assert_eq!(connected["mailbox"]["email"], "bob@example.test", "{db}");
        let id = connected["mailbox"]["id"].as_str().unwrap().to_owned();

        // The provider forgets every grant: the stored refresh token is refused.
        s.oauth.restart();
        std::thread::sleep(Duration::from_secs(3));
        let (st, v) = node.token(&key, &id);
        let reconnect = login_required_link(st, &v, db);
        let m = mailbox(&node, &key, &id);
        assert_eq!(m["state"], "login_required", "{db}: {m}");
        let ev = hook.wait_for("mailbox.login_required", Duration::from_secs(30));
        assert!(
            ev["error"].as_str().unwrap().contains("invalid_grant"),
            "{db}: {ev}"
        );

        // Asking again does not ask the provider again, and gives the same link.
        let grants = s.oauth.grant_requests("refresh_token");
        let (st, v) = node.token(&key, &id);
        assert_eq!(st, 424, "{db}");
        assert_eq!(
            v["reconnect_url"].as_str(),
            Some(reconnect.as_str()),
            "{db}"
        );
        assert_eq!(s.oauth.grant_requests("refresh_token"), grants, "{db}");

        // The owner opens the link and signs in: the same mailbox works again.
        b.open(&reconnect);
        assert_eq!(b.title(), "Connect your mailbox", "{db}");
        b.click("button");
        b.wait_for_title("Mailbox connected");
        let (st, v) = node.token(&key, &id);
        assert_eq!(st, 200, "{db}: {v}");
        let ev = hook.wait_for("mailbox.recovered", Duration::from_secs(30));
        assert_eq!(ev["mailbox"]["id"].as_str(), Some(id.as_str()), "{db}");
        assert!(
            hook.deliveries().iter().all(signed_correctly),
            "{db}: {:?}",
            hook.deliveries()
        );
        let ids: std::collections::HashSet<_> = hook
            .deliveries()
            .iter()
            .filter(|d| d.status == 200)
            .map(|d| d.headers["mailoauth-event-id"].clone())
            .collect();
        assert_eq!(
            ids.len(),
            hook.deliveries().iter().filter(|d| d.status == 200).count(),
            "{db}: each event is accepted once"
        );
        assert!(
            !node.log().contains(SECRET),
            "{db}: the secret is in the log"
        );
    });
}

#[test]
fn webhook_targets_must_be_https_or_loopback() {
    let s = Setup::new("sqlite", &[]);
    s.write_config(&format!(
        "webhooks = [\"http://hooks.example.com/x\"]\nwebhook_secret = \"{SECRET}\"\n"
    ));
    let out = s.command().output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("webhooks") && err.contains("HTTPS"), "{err}");
    s.write_config("webhooks = [\"https://hooks.example.com/x\"]\n");
    let out = s.command().output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("webhook_secret"), "{err}");
}

#[test]
fn a_mailbox_deleted_through_one_node_is_no_longer_served_by_another() {
    both(|db| {
        let s = Setup::new(db, &[]);
        let key = s.key(&["admin"], &[]);
        let n1 = s.start();
        let n2 = s.start_another();
        let id = n1.add_app_mailbox(&key, "gone@example.test");
        assert_eq!(n2.token(&key, &id).0, 200, "{db}: n2 holds it in memory");
        let (st, _) = n1.call("DELETE", &format!("/v1/mailboxes/{id}"), Some(&key), None);
        assert_eq!(st, 204, "{db}");
        assert_eq!(n1.token(&key, &id).0, 404, "{db}");
        // The other node notices within its 10 s sweep.
        let deadline = Instant::now() + Duration::from_secs(15);
        while n2.token(&key, &id).0 == 200 {
            assert!(Instant::now() < deadline, "{db}: still served after 15 s");
            std::thread::sleep(Duration::from_millis(500));
        }
        assert_eq!(n2.token(&key, &id).0, 404, "{db}");
    });
}
