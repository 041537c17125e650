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
/// is: it may be one the user chose (e.g. the folder of `--config`) — except
/// that the state directory and those under it must not be writable by others
/// (see [`check_state_dir`]).
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    check_state_dir(dir)?;
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(format!("cannot create directory {}", dir.display()), e))?;
    }
    Ok(())
}

/// Refuse a state directory (or one below it, up to `dir`) that group or others
/// may write to: whoever can write there can swap token files, status and
/// locks, so using it silently would trust them with the account. Directories
/// outside the state directory, and ones that do not exist yet, pass.
pub fn check_state_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let state = state_dir();
    let Ok(below) = dir.strip_prefix(&state) else {
        return Ok(());
    };
    let mut d = state.clone();
    let mut walk = vec![d.clone()];
    for part in below.components() {
        d.push(part);
        walk.push(d.clone());
    }
    for d in walk {
        let Ok(meta) = fs::metadata(&d) else {
            return Ok(());
        };
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() && mode & 0o022 != 0 {
            return Err(Error::Store {
                store: d.display().to_string(),
                detail: format!(
                    "the directory is writable by group or others (mode {mode:o}): anyone who can \
                     write there can replace tokens and status, so it is not used"
                ),
                remedy: Some(crate::remedy::Remedy::Steps(format!(
                    "run `chmod go-w {}` (mailoauth creates its directories 0700)",
                    d.display()
                ))),
            });
        }
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
