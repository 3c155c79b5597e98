//! Proactive messages: what an agent's runtime queued at its `GET /pending` (reminders,
//! background results), delivered into that agent's conversations as `AgentMessagePosted`, so
//! every client of the conversation sees them live and in its history. The chat worker collects
//! them after each run and on a timer; the edge's `GET /chat/{id}/pending` collects them too.
//! The runtime's drain is a take, so each message is delivered once whoever collects it.
//!
//! A runtime is hostile: a chat id that is not a conversation of *that* agent is dropped (and
//! logged), and the text is escaped and fitted to the reply rule, never refused for it.

use crate::{CommandError, CommandMeta, CommandService};
use serde::Deserialize;
use std::collections::HashMap;
use warren_domain::Actor;
use warren_domain::conversation::ConversationCommand;
use warren_domain::ids::{AgentId, ConversationId, MessageId};
use warren_domain::text;

/// The largest `/pending` answer read from a runtime (it is not trusted with a reader's memory).
pub const PENDING_CAP: usize = 1024 * 1024;
/// The most messages delivered from one take; the rest are dropped (and logged), so a runtime
/// cannot flood the log.
pub const MAX_PER_TAKE: usize = 20;
/// The longest proactive message, in characters (the runtime's `schedule_message` limit); longer
/// ones are cut.
pub const MAX_CHARS: usize = 4_000;

/// One message as a runtime's `/pending` lists it.
#[derive(Clone, Debug, Deserialize)]
pub struct Pending {
    /// The chat (the conversation's id).
    pub chat_id: String,
    /// The text.
    pub content: String,
}

/// `GET /pending`'s answer.
#[derive(Debug, Default, Deserialize)]
pub struct PendingList {
    /// The messages taken.
    #[serde(default)]
    pub messages: Vec<Pending>,
}

/// A message delivered into the log.
#[derive(Clone, Debug)]
pub struct Delivered {
    /// Its conversation.
    pub conversation_id: ConversationId,
    /// The message.
    pub message_id: MessageId,
    /// Its text as recorded.
    pub text: String,
}

/// Delivers `pending` messages of `agent_id`'s runtime into its conversations, as the platform
/// role `role`. Messages for other agents' conversations, unknown chats or blank texts are
/// dropped, at most [`MAX_PER_TAKE`] are delivered and each is cut to [`MAX_CHARS`]; a log
/// failure stops the delivery (the rest are lost with the runtime's take, and logged).
pub async fn deliver(
    service: &CommandService,
    agent_id: AgentId,
    pending: Vec<Pending>,
    role: &str,
) -> Vec<Delivered> {
    let meta = CommandMeta::new(Actor::System(role.to_owned()));
    let mut delivered = Vec::new();
    if pending.len() > MAX_PER_TAKE {
        tracing::warn!(%agent_id, taken = pending.len(), kept = MAX_PER_TAKE, "a runtime queued too many proactive messages; the rest are dropped");
    }
    // Whether each chat named is a conversation of this agent, looked up once per take.
    let mut checked: HashMap<String, Option<ConversationId>> = HashMap::new();
    for message in pending.into_iter().take(MAX_PER_TAKE) {
        let conversation_id = match checked.get(&message.chat_id) {
            Some(known) => *known,
            None => {
                let known = owned_by(service, agent_id, &message.chat_id).await;
                checked.insert(message.chat_id.clone(), known);
                known
            }
        };
        let Some(conversation_id) = conversation_id else {
            continue;
        };
        let text = cut(&text::REPLY.fit(&message.content), MAX_CHARS);
        if text.trim().is_empty() {
            continue;
        }
        let message_id = MessageId::new();
        let command = ConversationCommand::DeliverAgentMessage {
            message_id,
            text: text.clone(),
        };
        match service
            .conversations
            .execute(&conversation_id.to_string(), command, &meta)
            .await
        {
            Ok(_) => delivered.push(Delivered {
                conversation_id,
                message_id,
                text,
            }),
            Err(CommandError::Rejected(err)) => {
                tracing::warn!(%agent_id, %conversation_id, error = %err, "a proactive message was refused");
            }
            Err(err) => {
                // The log is unreachable: stop here (the rest of this take is lost, and logged).
                tracing::error!(%agent_id, %conversation_id, error = %err, "delivering proactive messages failed");
                break;
            }
        }
    }
    delivered
}

/// The conversation `chat_id` names, if it is one of `agent_id`'s (logged when not).
async fn owned_by(
    service: &CommandService,
    agent_id: AgentId,
    chat_id: &str,
) -> Option<ConversationId> {
    let Ok(conversation_id) = chat_id.parse::<ConversationId>() else {
        tracing::warn!(%agent_id, chat_id = %text::escape(chat_id, text::Lines::Single), "a proactive message for an unknown chat, dropped");
        return None;
    };
    let theirs = match service
        .conversations
        .load(&conversation_id.to_string())
        .await
    {
        Ok((conversation, _)) => {
            conversation.id == Some(conversation_id) && conversation.agent_id == agent_id
        }
        Err(err) => {
            tracing::warn!(%agent_id, %conversation_id, error = %err, "loading a conversation for a proactive message failed");
            false
        }
    };
    if !theirs {
        tracing::warn!(%agent_id, %conversation_id, "a proactive message for a conversation of another agent, dropped");
        return None;
    }
    Some(conversation_id)
}

/// `text` cut to at most `max` characters.
fn cut(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}
