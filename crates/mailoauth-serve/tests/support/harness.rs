//! The service suites' harness: a private PostgreSQL cluster, a sandbox with
//! config and provider (`Setup`), running nodes (`Node`) spoken to over raw
//! HTTP/1.1, and `both`, which runs a test on SQLite and on PostgreSQL.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::oauth_server::OAuthServer;
pub use crate::oauth_server::free_port;

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A private PostgreSQL cluster on a loopback port, owned by the `postgres`
/// user (initdb refuses root); stopped and removed on drop.
pub struct Postgres {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Postgres {
    pub fn start() -> Postgres {
        assert!(
            Path::new(PG_BIN).join("initdb").exists(),
            "this test needs PostgreSQL 15: install it with `apt-get install -y postgresql` (or run .ci/run)"
        );
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        std::fs::create_dir(&sock).unwrap();
        let run = |args: &[&str]| {
            stdout_of(
                Command::new("runuser")
                    .args(["-u", "postgres", "--"])
                    .args(args),
            );
        };
        Command::new("chown")
            .args(["-R", "postgres:postgres", dir.path().to_str().unwrap()])
            .status()
            .unwrap();
        run(&[
            &format!("{PG_BIN}/initdb"),
            "-D",
            data.to_str().unwrap(),
            "-U",
            "mailoauth",
            "--auth=trust",
            "-E",
            "UTF8",
        ]);
        let pg = Postgres {
            dir,
            port: free_port(),
        };
        pg.start_again();
        pg
    }

    fn pg_ctl(&self, args: &[&str]) {
        stdout_of(
            Command::new("runuser")
                .args(["-u", "postgres", "--", &format!("{PG_BIN}/pg_ctl"), "-D"])
                .arg(self.dir.path().join("data"))
                .args(args),
        );
    }

    /// Stop the cluster (fast: sessions are ended), as an outage would.
    /// (`start()` is taken by the constructor; `start_again` starts it.)
    pub fn stop(&self) {
        self.pg_ctl(&["-w", "-m", "fast", "stop"]);
    }

    /// Start the (stopped) cluster on its port again.
    pub fn start_again(&self) {
        let log = self.dir.path().join("log");
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=100",
            self.port,
            self.dir.path().join("sock").display()
        );
        self.pg_ctl(&["-l", log.to_str().unwrap(), "-w", "-o", &opts, "start"]);
    }

    pub fn url(&self) -> String {
        format!("postgres://mailoauth@127.0.0.1:{}/postgres", self.port)
    }

