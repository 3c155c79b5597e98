//! The gateway's `event` frames as types: each payload is decoded by its event name into its
//! own struct (`token` → [`Kind::Token`], …), and the frame as received is kept for `--json`.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use warren_domain::agent::DeploymentStep;

/// One event frame.
#[derive(Debug)]
pub struct Event {
    /// The frame as the gateway sent it (printed as is with `--json`).
    pub raw: Value,
    /// Its cursor in the session's log, when it has one.
    pub seq: Option<u64>,
    /// What it says.
    pub kind: Kind,
}

/// What an event says.
#[derive(Debug)]
pub enum Kind {
    /// A message posted to the session (by this client, another one, or the agent itself).
    Message(MessageEvent),
    /// A run waits behind another.
    Queued(Queued),
    /// A run's status (`thinking`, `executing_tool`, `resuming`, …).
    Status(RunStatus),
    /// A piece of the reply.
    Token(Token),
    /// The agent calls a tool.
    ToolCall(ToolCall),
    /// A tool's result.
    ToolResult(ToolResult),
    /// The agent wrote a file.
    File(File),
    /// A run completed.
    Final(Final),
    /// A run failed, or the connection is about to end.
    Error(ErrorEvent),
    /// A run was cancelled.
    Cancelled(Cancelled),
    /// The cursor was older than the log: the recent messages instead.
    Reset(Reset),
    /// A change on the user-wide feed.
    Feed(FeedFrame),
    /// Anything else (`renamed`, `history_cleared`, events of a newer gateway).
    Other,
}

/// `message`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageEvent {
    /// `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
    /// Whether this connection posted it.
    #[serde(default)]
    pub from_self: bool,
}

/// `queued`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Queued {
    /// Runs ahead of it (0: it runs now).
    pub position: u64,
}

/// `status`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    /// Its status.
    pub status: String,
}

/// `token`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Token {
    /// The run.
    pub run_id: String,
    /// The piece of text.
    pub content: String,
}

/// `tool_call`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolCall {
    /// The tool.
    pub tool_name: String,
    /// Its input.
    #[serde(default)]
    pub arguments: Value,
}

/// `tool_result`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolResult {
    /// The outcome.
    pub result: ToolOutcome,
}

/// A tool's outcome.
#[derive(Debug, Deserialize)]
pub struct ToolOutcome {
    /// Whether it succeeded.
    pub success: bool,
    /// Its output (bounded by the runtime).
    #[serde(default)]
    pub content: String,
}

/// `file`.
#[derive(Debug, Deserialize)]
pub struct File {
    /// Workspace-relative path.
    pub path: String,
    /// Bytes.
    pub size: u64,
}

/// `final`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Final {
    /// The run.
    pub run_id: String,
    /// The whole reply.
    #[serde(default)]
    pub content: String,
}

/// `error`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorEvent {
    /// The run, if it is a run's failure.
    #[serde(default)]
    pub run_id: Option<String>,
    /// Stable code.
    #[serde(default)]
    pub error_code: String,
    /// The sentence.
    #[serde(default)]
    pub message: String,
    /// Whether trying again may work.
    #[serde(default)]
    pub retryable: bool,
}

/// `cancelled`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cancelled {
    /// The run.
    pub run_id: String,
    /// Why.
    #[serde(default)]
    pub message: String,
}

/// `reset`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reset {
    /// The latest messages.
    #[serde(default)]
    pub recent_messages: Vec<HistoryMessage>,
}

/// A stored message (`sessions.history`, `reset`, `sessions.switch`).
#[derive(Debug, Deserialize)]
pub struct HistoryMessage {
    /// `user` or `assistant`.
    pub role: String,
    /// The text (`null` for a run that gave no answer).
    #[serde(default)]
    pub content: Option<String>,
    /// A run that gave no answer: `failed` or `cancelled`.
    #[serde(default)]
    pub status: Option<String>,
}

/// A `feed` event: `{"type": "agent" | "conversation", "v": 1, "id", "seq", "change"}`.
#[derive(Debug, Deserialize)]
pub struct FeedFrame {
    /// `agent` or `conversation`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The agent or conversation.
    pub id: String,
    /// What changed.
    pub change: FeedChange,
}

/// A feed change (only the fields the client shows).
#[derive(Debug, Deserialize)]
pub struct FeedChange {
    /// `deployment_step`, `deployed`, `deployment_failed`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The step, for step and failure changes.
    #[serde(default)]
    pub step: Option<DeploymentStep>,
    /// What went wrong, for failures.
    #[serde(default)]
    pub message: Option<String>,
}

impl Event {
    /// Decodes a raw `event` frame; a payload that does not fit its event is [`Kind::Other`].
    pub fn parse(raw: Value) -> Self {
        let seq = raw.get("seq").and_then(Value::as_u64);
        let name = raw.get("event").and_then(Value::as_str).unwrap_or("");
        let payload = raw.get("payload").cloned().unwrap_or(Value::Null);
        let kind = match name {
            "message" => decode(payload).map(Kind::Message),
            "queued" => decode(payload).map(Kind::Queued),
            "status" => decode(payload).map(Kind::Status),
            "token" => decode(payload).map(Kind::Token),
            "tool_call" => decode(payload).map(Kind::ToolCall),
            "tool_result" => decode(payload).map(Kind::ToolResult),
            "file" => decode(payload).map(Kind::File),
            "final" => decode(payload).map(Kind::Final),
            "error" => decode(payload).map(Kind::Error),
            "cancelled" => decode(payload).map(Kind::Cancelled),
            "reset" => decode(payload).map(Kind::Reset),
            "feed" => decode(payload).map(Kind::Feed),
            _ => None,
        }
        .unwrap_or(Kind::Other);
        Self { raw, seq, kind }
    }

    /// The run this event ends, if it ends one (`final`, a run's `error`, `cancelled`).
    pub fn ends_run(&self) -> Option<&str> {
        match &self.kind {
            Kind::Final(f) => Some(&f.run_id),
            Kind::Cancelled(c) => Some(&c.run_id),
            Kind::Error(e) => e.run_id.as_deref(),
            _ => None,
        }
    }
}

fn decode<T: DeserializeOwned>(payload: Value) -> Option<T> {
    serde_json::from_value(payload).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_decoded_by_name_and_unknown_ones_kept_as_other() {
        let token = Event::parse(json!({"type": "event", "event": "token", "seq": 4,
            "payload": {"runId": "r", "content": "Hi", "delta": true, "sessionId": "s"}}));
        assert_eq!(token.seq, Some(4));
        assert!(matches!(token.kind, Kind::Token(ref t) if t.content == "Hi"));
        let done = Event::parse(json!({"type": "event", "event": "final",
            "payload": {"runId": "r", "content": "Hi."}}));
        assert_eq!(done.ends_run(), Some("r"));
        let step = Event::parse(json!({"type": "event", "event": "feed", "payload": {
            "type": "agent", "v": 1, "id": "a", "seq": 3,
            "change": {"type": "deployment_step", "deployment_id": "d", "step": "installing"}}}));
        assert!(
            matches!(step.kind, Kind::Feed(ref f) if f.change.step == Some(DeploymentStep::Installing))
        );
        let other = Event::parse(json!({"type": "event", "event": "renamed", "payload": {}}));
        assert!(matches!(other.kind, Kind::Other));
    }
}
