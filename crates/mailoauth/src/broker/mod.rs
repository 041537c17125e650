//! The token lifecycle: serve, refresh, rotate, never lose.
//!
//! Owns: the decision "serve the stored token or renew it", taking the account's
//! lease, refresh-token rotation persisted before an access token is handed out,
//! retries of transient failures, and "login required" marking. Must not: run an
//! interactive flow (that is `flows`), know a store's format, or reach the world
//! except through its [`ports`] — this machine's are in [`local`], test doubles in
//! [`memory`], and a multi-user service brings its own (database rows, async HTTP).
//!
//! States of an account's token ([`State`], decided by [`state`]):
//! - **Fresh**: an access token with ≥ `min_validity` left → served, no lease, no network.
//! - **Low**: less left (or none for this resource) but a refresh token (or client
//!   credentials) → lease, re-check (someone may have renewed meanwhile), renew.
//! - **Dead** (empty or no refresh token): nothing usable → `LoginRequired` (exit 3).
//!
//! Invariant R (rotation): the store holds the newest refresh token before any
//! access token obtained with it leaves this module. Together with atomic store
//! writes this means a crash at any instant loses nothing. Writes are
//! compare-and-swap: a writer that lost its lease (expired, taken over) cannot
//! overwrite a newer record; it re-reads instead (see [`Broker::renew`]).

pub mod identity;
pub mod local;
pub mod memory;
pub mod ports;
#[cfg(test)]
mod tests;

use std::time::Duration;

use crate::diagnose;
use crate::error::{Error, Result};
use crate::flows::{self, LoginOptions, client_credentials};
use crate::jwt;
use crate::oauth::{self, EndpointError, TokenResponse, v};
use crate::providers::{Account, MAIL_RESOURCE};
use crate::store::{AccessToken, RECORD_VERSION, TokenRecord};
use ports::{Clock, Event, Lease, Ports, Saved, TokenStore, Version};

/// Lifetime assumed when the server gives no `expires_in` (and the token is no
/// JWT with an `exp`): short enough to be safe for every provider we know
/// (Microsoft's minimum is 60 min).
const DEFAULT_LIFETIME: i64 = 3600;
/// Lifetime assumed when the server's `expires_in` is zero or negative: nonsense,
/// so neither trust it (a request on every call) nor assume an hour; ask again
/// in a minute. A small positive value is believed as it is: serving a token
/// longer than its server said would hand out dead tokens, and a server that
/// issues 5 s tokens asked for the refreshes it gets (the daemon backs off when
/// a new token is due at once).
const NONSENSE_LIFETIME: i64 = 60;
/// Longest lifetime believed: a server announcing more (`i64::MAX`) would leave a
/// token unrefreshed forever; a year still keeps the weekly keep-alive in charge.
const MAX_LIFETIME: i64 = 365 * 24 * 3600;
/// Retries of a transient failure when no valid token can be served meanwhile.
const RETRIES: u32 = 3;
/// Longest single wait, even if the server's Retry-After asks for more.
const MAX_WAIT: Duration = Duration::from_secs(10);
/// Times a renewal starts over because other writers kept changing the record.
const ROUNDS: usize = 3;

/// How an account's token for one resource stands.
pub enum State {
    /// Good enough to serve as it is.
    Fresh(AccessToken),
    /// Needs renewing, which is possible.
    Low {
        /// The current token, if any (served if renewal fails transiently).
        current: Option<AccessToken>,
        /// How to renew.
        grant: Grant,
    },
    /// Only an interactive login helps.
    Dead {
        /// Why, in words for `LoginRequired`.
        reason: &'static str,
    },
}

/// How a low token is renewed.
pub enum Grant {
    /// With this refresh token.
    RefreshToken(String),
    /// By asking again with the client's own credentials (no refresh token exists).
    ClientCredentials,
}

