//! The core broker's ports over the service's database: one mailbox row is
//! the store (compare-and-swap on its version), the lease (owner and expiry
//! on the same row) and the event sink (its state and last error).
//!
//! Owns: bridging the blocking broker to the async database — the broker runs
//! on tokio's blocking pool and these ports wait there with `Handle::block_on`.
//! Must not: be called from an async task directly (that would block the
//! runtime), or decide when to refresh (the core broker does).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

use mailoauth::broker::ports::{Event, Events, Lease, Leases, Saved, TokenStore, Version};
use mailoauth::providers::Account;
use mailoauth::store::TokenRecord;
use mailoauth::{Error, Result};

use crate::db::{Db, Effect, StateChange};
use crate::events::Outbox;

/// How long a request waits for another node's refresh of the same mailbox
/// before it reports the mailbox as busy.
const LEASE_WAIT: Duration = Duration::from_secs(30);
const LEASE_POLL: Duration = Duration::from_millis(25);

pub use crate::keyops::DataKeys;

/// What a mailbox's ports need: the database, the keys, the runtime, the row.
#[derive(Clone)]
pub struct Row {
    /// The database.
    pub db: Db,
    /// The data keys.
    pub keys: Arc<DataKeys>,
    /// The runtime the database pool lives on.
    pub rt: Handle,
    /// The mailbox id.
    pub id: String,
    /// Where its events go.
    pub outbox: Arc<Outbox>,
}

impl Row {
    fn aad(&self) -> Vec<u8> {
        crate::keyops::record_aad(&self.id)
    }
}

/// Where the crash-safety tests make a node die, as `kill -9` would at that
/// instant (no lease release, no cleanup): `MAILOAUTH_SERVE_FAULT` =
/// `abort-before-save` (the provider has answered, its rotated refresh token
/// is not stored yet) or `abort-after-save` (stored, the lease still held).
/// Unset, these are one comparison each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    BeforeSave,
    AfterSave,
}

fn crash_point(at: Fault) {
    static ARMED: std::sync::OnceLock<Option<Fault>> = std::sync::OnceLock::new();
    let armed = ARMED.get_or_init(|| match std::env::var("MAILOAUTH_SERVE_FAULT").as_deref() {
        Ok("abort-before-save") => Some(Fault::BeforeSave),
        Ok("abort-after-save") => Some(Fault::AfterSave),
        _ => None,
    });
    if *armed == Some(at) {
        eprintln!("mailoauth-serve: MAILOAUTH_SERVE_FAULT: dying at {at:?}");
        std::process::abort();
    }
}

/// The mailbox row as the broker's [`TokenStore`].
pub struct SqlStore(pub Row);

impl TokenStore for SqlStore {
    fn load(&self) -> Result<Option<(TokenRecord, Version)>> {
        let r = &self.0;
        let (sealed, _) = r.rt.block_on(r.db.record(&r.id))?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let key = r.rt.block_on(r.keys.find(&sealed.key_id))?;
        let key = key.ok_or_else(|| Error::Store {
            store: self.describe(),
            detail: format!(
                "the record is sealed under data key {}, which is not among the active keys",
                sealed.key_id
            ),
            remedy: None,
        })?;
        let plain = key
            .open(&r.aad(), &sealed.bytes)
            .ok_or_else(|| Error::Store {
                store: self.describe(),
                detail: "the sealed record does not open (changed in the database?)".into(),
                remedy: None,
            })?;
        let rec = TokenRecord::from_bytes(&plain).map_err(|detail| Error::Store {
            store: self.describe(),
            detail,
            remedy: None,
        })?;
        Ok(Some((rec, Version::from_raw(sealed.version as u64))))
    }

    fn save_if(&self, expected: Option<Version>, rec: &TokenRecord) -> Result<Saved> {
        let r = &self.0;
        let expected = match expected {
            Some(v) => v.raw() as i64,
            // "Nothing stored": only if the row holds no record at that moment;
            // the compare-and-swap below catches a writer in between.
            None => match r.rt.block_on(r.db.record(&r.id))? {
                (Some(_), _) => return Ok(Saved::Conflict),
                (None, v) => v,
            },
        };
        let plain = zeroize::Zeroizing::new(rec.to_bytes());
        r.rt.block_on(r.keys.catch_up());
        let current = r.keys.current();
        let sealed = current.seal(&r.aad(), &plain);
        let now = mailoauth::clock::now();
        crash_point(Fault::BeforeSave);
        let saved =
            r.rt.block_on(r.db.save_record_if(&r.id, expected, current.id(), &sealed, now))?;
        Ok(match saved {
            Some(v) => {
                crash_point(Fault::AfterSave);
                Saved::Saved(Version::from_raw(v as u64))
            }
            None => Saved::Conflict,
        })
    }

