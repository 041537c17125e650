//! `mailoauth serve` hands over to the separately built `mailoauth-serve`:
//! found next to `mailoauth` or on PATH, arguments passed on; a clear
//! install hint when it is missing. Uses the real binaries of this build
//! (`cargo test --workspace` builds both).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The build's directory of executables (this test runs from `…/deps/`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_owned()
}

fn serve_binary() -> PathBuf {
    let p = bin_dir().join("mailoauth-serve");
    assert!(
        p.exists(),
        "{} is not built: run `cargo build -p mailoauth-serve` first (`cargo test --workspace` and .ci/run build it)",
        p.display()
    );
    p
}

/// A copy of `mailoauth` alone in `dir` (a copy: /proc/self/exe would see
/// through a symlink to the build directory, where the service sits too).
fn lone_mailoauth(dir: &Path) -> PathBuf {
    let p = dir.join("mailoauth");
    common::copy_executable(Path::new(env!("CARGO_BIN_EXE_mailoauth")), &p);
    p
}

fn run(exe: &Path, path: &Path, args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    Command::new(exe)
        .args(args)
        .env_clear()
        .env("PATH", path)
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env("XDG_STATE_HOME", home.path().join("state"))
        .output()
        .unwrap()
}

#[test]
fn serve_hands_over_to_mailoauth_serve_on_path_with_its_arguments() {
    let serve = serve_binary();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let exe = lone_mailoauth(a.path());
    std::os::unix::fs::symlink(&serve, b.path().join("mailoauth-serve")).unwrap();
    let out = run(&exe, b.path(), &["serve", "keygen"]);
    let key = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        key.trim().len(),
        44,
        "a base64 master key from mailoauth-serve: {key}"
    );
    // Its own help, not mailoauth's.
    let out = run(&exe, b.path(), &["serve", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("mailoauth-serve") && help.contains("rotate-key"),
        "{help}"
    );
}

#[test]
fn serve_finds_mailoauth_serve_next_to_mailoauth() {
    let serve = serve_binary();
    let a = tempfile::tempdir().unwrap();
    let exe = lone_mailoauth(a.path());
    std::os::unix::fs::symlink(&serve, a.path().join("mailoauth-serve")).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let out = run(&exe, empty.path(), &["serve", "keygen"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn serve_without_mailoauth_serve_says_how_to_install_it() {
    let a = tempfile::tempdir().unwrap();
    let exe = lone_mailoauth(a.path());
    let empty = tempfile::tempdir().unwrap();
    let out = run(&exe, empty.path(), &["serve"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cargo install --locked --path crates/mailoauth-serve")
            && err.contains("PATH"),
        "{err}"
    );
}
