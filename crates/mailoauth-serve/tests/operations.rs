//! The service's operations side end to end: `/metrics`, `/v1/openapi.json`
//! and the admin page, on the real executable with the real authorization
//! server, against SQLite and PostgreSQL; the admin page in a real browser.

#[path = "support/browser.rs"]
mod browser;
#[path = "../../mailoauth-cli/tests/common/oauth_server.rs"]
mod oauth_server;

#[path = "support/harness.rs"]
mod harness;

use std::collections::BTreeSet;
use std::time::Duration;

use harness::*;
use serde_json::Value;

/// The value of one series in a Prometheus exposition (panics, showing it, if absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no `{series}` in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

fn scrape(node: &Node, headers: &[(&str, &str)]) -> (u16, String) {
    let (st, _, body) = node.send("GET", "/metrics", headers, "");
    (st, body)
}

#[test]
fn metrics_count_tokens_by_source_refreshes_by_outcome_and_mailboxes_by_state() {
    both(|db| {
        // 8 s tokens are fresh for their first half (see serve.rs): after 5.2 s
        // the next request refreshes at the provider.
        let s = Setup::new(db, &[("ACCESS_TOKEN_TTL", "8")]);
        // Only requests refresh here (the background refresher would renew
        // ahead of them and move the counts).
        s.write_config("keep_fresh = false\n");
        let admin = s.key(&["admin"], &[]);
        let reader = s.key(&["token:read", "accounts:read"], &[]);
        let node = s.start();
        // A loopback scraper of a service not behind a proxy needs no key.
        let (st, first) = scrape(&node, &[]);
        assert_eq!(st, 200, "{db}: {first}");
        assert_eq!(
            metric(&first, "mailoauth_tokens_served_total{from=\"memory\"}"),
            0.0
        );
        assert_eq!(metric(&first, "mailoauth_mailboxes{state=\"ok\"}"), 0.0);
        let id = node.add_app_mailbox(&admin, "shared@example.test");
        // The first through the broker (its row), the next two from memory.
        for _ in 0..3 {
            let (st, t) = node.token(&admin, &id);
            assert_eq!(st, 200, "{db}: {t}");
        }
        std::thread::sleep(Duration::from_millis(5200));
        let grants = s.oauth.grant_requests("client_credentials");
        let (st, t) = node.token(&admin, &id);
        assert_eq!(st, 200, "{db}: {t}");
        assert_eq!(
            s.oauth.grant_requests("client_credentials"),
            grants + 1,
            "{db}: refreshed"
        );
        let (_, m) = scrape(&node, &[]);
        let served = |from: &str| {
            metric(
                &m,
                &format!("mailoauth_tokens_served_total{{from=\"{from}\"}}"),
            )
        };
        assert_eq!(
            (served("memory"), served("refresh")),
            (2.0, 2.0),
            "{db}:\n{m}"
        );
        let outcome =
            |o: &str| metric(&m, &format!("mailoauth_refreshes_total{{outcome=\"{o}\"}}"));
        assert_eq!(outcome("ok"), 1.0, "{db}:\n{m}");
        for o in ["degraded", "login_required", "failed"] {
            assert_eq!(outcome(o), 0.0, "{db}: {o}");
        }
        let hist = "mailoauth_token_request_duration_seconds";
        assert_eq!(metric(&m, &format!("{hist}_count")), 4.0, "{db}");
        assert_eq!(
            metric(&m, &format!("{hist}_bucket{{le=\"+Inf\"}}")),
            4.0,
            "{db}"
        );
        assert!(
            metric(&m, &format!("{hist}_bucket{{le=\"1\"}}")) >= 2.0,
            "{db}: memory hits are fast:\n{m}"
        );
        assert!(metric(&m, &format!("{hist}_sum")) > 0.0, "{db}");
        // Over 5 s after the first scrape: the states were read again.
        assert_eq!(
            metric(&m, "mailoauth_mailboxes{state=\"ok\"}"),
            1.0,
            "{db}:\n{m}"
        );
        assert_eq!(
            metric(&m, "mailoauth_mailboxes{state=\"login_required\"}"),
            0.0
        );
        // Within 5 s the database is not asked again; after that it is.
        node.add_app_mailbox(&admin, "second@example.test");
        let (_, m) = scrape(&node, &[]);
        assert_eq!(
            metric(&m, "mailoauth_mailboxes{state=\"ok\"}"),
            1.0,
            "{db}: cached"
        );
        std::thread::sleep(Duration::from_millis(5100));
        let (_, m) = scrape(&node, &[]);
        assert_eq!(
            metric(&m, "mailoauth_mailboxes{state=\"ok\"}"),
            2.0,
            "{db}: read again"
        );
        // Keys: admin may, others may not, a forged one is unknown.
        let bearer = |k: &str| format!("Bearer {k}");
        assert_eq!(
            scrape(&node, &[("Authorization", &bearer(&admin))]).0,
            200,
            "{db}"
        );
        let (st, why) = scrape(&node, &[("Authorization", &bearer(&reader))]);
        assert_eq!(st, 403, "{db}: {why}");
        assert!(why.contains("admin"), "{why}");
        assert_eq!(
            scrape(&node, &[("Authorization", "Bearer mos_forged")]).0,
            401,
            "{db}"
        );
        let log = node.log();
        assert!(
            !log.contains(&admin) && !log.contains(&reader),
            "{db}: a key in the log"
        );
    });
}

