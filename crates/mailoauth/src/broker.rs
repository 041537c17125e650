//! The token lifecycle: serve, refresh, rotate, never lose.
//!
//! Owns: the decision "serve the stored token or renew it", the cross-process
//! lock per account, refresh-token rotation persisted before an access token is
//! handed out, retries of transient failures, and "login required" marking.
//! Must not: run an interactive flow (that is `flows`) or know a store's format.
//!
//! States of an account's token, as seen by [`Broker::token`]:
//! - **Fresh**: an access token with ≥ `min_validity` left → served, no lock, no network.
//! - **Low**: less left (or none for this resource) but a refresh token (or client
//!   credentials) → lock, re-check (someone may have renewed meanwhile), renew.
//! - **Empty / dead**: nothing usable → `LoginRequired` (exit 3).
//!
//! Invariant R (rotation): the store holds the newest refresh token before any
//! access token obtained with it leaves this module. Together with atomic store
//! writes this means a crash at any instant loses nothing.

use std::fs::File;
use std::time::{Duration, Instant};

use crate::clock::now;

use crate::diagnose;
use crate::error::{Error, Result};
use crate::flows::{self, LoginOptions, client_credentials};
use crate::http::Http;
use crate::jwt;
use crate::oauth::{self, EndpointError, TokenResponse, v};
use crate::paths;
use crate::providers::{Account, MAIL_RESOURCE};
use crate::status;
use crate::store::{AccessToken, RECORD_VERSION, Store, TokenRecord};

/// Lifetime assumed when the server gives no `expires_in`: short enough to be safe
/// for every provider we know (Microsoft's minimum is 60 min).
const DEFAULT_LIFETIME: i64 = 3600;
/// Retries of a transient failure when no valid token can be served meanwhile.
const RETRIES: u32 = 3;
/// Longest single wait, even if the server's Retry-After asks for more.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// One account's token lifecycle.
pub struct Broker {
    account: Account,
    store: Store,
}

/// The cross-process lock of an account; released on drop (and by the kernel if
/// the process dies, which is why a killed refresh never leaves a stale lock).
pub struct AccountLock {
    _file: File,
}

impl Broker {
    /// Open the broker (and the store) of a resolved account.
    pub fn new(account: Account) -> Result<Broker> {
        let store = Store::open(&account)?;
        Ok(Broker { account, store })
    }

