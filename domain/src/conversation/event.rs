//! What has happened in a conversation. Each variant's name is its stable type string.
//!
//! Positions: a run's position is the number of runs ahead of it (running or waiting). 0 means
//! it is next up and starts as soon as a worker takes it; cancelling or finishing a run shifts
//! every later position down by one.

use super::types::{CancelReason, TokenUsage, ToolCall};
use crate::ids::{AgentId, ConversationId, MessageId, RunId, UserId};
use crate::user::Provider;
use serde::{Deserialize, Serialize};

/// A fact about a conversation, stored as `{"type": "<variant>", "data": {…}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ConversationEvent {
    /// A session was opened.
    ConversationStarted {
        /// The conversation.
        conversation_id: ConversationId,
        /// Its user.
        user_id: UserId,
        /// Its agent.
        agent_id: AgentId,
        /// Its title, if given.
        title: Option<String>,
    },
    /// A session was opened as a fork of another: its history is the origin's messages up to
    /// and including the one at log sequence `after`, as the origin's history showed them when
    /// this was recorded (docs/adr/0027-fork.md).
    ConversationForked {
        /// The new conversation.
        conversation_id: ConversationId,
        /// Its user.
        user_id: UserId,
        /// Its agent.
        agent_id: AgentId,
        /// Its title, if given.
        title: Option<String>,
        /// The conversation it continues.
        origin_id: ConversationId,
        /// The origin's log sequence of the last message it keeps.
        after: u64,
    },
    /// The title changed.
    ConversationRenamed {
        /// The conversation.
        conversation_id: ConversationId,
        /// The new title.
        title: String,
    },
    /// The user posted a message (followed by its `RunQueued`).
    MessagePosted {
        /// The conversation.
        conversation_id: ConversationId,
        /// The message.
        message_id: MessageId,
        /// The conversation's agent.
        agent_id: AgentId,
        /// The conversation's user.
        user_id: UserId,
        /// The text.
        text: String,
        /// The posting client's connection id.
        client_id: Option<String>,
        /// The posting client's kind.
        client_kind: Option<String>,
        /// The run that will answer it.
        run_id: RunId,
        /// That run's position (0 = next up).
        position: u32,
    },
    /// A run joined the queue at `position`.
    RunQueued {
        /// The conversation.
        conversation_id: ConversationId,
        /// The run.
        run_id: RunId,
        /// The message it answers.
        message_id: MessageId,
        /// Runs ahead of it (0 = next up).
        position: u32,
    },
    /// A worker took the run.
    RunStarted {
        /// The conversation.
        conversation_id: ConversationId,
        /// The run.
        run_id: RunId,
        /// The worker.
        worker_id: String,
    },
    /// The run finished with a reply.
    RunCompleted {
        /// The conversation.
        conversation_id: ConversationId,
        /// The run.
        run_id: RunId,
        /// Id of the agent's reply message.
        reply_id: MessageId,
        /// The conversation's user (for usage).
        user_id: UserId,
        /// The conversation's agent (for usage).
        agent_id: AgentId,
        /// The full reply text.
        text: String,
        /// Tool calls made, in order.
        tool_calls: Vec<ToolCall>,
        /// Tokens consumed.
        usage: TokenUsage,
        /// Wall time of the run.
        duration_ms: u64,
        /// The model the agent was configured with when the run was taken (version 2; `None`
        /// for a version 1 event, or when it was not known).
        model: Option<String>,
        /// The provider that served it: the owner's own key's, else the platform's (version 2;
        /// `None` for a version 1 event).
        provider: Option<Provider>,
    },
    /// The run failed.
    RunFailed {
        /// The conversation.
        conversation_id: ConversationId,
        /// The run.
        run_id: RunId,
        /// Machine code.
        code: String,
        /// Human-readable message.
        message: String,
        /// Whether posting again may succeed.
        retryable: bool,
    },
    /// Cancelling the running run was requested; its worker must stop it.
    CancelRequested {
        /// The conversation.
        conversation_id: ConversationId,
        /// The run.
        run_id: RunId,
    },
    /// The run is cancelled and out of the queue. A worker still running it must stop.
    RunCancelled {
        /// The conversation.
        conversation_id: ConversationId,
        /// The run.
        run_id: RunId,
        /// Why.
        reason: CancelReason,
    },
    /// The messages so far were forgotten.
    HistoryCleared {
        /// The conversation.
        conversation_id: ConversationId,
    },
    /// The agent sent a message of its own accord (not a run's reply).
    AgentMessagePosted {
        /// The conversation.
        conversation_id: ConversationId,
        /// The message.
        message_id: MessageId,
        /// The conversation's user.
        user_id: UserId,
        /// Its agent.
        agent_id: AgentId,
        /// The text.
        text: String,
    },
}

impl ConversationEvent {
    /// The stable type string: the variant name, e.g. `MessagePosted`.
    pub fn event_type(&self) -> &'static str {
        match self {
            ConversationEvent::ConversationStarted { .. } => "ConversationStarted",
            ConversationEvent::ConversationForked { .. } => "ConversationForked",
            ConversationEvent::ConversationRenamed { .. } => "ConversationRenamed",
            ConversationEvent::MessagePosted { .. } => "MessagePosted",
            ConversationEvent::RunQueued { .. } => "RunQueued",
            ConversationEvent::RunStarted { .. } => "RunStarted",
            ConversationEvent::RunCompleted { .. } => "RunCompleted",
            ConversationEvent::RunFailed { .. } => "RunFailed",
            ConversationEvent::CancelRequested { .. } => "CancelRequested",
            ConversationEvent::RunCancelled { .. } => "RunCancelled",
            ConversationEvent::HistoryCleared { .. } => "HistoryCleared",
            ConversationEvent::AgentMessagePosted { .. } => "AgentMessagePosted",
        }
    }

    /// The schema version of this event's shape: `"2"` for `RunCompleted` (which gained
    /// `model` and `provider`), `"1"` for every other conversation event.
    pub fn event_version(&self) -> &'static str {
        crate::versions::current(self.event_type())
    }
}
