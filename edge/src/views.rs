//! Reads: the queries the edge runs on the read models and the JSON shapes they answer with.
//! Every query is scoped by its owner, so another user's rows are simply not found.

use crate::error::ApiError;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;
use warren_domain::ids::{AgentId, UserId};

/// A user as clients see it.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct UserView {
    /// The user.
    pub id: Uuid,
    /// Contact address.
    pub email: Option<String>,
    /// Name to show.
    pub display_name: Option<String>,
    /// Picture URL.
    pub avatar_url: Option<String>,
    /// Whether clients show tool calls.
    pub show_tool_calls: bool,
    /// `guest`, `user` or `admin`.
    #[schema(example = "user")]
    pub role: String,
    /// `pending`, `approved`, `rejected` or `revoked`.
    #[schema(example = "approved")]
    pub status: String,
    /// Why the user was rejected or revoked, if an admin said.
    pub status_reason: Option<String>,
    /// `free`, `pro` or `enterprise`.
    #[schema(example = "free")]
    pub tier: String,
    /// First sign-in.
    pub created_at: DateTime<Utc>,
}

const USER_COLUMNS: &str = "id, email, display_name, avatar_url, show_tool_calls, role, status, status_reason, tier, created_at";

/// One user; 503 if the read model has not caught up with them yet.
pub async fn user(db: &PgPool, id: UserId) -> Result<UserView, ApiError> {
    sqlx::query_as::<_, UserView>(sqlx::AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
    )))
    .bind(id.0)
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::Unavailable("the read models"))
}

/// Users by status (`None`: all), newest first.
pub async fn users_by_status(
    db: &PgPool,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<UserView>, ApiError> {
    Ok(sqlx::query_as::<_, UserView>(sqlx::AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM users WHERE ($1::text IS NULL OR status = $1) \
         ORDER BY created_at DESC, id LIMIT $2"
    )))
    .bind(status)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// A linked sign-in method.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ConnectionView {
    /// The connection (use it to unlink).
    pub id: Uuid,
    /// `email`, `google`, `github`, `wallet` or `telegram`.
    #[schema(example = "email")]
    pub kind: String,
    /// The identity at that provider (the address, for email).
    pub external_id: String,
    /// When it was linked.
    pub created_at: DateTime<Utc>,
}

/// A user's sign-in methods, oldest first.
pub async fn connections(db: &PgPool, user: UserId) -> Result<Vec<ConnectionView>, ApiError> {
    Ok(sqlx::query_as(
        "SELECT id, kind, external_id, created_at FROM auth_methods WHERE user_id = $1 \
         ORDER BY created_at, id",
    )
    .bind(user.0)
    .fetch_all(db)
    .await?)
}

/// A provider API key, masked.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ApiKeyView {
    /// The key (use it to delete).
    pub id: Uuid,
    /// `anthropic`, `openai`, `openrouter`, `libertai` or `custom`.
    #[schema(example = "openai")]
    pub provider: String,
    /// Endpoint override.
    pub base_url: Option<String>,
    /// The user's name for it.
    pub label: String,
    /// The masked key, e.g. `sk-a…c123`.
    pub fingerprint: String,
    /// When it was added.
    pub created_at: DateTime<Utc>,
}

/// A user's provider keys, oldest first.
pub async fn api_keys(db: &PgPool, user: UserId) -> Result<Vec<ApiKeyView>, ApiError> {
    Ok(sqlx::query_as(
        "SELECT id, provider, base_url, label, fingerprint, created_at FROM provider_keys \
         WHERE user_id = $1 ORDER BY created_at, id",
    )
    .bind(user.0)
    .fetch_all(db)
    .await?)
}

