//! Per-account status that is not secret: "login required", last error, last
//! refresh, notification bookkeeping.
//!
//! Owns: `$XDG_STATE_HOME/mailoauth/status/<account>.json` and running
//! `notify_command` once per transition into "login required". Must not: hold
//! tokens (status is read by `status` without touching the token store). The
//! broker reaches these functions only through its events port
//! (`broker::local::StatusEvents`), never directly.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::paths;
use crate::providers::Account;
use crate::store::file::{read_optional, write_atomic};

/// What `status` shows besides the tokens.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccountStatus {
    /// Set when only a new login helps; the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_required: Option<String>,
    /// The last error, whatever it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it happened (unix time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<i64>,
    /// Last successful refresh (unix time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh_at: Option<i64>,
}

fn path(account: &Account) -> PathBuf {
    paths::state_dir()
        .join("status")
        .join(format!("{}.json", paths::file_stem(&account.name)))
}

/// Read the status; a missing or unreadable file is an empty status (it is advisory).
pub fn load(account: &Account) -> AccountStatus {
    read_optional(&path(account))
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save(account: &Account, s: &AccountStatus) {
    let bytes = serde_json::to_vec_pretty(s).expect("status serialises");
    if let Err(e) = write_atomic(&path(account), &bytes) {
        log::warn!("cannot record status of `{}`: {e}", account.name);
    }
}

impl AccountStatus {
    /// The status after a successful refresh or login at `at`: errors cleared.
    pub fn after_success(at: i64) -> AccountStatus {
        AccountStatus {
            last_refresh_at: Some(at),
            ..AccountStatus::default()
        }
    }

    /// Fold an error seen at `at` into the status. Returns true when this is the
    /// transition into "login required" (the one moment a notification is due), so
    /// every events sink — these files, the service's rows, the test double — agrees
    /// on "once per transition".
    pub fn record_error(&mut self, error: &crate::Error, at: i64) -> bool {
        let newly =
            matches!(error, crate::Error::LoginRequired { .. }) && self.login_required.is_none();
        // Belt and braces: provider text in the error was cleaned where it came in.
        self.last_error = Some(crate::text::printable(&error.to_string()).into_owned());
        self.last_error_at = Some(at);
        if let crate::Error::LoginRequired { reason, .. } = error {
            self.login_required = Some(crate::text::printable(reason).into_owned());
        }
        newly
    }
}

/// Record a successful refresh or login: clears errors.
pub fn record_success(account: &Account, at: i64) {
    let old = load(account);
    let new = AccountStatus::after_success(at);
    if old != new {
        save(account, &new);
    }
}

/// Record an error; when `login_required`, mark the account and (on the first
/// transition only) run its `notify_command`.
pub fn record_error(account: &Account, error: &crate::Error, at: i64) {
    let mut s = load(account);
    let newly = s.record_error(error, at);
    save(account, &s);
    if newly {
        notify(account, &crate::text::printable(&error.to_string()));
    }
}

/// Run `notify_command` (detached; its output goes to our stderr). The reason goes
/// in the environment, never on a command line built from provider text.
fn notify(account: &Account, reason: &str) {
    let Some(cmd) = &account.notify_command else {
        return;
    };
    let spawned = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("MAILOAUTH_ACCOUNT", &account.name)
        .env("MAILOAUTH_USER", &account.user)
        .env("MAILOAUTH_REASON", reason)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn();
    match spawned {
        // Reap it in the background so a long-running notifier never blocks `token`.
        Ok(mut child) => {
            let _ = std::thread::Builder::new().spawn(move || child.wait());
        }
        Err(e) => log::warn!("notify_command `{cmd}` failed to start: {e}"),
    }
}
