-- Deliveries in order per mailbox and URL: each event row gets a sequence
-- number from the database, and only the oldest undelivered row of a
-- (mailbox, url) pair is due.
ALTER TABLE events ADD COLUMN seq BIGSERIAL;
CREATE INDEX events_pending ON events (mailbox, url, seq) WHERE delivered_at IS NULL;