/// An agent as its owner sees it.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct AgentView {
    /// The agent.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// The system prompt.
    pub system_prompt: String,
    /// Model identifier.
    pub model: String,
    /// `warren` or `baal_agent`.
    pub runtime: String,
    /// `process`, `docker` or `ssh`.
    pub backend: String,
    /// `deploying`, `running`, `failed`, `stopped`, `paused`.
    pub status: String,
    /// The current (or last) deployment attempt.
    pub deployment_id: Option<Uuid>,
    /// The last deployment step reached.
    pub current_step: Option<String>,
    /// The runtime's base URL once deployed.
    pub endpoint: Option<String>,
    /// The last deployment or health error.
    pub last_error: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// An agent as its aggregate (the log) says it is: for an answer that must not wait on the read
/// model, such as a create whose projection lags.
pub fn agent_from_log(agent: &warren_domain::agent::Agent, at: DateTime<Utc>) -> Option<AgentView> {
    Some(AgentView {
        id: agent.id?.0,
        name: agent.name.clone(),
        system_prompt: agent.system_prompt.clone(),
        model: agent.model.clone(),
        runtime: agent.runtime.as_str().to_owned(),
        backend: agent.backend.as_str().to_owned(),
        status: agent.status.as_str().to_owned(),
        deployment_id: agent.deployment.as_ref().map(|d| d.deployment_id),
        current_step: agent
            .deployment
            .as_ref()
            .and_then(|d| d.completed)
            .map(|step| step.as_str().to_owned()),
        endpoint: agent.endpoint_url.clone(),
        last_error: None,
        created_at: at,
        updated_at: at,
    })
}

/// How many approved admins the platform has.
pub async fn admin_count(db: &PgPool) -> Result<u64, ApiError> {
    let (count,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM users WHERE role = 'admin' AND status = 'approved'")
            .fetch_one(db)
            .await?;
    Ok(count.max(0) as u64)
}

const AGENT_COLUMNS: &str = "id, name, system_prompt, model, runtime, backend, status, deployment_id, \
     current_step, endpoint, last_error, created_at, updated_at";

/// One of `owner`'s agents (not deleted).
pub async fn agent(db: &PgPool, owner: UserId, id: AgentId) -> Result<AgentView, ApiError> {
    sqlx::query_as::<_, AgentView>(sqlx::AssertSqlSafe(format!(
        "SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1 AND owner_id = $2 AND status <> 'deleted'"
    )))
    .bind(id.0)
    .bind(owner.0)
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::NotFound)
}

/// `owner`'s agents (not deleted), oldest first.
pub async fn agents(db: &PgPool, owner: UserId) -> Result<Vec<AgentView>, ApiError> {
    Ok(sqlx::query_as::<_, AgentView>(sqlx::AssertSqlSafe(format!(
        "SELECT {AGENT_COLUMNS} FROM agents WHERE owner_id = $1 AND status <> 'deleted' \
         ORDER BY created_at, id"
    )))
    .bind(owner.0)
    .fetch_all(db)
    .await?)
}

