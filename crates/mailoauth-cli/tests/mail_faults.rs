//! `mailoauth check` against scripted servers that answer with the error texts of
//! Exchange Online and Gmail (FACTS.md §4) — replies real test servers will not
//! produce — each mapped to its diagnosis, and the exit codes of the spec; and
//! the proxy in front of the same scripted servers, which must pass the
//! diagnosis on to its password clients.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// A line server: greets, then answers each received line with the reply of the
/// first rule whose prefix it starts with ("" matches anything). Records lines.
struct FakeMail {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl FakeMail {
    fn start(greeting: &'static str, rules: Vec<(&'static str, &'static str)>) -> FakeMail {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        std::thread::spawn(move || {
            for stream in l.incoming() {
                let Ok(mut s) = stream else { continue };
                let _ = write!(s, "{greeting}\r\n");
                let r = BufReader::new(s.try_clone().unwrap());
                for line in r.lines().map_while(Result::ok) {
                    s2.lock().unwrap().push(line.clone());
                    let reply = rules
                        .iter()
                        .find(|(p, _)| line.starts_with(p))
                        .map(|(_, r)| *r)
                        .unwrap_or("");
                    if reply == "CLOSE" {
                        break;
                    }
                    if !reply.is_empty() {
                        let _ = write!(s, "{}\r\n", reply.replace('\n', "\r\n"));
                    }
                }
            }
        });
        FakeMail { port, seen }
    }
}

/// A Microsoft account whose servers are the fakes, with a stored valid token.
fn sandbox(extra: &str, flow: &str) -> Sandbox {
    let sb = Sandbox::new(&format!(
        "[accounts.ms]\nprovider = \"microsoft\"\nuser = \"alice@contoso.com\"\nclient_id = \"app-1234\"\n\
         tenant = \"contoso.com\"\nflow = \"{flow}\"\nclient_secret = \"s\"\nstore = \"file\"\n{extra}"
    ));
    sb.store_valid_token("ms", "opaque-token-value");
    sb
}

const EXCHANGE_IMAP_CAPS: &str = "* CAPABILITY IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+\nc1 OK CAPABILITY completed.";

#[test]
fn exchange_imap_authenticate_failed_is_explained_with_exit_5() {
    let imap = FakeMail::start(
        "* OK The Microsoft Exchange IMAP4 service is ready.",
        vec![
            ("c1 CAPABILITY", EXCHANGE_IMAP_CAPS),
            ("a1 AUTHENTICATE", "a1 NO AUTHENTICATE failed."),
            ("", ""),
        ],
    );
    let sb = sandbox(&plain_server("imap", imap.port), "auth-code");
    let o = sb.run(&["check", "ms", "--imap"]);
    assert_exit(&o, 5);
    let out = stdout(&o);
    assert!(
        out.contains("imap  FAIL") && out.contains("NO AUTHENTICATE failed."),
        "{out}"
    );
    assert!(
        out.contains("Graph") && out.contains("mailoauth inspect ms"),
        "{out}"
    );
    // SASL-IR: one line, XOAUTH2 for the account's user.
    let seen = imap.seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|l| l.starts_with("a1 AUTHENTICATE XOAUTH2 dXNlcj1hbGljZUBjb250b3NvLmNvbQ")),
        "{seen:?}"
    );
}

#[test]
fn app_only_failure_prints_the_whole_setup_checklist() {
    let imap = FakeMail::start(
        "* OK The Microsoft Exchange IMAP4 service is ready.",
        vec![
            ("c1 CAPABILITY", EXCHANGE_IMAP_CAPS),
            ("a1 AUTHENTICATE", "a1 OK AUTHENTICATE completed."),
            (
                "m2 SELECT",
                "m2 BAD User is authenticated but not connected.",
            ),
            ("", ""),
        ],
    );
    let sb = sandbox(&plain_server("imap", imap.port), "client-credentials");
    let o = sb.run(&["check", "ms", "--imap"]);
    assert_exit(&o, 5);
    let out = stdout(&o);
    assert!(out.contains("SELECT INBOX refused"), "{out}");
    assert!(
        out.contains("Set-CASMailbox -Identity alice@contoso.com -ImapEnabled $true"),
        "{out}"
    );
    assert!(
        out.contains(
            "New-ServicePrincipal -AppId app-1234 -ObjectId <enterprise application object id>"
        ),
        "{out}"
    );
    assert!(
        out.contains("Add-MailboxPermission -Identity alice@contoso.com"),
        "{out}"
    );
}

