-- Connect links: single-use, expiring; only the digest of the link's secret is kept.
CREATE TABLE connect_links (
    id TEXT PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,
    connector TEXT NOT NULL,
    email TEXT NOT NULL,
    return_url TEXT,
    reference TEXT,
    mailbox_id TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);

-- Sign-ins in progress: the sealed PKCE state, found again by `state` on
-- whichever node receives the callback.
CREATE TABLE sign_ins (
    state TEXT PRIMARY KEY,
    link_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    pending BYTEA NOT NULL,
    expires_at BIGINT NOT NULL
);
