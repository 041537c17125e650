//! Failures real servers will not produce on demand, from a scripted token
//! endpoint (our own test double): Microsoft error bodies, HTML, a hanging
//! endpoint, 429 with Retry-After, 5xx while a token is still valid, an endpoint
//! that echoes secrets. Plus bad local input: corrupt config and store.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One scripted answer.
#[derive(Clone)]
enum Reply {
    Json(u16, String, Vec<(&'static str, String)>),
    Html(u16, &'static str),
    Hang,
    /// 400 with the request body inside a JSON `error_description` (`error` as given).
    EchoJson(&'static str),
    /// 500, the request body as plain text.
    EchoText,
}

/// A token endpoint that answers from a script (the last reply repeats) and
/// records every request body.
struct FakeEndpoint {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl FakeEndpoint {
    fn start(script: Vec<Reply>) -> FakeEndpoint {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/token", l.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let b2 = bodies.clone();
        std::thread::spawn(move || {
            let mut i = 0;
            for stream in l.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut len = 0usize;
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 && line.trim() != "" {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                b2.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
                let reply = script[i.min(script.len() - 1)].clone();
                i += 1;
                let body = String::from_utf8_lossy(&body).into_owned();
                let (status, ctype, text, headers) = match reply {
                    Reply::EchoJson(error) => (
                        400,
                        "application/json",
                        serde_json::json!({"error": error, "error_description": format!("bad request: {body}")})
                            .to_string(),
                        vec![],
                    ),
                    Reply::EchoText => (500, "text/plain", format!("cannot handle {body}"), vec![]),
                    Reply::Json(st, t, h) => (st, "application/json", t, h),
                    Reply::Html(st, t) => (st, "text/html", t.to_owned(), vec![]),
                    Reply::Hang => {
                        std::thread::spawn(move || {
                            std::thread::sleep(Duration::from_secs(120));
                            drop(s);
                        });
                        continue;
                    }
                };
                let extra: String = headers
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}\r\n"))
                    .collect();
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        FakeEndpoint { url, bodies }
    }

    fn requests(&self) -> usize {
        self.bodies.lock().unwrap().len()
    }
}

fn ok_token(n: u32) -> Reply {
    Reply::Json(
        200,
        format!(
            r#"{{"access_token":"AT-{n}","token_type":"Bearer","expires_in":3600,"refresh_token":"RT-{n}"}}"#
        ),
        vec![],
    )
}

/// A sandbox with account `ms` pointing at `url`, logged in with refresh token RT-0
/// and an access token that `valid` seconds from expiry.
fn sandbox(url: &str, valid: i64, extra: &str) -> Sandbox {
    let sb = Sandbox::new(&format!(
        "[accounts.ms]\nprovider = \"microsoft\"\nuser = \"alice@contoso.com\"\nclient_id = \"cid\"\n\
         client_secret = \"client-secret-value-42\"\ntoken_url = \"{url}\"\nstore = \"file\"\nhttp_timeout = 2\n{extra}"
    ));
    let now = now();
    let rec = serde_json::json!({
        "version": 1, "refresh_token": "RT-0-secret-refresh", "login_at": now - 100, "refresh_token_at": now - 100,
        "access": {"mail": {"token": "AT-0", "expires_at": now + valid, "obtained_at": now - 3600 + valid}}
    });
    std::fs::create_dir_all(sb.token_file("ms").parent().unwrap()).unwrap();
    sb.write_record("ms", &rec);
    sb
}

#[test]
fn aadsts_error_body_is_explained_and_marks_login_required() {
    let body = r#"{"error":"invalid_grant","error_description":"AADSTS700082: The refresh token has expired due to inactivity.","error_codes":[700082],"suberror":"bad_token"}"#;
    let ep = FakeEndpoint::start(vec![Reply::Json(400, body.into(), vec![])]);
    let sb = sandbox(&ep.url, -5, "");
    let o = sb.run(&["token", "ms"]);
    assert_exit(&o, 3);
    let e = stderr(&o);
    assert!(e.contains("expired (unused for too long)"), "{e}");
    assert!(
        e.contains("mailoauth daemon") && e.contains("mailoauth login ms"),
        "{e}"
    );
    assert!(e.contains("error?code=700082"), "{e}");
    assert!(stdout(&o).is_empty());
    // Nothing was overwritten: the old record is still there.
    assert_eq!(sb.record("ms")["refresh_token"], "RT-0-secret-refresh");
}

#[test]
fn configuration_errors_from_the_token_endpoint_name_the_fix() {
    let body = r#"{"error":"invalid_client","error_description":"AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'.","error_codes":[7000218]}"#;
    let ep = FakeEndpoint::start(vec![Reply::Json(401, body.into(), vec![])]);
    let sb = sandbox(&ep.url, -5, "");
    let o = sb.run(&["token", "ms"]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("Allow public client flows"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn token_endpoint_returning_html_is_a_clear_error() {
    let ep = FakeEndpoint::start(vec![Reply::Html(
        200,
        "<html><body>Sign in to Contoso</body></html>",
    )]);
    let sb = sandbox(&ep.url, -5, "");
    let o = sb.run(&["token", "ms"]);
    assert_exit(&o, 1);
    let e = stderr(&o);
    assert!(
        e.contains("HTML page") && e.contains("check it in the config"),
        "{e}"
    );
    assert_eq!(sb.record("ms")["refresh_token"], "RT-0-secret-refresh");
}

#[test]
fn hanging_endpoint_times_out_with_exit_4() {
    let ep = FakeEndpoint::start(vec![Reply::Hang]);
    let sb = sandbox(&ep.url, -5, "");
    let t = Instant::now();
    let o = sb.run(&["token", "ms"]);
    assert_exit(&o, 4);
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));
    // 4 attempts of 2 s plus 3.5 s of backoff: bounded.
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert_eq!(ep.requests(), 4);
}

#[test]
fn rate_limit_retry_after_is_honoured() {
    let ep = FakeEndpoint::start(vec![
        Reply::Json(
            429,
            r#"{"error":"temporarily_unavailable"}"#.into(),
            vec![("Retry-After", "1".into())],
        ),
        ok_token(1),
    ]);
    let sb = sandbox(&ep.url, -5, "");
    let t = Instant::now();
    let o = sb.run(&["token", "ms"]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "AT-1\n");
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(ep.requests(), 2);
    assert_eq!(sb.record("ms")["refresh_token"], "RT-1");
}

#[test]
fn server_error_while_token_still_valid_serves_the_current_token() {
    let ep = FakeEndpoint::start(vec![Reply::Json(503, "{}".into(), vec![])]);
    // 100 s left: below min_validity (300) but still valid.
    let sb = sandbox(&ep.url, 100, "");
    let t = Instant::now();
    let o = sb.run(&["token", "ms"]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "AT-0\n");
    assert!(
        stderr(&o).contains("serving the current token"),
        "{}",
        stderr(&o)
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "no backoff while a token can be served"
    );
    // Once expired, the failure is reported as unreachable.
    let sb = sandbox(&ep.url, -1, "");
    assert_exit(&sb.run(&["token", "ms"]), 4);
}

#[test]
fn secrets_never_appear_in_errors_even_when_the_server_echoes_them() {
    // A hostile or buggy endpoint quoting the request body back.
    let ep = FakeEndpoint::start(vec![Reply::Json(
        400,
        r#"{"error":"invalid_request","error_description":"bad body: refresh_token=RT-0-secret-refresh&client_secret=client-secret-value-42"}"#.into(),
        vec![],
    )]);
    let sb = sandbox(&ep.url, -5, "");
    let o = sb.run(&["-vv", "token", "ms"]);
    assert_exit(&o, 1);
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(all.contains("[redacted]"), "{all}");
    assert!(
        !all.contains("RT-0-secret-refresh") && !all.contains("client-secret-value-42"),
        "{all}"
    );
    // The secret went in the POST body, not the URL or anything visible.
    assert!(ep.bodies.lock().unwrap()[0].contains("client_secret=client-secret-value-42"));
    let st = stdout(&sb.run(&["status", "--json"]));
    assert!(
        !st.contains("RT-0-secret") && !st.contains("client-secret-value"),
        "{st}"
    );
}

#[test]
fn corrupt_config_names_file_line_and_choices() {
    let sb = Sandbox::new(
        "[accounts.w]\nprovider = \"microsoft\"\nuser = \"a@b.c\"\nclient_id = \"x\"\nstore = \"keychain\"\n",
    );
    let o = sb.run(&["token", "w"]);
    assert_exit(&o, 2);
    let e = stderr(&o);
    // The key and the valid choices, never the value (it could be a secret).
    assert!(
        e.contains("config.toml:5") && e.contains("`store`") && !e.contains("keychain"),
        "{e}"
    );
    assert!(
        e.contains("auto") && e.contains("encrypted-file"),
        "valid choices listed: {e}"
    );
    let sb = Sandbox::new("[accounts.w\nprovider=");
    assert_exit(&sb.run(&["status"]), 2);
    let sb = Sandbox::new(
        "[accounts.w]\nprovider = \"custom\"\nuser = \"a@b.c\"\nclient_id = \"x\"\nscopes = [\"s\"]\nauthorize_url = \"https://x/a\"\ntoken_url = \"http://idp.example.com/token\"\n",
    );
    let e = stderr(&sb.run(&["token", "w"]));
    assert!(e.contains(":7:") && e.contains("loopback"), "{e}");
}

#[test]
fn corrupt_store_is_reported_and_left_untouched_until_login() {
    let ep = FakeEndpoint::start(vec![ok_token(1)]);
    let sb = sandbox(&ep.url, 1000, "");
    std::fs::write(sb.token_file("ms"), b"{\"version\":1,\"refresh_tok").unwrap();
    let o = sb.run(&["token", "ms"]);
    assert_exit(&o, 1);
    let e = stderr(&o);
    assert!(
        e.contains("not a valid token record") && e.contains("set it aside"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(sb.token_file("ms")).unwrap(),
        b"{\"version\":1,\"refresh_tok"
    );
    assert_eq!(ep.requests(), 0, "no refresh from an unreadable store");
    let st: serde_json::Value =
        serde_json::from_str(&stdout(&sb.run(&["status", "--json"]))).unwrap();
    assert!(
        st["accounts"][0]["store_error"]
            .as_str()
            .unwrap()
            .contains("not a valid token record"),
        "{st}"
    );
}

#[test]
fn add_writes_a_valid_account_and_refuses_a_bad_one() {
    let sb = Sandbox::new("# my accounts\n");
    let o = sb.run(&[
        "add",
        "work",
        "--provider",
        "microsoft",
        "--user",
        "a@contoso.com",
        "--client-id",
        "cid",
        "--tenant",
        "contoso.com",
        "--services",
        "imap,smtp",
        "--client-secret-env",
        "AZ_SECRET",
    ]);
    assert_exit(&o, 0);
    let text = std::fs::read_to_string(&sb.config).unwrap();
    assert!(text.contains("# my accounts"), "comments kept: {text}");
    assert!(
        text.contains("client_secret = { env = \"AZ_SECRET\" }"),
        "{text}"
    );
    let bad = sb.run(&["add", "work", "--store", "nowhere"]);
    assert_exit(&bad, 2);
    assert_eq!(
        std::fs::read_to_string(&sb.config).unwrap(),
        text,
        "a bad edit is not written"
    );
    let st = sb.run(&["status", "work", "--json"]);
    assert_exit(&st, 0);
}

#[test]
fn add_on_a_symlinked_config_writes_through_to_the_target() {
    // Dotfile managers link config.toml into a repository: the link must stay.
    let sb = Sandbox::new("");
    let real = sb.dir.path().join("dotfiles/mailoauth.toml");
    std::fs::create_dir_all(real.parent().unwrap()).unwrap();
    std::fs::write(&real, "# from my dotfiles\n").unwrap();
    std::fs::remove_file(&sb.config).unwrap();
    std::os::unix::fs::symlink("../../dotfiles/mailoauth.toml", &sb.config).unwrap();
    let o = sb.run(&[
        "add",
        "work",
        "--provider",
        "google",
        "--user",
        "a@gmail.com",
        "--client-id",
        "cid",
    ]);
    assert_exit(&o, 0);
    assert!(
        std::fs::symlink_metadata(&sb.config)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link was replaced by a file"
    );
    let text = std::fs::read_to_string(&real).unwrap();
    assert!(
        text.contains("# from my dotfiles") && text.contains("[accounts.work]"),
        "{text}"
    );
}

#[test]
fn account_names_that_would_share_a_token_file_are_refused() {
    // `a b` and `a_b` once mapped to the same tokens/a_b.json: one user got another's token.
    let acct = |n: &str| {
        format!(
            "[accounts.{n}]\nprovider = \"google\"\nuser = \"{}@gmail.com\"\nclient_id = \"c\"\n",
            n.trim_matches('"').replace(' ', ".")
        )
    };
    let sb = Sandbox::new(&format!("{}{}", acct("\"a b\""), acct("a_b")));
    let o = sb.run(&["token", "a_b"]);
    assert_exit(&o, 2);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("account name `a b`") && err.contains(":1:"),
        "{err}"
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn a_timed_out_login_without_a_browser_does_not_suggest_no_browser() {
    let sb = Sandbox::new(
        "[accounts.c]\nprovider = \"custom\"\nuser = \"u@example.test\"\nclient_id = \"c\"\n\
         authorize_url = \"http://127.0.0.1:9/authorize\"\ntoken_url = \"http://127.0.0.1:9/token\"\n\
         scopes = [\"mail\"]\nstore = \"file\"\n",
    );
    let o = sb.run(&["login", "c", "--no-browser", "--timeout", "1"]);
    assert_exit(&o, 1);
    let e = stderr(&o);
    assert!(e.contains("no sign-in arrived within 1 s"), "{e}");
    assert!(e.contains("run `mailoauth login c`"), "{e}");
    // The URL line is the script contract; the fix must not repeat a flag already given.
    let fix = e.split("fix:").nth(1).unwrap_or_default();
    assert!(!fix.contains("--no-browser"), "{e}");
}

#[test]
fn a_refresh_by_host_name_never_goes_through_glibc_nss() {
    // The installed binary is static: glibc's NSS modules must never be loaded
    // for a host name. Our resolver reads /etc/hosts itself.
    let strace = "/usr/bin/strace";
    assert!(
        std::path::Path::new(strace).exists(),
        "this test needs strace: apt-get install -y strace"
    );
    let ep = FakeEndpoint::start(vec![ok_token(1)]);
    let url = ep.url.replace("127.0.0.1", "localhost");
    let sb = sandbox(&url, -5, "");
    let trace = sb.dir.path().join("trace");
    let mut c = sb.program(strace);
    c.args(["-f", "-qq", "-e", "trace=openat,open", "-o"])
        .arg(&trace)
        .args([env!("CARGO_BIN_EXE_mailoauth"), "refresh", "ms"]);
    let o = run_with_timeout(c, Duration::from_secs(60));
    assert_exit(&o, 0);
    assert_eq!(ep.requests(), 1, "the refresh reached the endpoint by name");
    let t = std::fs::read_to_string(&trace).unwrap();
    assert!(
        t.contains("/etc/hosts"),
        "our resolver read the hosts file:\n{t}"
    );
    assert!(
        !t.contains("nsswitch.conf") && !t.contains("libnss_"),
        "glibc's resolver was used:\n{t}"
    );
}

#[test]
fn a_refresh_the_provider_did_not_do_exits_4() {
    // `refresh` is asked for: serving the old token instead is not what happened.
    let ep = FakeEndpoint::start(vec![Reply::Json(503, "{}".into(), vec![]); 4]);
    let sb = sandbox(&ep.url, 100, "");
    let o = sb.run(&["refresh", "ms"]);
    assert_exit(&o, 4);
    assert!(
        !stderr(&o).contains("serving the current token"),
        "{}",
        stderr(&o)
    );
    // Nothing was lost: the current token is still there for `token`.
    assert_eq!(sb.record("ms")["access"]["mail"]["token"], "AT-0");
}

/// Every way a server may echo `secret` back: raw, form-encoded with `+` or
/// `%20` for spaces, with lower-case hex, JSON-escaped.
fn encodings(secret: &str) -> Vec<String> {
    let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let lower = {
        let mut out = String::new();
        let mut rest = form.as_str();
        while let Some(i) = rest.find('%') {
            out.push_str(&rest[..i]);
            out.push_str(&rest[i..i + 3].to_lowercase());
            rest = &rest[i + 3..];
        }
        out + rest
    };
    vec![
        secret.to_owned(),
        form.clone(),
        form.replace('+', "%20"),
        lower,
        serde_json::to_string(secret)
            .unwrap()
            .trim_matches('"')
            .to_owned(),
        secret.replace('/', "\\/"),
    ]
}

#[test]
fn an_endpoint_echoing_the_request_body_leaks_no_secret_in_any_encoding() {
    // Secrets with the characters encoders treat differently: / + = ~ space &.
    let rt = "1//0gRT-secret/refresh+token==";
    let cs = "cs~secret value+42&more";
    // The daemon's refresh meets a 500 echoing the body (four tries), then a
    // caller's refresh a 400 quoting it in JSON.
    let ep = FakeEndpoint::start(vec![
        Reply::EchoText,
        Reply::EchoText,
        Reply::EchoText,
        Reply::EchoText,
        Reply::EchoJson("invalid_grant"),
    ]);
    let reason = tempfile::NamedTempFile::new().unwrap();
    let sb = Sandbox::new(&format!(
        "[accounts.ms]\nprovider = \"microsoft\"\nuser = \"alice@contoso.com\"\nclient_id = \"cid\"\n\
         client_secret = {}\ntoken_url = \"{}\"\nstore = \"file\"\nhttp_timeout = 2\n\
         notify_command = \"printf %s \\\"$MAILOAUTH_REASON\\\" > {}\"\n",
        serde_json::to_string(cs).unwrap(),
        ep.url,
        reason.path().display()
    ));
    let now = now();
    std::fs::create_dir_all(sb.token_file("ms").parent().unwrap()).unwrap();
    sb.write_record(
        "ms",
        &serde_json::json!({
            "version": 1, "refresh_token": rt, "login_at": now - 100, "refresh_token_at": now - 100,
            "access": {"mail": {"token": "AT-0", "expires_at": now - 5, "obtained_at": now - 3605}}
        }),
    );
    let log = sb.dir.path().join("daemon.log");
    let mut daemon = sb
        .cmd(&["-vv", "daemon"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("refresh of `ms` failed")
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = sb.run(&["-vv", "token", "ms"]);
    assert_exit(&o, 3);
    while std::fs::read_to_string(reason.path()).unwrap().is_empty() {
        assert!(Instant::now() < deadline, "notify_command did not run");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    // The endpoint really got (and echoed) the secrets, form-encoded.
    let bodies = ep.bodies.lock().unwrap().clone();
    assert!(bodies.len() >= 5, "{bodies:?}");
    assert!(bodies[4].contains(&encodings(rt)[1]), "{bodies:?}");
    let status = std::fs::read_to_string(sb.state().join("status/ms.json")).unwrap();
    let places = [
        ("stderr of `token`", format!("{}{}", stdout(&o), stderr(&o))),
        ("status file", status.clone()),
        (
            "MAILOAUTH_REASON",
            std::fs::read_to_string(reason.path()).unwrap(),
        ),
        ("daemon log", std::fs::read_to_string(&log).unwrap()),
    ];
    for (place, text) in &places {
        for secret in encodings(rt).iter().chain(&encodings(cs)) {
            assert!(
                !text.contains(secret.as_str()),
                "{place} holds `{secret}`:\n{text}"
            );
        }
    }
    assert!(places[0].1.contains("[redacted]"), "{}", places[0].1);
    assert!(status.contains("invalid_grant"), "{status}");
}

#[test]
fn expires_in_is_clamped_to_a_year_and_a_nonsense_one_to_minutes() {
    let reply = |expires_in: &str| {
        Reply::Json(
            200,
            format!(
                r#"{{"access_token":"AT-new","token_type":"Bearer","expires_in":{expires_in}}}"#
            ),
            vec![],
        )
    };
    // i64::MAX: without a clamp the token would never be refreshed again.
    let ep = FakeEndpoint::start(vec![reply("9223372036854775807")]);
    let sb = sandbox(&ep.url, -5, "");
    let o = sb.run(&["token", "ms"]);
    assert_exit(&o, 0);
    let exp = sb.record("ms")["access"]["mail"]["expires_at"]
        .as_i64()
        .unwrap();
    let year = 365 * 24 * 3600;
    assert!(
        exp <= now() + year && exp >= now() + year - 60,
        "expires_at {exp} is not a year from now"
    );
    // Negative: without a short default every call would ask the server again.
    let ep = FakeEndpoint::start(vec![reply("-30")]);
    let sb = sandbox(&ep.url, -5, "");
    for _ in 0..4 {
        assert_exit(&sb.run(&["token", "ms"]), 0);
    }
    assert_eq!(ep.requests(), 1, "one refresh, then the token is served");
    let exp = sb.record("ms")["access"]["mail"]["expires_at"]
        .as_i64()
        .unwrap();
    assert!(exp > now() && exp <= now() + 60, "{exp}");
}

#[test]
fn provider_text_with_terminal_escapes_reaches_neither_terminal_nor_status() {
    let ep = FakeEndpoint::start(vec![Reply::Json(
        400,
        serde_json::json!({
            "error": "invalid_client\u{1b}[2J",
            "error_description": "AADSTS7000215: \u{1b}]0;owned\u{7}title \u{9b}31mred \u{202e}gnp.exe\u{2066} end\r\nX-Forged: yes"
        })
        .to_string(),
        vec![],
    )]);
    let sb = sandbox(&ep.url, -5, "");
    let o = sb.run(&["token", "ms"]);
    assert_eq!(o.status.code().map(|c| c != 0), Some(true));
    let shown = format!(
        "{}{}{}",
        stdout(&o),
        stderr(&o),
        std::fs::read_to_string(sb.state().join("status/ms.json")).unwrap()
    );
    assert!(shown.contains("AADSTS7000215"), "{shown}");
    let bad: Vec<char> = shown
        .chars()
        .filter(|c| {
            (c.is_control() && *c != '\n')
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .collect();
    assert!(bad.is_empty(), "control characters {bad:?} in:\n{shown:?}");
}

#[test]
fn loopback_token_endpoints_bypass_http_proxy() {
    // A "proxy" that counts connections and answers nothing useful.
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let connections = Arc::new(Mutex::new(0));
    let c2 = connections.clone();
    std::thread::spawn(move || {
        for s in proxy.incoming() {
            *c2.lock().unwrap() += 1;
            drop(s);
        }
    });
    let ep = FakeEndpoint::start(vec![ok_token(1)]);
    let sb = sandbox(&ep.url, -5, "");
    let mut cmd = sb.cmd(&["token", "ms"]);
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env(var, &proxy_url);
    }
    cmd.env_remove("NO_PROXY").env_remove("no_proxy");
    let o = run_with_timeout(cmd, Duration::from_secs(30));
    assert_exit(&o, 0);
    assert_eq!(stdout(&o).trim(), "AT-1");
    assert_eq!(ep.requests(), 1);
    assert_eq!(
        *connections.lock().unwrap(),
        0,
        "the proxy was used for 127.0.0.1"
    );
}

#[test]
fn a_group_writable_state_directory_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let ep = FakeEndpoint::start(vec![ok_token(1)]);
    let sb = sandbox(&ep.url, 600, "");
    assert_exit(&sb.run(&["token", "ms"]), 0);
    for dir in [sb.state(), sb.state().join("tokens")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let o = sb.run(&["token", "ms"]);
        assert_ne!(o.status.code(), Some(0), "{}", stdout(&o));
        assert!(stdout(&o).is_empty(), "no token from a shared directory");
        let err = stderr(&o);
        assert!(
            err.contains(&dir.display().to_string())
                && err.contains(&format!("chmod go-w {}", dir.display())),
            "{err}"
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    assert_exit(&sb.run(&["token", "ms"]), 0);
    assert_eq!(ep.requests(), 0);
}

#[test]
fn a_record_for_another_user_is_not_handed_out() {
    let ep = FakeEndpoint::start(vec![ok_token(1)]);
    let sb = sandbox(&ep.url, 600, "");
    let mut rec = sb.record("ms");
    rec["user"] = "mallory@contoso.com".into();
    sb.write_record("ms", &rec);
    let before = std::fs::read(sb.token_file("ms")).unwrap();
    for args in [
        &["token", "ms"][..],
        &["refresh", "ms"],
        &["refresh-token", "ms"],
    ] {
        let o = sb.run(args);
        assert_exit(&o, 3);
        assert!(!stdout(&o).contains("AT-0"), "{}", stdout(&o));
        let err = stderr(&o);
        assert!(
            err.contains("mallory@contoso.com")
                && err.contains("alice@contoso.com")
                && err.contains("mailoauth login ms"),
            "{args:?}: {err}"
        );
    }
    // Nothing refreshed with the other user's refresh token, nothing deleted.
    assert_eq!(ep.requests(), 0);
    assert_eq!(std::fs::read(sb.token_file("ms")).unwrap(), before);
    // The same user in other letter case is the same user.
    rec["user"] = "Alice@Contoso.com".into();
    sb.write_record("ms", &rec);
    assert_exit(&sb.run(&["token", "ms"]), 0);
}