#[test]
fn exchange_smtp_auth_disabled_two_step_auth_and_json() {
    let smtp = FakeMail::start(
        "220 BN0PR04CA0000.outlook.office365.com Microsoft ESMTP MAIL Service ready",
        vec![
            (
                "EHLO",
                "250-BN0PR04CA0000.outlook.office365.com Hello\n250-SIZE 157286400\n250-AUTH LOGIN XOAUTH2\n250 SMTPUTF8",
            ),
            ("AUTH XOAUTH2", "334 "),
            (
                "",
                "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.",
            ),
        ],
    );
    let sb = sandbox(&plain_server("smtp", smtp.port), "auth-code");
    let o = sb.run(&["check", "ms", "--smtp", "--json"]);
    assert_exit(&o, 5);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let fix = v["results"][0]["fix"].as_str().unwrap();
    assert!(
        fix.contains(
            "Set-CASMailbox -Identity alice@contoso.com -SmtpClientAuthenticationDisabled $false"
        ),
        "{v}"
    );
    assert_eq!(v["exit_code"], 5);
}

#[test]
fn long_tokens_use_the_two_step_smtp_auth() {
    let smtp = FakeMail::start(
        "220 smtp ready",
        vec![
            ("EHLO", "250-smtp\n250 AUTH XOAUTH2"),
            ("AUTH XOAUTH2 ", "500 5.5.2 Line too long"),
            ("AUTH XOAUTH2", "334 "),
            ("MAIL FROM", "250 2.1.0 Sender OK"),
            ("RSET", "250 OK"),
            ("QUIT", "221 bye"),
            ("", "235 2.7.0 Authentication successful"),
        ],
    );
    let sb = sandbox(&plain_server("smtp", smtp.port), "auth-code");
    // An Office 365-sized token (2.4 KB).
    let mut r = sb.record("ms");
    r["access"]["mail"]["token"] = "x".repeat(2400).into();
    sb.write_record("ms", &r);
    let o = sb.run(&["check", "ms", "--smtp"]);
    assert_exit(&o, 0);
    let seen = smtp.seen.lock().unwrap().clone();
    assert!(seen.contains(&"AUTH XOAUTH2".to_owned()), "{seen:?}");
    assert!(stdout(&o).contains("smtp  ok"), "{}", stdout(&o));
}

