-- Warren's read models. Every table lives in the schema named by the connection's search_path
-- (`warren` live, `warren_rebuild_*` during `warren replay`), so no name below is schema-qualified.
-- Timestamps come from events (`occurred_at`), never from now(), so a rebuild is row-for-row equal.

-- Each projection's last applied stream sequence; updated in the same transaction as its rows.
CREATE TABLE checkpoints (
    projection TEXT PRIMARY KEY,
    last_seq   BIGINT NOT NULL
);

-- Commits a projection could not read (unknown type or version), kept with the reason.
CREATE TABLE parked_events (
    projection TEXT   NOT NULL,
    stream_seq BIGINT NOT NULL,
    subject    TEXT   NOT NULL,
    reason     TEXT   NOT NULL,
    payload    TEXT   NOT NULL,
    PRIMARY KEY (projection, stream_seq)
);

CREATE TABLE users (
    id              UUID PRIMARY KEY,
    email           TEXT,
    display_name    TEXT,
    avatar_url      TEXT,
    show_tool_calls BOOLEAN     NOT NULL,
    role            TEXT        NOT NULL,
    status          TEXT        NOT NULL,
    status_reason   TEXT,
    tier            TEXT        NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    last_seq        BIGINT      NOT NULL
);
CREATE UNIQUE INDEX users_email ON users (lower(email)) WHERE email IS NOT NULL;
CREATE INDEX users_status ON users (status, created_at);

CREATE TABLE auth_methods (
    id          UUID PRIMARY KEY,
    user_id     UUID        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind        TEXT        NOT NULL,
    external_id TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (kind, external_id)
);
CREATE INDEX auth_methods_user ON auth_methods (user_id);

-- Provider keys as references only: the ciphertext lives outside the log and outside this table.
CREATE TABLE provider_keys (
    id          UUID PRIMARY KEY,
    user_id     UUID        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider    TEXT        NOT NULL,
    base_url    TEXT,
    label       TEXT        NOT NULL,
    fingerprint TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX provider_keys_user ON provider_keys (user_id);

CREATE TABLE agents (
    id              UUID PRIMARY KEY,
    owner_id        UUID        NOT NULL,
    name            TEXT        NOT NULL,
    system_prompt   TEXT        NOT NULL,
    model           TEXT        NOT NULL,
    runtime         TEXT        NOT NULL,
    backend         TEXT        NOT NULL,
    status          TEXT        NOT NULL,
    deployment_id   UUID,
    current_step    TEXT,
    endpoint        TEXT,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    deleted_at      TIMESTAMPTZ,
    last_seq        BIGINT      NOT NULL
);
CREATE INDEX agents_owner ON agents (owner_id, created_at);

-- One row per deployment fact (requested, each step, deployed, failed), keyed by event id.
CREATE TABLE deployment_history (
    event_id      UUID PRIMARY KEY,
    agent_id      UUID        NOT NULL,
    deployment_id UUID,
    status        TEXT        NOT NULL,
    step          TEXT,
    error_message TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    stream_seq    BIGINT      NOT NULL
);
CREATE INDEX deployment_history_agent ON deployment_history (agent_id, stream_seq);

CREATE TABLE conversations (
    id               UUID PRIMARY KEY,
    user_id          UUID        NOT NULL,
    agent_id         UUID        NOT NULL,
    title            TEXT        NOT NULL,
    message_count    BIGINT      NOT NULL,
    active_run_id    UUID,
    created_at       TIMESTAMPTZ NOT NULL,
    last_activity_at TIMESTAMPTZ NOT NULL,
    last_seq         BIGINT      NOT NULL
);
CREATE INDEX conversations_by_activity ON conversations (user_id, last_activity_at DESC, id);
CREATE INDEX conversations_agent ON conversations (agent_id, last_activity_at DESC);

-- User messages and agent replies, in log order.
CREATE TABLE messages (
    id              UUID PRIMARY KEY,
    conversation_id UUID        NOT NULL,
    role            TEXT        NOT NULL,
    run_id          UUID,
    text            TEXT        NOT NULL,
    client_id       TEXT,
    client_kind     TEXT,
    tool_calls      JSONB,
    input_tokens    BIGINT,
    output_tokens   BIGINT,
    duration_ms     BIGINT,
    created_at      TIMESTAMPTZ NOT NULL,
    stream_seq      BIGINT      NOT NULL
);
CREATE INDEX messages_by_conversation ON messages (conversation_id, stream_seq, id);

-- Runs (one model turn answering one message): queued → running → completed | failed | cancelled.
CREATE TABLE runs (
    id               UUID PRIMARY KEY,
    conversation_id  UUID        NOT NULL,
    message_id       UUID        NOT NULL,
    status           TEXT        NOT NULL,
    position         INTEGER     NOT NULL,
    worker_id        TEXT,
    cancel_requested BOOLEAN     NOT NULL DEFAULT FALSE,
    error_code       TEXT,
    error_message    TEXT,
    retryable        BOOLEAN,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    last_seq         BIGINT      NOT NULL
);
CREATE INDEX runs_by_conversation ON runs (conversation_id, status, created_at);

CREATE TABLE daily_usage (
    user_id       UUID   NOT NULL,
    day           DATE   NOT NULL,
    messages      BIGINT NOT NULL DEFAULT 0,
    input_tokens  BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    deployments   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, day)
);

-- One row per usage fact, keyed by the event that caused it.
CREATE TABLE usage_events (
    event_id      UUID PRIMARY KEY,
    user_id       UUID        NOT NULL,
    agent_id      UUID,
    kind          TEXT        NOT NULL,
    input_tokens  BIGINT,
    output_tokens BIGINT,
    created_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX usage_events_user ON usage_events (user_id, created_at);
