-- Usage as a read model of its own (docs/adr/0042-usage-analytics.md): the `usage_agents` and
-- `usage_conversations` projections write every usage fact of the log here, with what an analyst
-- groups and prices by. Facts store tokens, never money: cost is computed when read.
--
-- The rows written before this migration lack the new columns, so both tables are emptied and
-- the new projections (whose checkpoints start at 0) rebuild them from the log.
TRUNCATE usage_events;
TRUNCATE daily_usage;
ALTER TABLE usage_events
    ADD COLUMN provider      TEXT,
    ADD COLUMN model         TEXT,
    ADD COLUMN cached_tokens BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN tools         TEXT[] NOT NULL DEFAULT '{}',
    ADD COLUMN duration_ms   BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN outcome       TEXT,
    ADD COLUMN bytes         BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN sandbox       TEXT,
    -- The stream sequence of the commit, ordering an agent's up and down facts.
    ADD COLUMN seq           BIGINT NOT NULL DEFAULT 0;
CREATE INDEX usage_events_time ON usage_events (created_at);
CREATE INDEX usage_events_lifecycle ON usage_events (agent_id, created_at, seq)
    WHERE kind IN ('up', 'down');

-- Whose each agent and conversation is, as its creation said: the usage projections' own
-- memory, so they can be rebuilt alone (`warren replay --projection usage`).
CREATE TABLE usage_owners (
    aggregate_id UUID PRIMARY KEY,
    user_id      UUID NOT NULL,
    agent_id     UUID,
    sandbox      TEXT
);