/// How many agents `owner` has (not deleted).
pub async fn agent_count(db: &PgPool, owner: UserId) -> Result<u64, ApiError> {
    let (count,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM agents WHERE owner_id = $1 AND status <> 'deleted'")
            .bind(owner.0)
            .fetch_one(db)
            .await?;
    Ok(count.max(0) as u64)
}

/// One deployment fact.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct DeploymentEventView {
    /// The attempt.
    pub deployment_id: Option<Uuid>,
    /// `requested`, `repair_requested`, `redeploy_requested`, `step_completed`, `deployed`,
    /// `failed`.
    pub status: String,
    /// The step, for step and failure facts.
    pub step: Option<String>,
    /// What went wrong, for failures.
    pub error_message: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// An agent's deployment facts, newest last (at most the last 100).
pub async fn deployment_history(
    db: &PgPool,
    agent: AgentId,
) -> Result<Vec<DeploymentEventView>, ApiError> {
    Ok(sqlx::query_as(
        "SELECT deployment_id, status, step, error_message, created_at FROM ( \
           SELECT deployment_id, status, step, error_message, created_at, stream_seq, event_id \
           FROM deployment_history WHERE agent_id = $1 ORDER BY stream_seq DESC, event_id DESC LIMIT 100 \
         ) recent ORDER BY stream_seq, event_id",
    )
    .bind(agent.0)
    .fetch_all(db)
    .await?)
}

/// One day of a user's usage.
#[derive(Debug, Default, Serialize, ToSchema, sqlx::FromRow)]
pub struct DailyUsageView {
    /// The UTC day.
    #[schema(value_type = String, format = Date)]
    pub day: NaiveDate,
    /// Messages sent.
    pub messages: i64,
    /// Tokens read by models.
    pub input_tokens: i64,
    /// Tokens written by models.
    pub output_tokens: i64,
    /// Deployments requested.
    pub deployments: i64,
    /// Tokens the model proxy metered as read by providers (their own numbers; ADR 23).
    pub metered_input_tokens: i64,
    /// Tokens the model proxy metered as written by providers.
    pub metered_output_tokens: i64,
}

impl DailyUsageView {
    /// The metered tokens, read and written: what the token quota counts.
    pub fn metered_tokens(&self) -> u64 {
        let sum = self
            .metered_input_tokens
            .max(0)
            .saturating_add(self.metered_output_tokens.max(0));
        u64::try_from(sum).unwrap_or(0)
    }
}

const DAILY_USAGE_COLUMNS: &str = "day, messages, input_tokens, output_tokens, deployments, \
     metered_input_tokens, metered_output_tokens";

/// A user's usage on `day` (zeros if none).
pub async fn usage_on(
    db: &PgPool,
    user: UserId,
    day: NaiveDate,
) -> Result<DailyUsageView, ApiError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DAILY_USAGE_COLUMNS} FROM daily_usage WHERE user_id = $1 AND day = $2"
    )))
    .bind(user.0)
    .bind(day)
    .fetch_optional(db)
    .await?
    .unwrap_or(DailyUsageView {
        day,
        ..Default::default()
    }))
}

/// A user's usage per day over the last `days` days up to `today`, oldest first; days without
/// usage are left out.
pub async fn usage_history(
    db: &PgPool,
    user: UserId,
    today: NaiveDate,
    days: i64,
) -> Result<Vec<DailyUsageView>, ApiError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {DAILY_USAGE_COLUMNS} FROM daily_usage \
         WHERE user_id = $1 AND day > $2::date - $3::int AND day <= $2::date ORDER BY day"
    )))
    .bind(user.0)
    .bind(today)
    .bind(days as i32)
    .fetch_all(db)
    .await?)
}

/// A conversation (session) as its user sees it.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ConversationView {
    /// The conversation.
    pub id: Uuid,
    /// The agent it is with.
    pub agent_id: Uuid,
    /// Its title (empty if none was given).
    pub title: String,
    /// Messages in it (user messages and replies).
    pub message_count: i64,
    /// The run going on now, if any.
    pub active_run_id: Option<Uuid>,
    /// When it was started.
    pub created_at: DateTime<Utc>,
    /// Its last message or change.
    pub last_activity_at: DateTime<Utc>,
    /// The conversation it was forked from, if it is a fork.
    pub forked_from: Option<Uuid>,
    /// The origin's `seq` of the last message the fork kept, if it is a fork.
    pub forked_after: Option<i64>,
}

const CONVERSATION_COLUMNS: &str = "id, agent_id, title, message_count, active_run_id, created_at, \
     last_activity_at, forked_from, forked_after";

/// The user's conversations (with one agent, if given), most recently active first.
pub async fn conversations(
    db: &PgPool,
    user: UserId,
    agent: Option<AgentId>,
    limit: i64,
) -> Result<Vec<ConversationView>, ApiError> {
    Ok(
        sqlx::query_as::<_, ConversationView>(sqlx::AssertSqlSafe(format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations \
             WHERE user_id = $1 AND ($2::uuid IS NULL OR agent_id = $2) \
             ORDER BY last_activity_at DESC, id LIMIT $3"
        )))
        .bind(user.0)
        .bind(agent.map(|a| a.0))
        .bind(limit)
        .fetch_all(db)
        .await?,
    )
}