    /// The account.
    pub fn account(&self) -> &Account {
        &self.account
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A valid access token for `resource` (`None` = mail). The fresh case reads
    /// the store and returns: no lock, no HTTP client, no network.
    pub fn token(&self, resource: Option<&str>) -> Result<String> {
        let key = resource.unwrap_or(MAIL_RESOURCE);
        if let Some(rec) = self.store.load()?
            && let Some(at) = rec.access.get(key)
            && at.is_fresh(self.account.min_validity, now())
        {
            return Ok(at.token.clone());
        }
        self.renew(resource, false)
    }

    /// Take the account's cross-process lock (blocking).
    pub fn lock(&self) -> Result<AccountLock> {
        let dir = paths::state_dir().join("locks");
        paths::ensure_private_dir(&dir)?;
        let path = dir.join(format!("{}.lock", paths::file_stem(&self.account.name)));
        let file = paths::open_lock_file(&path)?;
        file.lock()
            .map_err(|e| Error::io(format!("cannot lock {}", path.display()), e))?;
        Ok(AccountLock { _file: file })
    }

    /// Renew the token of `resource` under the lock. Without `force`, a token that
    /// became fresh while we waited for the lock is served instead (N callers → 1 refresh).
    pub fn renew(&self, resource: Option<&str>, force: bool) -> Result<String> {
        let min = self.account.min_validity;
        self.renew_unless(resource, |at| !force && at.is_fresh(min, now()))
    }

    /// Refresh ahead of time (the daemon): unless, checked under the lock, the token
    /// still has more than `ahead` seconds left — then someone else already did.
    pub fn refresh_ahead(&self, resource: Option<&str>, ahead: i64) -> Result<String> {
        self.renew_unless(resource, |at| at.expires_at - now() > ahead)
    }

    /// The stored record, if any (for schedulers and reports).
    pub fn record(&self) -> Result<Option<TokenRecord>> {
        self.store.load()
    }

    fn renew_unless(
        &self,
        resource: Option<&str>,
        good: impl Fn(&AccessToken) -> bool,
    ) -> Result<String> {
        let key = resource.unwrap_or(MAIL_RESOURCE);
        let scopes = self.account.scopes(resource)?.join(" ");
        let _lock = self.lock()?;
        let rec = self.store.load()?;
        let current = rec.as_ref().and_then(|r| r.access.get(key)).cloned();
        if let Some(at) = &current
            && good(at)
        {
            return Ok(at.token.clone());
        }
        let refresh_token = rec.as_ref().and_then(|r| r.refresh_token.clone());
        if self.account.has_refresh_tokens() && refresh_token.is_none() {
            let e = Error::LoginRequired {
                account: self.account.name.clone(),
                reason: if rec.is_some() {
                    "no refresh token is stored"
                } else {
                    "no token is stored yet"
                }
                .into(),
                remedy: None,
            };
            status::record_error(&self.account, &e, now());
            return Err(e);
        }
        // Serve a still-valid token rather than wait out a provider outage.
        let still_valid = current.filter(|at| at.expires_at > now() + 5);
        let http = Http::new(Duration::from_secs(self.account.http_timeout));
        let attempt = || match &refresh_token {
            None => client_credentials::request(&self.account, &http, resource),
            Some(rt) => oauth::token_request(
                &http,
                &self.account,
                vec![
                    ("grant_type", v("refresh_token")),
                    ("refresh_token", v(rt.clone())),
                    ("scope", v(scopes.clone())),
                ],
            ),
        };
        let result = retry(attempt, if still_valid.is_some() { 0 } else { RETRIES });
        match result {
            Ok(resp) => {
                let mut rec = rec.unwrap_or_else(|| new_record(None));
                let token = apply(&mut rec, key, resp);
                // Invariant R: persisted (fsynced, renamed) before the token leaves.
                self.store.save(&rec)?;
                status::record_success(&self.account, now());
                Ok(token)
            }
            Err(EndpointError::Transient { detail, .. }) if still_valid.is_some() => {
                let at = still_valid.expect("checked");
                log::warn!(
                    "refresh of `{}` failed ({detail}); serving the current token, valid for {} s more",
                    self.account.name,
                    at.expires_at - now()
                );
                status::record_error(
                    &self.account,
                    &Error::Unreachable {
                        what: "token endpoint".into(),
                        detail,
                    },
                    now(),
                );
                Ok(at.token)
            }
            Err(e) => {
                let err = diagnose::endpoint_error(
                    e,
                    &self.account,
                    "token endpoint",
                    &self.account.token_url,
                );
                status::record_error(&self.account, &err, now());
                Err(err)
            }
        }
    }

    /// Run the account's flow interactively and store the result.
    pub fn login(&self, opts: &LoginOptions) -> Result<LoginOutcome> {
        let http = Http::new(Duration::from_secs(self.account.http_timeout));
        let resp = flows::run(&self.account, &http, opts)
            .inspect_err(|e| status::record_error(&self.account, e, now()))?;
        self.store_login(resp)
    }

    /// Verify and store the result of a flow.
    pub fn store_login(&self, resp: TokenResponse) -> Result<LoginOutcome> {
        let user = signed_in_user(&resp);
        if self.account.has_refresh_tokens()
            && let Some(u) = &user
            && !u.eq_ignore_ascii_case(&self.account.user)
        {
            let e = Error::UserMismatch {
                account: self.account.name.clone(),
                expected: self.account.user.clone(),
                got: u.clone(),
            };
            status::record_error(&self.account, &e, now());
            return Err(e);
        }
        if self.account.has_refresh_tokens() && resp.refresh_token.is_none() {
            log::warn!(
                "the provider returned no refresh token: `token` will need a new login when this access token \
                 expires (Microsoft: add `offline_access`; Google: access_type=offline and prompt=consent)"
            );
        }
        let _lock = self.lock()?;
        let set_aside = match self.store.load() {
            Ok(_) => None,
            Err(Error::Store { .. }) => self.store.set_aside()?,
            Err(e) => return Err(e),
        };
        let mut rec = new_record(user.clone());
        apply(&mut rec, MAIL_RESOURCE, resp);
        self.store.save(&rec)?;
        status::record_success(&self.account, now());
        Ok(LoginOutcome {
            user,
            store: self.store.describe(),
            set_aside,
        })
    }

    /// Delete stored tokens, revoking the refresh token where the provider can.
    pub fn logout(&self) -> Result<LogoutOutcome> {
        let _lock = self.lock()?;
        let rec = self.store.load().ok().flatten();
        let mut revoked = None;
        if let (Some(url), Some(rt)) = (
            &self.account.revoke_url,
            rec.as_ref().and_then(|r| r.refresh_token.clone()),
        ) {
            let http = Http::new(Duration::from_secs(self.account.http_timeout));
            let mut form = vec![("token", v(rt)), ("token_type_hint", v("refresh_token"))];
            form.extend(oauth::client_auth(&self.account, url)?);
            revoked = Some(match oauth::post(&http, url, &form) {
                Ok(_) => Ok(()),
                // RFC 7009 answers 200 with an empty body.
                Err(EndpointError::Invalid { .. }) => Ok(()),
                Err(e) => {
                    Err(
                        diagnose::endpoint_error(e, &self.account, "revocation endpoint", url)
                            .to_string(),
                    )
                }
            });
        }
        self.store.delete()?;
        Ok(LogoutOutcome {
            had_tokens: rec.is_some(),
            revoked,
        })
    }

    /// The stored refresh token (for OfflineIMAP's `oauth2_refresh_token_eval`).
    pub fn refresh_token(&self) -> Result<String> {
        self.store
            .load()?
            .and_then(|r| r.refresh_token)
            .ok_or_else(|| Error::LoginRequired {
                account: self.account.name.clone(),
                reason: "no refresh token is stored".into(),
                remedy: None,
            })
    }
}

/// What a login stored.
#[derive(Debug)]
pub struct LoginOutcome {
    /// The user the provider reports, when it reports one.
    pub user: Option<String>,
    /// Where the tokens went.
    pub store: String,
    /// Where an unreadable old record was moved, if there was one.
    pub set_aside: Option<String>,
}

/// What a logout did.
#[derive(Debug)]
pub struct LogoutOutcome {
    /// Whether anything was stored.
    pub had_tokens: bool,
    /// Revocation result, when the provider has an endpoint and there was a token.
    pub revoked: Option<std::result::Result<(), String>>,
}

fn new_record(user: Option<String>) -> TokenRecord {
    let t = now();
    TokenRecord {
        version: RECORD_VERSION,
        refresh_token: None,
        login_at: t,
        refresh_token_at: t,
        user,
        access: Default::default(),
    }
}

/// Fold a token response into the record; returns the access token.
fn apply(rec: &mut TokenRecord, key: &str, resp: TokenResponse) -> String {
    let t = now();
    let lifetime = resp
        .expires_in
        .or_else(|| {
            jwt::claims(&resp.access_token)
                .and_then(|c| c.get("exp").and_then(|e| e.as_i64()))
                .map(|exp| exp - t)
        })
        .unwrap_or(DEFAULT_LIFETIME);
    if let Some(rt) = resp.refresh_token {
        rec.refresh_token = Some(rt);
        rec.refresh_token_at = t;
    }
    rec.access.insert(
        key.to_owned(),
        AccessToken {
            token: resp.access_token.clone(),
            expires_at: t + lifetime,
            obtained_at: t,
            scope: resp.scope,
        },
    );
    resp.access_token
}

/// The user a login produced: id token first (it names the person), then the
/// access token when it is a JWT. `None` when neither says (opaque tokens).
pub fn signed_in_user(resp: &TokenResponse) -> Option<String> {
    resp.id_token
        .as_deref()
        .and_then(jwt::claims)
        .and_then(|c| jwt::user(&c))
        .or_else(|| jwt::claims(&resp.access_token).and_then(|c| jwt::user(&c)))
}

/// Call `f`, retrying transient failures up to `retries` times with exponential
/// backoff (0.5 s, 1 s, 2 s), honouring Retry-After up to [`MAX_WAIT`].
fn retry<T>(
    f: impl Fn() -> std::result::Result<T, EndpointError>,
    retries: u32,
) -> std::result::Result<T, EndpointError> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        match f() {
            Err(EndpointError::Transient {
                detail,
                retry_after,
            }) if attempt < retries => {
                let backoff = Duration::from_millis(500 << attempt);
                let wait = retry_after.unwrap_or(backoff).min(MAX_WAIT);
                log::warn!(
                    "token endpoint: {detail}; retrying in {:.1} s",
                    wait.as_secs_f32()
                );
                std::thread::sleep(wait);
                attempt += 1;
            }
            other => {
                if attempt > 0 {
                    log::info!(
                        "token endpoint: {} attempts in {:.1} s",
                        attempt + 1,
                        started.elapsed().as_secs_f32()
                    );
                }
                return other;
            }
        }
    }
}