/// Decide the [`State`] of `key`'s token in `rec`; `good` says whether a token may
/// be served as it is. Pure, so the service can serve fresh tokens from its own
/// (async) read without a broker, and call the broker only for the other states.
pub fn state(
    account: &Account,
    rec: Option<&TokenRecord>,
    key: &str,
    good: impl Fn(&AccessToken) -> bool,
) -> State {
    let current = rec.and_then(|r| r.access.get(key)).cloned();
    if let Some(at) = current.as_ref().filter(|at| good(at)) {
        return State::Fresh(at.clone());
    }
    match rec.and_then(|r| r.refresh_token.clone()) {
        Some(rt) => State::Low {
            current,
            grant: Grant::RefreshToken(rt),
        },
        None if !account.has_refresh_tokens() => State::Low {
            current,
            grant: Grant::ClientCredentials,
        },
        None if rec.is_some() => State::Dead {
            reason: "no refresh token is stored",
        },
        None => State::Dead {
            reason: "no token is stored yet",
        },
    }
}

/// One account's token lifecycle.
pub struct Broker {
    account: Account,
    ports: Ports,
}

impl Broker {
    /// Open the broker of a resolved account with this machine's ports (its
    /// configured store, flock, status files, system clock, ureq).
    pub fn new(account: Account) -> Result<Broker> {
        let ports = local::local_ports(&account)?;
        Ok(Broker::with_ports(account, ports))
    }

    /// A broker of `account` working through `ports`.
    pub fn with_ports(account: Account, ports: Ports) -> Broker {
        Broker { account, ports }
    }

    /// The account.
    pub fn account(&self) -> &Account {
        &self.account
    }

    /// The store.
    pub fn store(&self) -> &dyn TokenStore {
        self.ports.store.as_ref()
    }

    /// A valid access token for `resource` (`None` = mail). The fresh case reads
    /// the store and returns: no lease, no HTTP client, no network.
    pub fn token(&self, resource: Option<&str>) -> Result<String> {
        let key = resource.unwrap_or(MAIL_RESOURCE);
        if let Some((rec, _)) = self.load()?
            && let Some(at) = rec.access.get(key)
            && at.is_fresh(self.account.min_validity, self.ports.clock.now())
        {
            return Ok(at.token.clone());
        }
        self.renew(resource, false)
    }

    /// Take the account's lease (blocking).
    pub fn lock(&self) -> Result<Box<dyn Lease>> {
        self.ports
            .leases
            .acquire(&self.account.name, &self.ports.owner, self.ports.lease_ttl)
    }

    /// Renew the token of `resource` under the lease. Without `force`, a token that
    /// became fresh while we waited for the lease is served instead (N callers → 1
    /// refresh). A record changed by another writer during the request (our lease
    /// expired and was taken over) is re-read, not overwritten.
    /// With `force` (the user asked for a refresh) a refresh that does not happen
    /// is an error, even while the current token could still be served.
    pub fn renew(&self, resource: Option<&str>, force: bool) -> Result<String> {
        let min = self.account.min_validity;
        let clock = self.ports.clock.clone();
        self.renew_unless(resource, !force, |at| {
            !force && at.is_fresh(min, clock.now())
        })
    }

    /// Refresh ahead of time (the daemon): unless, checked under the lease, the token
    /// still has more than `ahead` seconds left — then someone else already did.
    pub fn refresh_ahead(&self, resource: Option<&str>, ahead: i64) -> Result<String> {
        let clock = self.ports.clock.clone();
        self.renew_unless(resource, true, |at| at.expires_at - clock.now() > ahead)
    }

    /// The stored record, if any (for schedulers and reports).
    pub fn record(&self) -> Result<Option<TokenRecord>> {
        Ok(self.load()?.map(|(r, _)| r))
    }

    /// The stored record, refused when it names another user than the
    /// account's: a second guard behind the name alphabet, should two accounts
    /// ever share a record again (or one be copied over another's). Nothing is
    /// changed or deleted; a login replaces it.
    fn load(&self) -> Result<Option<(TokenRecord, Version)>> {
        let loaded = self.ports.store.load()?;
        if let Some((rec, _)) = &loaded
            && let Some(user) = &rec.user
            && !user.eq_ignore_ascii_case(&self.account.user)
        {
            return Err(Error::LoginRequired {
                account: self.account.name.clone(),
                reason: format!(
                    "the stored tokens are for `{user}`, not for the account's user `{}` \
                     (another account's record?); they were not used and are left as they are",
                    self.account.user
                ),
                remedy: None,
            });
        }
        Ok(loaded)
    }

