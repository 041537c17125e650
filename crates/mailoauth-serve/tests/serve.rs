//! `mailoauth-serve` end to end: the real executable, the real authorization
//! server (oidc-provider), SQLite and a private PostgreSQL cluster made by the
//! test. Each behaviour runs against both databases.

#[path = "support/browser.rs"]
mod browser;
#[path = "../../mailoauth-cli/tests/common/oauth_server.rs"]
mod oauth_server;

#[path = "support/harness.rs"]
mod harness;

use std::path::Path;
use std::time::{Duration, Instant};

use harness::*;
use oauth_server::need;

#[test]
fn an_app_mailbox_gets_tokens_and_the_second_comes_from_memory() {
    both(|db| {
        let s = Setup::new(db, &[]);
        let key = s.key(
            &["accounts:write", "accounts:read", "token:read", "admin"],
            &[],
        );
        let node = s.start();
        let id = node.add_app_mailbox(&key, "shared@example.test");
        let grants = s.oauth.grant_requests("client_credentials");
        let (st, first) = node.token(&key, &id);
        assert_eq!(st, 200, "{first}");
        assert_eq!(first["user"], "shared@example.test");
        assert!(first["expires_at"].as_i64().unwrap() > mailoauth::clock::now());
        let (_, second) = node.call(
            "GET",
            &format!("/v1/mailboxes/{id}/token?sasl=xoauth2"),
            Some(&key),
            None,
        );
        assert_eq!(
            second["access_token"], first["access_token"],
            "{db}: from memory"
        );
        assert_eq!(
            s.oauth.grant_requests("client_credentials"),
            grants,
            "{db}: no provider request"
        );
        let sasl = base64_decode(second["sasl"].as_str().unwrap());
        assert_eq!(
            sasl,
            format!(
                "user=shared@example.test\x01auth=Bearer {}\x01\x01",
                first["access_token"].as_str().unwrap()
            )
        );
        // Every hand-out is audited (within a second), without the token.
        std::thread::sleep(Duration::from_millis(1500));
        let (_, audit) = node.call("GET", "/v1/audit", Some(&key), None);
        let entries = audit["entries"].as_array().unwrap();
        // Two hand-outs: one row each, or one row counting both when they
        // fell in the same second.
        let counted: i64 = entries.iter().map(|e| e["count"].as_i64().unwrap()).sum();
        assert_eq!(counted, 2, "{db}: {audit}");
        assert!(
            !audit
                .to_string()
                .contains(first["access_token"].as_str().unwrap())
        );
    });
}

#[test]
fn tokens_are_encrypted_at_rest() {
    both(|db| {
        let s = Setup::new(db, &[]);
        let key = s.key(&["admin"], &[]);
        let node = s.start();
        let id = node.add_app_mailbox(&key, "shared@example.test");
        let (_, t) = node.token(&key, &id);
        let token = t["access_token"].as_str().unwrap();
        let stored = s.stored();
        assert!(!stored.is_empty(), "{db}: nothing read from the database");
        // Neither the token nor a part of its payload is in the stored bytes.
        assert!(
            !stored.contains(&token[token.len() - 40..]),
            "{db}: token stored in clear"
        );
        assert!(!stored.contains("shared@example.test\",\"access"), "{db}");
        assert!(!stored.contains(&key), "{db}: API key stored in clear");
        if let Database::Sqlite = s.db {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(s.sqlite_file())
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600, "the database file is private");
        }
    });
}

