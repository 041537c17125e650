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
use crate::events::Outbox;
use crate::ports::{DataKeys, Row, SqlEvents, SqlLeases, SqlStore};
use crate::settings::Settings;

/// A token as the API hands it out.
#[derive(Debug, Clone)]
pub struct Served {
    /// The bearer token.
    pub token: AccessToken,
    /// The mailbox address (the SASL user).
    pub user: String,
    /// The mailbox's core account (for SASL strings).
    pub account: Arc<Account>,
}

/// The token side of the service, shared by all requests of a node.
pub struct Tokens {
    db: Db,
    keys: Arc<DataKeys>,
    settings: Arc<Settings>,
    /// This node's lease owner prefix (host, pid, start time).
    node: String,
    transport: Arc<dyn Transport>,
    outbox: Arc<Outbox>,
    cache: Mutex<HashMap<(String, String), Remembered>>,
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Mailboxes whose provider failed transiently: no new attempt before `until`.
    cooling: Mutex<HashMap<String, Cooldown>>,
}

/// A token in memory.
#[derive(Clone)]
struct Remembered {
    token: AccessToken,
    account: Arc<Account>,
    /// While the provider is failing (degraded): serve this still-valid token
    /// until then without asking the provider again.
    serve_until: i64,
}

impl Remembered {
    fn servable(&self, now: i64) -> bool {
        self.token.is_fresh(self.account.min_validity, now)
            || (self.serve_until > now && self.token.expires_at > now + 5)
    }
}

/// Backoff state of a failing mailbox on this node.
#[derive(Clone, Copy)]
struct Cooldown {
    failures: u32,
    until: i64,
}

