//! Authorization code + PKCE (S256) with `state`, through the user's browser.
//!
//! Owns: the flow as two steps — [`begin`] (authorization URL + a serialisable
//! [`Pending`]) and [`finish`] (check the redirect, exchange the code) — usable by
//! a web service whose callback may reach another node than the one that began;
//! and [`run`], the terminal driver over them (loopback listener raced against a
//! pasted redirect URL). Must not: accept a callback without the right `state` or
//! after the sign-in expired, or print anything but prompts on stderr (the URL
//! alone on one line — a script contract).

use std::fmt;
use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use super::LoginOptions;
use super::listener::{Callback, Listener, Rejected, parse_callback};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::jwt::b64url;
use crate::oauth::Transport;
use crate::oauth::{self, TokenResponse, v};
use crate::providers::Account;
use crate::random;

/// A PKCE verifier and its S256 challenge.
pub struct Pkce {
    /// Sent with the token request.
    pub verifier: String,
    /// Sent with the authorization request.
    pub challenge: String,
}

impl Pkce {
    /// A fresh pair: 32 random bytes (43 characters, the RFC 7636 minimum length).
    pub fn new() -> Self {
        let verifier = random::token(32);
        let challenge =
            b64url(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()).as_ref());
        Pkce {
            verifier,
            challenge,
        }
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Self::new()
    }
}

/// The authorization URL for `redirect_uri`.
pub fn authorization_url(
    account: &Account,
    redirect_uri: &str,
    state: &str,
    pkce: &Pkce,
) -> Result<String> {
    let mut url = url::Url::parse(&account.authorize_url).map_err(|e| {
        Error::Usage(format!(
            "authorize_url `{}` is not a URL: {e}",
            account.authorize_url
        ))
    })?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &account.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &account.scopes(None)?.join(" "))
            .append_pair("state", state)
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("login_hint", &account.user);
        for (k, val) in &account.authorize_params {
            q.append_pair(k, val);
        }
    }
    Ok(url.into())
}

/// A begun sign-in, waiting for its redirect. Serialisable: keep it server-side
/// (a session row, never the browser: the verifier is a secret) and hand it to
/// [`finish`] on whichever node receives the callback.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pending {
    /// PKCE verifier (secret).
    pub verifier: String,
    /// The `state` the redirect must carry.
    pub state: String,
    /// The exact redirect URI the authorization request named (the code exchange
    /// must repeat it).
    pub redirect_uri: String,
    /// Unix time after which the redirect is refused.
    pub expires_at: i64,
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("verifier", &"[redacted]")
            .field("redirect_uri", &self.redirect_uri)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Step 1: the authorization URL to send the user to, and what [`finish`] needs.
pub fn begin(account: &Account, redirect_uri: &str, expires_at: i64) -> Result<(String, Pending)> {
    let state = random::token(16);
    let pkce = Pkce::new();
    let url = authorization_url(account, redirect_uri, &state, &pkce)?;
    Ok((
        url,
        Pending {
            verifier: pkce.verifier,
            state,
            redirect_uri: redirect_uri.to_owned(),
            expires_at,
        },
    ))
}

/// What came back from the browser.
pub enum Redirect<'a> {
    /// The full redirect URL (a web callback, or a URL the user pasted).
    Url(&'a str),
    /// Code and state already taken apart (a callback handler's query parameters).
    Code {
        /// `code`.
        code: &'a str,
        /// `state`.
        state: &'a str,
    },
}

/// Step 2: check `redirect` against `pending` (path, state, expiry) and exchange
/// the code at the token endpoint. The result is not stored (the broker does that).
pub fn finish(
    account: &Account,
    pending: &Pending,
    redirect: Redirect<'_>,
    transport: &dyn Transport,
    now: i64,
) -> Result<TokenResponse> {
    if now > pending.expires_at {
        return Err(Error::SignInTimedOut {
            account: account.name.clone(),
            reason: "this sign-in expired".into(),
            browser: false,
        });
    }
    let code = match redirect {
        Redirect::Code { code, state } if state == pending.state => code.to_owned(),
        Redirect::Code { .. } => return Err(Error::Flow(Rejected::WrongState.text().into())),
        Redirect::Url(u) => {
            let path = url::Url::parse(&pending.redirect_uri)
                .map(|r| r.path().to_owned())
                .map_err(|e| {
                    Error::Usage(format!("redirect_uri `{}`: {e}", pending.redirect_uri))
                })?;
            match parse_callback(u, &path, &pending.state) {
                Ok(Callback::Code(code)) => code,
                Ok(Callback::Denied(why)) => return Err(denied(account, why)),
                Err(why) => return Err(Error::Flow(why.text().into())),
            }
        }
    };
    let grant = vec![
        ("grant_type", v("authorization_code")),
        ("code", v(code)),
        ("redirect_uri", v(pending.redirect_uri.clone())),
        ("code_verifier", v(pending.verifier.clone())),
    ];
    oauth::token_request(transport, account, grant).map_err(|e| {
        crate::diagnose::endpoint_error(e, account, "token endpoint", &account.token_url)
    })
}