    fn now(&self) -> i64 {
        self.ports.clock.now()
    }

    fn emit(&self, event: Event<'_>) {
        self.ports.events.record(&self.account, event, self.now());
    }

    /// Record a failure as the event it is.
    fn emit_failure(&self, error: &Error) {
        self.emit(match error {
            Error::LoginRequired { .. } => Event::LoginRequired { error },
            _ => Event::Failed { error },
        });
    }

    /// `serve_current`: on a provider outage, hand out the still-valid current
    /// token instead of failing.
    fn renew_unless(
        &self,
        resource: Option<&str>,
        serve_current: bool,
        good: impl Fn(&AccessToken) -> bool,
    ) -> Result<String> {
        let key = resource.unwrap_or(MAIL_RESOURCE);
        let scopes = self.account.scopes(resource)?.join(" ");
        let mut lease = self.lock()?;
        for _ in 0..ROUNDS {
            let (rec, version) = split(self.load()?);
            let (current, grant) = match state(&self.account, rec.as_ref(), key, &good) {
                State::Fresh(at) => return Ok(at.token),
                State::Dead { reason } => {
                    let e = Error::LoginRequired {
                        account: self.account.name.clone(),
                        reason: reason.into(),
                        remedy: None,
                    };
                    self.emit_failure(&e);
                    return Err(e);
                }
                State::Low { current, grant } => (current, grant),
            };
            // Serve a still-valid token rather than wait out a provider outage.
            let still_valid = current.filter(|at| serve_current && at.expires_at > self.now() + 5);
            let attempt = || match &grant {
                Grant::ClientCredentials => client_credentials::request(
                    &self.account,
                    self.ports.transport.as_ref(),
                    resource,
                ),
                Grant::RefreshToken(rt) => oauth::token_request(
                    self.ports.transport.as_ref(),
                    &self.account,
                    vec![
                        ("grant_type", v("refresh_token")),
                        ("refresh_token", v(rt.clone())),
                        ("scope", v(scopes.clone())),
                    ],
                ),
            };
            let retries = if still_valid.is_some() { 0 } else { RETRIES };
            let result = retry(attempt, retries, self.ports.clock.as_ref(), || {
                if let Err(e) = lease.renew(self.ports.lease_ttl) {
                    log::warn!("{e}; going on (the store write is compare-and-swap)");
                }
            });
            match result {
                Ok(resp) => {
                    let used = match &grant {
                        Grant::RefreshToken(rt) => Some(rt.as_str()),
                        Grant::ClientCredentials => None,
                    };
                    if let Some(token) = self.store_renewed(rec, version, key, resp, &good, used)? {
                        return Ok(token);
                    }
                }
                Err(EndpointError::Transient { detail, .. }) if still_valid.is_some() => {
                    let at = still_valid.expect("checked");
                    log::warn!(
                        "refresh of `{}` failed ({detail}); serving the current token, valid for {} s more",
                        self.account.name,
                        at.expires_at - self.now()
                    );
                    let error = Error::Unreachable {
                        what: "token endpoint".into(),
                        detail,
                    };
                    self.emit(Event::RefreshFailed {
                        error: &error,
                        serving_until: at.expires_at,
                    });
                    return Ok(at.token);
                }
                // A refresh token the server no longer takes may just have been
                // rotated by another writer since we read it (our lease ran out
                // and was taken over): a lost race is not a revocation. Re-read,
                // and start over when the stored one has moved on.
                Err(e)
                    if e.oauth_code() == Some("invalid_grant")
                        && matches!(&grant, Grant::RefreshToken(used)
                            if self.load()?.and_then(|(r, _)| r.refresh_token).is_some_and(|now| &now != used)) =>
                {
                    log::warn!(
                        "the refresh token of `{}` was refused, but another writer has stored a newer one; using that",
                        self.account.name
                    );
                }
                Err(e) => {
                    let err = diagnose::endpoint_error(
                        e,
                        &self.account,
                        "token endpoint",
                        &self.account.token_url,
                    );
                    self.emit_failure(&err);
                    return Err(err);
                }
            }
        }
        let e = Error::Unreachable {
            what: format!("token store {}", self.ports.store.describe()),
            detail: "the record kept changing during the refresh (other writers); try again".into(),
        };
        self.emit_failure(&e);
        Err(e)
    }

