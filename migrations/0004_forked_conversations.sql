-- A conversation forked from another (docs/adr/0027-fork.md) names its origin and the log
-- sequence of the origin's last message it keeps; its messages start as copies of the origin's
-- up to there (new ids, the origin's `stream_seq`). Conversations started afresh have neither.
ALTER TABLE conversations ADD COLUMN forked_from UUID;
ALTER TABLE conversations ADD COLUMN forked_after BIGINT;