#[test]
fn a_wrong_master_key_refuses_to_start_and_changes_nothing() {
    both(|db| {
        let s = Setup::new(db, &[]);
        let key = s.key(&["admin"], &[]);
        {
            let node = s.start();
            node.add_app_mailbox(&key, "shared@example.test");
        }
        let before = s.dump();
        // The generated key file is gone: no new key is made over existing data.
        let key_file = s.dir.path().join("state/mailoauth/serve.key");
        let saved = std::fs::read(&key_file).unwrap();
        std::fs::remove_file(&key_file).unwrap();
        let out = s.command().output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{db}: started without its key");
        assert!(
            err.contains("master key file") && err.contains("restore"),
            "{db}: {err}"
        );
        assert!(!key_file.exists(), "{db}: a new key file was made");
        // Another key: refused, naming both key ids, nothing written.
        s.write_config("master_key = { env = \"MK\" }\n");
        let other = String::from_utf8(s.command().arg("keygen").output().unwrap().stdout).unwrap();
        let out = s.command().env("MK", other.trim()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{db}: started with a wrong key");
        assert!(
            err.contains("is not the one") && err.contains("nothing was changed"),
            "{db}: {err}"
        );
        assert!(!err.contains(other.trim()), "{db}: the key is echoed");
        assert!(s.dump() == before, "{db}: the database changed");
        // The right key (from the restored file) still opens everything.
        s.write_config("");
        std::fs::write(&key_file, saved).unwrap();
        let node = s.start();
        let (_, list) = node.call("GET", "/v1/mailboxes", Some(&key), None);
        let id = list["mailboxes"][0]["id"].as_str().unwrap().to_owned();
        let (st, t) = node.token(&key, &id);
        assert_eq!(st, 200, "{db}: {t}");
    });
}

#[test]
fn api_keys_are_checked_for_scope_and_mailbox() {
    both(|db| {
        let s = Setup::new(db, &[]);
        let admin = s.key(&["admin"], &[]);
        let node = s.start();
        let a = node.add_app_mailbox(&admin, "a@example.test");
        let b = node.add_app_mailbox(&admin, "b@example.test");
        let reader = s.key(&["accounts:read"], &[]);
        let only_a = s.key(&["token:read"], &[&a]);
        let path = |id: &str| format!("/v1/mailboxes/{id}/token");
        assert_eq!(
            node.call("GET", &path(&a), None, None).0,
            401,
            "{db}: no key"
        );
        assert_eq!(
            node.call("GET", &path(&a), Some("mos_forged"), None).0,
            401,
            "{db}: forged key"
        );
        let (st, v) = node.call("GET", &path(&a), Some(&reader), None);
        assert_eq!(st, 403, "{db}: {v}");
        assert!(v["fix"].as_str().unwrap().contains("token:read"), "{v}");
        assert_eq!(
            node.call("GET", &path(&a), Some(&only_a), None).0,
            200,
            "{db}"
        );
        assert_eq!(
            node.call("GET", &path(&b), Some(&only_a), None).0,
            404,
            "{db}: another mailbox"
        );
        for id in [
            "nope",
            "x'%20OR%20'1'='1",
            "%27%3B%20DROP%20TABLE%20mailboxes%3B--",
        ] {
            let (st, v) = node.call("GET", &path(id), Some(&admin), None);
            assert_eq!(st, 404, "{db}: {id}: {v}");
        }
        let (st, _) = node.call("GET", "/v1/mailboxes", Some(&admin), None);
        assert_eq!(st, 200, "{db}: the table survived");
        let big = serde_json::json!({"connector": "apps", "email": "x".repeat(100_000)});
        assert_eq!(
            node.call("POST", "/v1/mailboxes", Some(&admin), Some(&big))
                .0,
            413,
            "{db}: oversized body"
        );
        let bad = serde_json::json!({"connector": "apps", "email": "a@example.test>\r\nRSET"});
        assert_eq!(
            node.call("POST", "/v1/mailboxes", Some(&admin), Some(&bad))
                .0,
            400,
            "{db}"
        );
        let unknown = serde_json::json!({"connector": "nope", "email": "c@example.test"});
        let (st, v) = node.call("POST", "/v1/mailboxes", Some(&admin), Some(&unknown));
        assert_eq!(st, 400, "{db}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains("apps"),
            "names the known connectors: {v}"
        );
        assert!(!node.log().contains(&admin), "{db}: the key is in the log");
    });
}

#[test]
fn two_nodes_and_many_callers_refresh_a_low_token_once() {
    both(|db| {
        // 8 s tokens are fresh for their first half; times are whole seconds, so
        // after 5.2 s every caller needs a new one, which stays fresh for the rest.
        let s = Setup::new(db, &[("ACCESS_TOKEN_TTL", "8")]);
        // Only requests refresh here: the background refresher would renew
        // the short tokens itself (its own test is in tests/refresh.rs).
        s.write_config("keep_fresh = false\n");
        let key = s.key(&["admin"], &[]);
        let n1 = s.start();
        let n2 = s.start_another();
        let id = n1.add_app_mailbox(&key, "shared@example.test");
        let (_, old) = n1.call(
            "GET",
            &format!("/v1/mailboxes/{id}/token"),
            Some(&key),
            None,
        );
        std::thread::sleep(Duration::from_millis(5200));
        let before = s.oauth.grant_requests("client_credentials");
        let t = Instant::now();
        let tokens = concurrent_tokens(&[&n1, &n2], 100, &key, &id);
        let after = s.oauth.grant_requests("client_credentials");
        assert_eq!(
            after - before,
            1,
            "{db}: one grant for 100 callers on 2 nodes (took {:?})",
            t.elapsed()
        );
        assert!(
            tokens.iter().all(|t| t == &tokens[0]),
            "{db}: everyone got the new token"
        );
        assert_ne!(tokens[0], old["access_token"].as_str().unwrap(), "{db}");
    });
}

#[test]
fn a_person_connects_a_mailbox_in_a_real_browser_and_the_app_gets_its_tokens() {
    both(|db| {
        let s = Setup::new(db, &[]);
        let key = s.key(&["admin"], &[]);
        let node = s.start();
        let link = connect_link(&node, &key, "alice@example.test");
        let b = browser::Browser::start();
        b.open(&link);
        assert_eq!(b.title(), "Connect your mailbox", "{db}");
        let text = b.text();
        assert!(
            text.contains("alice@example.test") && text.contains("IMAP.AccessAsUser.All"),
            "{db}: {text}"
        );
        // Keyboard only: focus the one button and press Enter.
        b.keys("button", "\u{E007}");
        b.wait_for_title("Mailbox connected");
        assert!(b.text().contains("alice@example.test"), "{db}");
        let callback = b.url();
        assert!(callback.contains("/oauth/callback?"), "{db}: {callback}");
        assert!(!b.text().contains("code="), "{db}: the page shows no code");

        let (_, list) = node.call("GET", "/v1/mailboxes", Some(&key), None);
        let m = &list["mailboxes"][0];
        assert_eq!(
            (m["email"].as_str(), m["kind"].as_str(), m["state"].as_str()),
            (Some("alice@example.test"), Some("delegated"), Some("ok")),
            "{db}: {list}"
        );
        let id = m["id"].as_str().unwrap();
        let (st, t) = node.token(&key, id);
        assert_eq!(st, 200, "{db}: {t}");
        assert_eq!(t["user"], "alice@example.test");

        // The link is single-use, and the provider's answer cannot be replayed.
        b.open(&link);
        assert_eq!(b.title(), "This link was used already", "{db}");
        b.open(&callback);
        assert_eq!(b.title(), "This sign-in is not known", "{db}");
        // A forged link.
        b.open(&format!("{}x", &link[..link.len() - 1]));
        assert_eq!(b.title(), "This link does not work", "{db}");
        // An expired one.
        let old = connect_link(&node, &key, "alice@example.test");
        s.sql("UPDATE connect_links SET expires_at = 0 WHERE used_at IS NULL");
        b.open(&old);
        assert_eq!(b.title(), "This link has expired", "{db}");
        // A re-consent link for the same mailbox keeps its id and replaces its tokens.
        let again = connect_link(&node, &key, "alice@example.test");
        b.open(&again);
        b.click("button");
        b.wait_for_title("Mailbox connected");
        let (_, list) = node.call("GET", "/v1/mailboxes", Some(&key), None);
        assert_eq!(
            list["mailboxes"].as_array().unwrap().len(),
            1,
            "{db}: {list}"
        );
        assert_eq!(list["mailboxes"][0]["id"].as_str(), Some(id), "{db}");
    });
}

#[test]
fn signing_in_as_another_user_is_refused_and_stores_nothing() {
    both(|db| {
        let s = Setup::new(db, &[("LOGIN_AS", "mallory@example.test")]);
        let key = s.key(&["admin"], &[]);
        let node = s.start();
        let link = connect_link(&node, &key, "alice@example.test");
        let b = browser::Browser::start();
        b.open(&link);
        b.click("button");
        b.wait_for_title("You signed in as another user");
        let text = b.text();
        assert!(
            text.contains("alice@example.test") && text.contains("mallory@example.test"),
            "{db}: {text}"
        );
        assert!(text.contains("Nothing was stored"), "{db}: {text}");
        let (_, list) = node.call("GET", "/v1/mailboxes", Some(&key), None);
        assert_eq!(
            list["mailboxes"].as_array().unwrap().len(),
            0,
            "{db}: {list}"
        );
        // The link still works for the right person.
        b.open(&link);
        assert_eq!(b.title(), "Connect your mailbox", "{db}");
    });
}

#[test]
fn postgres_and_node_are_installed() {
    // The suite's own servers: a missing one fails here with the fix.
    need("node", "apt-get install -y nodejs npm");
    need("runuser", "apt-get install -y util-linux");
    assert!(
        Path::new(PG_BIN).join("initdb").exists(),
        "apt-get install -y postgresql"
    );
}
