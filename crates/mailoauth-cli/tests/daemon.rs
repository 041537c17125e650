//! `mailoauth daemon` against the real authorization server: refresh ahead of
//! expiry with no caller, tokens from memory, single instance, a silent client
//! stalls nobody, a kill mid-refresh loses nothing, login and SIGHUP are picked up.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(sb: &Sandbox) -> Daemon {
        let log = sb.dir.path().join(format!("daemon-{}.log", now()));
        let mut c = sb.cmd(&["-v", "daemon"]);
        c.stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = c.spawn().unwrap();
        let d = Daemon { child, log };
        let sock = sb.dir.path().join("run/mailoauth/daemon.sock");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "daemon did not start: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn logged_in(env: &[(&str, &str)]) -> (OAuthServer, Sandbox) {
    let srv = OAuthServer::start(env);
    let sb = Sandbox::new(&accounts(&srv.issuer, "file"));
    assert_exit(&sb.login_with_browser("pub", BrowserMode::Follow).0, 0);
    (srv, sb)
}

#[test]
fn token_via_daemon_makes_no_request_and_comes_from_memory() {
    let (srv, sb) = logged_in(&[]);
    let d = Daemon::start(&sb);
    let first = sb.run(&["token", "pub"]);
    assert_exit(&first, 0);
    let n = srv.token_requests();
    // Take the store away: only the daemon can still answer.
    let moved = sb.token_file("pub").with_extension("away");
    std::fs::rename(sb.token_file("pub"), &moved).unwrap();
    for _ in 0..5 {
        let t = sb.run(&["token", "pub"]);
        assert_eq!(t.status.code(), Some(0), "{}\n{}", stderr(&t), d.log());
        assert_eq!(stdout(&t), stdout(&first));
    }
    let x = sb.run(&["token", "pub", "--sasl", "xoauth2"]);
    assert_exit(&x, 0);
    assert_eq!(srv.token_requests(), n, "no token-endpoint request");
    std::fs::rename(&moved, sb.token_file("pub")).unwrap();
}