#[test]
fn a_provider_outage_counts_as_a_degraded_refresh_and_a_degraded_mailbox() {
    both(|db| {
        let s = Setup::new(db, &[("ACCESS_TOKEN_TTL", "20")]);
        s.write_config("keep_fresh = false\n");
        let admin = s.key(&["admin"], &[]);
        let node = s.start();
        let id = node.add_app_mailbox(&admin, "shared@example.test");
        let (_, old) = node.token(&admin, &id);
        // The provider goes away. 20 s tokens are fresh while 10 s remain (whole
        // seconds); after 11.3 s the token is low, and still valid for more than
        // the 5 s the broker wants in order to serve it.
        drop(s.oauth);
        std::thread::sleep(Duration::from_millis(11_300));
        let (st, t) = node.token(&admin, &id);
        assert_eq!(st, 200, "{db}: the still-valid token is served: {t}");
        assert_eq!(t["access_token"], old["access_token"], "{db}");
        let (_, m) = scrape(&node, &[]);
        let outcome =
            |o: &str| metric(&m, &format!("mailoauth_refreshes_total{{outcome=\"{o}\"}}"));
        assert_eq!(
            (outcome("ok"), outcome("degraded")),
            (0.0, 1.0),
            "{db}:\n{m}"
        );
        assert_eq!(
            metric(&m, "mailoauth_mailboxes{state=\"degraded\"}"),
            1.0,
            "{db}:\n{m}"
        );
        assert_eq!(metric(&m, "mailoauth_mailboxes{state=\"ok\"}"), 0.0, "{db}");
    });
}

#[test]
fn metrics_need_an_admin_key_when_the_service_is_behind_a_proxy() {
    let s = Setup::new("sqlite", &[]);
    // A proxy on this host makes every outside request arrive from loopback.
    s.write_config("behind_proxy = [\"127.0.0.1\"]\n");
    let admin = s.key(&["admin"], &[]);
    let node = s.start();
    let (st, why) = scrape(&node, &[]);
    assert_eq!(st, 401, "{why}");
    assert!(why.contains("admin"), "{why}");
    let (st, m) = scrape(&node, &[("Authorization", &format!("Bearer {admin}"))]);
    assert_eq!(st, 200, "{m}");
    assert!(
        m.contains("# TYPE mailoauth_tokens_served_total counter"),
        "{m}"
    );
}

/// Every route the service's source registers under `/v1`, as (path, method):
/// read from the `.route(…)` calls of src/*.rs, so a route added without
/// documentation fails the test below.
fn v1_routes() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    let mut files = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(dir)];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    for file in files {
        let src = std::fs::read_to_string(file).unwrap();
        let mut rest = src.as_str();
        while let Some(i) = rest.find(".route(") {
            let after = &rest[i + ".route(".len()..];
            let mut depth = 1;
            let end = after
                .char_indices()
                .find_map(|(j, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    (depth == 0).then_some(j)
                })
                .expect("a closed .route( call");
            let call = &after[..end];
            let path = call.split('"').nth(1).expect("a route path literal");
            if path.starts_with("/v1") {
                for m in ["get", "post", "put", "patch", "delete"] {
                    let called = call.match_indices(&format!("{m}(")).any(|(i, _)| {
                        !call[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                    });
                    if called {
                        out.insert((path.to_owned(), m.to_owned()));
                    }
                }
            }
            rest = &after[end..];
        }
    }
    out
}

