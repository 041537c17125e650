//! `mailoauth check` against real servers: a private Dovecot (IMAP, POP3,
//! submission) whose oauth2 passdb validates the test authorization server's JWTs,
//! started by `tests/mail-server/start.sh`. A token for one user cannot open
//! another's mailbox, a token without the protocol's scope or past its expiry is
//! refused, and each refusal is explained.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[test]
fn check_of_all_three_protocols_in_every_tls_mode_under_a_second() {
    let (srv, mail, sb) = mail_world(|c| c);
    for servers in [mail.servers(), mail.other_servers()] {
        std::fs::write(&sb.config, config(&srv, &servers, ALL_SCOPES)).unwrap();
        let t = Instant::now();
        let o = sb.run(&["check", "m"]);
        let took = t.elapsed();
        assert_exit(&o, 0);
        let out = stdout(&o);
        for p in ["imap  ok", "pop   ok", "smtp  ok"] {
            assert!(out.contains(p), "{p}: {out}");
        }
        assert!(
            took < Duration::from_secs(1),
            "check of three protocols took {took:?}"
        );
    }
    // App-only token: any mailbox named in user=.
    let o = sb.run(&["check", "appmail", "--imap", "--smtp"]);
    assert_exit(&o, 0);
}

#[test]
fn a_token_without_the_protocol_scope_is_refused_and_the_scope_named() {
    let srv = OAuthServer::start(&[]);
    let mail = MailServer::start(&srv.issuer);
    let only_smtp = "\"https://outlook.test/SMTP.Send\", \"openid\", \"email\", \"offline_access\"";
    let sb = Sandbox::new(&config(&srv, &mail.servers(), only_smtp));
    assert_exit(&sb.login_with_browser("m", BrowserMode::Follow).0, 0);
    // The account's config now asks for IMAP too, the token still lacks it.
    std::fs::write(&sb.config, config(&srv, &mail.servers(), ALL_SCOPES)).unwrap();
    let o = sb.run(&["check", "m", "--imap", "--smtp"]);
    assert_exit(&o, 5);
    let out = stdout(&o);
    assert!(out.contains("lacks scope `IMAP.AccessAsUser.All`"), "{out}");
    assert!(
        out.contains("imap  FAIL") && out.contains("AUTHENTICATIONFAILED"),
        "{out}"
    );
    assert!(out.contains("smtp  ok"), "{out}");
}

/// The case against the real server: a Microsoft account whose token
/// was consented for IMAP and SMTP, checked over POP3. Dovecot answers any
/// refusal with its 401 challenge, which alone reads "invalid or expired"; the
/// pre-flight knows the protocol needs POP.AccessAsUser.All and says so.
#[test]
fn a_microsoft_account_checked_over_pop_is_told_the_pop_scope_it_lacks() {
    let srv = OAuthServer::start(&[]);
    let mail = MailServer::start(&srv.issuer);
    let sb = Sandbox::new(&format!(
        "[accounts.ms]\nprovider = \"microsoft\"\nuser = \"alice@example.test\"\nclient_id = \"native-public\"\n\
         authorize_url = \"{iss}/auth\"\ntoken_url = \"{iss}/token\"\nredirect_uri = \"http://127.0.0.1/callback\"\n\
         scopes = [\"https://outlook.test/IMAP.AccessAsUser.All\", \"https://outlook.test/SMTP.Send\", \"openid\", \"email\"]\n\
         store = \"file\"\n{servers}",
        iss = srv.issuer,
        servers = mail.servers()
    ));
    assert_exit(&sb.login_with_browser("ms", BrowserMode::Follow).0, 0);
    let o = sb.run(&["check", "ms", "--pop", "--imap"]);
    assert_exit(&o, 5);
    let out = stdout(&o);
    assert!(
        out.contains("imap  ok") && out.contains("pop   FAIL"),
        "{out}"
    );
    assert!(
        out.contains("cause: the token lacks `POP.AccessAsUser.All`, which POP3 needs: the account's `scopes` do not ask for it"),
        "{out}"
    );
    assert!(
        out.contains("fix:   add `https://outlook.test/POP.AccessAsUser.All` to `scopes` of account `ms`, then run `mailoauth login ms`"),
        "{out}"
    );
    assert!(!out.contains("mailoauth refresh"), "not 'refresh': {out}");
}

