//! The receive side's tables: `watchers` (which node watches a mailbox, by
//! lease) and `watch_cursors` (where each watched folder stands).
//!
//! Owns: creating a watcher row per mailbox of a watching connector, claiming
//! free or expired ones by compare-and-swap, renewing all of a node's leases
//! in one statement (which also tells the node which it still holds), and
//! moving a folder's cursor in the same transaction as the `message.new`
//! event rows it passes — never backwards. Must not: talk IMAP or decide
//! what a message's event says (the watcher does).

use sqlx::Row;

use mailoauth::Error;
use mailoauth::mail::watch::Cursor;

use super::{Db, OutboxEvent, db_err};

impl Db {
    /// Make sure every mailbox of `connector` has a watcher row, and drop the
    /// rows (and cursors) of mailboxes that are gone.
    pub async fn ensure_watchers(&self, connectors: &[String]) -> Result<(), Error> {
        let err = db_err("watchers");
        for c in connectors {
            sqlx::query(
                "INSERT INTO watchers (mailbox) SELECT id FROM mailboxes WHERE connector = $1 \
                 ON CONFLICT (mailbox) DO NOTHING",
            )
            .bind(c)
            .execute(&self.pool)
            .await
            .map_err(&err)?;
        }
        for q in [
            "DELETE FROM watchers WHERE mailbox NOT IN (SELECT id FROM mailboxes)",
            "DELETE FROM watch_cursors WHERE mailbox NOT IN (SELECT id FROM mailboxes)",
        ] {
            sqlx::query(q).execute(&self.pool).await.map_err(&err)?;
        }
        Ok(())
    }

    /// Take up to `limit` watchers that nobody holds (or whose lease ran out)
    /// of mailboxes that can be watched (`ok`, `degraded`), until `until`.
    /// One statement, so a thousand free watchers cost one commit; the
    /// outer condition is checked again on each row, so two nodes claiming
    /// at once never both get one.
    pub async fn claim_watchers(
        &self,
        owner: &str,
        now: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<String>, Error> {
        let rows = sqlx::query(
            "UPDATE watchers SET owner = $1, lease_until = $2 \
             WHERE (owner IS NULL OR lease_until < $3) AND mailbox IN ( \
             SELECT w.mailbox FROM watchers w JOIN mailboxes m ON m.id = w.mailbox \
             WHERE (w.owner IS NULL OR w.lease_until < $3) AND m.state IN ('ok', 'degraded') \
             ORDER BY w.mailbox LIMIT $4) RETURNING mailbox",
        )
        .bind(owner)
        .bind(until)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err("watchers"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Extend every lease `owner` holds to `until`: the mailboxes it still holds.
    pub async fn renew_watchers(&self, owner: &str, until: i64) -> Result<Vec<String>, Error> {
        let rows =
            sqlx::query("UPDATE watchers SET lease_until = $1 WHERE owner = $2 RETURNING mailbox")
                .bind(until)
                .bind(owner)
                .fetch_all(&self.pool)
                .await
                .map_err(db_err("watchers"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Let go of a mailbox's watcher (if `owner` still holds it).
    pub async fn release_watcher(&self, mailbox: &str, owner: &str) -> Result<(), Error> {
        sqlx::query(
            "UPDATE watchers SET owner = NULL, lease_until = 0 WHERE mailbox = $1 AND owner = $2",
        )
        .bind(mailbox)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(db_err("watchers"))?;
        Ok(())
    }

    /// A folder's cursor, if it was ever looked at.
    pub async fn cursor(&self, mailbox: &str, folder: &str) -> Result<Option<Cursor>, Error> {
        let row = sqlx::query(
            "SELECT uidvalidity, last_uid, modseq FROM watch_cursors WHERE mailbox = $1 AND folder = $2",
        )
        .bind(mailbox)
        .bind(folder)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err("watch_cursors"))?;
        Ok(row.map(|r| Cursor {
            uidvalidity: r.get::<i64, _>(0) as u32,
            last_uid: r.get::<i64, _>(1) as u32,
            modseq: r.get::<Option<i64>, _>(2).map(|m| m as u64),
        }))
    }

    /// Write `events` and move the folder's cursor to `c`, together. A cursor
    /// never moves back under the same UIDVALIDITY (a node that lost its
    /// lease and writes late cannot undo its successor's progress).
    pub async fn advance_cursor(
        &self,
        mailbox: &str,
        folder: &str,
        c: Cursor,
        events: &[OutboxEvent],
        now: i64,
    ) -> Result<(), Error> {
        let err = db_err("watch_cursors");
        let mut tx = self.write().await.map_err(&err)?;
        self.insert_events(&mut tx, events, now).await?;
        sqlx::query(
            "INSERT INTO watch_cursors (mailbox, folder, uidvalidity, last_uid, modseq, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (mailbox, folder) DO UPDATE SET \
             uidvalidity = excluded.uidvalidity, last_uid = excluded.last_uid, \
             modseq = excluded.modseq, updated_at = excluded.updated_at \
             WHERE watch_cursors.uidvalidity <> excluded.uidvalidity \
             OR watch_cursors.last_uid <= excluded.last_uid",
        )
        .bind(mailbox)
        .bind(folder)
        .bind(i64::from(c.uidvalidity))
        .bind(i64::from(c.last_uid))
        .bind(c.modseq.map(|m| m as i64))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(&err)?;
        self.commit_events(tx, events).await.map_err(&err)?;
        Ok(())
    }
}
