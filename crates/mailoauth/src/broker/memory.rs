//! In-memory implementations of every broker port, for tests (here and in the
//! multi-user service): no files, no network, no real sleeping.
//!
//! Owns: [`MemoryStore`], [`MemoryLeases`], [`MemoryEvents`], [`ManualClock`] and
//! [`ScriptedTransport`]. Must not: be wired in by any production constructor, or
//! cut corners the real ports may not (compare-and-swap is honest, leases expire by
//! the clock), so a test passing here means the decisions are right.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::ports::{Clock, Event, Events, Lease, Leases, Saved, TokenStore, Version};
use crate::error::{Error, Result};
use crate::oauth::{EndpointError, Form, Transport};
use crate::providers::Account;
use crate::status::AccountStatus;
use crate::store::TokenRecord;

/// A record in memory with a counter version, like a database row.
#[derive(Default)]
pub struct MemoryStore {
    row: Mutex<Option<(TokenRecord, u64)>>,
    counter: AtomicU64,
    saves: AtomicUsize,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// A store holding `rec`.
    pub fn with(rec: TokenRecord) -> MemoryStore {
        let s = MemoryStore::new();
        s.put(rec);
        s
    }

    /// Write `rec` unconditionally, as another writer would (bumps the version).
    pub fn put(&self, rec: TokenRecord) {
        let v = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        *self.row.lock().unwrap() = Some((rec, v));
    }

    /// The stored record.
    pub fn get(&self) -> Option<TokenRecord> {
        self.row.lock().unwrap().as_ref().map(|(r, _)| r.clone())
    }

    /// How many `save_if` calls wrote.
    pub fn saves(&self) -> usize {
        self.saves.load(Ordering::SeqCst)
    }
}

impl TokenStore for MemoryStore {
    fn load(&self) -> Result<Option<(TokenRecord, Version)>> {
        Ok(self
            .row
            .lock()
            .unwrap()
            .as_ref()
            .map(|(r, v)| (r.clone(), Version::from_raw(*v))))
    }

    fn save_if(&self, expected: Option<Version>, rec: &TokenRecord) -> Result<Saved> {
        let mut row = self.row.lock().unwrap();
        if row.as_ref().map(|(_, v)| Version::from_raw(*v)) != expected {
            return Ok(Saved::Conflict);
        }
        let v = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        *row = Some((rec.clone(), v));
        self.saves.fetch_add(1, Ordering::SeqCst);
        Ok(Saved::Saved(Version::from_raw(v)))
    }

    fn delete(&self) -> Result<()> {
        *self.row.lock().unwrap() = None;
        Ok(())
    }

    fn set_aside(&self) -> Result<Option<String>> {
        Ok(self
            .row
            .lock()
            .unwrap()
            .take()
            .map(|_| "memory (set aside)".into()))
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}

/// A clock that only moves when told to, or when something sleeps on it.
pub struct ManualClock {
    millis: AtomicU64,
    sleeps: Mutex<Vec<Duration>>,
}

impl ManualClock {
    /// A clock standing at unix time `now`.
    pub fn at(now: i64) -> ManualClock {
        ManualClock {
            millis: AtomicU64::new(now as u64 * 1000),
            sleeps: Mutex::new(Vec::new()),
        }
    }

    /// Move time forward.
    pub fn advance(&self, d: Duration) {
        self.millis
            .fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Every `sleep` so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.sleeps.lock().unwrap().clone()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        (self.millis.load(Ordering::SeqCst) / 1000) as i64
    }

    fn sleep(&self, d: Duration) {
        self.sleeps.lock().unwrap().push(d);
        self.advance(d);
    }
}

#[derive(Default)]
struct LeaseTable {
    /// account → (owner, expires_at, grant id)
    held: Mutex<HashMap<String, (String, i64, u64)>>,
    freed: Condvar,
    grants: AtomicU64,
}

/// Leases in memory, expiring by a [`Clock`], like a lease row in a database.
pub struct MemoryLeases {
    table: Arc<LeaseTable>,
    clock: Arc<dyn Clock>,
}

impl MemoryLeases {
    /// Leases timed by `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> MemoryLeases {
        MemoryLeases {
            table: Arc::default(),
            clock,
        }
    }