#[test]
fn another_users_token_and_an_expired_token_are_refused() {
    let srv = OAuthServer::start(&[("ACCESS_TOKEN_TTL", "3")]);
    let mail = MailServer::start(&srv.issuer);
    let sb = Sandbox::new(&config(&srv, &mail.servers(), ALL_SCOPES));
    assert_exit(&sb.login_with_browser("m", BrowserMode::Follow).0, 0);
    // Alice's token under an account for bob: Dovecot compares upn with user=.
    let bob = config(&srv, &mail.servers(), ALL_SCOPES).replacen(
        "[accounts.m]\nprovider = \"custom\"\nuser = \"alice@example.test\"",
        "[accounts.m]\nprovider = \"custom\"\nuser = \"bob@example.test\"",
        1,
    );
    std::fs::write(&sb.config, &bob).unwrap();
    let mut r = sb.record("m");
    r["access"]["mail"]["expires_at"] = (now() + 3600).into();
    r["access"]["mail"]["obtained_at"] = now().into();
    sb.write_record("m", &r);
    // The record's user is not the account's: refused before any server sees it.
    let o = sb.run(&["check", "m", "--imap"]);
    assert_exit(&o, 3);
    assert!(
        stderr(&o).contains(
            "the stored tokens are for `alice@example.test`, not for the account's user `bob@example.test`"
        ),
        "{}",
        stderr(&o)
    );

    // Back to alice, but let the JWT expire while the store still calls it fresh.
    std::fs::write(&sb.config, config(&srv, &mail.servers(), ALL_SCOPES)).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let o = sb.run(&["check", "m", "--imap", "--pop"]);
    assert_exit(&o, 5);
    let out = stdout(&o);
    assert!(out.contains("the token expired"), "{out}");
    assert!(
        out.contains("imap  FAIL") && out.contains("pop   FAIL"),
        "{out}"
    );
}

#[test]
fn send_delivers_through_dovecot_submission_and_strips_bcc() {
    let (_srv, mail, sb) = mail_world(|c| c);
    let mark = format!("mark-{}", now());
    let msg = format!(
        "From: Alice <alice@example.test>\nTo: bob@example.test\nBcc: carol@example.test\nSubject: {mark}\n\n.leading dot\nbody\n"
    );
    let c = sb.cmd(&["send", "m", "-t", "-oi"]);
    let o = run_with_input(c, msg.as_bytes(), Duration::from_secs(60));
    assert_exit(&o, 0);
    let to_bob = delivered(&mail, "bob@example.test", &mark);
    let to_carol = delivered(&mail, "carol@example.test", &mark);
    for text in [&to_bob, &to_carol] {
        assert!(
            !text.contains("Bcc:") && !text.contains("carol@example.test\r\nSubject"),
            "Bcc stripped: {text}"
        );
        assert!(
            text.contains("\n.leading dot"),
            "dot-stuffing undone by the server: {text}"
        );
    }

    // Send-as is refused before connecting, with the explanation.
    let c = sb.cmd(&["send", "m", "bob@example.test"]);
    let o = run_with_input(
        c,
        b"From: boss@example.test\nSubject: x\n\nhi\n",
        Duration::from_secs(30),
    );
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("SendAsDenied"), "{}", stderr(&o));
}

#[test]
fn snippets_work_in_the_real_clients() {
    need("python3", "apt-get install -y python3");
    need("msmtp", "apt-get install -y msmtp");
    let (_srv, mail, sb) = mail_world(|c| c);
    let snippet = |client: &str| {
        let o = sb.run(&["snippet", "m", client]);
        assert_exit(&o, 0);
        stdout(&o)
    };
    // Python imaplib, as printed.
    let py = sb.dir.path().join("snippet.py");
    std::fs::write(&py, snippet("python")).unwrap();
    let mut c = sb.program("python3");
    c.arg(&py);
    let o = run_with_timeout(c, Duration::from_secs(30));
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("OK") && stdout(&o).contains("messages in INBOX"),
        "{}",
        stdout(&o)
    );
    // curl, as printed.
    let line = snippet("curl")
        .lines()
        .find(|l| !l.starts_with('#'))
        .unwrap()
        .to_owned();
    let mut c = sb.program("sh");
    c.args(["-c", &line]);
    let o = run_with_timeout(c, Duration::from_secs(30));
    assert_exit(&o, 0);
    // msmtp with passwordeval, delivering through Dovecot submission.
    let cfg = sb.dir.path().join("msmtprc");
    std::fs::write(&cfg, snippet("msmtp")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mark = format!("msmtp-{}", now());
    let _logs = mail.logs_on_panic();
    let mut c = sb.program("msmtp");
    c.arg("-C").arg(&cfg).args(["-a", "m", "bob@example.test"]);
    let o = run_with_input(
        c,
        format!("From: alice@example.test\nTo: bob@example.test\nSubject: {mark}\n\nvia msmtp\n")
            .as_bytes(),
        Duration::from_secs(30),
    );
    assert_exit(&o, 0);
    delivered(&mail, "bob@example.test", &mark);
    // Every client has a snippet that names this account.
    for client in ["mbsync", "offlineimap", "neomutt", "aerc"] {
        let s = snippet(client);
        assert!(
            s.contains("token m") || s.contains("\"token\", \"m\""),
            "{client}: {s}"
        );
    }
}

