//! The outbox of mail to send: the `messages` table.
//!
//! Owns: the queries of the send path — accepting a message (durable before
//! the API answers), the idempotency lookup, claiming due messages between
//! nodes by compare-and-swap on `next_attempt`, and recording each outcome
//! with its event rows in one transaction. Must not: decide what is transient
//! or permanent (the sender does), or touch the network.

use sqlx::Row;
use sqlx::any::AnyRow;

use mailoauth::Error;

use super::{Db, OutboxEvent, db_err};

/// A message as accepted into the outbox.
pub struct NewMessage {
    /// `msg_…`, random.
    pub id: String,
    /// The mailbox it is sent from.
    pub mailbox: String,
    /// The client's `Idempotency-Key`, if it sent one.
    pub idempotency_key: Option<String>,
    /// SHA-256 (hex) of the request, to tell a retry from another request.
    pub digest: String,
    /// `MAIL FROM`.
    pub envelope_from: String,
    /// `RCPT TO`, each.
    pub recipients: Vec<String>,
    /// The message as it is sent (CRLF, without Bcc).
    pub data: Vec<u8>,
}

/// A message's state, as `GET …/outbox/{msg}` shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct MessageState {
    /// The message id.
    pub id: String,
    /// The mailbox id.
    pub mailbox: String,
    /// `queued`, `sent` or `failed`.
    pub state: String,
    /// `smtp` or `graph`, once sent (or while a fallback is chosen).
    pub via: Option<String>,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// The envelope recipients.
    pub recipients: Vec<String>,
    /// Bytes as sent.
    pub size: i64,
    /// The last failure (a transient one while queued; the cause when failed).
    pub error: Option<String>,
    /// What to do about a failure.
    pub fix: Option<String>,
    /// The server's final answer when sent.
    pub reply: Option<String>,
    /// When it was accepted (Unix seconds).
    pub created_at: i64,
    /// When it was sent or given up.
    pub finished_at: Option<i64>,
    /// The idempotency key it was accepted with.
    pub idempotency_key: Option<String>,
    /// When the next attempt is due (queued only).
    #[serde(skip)]
    pub next_attempt: i64,
    /// The request digest (idempotency checks).
    #[serde(skip)]
    pub digest: String,
}

/// A queued message a sender may claim.
#[derive(Debug, Clone)]
pub struct DueMessage {
    /// Message id.
    pub id: String,
    /// Mailbox id.
    pub mailbox: String,
    /// Its `next_attempt` when read (the claim compares it).
    pub next_attempt: i64,
    /// Attempts so far.
    pub attempts: i64,
}

/// A claimed message, with what is needed to send it.
pub struct Outgoing {
    /// Message id.
    pub id: String,
    /// Mailbox id.
    pub mailbox: String,
    /// `MAIL FROM`.
    pub from: String,
    /// `RCPT TO`.
    pub recipients: Vec<String>,
    /// The bytes.
    pub data: Vec<u8>,
    /// Attempts before this one.
    pub attempts: i64,
}

/// How an attempt ended, as the outbox records it.
pub enum Attempt<'a> {
    /// Delivered: by which path, the server's answer.
    Sent {
        /// `smtp` or `graph`.
        via: &'a str,
        /// The final reply.
        reply: &'a str,
    },
    /// Given up: the cause and the fix.
    Failed {
        /// What went wrong.
        error: &'a str,
        /// What to do.
        fix: Option<&'a str>,
    },
    /// Try again at `at`.
    Retry {
        /// What went wrong this time.
        error: &'a str,
        /// When to try next.
        at: i64,
    },
    /// Not tried (its connection ended first): due again now, no attempt counted.
    Release,
}

const STATE_COLUMNS: &str = "id, mailbox, state, via, attempts, recipients, size, last_error, fix, \
                             reply, created_at, finished_at, idempotency_key, next_attempt, digest";

fn state_of(r: &AnyRow) -> MessageState {
    let recipients: String = r.get(5);
    MessageState {
        id: r.get(0),
        mailbox: r.get(1),
        state: r.get(2),
        via: r.get(3),
        attempts: r.get(4),
        recipients: serde_json::from_str(&recipients).unwrap_or_default(),
        size: r.get(6),
        error: r.get(7),
        fix: r.get(8),
        reply: r.get(9),
        created_at: r.get(10),
        finished_at: r.get(11),
        idempotency_key: r.get(12),
        next_attempt: r.get(13),
        digest: r.get(14),
    }
}

fn due_of(r: &AnyRow) -> DueMessage {
    DueMessage {
        id: r.get(0),
        mailbox: r.get(1),
        next_attempt: r.get(2),
        attempts: r.get(3),
    }
}

impl Db {
    /// Accept `m` into the outbox, due at once. `Ok(None)`: stored;
    /// `Ok(Some(existing))`: the mailbox already has a message under this
    /// idempotency key (the caller compares digests).
    pub async fn add_message(
        &self,
        m: &NewMessage,
        now: i64,
    ) -> Result<Option<MessageState>, Error> {
        let r = sqlx::query(
            "INSERT INTO messages (id, mailbox, idempotency_key, digest, envelope_from, recipients, \
             data, size, state, next_attempt, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', $9, $9)",
        )
        .bind(&m.id)
        .bind(&m.mailbox)
        .bind(&m.idempotency_key)
        .bind(&m.digest)
        .bind(&m.envelope_from)
        .bind(serde_json::to_string(&m.recipients).unwrap_or_default())
        .bind(&m.data)
        .bind(m.data.len() as i64)
        .bind(now)
        .execute(&self.pool)
        .await;
        match r {
            Ok(_) => {
                self.wakes.messages.notify_one();
                Ok(None)
            }
            Err(e) => {
                // A unique violation on the key: a retry, or a race with one.
                if let Some(key) = &m.idempotency_key
                    && let Some(existing) = self.message_by_key(&m.mailbox, key).await?
                {
                    return Ok(Some(existing));
                }
                Err(db_err("messages")(e))
            }
        }
    }

