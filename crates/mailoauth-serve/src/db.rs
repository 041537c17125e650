//! The database: SQLite embedded, PostgreSQL for several nodes, one set of SQL.
//!
//! Owns: connecting, applying the backend's migrations at start, and every
//! query the service makes. Concurrency between nodes rests on two row-level
//! rules that both backends give without explicit locking: the token record is
//! written by compare-and-swap on `version`, and the refresh lease is taken by
//! an `UPDATE … WHERE` the lease is free, expired or already ours. No
//! transaction is held across a network call. Must not: decrypt (rows hold
//! sealed bytes) or decide anything about tokens.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use mailoauth::Error;

mod mail;
mod nodes;
mod watch;

pub use mail::{Attempt, DueMessage, MessageState, NewMessage, Outgoing};
pub use nodes::{Beat, Wakes};

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite://…`.
    Sqlite,
    /// `postgres://…`.
    Postgres,
}

/// A connection pool and its backend.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    /// The backend.
    pub backend: Backend,
    /// Rung by writes that make work due (see [`Wakes`]).
    wakes: Arc<Wakes>,
}

/// A mailbox row without its sealed record.
// ops: `ToSchema` documents the row in /v1/openapi.json (src/openapi.rs).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Mailbox {
    /// Stable id (random, URL-safe).
    pub id: String,
    /// Connector name.
    pub connector: String,
    /// The mailbox address.
    pub email: String,
    /// `delegated` or `app`.
    pub kind: String,
    /// The application's own reference, when it gave one.
    pub reference: Option<String>,
    /// `ok`, `degraded` or `login_required`.
    pub state: String,
    /// The last failure, as its diagnosis text.
    pub last_error: Option<String>,
    /// Unix time created.
    pub created_at: i64,
    /// Unix time of the last change.
    pub updated_at: i64,
    /// Unix time of the last refresh (or sign-in).
    pub refreshed_at: Option<i64>,
    /// Unix time the background refresher looks at it next.
    pub next_refresh: i64,
    /// Transient failures in a row (the refresher's backoff).
    pub failures: i64,
}

impl Mailbox {
    /// A new mailbox row, `connecting` until its first tokens are stored.
    pub fn new(
        connector: String,
        email: String,
        kind: &str,
        reference: Option<String>,
        now: i64,
    ) -> Mailbox {
        Mailbox {
            id: format!("mbx_{}", mailoauth::random::token(12)),
            connector,
            email,
            kind: kind.into(),
            reference,
            state: "connecting".into(),
            last_error: None,
            created_at: now,
            updated_at: now,
            refreshed_at: None,
            next_refresh: 0,
            failures: 0,
        }
    }
}

/// `SELECT` of the [`mailbox_of`] columns with `tail` (a literal, so the
/// assembled SQL holds no input; values are bound).
fn select_mailboxes(tail: &'static str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!("SELECT {MAILBOX_COLUMNS} FROM mailboxes {tail}"))
}

/// The columns [`mailbox_of`] reads, in its order.
const MAILBOX_COLUMNS: &str = "id, connector, email, kind, reference, state, last_error, created_at, \
                               updated_at, refreshed_at, next_refresh, failures";

/// A sealed token record as stored.
pub struct SealedRecord {
    /// The data key that sealed it.
    pub key_id: String,
    /// Nonce, ciphertext and tag.
    pub bytes: Vec<u8>,
    /// The row's version (compare-and-swap).
    pub version: i64,
}

/// A data key as stored (wrapped by the master key).
pub struct DataKeyRow {
    /// Key id.
    pub id: String,
    /// The key wrapped under the master key.
    pub wrapped: Vec<u8>,
    /// The master key's id.
    pub master_id: String,
    /// Unix time made (orders the keys).
    pub created_at: i64,
    /// Seals new rows (a retired key still opens old ones).
    pub active: bool,
}

/// An API key row.
#[derive(Debug, Clone)]
pub struct ApiKeyRow {
    /// Public id (shown in the audit log).
    pub id: String,
    /// Hex SHA-256 of the secret.
    pub digest: String,
    /// Label.
    pub name: String,
    /// Space-separated scopes.
    pub scopes: String,
    /// Space-separated mailbox ids it is limited to (empty: all).
    pub mailboxes: String,
    /// Unix time revoked.
    pub revoked_at: Option<i64>,
}

/// A connect link as stored.
#[derive(Debug, Clone)]
pub struct ConnectLink {
    /// Public id.
    pub id: String,
    /// Hex SHA-256 of the link's secret.
    pub digest: String,
    /// Connector name.
    pub connector: String,
    /// The address that must sign in.
    pub email: String,
    /// Where the success page sends the person back to.
    pub return_url: Option<String>,
    /// The application's reference.
    pub reference: Option<String>,
    /// The mailbox it re-connects, for a re-consent link.
    pub mailbox_id: Option<String>,
    /// Unix time it stops working.
    pub expires_at: i64,
    /// Unix time it was used up.
    pub used_at: Option<i64>,
}

