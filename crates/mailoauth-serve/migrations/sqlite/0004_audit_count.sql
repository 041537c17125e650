-- Hand-outs of one key, mailbox and action within one second are one row
-- with their count: at tens of thousands of tokens a second, a row each
-- would make the audit log the busiest writer of the database.
ALTER TABLE audit ADD COLUMN count BIGINT NOT NULL DEFAULT 1;
