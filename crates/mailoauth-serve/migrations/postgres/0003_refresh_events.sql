-- The background refresher's schedule: when each mailbox is next looked at
-- (claimed by compare-and-swap on this column, so nodes share the work), when
-- its token was last refreshed (the weekly keep-alive counts from it), and its
-- consecutive transient failures (the backoff).
ALTER TABLE mailboxes ADD COLUMN refreshed_at BIGINT;
ALTER TABLE mailboxes ADD COLUMN next_refresh BIGINT NOT NULL DEFAULT 0;
ALTER TABLE mailboxes ADD COLUMN failures BIGINT NOT NULL DEFAULT 0;
CREATE INDEX mailboxes_next_refresh ON mailboxes (next_refresh);

-- The events outbox: one row per event and webhook URL, written in the same
-- transaction as the state change it reports; delivered at least once (the
-- event id is stable across retries, so receivers dedupe by it).
CREATE TABLE events (
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
    PRIMARY KEY (id, url)
);
CREATE INDEX events_due ON events (delivered_at, next_attempt);
