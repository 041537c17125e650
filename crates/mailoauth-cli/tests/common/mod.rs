//! Shared test harness: the real authorization server (oidc-provider, from npm),
//! a sandbox with its own XDG directories, the scripted browser, and helpers to
//! run the `mailoauth` binary as users do.
//!
//! A missing server or tool fails the test with the command that installs it;
//! nothing is skipped silently.
#![allow(dead_code)]

pub mod discovery;
pub mod mail_server;
pub mod oauth_server;
#[allow(unused_imports)]
pub use mail_server::*;
pub use oauth_server::*;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Copies the executable `src` to `dst` in a `cp` child, so this process
/// never holds `dst` open for writing: a test thread that forks meanwhile
/// would carry that descriptor until its exec, and running `dst` would then
/// fail with "Text file busy" (ETXTBSY) — seen in CI under `cargo test`.
pub fn copy_executable(src: &std::path::Path, dst: &std::path::Path) {
    let out = Command::new("cp")
        .arg("--")
        .arg(src)
        .arg(dst)
        .output()
        .expect("cp (coreutils) runs");
    assert!(
        out.status.success(),
        "cp {} {}: {}",
        src.display(),
        dst.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The standard test accounts against `issuer`, one per client of the server.
pub fn accounts(issuer: &str, store: &str) -> String {
    format!(
        r#"
[accounts.pub]
provider = "custom"
user = "alice@example.test"
client_id = "native-public"
authorize_url = "{issuer}/auth"
token_url = "{issuer}/token"
device_url = "{issuer}/device/auth"
revoke_url = "{issuer}/token/revocation"
redirect_uri = "http://127.0.0.1/callback"
scopes = ["https://outlook.test/IMAP.AccessAsUser.All", "https://outlook.test/SMTP.Send", "openid", "email", "offline_access"]
resources = {{ graph = ["https://graph.test/Mail.Read", "offline_access"] }}
store = "{store}"

[accounts.conf]
provider = "custom"
user = "carol@example.test"
client_id = "confidential"
client_secret = {{ env = "TEST_CLIENT_SECRET" }}
authorize_url = "{issuer}/auth"
token_url = "{issuer}/token"
redirect_uri = "https://localhost/callback"
scopes = ["https://outlook.test/IMAP.AccessAsUser.All", "openid", "email", "offline_access"]
store = "{store}"

[accounts.dev]
provider = "custom"
user = "dave@example.test"
client_id = "native-public"
flow = "device"
token_url = "{issuer}/token"
device_url = "{issuer}/device/auth"
scopes = ["https://outlook.test/IMAP.AccessAsUser.All", "openid", "email", "offline_access"]
store = "{store}"

[accounts.app]
provider = "custom"
user = "shared@example.test"
client_id = "app-secret"
client_secret = "app-secret-value"
flow = "client-credentials"
token_url = "{issuer}/token"
scopes = ["https://outlook.test/.default"]
store = "{store}"
"#
    )
}

/// `imap = { host = "127.0.0.1", port = PORT, tls = "none" }`-style server line for a scripted peer.
pub fn plain_server(proto: &str, port: u16) -> String {
    format!("{proto} = {{ host = \"127.0.0.1\", port = {port}, tls = \"none\" }}\n")
}

/// A user's world: config and XDG directories in a temp dir.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Sandbox {
    /// Store a refresh token and an access token `token` valid for an hour for `account`.
    pub fn store_valid_token(&self, account: &str, token: &str) {
        let now = now();
        let rec = serde_json::json!({
            "version": 1, "refresh_token": "RT", "login_at": now, "refresh_token_at": now,
            "access": {"mail": {"token": token, "expires_at": now + 3600, "obtained_at": now}}
        });
        std::fs::create_dir_all(self.token_file(account).parent().unwrap()).unwrap();
        self.write_record(account, &rec);
    }

    pub fn new(config: &str) -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config/mailoauth/config.toml");
        std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
        std::fs::write(&cfg, config).unwrap();
        Sandbox { dir, config: cfg }
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state/mailoauth")
    }

    /// The `mailoauth` command, isolated: no D-Bus (so `auto` means file), no
    /// browser, no SSH hints, the sandbox's XDG dirs.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.program(env!("CARGO_BIN_EXE_mailoauth"));
        c.args(args);
        c
    }

    /// Any program in the sandbox's environment (e.g. a mail client that runs
    /// `mailoauth token` itself).
    pub fn program(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("MAILOAUTH_CONFIG", &self.config)
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env("XDG_RUNTIME_DIR", self.dir.path().join("run"))
            .env("TEST_CLIENT_SECRET", "test-secret")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("SSH_CONNECTION")
            .env_remove("SSH_CLIENT")
            .env_remove("SSH_TTY")
            .env("BROWSER", "false")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        run_with_timeout(self.cmd(args), Duration::from_secs(60))
    }

    pub fn token_file(&self, name: &str) -> PathBuf {
        self.state().join(format!("tokens/{name}.json"))
    }

    pub fn record(&self, name: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.token_file(name)).unwrap()).unwrap()
    }

    pub fn write_record(&self, name: &str, v: &Value) {
        std::fs::write(self.token_file(name), serde_json::to_vec(v).unwrap()).unwrap();
    }

    /// Make the stored mail token look nearly expired so the next `token` refreshes.
    pub fn age_token(&self, name: &str, resource: &str) {
        let mut r = self.record(name);
        let now = now();
        r["access"][resource]["expires_at"] = (now + 10).into();
        r["access"][resource]["obtained_at"] = (now - 3590).into();
        self.write_record(name, &r);
    }

    /// `mailoauth login NAME --no-browser`, with the scripted browser doing the
    /// person's part on the URL printed on stderr. Returns (login output, URL).
    pub fn login_with_browser(&self, name: &str, browser_mode: BrowserMode) -> (Output, String) {
        self.login(name, browser_mode, &[])
    }

    /// Like [`Sandbox::login_with_browser`] (following), with extra environment.
    pub fn login_with_browser_env(&self, name: &str, env: &[(&str, &str)]) -> (Output, String) {
        self.login(name, BrowserMode::Follow, env)
    }

    fn login(
        &self,
        name: &str,
        browser_mode: BrowserMode,
        env: &[(&str, &str)],
    ) -> (Output, String) {
        let mut cmd = self.cmd(&["login", name, "--no-browser", "--timeout", "60"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let collected = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let reader = {
            let collected = collected.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.starts_with("http") {
                        let _ = tx.send(line.clone());
                    }
                    collected.lock().unwrap().push_str(&format!("{line}\n"));
                }
            })
        };
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("login printed no URL");
        let mut stdin = child.stdin.take().unwrap();
        match browser_mode {
            BrowserMode::Follow => {
                let b = browser(&[&url]);
                assert!(
                    b.status.success(),
                    "browser failed: {}",
                    String::from_utf8_lossy(&b.stderr)
                );
            }
            BrowserMode::Paste => {
                let b = browser(&["--stop-before-redirect", &url]);
                assert!(
                    b.status.success(),
                    "browser failed: {}",
                    String::from_utf8_lossy(&b.stderr)
                );
                use std::io::Write;
                writeln!(stdin, "not a url").unwrap();
                stdin.write_all(&b.stdout).unwrap();
            }
            BrowserMode::Nothing => {}
        }
        let mut out = wait_output(child, Duration::from_secs(90));
        drop(stdin);
        // The last lines (the error's fix) may still be in the pipe when the
        // process has ended: read to its end before looking.
        let _ = reader.join();
        out.stderr = collected.lock().unwrap().clone().into_bytes();
        (out, url)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum BrowserMode {
    /// Follow every redirect, including the one to the listener.
    Follow,
    /// Stop before the listener and paste the URL on stdin.
    Paste,
    /// Do nothing (the test drives the listener itself).
    Nothing,
}

