//! The Conversation aggregate's value types: post modes, cancel reasons, run results, queue slots.

use crate::ids::{ConversationId, MessageId, RunId};
use crate::names::string_enum;
use serde::{Deserialize, Serialize};

/// How many runs (running + waiting) one conversation may hold; more is `queue_full`.
pub const MAX_PENDING_RUNS: usize = 20;

string_enum! {
    /// What a new message does when a run is already going.
    #[derive(Default)]
    pub enum PostMode {
        /// Wait behind the runs already there.
        #[default]
        Queue => "queue",
        /// Cancel the running run and go next.
        Interrupt => "interrupt",
    }
}

string_enum! {
    /// Why a run was cancelled.
    pub enum CancelReason {
        /// Someone asked (`RequestCancel`, or the worker confirming it stopped).
        Requested => "requested",
        /// A message posted in interrupt mode replaced it.
        Interrupted => "interrupted",
    }
}

/// One tool call made during a run, with its result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id (from the model, or synthesised by the chat worker).
    pub call_id: String,
    /// The tool's name, e.g. `shell`.
    pub name: String,
    /// The arguments as the model gave them.
    pub args: serde_json::Value,
    /// The tool's output (bounded by the worker).
    pub output: String,
    /// Whether the tool succeeded.
    pub ok: bool,
}

/// Tokens a run consumed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
}

/// A run that is running or waiting. Its index in [`super::Conversation::runs`] is its queue
/// position: 0 is running (or next up when nothing runs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSlot {
    /// The run.
    pub run_id: RunId,
    /// The message it answers.
    pub message_id: MessageId,
    /// That message's text (what the worker sends the agent).
    #[serde(default)]
    pub text: String,
    /// The worker running it; `None` while it waits.
    pub worker_id: Option<String>,
    /// Whether a cancel was requested while it runs.
    pub cancel_requested: bool,
}

impl RunSlot {
    /// Whether a worker has started it.
    pub fn is_running(&self) -> bool {
        self.worker_id.is_some()
    }
}

/// Where a forked conversation came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkOrigin {
    /// The conversation it continues.
    pub origin_id: ConversationId,
    /// The origin's log sequence of the last message it keeps.
    pub after: u64,
}