#[test]
fn fetch_is_incremental_resumable_and_can_delete() {
    let (_srv, mail, sb) = mail_world(|c| c);
    seed_mailbox(&mail, "alice@example.test", 400, 20_000);

    // A full fetch, then an incremental one that finds nothing new.
    let dir = sb.dir.path().join("Maildir");
    let d = dir.to_str().unwrap();
    let o = sb.run(&["fetch", "m", "--to", d, "--json"]);
    assert_exit(&o, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["delivered"], 400, "{v}");
    assert_eq!(subjects(&dir).len(), 400);
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&sb.run(&["fetch", "m", "--to", d, "--json"]))).unwrap();
    assert_eq!(v["delivered"], 0, "{v}");

    // Killed halfway, then resumed: every message exactly once.
    let dir2 = sb.dir.path().join("Maildir2");
    let d2 = dir2.to_str().unwrap();
    let mut c = sb.cmd(&["fetch", "m", "--to", d2]);
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = c.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(dir2.join("new"))
        .map(|r| r.count())
        .unwrap_or(0)
        < 120
    {
        assert!(Instant::now() < deadline, "fetch made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    let _ = child.wait();
    let partial = subjects(&dir2).len();
    assert!(partial < 400, "the kill landed too late ({partial})");
    assert_exit(&sb.run(&["fetch", "m", "--to", d2]), 0);
    let got = subjects(&dir2);
    let mut unique = got.clone();
    unique.dedup();
    assert_eq!(got.len(), 400, "no losses after resuming from {partial}");
    assert_eq!(unique.len(), 400, "no duplicates");

    // --delete empties the server folder.
    let dir3 = sb.dir.path().join("Maildir3");
    assert_exit(
        &sb.run(&["fetch", "m", "--to", dir3.to_str().unwrap(), "--delete"]),
        0,
    );
    assert_eq!(subjects(&dir3).len(), 400);
    let o = sb.run(&["check", "m", "--imap"]);
    assert!(stdout(&o).contains("INBOX: 0 messages"), "{}", stdout(&o));
}

#[test]
fn mbsync_and_offlineimap_snippets_sync_and_survive_rotation() {
    need(
        "mbsync",
        "apt-get install -y isync libsasl2-modules-kdexoauth2",
    );
    need("offlineimap", "apt-get install -y offlineimap3");
    let (_srv, mail, sb) = mail_world(|c| c);
    seed_mailbox(&mail, "alice@example.test", 5, 2_000);
    let home = sb.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let snippet = |client: &str, local: &std::path::Path| {
        let o = sb.run(&["snippet", "m", client]);
        assert_exit(&o, 0);
        stdout(&o).replace("~/Mail/m", local.to_str().unwrap())
    };
    let client = |program: &str, args: &[&str]| {
        let mut c = sb.program(program);
        c.args(args).env("HOME", &home);
        let o = run_with_timeout(c, Duration::from_secs(60));
        assert_exit(&o, 0);
    };

    // mbsync (isync + Cyrus SASL XOAUTH2 plugin), PassCmd = mailoauth token.
    let mb = sb.dir.path().join("mb");
    std::fs::create_dir_all(&mb).unwrap();
    let cfg = sb.dir.path().join("mbsyncrc");
    std::fs::write(&cfg, snippet("mbsync", &mb)).unwrap();
    client("mbsync", &["-q", "-c", cfg.to_str().unwrap(), "m"]);
    assert_eq!(subjects(&mb.join("INBOX")).len(), 5);

    // offlineimap3 asks mailoauth for an access token each run: a rotated refresh
    // token (which offlineimap3 itself would fail to store) does not matter.
    let oi = sb.dir.path().join("oi");
    let cfg = sb.dir.path().join("offlineimaprc");
    std::fs::write(&cfg, snippet("offlineimap", &oi)).unwrap();
    client(
        "offlineimap",
        &["-c", cfg.to_str().unwrap(), "-o", "-u", "quiet"],
    );
    assert_eq!(subjects(&oi.join("INBOX")).len(), 5);
    for _ in 0..2 {
        assert_exit(&sb.run(&["refresh", "m"]), 0);
        client(
            "offlineimap",
            &["-c", cfg.to_str().unwrap(), "-o", "-u", "quiet"],
        );
    }
}

#[test]
fn pop_only_accounts_fetch_over_pop3_and_resume() {
    let srv = OAuthServer::start(&[]);
    let mail = MailServer::start(&srv.issuer);
    // A POP-only account: the same mailbox, no imap server configured.
    let servers: String = mail
        .servers()
        .lines()
        .filter(|l| !l.starts_with("imap"))
        .map(|l| format!("{l}\n"))
        .collect();
    let sb = Sandbox::new(&config(&srv, &servers, ALL_SCOPES));
    assert_exit(&sb.login_with_browser("m", BrowserMode::Follow).0, 0);
    seed_mailbox(&mail, "alice@example.test", 30, 3_000);
    let dir = sb.dir.path().join("PopMaildir");
    let d = dir.to_str().unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&sb.run(&["fetch", "m", "--to", d, "--json"]))).unwrap();
    assert_eq!(v["delivered"], 30, "{v}");
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&sb.run(&["fetch", "m", "--to", d, "--json"]))).unwrap();
    assert_eq!(v["delivered"], 0, "incremental: {v}");
    // Forget the state (as if killed before saving it): files on disk prevent duplicates.
    std::fs::remove_file(dir.join(".mailoauth-pop3.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&stdout(
        &sb.run(&["fetch", "m", "--to", d, "--json", "--delete"]),
    ))
    .unwrap();
    assert_eq!(
        (v["delivered"].as_u64(), v["skipped"].as_u64()),
        (Some(0), Some(30)),
        "{v}"
    );
    assert_eq!(subjects(&dir).len(), 30);
    let o = sb.run(&["check", "m", "--pop"]);
    assert!(
        stdout(&o).contains("maildrop: 0 messages"),
        "--delete emptied it: {}",
        stdout(&o)
    );
    assert_exit(
        &sb.run(&["fetch", "m", "--to", d, "--move-to", "Archive"]),
        2,
    );
}