fn keys_of(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

#[test]
fn the_openapi_document_describes_every_v1_route_the_router_serves() {
    both(|db| {
        let s = Setup::new(db, &[]);
        let admin = s.key(&["admin"], &[]);
        let node = s.start();
        let (st, doc) = node.call("GET", "/v1/openapi.json", None, None);
        assert_eq!(st, 200, "{db}: no key needed: {doc}");
        assert_eq!(doc["openapi"], "3.1.0", "{db}");
        let scheme = &doc["components"]["securitySchemes"]["api_key"];
        assert_eq!(
            (scheme["type"].as_str(), scheme["scheme"].as_str()),
            (Some("http"), Some("bearer")),
            "{scheme}"
        );
        // `{error, message, fix}` always; `reconnect_url` with `login_required`.
        let error_body = &doc["components"]["schemas"]["ErrorBody"];
        let error_shape: BTreeSet<String> = error_body["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            error_shape,
            ["error", "fix", "message"].map(String::from).into(),
            "{db}"
        );
        assert!(
            error_body["properties"]["reconnect_url"].is_object(),
            "{error_body}"
        );

        // Served → documented, with its key requirement and path parameters.
        let served = v1_routes();
        assert!(
            served.len() >= 8,
            "the route reader found too few: {served:?}"
        );
        for (path, method) in &served {
            let op = &doc["paths"][path][method];
            assert!(
                op.is_object(),
                "{method} {path} is served but not in /v1/openapi.json: give its handler a \
                 #[utoipa::path] and list it in src/openapi.rs"
            );
            if path != "/v1/openapi.json" {
                let security = op["security"].to_string();
                assert!(security.contains("api_key"), "{method} {path}: {security}");
            }
            for name in path.split('{').skip(1).filter_map(|p| p.split('}').next()) {
                let declared = op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"));
                assert!(
                    declared,
                    "{method} {path}: path parameter `{name}` undocumented"
                );
            }
        }
        // Documented → served: without a key each answers 401 in the error shape.
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if path.starts_with("/v1") {
                    documented.insert((path.clone(), method.clone()));
                }
                if !path.starts_with("/v1") || path == "/v1/openapi.json" {
                    continue;
                }
                let concrete = path.replace("{id}", "mbx_none");
                let body = serde_json::json!({});
                let (st, v) = node.call(&method.to_uppercase(), &concrete, None, Some(&body));
                assert_eq!(st, 401, "{db}: {method} {path}: {v}");
                assert_eq!(keys_of(&v), error_shape, "{db}: {method} {path}: {v}");
            }
        }
        assert_eq!(documented, served, "{db}: documented but not served");
        let token_op = &doc["paths"]["/v1/mailboxes/{id}/token"]["get"];
        for q in ["resource", "sasl"] {
            assert!(
                token_op["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == q && p["in"] == "query"),
                "{token_op}"
            );
        }

        // The bodies carry exactly the keys their schemas name.
        let schema = |name: &str| keys_of(&doc["components"]["schemas"][name]["properties"]);
        let id = node.add_app_mailbox(&admin, "shared@example.test");
        let (_, t) = node.call(
            "GET",
            &format!("/v1/mailboxes/{id}/token?sasl=xoauth2"),
            Some(&admin),
            None,
        );
        assert_eq!(keys_of(&t), schema("TokenAnswer"), "{db}: {t}");
        let (_, m) = node.call("GET", &format!("/v1/mailboxes/{id}"), Some(&admin), None);
        assert_eq!(keys_of(&m), schema("Mailbox"), "{db}: {m}");
        let (_, list) = node.call("GET", "/v1/mailboxes", Some(&admin), None);
        assert_eq!(keys_of(&list), schema("MailboxList"), "{db}");
        // The audit entry of that hand-out, written within a second.
        std::thread::sleep(Duration::from_millis(1500));
        let (_, audit) = node.call("GET", "/v1/audit", Some(&admin), None);
        assert_eq!(keys_of(&audit), schema("AuditList"), "{db}: {audit}");
        assert_eq!(
            keys_of(&audit["entries"][0]),
            schema("AuditItem"),
            "{db}: {audit}"
        );
        let (st, bad) = node.call(
            "GET",
            &format!("/v1/mailboxes/{id}/token?resource=x"),
            Some(&admin),
            None,
        );
        assert_eq!(st, 400, "{db}");
        assert_eq!(keys_of(&bad), error_shape, "{db}: {bad}");
    });
}

