//! Talking to an agent: post a message, cancel a run, clear a conversation's history, start a
//! conversation — for REST (`/chat`, `/conversations`) and the gateway (`agent`,
//! `agent.cancel`, `sessions.new`) alike.

use super::access::ApprovedUser;
use super::agents::owned_agent;
use crate::consistency::{self, projection};
use crate::error::ApiError;
use crate::quota;
use crate::state::AppState;
use crate::views;
use chrono::{DateTime, Utc};
use warren_commands::CommandMeta;
use warren_domain::Actor;
use warren_domain::conversation::{Conversation, ConversationCommand, ConversationEvent, PostMode};
use warren_domain::ids::{AgentId, CommandId, ConversationId, MessageId, RunId, UserId};

/// Where a message goes.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// This conversation (the caller's).
    Conversation(ConversationId),
    /// The caller's conversation with this agent that was active last, or a new one.
    Agent(AgentId),
    /// This conversation, which must be with this agent.
    Both(ConversationId, AgentId),
}

/// Who sent a message, so other clients can tell `fromSelf`.
#[derive(Clone, Debug)]
pub struct Client {
    /// The sending connection's id (gateway), if any.
    pub id: Option<String>,
    /// `sse`, `web`, `cli`, `telegram`, …
    pub kind: String,
}

/// A message to post.
#[derive(Clone, Debug)]
pub struct Message {
    /// Where it goes.
    pub target: Target,
    /// The text.
    pub text: String,
    /// Queue behind a running run, or interrupt it.
    pub mode: PostMode,
    /// Who sent it.
    pub client: Client,
    /// The command id: a retry with the same id (an idempotency key) posts nothing twice.
    pub command_id: CommandId,
}

/// A posted message.
#[derive(Clone, Debug)]
pub struct Posted {
    /// The conversation it went to.
    pub conversation_id: ConversationId,
    /// The run that answers it.
    pub run_id: RunId,
    /// Runs ahead of it (0: next up).
    pub position: u32,
    /// The log sequence of the commit.
    pub seq: u64,
}

/// Posts `message` for `caller`: the agent and conversation must be theirs, the day's quota must
/// allow it, and a new conversation is started when the agent has none.
pub async fn post(
    state: &AppState,
    caller: &ApprovedUser,
    message: Message,
) -> Result<Posted, ApiError> {
    let conversation_id = match message.target {
        Target::Conversation(id) => {
            owned_conversation(state, caller.id, id).await?;
            id
        }
        Target::Both(id, agent) => {
            let conversation = owned_conversation(state, caller.id, id).await?;
            if conversation.agent_id != agent {
                return Err(ApiError::NotFound);
            }
            owned_agent(state, caller.id, agent).await?;
            id
        }
        Target::Agent(agent) => {
            owned_agent(state, caller.id, agent).await?;
            latest_or_new(state, caller, agent).await?
        }
    };
    quota::check_message_quota(&state.db, &state.settings.tiers, caller).await?;
    let run_id = run_of(message.command_id);
    let committed = state
        .commands
        .conversations
        .execute(
            &conversation_id.to_string(),
            ConversationCommand::PostMessage {
                message_id: MessageId(uuid::Uuid::new_v5(
                    &message.command_id.0,
                    b"warren/message-of-post",
                )),
                run_id,
                text: message.text,
                client_id: message.client.id,
                client_kind: Some(message.client.kind),
                mode: message.mode,
            },
            &meta(caller.id, message.command_id),
        )
        .await?;
    let position = committed
        .events
        .iter()
        .find_map(|e| match e.event {
            ConversationEvent::RunQueued { position, .. } => Some(position),
            _ => None,
        })
        .unwrap_or(0);
    Ok(Posted {
        conversation_id,
        run_id,
        position,
        seq: committed.sequence,
    })
}

/// The run a post with `command_id` asks for: it follows from the command's id, so a retried
/// command names the same run (and a channel can know it before posting).
pub fn run_of(command_id: CommandId) -> RunId {
    RunId(uuid::Uuid::new_v5(&command_id.0, b"warren/run-of-post"))
}

/// The caller's latest conversation with `agent`, or a new one.
async fn latest_or_new(
    state: &AppState,
    caller: &ApprovedUser,
    agent: AgentId,
) -> Result<ConversationId, ApiError> {
    let latest = views::conversations(&state.db, caller.id, Some(agent), 1).await?;
    if let Some(conversation) = latest.first() {
        return Ok(ConversationId(conversation.id));
    }
    Ok(start(state, caller, agent, None, CommandId::new())
        .await?
        .conversation_id)
}

