//! The ports of the token broker: everything it needs from the world, as traits.
//!
//! Owns: the shape of the store (with compare-and-swap), the lease (the per-account
//! lock), the events sink, the clock and — re-exported from `oauth` — the transport
//! to the token endpoint. Must not: contain an implementation (this machine's are in
//! `local`, the test doubles in `memory`) or a decision (those are in `broker`).
//!
//! The shapes are chosen for two users at once: this machine (one account per
//! process, a file or keyring record, a flock) and a multi-user service (thousands
//! of accounts in database rows, a lease row, HTTP on tokio). That is why versions
//! are opaque, leases expire, and events carry the account.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::providers::Account;
use crate::store::TokenRecord;

pub use crate::oauth::Transport;

/// The version of a stored record, as its store sees it. Opaque: a row counter in
/// SQL, a content hash for the local stores. Only equality means anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version(u64);

impl Version {
    /// Wrap a store's own version number or hash.
    pub fn from_raw(raw: u64) -> Version {
        Version(raw)
    }

    /// The store's number back (for writing it into a `WHERE version = ?`).
    pub fn raw(self) -> u64 {
        self.0
    }
}

/// The result of [`TokenStore::save_if`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// Written; the record now has this version.
    Saved(Version),
    /// Not written: the stored version was not the expected one (someone else wrote
    /// in between). The caller must re-read, never blindly retry the write.
    Conflict,
}

/// Where one account's [`TokenRecord`] lives.
///
/// Every write is all-or-nothing and durable when `save_if` returns `Saved`
/// (Invariant R relies on it).
pub trait TokenStore: Send + Sync {
    /// The record and its version, or `None` if nothing is stored.
    fn load(&self) -> Result<Option<(TokenRecord, Version)>>;
    /// Write `rec` if the stored version is still `expected` (`None` = nothing is
    /// stored, or for a login: whatever is stored, see [`TokenStore::replace`]).
    fn save_if(&self, expected: Option<Version>, rec: &TokenRecord) -> Result<Saved>;
    /// Write `rec` whatever is stored (a new login replaces the old chain). The
    /// default reads the version and compare-and-swaps, retrying on a conflict.
    fn replace(&self, rec: &TokenRecord) -> Result<Version> {
        loop {
            let current = self.load()?.map(|(_, v)| v);
            if let Saved::Saved(v) = self.save_if(current, rec)? {
                return Ok(v);
            }
        }
    }
    /// Remove the record; not an error if there is none.
    fn delete(&self) -> Result<()>;
    /// Move an unreadable record out of the way (kept, never deleted) so a new
    /// login can start afresh; returns where it went.
    fn set_aside(&self) -> Result<Option<String>>;
    /// Human description for `status` (a path, "keyring (Secret Service)", a table).
    fn describe(&self) -> String;
}

/// A shared store is a store (several brokers of one account in one process, or
/// a service handing one store handle to many requests).
impl<T: TokenStore + ?Sized> TokenStore for Arc<T> {
    fn load(&self) -> Result<Option<(TokenRecord, Version)>> {
        (**self).load()
    }
    fn save_if(&self, expected: Option<Version>, rec: &TokenRecord) -> Result<Saved> {
        (**self).save_if(expected, rec)
    }
    fn replace(&self, rec: &TokenRecord) -> Result<Version> {
        (**self).replace(rec)
    }
    fn delete(&self) -> Result<()> {
        (**self).delete()
    }
    fn set_aside(&self) -> Result<Option<String>> {
        (**self).set_aside()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// A held per-account lease: while it is held and unexpired, no other owner gets
/// one for the same account. Released on drop.
pub trait Lease: Send {
    /// Who holds it (a pid, a node and task id …).
    fn owner(&self) -> &str;
    /// Unix time it expires, or `None` when it lasts as long as the holder's
    /// process (the flock: the kernel releases it when the process dies).
    fn expires_at(&self) -> Option<i64>;
    /// Extend it to `ttl` from now. Fails when it already expired and another owner
    /// took it over; the holder may go on (its store writes are compare-and-swap,
    /// so a lost lease costs at most a wasted request, never a lost token).
    fn renew(&mut self, ttl: Duration) -> Result<()>;
}

/// Hands out [`Lease`]s. Shared by all accounts of a process or a service.
pub trait Leases: Send + Sync {
    /// Block until `owner` holds the lease of `account` for `ttl`. A lease whose
    /// expiry has passed counts as free: its holder is presumed dead.
    fn acquire(&self, account: &str, owner: &str, ttl: Duration) -> Result<Box<dyn Lease>>;
}

/// What happened to an account's tokens, for status, notifications and metrics.
pub enum Event<'a> {
    /// An interactive login (or client-credentials grant at login) stored tokens.
    LoggedIn,
    /// A refresh stored a new access token.
    Refreshed,
    /// A refresh failed transiently; a still-valid token was served instead.
    RefreshFailed {
        /// The failure (an `Unreachable`).
        error: &'a crate::Error,
        /// Unix time the served token expires.
        serving_until: i64,
    },
    /// Only a new interactive login helps (`Error::LoginRequired`).
    LoginRequired {
        /// The error, with the reason and the provider's fix.
        error: &'a crate::Error,
    },
    /// Any other failure (misconfiguration, user mismatch, unreachable without a
    /// token to fall back on).
    Failed {
        /// The error.
        error: &'a crate::Error,
    },
}

/// Receives [`Event`]s. The one place status records and notifications hang off:
/// the broker calls it, nothing else in the library writes status.
pub trait Events: Send + Sync {
    /// Record `event` of `account`, which happened at unix time `at`. Must not fail
    /// the token operation: status is advisory, so errors are logged, not returned.
    fn record(&self, account: &Account, event: Event<'_>, at: i64);
}

/// Time, so that tests control it and the service can use its runtime's.
pub trait Clock: Send + Sync {
    /// Current unix time in seconds.
    fn now(&self) -> i64;
    /// Wait `d` (retry backoff). A test clock advances instead of waiting.
    fn sleep(&self, d: Duration);
}

/// Everything a [`super::Broker`] uses besides the account. The store belongs to
/// one account; the rest is shared (hence `Arc`) between all brokers of a process.
pub struct Ports {
    /// The account's record.
    pub store: Box<dyn TokenStore>,
    /// The per-account lock.
    pub leases: Arc<dyn Leases>,
    /// Status and notifications.
    pub events: Arc<dyn Events>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// The token, device and revocation endpoints.
    pub transport: Arc<dyn Transport>,
    /// This broker's lease owner name (unique per process or per service task).
    pub owner: String,
    /// How long a lease lasts without renewal; longer than one endpoint request
    /// with its retries, short enough that a crashed holder blocks others briefly.
    pub lease_ttl: Duration,
}
