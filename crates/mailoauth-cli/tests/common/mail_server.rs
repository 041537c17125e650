//! The private mail server fixture: Dovecot (IMAP, POP3, submission) whose
//! oauth2 passdb validates the test authorization server's JWTs, started by
//! `tests/mail-server/start.sh` (needs root), and helpers to seed and read
//! mailboxes.

use super::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The authorization server, the mail server, and a sandbox whose account `m`
/// (alice, all mail scopes, [`MailServer::servers`]) is logged in; `edit` may
/// change the config text first (e.g. add a proxy table).
pub fn mail_world(edit: impl FnOnce(String) -> String) -> (OAuthServer, MailServer, Sandbox) {
    let srv = OAuthServer::start(&[]);
    let mail = MailServer::start(&srv.issuer);
    let sb = Sandbox::new(&edit(config(&srv, &mail.servers(), ALL_SCOPES)));
    assert_exit(&sb.login_with_browser("m", BrowserMode::Follow).0, 0);
    (srv, mail, sb)
}

pub struct MailServer {
    pub dir: tempfile::TempDir,
    pub ports: Value,
}

impl MailServer {
    pub fn start(issuer: &str) -> MailServer {
        MailServer::start_env(issuer, &[])
    }

    /// The same, Dovecot serving the certificate (chain) `cert` with `key`
    /// instead of the fixture's CA-signed one (for the TLS tests).
    pub fn serving(issuer: &str, cert: &std::path::Path, key: &std::path::Path) -> MailServer {
        MailServer::start_env(
            issuer,
            &[
                ("MAILSERVER_CERT", cert.to_str().unwrap()),
                ("MAILSERVER_KEY", key.to_str().unwrap()),
            ],
        )
    }

    /// The same, with start.sh's environment options (e.g. `MAILSERVER_MAIL_LAYOUT`).
    pub fn start_with(issuer: &str, env: &[(&str, &str)]) -> MailServer {
        MailServer::start_env(issuer, env)
    }

    fn start_env(issuer: &str, env: &[(&str, &str)]) -> MailServer {
        // SAFETY: getuid cannot fail.
        assert_eq!(
            unsafe { libc::getuid() },
            0,
            "the Dovecot fixture needs root (run the tests as root, as CI does)"
        );
        for p in ["dovecot", "postfix"] {
            need(p, "bash tests/mail-server/install.sh (or .ci/setup)");
        }
        // Dovecot's socket paths must stay short: a directory directly under /tmp.
        let dir = tempfile::Builder::new()
            .prefix("mo")
            .tempdir_in("/tmp")
            .unwrap();
        let script = repo_root().join("tests/mail-server/start.sh");
        let mut last = String::new();
        // start.sh picks free ports just before starting; a rare collision is retried.
        for _ in 0..2 {
            let out = run_with_timeout(
                {
                    let mut c = Command::new("bash");
                    c.arg(&script).arg(dir.path()).arg(issuer);
                    c.envs(env.iter().copied());
                    c
                },
                Duration::from_secs(60),
            );
            if out.status.success() {
                let ports = serde_json::from_slice(&out.stdout).expect("start.sh JSON");
                return MailServer { dir, ports };
            }
            last = stderr(&out);
        }
        panic!("the mail server fixture did not start: {last}");
    }

    /// The last lines of Dovecot's and Postfix's logs.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for f in ["dovecot.log", "postfix.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out += &format!(
                "--- {f}\n{}\n",
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
        out
    }

    /// A guard that prints [`MailServer::log_tail`] if the test panics
    /// while it lives (a client that hangs says nothing of the server's side).
    pub fn logs_on_panic(&self) -> LogsOnPanic<'_> {
        LogsOnPanic(self)
    }

    pub fn port(&self, k: &str) -> u64 {
        self.ports[k].as_u64().unwrap()
    }

    pub fn ca(&self) -> PathBuf {
        PathBuf::from(self.ports["ca"].as_str().unwrap())
    }

    /// Config lines for the three servers: (protocol, fixture port key, tls mode) each.
    pub fn server_lines(&self, servers: [(&str, &str, &str); 3]) -> String {
        let mut out: String = servers
            .iter()
            .map(|(proto, key, tls)| {
                format!(
                    "{proto} = {{ host = \"localhost\", port = {}, tls = \"{tls}\" }}\n",
                    self.port(key)
                )
            })
            .collect();
        out.push_str(&format!("ca_file = \"{}\"\n", self.ca().display()));
        out
    }

    /// Servers for a config: IMAP implicit TLS, POP3 with STLS, submission with STARTTLS.
    pub fn servers(&self) -> String {
        self.server_lines([
            ("imap", "imap_tls", "implicit"),
            ("pop", "pop", "starttls"),
            ("smtp", "submission", "starttls"),
        ])
    }

    /// The other TLS modes: IMAP with STARTTLS, POP3 and SMTP with implicit TLS.
    pub fn other_servers(&self) -> String {
        self.server_lines([
            ("imap", "imap", "starttls"),
            ("pop", "pop_tls", "implicit"),
            ("smtp", "submissions", "implicit"),
        ])
    }
}

