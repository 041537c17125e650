//! `mailoauth-serve` end to end: the real executable, the real authorization
//! server (oidc-provider), SQLite and a private PostgreSQL cluster made by the
//! test. Each behaviour runs against both databases.

#[path = "support/browser.rs"]
mod browser;
#[path = "../../mailoauth-cli/tests/common/oauth_server.rs"]
mod oauth_server;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use oauth_server::{OAuthServer, need};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A private PostgreSQL cluster on a loopback port, owned by the `postgres`
/// user (initdb refuses root); stopped and removed on drop.
struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
}

impl Postgres {
    fn start() -> Postgres {
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
        let port = free_port();
        run(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            data.to_str().unwrap(),
            "-l",
            dir.path().join("log").to_str().unwrap(),
            "-w",
            "-o",
            &format!(
                "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c max_connections=100",
                sock.display()
            ),
            "start",
        ]);
        Postgres { dir, port }
    }

    fn url(&self) -> String {
        format!("postgres://mailoauth@127.0.0.1:{}/postgres", self.port)
    }

    /// One SQL query's output through psql.
    fn psql(&self, sql: &str) -> String {
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
fn stdout_of(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where the service keeps its data: the embedded SQLite file or a cluster.
enum Database {
    Sqlite,
    Postgres(Postgres),
}

/// A sandbox for the service: config, state dir, database, the provider.
struct Setup {
    dir: tempfile::TempDir,
    db: Database,
    oauth: OAuthServer,
    /// The first node's port: the provider's client knows `{base}/oauth/callback`.
    port: u16,
}

impl Setup {
    fn new(db: &str, oauth_env: &[(&str, &str)]) -> Setup {
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

    fn write_config(&self, extra_serve: &str) {
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
             scopes = [\"https://outlook.test/IMAP.AccessAsUser.All\", \"openid\", \"email\", \"offline_access\"]\n",
            issuer = self.oauth.issuer,
            port = self.port,
        );
        let path = self.dir.path().join("config/mailoauth/config.toml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, cfg).unwrap();
    }

    fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mailoauth-serve"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("XDG_STATE_HOME", self.dir.path().join("state"));
        c
    }

    /// `keys create` with `scopes` (and mailbox limits): the secret.
    fn key(&self, scopes: &[&str], mailboxes: &[&str]) -> String {
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
    fn start(&self) -> Node {
        Node::start(self.command())
    }

    /// Another node of the same service (same database), on any port.
    fn start_another(&self) -> Node {
        let mut c = self.command();
        c.args(["--listen", "127.0.0.1:0"]);
        Node::start(c)
    }

    fn sqlite_file(&self) -> PathBuf {
        self.dir.path().join("state/mailoauth/serve.db")
    }

    /// The database's content, row by row (for "nothing changed"; SQLite's
    /// file bytes change when a reader checkpoints its log).
    fn dump(&self) -> String {
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
    fn sql(&self, sql: &str) {
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

    /// Every stored byte of the database, as text (for "this never appears").
    fn stored(&self) -> String {
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
struct Node {
    child: Child,
    addr: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Node {
    fn start(mut c: Command) -> Node {
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
                if let Some(rest) = line.split("listening on http://").nth(1) {
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

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// One HTTP/1.1 request: (status, JSON body or text).
    fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let auth = key
            .map(|k| format!("Authorization: Bearer {k}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let status: u16 = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
        let text = raw.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// `GET /v1/mailboxes/{id}/token` with `key`.
    fn token(&self, key: &str, id: &str) -> (u16, Value) {
        self.call("GET", &format!("/v1/mailboxes/{id}/token"), Some(key), None)
    }

    fn add_app_mailbox(&self, key: &str, email: &str) -> String {
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

fn both(test: fn(&str)) {
    test("sqlite");
    test("postgres");
}

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
        assert_eq!(entries.len(), 2, "{db}: {audit}");
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
        let path = format!("/v1/mailboxes/{id}/token");
        let t = Instant::now();
        let tokens: Vec<String> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..100)
                .map(|i| {
                    let node = if i % 2 == 0 { &n1 } else { &n2 };
                    let (key, path) = (&key, &path);
                    sc.spawn(move || {
                        let (st, v) = node.call("GET", path, Some(key), None);
                        assert_eq!(st, 200, "{v}");
                        v["access_token"].as_str().unwrap().to_owned()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
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

/// A connect link for `email` through the `people` connector.
fn connect_link(node: &Node, key: &str, email: &str) -> String {
    let (st, v) = node.call(
        "POST",
        "/v1/connect-links",
        Some(key),
        Some(&serde_json::json!({"connector": "people", "email": email, "return_url": "https://app.example/back"})),
    );
    assert_eq!(st, 201, "{v} {}", node.log());
    v["url"].as_str().unwrap().to_owned()
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

fn base64_decode(s: &str) -> String {
    use base64::Engine;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s).unwrap()).unwrap()
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