#[test]
fn gmail_error_challenge_is_answered_and_decoded() {
    // base64 of {"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}
    let smtp = FakeMail::start(
        "220 smtp.gmail.com ESMTP ready",
        vec![
            (
                "EHLO",
                "250-smtp.gmail.com at your service\n250-AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH\n250 SMTPUTF8",
            ),
            (
                "AUTH XOAUTH2",
                "334 eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==",
            ),
            (
                "",
                "535-5.7.8 Username and Password not accepted. For more information, go to\n535 5.7.8  https://support.google.com/mail/?p=BadCredentials",
            ),
        ],
    );
    // Gmail's advice is for Google accounts (a Microsoft account never gets it).
    let sb = Sandbox::new(&format!(
        "[accounts.g]\nprovider = \"google\"\nuser = \"alice@gmail.com\"\nclient_id = \"gid\"\nstore = \"file\"\n{}",
        plain_server("smtp", smtp.port)
    ));
    sb.store_valid_token("g", "opaque-token-value");
    let mut r = sb.record("g");
    r["user"] = "alice@gmail.com".into();
    sb.write_record("g", &r);
    let o = sb.run(&["check", "g", "--smtp"]);
    assert_exit(&o, 5);
    let out = stdout(&o);
    assert!(
        out.contains(r#"{"status":"400""#),
        "the challenge is decoded: {out}"
    );
    assert!(out.contains("Gmail"), "{out}");
    assert!(
        !out.contains("another user than"),
        "the sign-in named its user: {out}"
    );
    // The client acknowledged the challenge with an empty line.
    assert!(smtp.seen.lock().unwrap().iter().any(|l| l.is_empty()));
}

#[test]
fn exchange_pop_failure_and_unreachable_server() {
    let pop = FakeMail::start(
        "+OK The Microsoft Exchange POP3 service is ready.",
        vec![
            ("CAPA", "+OK\nTOP\nUIDL\nSASL PLAIN XOAUTH2\nUSER\n."),
            ("AUTH XOAUTH2", "+ "),
            (
                "",
                "-ERR Authentication failure: unknown user name or bad password.",
            ),
        ],
    );
    let sb = sandbox(&plain_server("pop", pop.port), "auth-code");
    let o = sb.run(&["check", "ms", "--pop"]);
    assert_exit(&o, 5);
    assert!(stdout(&o).contains("-PopEnabled $true"), "{}", stdout(&o));

    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sb = sandbox(&plain_server("imap", closed), "auth-code");
    let o = sb.run(&["check", "ms", "--imap", "--timeout", "2"]);
    assert_exit(&o, 4);
}

#[test]
fn imap_without_sasl_ir_uses_the_continuation_and_oauthbearer_when_alone() {
    // A server offering only OAUTHBEARER and no SASL-IR: `AUTHENTICATE OAUTHBEARER`,
    // wait for `+`, then the initial response; an error challenge is answered with AQ==.
    let imap = FakeMail::start(
        "* OK IMAP ready",
        vec![
            (
                "c1 CAPABILITY",
                "* CAPABILITY IMAP4rev1 AUTH=OAUTHBEARER\nc1 OK done",
            ),
            ("a1 AUTHENTICATE OAUTHBEARER", "+ "),
            (
                "bixh",
                "+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=",
            ),
            (
                "AQ==",
                "a1 NO [AUTHENTICATIONFAILED] Authentication failed.",
            ),
            ("", ""),
        ],
    );
    let sb = sandbox(&plain_server("imap", imap.port), "auth-code");
    let o = sb.run(&["check", "ms", "--imap"]);
    assert_exit(&o, 5);
    let seen = imap.seen.lock().unwrap().clone();
    assert_eq!(seen[1], "a1 AUTHENTICATE OAUTHBEARER", "{seen:?}");
    assert!(
        seen[2].starts_with("bixh"),
        "the initial response on its own line (n,a=…): {seen:?}"
    );
    assert_eq!(seen[3], "AQ==", "the challenge is acknowledged with \\x01");
    assert!(stdout(&o).contains(r#""status":"401""#), "{}", stdout(&o));
}

/// The proxy logs in upstream with the same machine as `check`: a refused login
/// reaches the password client, and the daemon log, with the catalog's cause and
/// fix on one line (and never the token).
#[test]
fn proxy_refusals_carry_the_catalogs_cause_and_fix() {
    let imap = FakeMail::start(
        "* OK The Microsoft Exchange IMAP4 service is ready.",
        vec![
            ("c1 CAPABILITY", EXCHANGE_IMAP_CAPS),
            ("a1 AUTHENTICATE", "a1 NO AUTHENTICATE failed."),
            ("", ""),
        ],
    );
    let smtp = FakeMail::start(
        "220 BN0PR04CA0000.outlook.office365.com Microsoft ESMTP MAIL Service ready",
        vec![
            (
                "EHLO",
                "250-BN0PR04CA0000.outlook.office365.com Hello\n250-AUTH LOGIN XOAUTH2\n250 SMTPUTF8",
            ),
            (
                "AUTH XOAUTH2",
                "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.",
            ),
            ("", ""),
        ],
    );
    let (pi, ps) = (free_port(), free_port());
    let sb = sandbox(
        &format!(
            "{}{}proxy = {{ imap = \"127.0.0.1:{pi}\", smtp = \"127.0.0.1:{ps}\", password = {{ env = \"PROXY_PW\" }} }}\n",
            plain_server("imap", imap.port),
            plain_server("smtp", smtp.port)
        ),
        "auth-code",
    );
    let log = sb.dir.path().join("daemon.log");
    let mut daemon = sb
        .cmd(&["daemon"])
        .env("PROXY_PW", "pw")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let connect = |port: u16| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                    .unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut greeting = String::new();
                r.read_line(&mut greeting).unwrap();
                return (s, r);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the proxy did not listen"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let ask = |w: &mut std::net::TcpStream, r: &mut BufReader<std::net::TcpStream>, s: &str| {
        w.write_all(s.as_bytes()).unwrap();
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        l
    };

    let (mut w, mut r) = connect(pi);
    let reply = ask(&mut w, &mut r, "a1 LOGIN alice@contoso.com pw\r\n");
    assert!(
        reply.starts_with("a1 NO [UNAVAILABLE] upstream login failed"),
        "{reply}"
    );
    assert!(reply.contains("a1 NO AUTHENTICATE failed."), "{reply}");
    assert!(
        reply.contains("cause: ") && reply.contains("fix: "),
        "{reply}"
    );
    assert!(reply.contains("mailoauth inspect ms"), "{reply}");
    assert_eq!(reply.matches('\n').count(), 1, "one line: {reply:?}");

    let (mut w, mut r) = connect(ps);
    let mut l = ask(&mut w, &mut r, "EHLO me\r\n");
    while l.starts_with("250-") {
        l.clear();
        r.read_line(&mut l).unwrap();
    }
    use base64::Engine as _;
    let plain = base64::engine::general_purpose::STANDARD.encode("\0alice@contoso.com\0pw");
    let reply = ask(&mut w, &mut r, &format!("AUTH PLAIN {plain}\r\n"));
    assert!(
        reply.starts_with("454 4.7.0 upstream login failed"),
        "{reply}"
    );
    assert!(
        reply.contains("535 5.7.139")
            && reply.contains("Set-CASMailbox -Identity alice@contoso.com -SmtpClientAuthenticationDisabled $false"),
        "{reply}"
    );

    std::thread::sleep(std::time::Duration::from_millis(300));
    let _ = daemon.kill();
    let _ = daemon.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("5.7.139") && text.contains("fix: "), "{text}");
    assert!(!text.contains("opaque-token-value"), "{text}");
    let seen = imap.seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|l| l.starts_with("a1 AUTHENTICATE XOAUTH2 ")),
        "{seen:?}"
    );
}

