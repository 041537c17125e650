-- The nodes of the cluster, each writing its heartbeat every few seconds:
-- shared limits (the provider's refresh rate) are divided among the live ones,
-- and work owned by a node that stopped beating moves on.
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    seen_at BIGINT NOT NULL
);

-- Admin page sessions, by the digest of the session id (the browser holds the
-- id): any node serves them, and a revoked key ends its sessions at once.
CREATE TABLE admin_sessions (
    digest TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX admin_sessions_key ON admin_sessions (key_id);