    /// Store a renewal (Invariant R: before its token leaves). On a lost
    /// compare-and-swap, re-read: the same refresh-token chain → fold ours in and
    /// try again (ours may carry the rotated refresh token); a moved-on chain with a
    /// good token → serve that (no second request); otherwise `None`: start over
    /// from the new record.
    fn store_renewed(
        &self,
        mut rec: Option<TokenRecord>,
        mut version: Option<Version>,
        key: &str,
        resp: TokenResponse,
        good: &impl Fn(&AccessToken) -> bool,
        used: Option<&str>,
    ) -> Result<Option<String>> {
        for _ in 0..ROUNDS {
            let now = self.now();
            let mut new = rec.unwrap_or_else(|| new_record(None, now));
            let token = apply(&mut new, key, resp.clone(), now);
            if let Saved::Saved(_) = self.ports.store.save_if(version, &new)? {
                self.emit(Event::Refreshed);
                return Ok(Some(token));
            }
            log::warn!(
                "the record of `{}` changed during the refresh (another writer); re-reading it",
                self.account.name
            );
            (rec, version) = split(self.load()?);
            let chain = rec.as_ref().and_then(|r| r.refresh_token.as_deref());
            if chain != used || used.is_none() {
                let theirs = rec
                    .as_ref()
                    .and_then(|r| r.access.get(key))
                    .filter(|at| good(at));
                return Ok(theirs.map(|at| at.token.clone()));
            }
        }
        Ok(None)
    }

    /// Run the account's flow interactively and store the result.
    pub fn login(&self, opts: &LoginOptions) -> Result<LoginOutcome> {
        let resp = flows::run(&self.account, self.ports.transport.as_ref(), opts)
            .inspect_err(|e| self.emit_failure(e))?;
        self.store_login(resp)
    }

    /// Adopt a refresh token obtained elsewhere (a move from another system):
    /// redeem it once, which proves it works and may rotate it, then store the
    /// answer as a login would. A refused token is the provider's diagnosis
    /// ([`Error::LoginRequired`] for `invalid_grant`), and nothing is stored.
    pub fn adopt_refresh_token(&self, refresh_token: &str) -> Result<LoginOutcome> {
        let scopes = self.account.scopes(None)?.join(" ");
        let mut resp = oauth::token_request(
            self.ports.transport.as_ref(),
            &self.account,
            vec![
                ("grant_type", v("refresh_token")),
                ("refresh_token", v(refresh_token)),
                ("scope", v(scopes)),
            ],
        )
        .map_err(|e| {
            diagnose::endpoint_error(e, &self.account, "token endpoint", &self.account.token_url)
        })?;
        // A provider that does not rotate keeps the one we gave it working.
        if resp.refresh_token.is_none() {
            resp.refresh_token = Some(refresh_token.to_owned());
        }
        self.store_login(resp)
    }

    /// Verify and store the result of a flow.
    pub fn store_login(&self, resp: TokenResponse) -> Result<LoginOutcome> {
        let (user, unverified) = if self.account.has_refresh_tokens() {
            match identity::signed_in(&self.account, self.ports.transport.as_ref(), &resp) {
                identity::SignedIn::User(u) => (Some(u), None),
                identity::SignedIn::Unknown(why) => (None, Some(why)),
            }
        } else {
            (signed_in_user(&resp), None)
        };
        if self.account.has_refresh_tokens()
            && let Some(u) = &user
            && !u.eq_ignore_ascii_case(&self.account.user)
        {
            let e = Error::UserMismatch {
                account: self.account.name.clone(),
                expected: self.account.user.clone(),
                got: u.clone(),
            };
            self.emit_failure(&e);
            return Err(e);
        }
        if self.account.has_refresh_tokens() && resp.refresh_token.is_none() {
            log::warn!(
                "the provider returned no refresh token: `token` will need a new login when this access token \
                 expires (Microsoft: add `offline_access`; Google: access_type=offline and prompt=consent)"
            );
        }
        let _lease = self.lock()?;
        let set_aside = match self.ports.store.load() {
            Ok(_) => None,
            Err(Error::Store { .. }) => self.ports.store.set_aside()?,
            Err(e) => return Err(e),
        };
        let mut rec = new_record(user.clone(), self.now());
        apply(&mut rec, MAIL_RESOURCE, resp, self.now());
        // A new login starts a new chain: it replaces whatever is stored.
        self.ports.store.replace(&rec)?;
        self.emit(Event::LoggedIn);
        Ok(LoginOutcome {
            user,
            unverified,
            store: self.ports.store.describe(),
            set_aside,
        })
    }