/// Wait after the `n`th transient failure in a row: 5 s doubling, at most 5 min.
fn cooldown(n: u32) -> i64 {
    (5i64 << n.saturating_sub(1).min(6)).min(300)
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
            node,
            transport: Arc::new(HttpTransport::new(Duration::from_secs(30))),
            outbox: Arc::new(Outbox {
                urls: settings.webhooks.clone(),
            }),
            settings,
            cache: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
            cooling: Mutex::new(HashMap::new()),
        }
    }

    /// This node's id (host, pid, start time): its lease owner prefix.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The core account of `m`.
    pub fn account(&self, m: &Mailbox) -> Result<Account, Error> {
        self.settings.account(&m.connector, &m.email)
    }

    /// The token of mailbox `id` in memory, if it may be served: no I/O, no
    /// database (the hot path; the caller checked the key's mailbox limits).
    pub fn cached(&self, id: &str, resource: Option<&str>) -> Option<Served> {
        let key = (id.to_owned(), resource.unwrap_or(MAIL_RESOURCE).to_owned());
        let r = self.cache.lock().unwrap().get(&key).cloned()?;
        r.servable(mailoauth::clock::now()).then(|| Served {
            token: r.token,
            user: r.account.user.clone(),
            account: r.account,
        })
    }

    /// Keep `at` in memory as mailbox `id`'s token for `resource`.
    pub fn remember(
        &self,
        id: &str,
        account: Arc<Account>,
        resource: Option<&str>,
        at: AccessToken,
        serve_until: i64,
    ) -> Served {
        self.cache.lock().unwrap().insert(
            (id.to_owned(), resource.unwrap_or(MAIL_RESOURCE).to_owned()),
            Remembered {
                token: at.clone(),
                account: account.clone(),
                serve_until,
            },
        );
        Served {
            token: at,
            user: account.user.clone(),
            account,
        }
    }

    /// Seconds until this node asks the provider for `id` again, when it is
    /// backing off after transient failures.
    pub fn cooling_for(&self, id: &str) -> Option<i64> {
        let now = mailoauth::clock::now();
        let c = self.cooling.lock().unwrap().get(id).copied()?;
        (c.until > now).then_some(c.until - now)
    }

    /// One more transient failure of `id`: the end of its cooldown.
    fn failed(&self, id: &str) -> i64 {
        let mut all = self.cooling.lock().unwrap();
        let c = all.entry(id.to_owned()).or_insert(Cooldown {
            failures: 0,
            until: 0,
        });
        c.failures += 1;
        c.until = mailoauth::clock::now() + cooldown(c.failures);
        c.until
    }

    /// A fresh token for `m`: from memory, else through the broker (one task
    /// per mailbox per node; one refresh across nodes). A mailbox waiting for
    /// its owner (`login_required`) is answered from its row, without asking
    /// the provider again; one whose provider failed transiently is not asked
    /// again before its cooldown ends (a still-valid token is served meanwhile).
    pub async fn token(&self, m: &Mailbox, resource: Option<&str>) -> Result<Served, Error> {
        if let Some(s) = self.cached(&m.id, resource) {
            return Ok(s);
        }
        if m.state == "login_required" {
            return Err(Error::LoginRequired {
                account: m.connector.clone(),
                reason: m
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "the provider no longer accepts the stored sign-in".into()),
                remedy: None,
            });
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
        if let Some(s) = self.cached(&m.id, resource) {
            return Ok(s);
        }
        if let Some(left) = self.cooling_for(&m.id) {
            return Err(Error::Unreachable {
                what: "the provider".into(),
                detail: format!(
                    "its last answers for this mailbox were failures; the next attempt is in {left} s"
                ),
            });
        }
        let account = Arc::new(self.account(m)?);
        let min_validity = account.min_validity;
        let broker = self.broker(m, (*account).clone());
        let res = resource.map(str::to_owned);
        let got = tokio::task::spawn_blocking(move || -> Result<AccessToken, Error> {
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
        .map_err(|e| Error::Flow(format!("token task failed: {e}")))?;
        let at = match got {
            Ok(at) => at,
            Err(e) => {
                if matches!(e, Error::Unreachable { .. }) {
                    self.failed(&m.id);
                }
                return Err(e);
            }
        };
        let now = mailoauth::clock::now();
        let serve_until = if at.is_fresh(min_validity, now) {
            self.cooling.lock().unwrap().remove(&m.id);
            0
        } else {
            // The broker served the still-valid token because the provider
            // failed: keep serving it through the cooldown.
            self.failed(&m.id)
        };
        Ok(self.remember(&m.id, account, resource, at, serve_until))
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
                on_device_code: None,
            };
            broker.login(&opts).map(|_| ())
        })
        .await
        .map_err(|e| Error::Flow(format!("login task failed: {e}")))??;
        self.schedule(m).await
    }

    /// Put `m` in the refresher's schedule from its stored record: the most
    /// urgent mailboxes come first (a mailbox left at "look at once" would
    /// queue behind thousands of others after an import).
    pub async fn schedule(&self, m: &Mailbox) -> Result<(), Error> {
        let broker = self.broker(m, self.account(m)?);
        let rec = tokio::task::spawn_blocking(move || broker.record())
            .await
            .map_err(|e| Error::Flow(format!("schedule task failed: {e}")))??;
        if let Some(rec) = rec {
            let now = mailoauth::clock::now();
            let next = crate::refresher::next_look(rec.access.values(), &self.settings, now);
            self.db.set_next_refresh(&m.id, next).await?;
        }
        Ok(())
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
            .map_err(|e| Error::Flow(format!("store task failed: {e}")))??;
        self.schedule(m).await
    }

    /// Store a refresh token obtained elsewhere for `m`: redeemed once at the
    /// provider (which proves it works), then stored as a sign-in.
    pub async fn adopt(
        &self,
        m: &Mailbox,
        account: Account,
        refresh_token: zeroize::Zeroizing<String>,
    ) -> Result<(), Error> {
        let broker = self.broker(m, account);
        tokio::task::spawn_blocking(move || broker.adopt_refresh_token(&refresh_token).map(|_| ()))
            .await
            .map_err(|e| Error::Flow(format!("store task failed: {e}")))??;
        self.schedule(m).await
    }

    /// Forget every mailbox not in `ids` (deleted through another node).
    pub fn retain_only(&self, ids: &std::collections::HashSet<String>) {
        self.cache
            .lock()
            .unwrap()
            .retain(|(m, _), _| ids.contains(m));
        self.flights.lock().unwrap().retain(|m, _| ids.contains(m));
        self.cooling.lock().unwrap().retain(|m, _| ids.contains(m));
    }

    /// Forget what memory holds for mailbox `id` (deleted or re-consented).
    pub fn forget(&self, id: &str) {
        self.cache.lock().unwrap().retain(|(m, _), _| m != id);
        self.flights.lock().unwrap().remove(id);
        self.cooling.lock().unwrap().remove(id);
    }

    /// Where events go (the webhook URLs).
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The core broker of `m` over the database ports (run it on the blocking pool).
    pub fn broker(&self, m: &Mailbox, account: Account) -> Broker {
        let row = Row {
            db: self.db.clone(),
            keys: self.keys.clone(),
            rt: tokio::runtime::Handle::current(),
            id: m.id.clone(),
            outbox: self.outbox.clone(),
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
                lease_ttl: Duration::from_secs(self.settings.lease_ttl),
            },
        )
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "node".into())
}