/// One of the user's conversations; `None` if missing or someone else's.
pub async fn conversation(
    db: &PgPool,
    user: UserId,
    id: Uuid,
) -> Result<Option<ConversationView>, ApiError> {
    Ok(
        sqlx::query_as::<_, ConversationView>(sqlx::AssertSqlSafe(format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1 AND user_id = $2"
        )))
        .bind(id)
        .bind(user.0)
        .fetch_optional(db)
        .await?,
    )
}

/// A session as an agent's session tools see it.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct SessionMatch {
    /// The conversation.
    pub id: Uuid,
    /// Its title (empty if none was given).
    pub title: String,
    /// Messages in it.
    pub message_count: i64,
    /// When it was started.
    pub created_at: DateTime<Utc>,
    /// Its last message or change.
    pub last_activity_at: DateTime<Utc>,
    /// Its newest message with the first query word (its newest message without a query).
    pub snippet: Option<String>,
}

const SESSION_MATCH_COLUMNS: &str = "c.id, c.title, c.message_count, c.created_at, \
     c.last_activity_at, (SELECT m.text FROM messages m WHERE m.conversation_id = c.id \
     AND m.text <> '' AND (cardinality($3::text[]) = 0 OR m.text ILIKE ($3::text[])[1]) \
     ORDER BY m.stream_seq DESC LIMIT 1) AS snippet";

/// The user's conversations with the agent in which every pattern (`ILIKE`) matches the title
/// or a message, last active within `range` if given, most recently active first.
pub async fn search_sessions(
    db: &PgPool,
    user: UserId,
    agent: AgentId,
    patterns: &[String],
    range: Option<(DateTime<Utc>, DateTime<Utc>)>,
    limit: i64,
) -> Result<Vec<SessionMatch>, ApiError> {
    Ok(
        sqlx::query_as::<_, SessionMatch>(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_MATCH_COLUMNS} FROM conversations c \
         WHERE c.user_id = $1 AND c.agent_id = $2 \
         AND NOT EXISTS (SELECT 1 FROM unnest($3::text[]) AS p(pattern) \
             WHERE c.title NOT ILIKE p.pattern AND NOT EXISTS (SELECT 1 FROM messages m \
                 WHERE m.conversation_id = c.id AND m.text ILIKE p.pattern)) \
         AND ($4::timestamptz IS NULL OR c.last_activity_at >= $4) \
         AND ($5::timestamptz IS NULL OR c.last_activity_at < $5) \
         ORDER BY c.last_activity_at DESC, c.id LIMIT $6"
        )))
        .bind(user.0)
        .bind(agent.0)
        .bind(patterns)
        .bind(range.map(|(from, _)| from))
        .bind(range.map(|(_, to)| to))
        .bind(limit)
        .fetch_all(db)
        .await?,
    )
}

/// One of the user's conversations with the agent; `None` if missing or not theirs.
pub async fn agent_session(
    db: &PgPool,
    user: UserId,
    agent: AgentId,
    id: Uuid,
) -> Result<Option<SessionMatch>, ApiError> {
    let none: &[String] = &[];
    Ok(
        sqlx::query_as::<_, SessionMatch>(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_MATCH_COLUMNS} FROM conversations c \
         WHERE c.user_id = $1 AND c.agent_id = $2 AND c.id = $4"
        )))
        .bind(user.0)
        .bind(agent.0)
        .bind(none)
        .bind(id)
        .fetch_optional(db)
        .await?,
    )
}

