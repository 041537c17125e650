//! The keyring store against a real Secret Service: gnome-keyring on a private
//! session bus (`dbus-run-session`), unlocked with a test password. Also the
//! fallback with no D-Bus at all, and the encrypted file store with its key in
//! the keyring or from a passphrase command.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// gnome-keyring on its own session bus; torn down on drop. This is what
/// `dbus-run-session` does, done by hand so both daemons are our children and
/// can be ended by PID (dbus-run-session leaves its bus behind when killed).
struct SecretService {
    bus: Child,
    keyring: Child,
    address: String,
}

impl SecretService {
    fn start(home: &Path) -> SecretService {
        need("dbus-daemon", "apt-get install -y dbus");
        need("gnome-keyring-daemon", "apt-get install -y gnome-keyring");
        need("secret-tool", "apt-get install -y libsecret-tools");
        // gnome-keyring occasionally comes up without a usable login collection
        // (secret-tool then waits on a prompt nobody answers): start afresh.
        for attempt in 0..3 {
            if let Some(ss) = Self::try_start(&home.join(format!("keyring-{attempt}"))) {
                return ss;
            }
        }
        panic!("gnome-keyring did not come up on the session bus (3 attempts)");
    }

    fn try_start(home: &Path) -> Option<SecretService> {
        std::fs::create_dir_all(home).unwrap();
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(bus.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let address = first.trim().to_owned();
        std::fs::create_dir_all(home.join("run")).unwrap();
        let mut keyring = Command::new("gnome-keyring-daemon")
            .args(["--unlock", "--components=secrets", "--foreground"])
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .env("HOME", home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_RUNTIME_DIR", home.join("run"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = keyring.stdin.take().unwrap();
            stdin.write_all(b"test-password").unwrap();
        }
        let ss = SecretService {
            bus,
            keyring,
            address,
        };
        // Wait until the Secret Service stores items (the login collection exists
        // and is unlocked), not merely until its name is on the bus.
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            let stored = Command::new("sh")
                .args([
                    "-c",
                    "printf x | timeout 3 secret-tool store --label=probe service mailoauth-probe username p",
                ])
                .env("DBUS_SESSION_BUS_ADDRESS", &ss.address)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if stored {
                return Some(ss);
            }
            if Instant::now() > deadline {
                return None; // dropping `ss` ends both daemons
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn lookup(&self, user: &str) -> Option<String> {
        let o = Command::new("secret-tool")
            .args(["lookup", "service", "mailoauth", "username", user])
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .output()
            .unwrap();
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    }
}

impl Drop for SecretService {
    fn drop(&mut self) {
        for child in [&mut self.keyring, &mut self.bus] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn with_bus(sb: &Sandbox, ss: &SecretService, args: &[&str]) -> std::process::Output {
    let mut c = sb.cmd(args);
    c.env("DBUS_SESSION_BUS_ADDRESS", &ss.address);
    run_with_timeout(c, Duration::from_secs(60))
}

#[test]
fn keyring_store_keeps_tokens_in_the_secret_service() {
    let srv = OAuthServer::start(&[]);
    let sb = Sandbox::new(&accounts(&srv.issuer, "keyring"));
    let ss = SecretService::start(sb.dir.path());
    let first = with_bus(&sb, &ss, &["token", "app"]);
    assert_exit(&first, 0);
    assert_eq!(
        stdout(&with_bus(&sb, &ss, &["token", "app"])),
        stdout(&first),
        "served from the keyring"
    );
    assert_eq!(srv.token_requests(), 1);
    let item = ss
        .lookup("app")
        .expect("a Secret Service item for the account");
    assert!(
        item.contains(stdout(&first).trim()),
        "the item holds the token record"
    );
    assert!(!sb.token_file("app").exists(), "nothing on disk");
    let st = stdout(&with_bus(&sb, &ss, &["status", "app", "--json"]));
    assert!(
        st.contains("keyring (Secret Service item mailoauth/app)"),
        "{st}"
    );
    // Refresh-token rotation goes through the keyring too.
    assert_exit(
        &sb.login_with_browser_env("pub", &[("DBUS_SESSION_BUS_ADDRESS", &ss.address)])
            .0,
        0,
    );
    let rt1 = ss.lookup("pub").unwrap();
    assert_exit(&with_bus(&sb, &ss, &["refresh", "pub"]), 0);
    assert_exit(&with_bus(&sb, &ss, &["refresh", "pub"]), 0);
    assert_ne!(ss.lookup("pub").unwrap(), rt1);
    assert_exit(&with_bus(&sb, &ss, &["logout", "pub"]), 0);
    assert!(ss.lookup("pub").is_none(), "logout deletes the item");
}

#[test]
fn auto_uses_the_keyring_when_reachable_and_the_file_without_dbus() {
    let srv = OAuthServer::start(&[]);
    let sb = Sandbox::new(&accounts(&srv.issuer, "auto"));
    let ss = SecretService::start(sb.dir.path());
    assert_exit(&with_bus(&sb, &ss, &["token", "app"]), 0);
    let st = stdout(&with_bus(&sb, &ss, &["status", "app", "--json"]));
    assert!(st.contains("auto → keyring"), "{st}");
    assert!(!sb.token_file("app").exists());

    // No D-Bus at all: falls back to the 0600 file, quickly.
    let sb2 = Sandbox::new(&accounts(&srv.issuer, "auto"));
    let t = Instant::now();
    assert_exit(&sb2.run(&["token", "app"]), 0);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "fallback took {:?}",
        t.elapsed()
    );
    assert!(sb2.token_file("app").exists());
    let st = stdout(&sb2.run(&["status", "app", "--json"]));
    assert!(st.contains("auto → file"), "{st}");
    // A bus without a Secret Service also falls back.
    let mut c = sb2.cmd(&["status", "app", "--json"]);
    c.env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus");
    assert!(stdout(&run_with_timeout(c, Duration::from_secs(10))).contains("auto → file"));
}

#[test]
fn explicit_keyring_without_dbus_is_a_clear_error() {
    let srv = OAuthServer::start(&[]);
    let sb = Sandbox::new(&accounts(&srv.issuer, "keyring"));
    let o = sb.run(&["token", "app"]);
    assert_exit(&o, 1);
    let e = stderr(&o);
    assert!(
        e.contains("keyring") && e.contains("store = \\\"file\\\"")
            || e.contains("store = \"file\""),
        "{e}"
    );
}

#[test]
fn encrypted_file_with_key_in_keyring_or_from_a_passphrase_command() {
    let srv = OAuthServer::start(&[]);
    let sb = Sandbox::new(&accounts(&srv.issuer, "encrypted-file"));
    let ss = SecretService::start(sb.dir.path());
    let t = with_bus(&sb, &ss, &["token", "app"]);
    assert_exit(&t, 0);
    let enc = sb.state().join("tokens/app.enc");
    let raw = std::fs::read(&enc).unwrap();
    let token = stdout(&t).trim().to_owned();
    assert!(
        !String::from_utf8_lossy(&raw).contains(&token[..40]),
        "the token is not in clear"
    );
    assert!(ss.lookup("app.key").is_some(), "the key is in the keyring");
    assert_eq!(stdout(&with_bus(&sb, &ss, &["token", "app"])).trim(), token);
    assert_eq!(srv.token_requests(), 1);

    // Passphrase from a command: no keyring needed.
    let config = accounts(&srv.issuer, "encrypted-file").replace(
        "store = \"encrypted-file\"",
        "store = \"encrypted-file\"\npassphrase = { command = \"printf %s \\\"$PASS\\\"\" }",
    );
    let sb = Sandbox::new(&config);
    let mut c = sb.cmd(&["token", "app"]);
    c.env("PASS", "correct horse");
    let t = run_with_timeout(c, Duration::from_secs(30));
    assert_exit(&t, 0);
    let mut c = sb.cmd(&["token", "app"]);
    c.env("PASS", "wrong");
    let o = run_with_timeout(c, Duration::from_secs(30));
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("wrong passphrase"), "{}", stderr(&o));
}
