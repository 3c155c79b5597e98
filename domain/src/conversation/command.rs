//! What can be asked of a conversation: by clients (start, fork, rename, post, cancel, clear) and by
//! the chat worker (start, complete, fail, confirm a cancel, deliver a proactive message).

use super::types::{PostMode, TokenUsage, ToolCall};
use crate::ids::{AgentId, ConversationId, MessageId, RunId, UserId};
use crate::user::Provider;
use serde::{Deserialize, Serialize};

/// A request to change a conversation. Only [`ConversationCommand::StartConversation`] names it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ConversationCommand {
    /// Open a session between one user and one agent.
    StartConversation {
        /// The new conversation's id.
        conversation_id: ConversationId,
        /// Its user.
        user_id: UserId,
        /// Its agent.
        agent_id: AgentId,
        /// Optional title; blank means none.
        title: Option<String>,
    },
    /// Open a session that continues another one of the same user and agent: its history is
    /// the origin's up to the message at log sequence `after` (docs/adr/0027-fork.md). That
    /// `after` names a message of the origin is the caller's check, as ownership is.
    ForkConversation {
        /// The new conversation's id.
        conversation_id: ConversationId,
        /// Its user (the origin's).
        user_id: UserId,
        /// Its agent (the origin's).
        agent_id: AgentId,
        /// Optional title; blank means none.
        title: Option<String>,
        /// The conversation it continues.
        origin_id: ConversationId,
        /// The origin's log sequence of the last message it keeps.
        after: u64,
    },
    /// Change the title.
    RenameConversation {
        /// The new title (not blank).
        title: String,
    },
    /// Post the user's message and queue a run to answer it.
    PostMessage {
        /// The message's id.
        message_id: MessageId,
        /// The run that will answer it.
        run_id: RunId,
        /// The text (not blank).
        text: String,
        /// The posting client's connection id, so clients can tell `fromSelf`.
        client_id: Option<String>,
        /// The posting client's kind, e.g. `web`, `cli`, `telegram`.
        client_kind: Option<String>,
        /// Queue behind the current run, or interrupt it.
        #[serde(default)]
        mode: PostMode,
    },
    /// Chat worker: take the run at the head of the queue.
    StartRun {
        /// The run (must be next up).
        run_id: RunId,
        /// Who runs it.
        worker_id: String,
    },
    /// Chat worker: the running run finished.
    CompleteRun {
        /// The run.
        run_id: RunId,
        /// Id of the agent's reply message.
        reply_id: MessageId,
        /// The full reply text.
        text: String,
        /// Tool calls made, in order.
        tool_calls: Vec<ToolCall>,
        /// Tokens consumed.
        usage: TokenUsage,
        /// Wall time of the run.
        duration_ms: u64,
        /// The agent's model when the run was taken, if known.
        model: Option<String>,
        /// The provider that served it, if known.
        provider: Option<Provider>,
    },
    /// Chat worker: the running run failed.
    FailRun {
        /// The run.
        run_id: RunId,
        /// Machine code, e.g. `TOOL_EXECUTION_FAILED`.
        code: String,
        /// Human-readable message.
        message: String,
        /// Whether posting again may succeed.
        retryable: bool,
    },
    /// Ask to cancel a run: a waiting run is cancelled at once, a running one is flagged for its
    /// worker.
    RequestCancel {
        /// The run.
        run_id: RunId,
    },
    /// Chat worker: the run is stopped (after a cancel request, or for its own reasons).
    CancelRun {
        /// The run.
        run_id: RunId,
    },
    /// Forget the messages so far (refused while any run is running or waiting).
    ClearHistory,
    /// Chat worker: a message the agent sent of its own accord (a reminder, a background
    /// result), collected from its runtime's `/pending`.
    DeliverAgentMessage {
        /// The message's id.
        message_id: MessageId,
        /// The text (not blank).
        text: String,
    },
}

impl ConversationCommand {
    /// A stable snake_case name for logs and errors, e.g. `post_message`.
    pub fn name(&self) -> &'static str {
        match self {
            ConversationCommand::StartConversation { .. } => "start_conversation",
            ConversationCommand::ForkConversation { .. } => "fork_conversation",
            ConversationCommand::RenameConversation { .. } => "rename_conversation",
            ConversationCommand::PostMessage { .. } => "post_message",
            ConversationCommand::StartRun { .. } => "start_run",
            ConversationCommand::CompleteRun { .. } => "complete_run",
            ConversationCommand::FailRun { .. } => "fail_run",
            ConversationCommand::RequestCancel { .. } => "request_cancel",
            ConversationCommand::CancelRun { .. } => "cancel_run",
            ConversationCommand::ClearHistory => "clear_history",
            ConversationCommand::DeliverAgentMessage { .. } => "deliver_agent_message",
        }
    }
}