/// One audit entry: a token handed out.
pub struct AuditEntry {
    /// Unix time.
    pub at: i64,
    /// The API key's id.
    pub key_id: String,
    /// The mailbox id.
    pub mailbox: String,
    /// What was done (`token`).
    pub action: String,
    /// How many times within that second.
    pub count: i64,
}

/// What a state change does besides setting the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// A sign-in stored new tokens: refreshed now, failures cleared, the
    /// refresher looks at it at once (it schedules the next refresh).
    SignedIn,
    /// A refresh stored a new token: refreshed now, failures cleared.
    Refreshed,
    /// A transient failure: one more in a row.
    Failed,
    /// Only the state and error.
    None,
}

/// A mailbox's new state, its last error and the [`Effect`].
pub struct StateChange<'a> {
    /// `ok`, `degraded` or `login_required`.
    pub state: &'a str,
    /// The failure's diagnosis text (`None` clears it).
    pub error: Option<&'a str>,
    /// What else changes.
    pub effect: Effect,
}

/// An outbox row to write with a state change.
pub struct OutboxEvent {
    /// Stable event id (the same for every URL and every retry).
    pub id: String,
    /// The webhook URL.
    pub url: String,
    /// `mailbox.connected`, `mailbox.login_required`, `mailbox.recovered`.
    pub kind: String,
    /// The mailbox id.
    pub mailbox: String,
    /// The JSON body, as sent.
    pub body: String,
}

/// An outbox row waiting for delivery.
#[derive(Debug, Clone)]
pub struct EventRow {
    /// Event id.
    pub id: String,
    /// Webhook URL.
    pub url: String,
    /// Event kind.
    pub kind: String,
    /// Mailbox id.
    pub mailbox: String,
    /// JSON body.
    pub body: String,
    /// Attempts so far.
    pub attempts: i64,
    /// When it is due (the claim compares it).
    pub next_attempt: i64,
}

/// The first key of the event order locks (`Db::insert_events`): "mo", so
/// they cannot meet another application's advisory locks on one key.
const EVENT_LOCKS: i32 = 0x6d6f;

impl Db {
    /// Write the outbox rows of `events` inside `tx`, the transaction that
    /// makes them. Deliveries go out in `seq` order per mailbox, and `seq`
    /// is drawn when a row is inserted: on PostgreSQL two transactions
    /// writing one mailbox's events (two folder connections, a state change)
    /// could commit in the other order, and the deliverer would send the
    /// later event before the earlier one was visible. So each transaction
    /// first takes its mailboxes' advisory locks, held until it ends (in one
    /// order, so two never wait on each other): per mailbox, commit order is
    /// `seq` order. SQLite's write transactions run one at a time already.
    pub(crate) async fn insert_events(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        events: &[OutboxEvent],
        now: i64,
    ) -> Result<(), Error> {
        let err = db_err("events");
        if self.backend == Backend::Postgres {
            let mut mailboxes: Vec<&str> = events.iter().map(|e| e.mailbox.as_str()).collect();
            mailboxes.sort_unstable();
            mailboxes.dedup();
            for m in mailboxes {
                sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                    .bind(EVENT_LOCKS)
                    .bind(m)
                    .execute(&mut **tx)
                    .await
                    .map_err(&err)?;
            }
        }
        for e in events {
            sqlx::query(
                "INSERT INTO events (id, url, kind, mailbox, body, created_at, next_attempt) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (id, url) DO NOTHING",
            )
            .bind(&e.id)
            .bind(&e.url)
            .bind(&e.kind)
            .bind(&e.mailbox)
            .bind(&e.body)
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(&err)?;
        }
        Ok(())
    }
}

fn db_err(what: &str) -> impl Fn(sqlx::Error) -> Error + '_ {
    move |e| Error::Unreachable {
        what: format!("the database ({what})"),
        detail: e.to_string(),
    }
}

/// The columns in the order both key queries select them.
fn key_of(r: &AnyRow) -> ApiKeyRow {
    ApiKeyRow {
        id: r.get(0),
        digest: r.get(1),
        name: r.get(2),
        scopes: r.get(3),
        mailboxes: r.get(4),
        revoked_at: r.get(5),
    }
}