/// The error for a redirect carrying `error` (the user declined, or a misconfiguration).
fn denied(account: &Account, why: String) -> Error {
    match why.split(':').next().map(str::trim) {
        Some(e) if !e.is_empty() => {
            let denied = oauth::EndpointError::OAuth {
                status: 0,
                error: e.to_owned(),
                description: why.clone(),
                codes: vec![],
            };
            crate::diagnose::endpoint_error(
                denied,
                account,
                "authorization endpoint",
                &account.authorize_url,
            )
        }
        _ => Error::Flow(why),
    }
}

/// Run the flow: listener up, URL shown (browser opened when possible), wait for
/// the first valid callback or pasted URL, exchange the code.
pub fn run(account: &Account, http: &dyn Transport, opts: &LoginOptions) -> Result<TokenResponse> {
    let registered = url::Url::parse(&account.redirect_uri)
        .map_err(|e| Error::Usage(format!("redirect_uri `{}`: {e}", account.redirect_uri)))?;
    let host = registered.host_str().unwrap_or("127.0.0.1").to_owned();
    let https = registered.scheme() == "https";
    let port = opts.port.or(registered.port()).unwrap_or(0);
    let listener = Listener::bind(&host, port, https)?;
    let mut redirect = registered.clone();
    redirect
        .set_port(Some(listener.port))
        .map_err(|_| Error::Usage("redirect_uri cannot carry a port".into()))?;
    let redirect_uri = redirect.to_string();
    let path = redirect.path().to_owned();

    // The driver's own timeout decides; the pending sign-in just must not expire first.
    let expires_at = crate::clock::now() + opts.timeout.as_secs() as i64 + 60;
    let (url, pending) = begin(account, &redirect_uri, expires_at)?;
    let state = pending.state.clone();

    let (tx, rx) = mpsc::channel();
    let done = Arc::new(AtomicBool::new(false));
    {
        let (path, state, tx, done) = (path.clone(), state.clone(), tx.clone(), done.clone());
        std::thread::Builder::new()
            .name("redirect-listener".into())
            .spawn(move || listener.serve(path, state, tx, done))
            .map_err(|e| Error::io("cannot start the redirect listener", e))?;
    }
    if opts.paste {
        let (path, state, done) = (path.clone(), state.clone(), done.clone());
        // The thread may stay blocked on stdin after the listener wins; it ends with the process.
        let _ = std::thread::Builder::new()
            .name("paste".into())
            .spawn(move || read_pasted(&path, &state, tx, done));
    }

    eprintln!(
        "Sign in to account `{}` as {} at this URL:",
        account.name, account.user
    );
    eprintln!("{url}");
    let opened = opts.open_browser && open::that_detached(&url).is_ok();
    if !opened {
        if super::over_ssh() {
            let p = redirect.port().unwrap_or(0);
            eprintln!(
                "Over SSH: forward the redirect port from your desktop first: ssh -L {p}:127.0.0.1:{p} <this host>"
            );
        }
        if opts.paste {
            eprintln!(
                "Or paste the address the browser ends on (it starts with {redirect_uri}) here and press Enter."
            );
        }
    }
    eprintln!(
        "Waiting for the sign-in (up to {} s)…",
        opts.timeout.as_secs()
    );

    let got = rx.recv_timeout(opts.timeout);
    done.store(true, Ordering::SeqCst);
    let code = match got {
        Ok(Callback::Code(code)) => code,
        Ok(Callback::Denied(why)) => return Err(denied(account, why)),
        Err(_) => {
            return Err(Error::SignInTimedOut {
                account: account.name.clone(),
                reason: format!("no sign-in arrived within {} s", opts.timeout.as_secs()),
                browser: opts.open_browser,
            });
        }
    };
    // The listener and the paste reader already checked path and state.
    let redirect = Redirect::Code {
        code: &code,
        state: &state,
    };
    finish(account, &pending, redirect, http, crate::clock::now())
}

fn read_pasted(path: &str, state: &str, tx: mpsc::Sender<Callback>, done: Arc<AtomicBool>) {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        if done.load(Ordering::SeqCst) {
            return;
        }
        let Ok(line) = line else { return };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match parse_callback(line, path, state) {
            Ok(cb) => {
                done.store(true, Ordering::SeqCst);
                let _ = tx.send(cb);
                return;
            }
            Err(why) => eprintln!(
                "That is not the redirect address: {} Paste the full address.",
                why.text()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_is_s256_of_verifier() {
        let p = Pkce::new();
        assert_eq!(p.verifier.len(), 43);
        let expect =
            b64url(ring::digest::digest(&ring::digest::SHA256, p.verifier.as_bytes()).as_ref());
        assert_eq!(p.challenge, expect);
        assert_ne!(Pkce::new().verifier, p.verifier);
    }
}
