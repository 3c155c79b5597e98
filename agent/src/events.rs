//! [`AgentEvent`]: every JSON object the runtime streams (`data: {"type": ...}`), and
//! [`sse_response`], which turns a channel of them into an SSE response with an `id:` on every
//! event and a `keepalive` data event whenever the stream has been idle for the interval.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::response::sse::{Event, Sse};
use futures::Stream;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::model::Usage;

/// One streamed event. Field names follow baal-agent where it has the event.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEvent {
    /// A piece of model output as it streams (extension).
    Token {
        /// The new text.
        delta: String,
    },
    /// The complete text of one model turn, sent when that turn's text is complete (before its
    /// `tool_use` events). Concatenating a turn's `token` deltas gives the same text.
    Text {
        /// The turn's text.
        content: String,
    },
    /// The model called a tool.
    ToolUse {
        /// The call id (the provider's; extension).
        call_id: String,
        /// The tool.
        name: String,
        /// The arguments object (the raw text if the model sent invalid JSON).
        input: Value,
    },
    /// A tool finished (extension).
    ToolResult {
        /// The call it answers.
        call_id: String,
        /// The tool.
        name: String,
        /// Whether it succeeded.
        ok: bool,
        /// Its output, bounded by the output cap.
        output: String,
        /// Whether the output was cut.
        truncated: bool,
    },
    /// A workspace file was written by a tool.
    File {
        /// Workspace-relative path (download with `GET /files/{path}`).
        path: String,
        /// Its size in bytes.
        size: u64,
    },
    /// The run (or exec) failed; always the last event.
    Error {
        /// Human-readable.
        message: String,
        /// Stable code: `cancelled`, `shutting_down`, `max_iterations`, `model_*`,
        /// `exec_failed`.
        code: String,
        /// Whether the same request may succeed if sent again.
        retryable: bool,
        /// The same text as `message` (baal-agent clients read `content`).
        content: String,
    },
    /// The run finished; always the last event.
    Done {
        /// All model turns' texts, in order, joined by a blank line.
        text: String,
        /// Tokens summed over the run's model turns.
        usage: Usage,
        /// How many model turns the run took.
        iterations: u32,
    },
    /// Sent when nothing else was for the keepalive interval.
    Keepalive,
    /// `POST /exec`: a piece of stdout.
    Stdout {
        /// The text.
        data: String,
    },
    /// `POST /exec`: a piece of stderr.
    Stderr {
        /// The text.
        data: String,
    },
    /// `POST /exec`: the command ended; always the last event.
    Exit {
        /// Exit code, or null if killed by a signal.
        code: Option<i32>,
        /// The signal that ended it, if any.
        signal: Option<i32>,
        /// The timeout fired.
        timed_out: bool,
        /// Output beyond the cap was not streamed.
        truncated: bool,
    },
}

impl AgentEvent {
    /// An `error` event.
    pub fn error(code: &str, message: impl Into<String>, retryable: bool) -> Self {
        let message = message.into();
        AgentEvent::Error {
            content: message.clone(),
            message,
            code: code.to_owned(),
            retryable,
        }
    }
}

/// Numbers events: monotonic per chat (shared by its runs) or per exec request.
#[derive(Clone, Default)]
pub struct EventIds(Arc<AtomicU64>);

impl EventIds {
    fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// The SSE response for a run or exec: events from `events` until it closes, each with the
/// next id, and a `keepalive` event after every `keepalive` of silence.
pub fn sse_response(
    events: mpsc::Receiver<AgentEvent>,
    ids: EventIds,
    keepalive: Duration,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures::stream::unfold((events, ids), move |(mut events, ids)| async move {
        let event = match tokio::time::timeout(keepalive, events.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => return None,
            Err(_) => AgentEvent::Keepalive,
        };
        let json = serde_json::to_string(&event).unwrap_or_else(|err| {
            tracing::error!(error = %err, "event not serializable");
            r#"{"type":"keepalive"}"#.to_owned()
        });
        let sse = Event::default().id(ids.next().to_string()).data(json);
        Some((Ok(sse), (events, ids)))
    });
    Sse::new(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_serialize_with_their_type_tag() {
        assert_eq!(
            serde_json::to_value(AgentEvent::error("cancelled", "run cancelled", false))
                .expect("json"),
            json!({"type": "error", "code": "cancelled", "message": "run cancelled",
                   "content": "run cancelled", "retryable": false})
        );
        assert_eq!(
            serde_json::to_value(AgentEvent::Keepalive).expect("json"),
            json!({"type": "keepalive"})
        );
        assert_eq!(
            serde_json::to_value(AgentEvent::Done {
                text: "hi".into(),
                usage: Usage {
                    input_tokens: 1,
                    output_tokens: 2
                },
                iterations: 1
            })
            .expect("json"),
            json!({"type": "done", "text": "hi", "iterations": 1,
                   "usage": {"input_tokens": 1, "output_tokens": 2}})
        );
    }
}