/// A conversation that was started.
#[derive(Clone, Debug)]
pub struct Started {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Its agent.
    pub agent_id: AgentId,
    /// Its title, if given.
    pub title: Option<String>,
    /// When.
    pub created_at: Option<DateTime<Utc>>,
    /// The log sequence of the commit.
    pub seq: u64,
}

/// Starts a conversation of `caller` with their agent `agent`, and waits until it is listed.
pub async fn start(
    state: &AppState,
    caller: &ApprovedUser,
    agent: AgentId,
    title: Option<String>,
    command_id: CommandId,
) -> Result<Started, ApiError> {
    let (agent_id, _) = owned_agent(state, caller.id, agent).await?;
    let conversation_id = ConversationId(uuid::Uuid::new_v5(
        &command_id.0,
        b"warren/conversation-of-start",
    ));
    let committed = state
        .commands
        .conversations
        .execute(
            &conversation_id.to_string(),
            ConversationCommand::StartConversation {
                conversation_id,
                user_id: caller.id,
                agent_id,
                title: title.clone(),
            },
            &meta(caller.id, command_id),
        )
        .await?;
    // The next message without an id must find this conversation.
    consistency::caught_up(&state.db, projection::CONVERSATIONS, committed.sequence).await?;
    let (conversation, _) = load(state, conversation_id).await?;
    Ok(Started {
        conversation_id,
        agent_id,
        title: conversation.title,
        created_at: committed.events.first().map(|e| e.occurred_at),
        seq: committed.sequence,
    })
}

/// A cancelled run.
#[derive(Clone, Copy, Debug)]
pub struct Cancelled {
    /// The run.
    pub run_id: RunId,
    /// True when the run was waiting and is gone; false when its worker was asked to stop it.
    pub at_once: bool,
}

/// Cancels `run` (or the conversation's running or next run) in the caller's conversation.
pub async fn cancel(
    state: &AppState,
    caller: &ApprovedUser,
    conversation_id: ConversationId,
    run: Option<RunId>,
    command_id: CommandId,
) -> Result<Cancelled, ApiError> {
    let conversation = owned_conversation(state, caller.id, conversation_id).await?;
    let run_id = match run {
        Some(run) => run,
        None => conversation
            .runs
            .first()
            .map(|slot| slot.run_id)
            .ok_or_else(|| ApiError::conflict("run_not_active", "no run is going on"))?,
    };
    let committed = state
        .commands
        .conversations
        .execute(
            &conversation_id.to_string(),
            ConversationCommand::RequestCancel { run_id },
            &meta(caller.id, command_id),
        )
        .await?;
    Ok(Cancelled {
        run_id,
        at_once: committed
            .events
            .iter()
            .any(|e| matches!(e.event, ConversationEvent::RunCancelled { .. })),
    })
}

/// Clears the history of the caller's latest conversation with `agent`; which one, if any.
pub async fn clear(
    state: &AppState,
    caller: &ApprovedUser,
    agent: AgentId,
    command_id: CommandId,
) -> Result<Option<ConversationId>, ApiError> {
    owned_agent(state, caller.id, agent).await?;
    let latest = views::conversations(&state.db, caller.id, Some(agent), 1).await?;
    let Some(conversation) = latest.first() else {
        return Ok(None);
    };
    let committed = state
        .commands
        .conversations
        .execute(
            &conversation.id.to_string(),
            ConversationCommand::ClearHistory,
            &meta(caller.id, command_id),
        )
        .await?;
    consistency::caught_up(&state.db, projection::CONVERSATIONS, committed.sequence).await?;
    Ok(Some(ConversationId(conversation.id)))
}

/// The conversation's current state if it is `user`'s; 404 otherwise (missing or someone
/// else's alike).
pub async fn owned_conversation(
    state: &AppState,
    user: UserId,
    id: ConversationId,
) -> Result<Conversation, ApiError> {
    let (conversation, _) = load(state, id).await?;
    if conversation.id.is_none() || conversation.user_id != user {
        return Err(ApiError::NotFound);
    }
    Ok(conversation)
}

async fn load(state: &AppState, id: ConversationId) -> Result<(Conversation, u64), ApiError> {
    state
        .commands
        .conversations
        .load(&id.to_string())
        .await
        .map_err(ApiError::internal)
}

/// The metadata of a command `user` gives.
pub(super) fn meta(user: UserId, command_id: CommandId) -> CommandMeta {
    CommandMeta {
        command_id,
        ..CommandMeta::new(Actor::User(user))
    }
}
