//! Conversations (by last activity), their messages and runs.

use crate::Projection;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;
use warren_commands::topology;
use warren_domain::conversation::{CancelReason, ConversationEvent};
use warren_domain::{Authority, Envelope};

/// The conversations projection.
pub struct Conversations;

/// The title a conversation gets when started without one.
pub const DEFAULT_TITLE: &str = "New conversation";

impl Projection for Conversations {
    const NAME: &'static str = "conversations";
    const STREAM: &'static str = topology::CONVERSATIONS;
    const FILTER: &'static str = "conv.*.ev";
    type Event = ConversationEvent;

    fn authority(event: &ConversationEvent) -> Authority {
        event.authority()
    }

    async fn subject(
        tx: &mut PgConnection,
        envelope: &Envelope<ConversationEvent>,
    ) -> Result<Option<Uuid>, sqlx::Error> {
        // The row's owner wins over what the event says: only a creation names its owner.
        let Ok(conversation_id) = envelope.aggregate_id.parse::<Uuid>() else {
            return Ok(None);
        };
        let stored: Option<Uuid> =
            sqlx::query_scalar("SELECT user_id FROM conversations WHERE id = $1")
                .bind(conversation_id)
                .fetch_optional(&mut *tx)
                .await?;
        Ok(stored.or_else(|| envelope.event.owner().map(|owner| owner.0)))
    }

    async fn apply(
        tx: &mut PgConnection,
        seq: u64,
        envelope: &Envelope<ConversationEvent>,
    ) -> Result<(), sqlx::Error> {
        let at = envelope.occurred_at;
        let seq = seq as i64;
        match &envelope.event {
            ConversationEvent::ConversationStarted { conversation_id, user_id, agent_id, title } => sqlx::query(
                "INSERT INTO conversations (id, user_id, agent_id, title, message_count, created_at, \
                 last_activity_at, last_seq) VALUES ($1, $2, $3, $4, 0, $5, $5, $6) ON CONFLICT (id) DO NOTHING",
            )
            .bind(conversation_id.0)
            .bind(user_id.0)
            .bind(agent_id.0)
            .bind(title.as_deref().unwrap_or(DEFAULT_TITLE))
            .bind(at)
            .bind(seq)
            .execute(&mut *tx)
            .await
            .map(drop),
            ConversationEvent::ConversationForked { conversation_id, user_id, agent_id, title, origin_id, after } => {
                fork(tx, envelope, Fork {
                    id: conversation_id.0,
                    user_id: user_id.0,
                    agent_id: agent_id.0,
                    title: title.as_deref(),
                    origin_id: origin_id.0,
                    after: *after as i64,
                }, seq).await
            }
            ConversationEvent::ConversationRenamed { conversation_id, title } => {
                sqlx::query("UPDATE conversations SET title = $2, last_seq = $3 WHERE id = $1")
                    .bind(conversation_id.0)
                    .bind(title)
                    .bind(seq)
                    .execute(&mut *tx)
                    .await
                    .map(drop)
            }
            ConversationEvent::MessagePosted {
                conversation_id,
                message_id,
                text,
                client_id,
                client_kind,
                run_id,
                position,
                ..
            } => {
                sqlx::query(
                    "INSERT INTO messages (id, conversation_id, role, run_id, text, client_id, client_kind, \
                     created_at, stream_seq) VALUES ($1, $2, 'user', $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
                )
                .bind(message_id.0)
                .bind(conversation_id.0)
                .bind(run_id.0)
                .bind(text)
                .bind(client_id)
                .bind(client_kind)
                .bind(at)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
                queue_run(tx, conversation_id.0, run_id.0, message_id.0, *position, at, seq).await?;
                touch(tx, conversation_id.0, 1, at, seq).await
            }
            ConversationEvent::RunQueued { conversation_id, run_id, message_id, position } => {
                queue_run(tx, conversation_id.0, run_id.0, message_id.0, *position, at, seq).await
            }
            ConversationEvent::RunStarted { conversation_id, run_id, worker_id } => {
                sqlx::query(
                    "UPDATE runs SET status = 'running', position = 0, worker_id = $2, updated_at = $3, last_seq = $4 \
                     WHERE id = $1",
                )
                .bind(run_id.0)
                .bind(worker_id)
                .bind(at)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE conversations SET active_run_id = $2, last_seq = $3 WHERE id = $1")
                    .bind(conversation_id.0)
                    .bind(run_id.0)
                    .bind(seq)
                    .execute(&mut *tx)
                    .await
                    .map(drop)
            }
            ConversationEvent::RunCompleted {
                conversation_id,
                run_id,
                reply_id,
                text,
                tool_calls,
                usage,
                duration_ms,
                ..
            } => {
                let tool_calls = serde_json::to_value(tool_calls).unwrap_or_default();
                sqlx::query(
                    "INSERT INTO messages (id, conversation_id, role, run_id, text, tool_calls, input_tokens, \
                     output_tokens, duration_ms, created_at, stream_seq, status) \
                     VALUES ($1, $2, 'assistant', $3, $4, $5, $6, $7, $8, $9, $10, 'completed') \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(reply_id.0)
                .bind(conversation_id.0)
                .bind(run_id.0)
                .bind(text)
                .bind(tool_calls)
                .bind(usage.input_tokens as i64)
                .bind(usage.output_tokens as i64)
                .bind(*duration_ms as i64)
                .bind(at)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
                finish_run(tx, conversation_id.0, run_id.0, "completed", None, at, seq).await?;
                touch(tx, conversation_id.0, 1, at, seq).await
            }
            ConversationEvent::RunFailed { conversation_id, run_id, code, message, retryable } => {
                let failure = Some((code.as_str(), message.as_str(), *retryable));
                finish_run(tx, conversation_id.0, run_id.0, "failed", failure, at, seq).await?;
                record_outcome(tx, conversation_id.0, run_id.0, "failed", failure, at, seq).await
            }
            ConversationEvent::CancelRequested { run_id, .. } => {
                sqlx::query("UPDATE runs SET cancel_requested = TRUE, updated_at = $2, last_seq = $3 WHERE id = $1")
                    .bind(run_id.0)
                    .bind(at)
                    .bind(seq)
                    .execute(&mut *tx)
                    .await
                    .map(drop)
            }
            ConversationEvent::RunCancelled { conversation_id, run_id, reason } => {
                finish_run(tx, conversation_id.0, run_id.0, "cancelled", None, at, seq).await?;
                let message = match reason {
                    CancelReason::Requested => "the run was cancelled",
                    CancelReason::Interrupted => "the run was interrupted by a newer message",
                };
                let failure = Some(("cancelled", message, false));
                record_outcome(tx, conversation_id.0, run_id.0, "cancelled", failure, at, seq).await
            }
            ConversationEvent::HistoryCleared { conversation_id } => {
                sqlx::query("DELETE FROM messages WHERE conversation_id = $1")
                    .bind(conversation_id.0)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "UPDATE conversations SET message_count = 0, last_activity_at = $2, last_seq = $3 WHERE id = $1",
                )
                .bind(conversation_id.0)
                .bind(at)
                .bind(seq)
                .execute(&mut *tx)
                .await
                .map(drop)
            }
            ConversationEvent::AgentMessagePosted { conversation_id, message_id, text, .. } => {
                sqlx::query(
                    "INSERT INTO messages (id, conversation_id, role, text, created_at, stream_seq) \
                     VALUES ($1, $2, 'assistant', $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                )
                .bind(message_id.0)
                .bind(conversation_id.0)
                .bind(text)
                .bind(at)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
                touch(tx, conversation_id.0, 1, at, seq).await
            }
        }
    }
}

/// A forked conversation, as its projection needs it.
struct Fork<'a> {
    id: Uuid,
    user_id: Uuid,
    agent_id: Uuid,
    title: Option<&'a str>,
    origin_id: Uuid,
    after: i64,
}

