//! `mailoauth snippet` for the clients people run, each proven by running the
//! real program with the snippet as printed against the private Dovecot/Postfix
//! (tests/common/mail_server.rs): it reads the INBOX, or sends a message that
//! arrives. Every world here is awkward on purpose: the account is named
//! `work.alice@x-1`, and the binary, the CA file and $HOME live under a directory
//! whose name holds a space, both quotes and a `$`, so a snippet that quotes a
//! value wrongly for the shell or for its client's own syntax fails here.
//! Also: the client list, aliases, Exchange's non-mail folders left out, and the
//! device flow's QR code.

mod common;

use common::*;
use std::io::BufRead as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The awkward account name: every character the config's alphabet allows
/// besides letters and digits.
const NAME: &str = "work.alice@x-1";
/// The awkward directory name (space, both quotes, a dollar).
const AWKWARD: &str = "it's a \"mail\" $dir";
const PW: &str = "local-proxy-pw";

/// A logged-in awkward account against Dovecot, and where its files live.
struct World {
    _srv: OAuthServer,
    mail: MailServer,
    sb: Sandbox,
    /// A copy of `mailoauth` under the awkward directory: snippets name it.
    exe: PathBuf,
    /// $HOME for the clients, under the awkward directory (world-readable, so
    /// getmail's delivery user can reach its Maildir).
    home: PathBuf,
    _root: tempfile::TempDir,
    daemon: Option<Child>,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `provider`: "custom" or "microsoft"; `mail_env`: start.sh options;
/// `extra`: more lines for the account's table (e.g. a proxy).
fn world_with(provider: &str, mail_env: &[(&str, &str)], extra: &str) -> World {
    let srv = OAuthServer::start(&[]);
    let mail = MailServer::start_with(&srv.issuer, mail_env);
    let root = tempfile::Builder::new()
        .prefix("moclients")
        .tempdir_in("/tmp")
        .unwrap();
    let awk = root.path().join(AWKWARD);
    for d in [root.path().to_owned(), awk.clone(), awk.join("bin")] {
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let home = awk.join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = awk.join("bin/mailoauth");
    copy_executable(Path::new(env!("CARGO_BIN_EXE_mailoauth")), &exe);
    let ca = awk.join("test ca.pem");
    std::fs::copy(mail.ca(), &ca).unwrap();
    let line = |proto: &str, key: &str, tls: &str| {
        format!(
            "{proto} = {{ host = \"localhost\", port = {}, tls = \"{tls}\" }}\n",
            mail.port(key)
        )
    };
    let cfg = format!(
        "[accounts.{name}]\nprovider = \"{provider}\"\nuser = \"alice@example.test\"\nclient_id = \"native-public\"\n\
         authorize_url = \"{iss}/auth\"\ntoken_url = \"{iss}/token\"\nredirect_uri = \"http://127.0.0.1/callback\"\n\
         scopes = [{ALL_SCOPES}]\nstore = \"file\"\n{imap}{pop}{smtp}ca_file = {ca}\n{extra}",
        name = toml_str(NAME),
        iss = srv.issuer,
        imap = line("imap", "imap_tls", "implicit"),
        pop = line("pop", "pop", "starttls"),
        smtp = line("smtp", "submission", "starttls"),
        ca = toml_str(ca.to_str().unwrap()),
    );
    let sb = Sandbox::new(&cfg);
    assert_exit(&sb.login_with_browser(NAME, BrowserMode::Follow).0, 0);
    World {
        _srv: srv,
        mail,
        sb,
        exe,
        home,
        _root: root,
        daemon: None,
    }
}

fn world() -> World {
    world_with("custom", &[], "")
}

impl World {
    /// `snippet NAME client`, run by the awkward copy of the binary.
    fn snippet(&self, client: &str) -> String {
        let mut c = self.sb.program(self.exe.to_str().unwrap());
        c.args(["snippet", NAME, client]);
        let o = run_with_timeout(c, Duration::from_secs(30));
        assert_exit(&o, 0);
        stdout(&o)
    }

    /// A client program with $HOME set to the awkward home.
    fn program(&self, program: &str) -> Command {
        let mut c = self.sb.program(program);
        c.env("HOME", &self.home).current_dir(&self.home);
        c
    }

    fn dovecot_log(&self) -> String {
        std::fs::read_to_string(self.mail.ports["dovecot_log"].as_str().unwrap()).unwrap()
    }

    /// Dovecot's successful logins for alice with `method` (e.g. "OAUTHBEARER").
    fn logins(&self, service: &str, method: &str) -> usize {
        self.dovecot_log()
            .lines()
            .filter(|l| {
                l.contains(&format!(
                    "{service}-login: Info: Login: user=<alice@example.test>"
                )) && l.contains(&format!("method={method},"))
            })
            .count()
    }

    fn write(&self, file: &str, text: &str) -> PathBuf {
        let p = self.home.join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    fn mark(&self, what: &str) -> String {
        format!("{what}-{}-{}", now(), std::process::id())
    }
}

fn run_ok(c: Command, what: &str) -> Output {
    let o = run_with_timeout(c, Duration::from_secs(60));
    assert!(
        o.status.success(),
        "{what} failed ({:?})\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    o
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[test]
fn mutt_reads_imap_with_oauthbearer_or_xoauth2_and_sends_over_smtp() {
    need("mutt", "apt-get install -y mutt");
    let w = world();
    seed_mailbox(&w.mail, "alice@example.test", 3, 1_000);
    let rc = w.snippet("mutt");
    assert!(
        rc.contains("imap_authenticators = 'oauthbearer:xoauth2'"),
        "{rc}"
    );
    let test_only = "\nset header_cache = ''\nset message_cachedir = ''\nset record = ''\n";
    let muttrc = w.write("muttrc", &format!("{rc}{test_only}"));
    let run = |rc: &Path| {
        format!(
            "env HOME={} TERM=xterm mutt -n -F {}",
            sh_quote(w.home.to_str().unwrap()),
            sh_quote(rc.to_str().unwrap())
        )
    };
    // Reading: Dovecot offers both mechanisms, mutt takes the first it lists.
    assert_screen_shows(&w.sb, "mutt", &run(&muttrc), "seed 00002");
    assert_eq!(w.logins("imap", "OAUTHBEARER"), 1, "{}", w.dovecot_log());
    // The same snippet against a server that offers XOAUTH2 only (as Exchange).
    let xo = w.write(
        "muttrc-xoauth2",
        &format!(
            "{}{test_only}",
            rc.replace(
                "imap_authenticators = 'oauthbearer:xoauth2'",
                "imap_authenticators = 'xoauth2'"
            )
        ),
    );
    assert_screen_shows(&w.sb, "mutt-xoauth2", &run(&xo), "seed 00002");
    assert_eq!(w.logins("imap", "XOAUTH2"), 1, "{}", w.dovecot_log());

    // Sending, batch mode (stdin not a terminal): the message arrives.
    let mark = w.mark("mutt");
    let mut c = w.program("mutt");
    c.arg("-n")
        .arg("-F")
        .arg(&muttrc)
        .args(["-s", &mark, "--", "bob@example.test"]);
    let o = run_with_input(c, b"sent by mutt\n", Duration::from_secs(60));
    assert_exit(&o, 0);
    assert!(delivered(&w.mail, "bob@example.test", &mark).contains("sent by mutt"));
    assert!(
        w.logins("submission", "XOAUTH2") >= 1,
        "{}",
        w.dovecot_log()
    );
}

#[test]
fn getmail_fetches_new_imaps_mail_into_a_maildir_and_refuses_starttls_plainly() {
    need("getmail", "apt-get install -y getmail6");
    let w = world();
    seed_mailbox(&w.mail, "alice@example.test", 4, 1_000);
    let rc = w.snippet("getmail6");
    assert!(
        rc.contains("POP3: getmail's OAuth (use_xoauth2) works with IMAP retrievers only"),
        "{rc}"
    );
    let maildir = w.home.join(format!("Mail/{NAME}"));
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    // Tests run as root, and getmail refuses to deliver as root: its `user`
    // option makes it deliver as the mail fixture's user (the only addition).
    chown_tree(&w.home.join("Mail"), "mailoauth");
    let rc = rc.replacen(
        "[destination]\ntype = Maildir\n",
        "[destination]\ntype = Maildir\nuser = mailoauth\n",
        1,
    );
    let file = w.write("getmailrc", &rc);
    let mut c = w.program("getmail");
    c.arg("--rcfile")
        .arg(&file)
        .arg("--getmaildir")
        .arg(&w.home);
    run_ok(c, "getmail");
    assert_eq!(subjects(&maildir).len(), 4, "{}", w.dovecot_log());
    // Again: nothing new, nothing twice.
    let mut c = w.program("getmail");
    c.arg("--rcfile")
        .arg(&file)
        .arg("--getmaildir")
        .arg(&w.home);
    run_ok(c, "getmail again");
    assert_eq!(subjects(&maildir).len(), 4);

    // STARTTLS only: getmail6 cannot, and the snippet says so with the fix.
    let cfg = std::fs::read_to_string(&w.sb.config).unwrap().replace(
        &format!("port = {}, tls = \"implicit\"", w.mail.port("imap_tls")),
        &format!("port = {}, tls = \"starttls\"", w.mail.port("imap")),
    );
    std::fs::write(&w.sb.config, cfg).unwrap();
    let o = w.sb.run(&["snippet", NAME, "getmail"]);
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("no STARTTLS") && stderr(&o).contains("tls = \"implicit\""),
        "{}",
        stderr(&o)
    );
}

fn chown_tree(p: &Path, user: &str) {
    let o = Command::new("chown")
        .arg("-R")
        .arg(user)
        .arg(p)
        .output()
        .unwrap();
    assert!(o.status.success(), "chown: {}", stderr(&o));
}

#[test]
fn s_nail_reads_the_inbox_over_imap_and_sends() {
    need("s-nail", "apt-get install -y s-nail");
    let w = world();
    seed_mailbox(&w.mail, "alice@example.test", 2, 1_000);
    // Not under the awkward directory: s-nail expands `$dir` in MAILRC itself.
    let mailrc = w.sb.dir.path().join("mailrc");
    std::fs::write(&mailrc, w.snippet("s-nail")).unwrap();
    let snail = || {
        let mut c = w.program("s-nail");
        c.env("MAILRC", &mailrc).args(["-#", "-A", NAME]);
        c
    };
    let mut c = snail();
    c.args(["-Y", "file +INBOX", "-Y", "headers", "-Y", "quit"]);
    let o = run_ok(c, "s-nail reading");
    assert!(
        stdout(&o).contains("seed 00001"),
        "{}\n{}",
        stdout(&o),
        stderr(&o)
    );

    let mark = w.mark("s-nail");
    let mut c = snail();
    c.args(["-s", &mark, "bob@example.test"]);
    let o = run_with_input(c, b"sent by s-nail\n", Duration::from_secs(60));
    assert_exit(&o, 0);
    assert!(delivered(&w.mail, "bob@example.test", &mark).contains("sent by s-nail"));
}

#[test]
fn fetchmail_goes_through_the_proxy_listener() {
    need("fetchmail", "apt-get install -y fetchmail");
    let port = free_port();
    // Without a proxy the snippet says what to add.
    let plain = world();
    let s = plain.snippet("fetchmail");
    assert!(
        s.contains("has no proxy yet") && s.contains(&format!("[accounts.{NAME}.proxy]")),
        "{s}"
    );
    drop(plain);

    let mut w = world_with(
        "custom",
        &[],
        &format!(
            "proxy = {{ imap = \"127.0.0.1:{port}\", password = {{ env = \"PROXY_PW\" }} }}\n"
        ),
    );
    seed_mailbox(&w.mail, "alice@example.test", 3, 1_000);
    let mut d = w.sb.cmd(&["daemon"]);
    d.env("PROXY_PW", PW)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    w.daemon = Some(d.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the proxy did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = w.snippet("fetchmail");
    assert!(
        s.contains(&format!("poll \"127.0.0.1\" service {port} protocol IMAP")),
        "{s}"
    );
    assert!(!s.contains("has no proxy yet"), "{s}");
    let rc = w.write("fetchmailrc", &s.replace("PROXY-PASSWORD", PW));
    let out = w.home.join("fetched.mbox");
    let mut c = w.program("fetchmail");
    c.arg("-f")
        .arg(&rc)
        .arg("--idfile")
        .arg(w.home.join("fetchids"))
        .arg("--mda")
        .arg(format!(
            "sh -c 'cat >> {}'",
            sh_quote(out.to_str().unwrap()).replace('\'', "'\\''")
        ));
    run_ok(c, "fetchmail");
    let got = std::fs::read_to_string(&out).unwrap_or_default();
    for i in 0..3 {
        assert!(got.contains(&format!("Subject: seed {i:05}")), "{got}");
    }
}

#[test]
fn git_send_email_sends_a_patch_through_mailoauth_send() {
    need("git", "apt-get install -y git git-email");
    let w = world();
    let gitconfig = w.write("gitconfig", &w.snippet("git"));
    let repo = w.home.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        let mut c = w.program("git");
        c.current_dir(&repo)
            .env("GIT_CONFIG_GLOBAL", &gitconfig)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Alice")
            .env("GIT_AUTHOR_EMAIL", "alice@example.test")
            .env("GIT_COMMITTER_NAME", "Alice")
            .env("GIT_COMMITTER_EMAIL", "alice@example.test")
            .args(args);
        run_ok(c, &format!("git {args:?}"))
    };
    git(&["init", "-q"]);
    std::fs::write(repo.join("README"), "hello\n").unwrap();
    git(&["add", "README"]);
    let mark = w.mark("git-send-email");
    git(&["commit", "-q", "-m", &mark]);
    git(&[
        "send-email",
        "--to=bob@example.test",
        "--confirm=never",
        "--no-thread",
        "--quiet",
        "--root",
        "HEAD",
    ]);
    let text = delivered(&w.mail, "bob@example.test", &mark);
    assert!(text.contains("+hello"), "{text}");
}

#[test]
fn the_older_snippets_work_with_an_awkward_name_and_path() {
    need("python3", "apt-get install -y python3");
    need("msmtp", "apt-get install -y msmtp");
    need("curl", "apt-get install -y curl");
    let w = world();
    let py = w.write("snippet.py", &w.snippet("python"));
    let mut c = w.program("python3");
    c.arg(&py);
    assert!(stdout(&run_ok(c, "python")).contains("messages in INBOX"));

    let curl = w.snippet("curl");
    assert!(
        !curl.contains("--oauth2-bearer"),
        "token kept out of argv: {curl}"
    );
    let line = curl.lines().find(|l| !l.starts_with('#')).unwrap();
    let mut c = w.program("sh");
    c.args(["-c", line]);
    run_ok(c, "curl");

    let cfg = w.write("msmtprc", &w.snippet("msmtp"));
    let mark = w.mark("msmtp");
    let mut c = w.program("msmtp");
    c.arg("-C").arg(&cfg).args(["-a", NAME, "bob@example.test"]);
    let o = run_with_input(
        c,
        format!("From: alice@example.test\nTo: bob@example.test\nSubject: {mark}\n\nvia msmtp\n")
            .as_bytes(),
        Duration::from_secs(60),
    );
    assert_exit(&o, 0);
    delivered(&w.mail, "bob@example.test", &mark);

    // neomutt: the same quoting as mutt, its own authenticators.
    need("neomutt", "apt-get install -y neomutt");
    seed_mailbox(&w.mail, "alice@example.test", 2, 1_000);
    let rc = w.write(
        "neomuttrc",
        &format!(
            "{}\nset header_cache = ''\nset message_cachedir = ''\n",
            w.snippet("neomutt")
        ),
    );
    let cmd = format!(
        "env HOME={} TERM=xterm neomutt -n -F {}",
        sh_quote(w.home.to_str().unwrap()),
        sh_quote(rc.to_str().unwrap())
    );
    assert_screen_shows(&w.sb, "neomutt", &cmd, "seed 00001");

    // aerc: its cred commands run through the shell, its accounts.conf is INI.
    need("aerc", "apt-get install -y aerc");
    let cfg = w.home.join("aerc-config/aerc");
    std::fs::create_dir_all(&cfg).unwrap();
    w.write("aerc-config/aerc/accounts.conf", &w.snippet("aerc"));
    std::fs::write(
        cfg.join("aerc.conf"),
        "[general]\nunsafe-accounts-conf = true\n",
    )
    .unwrap();
    // aerc (Go) has no CA option: SSL_CERT_FILE makes it trust the test CA.
    let cmd = format!(
        "env XDG_CONFIG_HOME={} SSL_CERT_FILE={} TERM=xterm aerc",
        sh_quote(cfg.parent().unwrap().to_str().unwrap()),
        sh_quote(w.mail.ca().to_str().unwrap())
    );
    assert_screen_shows(&w.sb, "aerc", &cmd, "seed 00001");
}

#[test]
fn a_name_with_a_space_is_refused_by_the_config_with_a_name_to_use() {
    let sb = Sandbox::new(
        "[accounts.\"my work\"]\nprovider = \"custom\"\nuser = \"a@example.test\"\nclient_id = \"x\"\n\
         authorize_url = \"http://127.0.0.1:1/a\"\ntoken_url = \"http://127.0.0.1:1/t\"\n\
         imap = { host = \"localhost\", port = 993, tls = \"implicit\" }\n",
    );
    let o = sb.run(&["snippet", "my work", "mutt"]);
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("account name `my work` has characters outside")
            && stderr(&o).contains("[accounts.my-work]"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn snippet_without_a_client_lists_them_and_common_spellings_work() {
    let sb = Sandbox::new(
        "[accounts.m]\nprovider = \"custom\"\nuser = \"alice@example.test\"\nclient_id = \"x\"\n\
         authorize_url = \"http://127.0.0.1:1/a\"\ntoken_url = \"http://127.0.0.1:1/t\"\nscopes = [\"x\"]\n\
         imap = { host = \"localhost\", port = 993, tls = \"implicit\" }\n\
         smtp = { host = \"localhost\", port = 587, tls = \"starttls\" }\n",
    );
    let o = sb.run(&["snippet", "m"]);
    assert_exit(&o, 0);
    let list = stdout(&o);
    for client in [
        "mbsync",
        "offlineimap",
        "getmail",
        "fetchmail",
        "msmtp",
        "neomutt",
        "mutt",
        "aerc",
        "s-nail",
        "git-send-email",
        "curl",
        "python",
    ] {
        assert!(
            list.lines()
                .any(|l| l.trim_start().starts_with(client) && l.len() > client.len() + 10),
            "{client} listed with a reason: {list}"
        );
    }
    for (spelling, marker) in [
        ("getmail6", "use_xoauth2 = True"),
        ("getmail", "use_xoauth2 = True"),
        ("git", "sendmailcmd"),
        ("git-send-email", "sendmailcmd"),
        ("send-email", "sendmailcmd"),
        ("Mutt", "imap_oauth_refresh_command"),
        ("snail", "v15-compat"),
        ("isync", "IMAPAccount"),
    ] {
        let o = sb.run(&["snippet", "m", spelling]);
        assert_exit(&o, 0);
        assert!(stdout(&o).contains(marker), "{spelling}: {}", stdout(&o));
    }
    let o = sb.run(&["snippet", "m", "thunderbird"]);
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("no snippet for `thunderbird`") && stderr(&o).contains("mutt"),
        "{}",
        stderr(&o)
    );
}

/// Create folders and put one message in each, over IMAP as alice (Python imaplib).
fn make_folders(w: &World, folders: &[&str]) {
    let token = stdout(&w.sb.run(&["token", NAME])).trim().to_owned();
    let script = format!(
        "import imaplib, ssl, sys\n\
         ctx = ssl.create_default_context(cafile={ca:?})\n\
         imap = imaplib.IMAP4_SSL('localhost', {port}, ssl_context=ctx)\n\
         tok = sys.stdin.read().strip()\n\
         imap.authenticate('XOAUTH2', lambda _: f'user=alice@example.test\\x01auth=Bearer {{tok}}\\x01\\x01'.encode())\n\
         for f in sys.argv[1:]:\n\
         \x20   q = '\"' + f + '\"'\n\
         \x20   typ, data = imap.create(q)\n\
         \x20   assert typ == 'OK', (f, data)\n\
         \x20   msg = f'From: seed@example.test\\r\\nSubject: in {{f}}\\r\\n\\r\\nbody\\r\\n'.encode()\n\
         \x20   typ, data = imap.append(q, None, None, msg)\n\
         \x20   assert typ == 'OK', (f, data)\n\
         imap.logout()\n",
        ca = w.mail.ca().to_str().unwrap(),
        port = w.mail.port("imap_tls"),
    );
    let mut c = Command::new("python3");
    c.arg("-c").arg(script).args(folders);
    let o = run_with_input(c, token.as_bytes(), Duration::from_secs(30));
    assert_exit(&o, 0);
}

const MAIL_FOLDERS: &[&str] = &["Projects", "Projects/2024.Q1", "a.b", "a/b", "Sent Items"];
const EXCHANGE_FOLDERS: &[&str] = &[
    "Calendar",
    "Calendar/Birthdays",
    "Contacts",
    "Tasks",
    "Journal",
    "Notes",
    "Sync Issues",
    "Sync Issues/Conflicts",
    "Conversation History",
];

/// Which of `folders` a local Maildir tree holds (as `a/b` paths), with their message.
fn local_folders(root: &Path, folders: &[&str]) -> Vec<String> {
    folders
        .iter()
        .filter(|f| {
            subjects(&root.join(f))
                .iter()
                .any(|s| s == &format!("Subject: in {f}"))
        })
        .map(|f| f.to_string())
        .collect()
}

#[test]
fn microsoft_accounts_sync_mail_folders_only_and_keep_dots_and_slashes() {
    need(
        "mbsync",
        "apt-get install -y isync libsasl2-modules-kdexoauth2",
    );
    need("offlineimap", "apt-get install -y offlineimap3");
    // Folders as plain directories, so the server can hold `a.b` next to `a/b`.
    let w = world_with("microsoft", &[("MAILSERVER_MAIL_LAYOUT", "fs")], "");
    seed_mailbox(&w.mail, "alice@example.test", 2, 1_000);
    // `a/b` next to `a.b` comes later: offlineimap keeps its per-folder state under
    // names with / turned into ., so it cannot hold both (mbsync can).
    let mut all: Vec<&str> = MAIL_FOLDERS
        .iter()
        .copied()
        .filter(|f| *f != "a/b")
        .collect();
    all.extend_from_slice(EXCHANGE_FOLDERS);
    make_folders(&w, &all);

    // offlineimap3 with its folderfilter (and `sep = /`), into a fresh tree.
    let rc = w.snippet("offlineimap").replace(
        &format!("localfolders = ~/Mail/{NAME}"),
        &format!("localfolders = ~/oi/{NAME}"),
    );
    let rc = w.write("offlineimaprc", &rc);
    let mut c = w.program("offlineimap");
    c.arg("-c").arg(&rc).args(["-o", "-u", "quiet"]);
    run_ok(c, "offlineimap");
    let root = w.home.join(format!("oi/{NAME}"));
    assert_eq!(subjects(&root.join("INBOX")).len(), 2);
    assert_eq!(
        local_folders(&root, MAIL_FOLDERS),
        all[..MAIL_FOLDERS.len() - 1].to_vec(),
        "offlineimap kept every mail folder"
    );
    assert_eq!(
        local_folders(&root, EXCHANGE_FOLDERS),
        Vec::<String>::new(),
        "offlineimap left the rest out"
    );

    make_folders(&w, &["a/b"]);
    // mbsync, Patterns leaving Exchange's folders out, SubFolders Verbatim.
    let rc = w.write("mbsyncrc", &w.snippet("mbsync"));
    std::fs::create_dir_all(w.home.join(format!("Mail/{NAME}"))).unwrap();
    let mut c = w.program("mbsync");
    c.arg("-q").arg("-c").arg(&rc).arg(NAME);
    run_ok(c, "mbsync");
    let root = w.home.join(format!("Mail/{NAME}"));
    assert_eq!(subjects(&root.join("INBOX")).len(), 2);
    assert_eq!(
        local_folders(&root, MAIL_FOLDERS),
        MAIL_FOLDERS.to_vec(),
        "mbsync kept every mail folder"
    );
    assert_eq!(
        local_folders(&root, EXCHANGE_FOLDERS),
        Vec::<String>::new(),
        "mbsync left the rest out"
    );
    for f in ["Calendar", "Contacts", "Tasks", "Sync Issues"] {
        assert!(!root.join(f).exists(), "{f} created locally");
    }
}

#[test]
fn other_providers_keep_every_folder() {
    let w = world();
    let mb = w.snippet("mbsync");
    assert!(mb.lines().any(|l| l == "Patterns *"), "{mb}");
    assert!(!w.snippet("offlineimap").contains("folderfilter"));
}

// ---------------------------------------------------------------- device flow QR

/// `mailoauth login dev` (device flow) with stderr on a pty (`script`) or a
/// pipe; the person approves the code. Returns everything printed, escapes removed.
fn device_login(srv_env: &[(&str, &str)], terminal: bool) -> (OAuthServer, String) {
    let mut env = vec![("DEVICE_INTERVAL", "1"), ("LOGIN_AS", "dave@example.test")];
    env.extend_from_slice(srv_env);
    let srv = OAuthServer::start(&env);
    let sb = Sandbox::new(&accounts(&srv.issuer, "file"));
    let mut cmd = if terminal {
        need("script", "apt-get install -y bsdutils");
        let mut c = sb.program("script");
        let inner = format!(
            "{} login dev 2>&1",
            sh_quote(env!("CARGO_BIN_EXE_mailoauth"))
        );
        c.args(["-q", "-e", "-c", &inner, "/dev/null"])
            .env("TERM", "xterm");
        c
    } else {
        sb.cmd(&["login", "dev"])
    };
    // The pty's output comes on script's stdout; the pipe case reads stderr.
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let pipe: Box<dyn std::io::Read + Send> = if terminal {
        Box::new(child.stdout.take().unwrap())
    } else {
        Box::new(child.stderr.take().unwrap())
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            let line = strip_escapes(&line);
            all.push_str(&line);
            all.push('\n');
            let _ = tx.send(line);
        }
        all
    });
    let mut prev = String::new();
    let code = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("device prompt");
        if prev == "and enter the code:" {
            break line;
        }
        prev = line;
    };
    let b = browser(&["--device", &srv.issuer, &code]);
    assert!(b.status.success(), "{}", stderr(&b));
    let out = wait_output(child, Duration::from_secs(60));
    let all = reader.join().unwrap();
    assert_exit(&out, 0);
    (srv, all)
}

fn strip_escapes(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// Read the QR code drawn in `text` (half blocks) the way a phone would.
fn decode_qr(text: &str) -> String {
    let rows: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "or scan this with a phone:")
        .skip(1)
        .take_while(|l| !l.is_empty() && l.chars().all(|c| " █▀▄".contains(c)))
        .collect();
    assert!(rows.len() > 10, "no QR code drawn:\n{text}");
    let width = rows.iter().map(|r| r.chars().count()).max().unwrap();
    // modules[y][x]: two module rows per text row.
    let mut modules = vec![vec![false; width]; rows.len() * 2];
    for (y, r) in rows.iter().enumerate() {
        for (x, c) in r.chars().enumerate() {
            let (top, bottom) = match c {
                '█' => (true, true),
                '▀' => (true, false),
                '▄' => (false, true),
                _ => (false, false),
            };
            modules[2 * y][x] = top;
            modules[2 * y + 1][x] = bottom;
        }
    }
    let scale = 4;
    let (w, h) = ((width + 8) * scale, (modules.len() + 8) * scale);
    let mut img = rqrr::PreparedImage::prepare_from_bitmap(w, h, |x, y| {
        let (mx, my) = ((x / scale).wrapping_sub(4), (y / scale).wrapping_sub(4));
        modules
            .get(my)
            .and_then(|r| r.get(mx))
            .copied()
            .unwrap_or(false)
    });
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in:\n{text}");
    grids[0].decode().expect("a readable QR code").1
}

fn uri_and_code(text: &str) -> (String, String) {
    let lines: Vec<&str> = text.lines().collect();
    let uri = lines
        .iter()
        .find(|l| l.starts_with("http"))
        .unwrap()
        .to_string();
    let i = lines
        .iter()
        .position(|l| *l == "and enter the code:")
        .unwrap();
    (uri, lines[i + 1].to_string())
}

#[test]
fn device_login_on_a_terminal_shows_a_qr_code_of_the_complete_uri() {
    let (srv, out) = device_login(&[], true);
    let (uri, code) = uri_and_code(&out);
    assert_eq!(
        uri,
        format!("{}/device", srv.issuer),
        "the contract line: {out}"
    );
    let qr = decode_qr(&out);
    assert!(
        qr.starts_with(&format!("{uri}?")) && qr.contains(&code),
        "{qr} holds the code {code}"
    );
}

#[test]
fn device_login_on_a_terminal_without_a_complete_uri_shows_the_verification_uri() {
    let (srv, out) = device_login(&[("DEVICE_NO_COMPLETE_URI", "1")], true);
    let (uri, _) = uri_and_code(&out);
    assert_eq!(uri, format!("{}/device", srv.issuer));
    assert_eq!(decode_qr(&out), uri);
}

#[test]
fn device_login_into_a_pipe_draws_no_qr_code_and_keeps_the_contract() {
    let (srv, out) = device_login(&[], false);
    let (uri, code) = uri_and_code(&out);
    assert_eq!(uri, format!("{}/device", srv.issuer));
    assert!(!code.is_empty() && !code.contains(' '), "{code}");
    assert!(
        !out.contains("scan this")
            && !out.contains('▀')
            && !out.contains('█')
            && !out.contains('\x1b'),
        "{out}"
    );
}