pub fn browser(args: &[&str]) -> Output {
    let mut c = Command::new("node");
    c.arg(oauth_dir().join("browser.mjs"))
        .args(args)
        .stdin(Stdio::null());
    run_with_timeout(c, Duration::from_secs(60))
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn run_with_timeout(mut c: Command, limit: Duration) -> Output {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    wait_output(c.spawn().unwrap(), limit)
}

/// Run `c` with `input` on its stdin, like `run_with_timeout`.
pub fn run_with_input(mut c: Command, input: &[u8], limit: Duration) -> Output {
    use std::io::Write as _;
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    wait_output(child, limit)
}

/// Wait for a child (reading its pipes), killing it after `limit`.
pub fn wait_output(child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit.saturating_sub(start.elapsed())) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            // What it said before it was killed tells where it hung.
            let said = match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(Ok(o)) => format!(
                    "; its stdout: {:?}; its stderr: {:?}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ),
                _ => String::new(),
            };
            panic!("process {pid} did not finish within {limit:?}{said}");
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert an exit code, showing stderr when it differs.
pub fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

/// Decode a JWT's claims.
pub fn claims(jwt: &str) -> Value {
    use base64::Engine as _;
    let p = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap(),
    )
    .unwrap()
}

/// Run a full-screen client in a private tmux server until its screen shows `needle`.
pub fn assert_screen_shows(sb: &Sandbox, name: &str, cmd: &str, needle: &str) {
    need("tmux", "apt-get install -y tmux");
    let sock = format!("mo-{name}-{}", std::process::id());
    let tmux = |args: &[&str]| {
        let mut c = sb.program("tmux");
        c.args(["-L", &sock]).args(args);
        run_with_timeout(c, Duration::from_secs(20))
    };
    assert_exit(
        &tmux(&["new-session", "-d", "-s", "t", "-x", "160", "-y", "40", cmd]),
        0,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut screen = String::new();
    while !screen.contains(needle) {
        if Instant::now() > deadline {
            let _ = tmux(&["kill-server"]);
            panic!("{name} did not show {needle:?}:\n{screen}");
        }
        std::thread::sleep(Duration::from_millis(300));
        screen = stdout(&tmux(&["capture-pane", "-p", "-t", "t"]));
    }
    let _ = tmux(&["kill-server"]);
}
