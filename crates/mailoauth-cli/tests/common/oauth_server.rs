//! The real authorization server (oidc-provider, from npm) for tests, and the
//! rule that a missing tool fails with its install command. Shared by the CLI's
//! and the service's end-to-end suites.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn oauth_dir() -> PathBuf {
    repo_root().join("tests/oauth-server")
}

/// Fail loudly (with the fix) when a tool the test needs is missing.
pub fn need(program: &str, install: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "this test needs `{program}`: install it with `{install}` (or run .ci/run)"
    );
}

/// A free loopback port (for listeners a test starts).
pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768-60999): a port handed out by
    // bind(0) is also what outgoing connections take as their local port, so
    // between our check and the server's bind another test's connection could
    // take it ("Address already in use"). Here only another caller of this
    // function could, and the counter keeps one process's ports apart.
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 10_000 + (std::process::id() * 7919) % 20_000;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (10_000 + (base - 10_000 + n) % 22_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A running oidc-provider; killed on drop.
pub struct OAuthServer {
    child: Child,
    pub issuer: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl OAuthServer {
    pub fn start(env: &[(&str, &str)]) -> OAuthServer {
        need("node", "apt-get install -y nodejs npm");
        assert!(
            oauth_dir().join("node_modules/oidc-provider").exists(),
            "the test authorization server is not installed: run `npm ci --prefix tests/oauth-server` (or .ci/run)"
        );
        // Node 20 here deadlocks at start-up about once in 50 runs (main thread stuck
        // on a futex before listening; seen with strace): retry a few times.
        let mut failures = String::new();
        for _ in 0..4 {
            match Self::try_start(env) {
                Ok(s) => return s,
                Err(e) => failures.push_str(&e),
            }
        }
        panic!("the test authorization server did not start:\n{failures}");
    }

    fn try_start(env: &[(&str, &str)]) -> Result<OAuthServer, String> {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let mut cmd = Command::new("node");
        cmd.arg(oauth_dir().join("server.mjs"))
            .env("PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start node");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            // oidc-provider may print notices on stdout before our JSON line.
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if line.trim_start().starts_with("{\"issuer\"") {
                    break;
                }
                line.clear();
            }
            let _ = tx.send(line);
            // Keep draining: oidc-provider prints notices on stdout, and a closed pipe kills it.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        // A normal start takes under a second, a few on 2 busy cores.
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        match serde_json::from_str::<Value>(&line) {
            Ok(v) => Ok(OAuthServer {
                child,
                issuer: v["issuer"].as_str().unwrap().to_owned(),
                log,
                _dir: dir,
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "attempt failed; its log: {}\n",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ))
            }
        }
    }

    /// Stop it (a provider outage); [`OAuthServer::restart`] brings it back.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start it again on the same port with the same settings. It keeps its
    /// state in memory only, so every grant it made is forgotten: refresh
    /// tokens it issued are refused with `invalid_grant` (a revocation).
    pub fn restart(&mut self) {
        self.stop();
        let port = self.issuer.rsplit(':').next().unwrap().to_owned();
        let mut env = self.env.clone();
        env.push(("PORT".into(), port));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        *self = OAuthServer::start(&env);
    }

    pub fn stats(&self) -> Value {
        let out = Command::new("curl")
            .args(["-sf", &format!("{}/test/stats", self.issuer)])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).expect("stats JSON")
    }

    pub fn token_requests(&self) -> u64 {
        self.stats()["token_requests"].as_u64().unwrap()
    }

    pub fn grant_requests(&self, grant: &str) -> u64 {
        self.stats()["by_grant_type"][grant].as_u64().unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for OAuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
