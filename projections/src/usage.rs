//! Usage facts shared by several projections: one `usage_events` row per fact (keyed by the event
//! that caused it) and the matching increment of `daily_usage`. A run's tokens (what its runtime
//! reported) and metered tokens (what the provider said through the model proxy, which the
//! token quota counts: ADR 23) are kept in columns of their own.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// One usage fact.
pub struct UsageFact {
    /// The event that caused it (the row key, so a fact is never counted twice).
    pub event_id: Uuid,
    /// Whose usage.
    pub user_id: Uuid,
    /// Which agent, if any.
    pub agent_id: Option<Uuid>,
    /// `message` (a run's reply, with the tokens its runtime reported), `model_call` (a model
    /// call the platform's model proxy metered, with the provider's own numbers), `deployment`
    /// or `file_download`.
    pub kind: &'static str,
    /// Tokens read by the model.
    pub input_tokens: i64,
    /// Tokens written by the model.
    pub output_tokens: i64,
    /// When it happened (the event's time; the day is its UTC date).
    pub at: DateTime<Utc>,
}

/// Records a fact and bumps the day's counters.
pub async fn record(tx: &mut PgConnection, fact: UsageFact) -> Result<(), sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO usage_events (event_id, user_id, agent_id, kind, input_tokens, output_tokens, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(fact.event_id)
    .bind(fact.user_id)
    .bind(fact.agent_id)
    .bind(fact.kind)
    .bind(fact.input_tokens)
    .bind(fact.output_tokens)
    .bind(fact.at)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(());
    }
    let (messages, deployments) = match fact.kind {
        "message" => (1, 0),
        "deployment" => (0, 1),
        _ => (0, 0),
    };
    let ((reported_in, reported_out), (metered_in, metered_out)) = match fact.kind {
        "model_call" => ((0, 0), (fact.input_tokens, fact.output_tokens)),
        _ => ((fact.input_tokens, fact.output_tokens), (0, 0)),
    };
    sqlx::query(
        "INSERT INTO daily_usage (user_id, day, messages, input_tokens, output_tokens, deployments, \
         metered_input_tokens, metered_output_tokens) \
         VALUES ($1, ($2::timestamptz AT TIME ZONE 'UTC')::date, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (user_id, day) DO UPDATE SET messages = daily_usage.messages + EXCLUDED.messages, \
         input_tokens = daily_usage.input_tokens + EXCLUDED.input_tokens, \
         output_tokens = daily_usage.output_tokens + EXCLUDED.output_tokens, \
         deployments = daily_usage.deployments + EXCLUDED.deployments, \
         metered_input_tokens = daily_usage.metered_input_tokens + EXCLUDED.metered_input_tokens, \
         metered_output_tokens = daily_usage.metered_output_tokens + EXCLUDED.metered_output_tokens",
    )
    .bind(fact.user_id)
    .bind(fact.at)
    .bind(messages)
    .bind(reported_in)
    .bind(reported_out)
    .bind(deployments)
    .bind(metered_in)
    .bind(metered_out)
    .execute(&mut *tx)
    .await
    .map(drop)
}
