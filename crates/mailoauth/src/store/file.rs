//! The 0600 JSON file store, and the atomic-write primitive every file in the state
//! directory goes through.
//!
//! Owns: durable replacement of a file (temp file in the same directory, fsync,
//! rename, fsync of the directory). Must not: interpret records beyond parsing.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Backend, TokenRecord};
use crate::error::{Error, Result};
use crate::paths;
use crate::remedy::Remedy;

/// Tokens in `$XDG_STATE_HOME/mailoauth/tokens/<account>.json`, mode 0600.
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// A store at `path` (nothing is touched until used).
    pub fn new(path: PathBuf) -> Self {
        FileStore { path }
    }

    /// True if a record file exists (used by `auto` to avoid probing the keyring).
    pub fn exists(&self) -> bool {
        self.path.exists()
    }
}

impl Backend for FileStore {
    fn load(&self) -> Result<Option<TokenRecord>> {
        let Some(bytes) = read_optional(&self.path)? else {
            return Ok(None);
        };
        TokenRecord::from_bytes(&bytes)
            .map(Some)
            .map_err(|detail| corrupt(&self.path, detail))
    }

    fn save(&self, rec: &TokenRecord) -> Result<()> {
        write_atomic(&self.path, &rec.to_bytes())
    }

    fn delete(&self) -> Result<()> {
        remove_optional(&self.path)
    }

    fn set_aside(&self) -> Result<Option<String>> {
        Ok(set_aside(&self.path)?.map(|p| p.display().to_string()))
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}

/// The error for an unreadable store file: says how to recover without losing it.
pub(crate) fn corrupt(path: &Path, detail: String) -> Error {
    Error::Store {
        store: path.display().to_string(),
        detail,
        remedy: Some(Remedy::Steps(format!(
            "the file was left untouched; signing in again will set it aside as {}.corrupt-<time> \
             and start afresh (or restore it from a backup)",
            path.display()
        ))),
    }
}

/// Read a file, `None` if it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
    }
}

/// Remove a file; fine if it is not there.
pub(crate) fn remove_optional(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("cannot delete {}", path.display()), e)),
    }
}

/// Move an unreadable file out of the way (never delete it: it may be the only copy
/// of a refresh token someone can still rescue). Returns the new name.
pub(crate) fn set_aside(path: &Path) -> Result<Option<PathBuf>> {
    if !path.exists() {
        return Ok(None);
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".corrupt-{stamp}"));
    let to = PathBuf::from(name);
    fs::rename(path, &to).map_err(|e| Error::io(format!("cannot rename {}", path.display()), e))?;
    Ok(Some(to))
}

/// Replace `path` with `bytes` so that a crash at any instant leaves either the old
/// or the new content: write a 0600 temp file beside it, fsync it, rename it over,
/// fsync the directory (so the rename itself survives a power cut).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    paths::ensure_private_dir(dir)?;
    let ctx = |what: &str| format!("cannot {what} {}", path.display());
    // tempfile creates the file with mode 0600 and O_EXCL.
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(ctx("create a temporary file for"), e))?;
    tmp.write_all(bytes)
        .map_err(|e| Error::io(ctx("write"), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(ctx("fsync"), e))?;
    tmp.persist(path)
        .map_err(|e| Error::io(ctx("rename into"), e.error))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("cannot fsync directory {}", dir.display()), e))?;
    remove_stale_temp_files(dir);
    Ok(())
}

/// A writer killed between creating and renaming its temp file leaves it behind;
/// sweep ones older than a minute (a live writer finishes in milliseconds).
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let minute_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    for e in entries.flatten() {
        let stale = e.file_name().to_string_lossy().starts_with(".tmp-")
            && e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < minute_ago);
        if stale {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_is_private_and_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/x.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(p.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        // No temp files left behind.
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn truncated_file_is_a_clear_error_and_stays() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.json");
        fs::write(&p, b"{\"version\":1,\"refresh_token\":\"abc").unwrap();
        let s = FileStore::new(p.clone());
        let e = s.load().unwrap_err();
        assert!(e.to_string().contains("not a valid token record"), "{e}");
        assert!(format!("{:?}", e.remedy()).contains("set it aside"));
        assert!(p.exists());
        let aside = set_aside(&p).unwrap().unwrap();
        assert!(aside.exists() && !p.exists());
    }
}
