//! Tokens for mailboxes: from memory when fresh, else one refresh across all
//! nodes.
//!
//! Owns: the node's memory of fresh access tokens, in-node coalescing (one
//! task per mailbox talks to the database and the provider; the others wait
//! for it), and running the core broker with the database ports on the
//! blocking pool — the broker takes the row's lease, re-reads, refreshes, and
//! writes the rotated refresh token by compare-and-swap before the access
//! token is returned, so concurrent nodes refresh once and a lost race is
//! re-read, never taken for a revocation. Must not: write or call out on the
//! fresh path (a hit is a map lookup), or hold a database transaction across
//! the provider's request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailoauth::broker::local::{HttpTransport, SystemClock};
use mailoauth::broker::ports::{Ports, Transport};
use mailoauth::providers::{Account, MAIL_RESOURCE};
use mailoauth::store::AccessToken;
use mailoauth::{Broker, Error, LoginOptions};

use crate::db::{Db, Mailbox};
use crate::ports::{DataKeys, Row, SqlEvents, SqlLeases, SqlStore};
use crate::settings::Settings;

/// A token as the API hands it out.
#[derive(Debug, Clone)]
pub struct Served {
    /// The bearer token.
    pub token: AccessToken,
    /// The mailbox address (the SASL user).
    pub user: String,
}

/// Lease lifetime: longer than one token request with its retries, short
/// enough that a dead node's mailboxes move on quickly.
const LEASE_TTL: Duration = Duration::from_secs(60);

/// The token side of the service, shared by all requests of a node.
pub struct Tokens {
    db: Db,
    keys: Arc<DataKeys>,
    settings: Arc<Settings>,
    /// This node's lease owner prefix (host, pid, start time).
    node: String,
    transport: Arc<dyn Transport>,
    cache: Mutex<HashMap<(String, String), (AccessToken, u64)>>,
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The mailboxes whose tokens are in memory, so their fresh tokens are
    /// still served while the database is down.
    seen: Mutex<HashMap<String, Mailbox>>,
    /// Whether the database is down (fresh tokens in memory skip it then).
    pub outage: crate::outage::Outage,
}

impl Tokens {
    /// The token service over `db` with `keys`.
    pub fn new(db: Db, keys: Arc<DataKeys>, settings: Arc<Settings>) -> Tokens {
        let node = format!(
            "{}:{}:{}",
            hostname(),
            std::process::id(),
            mailoauth::clock::now()
        );
        Tokens {
            db,
            keys,
            settings,
            node,
            transport: Arc::new(HttpTransport::new(Duration::from_secs(30))),
            cache: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            outage: Default::default(),
        }
    }

    /// The core account of `m`.
    pub fn account(&self, m: &Mailbox) -> Result<Account, Error> {
        self.settings.account(&m.connector, &m.email)
    }

    /// The fresh token in memory, if there is one: no I/O.
    pub fn cached(&self, m: &Mailbox, resource: Option<&str>) -> Option<Served> {
        let key = (m.id.clone(), resource.unwrap_or(MAIL_RESOURCE).to_owned());
        let (at, min_validity) = self.cache.lock().unwrap().get(&key).cloned()?;
        at.is_fresh(min_validity, mailoauth::clock::now())
            .then(|| Served {
                token: at,
                user: m.email.clone(),
            })
    }

    /// A fresh token for `m`: from memory, else through the broker (one task
    /// per mailbox per node; one refresh across nodes).
    pub async fn token(&self, m: &Mailbox, resource: Option<&str>) -> Result<Served, Error> {
        if let Some(s) = self.cached(m, resource) {
            return Ok(s);
        }
        let flight = self
            .flights
            .lock()
            .unwrap()
            .entry(m.id.clone())
            .or_default()
            .clone();
        let _turn = flight.lock().await;
        // Whoever held the turn before us may have fetched it.
        if let Some(s) = self.cached(m, resource) {
            return Ok(s);
        }
        let account = self.account(m)?;
        let min_validity = account.min_validity;
        let broker = self.broker(m, account);
        let res = resource.map(str::to_owned);
        let at = tokio::task::spawn_blocking(move || -> Result<AccessToken, Error> {
            let token = broker.token(res.as_deref())?;
            let rec = broker.record()?;
            Ok(rec
                .and_then(|r| {
                    r.access
                        .get(res.as_deref().unwrap_or(MAIL_RESOURCE))
                        .cloned()
                })
                .filter(|at| at.token == token)
                .unwrap_or(AccessToken {
                    token,
                    expires_at: mailoauth::clock::now() + 60,
                    obtained_at: 0,
                    scope: None,
                }))
        })
        .await
        .map_err(|e| Error::Flow(format!("token task failed: {e}")))??;
        self.cache.lock().unwrap().insert(
            (m.id.clone(), resource.unwrap_or(MAIL_RESOURCE).to_owned()),
            (at.clone(), min_validity),
        );
        self.seen.lock().unwrap().insert(m.id.clone(), m.clone());
        Ok(Served {
            token: at,
            user: m.email.clone(),
        })
    }

    /// Sign an app-only mailbox in (client credentials): stores its first token.
    pub async fn login_app(&self, m: &Mailbox) -> Result<(), Error> {
        let broker = self.broker(m, self.account(m)?);
        tokio::task::spawn_blocking(move || {
            let opts = LoginOptions {
                open_browser: false,
                paste: false,
                timeout: Duration::from_secs(60),
                port: None,
            };
            broker.login(&opts).map(|_| ())
        })
        .await
        .map_err(|e| Error::Flow(format!("login task failed: {e}")))?
    }

    /// Mailbox `id` as it was when its token was last fetched, if this node
    /// holds one (for serving from memory while the database is down).
    pub fn remembered(&self, id: &str) -> Option<Mailbox> {
        self.seen.lock().unwrap().get(id).cloned()
    }

    /// The data keys (connect flows seal their pending sign-ins with them).
    pub fn keys(&self) -> &DataKeys {
        &self.keys
    }

    /// The token endpoint transport.
    pub fn transport(&self) -> Arc<dyn Transport> {
        self.transport.clone()
    }

    /// Store the tokens of a finished sign-in for `m` (replacing what it had:
    /// a re-consent starts a new chain).
    pub async fn store_sign_in(
        &self,
        m: &Mailbox,
        account: Account,
        resp: mailoauth::oauth::TokenResponse,
    ) -> Result<(), Error> {
        let broker = self.broker(m, account);
        tokio::task::spawn_blocking(move || broker.store_login(resp).map(|_| ()))
            .await
            .map_err(|e| Error::Flow(format!("store task failed: {e}")))?
    }

    /// Forget what memory holds for mailbox `id` (deleted or re-consented).
    pub fn forget(&self, id: &str) {
        self.cache.lock().unwrap().retain(|(m, _), _| m != id);
        self.flights.lock().unwrap().remove(id);
        self.seen.lock().unwrap().remove(id);
    }

    fn broker(&self, m: &Mailbox, account: Account) -> Broker {
        let row = Row {
            db: self.db.clone(),
            keys: self.keys.clone(),
            rt: tokio::runtime::Handle::current(),
            id: m.id.clone(),
        };
        Broker::with_ports(
            account,
            Ports {
                store: Box::new(SqlStore(row.clone())),
                leases: Arc::new(SqlLeases(row.clone())),
                events: Arc::new(SqlEvents(row)),
                clock: Arc::new(SystemClock),
                transport: self.transport.clone(),
                owner: format!("{} task {}", self.node, mailoauth::random::token(6)),
                lease_ttl: LEASE_TTL,
            },
        )
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "node".into())
}