impl Drop for MailServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_root().join("tests/mail-server/stop.sh"))
            .arg(self.dir.path())
            .status();
    }
}

/// One account `m` for alice with mail scopes, plus the standard test accounts.
pub fn config(srv: &OAuthServer, servers: &str, scopes: &str) -> String {
    format!(
        "{}\n[accounts.m]\nprovider = \"custom\"\nuser = \"alice@example.test\"\nclient_id = \"native-public\"\n\
         authorize_url = \"{iss}/auth\"\ntoken_url = \"{iss}/token\"\nredirect_uri = \"http://127.0.0.1/callback\"\n\
         scopes = [{scopes}]\nstore = \"file\"\n{servers}\n\
         [accounts.appmail]\nprovider = \"custom\"\nuser = \"shared@example.test\"\nclient_id = \"app-secret\"\n\
         client_secret = \"app-secret-value\"\nflow = \"client-credentials\"\ntoken_url = \"{iss}/token\"\n\
         scopes = [\"https://outlook.test/.default\"]\nstore = \"file\"\n{servers}\n",
        accounts(&srv.issuer, "file"),
        iss = srv.issuer,
        servers = servers,
        scopes = scopes
    )
}

pub const ALL_SCOPES: &str = "\"https://outlook.test/IMAP.AccessAsUser.All\", \"https://outlook.test/POP.AccessAsUser.All\", \"https://outlook.test/SMTP.Send\", \"openid\", \"email\", \"offline_access\"";

/// Wait for a message containing `needle` in `user`'s Maildir (new/), return its text.
pub fn delivered(mail: &MailServer, user: &str, needle: &str) -> String {
    let dir = PathBuf::from(mail.ports["maildir_root"].as_str().unwrap())
        .join(user)
        .join("new");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            if text.contains(needle) {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no message with {needle:?} for {user} in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Put `n` messages of about `size` bytes straight into `user`'s server Maildir,
/// owned like Dovecot's own files.
pub fn seed_mailbox(mail: &MailServer, user: &str, n: usize, size: usize) {
    use std::os::unix::fs::MetadataExt;
    let root = PathBuf::from(mail.ports["maildir_root"].as_str().unwrap()).join(user);
    // Let Dovecot create the mailbox (and its ownership) first: deliver one via `check`-like login.
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let owner = std::fs::metadata(root.parent().unwrap()).unwrap();
    let filler = "x".repeat(76);
    for i in 0..n {
        let mut body = format!(
            "From: seed@example.test\r\nTo: {user}\r\nSubject: seed {i:05}\r\nMessage-ID: <seed{i}@example.test>\r\n\r\n"
        );
        while body.len() < size {
            body.push_str(&filler);
            body.push_str("\r\n");
        }
        let p = root
            .join("new")
            .join(format!("{}.M{i}P1.seed", 1_700_000_000 + i));
        std::fs::write(&p, body).unwrap();
        std::os::unix::fs::chown(&p, Some(owner.uid()), Some(owner.gid())).unwrap();
    }
    for sub in ["", "new", "cur", "tmp"] {
        std::os::unix::fs::chown(root.join(sub), Some(owner.uid()), Some(owner.gid())).unwrap();
    }
}

/// Put one message, exactly these bytes, into `user`'s server Maildir (like
/// [`seed_mailbox`], owned like Dovecot's files).
pub fn seed_raw(mail: &MailServer, user: &str, name: &str, bytes: &[u8]) {
    use std::os::unix::fs::MetadataExt;
    seed_mailbox(mail, user, 0, 0);
    let root = PathBuf::from(mail.ports["maildir_root"].as_str().unwrap()).join(user);
    let owner = std::fs::metadata(root.parent().unwrap()).unwrap();
    let p = root.join("new").join(name);
    std::fs::write(&p, bytes).unwrap();
    std::os::unix::fs::chown(&p, Some(owner.uid()), Some(owner.gid())).unwrap();
}

/// The files (new/ and cur/) of a local Maildir.
pub fn messages(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = ["new", "cur"]
        .iter()
        .flat_map(|s| {
            std::fs::read_dir(dir.join(s))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Subjects of the messages in a local Maildir (new/ and cur/).
pub fn subjects(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        for e in std::fs::read_dir(dir.join(sub))
            .into_iter()
            .flatten()
            .flatten()
        {
            let t = String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into_owned();
            out.extend(
                t.lines()
                    .find(|l| l.starts_with("Subject: "))
                    .map(str::to_owned),
            );
        }
    }
    out.sort();
    out
}

/// See [`MailServer::logs_on_panic`].
pub struct LogsOnPanic<'a>(&'a MailServer);

impl Drop for LogsOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the mail server's logs:\n{}", self.0.log_tail());
        }
    }
}
