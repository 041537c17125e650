-- The outbox of mail to send: a message is durable here before the API
-- answers 202, and leaves only as sent or failed. A node claims a queued
-- message by compare-and-swap on next_attempt (a node that dies lets the
-- claim run out, so another sends it: at least once). The idempotency key is
-- unique per mailbox; digest is the request's SHA-256, so the same key with
-- another request is told apart from a retry.
CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    mailbox TEXT NOT NULL,
    idempotency_key TEXT,
    digest TEXT NOT NULL,
    envelope_from TEXT NOT NULL,
    recipients TEXT NOT NULL,
    data BLOB NOT NULL,
    size BIGINT NOT NULL,
    state TEXT NOT NULL,
    via TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt BIGINT NOT NULL,
    last_error TEXT,
    fix TEXT,
    reply TEXT,
    created_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE UNIQUE INDEX messages_idempotency ON messages (mailbox, idempotency_key);
CREATE INDEX messages_due ON messages (state, next_attempt);
CREATE INDEX messages_mailbox ON messages (mailbox, state, next_attempt);