    /// One SQL query's output through psql.
    pub fn psql(&self, sql: &str) -> String {
        stdout_of(Command::new(format!("{PG_BIN}/psql")).args([
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "mailoauth",
            "postgres",
            "-c",
            sql,
        ]))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{PG_BIN}/pg_ctl"), "-D"])
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// Run `c`; its stdout, or a test failure showing what it said.
pub fn stdout_of(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Where the service keeps its data: the embedded SQLite file or a cluster.
pub enum Database {
    Sqlite,
    Postgres(Postgres),
}

/// A sandbox for the service: config, state dir, database, the provider.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub db: Database,
    pub oauth: OAuthServer,
    /// The first node's port: the provider's client knows `{base}/oauth/callback`.
    pub port: u16,
}

impl Setup {
    pub fn new(db: &str, oauth_env: &[(&str, &str)]) -> Setup {
        let port = free_port();
        let redirect = format!("http://127.0.0.1:{port}/oauth/callback");
        let mut env = oauth_env.to_vec();
        env.push(("SERVE_REDIRECT_URI", &redirect));
        let oauth = OAuthServer::start(&env);
        let db = match db {
            "sqlite" => Database::Sqlite,
            _ => Database::Postgres(Postgres::start()),
        };
        let s = Setup {
            dir: tempfile::tempdir().unwrap(),
            db,
            oauth,
            port,
        };
        s.write_config("");
        s
    }

    pub fn write_config(&self, extra_serve: &str) {
        self.write_config_with(extra_serve, "");
    }

    /// The config with `extra_serve` in `[serve]` and `extra_tables` (more
    /// connectors) after the standard ones.
    pub fn write_config_with(&self, extra_serve: &str, extra_tables: &str) {
        let database = match &self.db {
            Database::Sqlite => String::new(),
            Database::Postgres(pg) => format!("database = \"{}\"\n", pg.url()),
        };
        let cfg = format!(
            "[serve]\nlisten = \"127.0.0.1:{port}\"\n{database}{extra_serve}\n\
             [serve.connectors.apps]\nprovider = \"custom\"\nclient_id = \"app-secret\"\n\
             client_secret = \"app-secret-value\"\nflow = \"client-credentials\"\n\
             token_url = \"{issuer}/token\"\nscopes = [\"https://outlook.test/.default\"]\n\n\
             [serve.connectors.people]\nprovider = \"custom\"\nclient_id = \"web-service\"\n\
             client_secret = \"web-service-secret\"\nauthorize_url = \"{issuer}/auth\"\n\
             token_url = \"{issuer}/token\"\nredirect_uri = \"http://127.0.0.1:{port}/oauth/callback\"\n\
             scopes = [\"https://outlook.test/IMAP.AccessAsUser.All\", \"openid\", \"email\", \"offline_access\"]\n\n\
             {extra_tables}",
            issuer = self.oauth.issuer,
            port = self.port,
        );
        let path = self.dir.path().join("config/mailoauth/config.toml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, cfg).unwrap();
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mailoauth-serve"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("XDG_STATE_HOME", self.dir.path().join("state"));
        c
    }

    /// `keys create` with `scopes` (and mailbox limits): the secret.
    pub fn key(&self, scopes: &[&str], mailboxes: &[&str]) -> String {
        let mut c = self.command();
        c.args(["keys", "create", "--name", "test"]);
        for s in scopes {
            c.args(["--scope", s]);
        }
        for m in mailboxes {
            c.args(["--mailbox", m]);
        }
        stdout_of(&mut c).trim().to_owned()
    }

    /// The first node, on the port the provider's client knows.
    pub fn start(&self) -> Node {
        Node::start(self.command())
    }

    /// Another node of the same service (same database), on any port.
    pub fn start_another(&self) -> Node {
        self.start_another_with(&[])
    }

    /// Another node with extra environment (a crash point).
    pub fn start_another_with(&self, env: &[(&str, &str)]) -> Node {
        let mut c = self.command();
        c.args(["--listen", "127.0.0.1:0"]);
        c.envs(env.iter().copied());
        Node::start(c)
    }

    pub fn sqlite_file(&self) -> PathBuf {
        self.dir.path().join("state/mailoauth/serve.db")
    }

    /// The database's content, row by row (for "nothing changed"; SQLite's
    /// file bytes change when a reader checkpoints its log).
    pub fn dump(&self) -> String {
        match &self.db {
            Database::Sqlite => stdout_of(
                Command::new("python3")
                    .args([
                        "-c",
                        "import sqlite3,sys; print('\\n'.join(sqlite3.connect(sys.argv[1]).iterdump()))",
                    ])
                    .arg(self.sqlite_file()),
            ),
            Database::Postgres(pg) => pg.psql(
                "SELECT m::text FROM mailboxes m UNION ALL SELECT d::text FROM data_keys d \
                 UNION ALL SELECT k::text FROM api_keys k ORDER BY 1",
            ),
        }
    }

    /// Run one SQL statement on the service's database (to age a link).
    pub fn sql(&self, sql: &str) {
        match &self.db {
            Database::Sqlite => {
                stdout_of(
                    Command::new("python3")
                        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()"])
                        .arg(self.sqlite_file())
                        .arg(sql),
                );
            }
            Database::Postgres(pg) => {
                pg.psql(sql);
            }
        }
    }

    /// One query's rows, one a line, columns separated by `|`.
    pub fn query(&self, sql: &str) -> String {
        match &self.db {
            Database::Sqlite => stdout_of(
                Command::new("python3")
                    .args([
                        "-c",
                        "import sqlite3,sys\nfor r in sqlite3.connect(sys.argv[1]).execute(sys.argv[2]): print('|'.join(str(c) for c in r))",
                    ])
                    .arg(self.sqlite_file())
                    .arg(sql),
            ),
            Database::Postgres(pg) => pg.psql(sql),
        }
    }

    /// Every stored byte of the database, as text (for "this never appears").
    pub fn stored(&self) -> String {
        match &self.db {
            Database::Sqlite => {
                let mut all = Vec::new();
                for ext in ["", "-wal"] {
                    let p = PathBuf::from(format!("{}{ext}", self.sqlite_file().display()));
                    if let Ok(b) = std::fs::read(p) {
                        all.extend(b);
                    }
                }
                String::from_utf8_lossy(&all).into_owned()
            }
            Database::Postgres(pg) => {
                pg.psql("SELECT encode(record, 'escape'), record_key FROM mailboxes")
            }
        }
    }
}

/// A running `mailoauth-serve`; killed on drop.
pub struct Node {
    pub child: Child,
    pub addr: String,
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Node {
    pub fn start(mut c: Command) -> Node {
        let mut child = c
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let rest = line.split("listening on ").nth(1).and_then(|r| {
                    r.strip_prefix("http://")
                        .or_else(|| r.strip_prefix("https://"))
                });
                if let Some(rest) = rest {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
                }
                l.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("mailoauth-serve did not start: {}", log.lock().unwrap())
            });
        Node { child, addr, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// One HTTP/1.1 request: (status, JSON body or text).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let auth = key.map(|k| format!("Bearer {k}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        let (status, _, text) = self.send(method, path, &headers, &body);
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// `kill -9` it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it ended by itself within `within`.
    pub fn exited(&mut self, within: Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// One HTTP/1.1 request with these header lines and a raw body (forms,
    /// cookies, origins): (status, head, body text).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String, String) {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
        let extra: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let status: u16 = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
        let (head, text) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        (status, head.to_owned(), text.to_owned())
    }

    /// `GET /v1/mailboxes/{id}/token` with `key`.
    pub fn token(&self, key: &str, id: &str) -> (u16, Value) {
        self.call("GET", &format!("/v1/mailboxes/{id}/token"), Some(key), None)
    }

    pub fn add_app_mailbox(&self, key: &str, email: &str) -> String {
        let (status, v) = self.call(
            "POST",
            "/v1/mailboxes",
            Some(key),
            Some(&serde_json::json!({"connector": "apps", "email": email})),
        );
        assert_eq!(status, 201, "{v} {}", self.log());
        assert_eq!(v["state"], "ok", "{v}");
        v["id"].as_str().unwrap().to_owned()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn both(test: fn(&str)) {
    test("sqlite");
    test("postgres");
}

/// A connect link for `email` through the `people` connector.
pub fn connect_link(node: &Node, key: &str, email: &str) -> String {
    let (st, v) = node.call(
        "POST",
        "/v1/connect-links",
        Some(key),
        Some(&serde_json::json!({"connector": "people", "email": email, "return_url": "https://app.example/back"})),
    );
    assert_eq!(st, 201, "{v} {}", node.log());
    v["url"].as_str().unwrap().to_owned()
}

pub fn base64_decode(s: &str) -> String {
    use base64::Engine;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s).unwrap()).unwrap()
}

/// `n` concurrent token requests for mailbox `id` with `key`, spread over
/// `nodes` in turn; each must be answered 200: the access tokens.
pub fn concurrent_tokens(nodes: &[&Node], n: usize, key: &str, id: &str) -> Vec<String> {
    std::thread::scope(|sc| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let node = nodes[i % nodes.len()];
                sc.spawn(move || {
                    let (st, v) = node.token(key, id);
                    assert_eq!(st, 200, "{v}");
                    v["access_token"].as_str().unwrap().to_owned()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The answer `v` (with status `st`) is a `login_required` 424 whose message
/// names the provider's refusal (`invalid_grant`): its re-consent link.
pub fn login_required_link(st: u16, v: &Value, ctx: &str) -> String {
    assert_eq!(st, 424, "{ctx}: {v}");
    assert_eq!(v["error"], "login_required", "{ctx}: {v}");
    assert!(
        v["message"].as_str().unwrap().contains("invalid_grant"),
        "{ctx}: {v}"
    );
    assert!(
        v["fix"].as_str().unwrap().contains("re-consent"),
        "{ctx}: {v}"
    );
    let url = v["reconnect_url"].as_str().unwrap().to_owned();
    assert!(url.contains("/connect/"), "{ctx}: {v}");
    url
}

/// One request a [`Webhook`] receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Header names (lower case) and values.
    pub headers: std::collections::HashMap<String, String>,
    /// The body.
    pub body: String,
    /// The status it was answered with.
    pub status: u16,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Delivery {
    /// Whether its signature checks out as a receiver checks it: HMAC-SHA256
    /// over "timestamp.body" with the shared secret.
    pub fn signed_with(&self, secret: &str) -> bool {
        let ts = &self.headers["mailoauth-timestamp"];
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let tag = ring::hmac::sign(&key, format!("{ts}.{}", self.body).as_bytes());
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        self.headers["mailoauth-signature"] == format!("v1={hex}")
    }
}

/// How a test's [`Webhook`] receiver behaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Receiver {
    /// The loopback port to listen on (0: any free one).
    pub port: u16,
    /// Answer the first this many requests with 500.
    pub fail_first: usize,
    /// Refuse connections (nothing listens on the port) for this long.
    pub down: Duration,
    /// Take this long over each answer (a slow receiver).
    pub delay: Duration,
}

/// A webhook receiver on loopback, a thread per connection: records each
/// request and how many were in flight at once.
pub struct Webhook {
    pub url: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<Delivery>>>,
    /// Requests being answered now, and the most at once.
    busy: std::sync::Arc<(
        std::sync::atomic::AtomicUsize,
        std::sync::atomic::AtomicUsize,
    )>,
}

impl Webhook {
    /// Answers the first `fail_first` requests with 500 and the rest with 200.
    pub fn start(fail_first: usize) -> Webhook {
        Webhook::with(Receiver {
            fail_first,
            ..Receiver::default()
        })
    }

    /// A receiver behaving as `how` says.
    pub fn with(how: Receiver) -> Webhook {
        use std::sync::atomic::Ordering::SeqCst;
        let l = std::net::TcpListener::bind(("127.0.0.1", how.port)).unwrap();
        let addr = l.local_addr().unwrap();
        let url = format!("http://{addr}/hook");
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let busy = std::sync::Arc::<(
            std::sync::atomic::AtomicUsize,
            std::sync::atomic::AtomicUsize,
        )>::default();
        let (g, b) = (got.clone(), busy.clone());
        let l = if how.down.is_zero() {
            Some(l)
        } else {
            drop(l);
            None
        };
        std::thread::spawn(move || {
            let l = l.unwrap_or_else(|| {
                std::thread::sleep(how.down);
                std::net::TcpListener::bind(addr).expect("the receiver's port again")
            });
            for s in l.incoming() {
                let Ok(s) = s else { return };
                let (g, b) = (g.clone(), b.clone());
                std::thread::spawn(move || {
                    let now = b.0.fetch_add(1, SeqCst) + 1;
                    b.1.fetch_max(now, SeqCst);
                    answer(s, &g, &how);
                    b.0.fetch_sub(1, SeqCst);
                });
            }
        });
        Webhook { url, got, busy }
    }

    /// The most requests that were being answered at once.
    pub fn most_at_once(&self) -> usize {
        self.busy.1.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Everything received so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    /// Wait until an accepted (200) delivery of event `kind` arrived; its body as JSON.
    pub fn wait_for(&self, kind: &str, within: Duration) -> Value {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(d) = self.deliveries().into_iter().find(|d| {
                d.status == 200 && d.headers.get("mailoauth-event").is_some_and(|k| k == kind)
            }) {
                return serde_json::from_str(&d.body).unwrap();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {kind} webhook within {within:?}; got {:?}",
                self.deliveries()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Read one request, record it, answer (after `how.delay`).
fn answer(mut s: TcpStream, got: &std::sync::Mutex<Vec<Delivery>>, how: &Receiver) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut headers = std::collections::HashMap::new();
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_lowercase(), v.trim().to_owned());
        }
    }
    let n: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; n.min(1 << 20)];
    let _ = r.read_exact(&mut body);
    let at = std::time::Instant::now();
    std::thread::sleep(how.delay);
    let mut all = got.lock().unwrap();
    let status = if all.len() < how.fail_first { 500 } else { 200 };
    all.push(Delivery {
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        status,
        at,
    });
    drop(all);
    let _ = write!(
        s,
        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
}

/// The private Dovecot of `tests/mail-server` (needs root), validating the
/// authorization server's JWTs; stopped on drop.
pub struct Dovecot {
    dir: tempfile::TempDir,
    pub ports: Value,
}

impl Dovecot {
    pub fn start(issuer: &str) -> Dovecot {
        Dovecot::start_with(issuer, &[])
    }

    /// Started with extra environment for start.sh (`MAILSERVER_CONNECTIONS`).
    pub fn start_with(issuer: &str, env: &[(&str, &str)]) -> Dovecot {
        crate::oauth_server::need(
            "dovecot",
            "bash tests/mail-server/install.sh (or .ci/setup)",
        );
        // Dovecot's socket paths must stay short: a directory directly under /tmp.
        let dir = tempfile::Builder::new()
            .prefix("mo")
            .tempdir_in("/tmp")
            .unwrap();
        let script = crate::oauth_server::repo_root().join("tests/mail-server/start.sh");
        let out = Command::new("timeout")
            .arg("60")
            .arg("bash")
            .arg(script)
            .arg(dir.path())
            .arg(issuer)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the mail server fixture did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ports = serde_json::from_slice(&out.stdout).expect("start.sh JSON");
        Dovecot { dir, ports }
    }

    /// Restart Dovecot (every connection ends), back after `down` seconds on
    /// the same ports: when IMAP answered again.
    pub fn restart(&self, down: f64) -> std::time::Instant {
        let script = crate::oauth_server::repo_root().join("tests/mail-server/restart.sh");
        let out = Command::new("timeout")
            .arg("90")
            .arg("bash")
            .arg(script)
            .arg(self.dir.path())
            .arg(down.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "Dovecot did not restart: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::time::Instant::now()
    }

    /// Run `doveadm ARGS` against this instance (`input` on stdin): what a
    /// local delivery agent or an administrator does, such as creating a
    /// folder or saving a message into one.
    pub fn doveadm(&self, args: &[&str], input: &[u8]) {
        let mut c = Command::new("timeout")
            .args(["30", "doveadm", "-c"])
            .arg(self.dir.path().join("etc/dovecot.conf"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("doveadm (apt-get install -y dovecot-core)");
        c.stdin.take().unwrap().write_all(input).unwrap();
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "doveadm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Dovecot's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// Log in to `user`'s mailbox over IMAPS with `token` (curl, a client of
    /// its own, speaking SASL XOAUTH2) and examine the INBOX; the error
    /// otherwise. The token goes to curl on stdin, not its command line.
    pub fn opens(&self, user: &str, token: &str) -> Result<(), String> {
        let mut c = Command::new("curl")
            .args(["-sS", "--max-time", "20", "-K", "-", "--cacert"])
            .arg(self.ports["ca"].as_str().unwrap())
            .arg("--user")
            .arg(format!("{user}:"))
            .args(["-X", "EXAMINE INBOX"])
            .arg(format!("imaps://127.0.0.1:{}/", self.ports["imap_tls"]))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(c.stdin.take().unwrap(), "oauth2-bearer = \"{token}\"").unwrap();
        let out = c.wait_with_output().unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "curl: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(crate::oauth_server::repo_root().join("tests/mail-server/stop.sh"))
            .arg(self.dir.path())
            .output();
    }
}

/// The scale benchmarks' scripted token endpoint (`bench/scripted_provider.py`):
/// mints sign-ins for `import`, rotates strictly, and counts every refresh.
pub struct ScriptedProvider {
    child: Child,
    pub port: u16,
}

impl ScriptedProvider {
    pub fn start() -> ScriptedProvider {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/scripted_provider.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "python3 {} did not start ({e}): install python3",
                    script.display()
                )
            });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("scripted provider said {line:?}"));
        ScriptedProvider {
            port: v["port"].as_u64().unwrap() as u16,
            child,
        }
    }

    /// A connector table `name` whose token endpoint is this provider.
    pub fn connector(&self, name: &str) -> String {
        format!(
            "[serve.connectors.{name}]\nprovider = \"custom\"\nclient_id = \"bench\"\n\
             authorize_url = \"http://127.0.0.1:{p}/auth\"\ntoken_url = \"http://127.0.0.1:{p}/token\"\n\
             scopes = [\"https://outlook.test/IMAP.AccessAsUser.All\", \"offline_access\"]\n",
            p = self.port
        )
    }

    fn get(&self, path: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        raw.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default()
    }

    /// JSON lines for `import`: `n` sign-ins of `connector` whose tokens
    /// expire from `first` s on, over `window` s.
    pub fn mint(&self, n: usize, first: i64, window: i64, connector: &str) -> String {
        self.get(&format!(
            "/mint?n={n}&first={first}&window={window}&connector={connector}"
        ))
    }

    /// The judge's figures (`refreshes`, `max_per_second`, `refreshed_twice`, …).
    pub fn stats(&self) -> Value {
        serde_json::from_str(&self.get("/stats")).unwrap()
    }
}

impl Drop for ScriptedProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `import` with `lines` on stdin: its (exit success, stdout, stderr).
pub fn import(setup: &Setup, lines: &str) -> (bool, String, String) {
    let mut c = setup.command();
    c.arg("import")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