    /// Delete stored tokens, revoking the refresh token where the provider can.
    pub fn logout(&self) -> Result<LogoutOutcome> {
        let _lease = self.lock()?;
        let rec = self.record().ok().flatten();
        let mut revoked = None;
        if let (Some(url), Some(rt)) = (
            &self.account.revoke_url,
            rec.as_ref().and_then(|r| r.refresh_token.clone()),
        ) {
            let mut form = vec![("token", v(rt)), ("token_type_hint", v("refresh_token"))];
            form.extend(oauth::client_auth(&self.account, url)?);
            revoked = Some(match self.ports.transport.post(url, &form) {
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
        self.ports.store.delete()?;
        Ok(LogoutOutcome {
            had_tokens: rec.is_some(),
            revoked,
        })
    }

    /// The stored refresh token (for OfflineIMAP's `oauth2_refresh_token_eval`).
    pub fn refresh_token(&self) -> Result<String> {
        self.record()?
            .and_then(|r| r.refresh_token)
            .ok_or_else(|| Error::LoginRequired {
                account: self.account.name.clone(),
                reason: "no refresh token is stored".into(),
                remedy: None,
            })
    }
}

fn split(loaded: Option<(TokenRecord, Version)>) -> (Option<TokenRecord>, Option<Version>) {
    match loaded {
        Some((r, v)) => (Some(r), Some(v)),
        None => (None, None),
    }
}

/// What a login stored.
#[derive(Debug)]
pub struct LoginOutcome {
    /// The user the provider reports, when it reports one.
    pub user: Option<String>,
    /// Why nobody could say who signed in, when nobody could (a delegated
    /// login whose server names no user): the account's user is then unchecked.
    pub unverified: Option<String>,
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

fn new_record(user: Option<String>, t: i64) -> TokenRecord {
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
fn apply(rec: &mut TokenRecord, key: &str, resp: TokenResponse, t: i64) -> String {
    let lifetime = lifetime(&resp, t);
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

/// Seconds the access token of `resp` (received at `t`) is taken to be valid:
/// `expires_in`, else the JWT's `exp`, else [`DEFAULT_LIFETIME`]; a zero or
/// negative value is [`NONSENSE_LIFETIME`]; none is more than [`MAX_LIFETIME`].
fn lifetime(resp: &TokenResponse, t: i64) -> i64 {
    let said = resp.expires_in.or_else(|| {
        jwt::claims(&resp.access_token)
            .and_then(|c| c.get("exp").and_then(|e| e.as_i64()))
            .map(|exp| exp.saturating_sub(t))
    });
    match said {
        None => DEFAULT_LIFETIME,
        Some(s) if s <= 0 => NONSENSE_LIFETIME,
        Some(s) => s.min(MAX_LIFETIME),
    }
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
/// backoff (0.5 s, 1 s, 2 s), honouring Retry-After up to [`MAX_WAIT`]. Waits on
/// `clock` (tests do not really wait); `between` runs before each new attempt
/// (the broker renews its lease there).
fn retry<T>(
    f: impl Fn() -> std::result::Result<T, EndpointError>,
    retries: u32,
    clock: &dyn Clock,
    mut between: impl FnMut(),
) -> std::result::Result<T, EndpointError> {
    let mut attempt = 0;
    let mut waited = Duration::ZERO;
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
                clock.sleep(wait);
                waited += wait;
                between();
                attempt += 1;
            }
            other => {
                if attempt > 0 {
                    log::info!(
                        "token endpoint: {} attempts, {:.1} s of waiting",
                        attempt + 1,
                        waited.as_secs_f32()
                    );
                }
                return other;
            }
        }
    }
}