/// A message: the user's, the agent's reply with its tool calls and usage, or the entry of a
/// run that failed or was cancelled (its error instead of a text).
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct MessageView {
    /// The message.
    pub id: Uuid,
    /// Its conversation.
    pub conversation_id: Uuid,
    /// `user` or `assistant`.
    #[schema(example = "user")]
    pub role: String,
    /// The run that answers it (user) or produced it (assistant).
    pub run_id: Option<Uuid>,
    /// The text.
    pub text: String,
    /// The posting client's connection id (user messages).
    pub client_id: Option<String>,
    /// The posting client's kind, e.g. `web`, `sse`, `telegram` (user messages).
    pub client_kind: Option<String>,
    /// Tool calls made while answering (replies): `[{call_id, name, args, output, ok}]`.
    #[schema(value_type = Option<Vec<Object>>)]
    pub tool_calls: Option<serde_json::Value>,
    /// Tokens read (replies).
    pub input_tokens: Option<i64>,
    /// Tokens written (replies).
    pub output_tokens: Option<i64>,
    /// How long the run took (replies).
    pub duration_ms: Option<i64>,
    /// The run's outcome, on the agent's entries: `completed` (a reply), `failed` or
    /// `cancelled` (no reply: an empty text and the error below). None on user messages.
    #[schema(example = "completed")]
    pub status: Option<String>,
    /// Why the run gave no reply (`failed`, `cancelled`): a stable code, e.g.
    /// `model_not_configured`, `model_unreachable`, `cancelled`.
    pub error_code: Option<String>,
    /// The public explanation of `error_code`.
    pub error_message: Option<String>,
    /// Whether sending the message again may succeed.
    pub retryable: Option<bool>,
    /// When it was posted.
    pub created_at: DateTime<Utc>,
    /// Its position in the conversation's log (the stream sequence).
    pub seq: i64,
}

/// Up to `limit` messages of a conversation before the message `before` (or the newest), oldest
/// first. The caller checks that the conversation is the user's.
pub async fn messages<'e>(
    db: impl sqlx::PgExecutor<'e>,
    conversation: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<MessageView>, ApiError> {
    Ok(sqlx::query_as(
        "SELECT * FROM (SELECT id, conversation_id, role, run_id, text, client_id, client_kind, \
         tool_calls, input_tokens, output_tokens, duration_ms, status, error_code, error_message, \
         retryable, created_at, stream_seq AS seq \
         FROM messages WHERE conversation_id = $1 AND ($2::uuid IS NULL OR (stream_seq, id) < \
         (SELECT stream_seq, id FROM messages WHERE id = $2 AND conversation_id = $1)) \
         ORDER BY stream_seq DESC, id DESC LIMIT $3) page ORDER BY seq, id",
    )
    .bind(conversation)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// The newest `limit` messages of a conversation (oldest first) and the conversations
/// projection's checkpoint they are consistent with, read in one snapshot: a client that follows
/// the log from `checkpoint + 1` after showing them misses nothing and sees nothing twice.
pub async fn message_snapshot(
    db: &PgPool,
    conversation: Uuid,
    limit: i64,
) -> Result<(u64, Vec<MessageView>), ApiError> {
    let mut tx = db.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let checkpoint: Option<(i64,)> =
        sqlx::query_as("SELECT last_seq FROM checkpoints WHERE projection = 'conversations'")
            .fetch_optional(&mut *tx)
            .await?;
    let messages = messages(&mut *tx, conversation, None, limit).await?;
    tx.commit().await?;
    Ok((checkpoint.map_or(0, |(seq,)| seq.max(0) as u64), messages))
}

/// A page of the user's conversations by last activity, and how many there are in all.
pub async fn conversations_page(
    db: &PgPool,
    user: UserId,
    limit: i64,
    offset: i64,
) -> Result<(Vec<ConversationView>, i64), ApiError> {
    let page = sqlx::query_as::<_, ConversationView>(sqlx::AssertSqlSafe(format!(
        "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE user_id = $1 \
         ORDER BY last_activity_at DESC, id LIMIT $2 OFFSET $3"
    )))
    .bind(user.0)
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await?;
    let (total,): (i64,) = sqlx::query_as("SELECT count(*) FROM conversations WHERE user_id = $1")
        .bind(user.0)
        .fetch_one(db)
        .await?;
    Ok((page, total))
}

/// The approved admins.
pub async fn admin_ids(db: &PgPool) -> Result<Vec<UserId>, ApiError> {
    let ids: Vec<(Uuid,)> =
        sqlx::query_as("SELECT id FROM users WHERE role = 'admin' AND status = 'approved'")
            .fetch_all(db)
            .await?;
    Ok(ids.into_iter().map(|(id,)| UserId(id)).collect())
}
