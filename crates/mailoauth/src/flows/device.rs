//! Device authorization grant (RFC 8628) for machines without a browser.
//!
//! Owns: the grant as steps — [`start`] (ask for a user code; the answer is a
//! serialisable [`DeviceAuthorization`]) and [`poll`] (one token request: pending,
//! slow down, done or failed) — and [`run`], the terminal driver over them, which
//! shows the server's verification URI and code (each on its own line of stderr —
//! a script contract) and polls at the server's interval until expiry or decline.
//! Must not: show a hard-coded URL: the server's `verification_uri` is the truth.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::LoginOptions;
use crate::error::{Error, Result};
use crate::oauth::Transport;
use crate::oauth::{self, EndpointError, TokenResponse, v};
use crate::providers::Account;

/// A device authorization in progress. Serialisable so a service can keep it in
/// a row and poll from any node.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceAuthorization {
    /// The code the token requests carry (secret).
    pub device_code: String,
    /// The code the user types.
    pub user_code: String,
    /// Where the user types it (the server's, never a hard-coded URL).
    pub verification_uri: String,
    /// The same page with the code filled in, when the server offers one.
    pub verification_uri_complete: Option<String>,
    /// Unix time the codes expire.
    pub expires_at: i64,
    /// Seconds between polls (grows on `slow_down`).
    pub interval: u64,
}

impl fmt::Debug for DeviceAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceAuthorization")
            .field("device_code", &"[redacted]")
            .field("user_code", &self.user_code)
            .field("verification_uri", &self.verification_uri)
            .field("expires_at", &self.expires_at)
            .field("interval", &self.interval)
            .finish()
    }
}

impl DeviceAuthorization {
    /// The page a phone should open: the complete URI (code filled in) when the
    /// server gives one, else the verification URI (Microsoft gives no complete one).
    pub fn scan_uri(&self) -> &str {
        self.verification_uri_complete
            .as_deref()
            .unwrap_or(&self.verification_uri)
    }

    /// Obey `slow_down`: RFC 8628 §3.5 adds 5 seconds to the interval from now on.
    pub fn slow_down(&mut self) {
        self.interval += 5;
    }
}

/// What one [`poll`] found.
pub enum Poll {
    /// The user has not finished yet (or the endpoint failed transiently): poll again.
    Pending,
    /// Poll again, more slowly ([`DeviceAuthorization::slow_down`]).
    SlowDown,
    /// Signed in.
    Done(TokenResponse),
    /// Over: declined, expired, or refused.
    Failed(Error),
}

/// Step 1: ask the device authorization endpoint for a user code (at unix time `now`).
pub fn start(
    account: &Account,
    transport: &dyn Transport,
    now: i64,
) -> Result<DeviceAuthorization> {
    let url = account
        .device_url
        .as_deref()
        .expect("validated: device flow has a device_url");
    let mut form = oauth::client_auth(account, &account.token_url)?;
    form.push(("scope", v(account.scopes(None)?.join(" "))));
    let auth = oauth::post(transport, url, &form).map_err(|e| {
        crate::diagnose::endpoint_error(e, account, "device authorization endpoint", url)
    })?;
    // Shown on the user's terminal: no control characters from the server.
    let s = |k: &str| {
        auth.get(k)
            .and_then(Value::as_str)
            .map(|v| crate::text::printable(v).into_owned())
    };
    let n = |k: &str| {
        auth.get(k)
            .and_then(|x| x.as_u64().or_else(|| x.as_str()?.parse().ok()))
    };
    let bad = |what: &str| Error::BadResponse {
        what: format!("device authorization endpoint {url}"),
        detail: format!("the answer has no `{what}`"),
    };
    Ok(DeviceAuthorization {
        device_code: s("device_code").ok_or_else(|| bad("device_code"))?,
        user_code: s("user_code").ok_or_else(|| bad("user_code"))?,
        // Google spells it verification_url.
        verification_uri: s("verification_uri")
            .or_else(|| s("verification_url"))
            .ok_or_else(|| bad("verification_uri"))?,
        verification_uri_complete: s("verification_uri_complete"),
        expires_at: now + n("expires_in").unwrap_or(900) as i64,
        interval: n("interval").unwrap_or(5).max(1),
    })
}

/// Step 2: one token request for `auth`.
pub fn poll(account: &Account, auth: &DeviceAuthorization, transport: &dyn Transport) -> Poll {
    let grant = vec![
        (
            "grant_type",
            v("urn:ietf:params:oauth:grant-type:device_code"),
        ),
        ("device_code", v(auth.device_code.clone())),
    ];
    match oauth::token_request(transport, account, grant) {
        Ok(t) => Poll::Done(t),
        Err(EndpointError::OAuth { error, .. }) if error == "authorization_pending" => {
            Poll::Pending
        }
        Err(EndpointError::OAuth { error, .. }) if error == "slow_down" => Poll::SlowDown,
        Err(EndpointError::OAuth { error, .. })
            if matches!(error.as_str(), "authorization_declined" | "access_denied") =>
        {
            Poll::Failed(Error::Flow(
                "the sign-in was declined on the verification page".into(),
            ))
        }
        Err(EndpointError::OAuth { error, .. })
            if matches!(error.as_str(), "expired_token" | "bad_verification_code") =>
        {
            Poll::Failed(Error::SignInTimedOut {
                account: account.name.clone(),
                reason: "the code expired before the sign-in was completed".into(),
                browser: false,
            })
        }
        Err(EndpointError::Transient { detail, .. }) => {
            log::warn!("polling the token endpoint: {detail}; retrying");
            Poll::Pending
        }
        Err(e) => Poll::Failed(crate::diagnose::endpoint_error(
            e,
            account,
            "token endpoint",
            &account.token_url,
        )),
    }
}

/// Run the device flow to completion (the terminal driver).
pub fn run(account: &Account, http: &dyn Transport, opts: &LoginOptions) -> Result<TokenResponse> {
    let mut auth = start(account, http, crate::clock::now())?;
    let expires_in = (auth.expires_at - crate::clock::now()).max(0) as u64;

    eprintln!(
        "To sign in to account `{}` as {}, open this page on any device:",
        account.name, account.user
    );
    eprintln!("{}", auth.verification_uri);
    eprintln!("and enter the code:");
    eprintln!("{}", auth.user_code);
    if let Some(complete) = &auth.verification_uri_complete {
        log::info!("or open directly: {complete}");
    }
    if let Some(show) = opts.on_device_code {
        show(&auth);
    }

    let deadline = Instant::now() + Duration::from_secs(expires_in).min(opts.timeout);
    loop {
        std::thread::sleep(Duration::from_secs(auth.interval));
        if Instant::now() >= deadline {
            return Err(Error::SignInTimedOut {
                account: account.name.clone(),
                reason: format!(
                    "the code {} expired before the sign-in was completed",
                    auth.user_code
                ),
                browser: false,
            });
        }
        match poll(account, &auth, http) {
            Poll::Pending => {}
            Poll::SlowDown => {
                auth.slow_down();
                log::info!(
                    "server asked to slow down; polling every {} s",
                    auth.interval
                );
            }
            Poll::Done(t) => return Ok(t),
            Poll::Failed(e) => return Err(e),
        }
    }
}
