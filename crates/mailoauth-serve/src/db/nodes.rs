//! The `nodes` table and the heartbeat's one look at the whole database.
//!
//! Owns: writing a node's heartbeat, counting the live nodes, and in the same
//! statement what a sleeping node must learn from its peers' writes: whether
//! the API key table changed, and when the next outbox message, webhook
//! delivery and token refresh fall due. That one read per beat is what lets
//! the sender, deliverer and refresher sleep until woken instead of polling
//! each second. Must not: claim or do any of that work (their owners do, by
//! compare-and-swap).

use sqlx::Row;

use mailoauth::Error;

use super::{Db, db_err};

/// What rouses this node's background workers: rung by the writes of this
/// node that make work due now, and by the heartbeat when the database says
/// work is due (written by a peer, a retry whose time came, a claim that ran
/// out). Between those the workers sleep.
#[derive(Default)]
pub struct Wakes {
    /// The webhook deliverer: event rows were written or fell due.
    pub events: tokio::sync::Notify,
    /// The outbox sender: a message was accepted or fell due.
    pub messages: tokio::sync::Notify,
    /// The refresher: a mailbox is due for a look.
    pub refresh: tokio::sync::Notify,
}

/// The longest a worker sleeps with nothing due: the rings above wake it;
/// this only bounds a ring lost to a bug (at most a minute late).
const IDLE: std::time::Duration = std::time::Duration::from_secs(60);

impl Wakes {
    /// Sleep until `n` (one of these) is rung, or [`IDLE`] at most.
    pub async fn sleep(n: &tokio::sync::Notify) {
        let _ = tokio::time::timeout(IDLE, n.notified()).await;
    }

    /// Rouse the workers whose next work is due by `now` by `beat`.
    pub fn due(&self, beat: &Beat, now: i64) {
        let due = |t: Option<i64>| t.is_some_and(|t| t <= now);
        if due(beat.message_due) {
            self.messages.notify_one();
        }
        if due(beat.refresh_due) {
            self.refresh.notify_one();
        }
        if due(beat.event_due) {
            self.events.notify_one();
        }
    }
}

/// What one heartbeat learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    /// Nodes that beat within the live window, this one included.
    pub nodes: i64,
    /// Changes whenever an API key is made or revoked (rows are never
    /// deleted): (keys, revoked keys).
    pub keys: (i64, i64),
    /// The earliest `next_attempt` of a queued outbox message.
    pub message_due: Option<i64>,
    /// The earliest `next_refresh` of a mailbox the refresher may renew.
    pub refresh_due: Option<i64>,
    /// The earliest `next_attempt` of a webhook delivery not given up.
    pub event_due: Option<i64>,
}

impl Db {
    /// This node's workers' wake-ups.
    pub fn wakes(&self) -> &Wakes {
        &self.wakes
    }

    /// Write this node's heartbeat at `now`; count the nodes seen since
    /// `since` and read the due times (deliveries with `max_attempts` or more
    /// attempts are given up and do not count).
    pub async fn heartbeat(
        &self,
        node: &str,
        now: i64,
        since: i64,
        max_attempts: i64,
    ) -> Result<Beat, Error> {
        let err = db_err("nodes");
        sqlx::query(
            "INSERT INTO nodes (id, started_at, seen_at) VALUES ($1, $2, $2) \
             ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
        )
        .bind(node)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(&err)?;
        // Each MIN is answered from an index (messages_due, events_due,
        // mailboxes_next_refresh) without reading the rows it skips.
        let r = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM nodes WHERE seen_at >= $1), \
             (SELECT COUNT(*) FROM api_keys), \
             (SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NOT NULL), \
             (SELECT MIN(next_attempt) FROM messages WHERE state = 'queued'), \
             (SELECT MIN(next_refresh) FROM mailboxes \
              WHERE state <> 'login_required' AND record IS NOT NULL), \
             (SELECT MIN(next_attempt) FROM events WHERE delivered_at IS NULL AND attempts < $2)",
        )
        .bind(since)
        .bind(max_attempts)
        .fetch_one(&self.pool)
        .await
        .map_err(&err)?;
        Ok(Beat {
            nodes: r.try_get(0).map_err(&err)?,
            keys: (r.try_get(1).map_err(&err)?, r.try_get(2).map_err(&err)?),
            message_due: r.try_get(3).map_err(&err)?,
            refresh_due: r.try_get(4).map_err(&err)?,
            event_due: r.try_get(5).map_err(&err)?,
        })
    }

    /// Commit `tx`, which wrote `events`, and rouse this node's deliverer
    /// for them.
    pub(crate) async fn commit_events(
        &self,
        tx: sqlx::Transaction<'static, sqlx::Any>,
        events: &[super::OutboxEvent],
    ) -> Result<(), sqlx::Error> {
        tx.commit().await?;
        if !events.is_empty() {
            self.wakes.events.notify_one();
        }
        Ok(())
    }

    /// Forget nodes that have not beaten since `before` (history, not peers).
    pub async fn forget_nodes(&self, before: i64) -> Result<(), Error> {
        sqlx::query("DELETE FROM nodes WHERE seen_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(db_err("nodes"))?;
        Ok(())
    }
}