#[test]
fn neomutt_snippet_opens_the_inbox() {
    need("neomutt", "apt-get install -y neomutt");
    need("tmux", "apt-get install -y tmux");
    let (_srv, mail, sb) = mail_world(|c| c);
    seed_mailbox(&mail, "alice@example.test", 3, 1_000);
    let rc = sb.dir.path().join("neomuttrc");
    let o = sb.run(&["snippet", "m", "neomutt"]);
    assert_exit(&o, 0);
    std::fs::write(
        &rc,
        format!(
            "{}\nset header_cache = \"\"\nset message_cachedir = \"\"\n",
            stdout(&o)
        ),
    )
    .unwrap();
    // neomutt is a full-screen program: run it in a private tmux server and read the screen.
    let home = sb.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let cmd = format!(
        "env HOME={} TERM=xterm neomutt -n -F {}",
        home.display(),
        rc.display()
    );
    assert_screen_shows(&sb, "neomutt", &cmd, "seed 00002");
}

#[test]
fn aerc_snippet_opens_the_inbox() {
    need("aerc", "apt-get install -y aerc");
    need("tmux", "apt-get install -y tmux");
    let (_srv, mail, sb) = mail_world(|c| c);
    seed_mailbox(&mail, "alice@example.test", 3, 1_000);
    let cfg = sb.dir.path().join("aerc-config/aerc");
    std::fs::create_dir_all(&cfg).unwrap();
    let o = sb.run(&["snippet", "m", "aerc"]);
    assert_exit(&o, 0);
    std::fs::write(cfg.join("accounts.conf"), stdout(&o)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        cfg.join("accounts.conf"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(
        cfg.join("aerc.conf"),
        "[general]\nunsafe-accounts-conf = true\n",
    )
    .unwrap();
    // aerc (Go) has no CA option: SSL_CERT_FILE makes it trust the test CA.
    let cmd = format!(
        "env XDG_CONFIG_HOME={} SSL_CERT_FILE={} TERM=xterm aerc",
        cfg.parent().unwrap().display(),
        mail.ca().display()
    );
    assert_screen_shows(&sb, "aerc", &cmd, "seed 00002");
}