    fn delete(&self) -> Result<()> {
        let r = &self.0;
        r.rt.block_on(r.db.clear_record(&r.id, mailoauth::clock::now()))
    }

    fn set_aside(&self) -> Result<Option<String>> {
        // An unreadable row stays as it is (nothing is deleted); a new consent
        // overwrites it by compare-and-swap.
        Ok(None)
    }

    fn describe(&self) -> String {
        format!("mailbox {} in the service database", self.0.id)
    }
}

/// The refresh lease on the mailbox row.
pub struct SqlLeases(pub Row);

impl Leases for SqlLeases {
    fn acquire(&self, _account: &str, owner: &str, ttl: Duration) -> Result<Box<dyn Lease>> {
        let r = &self.0;
        let deadline = Instant::now() + LEASE_WAIT;
        loop {
            let now = mailoauth::clock::now();
            let until = now + ttl.as_secs() as i64;
            if r.rt.block_on(r.db.try_lease(&r.id, owner, until, now))? {
                return Ok(Box::new(SqlLease {
                    row: r.clone(),
                    owner: owner.to_owned(),
                    until,
                }));
            }
            if Instant::now() >= deadline {
                return Err(Error::Unreachable {
                    what: format!("mailbox {}", r.id),
                    detail: format!(
                        "another node has held its refresh lease for over {} s",
                        LEASE_WAIT.as_secs()
                    ),
                });
            }
            std::thread::sleep(LEASE_POLL);
        }
    }
}

struct SqlLease {
    row: Row,
    owner: String,
    until: i64,
}

impl Lease for SqlLease {
    fn owner(&self) -> &str {
        &self.owner
    }

    fn expires_at(&self) -> Option<i64> {
        Some(self.until)
    }

    fn renew(&mut self, ttl: Duration) -> Result<()> {
        let r = &self.row;
        let now = mailoauth::clock::now();
        let until = now + ttl.as_secs() as i64;
        if r.rt
            .block_on(r.db.try_lease(&r.id, &self.owner, until, now))?
        {
            self.until = until;
            Ok(())
        } else {
            Err(Error::Unreachable {
                what: format!("mailbox {}", r.id),
                detail: "its refresh lease expired and another node took it over".into(),
            })
        }
    }
}

impl Drop for SqlLease {
    fn drop(&mut self) {
        let r = &self.row;
        if let Err(e) = r.rt.block_on(r.db.release_lease(&r.id, &self.owner)) {
            // The lease expires by itself; nothing is lost.
            log::warn!(
                "mailbox {}: lease not released ({e}); it expires by itself",
                r.id
            );
        }
    }
}

/// The mailbox's state (`ok` / `degraded` / `login_required`), last error and
/// refresh schedule, and the events its transitions make (outbox rows written
/// in the same transaction).
pub struct SqlEvents(pub Row);

impl Events for SqlEvents {
    fn record(&self, _account: &Account, event: Event<'_>, at: i64) {
        crate::metrics::REFRESHES.record(&event); // ops: refreshes by outcome in /metrics
        let (state, error, effect) = match event {
            Event::LoggedIn => ("ok", None, Effect::SignedIn),
            Event::Refreshed => ("ok", None, Effect::Refreshed),
            Event::RefreshFailed { error, .. } | Event::Failed { error } => (
                "degraded",
                Some(crate::render::diagnosis(error)),
                Effect::Failed,
            ),
            Event::LoginRequired { error } => (
                "login_required",
                Some(crate::render::diagnosis(error)),
                Effect::None,
            ),
        };
        let signed_in = effect == Effect::SignedIn;
        let r = &self.0;
        let change = StateChange {
            state,
            error: error.as_deref(),
            effect,
        };
        let made = r.rt.block_on(r.db.change_state(&r.id, &change, at, |old| {
            let kinds = crate::events::kinds(&old.state, state, signed_in);
            r.outbox.rows(&kinds, old, state, error.as_deref(), at)
        }));
        if let Err(e) = made {
            log::warn!("mailbox {}: state not recorded: {e}", r.id);
        }
    }
}
