-- Data keys, wrapped by the master key (master_id names which one).
CREATE TABLE data_keys (
    id TEXT PRIMARY KEY,
    wrapped BLOB NOT NULL,
    master_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    active BIGINT NOT NULL DEFAULT 1
);

-- One row per connected mailbox: its sealed token record, the record's version
-- (compare-and-swap) and the refresh lease (owner, expiry).
CREATE TABLE mailboxes (
    id TEXT PRIMARY KEY,
    connector TEXT NOT NULL,
    email TEXT NOT NULL,
    kind TEXT NOT NULL,
    reference TEXT,
    state TEXT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    record_key TEXT,
    record BLOB,
    version BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX mailboxes_connector_email ON mailboxes (connector, email);

-- API keys: SHA-256 digests only; the secret is shown once at creation.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    mailboxes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

-- Every token hand-out (never the token).
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    mailbox TEXT NOT NULL,
    action TEXT NOT NULL
);