    /// The current holder of `account`'s lease, if any (expired or not).
    pub fn holder(&self, account: &str) -> Option<String> {
        let held = self.table.held.lock().unwrap();
        held.get(account).map(|(o, _, _)| o.clone())
    }
}

impl Leases for MemoryLeases {
    fn acquire(&self, account: &str, owner: &str, ttl: Duration) -> Result<Box<dyn Lease>> {
        let mut held = self.table.held.lock().unwrap();
        loop {
            let now = self.clock.now();
            let free = held.get(account).is_none_or(|(_, exp, _)| *exp <= now);
            if free {
                let id = self.table.grants.fetch_add(1, Ordering::SeqCst);
                let expires = now + ttl.as_secs() as i64;
                held.insert(account.to_owned(), (owner.to_owned(), expires, id));
                return Ok(Box::new(MemoryLease {
                    table: self.table.clone(),
                    clock: self.clock.clone(),
                    account: account.to_owned(),
                    owner: owner.to_owned(),
                    expires,
                    id,
                }));
            }
            // Released leases notify; expiry (a clock moved by a test) is polled.
            held = self
                .table
                .freed
                .wait_timeout(held, Duration::from_millis(5))
                .unwrap()
                .0;
        }
    }
}

struct MemoryLease {
    table: Arc<LeaseTable>,
    clock: Arc<dyn Clock>,
    account: String,
    owner: String,
    expires: i64,
    id: u64,
}

impl Lease for MemoryLease {
    fn owner(&self) -> &str {
        &self.owner
    }

    fn expires_at(&self) -> Option<i64> {
        Some(self.expires)
    }

    fn renew(&mut self, ttl: Duration) -> Result<()> {
        let mut held = self.table.held.lock().unwrap();
        match held.get_mut(&self.account) {
            Some((_, exp, id)) if *id == self.id => {
                self.expires = self.clock.now() + ttl.as_secs() as i64;
                *exp = self.expires;
                Ok(())
            }
            _ => Err(Error::io(
                format!("lease of `{}` was taken over", self.account),
                std::io::Error::other("lease lost"),
            )),
        }
    }
}

impl Drop for MemoryLease {
    fn drop(&mut self) {
        let mut held = self.table.held.lock().unwrap();
        // Only our own grant: after a takeover the lease is someone else's.
        if held
            .get(&self.account)
            .is_some_and(|(_, _, id)| *id == self.id)
        {
            held.remove(&self.account);
        }
        self.table.freed.notify_all();
    }
}

/// An event as [`MemoryEvents`] keeps it (owned, errors as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// [`Event::LoggedIn`].
    LoggedIn,
    /// [`Event::Refreshed`].
    Refreshed,
    /// [`Event::RefreshFailed`], with the served token's expiry.
    RefreshFailed {
        /// Unix time the served token expires.
        serving_until: i64,
    },
    /// [`Event::LoginRequired`], with the error text.
    LoginRequired(String),
    /// [`Event::Failed`], with the error text.
    Failed(String),
}

/// Records events and keeps per-account status the way the status files do, and
/// counts notifications (one per transition into "login required").
#[derive(Default)]
pub struct MemoryEvents {
    log: Mutex<Vec<(String, Recorded)>>,
    status: Mutex<HashMap<String, AccountStatus>>,
    notified: Mutex<Vec<String>>,
}

impl MemoryEvents {
    /// No events yet.
    pub fn new() -> MemoryEvents {
        MemoryEvents::default()
    }

    /// Every event so far, with its account name.
    pub fn events(&self) -> Vec<(String, Recorded)> {
        self.log.lock().unwrap().clone()
    }

    /// The status an account would show.
    pub fn status(&self, account: &str) -> AccountStatus {
        self.status
            .lock()
            .unwrap()
            .get(account)
            .cloned()
            .unwrap_or_default()
    }

    /// Accounts notified, one entry per notification.
    pub fn notifications(&self) -> Vec<String> {
        self.notified.lock().unwrap().clone()
    }
}

