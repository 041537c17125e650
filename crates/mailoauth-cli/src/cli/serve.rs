//! `mailoauth serve`: hand over to the service's own executable.
//!
//! Owns: finding `mailoauth-serve` (next to this executable, else on `PATH`)
//! and replacing this process with it, arguments passed on as they are. The
//! service is its own crate so this binary links none of it (its cached
//! `token` path stays small and fast). Must not: parse the service's
//! arguments or start anything itself.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use mailoauth::Error;

use super::args::{Cli, ServeArgs};

/// The service's executable name.
const SERVE: &str = "mailoauth-serve";

/// Exec `mailoauth-serve` with `a`'s arguments (and `--config` when given to
/// `mailoauth`); returns only when it could not be started.
pub fn hand_over(cli: &Cli, a: &ServeArgs) -> Result<(), Error> {
    let here = std::env::current_exe().ok();
    let Some(exe) = find(here.as_deref(), std::env::var_os("PATH").as_deref()) else {
        return Err(Error::Usage(format!(
            "`mailoauth serve` runs the multi-user service, `{SERVE}`, which is not installed (looked next to \
             {} and on PATH). Install it from the source tree with `cargo install --locked --path \
             crates/{SERVE}` (see the README), then run `mailoauth serve` or `{SERVE}`",
            here.as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "this program".into())
        )));
    };
    let mut c = Command::new(&exe);
    if let Some(config) = &cli.config {
        c.arg("--config").arg(config);
    }
    c.args(&a.args);
    let e = c.exec();
    Err(Error::io(format!("cannot run {}", exe.display()), e))
}

/// `mailoauth-serve` next to `here`, else the first on `path`.
fn find(here: Option<&Path>, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    let beside = here
        .and_then(Path::parent)
        .map(|d| d.join(SERVE))
        .into_iter();
    let on_path = path
        .map(|p| {
            std::env::split_paths(p)
                .map(|d| d.join(SERVE))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    beside.chain(on_path).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