/// The columns in the order both mailbox queries select them.
fn mailbox_of(r: &AnyRow) -> Mailbox {
    Mailbox {
        id: r.get(0),
        connector: r.get(1),
        email: r.get(2),
        kind: r.get(3),
        reference: r.get(4),
        state: r.get(5),
        last_error: r.get(6),
        created_at: r.get(7),
        updated_at: r.get(8),
        refreshed_at: r.get(9),
        next_refresh: r.get(10),
        failures: r.get(11),
    }
}

impl Db {
    /// A transaction that will write. On SQLite it takes the write lock at
    /// its start (`BEGIN IMMEDIATE`): a deferred transaction that reads and
    /// then writes cannot wait for the lock once another writer committed
    /// since its read (SQLite answers "database is locked" at once, whatever
    /// the busy timeout), which hundreds of watchers and the refresher
    /// writing together would hit.
    pub(crate) async fn write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// Connect to `url` and apply the backend's migrations.
    pub async fn open(url: &str) -> Result<Db, Error> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let url = match backend {
            Backend::Sqlite => {
                let path = url
                    .trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:");
                let path = path.split('?').next().unwrap_or(path);
                if let Some(dir) = Path::new(path)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                {
                    mailoauth::paths::ensure_private_dir(dir)?;
                }
                // Sealed tokens and API key digests: private whatever the umask
                // (SQLite gives its -wal and -shm files the database file's mode).
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| Error::io(format!("cannot create the database {path}"), e))?;
                // Busy waits instead of SQLITE_BUSY errors when the refresher and a
                // request write at once; WAL lets readers go on meanwhile.
                format!("sqlite://{path}?mode=rwc")
            }
            Backend::Postgres => url.to_owned(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 16,
            })
            // A request with the database down gets its 503 within this, not
            // after a long hang; a healthy pool hands out connections in µs.
            .acquire_timeout(Duration::from_secs(3))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        sqlx::query("PRAGMA busy_timeout = 5000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(db_err("connect"))?;
        let migrator = match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        migrator.run(&pool).await.map_err(|e| Error::Unreachable {
            what: "the database (migrations)".into(),
            detail: e.to_string(),
        })?;
        Ok(Db {
            pool,
            backend,
            wakes: Default::default(),
        })
    }

    /// Is the database answering?
    pub async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_err("ping"))?;
        Ok(())
    }

    /// How many data keys exist at all (any master key).
    pub async fn data_key_count(&self) -> Result<i64, Error> {
        let r = sqlx::query("SELECT COUNT(*) FROM data_keys")
            .fetch_one(&self.pool)
            .await
            .map_err(db_err("data keys"))?;
        Ok(r.get(0))
    }

    /// Store a new wrapped data key.
    pub async fn add_data_key(
        &self,
        id: &str,
        wrapped: &[u8],
        master_id: &str,
        now: i64,
    ) -> Result<(), Error> {
        sqlx::query("INSERT INTO data_keys (id, wrapped, master_id, created_at, active) VALUES ($1, $2, $3, $4, 1)")
            .bind(id)
            .bind(wrapped.to_vec())
            .bind(master_id)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db_err("data keys"))?;
        Ok(())
    }

    /// Insert a mailbox (no record yet).
    pub async fn add_mailbox(&self, m: &Mailbox) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO mailboxes (id, connector, email, kind, reference, state, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&m.id)
        .bind(&m.connector)
        .bind(&m.email)
        .bind(&m.kind)
        .bind(m.reference.clone())
        .bind(&m.state)
        .bind(m.created_at)
        .bind(m.updated_at)
        .execute(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => Error::Usage(format!(
                "the mailbox {} is already connected through `{}`",
                m.email, m.connector
            )),
            _ => db_err("mailboxes")(e),
        })?;
        Ok(())
    }

    /// One mailbox.
    pub async fn mailbox(&self, id: &str) -> Result<Option<Mailbox>, Error> {
        let row = sqlx::query(select_mailboxes("WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err("mailboxes"))?;
        Ok(row.as_ref().map(mailbox_of))
    }

    /// All mailboxes, oldest first.
    pub async fn mailboxes(&self) -> Result<Vec<Mailbox>, Error> {
        let rows = sqlx::query(select_mailboxes("ORDER BY created_at, id"))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("mailboxes"))?;
        Ok(rows.iter().map(mailbox_of).collect())
    }

    /// Every mailbox id (the sweep of other nodes' deletions from memory).
    pub async fn mailbox_ids(&self) -> Result<std::collections::HashSet<String>, Error> {
        let rows = sqlx::query("SELECT id FROM mailboxes")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("mailboxes"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Delete sign-ins that ran out and links expired over a week ago (until
    /// then an old link still says "expired" or "used" rather than "unknown").
    pub async fn purge_expired(&self, now: i64) -> Result<(), Error> {
        sqlx::query("DELETE FROM sign_ins WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db_err("sign-ins"))?;
        sqlx::query("DELETE FROM connect_links WHERE expires_at < $1")
            .bind(now - 7 * 86_400)
            .execute(&self.pool)
            .await
            .map_err(db_err("connect links"))?;
        Ok(())
    }

    /// Delete a mailbox; false when there was none.
    pub async fn delete_mailbox(&self, id: &str) -> Result<bool, Error> {
        let r = sqlx::query("DELETE FROM mailboxes WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db_err("mailboxes"))?;
        Ok(r.rows_affected() == 1)
    }

    /// The mailbox's sealed record and version (`None` record: not stored yet).
    pub async fn record(&self, id: &str) -> Result<(Option<SealedRecord>, i64), Error> {
        let row = sqlx::query("SELECT record_key, record, version FROM mailboxes WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err("records"))?;
        let Some(row) = row else {
            return Err(Error::Usage(format!("no mailbox {id}")));
        };
        let version: i64 = row.get(2);
        let key: Option<String> = row.get(0);
        let bytes: Option<Vec<u8>> = row.get(1);
        Ok((
            key.zip(bytes).map(|(key_id, bytes)| SealedRecord {
                key_id,
                bytes,
                version,
            }),
            version,
        ))
    }

    /// Write the record if the row's version is still `expected`; the new
    /// version, or `None` when another writer came first.
    pub async fn save_record_if(
        &self,
        id: &str,
        expected: i64,
        key_id: &str,
        bytes: &[u8],
        now: i64,
    ) -> Result<Option<i64>, Error> {
        let r = sqlx::query(
            "UPDATE mailboxes SET record_key = $1, record = $2, version = version + 1, updated_at = $3 \
             WHERE id = $4 AND version = $5",
        )
        .bind(key_id)
        .bind(bytes.to_vec())
        .bind(now)
        .bind(id)
        .bind(expected)
        .execute(&self.pool)
        .await
        .map_err(db_err("records"))?;
        Ok((r.rows_affected() == 1).then_some(expected + 1))
    }

    /// Remove the record (compare-and-swap not needed: a delete is final).
    pub async fn clear_record(&self, id: &str, now: i64) -> Result<(), Error> {
        sqlx::query(
            "UPDATE mailboxes SET record_key = NULL, record = NULL, version = version + 1, updated_at = $1 WHERE id = $2",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db_err("records"))?;
        Ok(())
    }

    /// Change the mailbox's state, with what the change does to its refresh
    /// schedule, and write the outbox rows `events(old)` makes for it — in one
    /// transaction, so an event is stored exactly when its change is. The
    /// update is a compare-and-swap on the old state (read in the
    /// transaction), retried when another node changed it in between, so
    /// every transition is seen by exactly one writer. `Ok(None)`: no mailbox.
    pub async fn change_state(
        &self,
        id: &str,
        change: &StateChange<'_>,
        now: i64,
        events: impl Fn(&Mailbox) -> Vec<OutboxEvent>,
    ) -> Result<Option<Mailbox>, Error> {
        let err = db_err("mailboxes");
        for _ in 0..5 {
            let mut tx = self.write().await.map_err(&err)?;
            let old = sqlx::query(select_mailboxes("WHERE id = $1"))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(&err)?;
            let Some(old) = old.as_ref().map(mailbox_of) else {
                return Ok(None);
            };
            let (refreshed, failed, reschedule) = match change.effect {
                Effect::SignedIn => (1i64, 0i64, 1i64),
                Effect::Refreshed => (1, 0, 0),
                Effect::Failed => (0, 1, 0),
                Effect::None => (0, 0, 0),
            };
            let r = sqlx::query(
                "UPDATE mailboxes SET state = $1, last_error = $2, updated_at = $3, \
                 refreshed_at = CASE WHEN $4 = 1 THEN $3 ELSE refreshed_at END, \
                 failures = CASE WHEN $5 = 1 THEN failures + 1 WHEN $4 = 1 THEN 0 ELSE failures END, \
                 next_refresh = CASE WHEN $6 = 1 THEN 0 ELSE next_refresh END \
                 WHERE id = $7 AND state = $8",
            )
            .bind(change.state)
            .bind(change.error.map(str::to_owned))
            .bind(now)
            .bind(refreshed)
            .bind(failed)
            .bind(reschedule)
            .bind(id)
            .bind(&old.state)
            .execute(&mut *tx)
            .await
            .map_err(&err)?;
            if r.rows_affected() != 1 {
                // Another node changed the state between our read and write.
                continue;
            }
            let evs = events(&old);
            self.insert_events(&mut tx, &evs, now).await?;
            self.commit_events(tx, &evs).await.map_err(&err)?;
            return Ok(Some(old));
        }
        Err(Error::Unreachable {
            what: "the database (mailboxes)".into(),
            detail: format!("the state of mailbox {id} kept changing; try again"),
        })
    }

    /// Mailboxes the refresher should look at: due by `now`, holding a record,
    /// not waiting for their owner to sign in again; the most urgent first.
    pub async fn due_mailboxes(&self, now: i64, limit: i64) -> Result<Vec<Mailbox>, Error> {
        let rows = sqlx::query(select_mailboxes(
            "WHERE next_refresh <= $1 \
             AND state <> 'login_required' AND record IS NOT NULL ORDER BY next_refresh LIMIT $2",
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("mailboxes"))?;
        Ok(rows.iter().map(mailbox_of).collect())
    }

    /// Move mailbox `id`'s next look from `seen` to `next`, if nobody moved it
    /// since we read `seen`: a refresher node claims a due mailbox this way
    /// (claiming it for a while; a node that dies lets the claim run out).
    pub async fn reschedule(&self, id: &str, seen: i64, next: i64) -> Result<bool, Error> {
        let r = sqlx::query(
            "UPDATE mailboxes SET next_refresh = $1 WHERE id = $2 AND next_refresh = $3",
        )
        .bind(next)
        .bind(id)
        .bind(seen)
        .execute(&self.pool)
        .await
        .map_err(db_err("mailboxes"))?;
        Ok(r.rows_affected() == 1)
    }

    /// Set when the refresher looks at mailbox `id` next (after a sign-in).
    pub async fn set_next_refresh(&self, id: &str, next: i64) -> Result<(), Error> {
        sqlx::query("UPDATE mailboxes SET next_refresh = $1 WHERE id = $2")
            .bind(next)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db_err("mailboxes"))?;
        if next <= mailoauth::clock::now() {
            self.wakes.refresh.notify_one();
        }
        Ok(())
    }

    /// Webhook deliveries due by `now` (not yet delivered, under `max_attempts`):
    /// of each (mailbox, URL) only the oldest pending one, so a receiver sees
    /// a mailbox's events in the order they happened, also after it was
    /// down (a given-up row no longer holds the rest back).
    pub async fn due_events(
        &self,
        now: i64,
        max_attempts: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>, Error> {
        let rows = sqlx::query(
            "SELECT id, url, kind, mailbox, body, attempts, next_attempt FROM events e \
             WHERE delivered_at IS NULL AND next_attempt <= $1 AND attempts < $2 \
             AND NOT EXISTS (SELECT 1 FROM events o WHERE o.mailbox = e.mailbox \
             AND o.url = e.url AND o.delivered_at IS NULL AND o.attempts < $2 AND o.seq < e.seq) \
             ORDER BY seq LIMIT $3",
        )
        .bind(now)
        .bind(max_attempts)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("events"))?;
        Ok(rows
            .iter()
            .map(|r| EventRow {
                id: r.get(0),
                url: r.get(1),
                kind: r.get(2),
                mailbox: r.get(3),
                body: r.get(4),
                attempts: r.get(5),
                next_attempt: r.get(6),
            })
            .collect())
    }

    /// Deliveries not yet made and not given up (for `/metrics`).
    pub async fn pending_events(&self, max_attempts: i64) -> Result<i64, Error> {
        let r =
            sqlx::query("SELECT COUNT(*) FROM events WHERE delivered_at IS NULL AND attempts < $1")
                .bind(max_attempts)
                .fetch_one(&self.pool)
                .await
                .map_err(db_err("events"))?;
        Ok(r.get::<i64, _>(0))
    }

    /// Claim a delivery (compare-and-swap on its `next_attempt`), so one node
    /// sends it; `until` is when another node may try if this one dies.
    pub async fn claim_event(&self, e: &EventRow, until: i64) -> Result<bool, Error> {
        let r = sqlx::query(
            "UPDATE events SET next_attempt = $1 WHERE id = $2 AND url = $3 AND next_attempt = $4 \
             AND delivered_at IS NULL",
        )
        .bind(until)
        .bind(&e.id)
        .bind(&e.url)
        .bind(e.next_attempt)
        .execute(&self.pool)
        .await
        .map_err(db_err("events"))?;
        Ok(r.rows_affected() == 1)
    }

    /// Record a delivery attempt: delivered at `now`, or failed with `error`
    /// and next tried at `retry_at`.
    pub async fn event_attempted(
        &self,
        e: &EventRow,
        now: i64,
        outcome: Result<(), (&str, i64)>,
    ) -> Result<(), Error> {
        let (delivered, error, next) = match outcome {
            Ok(()) => (Some(now), None, e.next_attempt),
            Err((error, retry_at)) => (None, Some(error.to_owned()), retry_at),
        };
        sqlx::query(
            "UPDATE events SET attempts = attempts + 1, delivered_at = $1, last_error = $2, \
             next_attempt = $3 WHERE id = $4 AND url = $5",
        )
        .bind(delivered)
        .bind(error)
        .bind(next)
        .bind(&e.id)
        .bind(&e.url)
        .execute(&self.pool)
        .await
        .map_err(db_err("events"))?;
        Ok(())
    }

    /// Take (or extend) the refresh lease of mailbox `id` for `owner` until
    /// `until`, if it is free, expired or already `owner`'s.
    pub async fn try_lease(
        &self,
        id: &str,
        owner: &str,
        until: i64,
        now: i64,
    ) -> Result<bool, Error> {
        let r = sqlx::query(
            "UPDATE mailboxes SET lease_owner = $1, lease_until = $2 \
             WHERE id = $3 AND (lease_owner IS NULL OR lease_until < $4 OR lease_owner = $1)",
        )
        .bind(owner)
        .bind(until)
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_err("leases"))?;
        Ok(r.rows_affected() == 1)
    }

    /// Release the lease if `owner` still holds it (an expired lease taken over
    /// by another node stays theirs).
    pub async fn release_lease(&self, id: &str, owner: &str) -> Result<(), Error> {
        sqlx::query("UPDATE mailboxes SET lease_owner = NULL, lease_until = 0 WHERE id = $1 AND lease_owner = $2")
            .bind(id)
            .bind(owner)
            .execute(&self.pool)
            .await
            .map_err(db_err("leases"))?;
        Ok(())
    }

    /// Store a new API key.
    pub async fn add_api_key(&self, k: &ApiKeyRow, now: i64) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO api_keys (id, digest, name, scopes, mailboxes, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&k.id)
        .bind(&k.digest)
        .bind(&k.name)
        .bind(&k.scopes)
        .bind(&k.mailboxes)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_err("api keys"))?;
        Ok(())
    }

    /// All API keys (revoked ones included).
    pub async fn api_keys(&self) -> Result<Vec<ApiKeyRow>, Error> {
        let rows = sqlx::query("SELECT id, digest, name, scopes, mailboxes, revoked_at FROM api_keys ORDER BY created_at")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("api keys"))?;
        Ok(rows.iter().map(key_of).collect())
    }

    /// Store a connect link.
    pub async fn add_link(&self, l: &ConnectLink, now: i64) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO connect_links (id, digest, connector, email, return_url, reference, mailbox_id, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&l.id)
        .bind(&l.digest)
        .bind(&l.connector)
        .bind(&l.email)
        .bind(l.return_url.clone())
        .bind(l.reference.clone())
        .bind(l.mailbox_id.clone())
        .bind(now)
        .bind(l.expires_at)
        .execute(&self.pool)
        .await
        .map_err(db_err("connect links"))?;
        Ok(())
    }

    /// The connect link whose secret has this digest, or with this id.
    pub async fn link(&self, digest_or_id: &str) -> Result<Option<ConnectLink>, Error> {
        let row = sqlx::query(
            "SELECT id, digest, connector, email, return_url, reference, mailbox_id, expires_at, used_at \
             FROM connect_links WHERE digest = $1 OR id = $1",
        )
        .bind(digest_or_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err("connect links"))?;
        Ok(row.map(|r| ConnectLink {
            id: r.get(0),
            digest: r.get(1),
            connector: r.get(2),
            email: r.get(3),
            return_url: r.get(4),
            reference: r.get(5),
            mailbox_id: r.get(6),
            expires_at: r.get(7),
            used_at: r.get(8),
        }))
    }

    /// Use the link up (once): false when it was used already.
    pub async fn use_link(&self, id: &str, mailbox_id: &str, now: i64) -> Result<bool, Error> {
        let r = sqlx::query(
            "UPDATE connect_links SET used_at = $1, mailbox_id = $2 WHERE id = $3 AND used_at IS NULL",
        )
        .bind(now)
        .bind(mailbox_id)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db_err("connect links"))?;
        Ok(r.rows_affected() == 1)
    }

    /// Remember a sign-in in progress (its sealed pending state).
    pub async fn add_sign_in(
        &self,
        state: &str,
        link_id: &str,
        key_id: &str,
        pending: &[u8],
        expires_at: i64,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO sign_ins (state, link_id, key_id, pending, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(state)
        .bind(link_id)
        .bind(key_id)
        .bind(pending.to_vec())
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(db_err("sign-ins"))?;
        Ok(())
    }

    /// Take the sign-in of `state` (deleted as it is read: a replayed callback
    /// finds nothing): (link id, key id, sealed pending, expiry).
    pub async fn take_sign_in(
        &self,
        state: &str,
    ) -> Result<Option<(String, String, Vec<u8>, i64)>, Error> {
        let row = sqlx::query(
            "SELECT link_id, key_id, pending, expires_at FROM sign_ins WHERE state = $1",
        )
        .bind(state)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err("sign-ins"))?;
        let Some(row) = row else { return Ok(None) };
        let r = sqlx::query("DELETE FROM sign_ins WHERE state = $1")
            .bind(state)
            .execute(&self.pool)
            .await
            .map_err(db_err("sign-ins"))?;
        // Two nodes reading the same callback at once: only the one that deleted it goes on.
        Ok((r.rows_affected() == 1).then(|| (row.get(0), row.get(1), row.get(2), row.get(3))))
    }

    /// The mailbox connected through `connector` for `email`, if any.
    pub async fn mailbox_by_email(
        &self,
        connector: &str,
        email: &str,
    ) -> Result<Option<Mailbox>, Error> {
        let row = sqlx::query(select_mailboxes("WHERE connector = $1 AND email = $2"))
            .bind(connector)
            .bind(email)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err("mailboxes"))?;
        Ok(row.as_ref().map(mailbox_of))
    }

    /// The API key with this digest.
    pub async fn api_key(&self, digest: &str) -> Result<Option<ApiKeyRow>, Error> {
        let row = sqlx::query(
            "SELECT id, digest, name, scopes, mailboxes, revoked_at FROM api_keys WHERE digest = $1",
        )
        .bind(digest)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err("api keys"))?;
        Ok(row.as_ref().map(key_of))
    }

    /// Revoke the key `id` at `now` and end its admin sessions; whether a
    /// live key was revoked.
    pub async fn revoke_api_key(&self, id: &str, now: i64) -> Result<bool, Error> {
        let r =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(db_err("api keys"))?;
        sqlx::query("DELETE FROM admin_sessions WHERE key_id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db_err("admin sessions"))?;
        Ok(r.rows_affected() == 1)
    }

    /// Store an admin session (by the digest of its id) for key `key_id`.
    pub async fn add_admin_session(
        &self,
        digest: &str,
        key_id: &str,
        expires_at: i64,
    ) -> Result<(), Error> {
        sqlx::query("INSERT INTO admin_sessions (digest, key_id, expires_at) VALUES ($1, $2, $3)")
            .bind(digest)
            .bind(key_id)
            .bind(expires_at)
            .execute(&self.pool)
            .await
            .map_err(db_err("admin sessions"))?;
        Ok(())
    }

    /// The key id of the live session with this digest, if its key is live too.
    pub async fn admin_session(&self, digest: &str, now: i64) -> Result<Option<String>, Error> {
        let row = sqlx::query(
            "SELECT s.key_id FROM admin_sessions s JOIN api_keys k ON k.id = s.key_id \
             WHERE s.digest = $1 AND s.expires_at > $2 AND k.revoked_at IS NULL",
        )
        .bind(digest)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err("admin sessions"))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// End the session with this digest.
    pub async fn end_admin_session(&self, digest: &str) -> Result<(), Error> {
        sqlx::query("DELETE FROM admin_sessions WHERE digest = $1")
            .bind(digest)
            .execute(&self.pool)
            .await
            .map_err(db_err("admin sessions"))?;
        Ok(())
    }

    /// How many admin sessions are live at `now` (expired ones are deleted).
    pub async fn admin_session_count(&self, now: i64) -> Result<i64, Error> {
        sqlx::query("DELETE FROM admin_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db_err("admin sessions"))?;
        let r = sqlx::query("SELECT COUNT(*) FROM admin_sessions")
            .fetch_one(&self.pool)
            .await
            .map_err(db_err("admin sessions"))?;
        Ok(r.get::<i64, _>(0))
    }

    /// Write a batch of audit entries in one transaction.
    pub async fn add_audit(&self, entries: &[AuditEntry]) -> Result<(), Error> {
        let mut tx = self.write().await.map_err(db_err("audit"))?;
        for e in entries {
            sqlx::query(
                "INSERT INTO audit (at, key_id, mailbox, action, count) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(e.at)
            .bind(&e.key_id)
            .bind(&e.mailbox)
            .bind(&e.action)
            .bind(e.count)
                .execute(&mut *tx)
                .await
                .map_err(db_err("audit"))?;
        }
        tx.commit().await.map_err(db_err("audit"))?;
        Ok(())
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn audit(&self, limit: i64) -> Result<Vec<AuditEntry>, Error> {
        let rows = sqlx::query(
            "SELECT at, key_id, mailbox, action, count FROM audit ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("audit"))?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                at: r.get(0),
                key_id: r.get(1),
                mailbox: r.get(2),
                action: r.get(3),
                count: r.get(4),
            })
            .collect())
    }

    /// Every data key, active and retired, oldest first (the newest active
    /// one seals new rows; retired ones still open old rows).
    pub async fn all_data_keys(&self) -> Result<Vec<DataKeyRow>, Error> {
        let rows = sqlx::query(
            "SELECT id, wrapped, master_id, created_at, active FROM data_keys ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("data keys"))?;
        Ok(rows
            .iter()
            .map(|r| DataKeyRow {
                id: r.get(0),
                wrapped: r.get(1),
                master_id: r.get(2),
                created_at: r.get(3),
                active: r.get::<i64, _>(4) != 0,
            })
            .collect())
    }

    /// The id of the newest active data key.
    pub async fn current_data_key(&self) -> Result<Option<String>, Error> {
        let row = sqlx::query(
            "SELECT id FROM data_keys WHERE active = 1 ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err("data keys"))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Replace the wrapping of every listed data key in one transaction, each
    /// only if it is still wrapped under `old_master`; all or nothing.
    pub async fn rewrap_data_keys(
        &self,
        keys: &[(String, Vec<u8>)],
        old_master: &str,
        new_master: &str,
    ) -> Result<(), Error> {
        let mut tx = self.write().await.map_err(db_err("data keys"))?;
        for (id, wrapped) in keys {
            let r = sqlx::query(
                "UPDATE data_keys SET wrapped = $1, master_id = $2 WHERE id = $3 AND master_id = $4",
            )
            .bind(wrapped.clone())
            .bind(new_master)
            .bind(id)
            .bind(old_master)
            .execute(&mut *tx)
            .await
            .map_err(db_err("data keys"))?;
            if r.rows_affected() != 1 {
                // Dropping the transaction rolls it back.
                return Err(Error::Usage(format!(
                    "data key {id} changed while being re-wrapped (another rotate-key?); nothing was \
                     changed: run rotate-key again"
                )));
            }
        }
        let n = sqlx::query("SELECT COUNT(*) FROM data_keys WHERE master_id <> $1")
            .bind(new_master)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err("data keys"))?;
        if n.get::<i64, _>(0) != 0 {
            return Err(Error::Usage(
                "a data key was added while re-wrapping (reencrypt running?); nothing was changed: run \
                 rotate-key again"
                    .into(),
            ));
        }
        tx.commit().await.map_err(db_err("data keys"))?;
        Ok(())
    }

    /// Ids of the mailboxes whose record is sealed under another data key
    /// than `key_id`.
    pub async fn records_not_under(&self, key_id: &str) -> Result<Vec<String>, Error> {
        let rows = sqlx::query(
            "SELECT id FROM mailboxes WHERE record IS NOT NULL AND record_key <> $1 ORDER BY id",
        )
        .bind(key_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("records"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Pending sign-ins sealed under another data key than `key_id`:
    /// (state, key id, sealed pending).
    pub async fn sign_ins_not_under(
        &self,
        key_id: &str,
    ) -> Result<Vec<(String, String, Vec<u8>)>, Error> {
        let rows = sqlx::query(
            "SELECT state, key_id, pending FROM sign_ins WHERE key_id <> $1 ORDER BY state",
        )
        .bind(key_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("sign-ins"))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Replace a pending sign-in's sealing if it is still under `old_key`
    /// (false: finished meanwhile).
    pub async fn reseal_sign_in(
        &self,
        state: &str,
        old_key: &str,
        new_key: &str,
        pending: &[u8],
    ) -> Result<bool, Error> {
        let r = sqlx::query(
            "UPDATE sign_ins SET key_id = $1, pending = $2 WHERE state = $3 AND key_id = $4",
        )
        .bind(new_key)
        .bind(pending.to_vec())
        .bind(state)
        .bind(old_key)
        .execute(&self.pool)
        .await
        .map_err(db_err("sign-ins"))?;
        Ok(r.rows_affected() == 1)
    }

    /// Retire every data key but `keep` (they stay, to open rows a node sealed
    /// before it noticed the new key); how many were retired.
    pub async fn retire_data_keys(&self, keep: &str) -> Result<u64, Error> {
        let r = sqlx::query("UPDATE data_keys SET active = 0 WHERE id <> $1 AND active = 1")
            .bind(keep)
            .execute(&self.pool)
            .await
            .map_err(db_err("data keys"))?;
        Ok(r.rows_affected())
    }

    // ops: the mailboxes-by-state gauge of /metrics (src/metrics.rs).
    /// How many mailboxes are in each state: (state, count).
    pub async fn mailbox_states(&self) -> Result<Vec<(String, i64)>, Error> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM mailboxes GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("mailboxes"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
