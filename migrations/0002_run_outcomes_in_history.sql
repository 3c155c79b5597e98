-- A run that failed or was cancelled is an entry of its conversation's history, like a reply:
-- role `assistant`, empty text, keyed by the run's id, with its outcome and the public error
-- its `RunFailed` carries (or `cancelled`). Replies are `completed`; user messages have no status.
-- Runs that ended before this migration get their entries at the next `warren replay`.
ALTER TABLE messages ADD COLUMN status TEXT;
ALTER TABLE messages ADD COLUMN error_code TEXT;
ALTER TABLE messages ADD COLUMN error_message TEXT;
ALTER TABLE messages ADD COLUMN retryable BOOLEAN;
UPDATE messages SET status = 'completed' WHERE role = 'assistant';