impl Events for MemoryEvents {
    fn record(&self, account: &Account, event: Event<'_>, at: i64) {
        let name = account.name.clone();
        let mut status = self.status.lock().unwrap();
        let st = status.entry(name.clone()).or_default();
        let recorded = match event {
            Event::LoggedIn | Event::Refreshed => {
                *st = AccountStatus::after_success(at);
                if matches!(event, Event::LoggedIn) {
                    Recorded::LoggedIn
                } else {
                    Recorded::Refreshed
                }
            }
            Event::RefreshFailed {
                error,
                serving_until,
            } => {
                st.record_error(error, at);
                Recorded::RefreshFailed { serving_until }
            }
            Event::LoginRequired { error } => {
                if st.record_error(error, at) {
                    self.notified.lock().unwrap().push(name.clone());
                }
                Recorded::LoginRequired(error.to_string())
            }
            Event::Failed { error } => {
                st.record_error(error, at);
                Recorded::Failed(error.to_string())
            }
        };
        self.log.lock().unwrap().push((name, recorded));
    }
}

/// One request as the [`ScriptedTransport`] saw it: the URL, the grant type and
/// the parameter names. Secret values are not kept (so a test's Debug output of
/// requests cannot show one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// The endpoint.
    pub url: String,
    /// `grant_type`, if the form had one.
    pub grant_type: Option<String>,
    /// Names of all parameters, in order.
    pub params: Vec<&'static str>,
}

type Script = dyn Fn(usize, &str, &Form) -> std::result::Result<serde_json::Map<String, Value>, EndpointError>
    + Send
    + Sync;

/// A transport answering from a script: a function of (call number from 0, URL,
/// form), or a fixed queue of answers.
pub struct ScriptedTransport {
    script: Box<Script>,
    seen: Mutex<Vec<SeenRequest>>,
}

impl ScriptedTransport {
    /// Answer with `f(call number, url, form)`. The form's values may be read (a
    /// test checks which refresh token was sent) but are never stored.
    pub fn from_fn(
        f: impl Fn(
            usize,
            &str,
            &Form,
        ) -> std::result::Result<serde_json::Map<String, Value>, EndpointError>
        + Send
        + Sync
        + 'static,
    ) -> ScriptedTransport {
        ScriptedTransport {
            script: Box::new(f),
            seen: Mutex::new(Vec::new()),
        }
    }

    /// Answer with `replies` in order; after the last, every call is an `Invalid`.
    pub fn replies(
        replies: Vec<std::result::Result<serde_json::Map<String, Value>, EndpointError>>,
    ) -> ScriptedTransport {
        let queue = Mutex::new(VecDeque::from(replies));
        ScriptedTransport::from_fn(move |_, _, _| {
            queue.lock().unwrap().pop_front().unwrap_or_else(|| {
                Err(EndpointError::Invalid {
                    detail: "script exhausted".into(),
                })
            })
        })
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests were made.
    pub fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Transport for ScriptedTransport {
    fn post(
        &self,
        url: &str,
        form: &Form,
    ) -> std::result::Result<serde_json::Map<String, Value>, EndpointError> {
        let n = {
            let mut seen = self.seen.lock().unwrap();
            seen.push(SeenRequest {
                url: url.to_owned(),
                grant_type: form
                    .iter()
                    .find(|(k, _)| *k == "grant_type")
                    .map(|(_, v)| v.to_string()),
                params: form.iter().map(|(k, _)| *k).collect(),
            });
            seen.len() - 1
        };
        (self.script)(n, url, form)
    }

    /// A GET is seen as a request without parameters (the bearer token is not
    /// shown to the script).
    fn get(
        &self,
        url: &str,
        _bearer: Option<&str>,
    ) -> std::result::Result<serde_json::Map<String, Value>, EndpointError> {
        let n = {
            let mut seen = self.seen.lock().unwrap();
            seen.push(SeenRequest {
                url: url.to_owned(),
                grant_type: None,
                params: vec![],
            });
            seen.len() - 1
        };
        (self.script)(n, url, &Form::new())
    }
}

/// A token endpoint answer (for scripts): access token, lifetime, optional refresh token.
pub fn token_json(
    access: &str,
    expires_in: i64,
    refresh: Option<&str>,
) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("access_token".into(), Value::from(access));
    m.insert("token_type".into(), Value::from("Bearer"));
    m.insert("expires_in".into(), Value::from(expires_in));
    if let Some(r) = refresh {
        m.insert("refresh_token".into(), Value::from(r));
    }
    m
}

/// An OAuth error answer (for scripts), e.g. `invalid_grant`.
pub fn oauth_error(error: &str) -> EndpointError {
    EndpointError::OAuth {
        status: 400,
        error: error.into(),
        description: String::new(),
        codes: vec![],
    }
}