    /// The message the mailbox accepted under `key`.
    pub async fn message_by_key(
        &self,
        mailbox: &str,
        key: &str,
    ) -> Result<Option<MessageState>, Error> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {STATE_COLUMNS} FROM messages WHERE mailbox = $1 AND idempotency_key = $2"
        )))
        .bind(mailbox)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err("messages"))?;
        Ok(r.as_ref().map(state_of))
    }

    /// Message `id` of `mailbox`, without its bytes.
    pub async fn message(&self, mailbox: &str, id: &str) -> Result<Option<MessageState>, Error> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {STATE_COLUMNS} FROM messages WHERE mailbox = $1 AND id = $2"
        )))
        .bind(mailbox)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err("messages"))?;
        Ok(r.as_ref().map(state_of))
    }

    /// Queued messages due by `now`, oldest first.
    pub async fn due_messages(&self, now: i64, limit: i64) -> Result<Vec<DueMessage>, Error> {
        let rows = sqlx::query(
            "SELECT id, mailbox, next_attempt, attempts FROM messages \
             WHERE state = 'queued' AND next_attempt <= $1 ORDER BY created_at, id LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("messages"))?;
        Ok(rows.iter().map(due_of).collect())
    }

    /// Queued messages of `mailbox` due by `now`, oldest first (an open
    /// connection of the mailbox takes them on).
    pub async fn due_messages_of(
        &self,
        mailbox: &str,
        now: i64,
        limit: i64,
    ) -> Result<Vec<DueMessage>, Error> {
        let rows = sqlx::query(
            "SELECT id, mailbox, next_attempt, attempts FROM messages \
             WHERE state = 'queued' AND next_attempt <= $1 AND mailbox = $2 \
             ORDER BY created_at, id LIMIT $3",
        )
        .bind(now)
        .bind(mailbox)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("messages"))?;
        Ok(rows.iter().map(due_of).collect())
    }

    /// Claim `m` until `until` (another node may try after), and read what to
    /// send; `None` when another node claimed or finished it first.
    pub async fn claim_message(
        &self,
        m: &DueMessage,
        until: i64,
    ) -> Result<Option<Outgoing>, Error> {
        let err = db_err("messages");
        let r = sqlx::query(
            "UPDATE messages SET next_attempt = $1 WHERE id = $2 AND next_attempt = $3 \
             AND state = 'queued'",
        )
        .bind(until)
        .bind(&m.id)
        .bind(m.next_attempt)
        .execute(&self.pool)
        .await
        .map_err(&err)?;
        if r.rows_affected() != 1 {
            return Ok(None);
        }
        let r = sqlx::query(
            "SELECT id, mailbox, envelope_from, recipients, data, attempts FROM messages WHERE id = $1",
        )
        .bind(&m.id)
        .fetch_one(&self.pool)
        .await
        .map_err(&err)?;
        let recipients: String = r.get(3);
        Ok(Some(Outgoing {
            id: r.get(0),
            mailbox: r.get(1),
            from: r.get(2),
            recipients: serde_json::from_str(&recipients).unwrap_or_default(),
            data: r.get(4),
            attempts: r.get(5),
        }))
    }

    /// Record an attempt on message `id`, and its event rows, in one
    /// transaction (an event exists exactly when its outcome does).
    pub async fn message_attempted(
        &self,
        id: &str,
        attempt: Attempt<'_>,
        events: &[OutboxEvent],
        now: i64,
    ) -> Result<(), Error> {
        let err = db_err("messages");
        let mut tx = self.write().await.map_err(&err)?;
        let q = match attempt {
            Attempt::Sent { via, reply } => sqlx::query(
                "UPDATE messages SET state = 'sent', via = $1, reply = $2, attempts = attempts + 1, \
                 finished_at = $3, last_error = NULL, fix = NULL WHERE id = $4",
            )
            .bind(via.to_owned())
            .bind(reply.to_owned())
            .bind(now)
            .bind(id.to_owned()),
            Attempt::Failed { error, fix } => sqlx::query(
                "UPDATE messages SET state = 'failed', last_error = $1, fix = $2, \
                 attempts = attempts + 1, finished_at = $3 WHERE id = $4",
            )
            .bind(error.to_owned())
            .bind(fix.map(str::to_owned))
            .bind(now)
            .bind(id.to_owned()),
            Attempt::Retry { error, at } => sqlx::query(
                "UPDATE messages SET last_error = $1, attempts = attempts + 1, next_attempt = $2 \
                 WHERE id = $3 AND state = 'queued'",
            )
            .bind(error.to_owned())
            .bind(at)
            .bind(id.to_owned()),
            Attempt::Release => sqlx::query(
                "UPDATE messages SET next_attempt = $1 WHERE id = $2 AND state = 'queued'",
            )
            .bind(now)
            .bind(id.to_owned()),
        };
        q.execute(&mut *tx).await.map_err(&err)?;
        self.insert_events(&mut tx, events, now).await?;
        self.commit_events(tx, events).await.map_err(&err)?;
        Ok(())
    }

    /// Messages by state, for `/metrics` and the benchmarks.
    pub async fn message_states(&self) -> Result<Vec<(String, i64)>, Error> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM messages GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err("messages"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