/// An unsigned JWT with these claims (the pre-flight reads claims, never checks signatures).
fn jwt(claims: serde_json::Value) -> String {
    use base64::Engine as _;
    let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.sig",
        b(r#"{"alg":"RS256","typ":"JWT"}"#),
        b(&claims.to_string())
    )
}

#[test]
fn check_names_the_missing_pop_scope_and_exits_5() {
    // Exchange's answer to a token without POP.AccessAsUser.All.
    let pop = FakeMail::start(
        "+OK The Microsoft Exchange POP3 service is ready.",
        vec![
            ("CAPA", "+OK\nTOP\nUIDL\nSASL PLAIN XOAUTH2\nUSER\n."),
            ("AUTH XOAUTH2", "+ "),
            (
                "",
                "-ERR Authentication failure: unknown user name or bad password.",
            ),
        ],
    );
    let sb = sandbox(
        &format!(
            "services = [\"imap\", \"smtp\"]\n{}",
            plain_server("pop", pop.port)
        ),
        "auth-code",
    );
    // What Entra issues for services = ["imap", "smtp"]: no POP scope.
    let token = jwt(serde_json::json!({
        "aud": "https://outlook.office.com", "upn": "alice@contoso.com",
        "scp": "IMAP.AccessAsUser.All SMTP.Send", "exp": now() + 3600
    }));
    sb.store_valid_token("ms", &token);
    let o = sb.run(&["check", "ms", "--pop"]);
    assert_exit(&o, 5);
    let out = stdout(&o);
    assert!(
        out.contains("pre-flight: the token lacks `POP.AccessAsUser.All`, which POP3 needs"),
        "{out}"
    );
    assert!(
        out.contains("cause: the token lacks `POP.AccessAsUser.All`")
            && out.contains("the account's `services` (imap, smtp) does not include `pop`"),
        "{out}"
    );
    assert!(
        out.contains(
            "fix:   add `pop` to `services` of account `ms`, then run `mailoauth login ms`"
        ),
        "{out}"
    );
    assert!(
        out.contains("admin consent") && out.contains("app-1234"),
        "the tenant's consent step: {out}"
    );
    assert!(
        !out.contains("mailoauth refresh") && !out.contains("-PopEnabled"),
        "not the guesses for other causes: {out}"
    );
    // IMAP is covered by the same token: no warning about it.
    assert!(!out.contains("IMAP.AccessAsUser.All"), "{out}");
}

