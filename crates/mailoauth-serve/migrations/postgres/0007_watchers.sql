-- Who watches a mailbox's folders for new mail: one node at a time, by a
-- lease; each node renews all of its leases with one statement per
-- heartbeat, and a node that dies lets them run out so another takes them.
CREATE TABLE watchers (
    mailbox TEXT PRIMARY KEY,
    owner TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX watchers_owner ON watchers (owner, lease_until);

-- Where each watched folder stands: the last UID reported under the folder's
-- UIDVALIDITY, and its CONDSTORE HIGHESTMODSEQ. A message's event is written
-- in the same transaction that moves the cursor past it, and its id derives
-- from (mailbox, folder, UIDVALIDITY, UID): a restart or another node misses
-- nothing and reports nothing under a second id.
CREATE TABLE watch_cursors (
    mailbox TEXT NOT NULL,
    folder TEXT NOT NULL,
    uidvalidity BIGINT NOT NULL,
    last_uid BIGINT NOT NULL,
    modseq BIGINT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (mailbox, folder)
);
