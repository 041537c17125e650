//! The ways to acquire tokens: authorization code + PKCE, device authorization
//! grant, client credentials.
//!
//! Owns: each flow as steps a service can drive (`authcode::begin`/`finish`,
//! `device::start`/`poll`, with serialisable in-between state), and the terminal
//! drivers over them (URLs, listener, polling, prompts on stderr). Must not: store
//! anything (the broker stores what a flow returns), or print to stdout (stdout
//! belongs to tokens and `--json`).

pub mod authcode;
pub mod client_credentials;
pub mod device;
pub mod listener;
#[cfg(test)]
mod tests;

use std::time::Duration;

use crate::config::FlowKind;
use crate::error::Result;
use crate::oauth::TokenResponse;
use crate::oauth::Transport;
use crate::providers::Account;

/// How an interactive login may interact with the user.
#[derive(Debug, Clone)]
pub struct LoginOptions {
    /// Try to open a browser (off over SSH or with `--no-browser`).
    pub open_browser: bool,
    /// Also accept the final redirect URL pasted on stdin.
    pub paste: bool,
    /// Give up after this long.
    pub timeout: Duration,
    /// Force the redirect listener's port (overrides the redirect URI's).
    pub port: Option<u16>,
    /// More ways to show a device code, called once the URI and code lines are
    /// printed (the CLI draws a QR code of [`device::DeviceAuthorization::scan_uri`]
    /// on a terminal); the library itself draws nothing.
    pub on_device_code: Option<fn(&device::DeviceAuthorization)>,
}

impl Default for LoginOptions {
    fn default() -> Self {
        LoginOptions {
            open_browser: !over_ssh(),
            paste: false,
            timeout: Duration::from_secs(300),
            port: None,
            on_device_code: None,
        }
    }
}

/// True when running in an SSH session (the browser would open on the wrong machine).
pub fn over_ssh() -> bool {
    ["SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

/// Run the account's flow and return the token response (not yet stored).
pub fn run(account: &Account, http: &dyn Transport, opts: &LoginOptions) -> Result<TokenResponse> {
    match account.flow {
        FlowKind::AuthCode => authcode::run(account, http, opts),
        FlowKind::Device => device::run(account, http, opts),
        FlowKind::ClientCredentials => {
            client_credentials::request(account, http, None).map_err(|e| {
                crate::diagnose::endpoint_error(e, account, "token endpoint", &account.token_url)
            })
        }
    }
}