const M365_CLIENT: &str = "11111111-2222-3333-4444-555555555555";

/// A Microsoft app-only connector besides the harness's two (its admin steps
/// are the core catalog's Entra and Exchange Online ones).
fn with_m365(s: &Setup) {
    s.write_config(&format!(
        "\n[serve.connectors.m365]\nprovider = \"microsoft\"\nclient_id = \"{M365_CLIENT}\"\n\
         client_secret = \"m365-secret-value\"\nflow = \"client-credentials\"\ntenant = \"contoso.example\"\n"
    ));
}

#[test]
fn an_admin_signs_in_sees_the_mailboxes_makes_a_re_consent_link_and_signs_out_in_a_real_browser() {
    both(|db| {
        let s = Setup::new(db, &[]);
        with_m365(&s);
        let admin = s.key(&["admin"], &[]);
        let reader = s.key(&["accounts:read", "token:read"], &[]);
        let node = s.start();
        let app_id = node.add_app_mailbox(&admin, "shared@example.test");
        // An Exchange app-only mailbox whose last refresh failed, with markup in its error.
        s.sql(
            "INSERT INTO mailboxes (id, connector, email, kind, state, last_error, created_at, updated_at) \
             VALUES ('mbx_m365room', 'm365', 'room@contoso.example', 'app', 'login_required', \
             '<script>alert(1)</script> AADSTS7000215: Invalid client secret provided', 1796316375, 1796316375)",
        );
        // A person connects a delegated mailbox through the connect journey.
        let b = browser::Browser::start();
        b.open(&connect_link(&node, &admin, "alice@example.test"));
        b.keys("button", "\u{E007}");
        b.wait_for_title("Mailbox connected");
        let (_, list) = node.call("GET", "/v1/mailboxes", Some(&admin), None);
        let alice = list["mailboxes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["email"] == "alice@example.test")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (_, t) = node.token(&admin, &alice);
        let token = t["access_token"].as_str().unwrap().to_owned();
        let mut sources = Vec::new();

        let admin_url = format!("http://{}/admin", node.addr);
        b.open(&admin_url);
        assert_eq!(b.title(), "Sign in to the admin page", "{db}");
        let session_cookie = |b: &browser::Browser| {
            b.cookies()
                .into_iter()
                .find(|c| c["name"] == "mailoauth_admin")
        };
        // Keys that do not open it: refused, nothing set.
        for (key, why) in [
            (reader.as_str(), "lacks the admin scope"),
            ("mos_forged", "not a key of this service"),
        ] {
            b.type_and_submit("#key", key);
            b.wait_for_title("This key does not open the admin page");
            assert!(b.text().contains(why), "{db}: {}", b.text());
            assert!(
                session_cookie(&b).is_none(),
                "{db}: a cookie was set for {why}"
            );
            sources.push(b.source());
        }
        // The admin key, with the keyboard alone.
        b.type_and_submit("#key", &admin);
        b.wait_for_title("Mailboxes");
        let cookie = session_cookie(&b).expect("a session cookie");
        assert_eq!(cookie["httpOnly"], true, "{cookie}");
        assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
        assert_eq!(cookie["path"], "/admin", "{cookie}");
        let session = cookie["value"].as_str().unwrap().to_owned();
        assert!(
            session.len() >= 40 && session != admin,
            "{db}: a random id, not the key"
        );

        let text = b.text();
        for want in [
            "alice@example.test",
            "shared@example.test",
            "room@contoso.example",
            &app_id,
            &alice,
            "delegated",
            "login_required",
            "2026-12-03 16:46:15 UTC",
            "Last refresh",
            "never",
            // The diagnosis, as text: escaped, not run.
            "<script>alert(1)</script> AADSTS7000215: Invalid client secret provided",
            // Admin steps from the core's catalog, filled in.
            &format!("New-ServicePrincipal -AppId {M365_CLIENT}"),
            "Add-MailboxPermission -Identity room@contoso.example",
            "The catalog has no administrator steps",
        ] {
            assert!(
                text.contains(want),
                "{db}: no `{want}` on the admin page:\n{text}"
            );
        }
        let source = b.source();
        assert!(
            !source.contains("<script>"),
            "{db}: markup from the database went through"
        );
        b.find("table caption");
        b.find("th[scope='col']");
        b.find("th[scope='row']");
        // App-only mailboxes have nobody to ask; delegated ones get a button.
        assert_eq!(
            source.matches("Make a re-consent link for ").count(),
            1,
            "{db}"
        );
        sources.push(source);

        // A re-consent link, made with the keyboard and opened: the journey again.
        b.keys(
            "button[aria-label='Make a re-consent link for alice@example.test']",
            "\u{E007}",
        );
        b.wait_for_title("Re-consent link made");
        sources.push(b.source());
        let link = b
            .attr("main a[href*='/connect/']", "href")
            .expect("the link");
        b.open(&link);
        assert_eq!(b.title(), "Connect your mailbox", "{db}");
        b.keys("button", "\u{E007}");
        b.wait_for_title("Mailbox connected");
        let (_, list) = node.call("GET", "/v1/mailboxes", Some(&admin), None);
        let same: Vec<_> = list["mailboxes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["email"] == "alice@example.test")
            .collect();
        assert_eq!(same.len(), 1, "{db}: {list}");
        assert_eq!(
            same[0]["id"].as_str(),
            Some(alice.as_str()),
            "{db}: same mailbox"
        );
        b.open(&link);
        assert_eq!(b.title(), "This link was used already", "{db}");

        // Still signed in; then out.
        b.open(&admin_url);
        assert_eq!(b.title(), "Mailboxes", "{db}");
        b.keys("header button", "\u{E007}");
        b.wait_for_title("Signed out");
        assert!(session_cookie(&b).is_none(), "{db}: the cookie is cleared");
        b.open(&admin_url);
        assert_eq!(b.title(), "Sign in to the admin page", "{db}");
        // The old session is over on the server too, and a forged one opens nothing.
        for forged in [
            session.as_str(),
            "Zm9yZ2VkLXNlc3Npb24taWQtdGhhdC1sb29rcy1yZWFs",
        ] {
            b.add_cookie("mailoauth_admin", forged, "/admin");
            b.open(&admin_url);
            assert_eq!(b.title(), "Sign in to the admin page", "{db}: {forged}");
            assert!(!b.text().contains("alice@example.test"), "{db}");
        }
        sources.push(b.source());

        // No secret on a page or in the log.
        let log = node.log();
        for secret in [
            admin.as_str(),
            reader.as_str(),
            token.as_str(),
            "m365-secret-value",
        ] {
            for (i, src) in sources.iter().enumerate() {
                assert!(!src.contains(secret), "{db}: a secret on admin page {i}");
            }
            assert!(!log.contains(secret), "{db}: a secret in the node log");
        }
        assert!(!log.contains(&session), "{db}: the session id in the log");
    });
}

/// The `Set-Cookie` line of a response head, if any.
fn set_cookie(head: &str) -> Option<String> {
    head.lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .map(|l| l["set-cookie:".len()..].trim().to_owned())
}

#[test]
fn admin_forms_refuse_other_sites_forged_sessions_and_keys_without_the_admin_scope() {
    both(|db| {
        let s = Setup::new(db, &[]);
        let admin = s.key(&["admin"], &[]);
        let limited = s.key(&["admin"], &["mbx_some"]);
        let writer = s.key(&["accounts:read", "accounts:write", "token:read"], &[]);
        let node = s.start();
        let ours = format!("http://{}", node.addr);
        let form = ("Content-Type", "application/x-www-form-urlencoded");
        let sign_in = |origin: Option<&str>, key: &str| {
            let mut h = vec![form];
            if let Some(o) = origin {
                h.push(("Origin", o));
            }
            node.send("POST", "/admin/sign-in", &h, &format!("key={key}"))
        };
        // Another site's form, or one that names no origin: refused, nothing set.
        for origin in [Some("https://evil.example"), Some("null"), None] {
            let (st, head, _) = sign_in(origin, &admin);
            assert_eq!(st, 403, "{db}: origin {origin:?}");
            assert!(set_cookie(&head).is_none(), "{db}: {head}");
        }
        // Keys that are not admin keys for every mailbox, and an unknown one.
        for (key, status) in [
            (writer.as_str(), 403),
            (limited.as_str(), 403),
            ("mos_forged", 401),
        ] {
            let (st, head, body) = sign_in(Some(&ours), key);
            assert_eq!(st, status, "{db}: {body}");
            assert!(set_cookie(&head).is_none(), "{db}: {head}");
            assert!(
                body.contains("This key does not open the admin page"),
                "{db}: {body}"
            );
        }
        // The admin key: a session cookie, not the key.
        let (st, head, _) = sign_in(Some(&ours), &admin);
        assert_eq!(st, 303, "{db}: {head}");
        let cookie = set_cookie(&head).expect("a session cookie");
        for attr in [
            "HttpOnly",
            "SameSite=Strict",
            "Path=/admin",
            "Max-Age=43200",
        ] {
            assert!(cookie.contains(attr), "{db}: {cookie}");
        }
        assert!(!cookie.contains(&admin), "{db}: the key in the cookie");
        let pair = cookie.split(';').next().unwrap().to_owned();
        let (st, head, page) = node.send("GET", "/admin", &[("Cookie", &pair)], "");
        assert_eq!(st, 200, "{db}");
        assert!(page.contains("<title>Mailboxes</title>"), "{db}: {page}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-security-policy: default-src 'none'"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("cache-control: no-store"),
            "{head}"
        );
        // Many mailboxes: pages of 200, those that need someone first.
        let rows: Vec<String> = (0..205)
            .map(|i| {
                let state = if i == 204 { "login_required" } else { "ok" };
                format!("('mbx_bulk{i:03}', 'people', 'user{i:03}@example.test', 'delegated', '{state}', {i}, {i})")
            })
            .collect();
        s.sql(&format!(
            "INSERT INTO mailboxes (id, connector, email, kind, state, created_at, updated_at) VALUES {}",
            rows.join(", ")
        ));
        let (_, _, first) = node.send("GET", "/admin", &[("Cookie", &pair)], "");
        assert!(
            first.contains("205 mailboxes, page 1 of 2"),
            "{db}: {first}"
        );
        let urgent = first
            .find("user204@example.test")
            .expect("the urgent one on page 1");
        assert!(
            urgent < first.find("user000@example.test").unwrap(),
            "{db}: urgent first"
        );
        assert!(
            first.contains("href=\"/admin?page=2\" rel=\"next\""),
            "{db}"
        );
        assert!(!first.contains("user199@example.test"), "{db}: 200 a page");
        let (_, _, second) = node.send("GET", "/admin?page=2", &[("Cookie", &pair)], "");
        assert!(
            second.contains("user199@example.test") && second.contains("rel=\"prev\""),
            "{db}"
        );
        let (st, _, _) = node.send("GET", "/admin?page=x'%20OR%201=1", &[("Cookie", &pair)], "");
        assert_eq!(st, 200, "{db}: a bad page number shows the first");
        // A forged session: the sign-in page, and the browser told to forget it.
        let forged = "mailoauth_admin=Zm9yZ2VkLXNlc3Npb24taWQtdGhhdC1sb29rcy1yZWFs";
        let (st, head, page) = node.send("GET", "/admin", &[("Cookie", forged)], "");
        assert_eq!(st, 200, "{db}");
        assert!(
            page.contains("<title>Sign in to the admin page</title>"),
            "{db}: {page}"
        );
        assert!(
            set_cookie(&head).is_some_and(|c| c.contains("Max-Age=0")),
            "{db}: {head}"
        );
        let reconsent = "/admin/mailboxes/mbx_none/reconsent";
        let (st, _, _) = node.send(
            "POST",
            reconsent,
            &[("Origin", &ours), ("Cookie", forged)],
            "",
        );
        assert_eq!(st, 401, "{db}: a forged session makes no link");
        // A real session, but the form came from elsewhere.
        let (st, _, _) = node.send(
            "POST",
            reconsent,
            &[("Origin", "https://evil.example"), ("Cookie", &pair)],
            "",
        );
        assert_eq!(st, 403, "{db}");
        let (st, _, _) = node.send(
            "POST",
            reconsent,
            &[("Origin", &ours), ("Cookie", &pair)],
            "",
        );
        assert_eq!(st, 404, "{db}: unknown mailbox");
        // Signed out: the same cookie opens nothing any more.
        let (st, _, _) = node.send(
            "POST",
            "/admin/sign-out",
            &[("Origin", &ours), ("Cookie", &pair)],
            "",
        );
        assert_eq!(st, 200, "{db}");
        let (_, _, page) = node.send("GET", "/admin", &[("Cookie", &pair)], "");
        assert!(
            page.contains("<title>Sign in to the admin page</title>"),
            "{db}"
        );
        let log = node.log();
        for secret in [
            admin.as_str(),
            limited.as_str(),
            writer.as_str(),
            &pair["mailoauth_admin=".len()..],
        ] {
            assert!(!log.contains(secret), "{db}: a secret in the node log");
        }
    });
}
