//! Fork a conversation at a message (docs/adr/0027-fork.md), for REST
//! (`POST /conversations/{id}/fork`) and the gateway (`sessions.fork`) alike: a new conversation
//! of the same user and agent whose history is the origin's up to that message, recorded as a
//! fact naming its origin. Its first runs hand that history to the runtime.

use super::access::ApprovedUser;
use super::agents::owned_agent;
use super::chat::{meta, owned_conversation};
use crate::consistency::{self, projection};
use crate::error::ApiError;
use crate::state::AppState;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde_json::json;
use warren_commands::history::{self, Until};
use warren_domain::conversation::ConversationCommand;
use warren_domain::ids::{AgentId, CommandId, ConversationId};

/// What to fork.
#[derive(Clone, Debug)]
pub struct Fork {
    /// The conversation to continue (the caller's).
    pub origin_id: ConversationId,
    /// The `seq` of the last message the fork keeps.
    pub after: u64,
    /// The fork's title; none if not given.
    pub title: Option<String>,
    /// The command id: a retry with the same id (an idempotency key) forks once.
    pub command_id: CommandId,
}

/// A conversation that was forked.
#[derive(Clone, Debug)]
pub struct Forked {
    /// The new conversation.
    pub conversation_id: ConversationId,
    /// Its agent (the origin's).
    pub agent_id: AgentId,
    /// Its title, if given.
    pub title: Option<String>,
    /// The conversation it continues.
    pub origin_id: ConversationId,
    /// The origin's `seq` of the last message it keeps.
    pub after: u64,
    /// How many messages it starts with.
    pub messages: usize,
    /// When.
    pub created_at: Option<DateTime<Utc>>,
    /// The log sequence of the commit.
    pub seq: u64,
}

/// Forks the caller's conversation after one of its messages, and waits until the fork is
/// listed with its messages. Another user's or a missing conversation (or one whose agent is
/// deleted) is 404; an `after` that is not the `seq` of a message in the origin's history is 422
/// (`after_beyond_end` past the log, `not_a_message` otherwise).
pub async fn fork(state: &AppState, caller: &ApprovedUser, fork: Fork) -> Result<Forked, ApiError> {
    let origin = owned_conversation(state, caller.id, fork.origin_id).await?;
    let (agent_id, _) = owned_agent(state, caller.id, origin.agent_id).await?;
    let (_, last_seq) = state
        .commands
        .conversations
        .load(&fork.origin_id.to_string())
        .await
        .map_err(ApiError::internal)?;
    if fork.after > last_seq {
        return Err(bad_point(
            "after_beyond_end",
            format!("after is past the conversation's last event ({last_seq})"),
        ));
    }
    let inherited = history::read(&state.commands.conversations, fork.origin_id, Until::End)
        .await
        .map_err(ApiError::internal)?
        .through(fork.after);
    if inherited.last().is_none_or(|entry| entry.seq != fork.after) {
        return Err(bad_point(
            "not_a_message",
            "after must be the seq of a message in the conversation's history",
        ));
    }
    // The fork's id follows from the command's, so a retried fork names the same conversation.
    let conversation_id = ConversationId(uuid::Uuid::new_v5(
        &fork.command_id.0,
        b"warren/conversation-of-fork",
    ));
    let committed = state
        .commands
        .conversations
        .execute(
            &conversation_id.to_string(),
            ConversationCommand::ForkConversation {
                conversation_id,
                user_id: caller.id,
                agent_id,
                title: fork.title,
                origin_id: fork.origin_id,
                after: fork.after,
            },
            &meta(caller.id, fork.command_id),
        )
        .await?;
    consistency::caught_up(&state.db, projection::CONVERSATIONS, committed.sequence).await?;
    let (forked, _) = state
        .commands
        .conversations
        .load(&conversation_id.to_string())
        .await
        .map_err(ApiError::internal)?;
    Ok(Forked {
        conversation_id,
        agent_id,
        title: forked.title,
        origin_id: fork.origin_id,
        after: fork.after,
        messages: inherited.len(),
        created_at: committed.events.first().map(|e| e.occurred_at),
        seq: committed.sequence,
    })
}

/// 422 for a fork point that is not a message, naming the field as validation errors do.
fn bad_point(code: &'static str, reason: impl Into<String>) -> ApiError {
    let reason = reason.into();
    ApiError::Client {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code,
        message: format!("invalid after: {reason}"),
        details: Some(json!({"fields": [{"field": "after", "reason": reason}]})),
    }
}
