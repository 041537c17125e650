//! This machine's implementations of the broker ports: the configured token store,
//! a flock under the state directory, status files plus `notify_command`, the
//! system clock, and the blocking ureq client.
//!
//! Owns: adapting `store`, `paths`, `status`, `clock` and `http` to the port
//! traits, and [`local_ports`], the wiring `Broker::new` uses. Must not: make a
//! decision (that is `broker`), or do work on construction — the cached-token path
//! builds these and must not open a lock file or set up TLS.

use std::fs::File;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;

use super::ports::{Clock, Event, Events, Lease, Leases, Ports, Saved, TokenStore, Version};
use crate::error::{Error, Result};
use crate::http::Http;
use crate::oauth::{EndpointError, Form, Transport};
use crate::paths;
use crate::providers::Account;
use crate::status;
use crate::store::{Store, TokenRecord};

/// The ports of this machine for `account`: its configured store, flock leases,
/// status files, the system clock and a lazily built HTTP client.
pub fn local_ports(account: &Account) -> Result<Ports> {
    Ok(Ports {
        store: Box::new(LocalStore::open(account)?),
        leases: Arc::new(FlockLeases),
        events: Arc::new(StatusEvents),
        clock: Arc::new(SystemClock),
        transport: Arc::new(HttpTransport::new(Duration::from_secs(
            account.http_timeout,
        ))),
        owner: format!("pid {}", std::process::id()),
        // A flock ignores it (it lasts as long as the process); kept for symmetry.
        lease_ttl: Duration::from_secs(120),
    })
}

/// The configured store (file, encrypted file, keyring), with a content hash as
/// the version. Compare-and-swap re-reads the record before writing; that is
/// race-free because every local writer holds the account's flock meanwhile.
pub struct LocalStore {
    store: Store,
}

impl LocalStore {
    /// Open the store the account's config names (see [`Store::open`]).
    pub fn open(account: &Account) -> Result<LocalStore> {
        Ok(LocalStore {
            store: Store::open(account)?,
        })
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// A hash of the serialised record: equal records, equal versions. Versions are
/// compared only within one process (load, then compare-and-swap under the
/// flock) and never stored, so std's fixed-key SipHash is enough; SHA-256 here
/// was a fifth of the cached `token` path's instructions (callgrind).
fn content_version(rec: &TokenRecord) -> Version {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    rec.to_bytes().hash(&mut h);
    Version::from_raw(h.finish())
}

impl TokenStore for LocalStore {
    fn load(&self) -> Result<Option<(TokenRecord, Version)>> {
        Ok(self.store.load()?.map(|r| {
            let v = content_version(&r);
            (r, v)
        }))
    }

    fn save_if(&self, expected: Option<Version>, rec: &TokenRecord) -> Result<Saved> {
        // An unreadable record is an error here, never overwritten: a login sets
        // it aside first.
        let current = self.store.load()?.map(|r| content_version(&r));
        if current != expected {
            return Ok(Saved::Conflict);
        }
        self.store.save(rec)?;
        Ok(Saved::Saved(content_version(rec)))
    }

    fn delete(&self) -> Result<()> {
        self.store.delete()
    }

    fn set_aside(&self) -> Result<Option<String>> {
        self.store.set_aside()
    }

    fn describe(&self) -> String {
        self.store.describe()
    }
}

/// `$XDG_STATE_HOME/mailoauth/locks/<account>.lock`, flocked. The kernel releases
/// it when the holder dies, so a killed refresh never leaves a stale lock: the
/// lease "expires" with its process.
pub struct FlockLeases;

struct FlockLease {
    _file: File,
    owner: String,
}

impl Leases for FlockLeases {
    fn acquire(&self, account: &str, owner: &str, _ttl: Duration) -> Result<Box<dyn Lease>> {
        let dir = paths::state_dir().join("locks");
        paths::ensure_private_dir(&dir)?;
        let path = dir.join(format!("{}.lock", paths::file_stem(account)));
        let file = paths::open_lock_file(&path)?;
        file.lock()
            .map_err(|e| Error::io(format!("cannot lock {}", path.display()), e))?;
        Ok(Box::new(FlockLease {
            _file: file,
            owner: owner.to_owned(),
        }))
    }
}

impl Lease for FlockLease {
    fn owner(&self) -> &str {
        &self.owner
    }

    fn expires_at(&self) -> Option<i64> {
        None
    }

    fn renew(&mut self, _ttl: Duration) -> Result<()> {
        // Held until the file is closed: nothing to extend, nothing to lose.
        Ok(())
    }
}

/// Status files (`status/<account>.json`) and `notify_command`, exactly as the
/// `status` module defines them: notification once per transition into "login
/// required".
pub struct StatusEvents;

impl Events for StatusEvents {
    fn record(&self, account: &Account, event: Event<'_>, at: i64) {
        match event {
            Event::LoggedIn | Event::Refreshed => status::record_success(account, at),
            Event::RefreshFailed { error, .. }
            | Event::LoginRequired { error }
            | Event::Failed { error } => status::record_error(account, error, at),
        }
    }
}

/// The system clock; sleeping blocks the thread.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        crate::clock::now()
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// The ureq client, built on first use: the cached-token path never pays for TLS
/// set-up (~25 ms).
pub struct HttpTransport {
    timeout: Duration,
    http: OnceLock<Http>,
}

impl HttpTransport {
    /// A transport whose requests give up after `timeout`.
    pub fn new(timeout: Duration) -> HttpTransport {
        HttpTransport {
            timeout,
            http: OnceLock::new(),
        }
    }
}

impl Transport for HttpTransport {
    fn post(
        &self,
        url: &str,
        form: &Form,
    ) -> std::result::Result<serde_json::Map<String, Value>, EndpointError> {
        self.http
            .get_or_init(|| Http::new(self.timeout))
            .post(url, form)
    }

    fn get(
        &self,
        url: &str,
        bearer: Option<&str>,
    ) -> std::result::Result<serde_json::Map<String, Value>, EndpointError> {
        Transport::get(
            self.http.get_or_init(|| Http::new(self.timeout)),
            url,
            bearer,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_versions_are_equal_for_equal_records_and_differ_otherwise() {
        let rec = |rt: &str| TokenRecord {
            version: crate::store::RECORD_VERSION,
            refresh_token: Some(rt.into()),
            login_at: 1,
            refresh_token_at: 1,
            user: None,
            access: Default::default(),
        };
        assert_eq!(content_version(&rec("a")), content_version(&rec("a")));
        assert_ne!(content_version(&rec("a")), content_version(&rec("b")));
    }
}
