//! Where mailoauth keeps things on disk.
//!
//! Owns: the XDG base-directory rules of the spec (config, state, runtime) and the
//! creation of private directories. Must not: read or write any file content.
//! Hand-written rather than a crate: it is five environment variables and the
//! spec pins the exact meaning (state, never cache).

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    match std::env::var_os(var) {
        // XDG says relative paths are invalid and must be ignored.
        Some(v) if Path::new(&v).is_absolute() => PathBuf::from(v),
        _ => home().join(fallback),
    }
}

/// The config file: `--config`/`MAILOAUTH_CONFIG` (handled by the caller) else
/// `$XDG_CONFIG_HOME/mailoauth/config.toml`.
pub fn default_config_file() -> PathBuf {
    if let Some(p) = std::env::var_os("MAILOAUTH_CONFIG") {
        return PathBuf::from(p);
    }
    xdg("XDG_CONFIG_HOME", ".config").join("mailoauth/config.toml")
}

/// Persistent state: `$XDG_STATE_HOME/mailoauth` (tokens of file stores, status, locks).
pub fn state_dir() -> PathBuf {
    xdg("XDG_STATE_HOME", ".local/state").join("mailoauth")
}

/// Runtime directory for the daemon socket: `$XDG_RUNTIME_DIR/mailoauth`, or a
/// per-user directory under the state dir when the session has no runtime dir.
pub fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(v) if Path::new(&v).is_absolute() => PathBuf::from(v).join("mailoauth"),
        _ => state_dir().join("run"),
    }
}

/// Create `dir` (and parents) with mode 0700. An existing directory is left as it
/// is: it may be one the user chose (e.g. the folder of `--config`).
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(format!("cannot create directory {}", dir.display()), e))?;
    }
    Ok(())
}

/// A name safe to use as a file name: account names come from the config, which a
/// user may write with any characters.
pub fn file_stem(account: &str) -> String {
    account
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Open (creating) a lock file, for `File::lock`/`try_lock`. The kernel drops the
/// lock when the holder dies, so a killed process never leaves one behind.
pub fn open_lock_file(path: &Path) -> Result<fs::File> {
    fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(format!("cannot open lock file {}", path.display()), e))
}

/// The file a path finally names, following symbolic links (relative ones from
/// the link's own directory), so that replacing it atomically replaces the
/// target and keeps the user's link — a dotfiles repository, say. A path that is
/// not a link, or a loop of links, is returned as it is.
pub fn through_symlinks(path: &Path) -> PathBuf {
    let mut p = path.to_owned();
    // The kernel's own limit on links followed in one lookup.
    for _ in 0..40 {
        match fs::read_link(&p) {
            Ok(target) => {
                p = match p.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            Err(_) => return p,
        }
    }
    path.to_owned()
}
