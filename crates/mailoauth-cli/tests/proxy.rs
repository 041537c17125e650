//! The proxy, hosted by `mailoauth daemon`, in front of the private Dovecot of
//! the mail tests: password-only clients (Python's imaplib/poplib/smtplib,
//! mbsync, msmtp) log in with the local password over plain, STARTTLS and
//! implicit TLS listeners; the proxy logs in upstream with XOAUTH2. Hostile
//! input before login gets protocol errors and never reaches the server; the
//! `--debug` trace shows the dialogue without a credential; SIGHUP moves
//! listeners, SIGTERM drains, idle sessions are closed.

mod common;

use common::*;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PW: &str = "local-secret-pw";

/// OAuth server, Dovecot, a logged-in account `m` with a proxy, and its daemon.
struct Proxy {
    _srv: OAuthServer,
    mail: MailServer,
    sb: Sandbox,
    daemon: Option<Child>,
    imap: u16,
    pop: u16,
    smtp: u16,
    log: PathBuf,
}

impl Proxy {
    /// `extra` adds keys to the account's proxy table (e.g. `tls = "starttls"`).
    fn start(extra: &str, daemon_args: &[&str]) -> Proxy {
        Proxy::start_after(extra, daemon_args, "")
    }

    /// The same, the daemon started by `sh -c "{shell}; exec mailoauth daemon …"`
    /// (e.g. `ulimit -n 256`).
    fn start_after(extra: &str, daemon_args: &[&str], shell: &str) -> Proxy {
        let (imap, pop, smtp) = (free_port(), free_port(), free_port());
        let table = format!(
            "proxy = {{ imap = \"127.0.0.1:{imap}\", pop = \"127.0.0.1:{pop}\", smtp = \"127.0.0.1:{smtp}\", \
             password = {{ env = \"PROXY_PW\" }}{extra} }}\n"
        );
        let (srv, mail, sb) =
            mail_world(|cfg| cfg.replacen("[accounts.m]\n", &format!("[accounts.m]\n{table}"), 1));
        let log = sb.dir.path().join("daemon.log");
        let mut p = Proxy {
            _srv: srv,
            mail,
            sb,
            daemon: None,
            imap,
            pop,
            smtp,
            log,
        };
        p.spawn_daemon(daemon_args, shell);
        p.wait_listening(imap);
        p
    }

    fn spawn_daemon(&mut self, args: &[&str], shell: &str) {
        let mut all = vec!["-v", "daemon"];
        all.extend_from_slice(args);
        let log = std::fs::File::create(&self.log).unwrap();
        let mut cmd = if shell.is_empty() {
            self.sb.cmd(&all)
        } else {
            let mut c = self.sb.program("sh");
            c.args(["-c", &format!("{shell}; exec \"$0\" \"$@\"")]);
            c.arg(env!("CARGO_BIN_EXE_mailoauth")).args(&all);
            c
        };
        let child = cmd
            .env("PROXY_PW", PW)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
    }

