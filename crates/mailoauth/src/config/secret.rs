//! Secrets in the config: written literally, taken from an environment
//! variable, or printed by a command (`pass`, a pinentry, a vault CLI).
//!
//! Owns: producing a secret within its time limit (a hanging command is
//! stopped with everything it started), and the daemon's memory of command
//! output. Must not: put a secret's value into an error or a log line.

use std::collections::BTreeMap;
use std::fmt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// A secret given literally, from an environment variable, or from a command's output.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "a string, `{ env = \"VARIABLE\" }` or `{ command = \"shell command\" }`"
)]
pub enum SecretSource {
    /// Written in the file.
    Literal(String),
    /// `{ env = "NAME" }`.
    Env {
        /// Variable name.
        env: String,
    },
    /// `{ command = "pass show x" }`: first line of stdout.
    Command {
        /// Shell command, run with `sh -c`.
        command: String,
    },
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Literal(_) => f.write_str("Literal([redacted])"),
            SecretSource::Env { env } => write!(f, "Env({env})"),
            SecretSource::Command { command } => write!(f, "Command({command})"),
        }
    }
}

/// How long a secret command may take when the account does not say.
pub const DEFAULT_SECRET_TIMEOUT: Duration = Duration::from_secs(60);

/// Most a secret command may print: a secret is a line, not a file.
const MAX_SECRET_OUTPUT: u64 = 64 * 1024;

impl SecretSource {
    /// Produce the secret within [`DEFAULT_SECRET_TIMEOUT`]. `what` names it in errors (never the value).
    pub fn resolve(&self, what: &str) -> Result<Zeroizing<String>> {
        self.resolve_within(what, DEFAULT_SECRET_TIMEOUT)
    }

    /// Produce the secret; a command gets `timeout` (`secret_timeout`), then it
    /// and everything it started are killed, so a pinentry waiting on nobody or a
    /// `pass` waiting on a locked agent cannot hang `token` or the daemon.
    pub fn resolve_within(&self, what: &str, timeout: Duration) -> Result<Zeroizing<String>> {
        match self {
            SecretSource::Literal(s) => Ok(Zeroizing::new(s.clone())),
            SecretSource::Env { env } => std::env::var(env).map(Zeroizing::new).map_err(|_| {
                Error::Usage(format!(
                    "{what}: environment variable `{env}` is not set (the config says {what} = {{ env = \"{env}\" }})"
                ))
            }),
            SecretSource::Command { command } => {
                if let Some(known) = remembered(command) {
                    return Ok(known);
                }
                let (status, stdout) = run_secret_command(what, command, timeout)?;
                if !status.success() {
                    return Err(Error::Usage(format!(
                        "{what}: command `{command}` failed ({status}); fix the command or the secret it reads"
                    )));
                }
                let stdout = Zeroizing::new(String::from_utf8_lossy(&stdout).into_owned());
                let first = stdout.lines().next().unwrap_or("").trim_end_matches('\r');
                if first.is_empty() {
                    return Err(Error::Usage(format!("{what}: command `{command}` printed nothing")));
                }
                remember(command, first);
                Ok(Zeroizing::new(first.to_owned()))
            }
        }
    }
}

/// Outputs of secret commands, by command, while a long-running process asked
/// for them to be kept ([`remember_secret_commands`]); `None` otherwise.
static REMEMBERED: std::sync::Mutex<Option<BTreeMap<String, Zeroizing<String>>>> =
    std::sync::Mutex::new(None);

/// Keep (`true`) or stop keeping and forget (`false`) what secret commands
/// print, in this process's memory only. The daemon keeps them: a command that
/// asks a pinentry or a `pass` agent must not run on every planning round or
/// refresh; a reload of the config forgets them. Failures are never kept, so a
/// command that failed or timed out is tried again (after the daemon's backoff).
pub fn remember_secret_commands(keep: bool) {
    let mut m = REMEMBERED.lock().unwrap_or_else(|p| p.into_inner());
    *m = keep.then(BTreeMap::new);
}

fn remembered(command: &str) -> Option<Zeroizing<String>> {
    let m = REMEMBERED.lock().unwrap_or_else(|p| p.into_inner());
    m.as_ref()?.get(command).cloned()
}

fn remember(command: &str, value: &str) {
    let mut m = REMEMBERED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = m.as_mut() {
        m.insert(command.to_owned(), Zeroizing::new(value.to_owned()));
    }
}

/// Run `sh -c command` in a process group of its own; its exit status and
/// stdout, or an error once `timeout` has passed (the group is killed then).
fn run_secret_command(
    what: &str,
    command: &str,
    timeout: Duration,
) -> Result<(std::process::ExitStatus, Zeroizing<Vec<u8>>)> {
    use std::io::Read as _;
    use std::os::unix::process::CommandExt as _;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .map_err(|e| Error::io(format!("{what}: cannot run `{command}`"), e))?;
    let deadline = Instant::now() + timeout;
    let pid = child.id() as i32;
    let mut out = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    // The reader and the waiter run on threads so the deadline holds even if the
    // command never closes its stdout or never exits.
    let reader = std::thread::spawn(move || {
        let mut buf = Zeroizing::new(Vec::new());
        let _ = (&mut out).take(MAX_SECRET_OUTPUT).read_to_end(&mut buf);
        buf
    });
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(Error::io(format!("{what}: waiting for `{command}`"), e)),
        Err(_) => {
            // SAFETY: kill(2) on our own child's process group; no memory is involved.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            return Err(Error::Usage(format!(
                "{what}: command `{command}` did not finish within {} s and was stopped; \
                 unlock what it waits for (a pinentry, a gpg or pass agent), or raise `secret_timeout`",
                timeout.as_secs_f32()
            )));
        }
    };
    // The command exited; what it left running keeps the pipe open at most
    // until the deadline.
    let (btx, brx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = btx.send(reader.join());
    });
    match brx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Ok(stdout)) => Ok((status, stdout)),
        _ => {
            // SAFETY: as above.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            Err(Error::Usage(format!(
                "{what}: command `{command}` left a process holding its output open; \
                 make it print the secret and exit"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_never_shows_literal() {
        let s = SecretSource::Literal("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn a_hanging_secret_command_is_stopped_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let src = SecretSource::Command {
            command: format!("sleep 30 & echo $! > {}; wait", pidfile.display()),
        };
        let started = Instant::now();
        let e = src
            .resolve_within("client_secret", Duration::from_millis(500))
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(e.to_string().contains("secret_timeout"), "{e}");
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        // The grandchild went with the group (gone, or a zombie awaiting its reaper).
        std::thread::sleep(Duration::from_millis(200));
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "still running: {stat}"
        );
    }

    #[test]
    fn a_secret_command_gives_its_first_line() {
        let src = SecretSource::Command {
            command: "printf 's3cret\\nsecond\\n'".into(),
        };
        assert_eq!(src.resolve("x").unwrap().as_str(), "s3cret");
        let failing = SecretSource::Command {
            command: "exit 3".into(),
        };
        assert!(
            failing
                .resolve("x")
                .unwrap_err()
                .to_string()
                .contains("failed")
        );
    }
}
