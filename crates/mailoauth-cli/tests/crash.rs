//! Crash safety: `mailoauth refresh` killed with SIGKILL at random points, 25
//! times. After every kill the store must be readable and whole — the old record
//! or the new one, never a mix — and the lock must not be left held.
//!
//! Against a strictly rotating server a kill after the server rotated but before
//! our write leaves a refresh token the server already retired; no client can
//! avoid that window (Microsoft keeps old refresh tokens valid, so there nothing
//! is lost). The test counts those and signs in again to continue.

mod common;

use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn killed_refresh_keeps_store_readable() {
    let srv = OAuthServer::start(&[("TOKEN_DELAY_MS", "15")]);
    let sb = Sandbox::new(&accounts(&srv.issuer, "file"));
    assert_exit(&sb.login_with_browser("pub", BrowserMode::Follow).0, 0);

    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash test seed {seed}");
    let mut rand = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    // Time an undisturbed refresh so the kills spread over its whole duration.
    let t = Instant::now();
    assert_exit(&sb.run(&["refresh", "pub"]), 0);
    let span = (t.elapsed().as_micros() as u64).max(1000);
    eprintln!("an undisturbed refresh takes {} ms", span / 1000);
    let (mut killed_running, mut finished_first, mut relogins) = (0, 0, 0);
    for round in 0..25 {
        let before = sb.record("pub");
        let mut c = sb.cmd(&["refresh", "pub"]);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        std::thread::sleep(Duration::from_micros(rand(span)));
        match child.try_wait().unwrap() {
            None => {
                child.kill().unwrap(); // SIGKILL
                killed_running += 1;
            }
            Some(_) => finished_first += 1,
        }
        let _ = child.wait();

        // The store parses and is whole: version, refresh token, a mail token.
        let bytes = std::fs::read(sb.token_file("pub")).unwrap();
        let rec: serde_json::Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("round {round}: store unreadable: {e}"));
        assert_eq!(rec["version"], 1, "round {round}");
        assert!(
            rec["refresh_token"].as_str().is_some_and(|s| !s.is_empty()),
            "round {round}: {rec}"
        );
        assert!(
            rec["access"]["mail"]["token"].as_str().is_some(),
            "round {round}"
        );
        let same = rec == before;
        let both_new = rec["refresh_token"] != before["refresh_token"]
            && rec["access"]["mail"]["token"] != before["access"]["mail"]["token"];
        assert!(same || both_new, "round {round}: a mix of old and new");
        // The CLI reads it too, and the lock is free (a killed holder releases it).
        let t = Instant::now();
        let st = sb.run(&["status", "pub", "--json"]);
        assert_exit(&st, 0);
        let v: serde_json::Value = serde_json::from_str(&stdout(&st)).unwrap();
        assert!(
            v["accounts"][0]["store_error"].is_null(),
            "round {round}: {v}"
        );
        let r = sb.run(&["refresh", "pub"]);
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "round {round}: lock left held?"
        );
        match r.status.code() {
            Some(0) => {}
            Some(3) => {
                // Killed inside the server-rotated-but-not-yet-stored window.
                relogins += 1;
                assert_exit(&sb.login_with_browser("pub", BrowserMode::Follow).0, 0);
            }
            _ => panic!("round {round}: {}", stderr(&r)),
        }
    }
    eprintln!(
        "crash test: 25 rounds, {killed_running} killed mid-run, {finished_first} finished before the kill, \
         {relogins} lost to strict rotation"
    );
    assert!(
        killed_running >= 10,
        "the kills should mostly land mid-refresh ({killed_running})"
    );
    // Temp files of killed writers do not accumulate beyond the kills.
    let leftovers = std::fs::read_dir(sb.state().join("tokens"))
        .unwrap()
        .count();
    assert!(leftovers <= 26, "{leftovers} files in the token dir");
}
