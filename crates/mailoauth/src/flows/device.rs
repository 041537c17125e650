//! Device authorization grant (RFC 8628) for machines without a browser.
//!
//! Owns: asking for a user code, showing the server's verification URI and code
//! (each on its own line of stderr — a script contract), and polling at the
//! server's interval, slowing down on `slow_down`, stopping on expiry or decline.
//! Must not: show a hard-coded URL: the server's `verification_uri` is the truth.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::LoginOptions;
use crate::error::{Error, Result};
use crate::oauth::Transport;
use crate::oauth::{self, EndpointError, TokenResponse, v};
use crate::providers::Account;

/// Run the device flow to completion.
pub fn run(account: &Account, http: &dyn Transport, opts: &LoginOptions) -> Result<TokenResponse> {
    let url = account
        .device_url
        .as_deref()
        .expect("validated: device flow has a device_url");
    let mut form = oauth::client_auth(account, &account.token_url)?;
    form.push(("scope", v(account.scopes(None)?.join(" "))));
    let auth = oauth::post(http, url, &form).map_err(|e| {
        crate::diagnose::endpoint_error(e, account, "device authorization endpoint", url)
    })?;
    let s = |k: &str| auth.get(k).and_then(Value::as_str).map(str::to_owned);
    let n = |k: &str| {
        auth.get(k)
            .and_then(|x| x.as_u64().or_else(|| x.as_str()?.parse().ok()))
    };
    let bad = |what: &str| Error::BadResponse {
        what: format!("device authorization endpoint {url}"),
        detail: format!("the answer has no `{what}`"),
    };
    let device_code = s("device_code").ok_or_else(|| bad("device_code"))?;
    let user_code = s("user_code").ok_or_else(|| bad("user_code"))?;
    // Google spells it verification_url.
    let uri = s("verification_uri")
        .or_else(|| s("verification_url"))
        .ok_or_else(|| bad("verification_uri"))?;
    let expires_in = n("expires_in").unwrap_or(900);
    let mut interval = Duration::from_secs(n("interval").unwrap_or(5).max(1));

    eprintln!(
        "To sign in to account `{}` as {}, open this page on any device:",
        account.name, account.user
    );
    eprintln!("{uri}");
    eprintln!("and enter the code:");
    eprintln!("{user_code}");
    if let Some(complete) = s("verification_uri_complete") {
        log::info!("or open directly: {complete}");
    }

    let deadline = Instant::now() + Duration::from_secs(expires_in).min(opts.timeout);
    loop {
        std::thread::sleep(interval);
        if Instant::now() >= deadline {
            return Err(Error::Flow(format!(
                "the code {user_code} expired before the sign-in was completed; run `mailoauth login {}` again",
                account.name
            )));
        }
        let grant = vec![
            (
                "grant_type",
                v("urn:ietf:params:oauth:grant-type:device_code"),
            ),
            ("device_code", v(device_code.clone())),
        ];
        match oauth::token_request(http, account, grant) {
            Ok(t) => return Ok(t),
            Err(EndpointError::OAuth { error, .. }) if error == "authorization_pending" => {}
            Err(EndpointError::OAuth { error, .. }) if error == "slow_down" => {
                // RFC 8628 §3.5: add 5 seconds to the interval from now on.
                interval += Duration::from_secs(5);
                log::info!(
                    "server asked to slow down; polling every {} s",
                    interval.as_secs()
                );
            }
            Err(EndpointError::OAuth { error, .. })
                if matches!(error.as_str(), "authorization_declined" | "access_denied") =>
            {
                return Err(Error::Flow(
                    "the sign-in was declined on the verification page".into(),
                ));
            }
            Err(EndpointError::OAuth { error, .. })
                if matches!(error.as_str(), "expired_token" | "bad_verification_code") =>
            {
                return Err(Error::Flow(format!(
                    "the code expired before the sign-in was completed; run `mailoauth login {}` again",
                    account.name
                )));
            }
            Err(EndpointError::Transient { detail, .. }) => {
                log::warn!("polling the token endpoint: {detail}; retrying")
            }
            Err(e) => {
                return Err(crate::diagnose::endpoint_error(
                    e,
                    account,
                    "token endpoint",
                    &account.token_url,
                ));
            }
        }
    }
}
