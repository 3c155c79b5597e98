//! Live deltas: what a run looks like while it happens. Not aggregate state and never folded:
//! the chat worker publishes them to `conv.<id>.live` (one JSON [`LiveDelta`] per message, with
//! a per-message TTL) in the same stream as the conversation's facts, so a reader of
//! `conv.<id>.>` sees one ordered sequence. The durable `RunCompleted` carries the final text
//! and tool calls, so replay never needs a delta.

use crate::ids::RunId;
use crate::names::string_enum;
use serde::{Deserialize, Serialize};

string_enum! {
    /// What a run is doing, for typing indicators. The last two come before the run starts,
    /// while its agent's paused sandbox is woken (docs/adr/0024).
    pub enum RunStatus {
        /// Waiting on the model.
        Thinking => "thinking",
        /// A tool is running.
        ExecutingTool => "executing_tool",
        /// Text is streaming.
        Streaming => "streaming",
        /// The agent was paused while idle and is being resumed; the run starts once it answers.
        Resuming => "resuming",
        /// The agent is paused and the platform runs as many sandboxes as it may: the run waits,
        /// queued, until one stops or pauses.
        AtCapacity => "at_capacity",
    }
}

/// One live delta of a run, stored as `{"type": "<variant>", "data": {…}}` (snake_case types).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum LiveDelta {
    /// Text the model produced since the previous token delta (coalesced over ~25–40 ms).
    Token {
        /// The run.
        run_id: RunId,
        /// The text, in order after the previous token delta of this run.
        text: String,
    },
    /// The model called a tool.
    ToolCall {
        /// The run.
        run_id: RunId,
        /// The call's id (from the runtime, or synthesised by the chat worker).
        call_id: String,
        /// The tool's name.
        name: String,
        /// Its arguments.
        args: serde_json::Value,
    },
    /// A tool finished.
    ToolResult {
        /// The run.
        run_id: RunId,
        /// The call it answers.
        call_id: String,
        /// Whether it succeeded.
        ok: bool,
        /// Its output, bounded by the worker.
        output: String,
    },
    /// The run's state changed.
    Status {
        /// The run.
        run_id: RunId,
        /// The new state.
        status: RunStatus,
    },
    /// The agent produced a file, downloadable from `GET /api/v1/files/{agent_id}/{path}`.
    File {
        /// The run.
        run_id: RunId,
        /// Path inside the agent's workspace.
        path: String,
        /// Size in bytes, when known.
        size: Option<u64>,
    },
}

impl LiveDelta {
    /// The run the delta belongs to.
    pub fn run_id(&self) -> RunId {
        match self {
            LiveDelta::Token { run_id, .. }
            | LiveDelta::ToolCall { run_id, .. }
            | LiveDelta::ToolResult { run_id, .. }
            | LiveDelta::Status { run_id, .. }
            | LiveDelta::File { run_id, .. } => *run_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn deltas_have_a_stable_json_shape() {
        let run_id = RunId(Uuid::nil());
        let token = LiveDelta::Token {
            run_id,
            text: "Hel".into(),
        };
        assert_eq!(
            serde_json::to_value(&token).expect("deltas serialize"),
            serde_json::json!({"type": "token", "data": {"run_id": Uuid::nil(), "text": "Hel"}})
        );
        let status = LiveDelta::Status {
            run_id,
            status: RunStatus::ExecutingTool,
        };
        let json = serde_json::to_string(&status).expect("deltas serialize");
        assert!(json.contains(r#""status":"executing_tool""#), "{json}");
        assert_eq!(
            serde_json::from_str::<LiveDelta>(&json).expect("deltas deserialize"),
            status
        );
        assert_eq!(status.run_id(), run_id);
    }
}
