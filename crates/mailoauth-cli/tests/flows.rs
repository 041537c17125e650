//! Every flow end to end against a real authorization server (oidc-provider), and
//! the token lifecycle promises of the spec: cached tokens without network, one
//! refresh for many callers, rotation persisted, login-required handling.

mod common;

use common::*;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn auth_code_pkce_login_then_cached_token_without_network() {
    let srv = OAuthServer::start(&[]);
    let sb = Sandbox::new(&accounts(&srv.issuer, "file"));
    let (out, url) = sb.login_with_browser("pub", BrowserMode::Follow);
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("signed in as alice@example.test"),
        "{}",
        stderr(&out)
    );
    // The URL carried PKCE S256, state and the login hint.
    for p in [
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
        "login_hint=alice%40example.test",
    ] {
        assert!(url.contains(p), "{p} missing in {url}");
    }
    assert_eq!(srv.token_requests(), 1, "one code exchange");

    let t = sb.run(&["token", "pub"]);
    assert_exit(&t, 0);
    let token = stdout(&t);
    assert!(
        token.ends_with('\n') && token.trim().lines().count() == 1,
        "only the token on stdout: {token:?}"
    );
    let c = claims(token.trim());
    assert_eq!(c["aud"], "https://outlook.test");
    assert_eq!(c["upn"], "alice@example.test");
    for _ in 0..5 {
        assert_eq!(stdout(&sb.run(&["token", "pub"])), token);
    }
    assert_eq!(
        srv.token_requests(),
        1,
        "cached tokens are served without any request"
    );

    // The store is a private file in the state dir.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(sb.token_file("pub"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn pasted_redirect_url_completes_login() {
    let srv = OAuthServer::start(&[]);
    let sb = Sandbox::new(&accounts(&srv.issuer, "file"));
    let (out, _) = sb.login_with_browser("pub", BrowserMode::Paste);
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("not the redirect address"),
        "garbage paste is explained: {}",
        stderr(&out)
    );
    assert_exit(&sb.run(&["token", "pub"]), 0);
}

#[test]
fn confidential_client_over_https_listener_with_secret_from_env() {
    let srv = OAuthServer::start(&[]);
    let sb = Sandbox::new(&accounts(&srv.issuer, "file"));
    let (out, url) = sb.login_with_browser("conf", BrowserMode::Follow);
    assert_exit(&out, 0);
    assert!(
        url.contains("redirect_uri=https%3A%2F%2Flocalhost%3A"),
        "{url}"
    );
    let t = sb.run(&["token", "conf"]);
    assert_exit(&t, 0);
    assert_eq!(claims(stdout(&t).trim())["upn"], "carol@example.test");
    // The secret came from the environment and never reached argv or output.
    assert!(!stderr(&out).contains("test-secret"));
}

#[test]
fn listener_rejects_wrong_state_and_path_then_accepts_one_valid_callback() {
    let srv = OAuthServer::start(&[]);
    let sb = Sandbox::new(&accounts(&srv.issuer, "file"));
    let (child, url, redirect) = login_without_browser(&sb);
    let curl = |u: &str| {
        let o = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", u])
            .output()
            .unwrap();
        stdout(&o)
    };
    assert_eq!(curl(&format!("{redirect}?code=forged&state=wrong")), "400");
    assert_eq!(curl(&redirect.replace("/callback", "/favicon.ico")), "404");
    assert_eq!(curl(&format!("{redirect}?code=forged")), "400");
    // The real sign-in still completes.
    let b = browser(&[&url]);
    assert!(b.status.success(), "{}", stderr(&b));
    let out = wait_output(child, Duration::from_secs(60));
    assert_exit(&out, 0);
    // A second callback finds nobody listening.
    assert_eq!(curl(&format!("{redirect}?code=again&state=x")), "000");
}

/// `login pub --no-browser` running: the process, the authorization URL it
/// printed, and the redirect URI its listener waits on.
fn login_without_browser(sb: &Sandbox) -> (std::process::Child, String, String) {
    let mut cmd = sb.cmd(&["login", "pub", "--no-browser", "--timeout", "60"]);
    cmd.stderr(Stdio::piped()).stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr_pipe = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr_pipe)
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with("http") {
                let _ = tx.send(line);
            }
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let redirect = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    (child, url, redirect)
}