/// A custom account (another authorization server) for app-only access, with a
/// stored token.
fn custom_app_only(extra: &str) -> Sandbox {
    let sb = Sandbox::new(&format!(
        "[accounts.c]\nprovider = \"custom\"\nuser = \"shared@example.test\"\nclient_id = \"app\"\n\
         client_secret = \"s\"\nflow = \"client-credentials\"\ntoken_url = \"https://idp.example.test/token\"\n\
         scopes = [\"mail\"]\nstore = \"file\"\n{extra}"
    ));
    sb.store_valid_token("c", "opaque-token-value");
    sb
}

/// `check` of a temporary failure: exit 4, "retry", and no refusal's advice.
fn assert_temporary(o: &std::process::Output, proto: &str) {
    assert_exit(o, 4);
    let out = stdout(o);
    assert!(out.contains(&format!("{proto:<5} FAIL")), "{out}");
    assert!(out.contains("failed temporarily"), "{out}");
    assert!(
        out.contains("cause: the server's authentication backend is unavailable"),
        "{out}"
    );
    assert!(out.contains("fix:   retry later"), "{out}");
    for foreign in ["New-ServicePrincipal", "Entra", "Exchange", "Gmail"] {
        assert!(!out.contains(foreign), "{foreign}: {out}");
    }
}

#[test]
fn a_temporary_imap_failure_exits_4_and_says_retry_without_the_exchange_checklist() {
    let imap = FakeMail::start(
        "* OK IMAP ready",
        vec![
            (
                "c1 CAPABILITY",
                "* CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2\nc1 OK done",
            ),
            (
                "a1 AUTHENTICATE",
                "a1 NO [UNAVAILABLE] Temporary authentication failure.",
            ),
            ("", ""),
        ],
    );
    let sb = custom_app_only(&plain_server("imap", imap.port));
    assert_temporary(&sb.run(&["check", "c", "--imap"]), "imap");
}

#[test]
fn a_temporary_pop_failure_exits_4_and_says_retry() {
    let pop = FakeMail::start(
        "+OK POP3 ready",
        vec![
            ("CAPA", "+OK\nSASL XOAUTH2\n."),
            ("AUTH XOAUTH2", "+ "),
            ("", "-ERR [SYS/TEMP] Temporary authentication failure."),
        ],
    );
    let sb = custom_app_only(&plain_server("pop", pop.port));
    assert_temporary(&sb.run(&["check", "c", "--pop"]), "pop");
}