#[test]
fn daemon_refreshes_before_expiry_without_any_caller() {
    // 8 s tokens: the daemon refreshes at half life, ~4 s before expiry.
    let (srv, sb) = logged_in(&[("ACCESS_TOKEN_TTL", "8")]);
    let rt0 = sb.record("pub")["refresh_token"].clone();
    let exp0 = sb.record("pub")["access"]["mail"]["expires_at"]
        .as_i64()
        .unwrap();
    let d = Daemon::start(&sb);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sb.record("pub")["refresh_token"] == rt0 {
        assert!(
            Instant::now() < deadline,
            "no refresh happened: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(now() < exp0, "refreshed before the old token expired");
    assert!(srv.grant_requests("refresh_token") >= 1);
    // And again for the next token: the schedule keeps going.
    let rt1 = sb.record("pub")["refresh_token"].clone();
    while sb.record("pub")["refresh_token"] == rt1 {
        assert!(Instant::now() < deadline, "no second refresh: {}", d.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn two_daemons_for_the_same_runtime_dir_refuse_to_run_together() {
    let srv = OAuthServer::start(&[]);
    let sb = Sandbox::new(&accounts(&srv.issuer, "file"));
    let _d = Daemon::start(&sb);
    let second = run_with_timeout(sb.cmd(&["daemon"]), Duration::from_secs(10));
    assert_exit(&second, 2);
    assert!(
        stderr(&second).contains("already running"),
        "{}",
        stderr(&second)
    );
}

#[test]
fn a_silent_client_does_not_stall_others() {
    let (_srv, sb) = logged_in(&[]);
    let _d = Daemon::start(&sb);
    let sock = sb.dir.path().join("run/mailoauth/daemon.sock");
    let _silent: Vec<_> = (0..3)
        .map(|_| std::os::unix::net::UnixStream::connect(&sock).unwrap())
        .collect();
    let t = Instant::now();
    assert_exit(&sb.run(&["token", "pub"]), 0);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[test]
fn a_client_slow_to_send_its_request_is_still_answered() {
    use std::io::{Read, Write};
    let (_srv, sb) = logged_in(&[]);
    let _d = Daemon::start(&sb);
    let expected = stdout(&sb.run(&["token", "pub"]));
    let sock = sb.dir.path().join("run/mailoauth/daemon.sock");
    let config = std::fs::canonicalize(sb.dir.path().join("config/mailoauth/config.toml")).unwrap();
    let line = format!(
        "{{\"v\":1,\"op\":\"token\",\"config\":{},\"account\":\"pub\"}}\n",
        serde_json::to_string(config.to_str().unwrap()).unwrap()
    );
    let (head, tail) = line.split_at(10);
    let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(head.as_bytes()).unwrap();
    // Past the socket thread's wait for a first line: the runtime finishes it.
    std::thread::sleep(Duration::from_millis(300));
    c.write_all(tail.as_bytes()).unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(v["ok"], true, "{reply}");
    assert_eq!(v["value"].as_str().unwrap(), expected.trim());
}

#[test]
fn killing_the_daemon_mid_refresh_loses_nothing() {
    let (srv, sb) = logged_in(&[("ACCESS_TOKEN_TTL", "4"), ("TOKEN_DELAY_MS", "1500")]);
    let before = sb.record("pub");
    let mut d = Daemon::start(&sb);
    // The daemon refreshes at ~2 s; the server holds the request 1.5 s: kill inside.
    let deadline = Instant::now() + Duration::from_secs(20);
    while srv.grant_requests("refresh_token") == 0 {
        assert!(Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    d.child.kill().unwrap();
    let _ = d.child.wait();
    let rec = sb.record("pub");
    assert_eq!(rec, before, "the store is the old record, whole");
    // Nothing lost: the stored refresh token still works.
    assert_exit(&sb.run(&["refresh", "pub"]), 0);
    // The dead daemon's socket does not confuse `token`.
    assert_exit(&sb.run(&["token", "pub"]), 0);
}

#[test]
fn login_while_the_daemon_runs_is_picked_up_at_once() {
    let (_srv, sb) = logged_in(&[]);
    let _d = Daemon::start(&sb);
    let old = stdout(&sb.run(&["token", "pub"]));
    assert_exit(&sb.login_with_browser("pub", BrowserMode::Follow).0, 0);
    let new = stdout(&sb.run(&["token", "pub"]));
    assert_ne!(old, new, "the daemon serves the new login's token");
    assert_eq!(
        new.trim(),
        sb.record("pub")["access"]["mail"]["token"]
            .as_str()
            .unwrap()
    );
}

#[test]
fn sighup_reloads_config_and_sigterm_stops_cleanly() {
    let srv = OAuthServer::start(&[]);
    let full = accounts(&srv.issuer, "file");
    let only_pub = full.split("[accounts.conf]").next().unwrap().to_owned();
    let sb = Sandbox::new(&only_pub);
    let mut d = Daemon::start(&sb);
    std::fs::write(&sb.config, &full).unwrap();
    d.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log().contains("config reloaded") {
        assert!(Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The app-only account appears and the daemon fetches its token by itself.
    while !sb.token_file("app").exists() {
        assert!(Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_exit(&sb.run(&["token", "app"]), 0);
    d.signal("-TERM");
    let status = d.child.wait().unwrap();
    assert!(status.success(), "{status:?}: {}", d.log());
    assert!(
        !sb.dir.path().join("run/mailoauth/daemon.sock").exists(),
        "socket removed"
    );
}

#[test]
fn login_required_is_notified_once_by_the_daemon() {
    let srv = OAuthServer::start(&[("ACCESS_TOKEN_TTL", "6")]);
    let marker = tempfile::NamedTempFile::new().unwrap();
    let config = accounts(&srv.issuer, "file").replacen(
        "store = \"file\"",
        &format!(
            "store = \"file\"\nnotify_command = \"echo \\\"$MAILOAUTH_ACCOUNT\\\" >> {}\"",
            marker.path().display()
        ),
        1,
    );
    let sb = Sandbox::new(&config);
    assert_exit(&sb.login_with_browser("pub", BrowserMode::Follow).0, 0);
    let stale = sb.record("pub");
    assert_exit(&sb.run(&["refresh", "pub"]), 0);
    sb.write_record("pub", &stale); // a lost rotation: the next refresh is refused
    let d = Daemon::start(&sb);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(marker.path()).unwrap().is_empty() {
        assert!(Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Callers keep asking; nobody is notified twice.
    std::thread::sleep(Duration::from_secs(4));
    for _ in 0..3 {
        assert_exit(&sb.run(&["token", "pub"]), 3);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(std::fs::read_to_string(marker.path()).unwrap(), "pub\n");
    let st: serde_json::Value =
        serde_json::from_str(&stdout(&sb.run(&["status", "pub", "--json"]))).unwrap();
    assert!(st["accounts"][0]["login_required"].is_string(), "{st}");
}

#[test]
fn normal_start_up_and_stop_log_nothing_at_the_default_level() {
    // Under systemd every warning lands in the journal: a normal day must not make one.
    let (_srv, sb) = logged_in(&[]);
    let log = sb.dir.path().join("quiet.log");
    let mut c = sb.cmd(&["daemon"]);
    c.stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = c.spawn().unwrap();
    let sock = sb.dir.path().join("run/mailoauth/daemon.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "daemon did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_exit(&sb.run(&["token", "pub"]), 0);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "daemon did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.is_empty(),
        "the daemon logged at the default level:\n{text}"
    );
}

#[test]
fn a_hanging_secret_command_delays_no_other_account_and_each_command_runs_once() {
    // 6 s tokens: `conf` is due every ~3 s. `stuck` is due at once, and its
    // secret command hangs far longer than this test.
    let srv = OAuthServer::start(&[("ACCESS_TOKEN_TTL", "6")]);
    let runs = tempfile::tempdir().unwrap();
    let (conf_runs, stuck_runs) = (runs.path().join("conf"), runs.path().join("stuck"));
    let base = accounts(&srv.issuer, "file").replace(
        "client_secret = { env = \"TEST_CLIENT_SECRET\" }",
        &format!(
            "client_secret = {{ command = \"echo run >> {}; echo test-secret\" }}",
            conf_runs.display()
        ),
    );
    let stuck = format!(
        "\n[accounts.stuck]\nprovider = \"custom\"\nuser = \"carol@example.test\"\nclient_id = \"confidential\"\n\
         client_secret = {{ command = \"echo run >> {}; sleep 60\" }}\nsecret_timeout = 50\n\
         authorize_url = \"{i}/auth\"\ntoken_url = \"{i}/token\"\nscopes = [\"openid\", \"offline_access\"]\nstore = \"file\"\n",
        stuck_runs.display(),
        i = srv.issuer
    );
    let sb = Sandbox::new(&(base + &stuck));
    assert_exit(&sb.login_with_browser("conf", BrowserMode::Follow).0, 0);
    let mut rec = sb.record("conf");
    rec["access"]["mail"]["expires_at"] = (now() - 5).into();
    sb.write_record("stuck", &rec);
    let count = |p: &PathBuf| {
        std::fs::read_to_string(p)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let after_login = count(&conf_runs);
    let obtained = || {
        sb.record("conf")["access"]["mail"]["obtained_at"]
            .as_i64()
            .unwrap()
    };
    let d = Daemon::start(&sb);
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut seen = vec![obtained()];
    while seen.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "`conf` was not refreshed on time beside the hanging `stuck`: {}",
            d.log()
        );
        let o = obtained();
        if o != *seen.last().unwrap() {
            seen.push(o);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        count(&conf_runs),
        after_login + 1,
        "the daemon ran `conf`'s secret command more than once: {}",
        d.log()
    );
    assert_eq!(count(&stuck_runs), 1, "{}", d.log());
}