#[test]
fn a_slow_loris_connection_does_not_hold_back_the_browser_callback() {
    let srv = OAuthServer::start(&[]);
    let sb = Sandbox::new(&accounts(&srv.issuer, "file"));
    let (child, url, redirect) = login_without_browser(&sb);
    let port = url::Url::parse(&redirect).unwrap().port().unwrap();
    // A client that sends a byte every 4 s: each read is within a 5 s timeout,
    // so a listener serving one connection at a time would wait on it forever.
    let loris = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickle = {
        let stop = stop.clone();
        let mut loris = loris.try_clone().unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            for b in b"GET /callback?state=x HTTP/1.1\r\n"
                .iter()
                .cycle()
                .take(15)
            {
                if stop.load(std::sync::atomic::Ordering::SeqCst) || loris.write_all(&[*b]).is_err()
                {
                    return;
                }
                std::thread::sleep(Duration::from_secs(4));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let b = browser(&[&url]);
    assert!(b.status.success(), "{}", stderr(&b));
    let out = wait_output(child, Duration::from_secs(60));
    assert_exit(&out, 0);
    // Well under the listener's 10 s per-connection deadline: the callback was
    // served beside the slow client, not after it.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "login took {:?} with a slow client connected",
        started.elapsed()
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    drop(loris);
    let _ = trickle.join();
}

#[test]
fn token_user_differs_from_account_user_is_an_error_and_nothing_is_stored() {
    let srv = OAuthServer::start(&[("LOGIN_AS", "mallory@example.test")]);
    let sb = Sandbox::new(&accounts(&srv.issuer, "file"));
    let (out, _) = sb.login_with_browser("pub", BrowserMode::Follow);
    assert_exit(&out, 1);
    let e = stderr(&out);
    assert!(
        e.contains("mallory@example.test") && e.contains("alice@example.test"),
        "{e}"
    );
    assert!(
        e.contains("535 5.7.3"),
        "the fix names the symptom it prevents: {e}"
    );
    assert!(!sb.token_file("pub").exists());
}

/// An account of an authorization server whose token answers name nobody (no
/// id token, opaque access tokens), with `extra` keys (`issuer`, `userinfo_url`).
fn nameless_server_account(issuer: &str, extra: &str) -> String {
    format!(
        "[accounts.x]\nprovider = \"custom\"\nuser = \"alice@example.test\"\nclient_id = \"native-public\"\n\
         authorize_url = \"{issuer}/auth\"\ntoken_url = \"{issuer}/token\"\nredirect_uri = \"http://127.0.0.1/callback\"\n\
         scopes = [\"email\", \"offline_access\"]\nstore = \"file\"\n{extra}"
    )
}

#[test]
fn a_sign_in_as_another_user_is_refused_when_userinfo_names_them() {
    let srv = OAuthServer::start(&[("NO_ID_TOKEN", "1"), ("LOGIN_AS", "bob@example.test")]);
    // Found through OIDC discovery, and configured directly.
    for extra in [
        format!("issuer = \"{}\"\n", srv.issuer),
        format!("userinfo_url = \"{}/me\"\n", srv.issuer),
    ] {
        let sb = Sandbox::new(&nameless_server_account(&srv.issuer, &extra));
        let (out, url) = sb.login_with_browser("x", BrowserMode::Follow);
        assert!(
            url.contains("openid"),
            "userinfo needs openid in the scopes: {url}"
        );
        assert_exit(&out, 1);
        let e = stderr(&out);
        assert!(
            e.contains("signed in as `bob@example.test`, but account `x` is for `alice@example.test`; tokens were not stored"),
            "{extra}: {e}"
        );
        assert!(!sb.token_file("x").exists(), "{extra}");
    }
    // The right user is stored, with no warning.
    let srv = OAuthServer::start(&[("NO_ID_TOKEN", "1")]);
    let sb = Sandbox::new(&nameless_server_account(
        &srv.issuer,
        &format!("issuer = \"{}\"\n", srv.issuer),
    ));
    let (out, _) = sb.login_with_browser("x", BrowserMode::Follow);
    assert_exit(&out, 0);
    let e = stderr(&out);
    assert!(e.contains("signed in as alice@example.test"), "{e}");
    assert!(!e.contains("warning"), "{e}");
    assert_eq!(sb.record("x")["user"], "alice@example.test");
}

#[test]
fn a_sign_in_nobody_can_verify_is_stored_with_a_warning_naming_check() {
    let srv = OAuthServer::start(&[("NO_ID_TOKEN", "1"), ("LOGIN_AS", "bob@example.test")]);
    let sb = Sandbox::new(&nameless_server_account(&srv.issuer, ""));
    let (out, _) = sb.login_with_browser("x", BrowserMode::Follow);
    assert_exit(&out, 0);
    let e = stderr(&out);
    assert!(
        e.contains("warning: could not verify that the sign-in was as `alice@example.test`"),
        "{e}"
    );
    assert!(e.contains("no `userinfo_url` or `issuer`"), "{e}");
    assert!(e.contains("`mailoauth check x`"), "{e}");
    assert!(sb.record("x").get("user").is_none());
}

#[test]
fn device_flow_end_to_end_and_declined() {
    // The device page has no login hint: the person signs in as whoever they are.
    let srv = OAuthServer::start(&[("DEVICE_INTERVAL", "1"), ("LOGIN_AS", "dave@example.test")]);
    let sb = Sandbox::new(&accounts(&srv.issuer, "file"));
    for deny in [false, true] {
        let mut cmd = sb.cmd(&["login", "dev"]);
        cmd.stderr(Stdio::piped()).stdout(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stderr_pipe = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let log2 = log.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr_pipe)
                .lines()
                .map_while(Result::ok)
            {
                log2.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        // Contract: the verification URI and the user code, each alone on its line.
        let mut uri = None;
        let mut code = None;
        while code.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("device prompt");
            if line.starts_with("http") {
                uri = Some(line);
            } else if uri.is_some() && !line.contains(' ') && !line.is_empty() {
                code = Some(line);
            }
        }
        assert_eq!(uri.unwrap(), format!("{}/device", srv.issuer));
        let mut args = vec!["--device", &srv.issuer, code.as_deref().unwrap()];
        if deny {
            args.push("--deny");
        }
        let b = browser(&args);
        assert!(
            b.status.success(),
            "{args:?}: {}\n{}\n{}",
            stderr(&b),
            log.lock().unwrap().join("\n"),
            srv.log()
        );
        let out = wait_output(child, Duration::from_secs(60));
        // The last lines may still be on their way through the reader thread.
        reader.join().unwrap();
        let all = log.lock().unwrap().join("\n");
        if deny {
            assert_exit(&out, 1);
            assert!(all.contains("declined"), "{all}");
        } else {
            assert_eq!(out.status.code(), Some(0), "{all}");
            let t = sb.run(&["token", "dev"]);
            assert_exit(&t, 0);
            assert_eq!(claims(stdout(&t).trim())["upn"], "dave@example.test");
        }
    }
}

#[test]
fn client_credentials_with_secret_and_with_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
    need("openssl", "apt-get install -y openssl");
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=mailoauth-test",
            "-days",
            "2",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let srv = OAuthServer::start(&[("APP_CERT_PEM", cert.to_str().unwrap())]);
    let config = format!(
        "{}\n[accounts.appcert]\nprovider = \"custom\"\nuser = \"shared@example.test\"\nclient_id = \"app-cert\"\n\
         flow = \"client-credentials\"\ntoken_url = \"{}/token\"\nscopes = [\"https://outlook.test/.default\"]\n\
         client_certificate = \"{}\"\nclient_key = \"{}\"\nstore = \"file\"\n",
        accounts(&srv.issuer, "file"),
        srv.issuer,
        cert.display(),
        key.display()
    );
    let sb = Sandbox::new(&config);
    for name in ["app", "appcert"] {
        // No login needed: the first `token` requests one, the second is cached.
        let t = sb.run(&["token", name]);
        assert_exit(&t, 0);
        let c = claims(stdout(&t).trim());
        assert_eq!(c["aud"], "https://outlook.test", "{name}");
        assert!(
            c["roles"].as_str().unwrap().contains("IMAP.AccessAsApp"),
            "{c}"
        );
        assert_eq!(stdout(&sb.run(&["token", name])), stdout(&t));
        assert!(sb.record(name).get("refresh_token").is_none());
    }
    assert_eq!(srv.grant_requests("client_credentials"), 2);
}

#[test]
fn refresh_rotates_and_every_rotated_token_is_persisted() {
    let srv = OAuthServer::start(&[]);
    let sb = Sandbox::new(&accounts(&srv.issuer, "file"));
    assert_exit(&sb.login_with_browser("pub", BrowserMode::Follow).0, 0);
    let mut last_rt = sb.record("pub")["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The server rotates strictly: replaying an old refresh token kills the grant,
    // so three successful refreshes in a row prove each rotation was stored.
    for _ in 0..3 {
        let before = stdout(&sb.run(&["token", "pub"]));
        assert_exit(&sb.run(&["refresh", "pub"]), 0);
        let rt = sb.record("pub")["refresh_token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_ne!(rt, last_rt, "a new refresh token was stored");
        assert_ne!(
            stdout(&sb.run(&["token", "pub"])),
            before,
            "a new access token is served"
        );
        last_rt = rt;
    }
    // `refresh-token` prints exactly the stored one.
    assert_eq!(stdout(&sb.run(&["refresh-token", "pub"])).trim(), last_rt);
    // A token near expiry is refreshed by `token` itself.
    sb.age_token("pub", "mail");
    let n = srv.grant_requests("refresh_token");
    assert_exit(&sb.run(&["token", "pub"]), 0);
    assert_eq!(srv.grant_requests("refresh_token"), n + 1);
}

#[test]
fn concurrent_callers_cause_one_refresh() {
    let srv = OAuthServer::start(&[("TOKEN_DELAY_MS", "300")]);
    let sb = Sandbox::new(&accounts(&srv.issuer, "file"));
    assert_exit(&sb.login_with_browser("pub", BrowserMode::Follow).0, 0);
    let old_rt = sb.record("pub")["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    sb.age_token("pub", "mail");
    let before = srv.grant_requests("refresh_token");
    let children: Vec<_> = (0..64)
        .map(|_| {
            let mut c = sb.cmd(&["token", "pub"]);
            c.stdout(Stdio::piped()).stderr(Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| wait_output(c, Duration::from_secs(120)))
        .collect();
    for o in &outs {
        assert_exit(o, 0);
    }
    let first = stdout(&outs[0]);
    assert!(
        outs.iter().all(|o| stdout(o) == first),
        "all callers got the same new token"
    );
    assert_eq!(
        srv.grant_requests("refresh_token") - before,
        1,
        "exactly one token-endpoint refresh"
    );
    let rt = sb.record("pub")["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(rt, old_rt, "the stored refresh token is the rotated one");
    assert_exit(&sb.run(&["refresh", "pub"]), 0);
}

#[test]
fn graph_resource_from_the_same_login() {
    let srv = OAuthServer::start(&[]);
    let sb = Sandbox::new(&accounts(&srv.issuer, "file"));
    assert_exit(&sb.login_with_browser("pub", BrowserMode::Follow).0, 0);
    let g = sb.run(&["token", "pub", "--resource", "graph"]);
    assert_exit(&g, 0);
    assert_eq!(claims(stdout(&g).trim())["aud"], "https://graph.test");
    let m = sb.run(&["token", "pub"]);
    assert_eq!(
        claims(stdout(&m).trim())["aud"],
        "https://outlook.test",
        "the mail token is kept apart"
    );
    let e = sb.run(&["token", "pub", "--resource", "calendar"]);
    assert_exit(&e, 2);
    assert!(stderr(&e).contains("graph"), "{}", stderr(&e));
}

#[test]
fn sasl_strings_carry_user_and_token() {
    use base64::Engine as _;
    let srv = OAuthServer::start(&[]);
    let sb = Sandbox::new(&accounts(&srv.issuer, "file"));
    assert_exit(&sb.run(&["token", "app"]), 0);
    let t = stdout(&sb.run(&["token", "app"])).trim().to_owned();
    let x = stdout(&sb.run(&["token", "app", "--sasl", "xoauth2"]));
    // The hand-parsed fast path and clap's path (`--sasl=…`, `-q`) agree.
    assert_eq!(
        stdout(&sb.run(&["-q", "token", "app", "--sasl=xoauth2"])),
        x
    );
    let dec = base64::engine::general_purpose::STANDARD
        .decode(x.trim())
        .unwrap();
    assert_eq!(
        dec,
        format!("user=shared@example.test\x01auth=Bearer {t}\x01\x01").into_bytes()
    );
    let o = stdout(&sb.run(&["token", "app", "--sasl", "oauthbearer"]));
    let dec = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(o.trim())
            .unwrap(),
    )
    .unwrap();
    assert!(
        dec.starts_with("n,a=shared@example.test,\x01")
            && dec.ends_with(&format!("auth=Bearer {t}\x01\x01"))
    );
}

#[test]
fn replayed_refresh_token_means_login_required_exit_3_and_one_notification() {
    let srv = OAuthServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("notified");
    let config = accounts(&srv.issuer, "file").replacen(
        "store = \"file\"",
        &format!(
            "store = \"file\"\nnotify_command = \"echo \\\"$MAILOAUTH_ACCOUNT\\\" >> {}\"",
            marker.display()
        ),
        1,
    );
    let sb = Sandbox::new(&config);
    assert_exit(&sb.login_with_browser("pub", BrowserMode::Follow).0, 0);
    let stale = sb.record("pub");
    assert_exit(&sb.run(&["refresh", "pub"]), 0);
    // Simulate a lost rotation: put the used refresh token back.
    sb.write_record("pub", &stale);
    sb.age_token("pub", "mail");
    sb.write_record("pub", &{
        let mut r = sb.record("pub");
        r["access"]["mail"]["expires_at"] = (now() - 10).into();
        r
    });
    for _ in 0..2 {
        let t = sb.run(&["token", "pub"]);
        assert_exit(&t, 3);
        assert!(stderr(&t).contains("mailoauth login pub"), "{}", stderr(&t));
        assert!(stdout(&t).is_empty());
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "pub\n",
        "notify_command ran once"
    );
    let st = sb.run(&["status", "pub", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&st)).unwrap();
    assert!(
        v["accounts"][0]["login_required"]
            .as_str()
            .unwrap()
            .contains("invalid_grant"),
        "{v}"
    );
    // A new login clears it.
    assert_exit(&sb.login_with_browser("pub", BrowserMode::Follow).0, 0);
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&sb.run(&["status", "pub", "--json"]))).unwrap();
    assert!(v["accounts"][0]["login_required"].is_null(), "{v}");
}

#[test]
fn no_token_yet_is_exit_3() {
    let srv = OAuthServer::start(&[]);
    let sb = Sandbox::new(&accounts(&srv.issuer, "file"));
    let t = sb.run(&["token", "pub"]);
    assert_exit(&t, 3);
    assert!(
        stderr(&t).contains("run `mailoauth login pub`"),
        "{}",
        stderr(&t)
    );
    assert_eq!(srv.token_requests(), 0);
}

#[test]
fn logout_revokes_and_deletes() {
    let srv = OAuthServer::start(&[]);
    let sb = Sandbox::new(&accounts(&srv.issuer, "file"));
    assert_exit(&sb.login_with_browser("pub", BrowserMode::Follow).0, 0);
    let rt = sb.record("pub")["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = sb.run(&["logout", "pub", "--json"]);
    assert_exit(&out, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["revoked"], true, "{v}");
    assert!(!sb.token_file("pub").exists());
    // The server no longer accepts the refresh token.
    let o = std::process::Command::new("curl")
        .args([
            "-s",
            "-d",
            "grant_type=refresh_token",
            "-d",
            "client_id=native-public",
        ])
        .arg("-d")
        .arg(format!("refresh_token={rt}"))
        .arg(format!("{}/token", srv.issuer))
        .output()
        .unwrap();
    assert!(stdout(&o).contains("invalid_grant"), "{}", stdout(&o));
    assert_exit(&sb.run(&["token", "pub"]), 3);
}

#[test]
fn status_and_inspect_report_the_token() {
    let srv = OAuthServer::start(&[]);
    let sb = Sandbox::new(&accounts(&srv.issuer, "file"));
    assert_exit(&sb.login_with_browser("pub", BrowserMode::Follow).0, 0);
    let st = sb.run(&["status", "--json"]);
    assert_exit(&st, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&st)).unwrap();
    let pubacct = v["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == "pub")
        .unwrap();
    assert!(
        pubacct["store"].as_str().unwrap().starts_with("file "),
        "{pubacct}"
    );
    assert!(pubacct["has_refresh_token"].as_bool().unwrap());
    assert!(
        pubacct["access_tokens"][0]["valid_seconds"]
            .as_i64()
            .unwrap()
            > 3000
    );
    let human = stdout(&sb.run(&["status", "pub"]));
    assert!(
        human.contains("valid for") && human.contains("refresh token:  received"),
        "{human}"
    );

    let i = sb.run(&["inspect", "pub", "--json"]);
    assert_exit(&i, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&i)).unwrap();
    assert_eq!(v["audience"], "https://outlook.test");
    assert_eq!(v["user"], "alice@example.test");
    assert_eq!(v["warnings"].as_array().unwrap().len(), 0, "{v}");
    // A Graph token checked against the mail resource is flagged.
    assert_exit(&sb.run(&["token", "pub", "--resource", "graph"]), 0);
    let mut r = sb.record("pub");
    r["access"]["mail"] = r["access"]["graph"].clone();
    sb.write_record("pub", &r);
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&sb.run(&["inspect", "pub", "--json"]))).unwrap();
    let w = v["warnings"].to_string();
    assert!(
        w.contains("audience is https://graph.test") && w.contains("IMAP.AccessAsUser.All"),
        "{w}"
    );
}