#[test]
fn a_temporary_smtp_failure_exits_4_and_says_retry() {
    let smtp = FakeMail::start(
        "220 smtp ready",
        vec![
            ("EHLO", "250-smtp\n250 AUTH XOAUTH2"),
            ("AUTH XOAUTH2", "454 4.7.0 Temporary authentication failure"),
            ("", ""),
        ],
    );
    let sb = custom_app_only(&plain_server("smtp", smtp.port));
    assert_temporary(&sb.run(&["check", "c", "--smtp"]), "smtp");
    // `send` says the same, with the same exit code.
    let o = run_with_input(
        sb.cmd(&["send", "c", "bob@example.test"]),
        b"From: shared@example.test\nSubject: x\n\nhi\n",
        std::time::Duration::from_secs(30),
    );
    assert_exit(&o, 4);
    assert!(
        stderr(&o).contains("authentication backend is unavailable"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn exchange_throttling_is_temporary_and_keeps_its_microsoft_advice() {
    let imap = FakeMail::start(
        "* OK The Microsoft Exchange IMAP4 service is ready.",
        vec![
            ("c1 CAPABILITY", EXCHANGE_IMAP_CAPS),
            (
                "a1 AUTHENTICATE",
                "a1 BAD Request is throttled. Suggested Backoff Time: 3000 milliseconds",
            ),
            ("", ""),
        ],
    );
    let sb = sandbox(&plain_server("imap", imap.port), "client-credentials");
    let o = sb.run(&["check", "ms", "--imap"]);
    assert_exit(&o, 4);
    let out = stdout(&o);
    assert!(out.contains("Exchange Online is throttling"), "{out}");
    assert!(out.contains("retry later"), "{out}");
    assert!(
        !out.contains("New-ServicePrincipal"),
        "no app-only checklist for a temporary failure: {out}"
    );
}

/// A server that validates tokens by introspection sees bob's token under
/// alice's name and refuses; `check` cannot read the opaque token, and the
/// login could not tell who signed in: "another user" is among the causes.
#[test]
fn check_names_another_user_as_a_likely_cause_when_the_sign_in_was_unverified() {
    let srv = OAuthServer::start(&[("NO_ID_TOKEN", "1"), ("LOGIN_AS", "bob@example.test")]);
    let imap = FakeMail::start(
        "* OK IMAP ready",
        vec![
            (
                "c1 CAPABILITY",
                "* CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2\nc1 OK done",
            ),
            (
                "a1 AUTHENTICATE",
                "a1 NO [AUTHENTICATIONFAILED] Authentication failed.",
            ),
            ("", ""),
        ],
    );
    let sb = Sandbox::new(&format!(
        "[accounts.x]\nprovider = \"custom\"\nuser = \"alice@example.test\"\nclient_id = \"native-public\"\n\
         authorize_url = \"{iss}/auth\"\ntoken_url = \"{iss}/token\"\nredirect_uri = \"http://127.0.0.1/callback\"\n\
         scopes = [\"email\", \"offline_access\"]\nstore = \"file\"\n{}",
        plain_server("imap", imap.port),
        iss = srv.issuer
    ));
    assert_exit(&sb.login_with_browser("x", BrowserMode::Follow).0, 0);
    let o = sb.run(&["check", "x", "--imap"]);
    assert_exit(&o, 5);
    let out = stdout(&o);
    assert!(
        out.contains("may have been as another user than alice@example.test"),
        "{out}"
    );
    assert!(
        out.contains("sign in again as alice@example.test") && out.contains("mailoauth login x"),
        "{out}"
    );
}

#[test]
fn mail_server_replies_with_terminal_escapes_are_shown_without_control_characters() {
    // An error challenge whose JSON carries ESC and a bidi override, then a
    // refusal line with an OSC title sequence, a one-byte CSI and an override.
    use base64::Engine as _;
    let challenge = base64::engine::general_purpose::STANDARD
        .encode("{\"status\":\"400\",\"note\":\"\u{1b}[2J\u{202e}cleared\"}");
    let challenge: &'static str = Box::leak(format!("+ {challenge}").into_boxed_str());
    let imap = FakeMail::start(
        "* OK ready",
        vec![
            ("c1 CAPABILITY", EXCHANGE_IMAP_CAPS),
            ("a1 AUTHENTICATE", challenge),
            (
                "",
                "a1 NO [AUTHENTICATIONFAILED] \u{1b}]0;owned\u{7}bad \u{9b}31mtoken \u{2067}end",
            ),
        ],
    );
    let sb = sandbox(&plain_server("imap", imap.port), "auth-code");
    for json in [false, true] {
        let mut args = vec!["check", "ms", "--imap"];
        if json {
            args.push("--json");
        }
        let o = sb.run(&args);
        assert_exit(&o, 5);
        let shown = format!("{}{}", stdout(&o), stderr(&o));
        assert!(
            shown.contains("AUTHENTICATIONFAILED") && shown.contains("cleared"),
            "{shown}"
        );
        let bad: Vec<char> = shown
            .chars()
            .filter(|c| {
                (c.is_control() && *c != '\n')
                    || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
            })
            .collect();
        assert!(bad.is_empty(), "control characters {bad:?} in:\n{shown:?}");
        assert!(!shown.to_lowercase().contains("\\u001b"), "{shown}");
    }
}
