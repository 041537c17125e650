//! Several nodes on one PostgreSQL: one refresh for many callers, and what a
//! node's death at each point of a refresh leaves behind. PostgreSQL only —
//! the embedded SQLite is one node's database. Tokens are checked where they
//! are used: on the real Dovecot, whose login validates them.

#[path = "support/browser.rs"]
mod browser;
#[path = "support/harness.rs"]
mod harness;
#[path = "../../mailoauth-cli/tests/common/oauth_server.rs"]
mod oauth_server;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use harness::*;

const USER: &str = "alice@example.test";

/// A PostgreSQL setup with 8 s tokens (fresh for their first 4 s), refreshes by
/// request only, 3 s leases, and alice connected through the browser on the
/// first node; that node is stopped.
fn connected(oauth_env: &[(&str, &str)]) -> (Setup, String, String) {
    let s = Setup::new(
        "postgres",
        &[&[("ACCESS_TOKEN_TTL", "8")], oauth_env].concat(),
    );
    s.write_config("keep_fresh = false\nlease_ttl = 3\n");
    let key = s.key(&["admin"], &[]);
    let node = s.start();
    let link = connect_link(&node, &key, USER);
    let b = browser::Browser::start();
    b.open(&link);
    b.click("button");
    b.wait_for_title("Mailbox connected");
    let (_, list) = node.call("GET", "/v1/mailboxes", Some(&key), None);
    let id = list["mailboxes"][0]["id"].as_str().unwrap().to_owned();
    (s, key, id)
}

fn state(node: &Node, key: &str, id: &str) -> String {
    let (_, m) = node.call("GET", &format!("/v1/mailboxes/{id}"), Some(key), None);
    m["state"].as_str().unwrap().to_owned()
}

#[test]
fn two_nodes_and_200_callers_of_a_low_delegated_token_refresh_once_and_every_token_opens_dovecot() {
    let (s, key, id) = connected(&[]);
    let mail = Dovecot::start(&s.oauth.issuer);
    let n1 = s.start_another();
    let n2 = s.start_another();
    let (_, first) = n1.token(&key, &id);
    mail.opens(USER, first["access_token"].as_str().unwrap())
        .unwrap();
    std::thread::sleep(Duration::from_millis(5200));
    let before = s.oauth.grant_requests("refresh_token");
    let t = Instant::now();
    let tokens = concurrent_tokens(&[&n1, &n2], 200, &key, &id);
    let took = t.elapsed();
    assert_eq!(
        s.oauth.grant_requests("refresh_token") - before,
        1,
        "one refresh for 200 callers on 2 nodes (took {took:?}); n1: {} n2: {}",
        n1.log(),
        n2.log()
    );
    let distinct: HashSet<_> = tokens.iter().collect();
    assert_eq!(distinct.len(), 1, "everyone got the new token");
    assert_ne!(tokens[0], first["access_token"].as_str().unwrap());
    for t in distinct {
        mail.opens(USER, t).unwrap();
    }
    // The rotated refresh token is the stored one: the provider rotates
    // strictly (a used one is refused), and the next refresh works.
    std::thread::sleep(Duration::from_millis(5200));
    let (st, v) = n2.token(&key, &id);
    assert_eq!(st, 200, "{v}");
    mail.opens(USER, v["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(s.oauth.grant_requests("refresh_token") - before, 2);
    assert_eq!(state(&n2, &key, &id), "ok");
}

#[test]
fn a_node_killed_before_its_token_request_leaves_the_refresh_to_the_next_node() {
    // The provider waits 3 s before it handles a token request, and drops one
    // whose client went away: the node dies with the lease taken and the
    // request not yet acted on.
    let (s, key, id) = connected(&[("TOKEN_DELAY_MS", "3000")]);
    let mail = Dovecot::start(&s.oauth.issuer);
    let mut doomed = s.start_another();
    let other = s.start_another();
    std::thread::sleep(Duration::from_millis(5200));
    let path = format!("/v1/mailboxes/{id}/token");
    std::thread::scope(|sc| {
        let (addr, path, key) = (doomed.addr.clone(), &path, &key);
        sc.spawn(move || {
            // Its answer never comes: the node is killed meanwhile.
            let _ = std::net::TcpStream::connect(addr).map(|mut c| {
                use std::io::Write;
                let _ = write!(
                    c,
                    "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n"
                );
                std::thread::sleep(Duration::from_secs(2));
            });
        });
        std::thread::sleep(Duration::from_millis(1000));
        doomed.kill();
    });
    let t = Instant::now();
    let (st, v) = other.token(&key, &id);
    assert_eq!(st, 200, "{v} {}", other.log());
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    mail.opens(USER, v["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(state(&other, &key, &id), "ok");
}

#[test]
fn a_node_killed_after_storing_the_rotated_token_loses_nothing() {
    let (s, key, id) = connected(&[]);
    let mail = Dovecot::start(&s.oauth.issuer);
    let mut doomed = s.start_another_with(&[("MAILOAUTH_SERVE_FAULT", "abort-after-save")]);
    let other = s.start_another();
    std::thread::sleep(Duration::from_millis(5200));
    let before = s.oauth.grant_requests("refresh_token");
    let path = format!("/v1/mailboxes/{id}/token");
    let _ = std::panic::catch_unwind(|| doomed.call("GET", &path, Some(&key), None));
    assert!(doomed.exited(Duration::from_secs(10)), "{}", doomed.log());
    assert!(
        doomed.log().contains("dying at AfterSave"),
        "{}",
        doomed.log()
    );
    // The other node waits out the dead node's lease, then serves the stored
    // token: no second refresh.
    let (st, v) = other.token(&key, &id);
    assert_eq!(st, 200, "{v}");
    assert_eq!(s.oauth.grant_requests("refresh_token") - before, 1);
    mail.opens(USER, v["access_token"].as_str().unwrap())
        .unwrap();
    // And the stored refresh token is the rotated one: the next refresh works.
    std::thread::sleep(Duration::from_millis(5200));
    let (st, v) = other.token(&key, &id);
    assert_eq!(st, 200, "{v}");
    assert_eq!(s.oauth.grant_requests("refresh_token") - before, 2);
    assert_eq!(state(&other, &key, &id), "ok");
}

#[test]
fn a_node_killed_between_the_providers_rotation_and_the_store_ends_login_required() {
    // No client can save this window (BENCHMARKS.md, crash safety): the
    // provider rotated and forgot the old refresh token; the new one died with
    // the node. It must end as login_required with a re-consent link — never
    // as ok, never by reusing the stale token as if it worked.
    let (s, key, id) = connected(&[]);
    let mut doomed = s.start_another_with(&[("MAILOAUTH_SERVE_FAULT", "abort-before-save")]);
    let other = s.start_another();
    std::thread::sleep(Duration::from_millis(5200));
    let path = format!("/v1/mailboxes/{id}/token");
    let _ = std::panic::catch_unwind(|| doomed.call("GET", &path, Some(&key), None));
    assert!(doomed.exited(Duration::from_secs(10)), "{}", doomed.log());
    let (st, v) = other.token(&key, &id);
    login_required_link(st, &v, "after the kill");
    assert_eq!(state(&other, &key, &id), "login_required");
}