    fn wait_listening(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the proxy did not listen on {port}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let pid = self.daemon.as_ref().unwrap().id().to_string();
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// The generated local certificate (for clients to trust).
    fn cert(&self) -> PathBuf {
        self.sb.dir.path().join("state/mailoauth/proxy/cert.pem")
    }

    fn python(&self, script: &str) -> Output {
        let mut c = self.sb.program("python3");
        c.args(["-c", script]);
        run_with_timeout(c, Duration::from_secs(60))
    }

    fn wire(&self, port: u16) -> Wire {
        Wire::connect(port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

/// A raw client: send bytes, read lines.
struct Wire {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Wire {
    fn connect(port: u16) -> Wire {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut w = Wire {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        let greeting = w.line();
        assert!(!greeting.is_empty(), "no greeting");
        w
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        let _ = self.r.read_line(&mut l);
        l
    }

    /// Send and return the next line.
    fn ask(&mut self, send: &str) -> String {
        self.w.write_all(send.as_bytes()).unwrap();
        self.line()
    }

    /// The peer closed: reads hit end of stream.
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        // A reset (we left unread bytes behind) is a close too; a timeout is not.
        match self.r.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

fn plain_b64(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"))
}

#[test]
fn password_clients_reach_dovecot_over_imap_pop_and_smtp() {
    let p = Proxy::start("", &[]);
    seed_mailbox(&p.mail, "alice@example.test", 3, 1_000);
    let (imap, pop, smtp) = (p.imap, p.pop, p.smtp);
    let script = format!(
        "import imaplib\nm = imaplib.IMAP4('127.0.0.1', {imap})\n\
         try:\n    m.login('alice@example.test', 'wrong')\nexcept imaplib.IMAP4.error as e:\n    print('refused', e)\n\
         print(m.login('alice@example.test', '{PW}')[0])\n\
         typ, data = m.select('INBOX')\nprint('exists', data[0].decode())\n\
         typ, data = m.fetch('1', '(BODY[HEADER.FIELDS (SUBJECT)])')\nprint(data[0][1].decode().strip())\nm.logout()\n\
         import poplib\np = poplib.POP3('127.0.0.1', {pop})\np.user('alice@example.test')\n\
         try:\n    p.pass_('nope')\nexcept poplib.error_proto as e:\n    print('pop refused', e)\n\
         p = poplib.POP3('127.0.0.1', {pop})\np.user('alice@example.test')\nprint(p.pass_('{PW}'))\n\
         print('pop stat', p.stat()[0])\np.quit()\n\
         import smtplib\ns = smtplib.SMTP('127.0.0.1', {smtp})\n\
         try:\n    s.login('alice@example.test', 'nope')\nexcept smtplib.SMTPAuthenticationError as e:\n    print('smtp refused', e.smtp_code)\n\
         s = smtplib.SMTP('127.0.0.1', {smtp})\nprint('smtp', s.login('alice@example.test', '{PW}')[0])\n\
         s.sendmail('alice@example.test', ['bob@example.test'], 'From: alice@example.test\\r\\nTo: bob@example.test\\r\\nSubject: via-proxy-{imap}\\r\\n\\r\\nhello\\r\\n')\ns.quit()\n"
    );
    let o = p.python(&script);
    let out = stdout(&o);
    assert_exit(&o, 0);
    for want in [
        "refused",
        "AUTHENTICATIONFAILED",
        "exists 3",
        "Subject: seed 0000",
        "pop refused",
        "pop stat 3",
        "smtp refused 535",
        "smtp 235",
    ] {
        assert!(
            out.contains(want),
            "{want:?} missing in:\n{out}\n{}",
            stderr(&o)
        );
    }
    assert!(delivered(&p.mail, "bob@example.test", &format!("via-proxy-{imap}")).contains("hello"));
}

#[test]
fn hostile_input_before_login_gets_protocol_errors_and_never_reaches_the_server() {
    let p = Proxy::start("", &[]);
    // IMAP: commands before login, bad base64, a PLAIN message of two parts, pipelining.
    let mut w = p.wire(p.imap);
    assert!(
        w.ask("a1 SELECT INBOX\r\n")
            .starts_with("a1 BAD log in first")
    );
    assert!(
        w.ask("a2 AUTHENTICATE PLAIN !!notbase64\r\n")
            .starts_with("a2 BAD")
    );
    assert!(
        w.ask("a3 AUTHENTICATE PLAIN YWJj\r\n")
            .starts_with("a3 BAD")
    );
    assert!(w.ask("a4 LOGIN \"unterminated\r\n").starts_with("a4 BAD"));
    assert!(w.ask("a5 AUTHENTICATE CRAM-MD5\r\n").starts_with("a5 NO"));
    // A failed login pipelined with a command: the command is answered here, not relayed.
    let refused = w.ask("a6 LOGIN alice@example.test wrong\r\na7 SELECT INBOX\r\n");
    assert!(
        refused.starts_with("a6 NO [AUTHENTICATIONFAILED]"),
        "{refused}"
    );
    assert!(w.line().starts_with("a7 BAD log in first"));
    // LOGIN with a synchronising literal for the user and a non-synchronising one for the
    // password, pipelined with SELECT: the SELECT goes to Dovecot after the login.
    assert!(w.ask("a8 LOGIN {18}\r\n").starts_with('+'));
    let done = w.ask(&format!(
        "alice@example.test {{{}+}}\r\n{PW}\r\na9 SELECT INBOX\r\n",
        PW.len()
    ));
    assert!(done.starts_with("a8 OK [CAPABILITY"), "{done}");
    assert!(
        !done.contains("AUTH="),
        "mechanisms are hidden after login: {done}"
    );
    let sel = w.line();
    assert!(sel.starts_with('*'), "relayed to Dovecot: {sel}");

    // A huge literal before login: refused and closed (its bytes would follow at once).
    let mut w = p.wire(p.imap);
    let bye = w.ask("b1 LOGIN {100000000}\r\n");
    assert!(bye.starts_with("* BYE literal of 100000000 bytes"), "{bye}");
    assert!(w.closed());
    // An endless line: refused and closed.
    let mut w = p.wire(p.imap);
    let bye = w.ask(&format!("c1 LOGIN {}\r\n", "x".repeat(20_000)));
    assert!(bye.starts_with("* BYE line too long"), "{bye}");
    assert!(w.closed());

    // POP3: nothing but the login commands before login.
    let mut w = p.wire(p.pop);
    assert!(w.ask("STAT\r\n").starts_with("-ERR log in first"));
    assert!(w.ask("RETR 1\r\n").starts_with("-ERR log in first"));
    assert!(w.ask("PASS early\r\n").starts_with("-ERR USER first"));
    assert!(
        w.ask("AUTH PLAIN %%%\r\n")
            .starts_with("-ERR invalid base64")
    );
    assert!(
        w.ask("AUTH XOAUTH2 abc\r\n")
            .starts_with("-ERR only AUTH PLAIN")
    );
    assert!(w.ask("USER alice@example.test\r\n").starts_with("+OK"));
    let refused = w.ask("PASS wrong\r\nSTAT\r\n");
    assert!(refused.starts_with("-ERR [AUTH]"), "{refused}");
    assert!(
        w.line().starts_with("-ERR log in first"),
        "pipelined STAT not relayed"
    );
    let ok = w.ask(&format!(
        "AUTH PLAIN {}\r\nSTAT\r\n",
        plain_b64("alice@example.test", PW)
    ));
    assert!(ok.starts_with("+OK logged in"), "{ok}");
    assert!(w.line().starts_with("+OK 0 0"), "STAT answered by Dovecot");

    // SMTP: no mail transaction before authentication.
    let mut w = p.wire(p.smtp);
    assert!(w.ask("MAIL FROM:<a@example.test>\r\n").starts_with("530"));
    assert!(w.ask("RCPT TO:<b@example.test>\r\n").starts_with("530"));
    assert!(w.ask("DATA\r\n").starts_with("530"));
    assert!(w.ask("AUTH PLAIN !!!\r\n").starts_with("501"));
    assert!(w.ask("AUTH LOGIN\r\n").starts_with("334"));
    assert!(w.ask("***notbase64\r\n").starts_with("334"));
    assert!(w.ask("cGFzcw==\r\n").starts_with("501"));
    assert!(w.ask("AUTH CRAM-MD5\r\n").starts_with("504"));
    let refused = w.ask(&format!(
        "AUTH PLAIN {}\r\nMAIL FROM:<a@example.test>\r\n",
        plain_b64("alice@example.test", "wrong")
    ));
    assert!(refused.starts_with("535"), "{refused}");
    assert!(w.line().starts_with("530"), "pipelined MAIL not relayed");
    let ok = w.ask(&format!(
        "AUTH PLAIN {}\r\n",
        plain_b64("alice@example.test", PW)
    ));
    assert!(ok.starts_with("235"), "{ok}");
    assert!(w.ask("NOOP\r\n").starts_with("250"), "relayed to Dovecot");
    // Still alive for everyone after all that.
    assert!(p.daemon_alive());
}

impl Proxy {
    fn daemon_alive(&self) -> bool {
        let pid = self.daemon.as_ref().unwrap().id();
        std::path::Path::new(&format!("/proc/{pid}")).exists()
            && TcpStream::connect(("127.0.0.1", self.imap)).is_ok()
    }
}

#[test]
fn starttls_listeners_require_tls_before_login_and_python_clients_use_them() {
    let p = Proxy::start(", tls = \"starttls\"", &[]);
    seed_mailbox(&p.mail, "alice@example.test", 2, 500);
    // Before STARTTLS: no login offered, and refused if tried.
    let mut w = p.wire(p.imap);
    let caps = w.ask("a1 CAPABILITY\r\n");
    assert!(
        caps.contains("STARTTLS") && caps.contains("LOGINDISABLED"),
        "{caps}"
    );
    w.line();
    assert!(
        w.ask(&format!("a2 LOGIN alice@example.test {PW}\r\n"))
            .starts_with("a2 NO [PRIVACYREQUIRED]")
    );
    let mut w = p.wire(p.pop);
    assert!(
        w.ask("USER alice@example.test\r\n")
            .starts_with("-ERR [AUTH] STLS first")
    );
    let mut w = p.wire(p.smtp);
    assert!(
        w.ask("AUTH PLAIN AGEAYg==\r\n")
            .starts_with("530 5.7.0 Must issue a STARTTLS")
    );
    // Plaintext pipelined after STARTTLS is refused (it would be an injection).
    let mut w = p.wire(p.imap);
    let ok = w.ask("a1 STARTTLS\r\na2 LOGIN x y\r\n");
    assert!(ok.starts_with("a1 OK"), "{ok}");
    assert!(w.closed());

    let cert = p.cert();
    assert!(cert.exists(), "generated certificate at {}", cert.display());
    let (imap, pop, smtp) = (p.imap, p.pop, p.smtp);
    let script = format!(
        "import ssl, imaplib, poplib, smtplib\nctx = ssl.create_default_context(cafile='{cert}')\n\
         m = imaplib.IMAP4('localhost', {imap})\nm.starttls(ctx)\nprint('imap', m.login('alice@example.test', '{PW}')[0])\n\
         print('exists', m.select('INBOX')[1][0].decode())\nm.logout()\n\
         p = poplib.POP3('localhost', {pop})\np.stls(ctx)\np.user('alice@example.test')\nprint('pop', p.pass_('{PW}'))\n\
         print('pop stat', p.stat()[0])\np.quit()\n\
         s = smtplib.SMTP('localhost', {smtp})\ns.starttls(context=ctx)\nprint('smtp', s.login('alice@example.test', '{PW}')[0])\ns.quit()\n",
        cert = cert.display()
    );
    let o = p.python(&script);
    let out = stdout(&o);
    assert_exit(&o, 0);
    for want in [
        "imap OK",
        "exists 2",
        "pop b'+OK logged in'",
        "pop stat 2",
        "smtp 235",
    ] {
        assert!(
            out.contains(want),
            "{want:?} missing in:\n{out}\n{}",
            stderr(&o)
        );
    }
}

#[test]
fn mbsync_and_msmtp_with_a_plain_password_through_tls_listeners() {
    need("mbsync", "apt-get install -y isync");
    need("msmtp", "apt-get install -y msmtp");
    // Implicit TLS: msmtp connects with `tls_starttls off`; mbsync with SSLType IMAPS.
    let p = Proxy::start(", tls = \"implicit\"", &[]);
    seed_mailbox(&p.mail, "alice@example.test", 4, 2_000);
    let dir = p.sb.dir.path();
    let cert = p.cert();
    std::fs::create_dir_all(dir.join("mail")).unwrap();
    let rc = dir.join("mbsyncrc");
    std::fs::write(
        &rc,
        format!(
            "IMAPAccount p\nHost localhost\nPort {}\nUser alice@example.test\nPass {PW}\nSSLType IMAPS\n\
             CertificateFile {}\nAuthMechs LOGIN\n\nIMAPStore p-remote\nAccount p\n\n\
             MaildirStore p-local\nPath {d}/mail/\nInbox {d}/mail/INBOX\n\n\
             Channel p\nFar :p-remote:\nNear :p-local:\nPatterns INBOX\nCreate Near\nSyncState *\n",
            p.imap,
            cert.display(),
            d = dir.display()
        ),
    )
    .unwrap();
    let mut c = p.sb.program("mbsync");
    c.args(["-c", rc.to_str().unwrap(), "-a"]);
    let o = run_with_timeout(c, Duration::from_secs(60));
    assert_exit(&o, 0);
    let got = subjects(&dir.join("mail/INBOX"));
    assert_eq!(got.len(), 4, "{got:?}\n{}", stderr(&o));

    let msmtprc = dir.join("msmtprc");
    std::fs::write(
        &msmtprc,
        format!(
            "account p\nhost localhost\nport {}\ntls on\ntls_starttls off\ntls_trust_file {}\n\
             auth plain\nuser alice@example.test\npassword {PW}\nfrom alice@example.test\naccount default : p\n",
            p.smtp,
            cert.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &msmtprc,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let mut c = p.sb.program("msmtp");
    c.args(["-C", msmtprc.to_str().unwrap(), "bob@example.test"]);
    let msg = b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: msmtp-via-proxy\r\n\r\nhi\r\n";
    let o = run_with_input(c, msg, Duration::from_secs(60));
    assert_exit(&o, 0);
    assert!(delivered(&p.mail, "bob@example.test", "msmtp-via-proxy").contains("hi"));
}

#[test]
fn debug_trace_shows_the_dialogue_without_any_credential() {
    let p = Proxy::start("", &["--debug"]);
    let script = format!(
        "import imaplib, smtplib, poplib\nm = imaplib.IMAP4('127.0.0.1', {})\nm.login('alice@example.test', '{PW}')\n\
         m.select('INBOX')\nm.logout()\n\
         m = imaplib.IMAP4('127.0.0.1', {0})\nm.authenticate('PLAIN', lambda _: b'\\0alice@example.test\\0{PW}')\nm.logout()\n\
         p = poplib.POP3('127.0.0.1', {})\np.user('alice@example.test')\np.pass_('{PW}')\np.quit()\n\
         s = smtplib.SMTP('127.0.0.1', {})\ns.login('alice@example.test', '{PW}')\ns.quit()\n",
        p.imap, p.pop, p.smtp
    );
    let o = p.python(&script);
    assert_exit(&o, 0);
    std::thread::sleep(Duration::from_millis(300));
    let log = p.log();
    for want in [
        "LOGIN [redacted]",
        "AUTHENTICATE XOAUTH2 [redacted]",
        "PASS [redacted]",
        "AUTH PLAIN [redacted]",
        "SELECT INBOX",
        "bytes redacted]",
    ] {
        assert!(log.contains(want), "{want:?} missing in the trace:\n{log}");
    }
    let token = stdout(&p.sb.run(&["token", "m"])).trim().to_owned();
    assert!(token.len() > 20, "mailoauth token m works");
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for secret in [
        PW.to_owned(),
        token.clone(),
        token[..20].to_owned(),
        b64(&format!("\0alice@example.test\0{PW}")),
        b64(PW),
        b64(&format!(
            "user=alice@example.test\x01auth=Bearer {token}\x01\x01"
        ))[..40]
            .to_owned(),
    ] {
        assert!(
            !log.contains(&secret),
            "a secret leaked into the trace:\n{log}"
        );
    }
}

#[test]
fn sighup_moves_listeners_sigterm_drains_and_idle_sessions_close() {
    let mut p = Proxy::start(", idle_timeout = 2", &[]);
    // A logged-in session that stays busy survives a SIGHUP restart of the listeners.
    let mut busy = p.wire(p.imap);
    assert!(
        busy.ask(&format!("a1 LOGIN alice@example.test {PW}\r\n"))
            .starts_with("a1 OK")
    );
    // Move IMAP to a new port.
    let new_port = free_port();
    let cfg = std::fs::read_to_string(&p.sb.config).unwrap();
    std::fs::write(
        &p.sb.config,
        cfg.replace(
            &format!("127.0.0.1:{}", p.imap),
            &format!("127.0.0.1:{new_port}"),
        ),
    )
    .unwrap();
    p.signal("-HUP");
    p.wait_listening(new_port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", p.imap)).is_ok() {
        assert!(Instant::now() < deadline, "the old port still listens");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        busy.ask("a2 NOOP\r\n").starts_with("a2 OK"),
        "old session kept"
    );
    // Idle for longer than idle_timeout: closed.
    std::thread::sleep(Duration::from_secs(3));
    let idle = Instant::now();
    assert!(busy.closed(), "idle session closed");
    assert!(
        idle.elapsed() < Duration::from_secs(5),
        "closed by the idle timer, not the read timeout"
    );
    p.imap = new_port;

    // SIGTERM: listeners close at once, a running session may finish, then the daemon exits.
    let mut w = p.wire(p.imap);
    assert!(
        w.ask(&format!("b1 LOGIN alice@example.test {PW}\r\n"))
            .starts_with("b1 OK")
    );
    p.signal("-TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", p.imap)).is_ok() {
        assert!(Instant::now() < deadline, "still listening after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        w.ask("b2 SELECT INBOX\r\n").starts_with('*'),
        "session still served while draining"
    );
    w.ask("b3 LOGOUT\r\n");
    drop(w);
    let started = Instant::now();
    let mut d = p.daemon.take().unwrap();
    let status = loop {
        if let Some(s) = d.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "daemon did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{}", p.log());
    assert!(p.log().contains("daemon stopped"), "{}", p.log());
}

#[test]
fn bad_proxy_configs_are_refused_with_the_line_to_fix() {
    let srv = OAuthServer::start(&[]);
    let cases = [
        (
            "proxy = { imap = \"0.0.0.0:1143\", password = \"x\" }",
            "not a loopback address",
        ),
        (
            "proxy = { imap = \"localhost\", password = \"x\" }",
            "is not IP:PORT",
        ),
        ("proxy = { imap = \"127.0.0.1:1143\" }", "needs `password"),
        (
            "proxy = { imap = \"127.0.0.1:1143\", password = \"x\", tls = \"implicit\", cert = \"/nonexistent.pem\" }",
            "give both `cert` and `key`",
        ),
        (
            "proxy = { imap = \"127.0.0.1:1143\", password = \"x\", tls = \"implicit\", cert = \"/etc/hostname\", key = \"/etc/hostname\" }",
            "expected a PEM file",
        ),
    ];
    for (table, want) in cases {
        let cfg = accounts(&srv.issuer, "file").replacen(
            "[accounts.pub]\n",
            &format!("[accounts.pub]\n{table}\n"),
            1,
        );
        assert!(cfg.contains(table), "fixture has [accounts.pub]");
        let sb = Sandbox::new(&cfg);
        let o = run_with_timeout(sb.cmd(&["daemon"]), Duration::from_secs(20));
        assert_ne!(o.status.code(), Some(0));
        let err = stderr(&o);
        assert!(
            err.contains(want) && err.contains("config.toml"),
            "{table}: {err}"
        );
    }
}

#[test]
fn proxy_logins_take_the_token_from_the_daemons_memory() {
    let p = Proxy::start("", &[]);
    let login = |p: &Proxy| {
        let mut w = p.wire(p.imap);
        w.ask(&format!("a1 LOGIN alice@example.test {PW}\r\n"))
    };
    assert!(login(&p).starts_with("a1 OK"));
    // With the store gone, only the daemon's memory can still answer.
    let tokens = p.sb.state().join("tokens");
    let moved = p.sb.state().join("tokens-away");
    std::fs::rename(&tokens, &moved).unwrap();
    let second = login(&p);
    std::fs::rename(&moved, &tokens).unwrap();
    assert!(second.starts_with("a1 OK"), "{second}\n{}", p.log());
}

impl Proxy {
    /// The daemon's resident memory (KiB), from /proc.
    fn rss_kib(&self) -> u64 {
        let pid = self.daemon.as_ref().unwrap().id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

#[test]
fn literal_flood_before_login_is_cut_off_with_flat_memory() {
    let p = Proxy::start("", &[]);
    let before = p.rss_kib();
    // The reported attack: one LOGIN announcing literal after literal, as fast
    // as the socket takes them. The old proxy read it all (400 MB in 3 s).
    let mut s = TcpStream::connect(("127.0.0.1", p.imap)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let chunk = format!(" {{8192+}}\r\n{}", "x".repeat(8192));
    let started = Instant::now();
    let (mut sent, mut cut_off) = (0usize, false);
    s.write_all(b"z1 LOGIN").unwrap();
    while started.elapsed() < Duration::from_secs(3) {
        if s.write_all(chunk.as_bytes()).is_err() {
            cut_off = true;
            break;
        }
        sent += chunk.len();
    }
    let grown = p.rss_kib().saturating_sub(before);
    assert!(cut_off, "still reading after {sent} bytes");
    // What the kernel's socket buffers took before the reset, no more.
    assert!(sent < 32 << 20, "{sent} bytes went in");
    assert!(grown < 16 * 1024, "the daemon grew by {grown} KiB");

    // A third literal in one command: the protocol's error, then closed.
    let mut w = p.wire(p.imap);
    let x = "x".repeat(8192);
    w.w.write_all(format!("z2 LOGIN {{8192+}}\r\n{x} {{8192+}}\r\n{x} {{8192+}}\r\n").as_bytes())
        .unwrap();
    let bye = w.line();
    assert!(bye.starts_with("* BYE more than 2 literals"), "{bye}");
    assert!(w.closed());

    // 64 KiB of harmless commands before login: answered, then cut off.
    let mut w = p.wire(p.imap);
    let noop = "a NOOP\r\n";
    w.w.write_all(noop.repeat(64 * 1024 / noop.len()).as_bytes())
        .unwrap();
    let mut last = String::new();
    let mut answered = 0;
    loop {
        let l = w.line();
        if l.is_empty() {
            break;
        }
        answered += 1;
        last = l;
    }
    assert!(
        last.starts_with("* BYE too much input before login"),
        "{last}"
    );
    assert_eq!(answered, 64 * 1024 / noop.len() + 1);
    assert!(p.rss_kib().saturating_sub(before) < 16 * 1024);
    assert!(p.daemon_alive());
}

#[test]
fn debug_trace_never_shows_the_password_in_any_login_form() {
    let p = Proxy::start("", &["--debug"]);
    let user = "alice@example.test";
    let n = user.len();
    // IMAP: each form on a fresh connection, all with the right password (so
    // none is slowed down by the guessing brake); (what to send, answer wanted).
    let imap: Vec<Vec<(String, &str)>> = vec![
        // A literal user, then the password quoted on the line after it.
        vec![
            (format!("a1 LOGIN {{{n}}}\r\n"), "+"),
            (format!("{user} \"{PW}\"\r\n"), "a1 OK"),
        ],
        // Two literals.
        vec![
            (format!("a2 LOGIN {{{n}}}\r\n"), "+"),
            (format!("{user} {{{}+}}\r\n{PW}\r\n", PW.len()), "a2 OK"),
        ],
        vec![(format!("a3 LOGIN {user}  {PW}\r\n"), "a3 OK")],
        vec![(format!("a4  LOGIN {user} {PW}\r\n"), "a4 OK")],
        vec![(format!(" a5 LOGIN {user} {PW}\r\n"), "a5 OK")],
        vec![(format!("a6\tLOGIN {user} {PW}\r\n"), "a6")],
        vec![(format!("a7 LOGIN {user} \"{PW}\r\n"), "a7 BAD")],
        vec![(format!("a8 LOGIN {user} {PW} extra\r\n"), "a8 BAD")],
        vec![(
            format!("a9 AUTHENTICATE PLAIN {}\r\n", plain_b64(user, PW)),
            "a9 OK",
        )],
        vec![
            ("b1 AUTHENTICATE PLAIN\r\n".into(), "+"),
            (format!("{}\r\n", plain_b64(user, PW)), "b1 OK"),
        ],
        vec![(format!("a0 {PW}\r\n"), "a0 BAD")],
    ];
    for exchange in imap {
        let mut w = p.wire(p.imap);
        for (send, want) in exchange {
            let got = w.ask(&send);
            assert!(got.starts_with(want), "{send:?}: {got}");
        }
    }
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let pop: Vec<Vec<(String, &str)>> = vec![
        vec![
            (format!("USER {user}\r\n"), "+OK"),
            (format!(" PASS {PW}\r\n"), "-ERR"),
            (format!("PASS  {PW}\r\n"), "-ERR [AUTH]"),
        ],
        vec![
            ("AUTH PLAIN\r\n".into(), "+"),
            (format!("{}\r\n", plain_b64(user, PW)), "+OK"),
        ],
        vec![(format!(" AUTH PLAIN {}\r\n", plain_b64(user, PW)), "-ERR")],
    ];
    for exchange in pop {
        let mut w = p.wire(p.pop);
        for (send, want) in exchange {
            let got = w.ask(&send);
            assert!(got.starts_with(want), "{send:?}: {got}");
        }
    }
    let smtp: Vec<Vec<(String, &str)>> = vec![
        vec![
            ("AUTH LOGIN\r\n".into(), "334"),
            (format!("{}\r\n", b64(user)), "334"),
            (format!("{}\r\n", b64(PW)), "235"),
        ],
        vec![
            (format!("AUTH LOGIN {}\r\n", b64(user)), "334"),
            (format!("{}\r\n", b64(PW)), "235"),
        ],
        vec![(format!(" AUTH PLAIN {}\r\n", plain_b64(user, PW)), "530")],
        vec![(format!("AUTH  PLAIN {}\r\n", plain_b64(user, PW)), "")],
        vec![(format!("{PW}\r\n"), "530")],
    ];
    for exchange in smtp {
        let mut w = p.wire(p.smtp);
        for (send, want) in exchange {
            let got = w.ask(&send);
            assert!(got.starts_with(want), "{send:?}: {got}");
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let log = p.log();
    for want in [
        "a1 LOGIN [redacted]",
        "a4 LOGIN [redacted]",
        "a5 LOGIN [redacted]",
        "AUTH LOGIN",
    ] {
        assert!(log.contains(want), "{want:?} missing in the trace:\n{log}");
    }
    for secret in [
        PW.to_owned(),
        PW.to_ascii_uppercase(),
        b64(PW),
        plain_b64(user, PW),
        b64(&format!("\0{user}\0{PW}")),
    ] {
        for (i, l) in log.lines().enumerate() {
            assert!(
                !l.contains(&secret),
                "the password in the trace, line {i}: {l}"
            );
        }
    }
}

impl Proxy {
    /// Does the daemon's token socket answer a ping within a second?
    fn token_socket_answers(&self) -> bool {
        use mailoauth::ipc::{Op, Reply, Request, call_at};
        let sock = self.sb.dir.path().join("run/mailoauth/daemon.sock");
        let req = Request::new(&self.sb.config, Op::Ping);
        matches!(call_at(&sock, &req, Duration::from_secs(1)), Some(Reply::Value(v)) if v == "pong")
    }

    /// The daemon's soft open-file limit, from /proc.
    fn nofile(&self) -> u64 {
        let pid = self.daemon.as_ref().unwrap().id();
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let l = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        l.split_whitespace().nth(3).unwrap().parse().unwrap()
    }
}

/// The first line a new IMAP connection gets ("" when closed at once).
fn first_line(port: u16) -> (String, Option<Wire>) {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = Wire {
        r: BufReader::new(s.try_clone().unwrap()),
        w: s,
    };
    let l = w.line();
    (l, Some(w))
}

fn login_ok(w: &mut Wire) -> bool {
    w.ask(&format!("a LOGIN alice@example.test {PW}\r\n"))
        .starts_with("a OK")
}

#[test]
fn connection_cap_keeps_the_token_socket_answering() {
    let p = Proxy::start(", max_sessions = 4, max_unauthenticated = 2", &[]);
    let too_many = "* BYE [UNAVAILABLE] too many connections";
    // Two idle connections fill the unauthenticated places.
    let (_, u1) = first_line(p.imap);
    let (_, u2) = first_line(p.imap);
    let (mut u1, mut u2) = (u1.unwrap(), u2.unwrap());
    let (l, w) = first_line(p.imap);
    assert!(l.starts_with(too_many), "{l}");
    assert!(w.unwrap().closed());
    assert!(p.token_socket_answers());
    // Logged in, they leave the unauthenticated places to others, up to max_sessions.
    assert!(login_ok(&mut u1) && login_ok(&mut u2));
    let (g3, u3) = first_line(p.imap);
    let (g4, _u4) = first_line(p.imap);
    assert!(g3.starts_with("* OK") && g4.starts_with("* OK"), "{g3}{g4}");
    let (l, _) = first_line(p.imap);
    assert!(l.starts_with(too_many), "{l}");
    // A connection that ends gives its place back.
    drop(u3);
    let deadline = Instant::now() + Duration::from_secs(2);
    let (again, w) = loop {
        let (l, w) = first_line(p.imap);
        if !l.starts_with(too_many) || Instant::now() > deadline {
            break (l, w);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(again.starts_with("* OK"), "{again}");
    drop(w);
    assert!(p.token_socket_answers());
    let refused = p.log().matches("refusing connections").count();
    assert_eq!(refused, 1, "one log line per interval:\n{}", p.log());

    // With 256 files the daemon fits its caps to them: 300 idle connections do
    // not take the token socket's descriptors, and accepts do not spin.
    let p = Proxy::start_after("", &[], "ulimit -n 256");
    assert_eq!(p.nofile(), 256);
    let flood: Vec<_> = (0..300).map(|_| first_line(p.imap).1).collect();
    assert!(p.token_socket_answers(), "{}", p.log());
    assert!(
        p.log().contains("the open-file limit only 96"),
        "{}",
        p.log()
    );
    assert!(p.log().matches("cannot accept").count() <= 2, "{}", p.log());
    drop(flood);
    std::thread::sleep(Duration::from_millis(300));
    let (g, w) = first_line(p.imap);
    assert!(g.starts_with("* OK"), "{g}");
    assert!(login_ok(&mut w.unwrap()));

    // A soft limit below the caps is raised to fit them (2 descriptors a session and a reserve).
    let p = Proxy::start_after("", &[], "ulimit -S -n 256");
    assert_eq!(p.nofile(), 2 * 2000 + 64);
}

#[test]
fn wrong_passwords_for_a_user_are_slowed_but_right_ones_are_not() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let p = Proxy::start("", &[]);
    let port = p.imap;
    let attack = Duration::from_secs(3);
    let stop = Instant::now() + attack;
    let wrong = Arc::new(AtomicUsize::new(0));
    // 200 connections guess alice's password as fast as they are answered,
    // reconnecting when closed.
    let guessers: Vec<_> = (0..200)
        .map(|i| {
            let wrong = wrong.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while Instant::now() < stop {
                    let Ok(s) = TcpStream::connect(("127.0.0.1", port)) else {
                        continue;
                    };
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let mut w = s;
                    let mut l = String::new();
                    loop {
                        let left = stop.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return;
                        }
                        w.set_read_timeout(Some(left)).unwrap();
                        r.get_ref().set_read_timeout(Some(left)).unwrap();
                        l.clear();
                        match r.read_line(&mut l) {
                            Ok(0) | Err(_) => break,
                            Ok(_) if l.starts_with("g NO") => {
                                wrong.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => {}
                        }
                        n += 1;
                        let guess = format!("g LOGIN alice@example.test guess-{i}-{n}\r\n");
                        if w.write_all(guess.as_bytes()).is_err() {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    // In the middle of it, the right password is answered at once.
    std::thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    let (g, w) = first_line(port);
    assert!(g.starts_with("* OK"), "{g}");
    assert!(login_ok(&mut w.unwrap()), "{}", p.log());
    let took = t.elapsed();
    for g in guessers {
        g.join().unwrap();
    }
    let wrong = wrong.load(Ordering::Relaxed);
    assert!(
        took < Duration::from_millis(700),
        "the right password took {took:?}"
    );
    assert!(
        wrong as f64 / attack.as_secs_f64() <= 5.0,
        "{wrong} wrong-password answers in {attack:?}"
    );
    let log = p.log();
    assert!(
        log.contains("wrong password for `alice@example.test`"),
        "{log}"
    );
    assert!(!log.contains("guess-"), "a password in the log:\n{log}");

    // 200 simultaneous right logins (guessers' connections still waiting for
    // their answers) all pass the local check at once. Upstream, the Dovecot
    // fixture runs at most 100 imap-login processes (its default), so logins
    // past those may be refused by Dovecot: that is not the brake.
    let started = Instant::now();
    let logins: Vec<_> = (0..200)
        .map(|_| {
            std::thread::spawn(move || {
                let (g, w) = first_line(port);
                let mut w = w.unwrap();
                // 200 upstream TLS logins at once take a while on two cores.
                w.w.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let a = w.ask(&format!("a LOGIN alice@example.test {PW}\r\n"));
                format!("{g}{a}")
            })
        })
        .collect();
    let answers: Vec<String> = logins.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = answers.iter().filter(|a| a.contains("\na OK")).count();
    let refused_upstream = answers
        .iter()
        .filter(|a| a.contains("\na NO [UNAVAILABLE]"))
        .count();
    let other: Vec<&String> = answers
        .iter()
        .filter(|a| !a.contains("\na OK") && !a.contains("\na NO [UNAVAILABLE]"))
        .collect();
    assert!(
        other.is_empty(),
        "{} of 200: {:?}",
        other.len(),
        &other[..other.len().min(3)]
    );
    assert_eq!(ok + refused_upstream, 200);
    assert!(ok >= 50, "only {ok} logged in upstream");
    eprintln!(
        "200 simultaneous right logins: {ok} in, {refused_upstream} refused by Dovecot, {:?}",
        started.elapsed()
    );
}