/// Lists the fork as a conversation of its own, naming its origin, and copies the origin's
/// messages up to `after` into it, as the origin's history shows them now (every earlier commit
/// is applied): new ids derived from the fork's and the original's, the original's `stream_seq`
/// so the copies keep their order and their cursors. Only the fork's user's own origin is copied
/// (the projector's guard checks who forked; this checks what).
async fn fork(
    tx: &mut PgConnection,
    envelope: &Envelope<ConversationEvent>,
    fork: Fork<'_>,
    seq: i64,
) -> Result<(), sqlx::Error> {
    let at = envelope.occurred_at;
    sqlx::query(
        "INSERT INTO conversations (id, user_id, agent_id, title, message_count, created_at, \
         last_activity_at, last_seq, forked_from, forked_after) VALUES ($1, $2, $3, $4, 0, $5, $5, $6, $7, $8) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(fork.id)
    .bind(fork.user_id)
    .bind(fork.agent_id)
    .bind(fork.title.unwrap_or(DEFAULT_TITLE))
    .bind(at)
    .bind(seq)
    .bind(fork.origin_id)
    .bind(fork.after)
    .execute(&mut *tx)
    .await?;
    let copied = sqlx::query(
        "INSERT INTO messages (id, conversation_id, role, run_id, text, client_id, client_kind, tool_calls, \
         input_tokens, output_tokens, duration_ms, created_at, stream_seq, status, error_code, error_message, retryable) \
         SELECT md5($1::text || ':' || m.id::text)::uuid, $1, m.role, m.run_id, m.text, m.client_id, m.client_kind, \
         m.tool_calls, m.input_tokens, m.output_tokens, m.duration_ms, m.created_at, m.stream_seq, m.status, \
         m.error_code, m.error_message, m.retryable FROM messages m \
         WHERE m.conversation_id = $2 AND m.stream_seq <= $3 \
         AND EXISTS (SELECT 1 FROM conversations c WHERE c.id = $2 AND c.user_id = $4) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(fork.id)
    .bind(fork.origin_id)
    .bind(fork.after)
    .bind(fork.user_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    touch(tx, fork.id, copied as i64, at, seq).await
}

/// Records a run as queued, or updates its position. A new run at position `p` goes ahead of the
/// waiting runs at `p` or later (an interrupting message jumps the queue).
async fn queue_run(
    tx: &mut PgConnection,
    conversation_id: Uuid,
    run_id: Uuid,
    message_id: Uuid,
    position: u32,
    at: DateTime<Utc>,
    seq: i64,
) -> Result<(), sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO runs (id, conversation_id, message_id, status, position, created_at, updated_at, last_seq) \
         VALUES ($1, $2, $3, 'queued', $4, $5, $5, $6) ON CONFLICT (id) DO NOTHING",
    )
    .bind(run_id)
    .bind(conversation_id)
    .bind(message_id)
    .bind(position as i32)
    .bind(at)
    .bind(seq)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let statement = if inserted == 1 {
        "UPDATE runs SET position = position + 1 WHERE conversation_id = $2 AND status = 'queued' \
         AND position >= $3 AND id <> $1"
    } else {
        "UPDATE runs SET position = $3 WHERE id = $1 AND conversation_id = $2 AND status = 'queued'"
    };
    sqlx::query(statement)
        .bind(run_id)
        .bind(conversation_id)
        .bind(position as i32)
        .execute(&mut *tx)
        .await
        .map(drop)
}

/// A run's public error: code, message, retryable.
type Failure<'a> = Option<(&'a str, &'a str, bool)>;

/// Ends a run and shifts the positions of the runs still waiting behind it.
async fn finish_run(
    tx: &mut PgConnection,
    conversation_id: Uuid,
    run_id: Uuid,
    status: &str,
    failure: Failure<'_>,
    at: DateTime<Utc>,
    seq: i64,
) -> Result<(), sqlx::Error> {
    let (code, message, retryable) = unzip(failure);
    let ended: Option<(i32,)> = sqlx::query_as(
        "UPDATE runs SET status = $2, error_code = $3, error_message = $4, retryable = $5, updated_at = $6, \
         last_seq = $7 WHERE id = $1 AND status IN ('queued', 'running') \
         RETURNING position",
    )
    .bind(run_id)
    .bind(status)
    .bind(code)
    .bind(message)
    .bind(retryable)
    .bind(at)
    .bind(seq)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((position,)) = ended {
        sqlx::query(
            "UPDATE runs SET position = position - 1 WHERE conversation_id = $1 AND status = 'queued' AND position > $2",
        )
        .bind(conversation_id)
        .bind(position)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("UPDATE conversations SET active_run_id = NULL, last_seq = $3 WHERE id = $1 AND active_run_id = $2")
        .bind(conversation_id)
        .bind(run_id)
        .bind(seq)
        .execute(&mut *tx)
        .await
        .map(drop)
}

fn unzip(failure: Failure<'_>) -> (Option<&str>, Option<&str>, Option<bool>) {
    match failure {
        Some((code, message, retryable)) => (Some(code), Some(message), Some(retryable)),
        None => (None, None, None),
    }
}

/// Enters a run that ended without a reply in its conversation's history (keyed by the run's
/// id: one entry per run, whatever is replayed), so every client sees why no answer came.
async fn record_outcome(
    tx: &mut PgConnection,
    conversation_id: Uuid,
    run_id: Uuid,
    status: &str,
    failure: Failure<'_>,
    at: DateTime<Utc>,
    seq: i64,
) -> Result<(), sqlx::Error> {
    let (code, message, retryable) = unzip(failure);
    let inserted = sqlx::query(
        "INSERT INTO messages (id, conversation_id, role, run_id, text, created_at, stream_seq, status, \
         error_code, error_message, retryable) VALUES ($1, $2, 'assistant', $1, '', $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(run_id)
    .bind(conversation_id)
    .bind(at)
    .bind(seq)
    .bind(status)
    .bind(code)
    .bind(message)
    .bind(retryable)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    touch(tx, conversation_id, inserted as i64, at, seq).await
}

/// Counts new messages and moves the conversation to the top of its user's list.
async fn touch(
    tx: &mut PgConnection,
    conversation_id: Uuid,
    messages: i64,
    at: DateTime<Utc>,
    seq: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE conversations SET message_count = message_count + $2, last_activity_at = $3, last_seq = $4 WHERE id = $1",
    )
    .bind(conversation_id)
    .bind(messages)
    .bind(at)
    .bind(seq)
    .execute(&mut *tx)
    .await
    .map(drop)
}
