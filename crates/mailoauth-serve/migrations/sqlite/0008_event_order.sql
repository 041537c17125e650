-- Deliveries in order per mailbox and URL: each event row gets a sequence
-- number from the database, and only the oldest undelivered row of a
-- (mailbox, url) pair is due. SQLite cannot add such a column in place, so
-- the table is copied (existing rows keep their order of insertion).
CREATE TABLE events_new (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    url TEXT NOT NULL,
    kind TEXT NOT NULL,
    mailbox TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt BIGINT NOT NULL,
    delivered_at BIGINT,
    last_error TEXT,
    UNIQUE (id, url)
);
INSERT INTO events_new (id, url, kind, mailbox, body, created_at, attempts, next_attempt, delivered_at, last_error)
    SELECT id, url, kind, mailbox, body, created_at, attempts, next_attempt, delivered_at, last_error
    FROM events ORDER BY rowid;
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
CREATE INDEX events_due ON events (delivered_at, next_attempt);
CREATE INDEX events_pending ON events (mailbox, url, seq) WHERE delivered_at IS NULL;
