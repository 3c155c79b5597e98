//! The chat worker's client of an agent runtime: `POST /chat` read as a stream of
//! [`RuntimeEvent`]s, plus cancel and clear. Speaks both `warren-agent` (token deltas, call ids,
//! tool results) and a plain baal-agent (whole-turn `text`, no ids): the differences are
//! smoothed over by the run, not here.
//!
//! A runtime and the model behind it are hostile: every string they send is escaped here, as it
//! is read, to keep the domain's text rules (control characters become visible control pictures,
//! `␀` for NUL; ids, names and codes are also cut to their maxima), so what the worker publishes
//! live and records in the log never carries a control character (`docs/adr/0015-text-rules.md`).

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use std::borrow::Cow;
use std::time::Duration;
use warren_commands::proactive::{PENDING_CAP, PendingList};
use warren_commands::{bounded, trace};
use warren_domain::conversation::TokenUsage;
use warren_domain::conversation::history::{Entry, Role};
use warren_domain::text::{self, Lines};
use warren_domain::user::ModelProtocol;

/// How long connecting and sending a request to a runtime may take (the stream itself is bounded
/// by the runtime's keepalives, see [`IDLE_TIMEOUT`]).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A runtime stream silent for this long is broken: runtimes send a keepalive every 15 s.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a runtime could not be talked to.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The request did not reach the runtime or its answer broke off.
    #[error("the agent runtime is unreachable")]
    Unreachable(#[source] reqwest::Error),
    /// The runtime answered with an error status.
    #[error("the agent runtime answered {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The body (bounded).
        body: String,
    },
    /// The event stream broke off or could not be parsed.
    #[error("the agent runtime's stream broke: {0}")]
    Stream(String),
}

/// One event of a runtime's chat stream.
#[derive(Clone, Debug, PartialEq)]
pub enum RuntimeEvent {
    /// A piece of model text (`warren-agent` only).
    Token(String),
    /// The whole text of one model turn.
    Text(String),
    /// A tool call; baal-agent sends no id.
    ToolUse {
        /// The call's id, if the runtime gave one.
        call_id: Option<String>,
        /// The tool.
        name: String,
        /// Its arguments.
        input: serde_json::Value,
    },
    /// A tool's result (`warren-agent` only).
    ToolResult {
        /// The call it answers.
        call_id: String,
        /// Whether it succeeded.
        ok: bool,
        /// Its output.
        output: String,
    },
    /// The agent wrote a workspace file.
    File {
        /// Its path in the workspace.
        path: String,
        /// Its size, if given.
        size: Option<u64>,
    },
    /// The run finished.
    Done {
        /// Every turn's text, if the runtime sent it.
        text: Option<String>,
        /// Tokens consumed.
        usage: TokenUsage,
    },
    /// The run failed (or was cancelled: code `cancelled`).
    Error {
        /// Machine code.
        code: String,
        /// What happened.
        message: String,
        /// Whether trying again may succeed.
        retryable: bool,
    },
}

/// The JSON in one `data:` line.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Wire {
    Token {
        delta: String,
    },
    Text {
        content: String,
    },
    ToolUse {
        call_id: Option<String>,
        name: String,
        #[serde(default)]
        input: serde_json::Value,
    },
    ToolResult {
        call_id: String,
        #[serde(default = "yes")]
        ok: bool,
        #[serde(default)]
        output: String,
    },
    File {
        path: String,
        size: Option<u64>,
    },
    Done {
        text: Option<String>,
        usage: Option<TokenUsage>,
    },
    Error {
        code: Option<String>,
        message: Option<String>,
        content: Option<String>,
        retryable: Option<bool>,
    },
    #[serde(other)]
    Other,
}

fn yes() -> bool {
    true
}

/// `text` with what multi-line text may not hold escaped (no copy when there is none).
fn escaped(text: String) -> String {
    match text::escape(&text, Lines::Multi) {
        Cow::Borrowed(_) => text,
        Cow::Owned(escaped) => escaped,
    }
}

impl Wire {
    /// The event, every string escaped (and ids, names and codes fitted) to the text rules.
    fn into_event(self) -> Option<RuntimeEvent> {
        Some(match self {
            Wire::Token { delta } => RuntimeEvent::Token(escaped(delta)),
            Wire::Text { content } => RuntimeEvent::Text(escaped(content)),
            Wire::ToolUse {
                call_id,
                name,
                input,
            } => RuntimeEvent::ToolUse {
                call_id: call_id.map(|id| text::CALL_ID.fit(&id)),
                name: text::TOOL_NAME.fit(&name),
                input: text::escape_json(&input),
            },
            Wire::ToolResult {
                call_id,
                ok,
                output,
            } => RuntimeEvent::ToolResult {
                call_id: text::CALL_ID.fit(&call_id),
                ok,
                output: escaped(output),
            },
            Wire::File { path, size } => RuntimeEvent::File {
                path: text::escape(&path, Lines::Single).into_owned(),
                size,
            },
            Wire::Done { text, usage } => RuntimeEvent::Done {
                text: text.map(escaped),
                usage: usage.unwrap_or_default(),
            },
            Wire::Error {
                code,
                message,
                content,
                retryable,
            } => RuntimeEvent::Error {
                code: text::FAILURE_CODE.fit(code.as_deref().unwrap_or("runtime_error")),
                message: text::FAILURE_MESSAGE.fit(
                    message
                        .or(content)
                        .as_deref()
                        .unwrap_or("the agent runtime reported an error"),
                ),
                retryable: retryable.unwrap_or(false),
            },
            // Keepalives and types this worker does not know.
            Wire::Other => return None,
        })
    }
}

/// One agent's runtime, as the chat worker reaches it.
#[derive(Clone)]
pub struct Runtime {
    http: reqwest::Client,
    endpoint: String,
    token: String,
}

impl Runtime {
    /// A runtime at `endpoint` (its base URL) accepting `token`.
    pub fn new(http: reqwest::Client, endpoint: &str, token: String) -> Self {
        Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            token,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint)
    }

    /// Starts a run of `message` in `chat_id` and streams its events; `protocol` is the one the
    /// runtime speaks to the model proxy for this run (the user's own key's), if not its
    /// configured one; `history`, if given, replaces the chat's history in the runtime first
    /// (entries without a text, runs that gave no reply, are left out). No key or URL is ever sent: the proxy holds them (ADR 23). The stream
    /// ends after the terminal `Done` or `Error`, or with an error if the runtime goes away
    /// first.
    pub async fn chat(
        &self,
        chat_id: &str,
        message: &str,
        protocol: Option<ModelProtocol>,
        history: Option<&[Entry]>,
    ) -> Result<impl Stream<Item = Result<RuntimeEvent, RuntimeError>> + use<>, RuntimeError> {
        let mut body = serde_json::json!({"message": message, "chat_id": chat_id});
        if let Some(fields) = body.as_object_mut() {
            if let Some(protocol) = protocol {
                fields.insert("provider".into(), protocol.as_str().into());
            }
            if let Some(history) = history {
                fields.insert("history".into(), turns(history));
            }
        }
        // The call is a span of the run's trace (until the runtime's answer starts), and the
        // runtime continues it: its model calls carry the context on.
        let call = async {
            let answer = self
                .http
                .post(self.url("/chat"))
                .bearer_auth(&self.token)
                .header(trace::HEADER, trace::current().unwrap_or_else(trace::fresh))
                .json(&body)
                .send()
                .await;
            if let Ok(answer) = &answer {
                trace::attribute(
                    "http.response.status_code",
                    i64::from(answer.status().as_u16()),
                );
            }
            answer
        };
        let response = tokio::time::timeout(
            CONNECT_TIMEOUT,
            trace::child("runtime POST /chat", trace::SpanKind::Client, call),
        )
        .await
        .map_err(|_| RuntimeError::Stream("no answer to POST /chat".to_owned()))?
        .map_err(RuntimeError::Unreachable)?;
        let status = response.status();
        if !status.is_success() {
            return Err(RuntimeError::Status {
                status: status.as_u16(),
                body: error_body(response).await,
            });
        }
        let events = bounded::events(response.bytes_stream(), MAX_EVENT).eventsource();
        Ok(events.filter_map(|frame| async move {
            match frame {
                Err(err) => Some(Err(RuntimeError::Stream(err.to_string()))),
                Ok(frame) => match serde_json::from_str::<Wire>(&frame.data) {
                    Ok(wire) => wire.into_event().map(Ok),
                    Err(err) => {
                        tracing::warn!(error = %err, data = %frame.data, "unreadable runtime event, skipped");
                        None
                    }
                },
            }
        }))
    }

    /// Asks the runtime to stop the chat's running run (its tool's process group is killed).
    /// A baal-agent has no cancel route: closing the stream is what stops it there.
    pub async fn cancel(&self, chat_id: &str) -> Result<(), RuntimeError> {
        self.send(
            self.http
                .post(self.url(&format!("/chat/{}/cancel", encode(chat_id)))),
        )
        .await
    }

    /// Whether the runtime answers `GET /health`.
    pub async fn healthy(&self) -> bool {
        self.http
            .get(self.url("/health"))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
    }

    /// Takes the proactive messages the runtime queued (every chat's): `GET /pending`, read up
    /// to [`PENDING_CAP`] bytes (a runtime is not trusted with the worker's memory).
    pub async fn pending(&self) -> Result<PendingList, RuntimeError> {
        let response = self
            .http
            .get(self.url("/pending"))
            .bearer_auth(&self.token)
            .timeout(CONNECT_TIMEOUT)
            .send()
            .await
            .map_err(RuntimeError::Unreachable)?;
        let status = response.status();
        if !status.is_success() {
            return Err(RuntimeError::Status {
                status: status.as_u16(),
                body: String::new(),
            });
        }
        let body = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            bounded::read(response.bytes_stream(), PENDING_CAP),
        )
        .await
        {
            Ok(Ok(body)) => body,
            Ok(Err(bounded::Bounded::Source(err))) => return Err(RuntimeError::Unreachable(err)),
            Ok(Err(too_large)) => {
                return Err(RuntimeError::Status {
                    status: status.as_u16(),
                    body: too_large.to_string(),
                });
            }
            Err(_) => return Err(RuntimeError::Stream("a slow /pending answer".to_owned())),
        };
        serde_json::from_slice(&body).map_err(|err| RuntimeError::Status {
            status: status.as_u16(),
            body: format!("an unreadable /pending answer: {err}"),
        })
    }

    /// Clears the chat's history in the runtime.
    pub async fn clear(&self, chat_id: &str) -> Result<(), RuntimeError> {
        self.send(
            self.http
                .delete(self.url(&format!("/chat/{}", encode(chat_id)))),
        )
        .await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(), RuntimeError> {
        let response = request
            .bearer_auth(&self.token)
            .timeout(CONNECT_TIMEOUT)
            .send()
            .await
            .map_err(RuntimeError::Unreachable)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        Err(RuntimeError::Status {
            status: status.as_u16(),
            body: error_body(response).await,
        })
    }
}

/// A handed-over history as `POST /chat` takes it: `[{"role", "content"}]`, oldest first.
fn turns(history: &[Entry]) -> serde_json::Value {
    history
        .iter()
        .filter_map(|entry| {
            let content = entry.text.as_deref()?;
            let role = match entry.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            Some(serde_json::json!({"role": role, "content": content}))
        })
        .collect()
}

/// The largest SSE event read from a runtime's run stream (a reply's text arrives in many).
const MAX_EVENT: usize = 1024 * 1024;
/// The part of an error answer's body kept for the log.
const ERROR_BODY: usize = 512;

/// The start of an error answer's body, read within a bound and a timeout (for the log).
async fn error_body(response: reqwest::Response) -> String {
    use futures::StreamExt;
    let mut body = Vec::new();
    let read = async {
        let mut stream = response.bytes_stream();
        while let Some(Ok(chunk)) = stream.next().await {
            body.extend_from_slice(&chunk);
            if body.len() >= ERROR_BODY {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CONNECT_TIMEOUT, read).await;
    String::from_utf8_lossy(&body)
        .chars()
        .take(ERROR_BODY)
        .collect()
}

/// Percent-encodes a chat id for a path segment (ids are UUIDs, but the protocol allows more).
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Option<RuntimeEvent> {
        serde_json::from_str::<Wire>(json)
            .expect("wire json")
            .into_event()
    }

    #[test]
    fn both_runtimes_events_are_understood() {
        assert_eq!(
            parse(r#"{"type":"token","delta":"Hel"}"#),
            Some(RuntimeEvent::Token("Hel".into()))
        );
        // baal-agent: no call id, raw string input.
        assert_eq!(
            parse(r#"{"type":"tool_use","name":"shell","input":"{\"command\":\"ls\"}"}"#),
            Some(RuntimeEvent::ToolUse {
                call_id: None,
                name: "shell".into(),
                input: serde_json::json!("{\"command\":\"ls\"}"),
            })
        );
        // baal-agent errors carry `content`, not `message`.
        assert_eq!(
            parse(r#"{"type":"error","content":"boom"}"#),
            Some(RuntimeEvent::Error {
                code: "runtime_error".into(),
                message: "boom".into(),
                retryable: false,
            })
        );
        assert_eq!(
            parse(r#"{"type":"done","text":"hi","usage":{"input_tokens":3,"output_tokens":4}}"#),
            Some(RuntimeEvent::Done {
                text: Some("hi".into()),
                usage: TokenUsage {
                    input_tokens: 3,
                    output_tokens: 4
                },
            })
        );
        assert!(parse(r#"{"type":"done"}"#).is_some());
        assert_eq!(parse(r#"{"type":"keepalive"}"#), None);
        assert_eq!(parse(r#"{"type":"something_new","x":1}"#), None);
    }

    #[test]
    fn every_string_a_runtime_sends_is_escaped_as_it_is_read() {
        assert_eq!(
            parse(r#"{"type":"token","delta":"a\u0000b\u001b[2J\n"}"#),
            Some(RuntimeEvent::Token("a␀b␛[2J\n".into()))
        );
        assert_eq!(
            parse(
                r#"{"type":"tool_use","call_id":"c\u0000","name":"sh\u0007","input":{"k\u0000":["\u007f"]}}"#
            ),
            Some(RuntimeEvent::ToolUse {
                call_id: Some("c␀".into()),
                name: "sh␇".into(),
                input: serde_json::json!({"k␀": ["␡"]}),
            })
        );
        assert_eq!(
            parse(r#"{"type":"tool_result","call_id":"c\u0000","output":"x\u0000\ty"}"#),
            Some(RuntimeEvent::ToolResult {
                call_id: "c␀".into(),
                ok: true,
                output: "x␀\ty".into(),
            })
        );
        assert_eq!(
            parse(r#"{"type":"file","path":"a\nb\u0000.txt","size":3}"#),
            Some(RuntimeEvent::File {
                path: "a␊b␀.txt".into(),
                size: Some(3),
            })
        );
        assert_eq!(
            parse(r#"{"type":"done","text":"bye\u0000"}"#),
            Some(RuntimeEvent::Done {
                text: Some("bye␀".into()),
                usage: TokenUsage::default(),
            })
        );
        let long_code = "E".repeat(100);
        let error = format!(r#"{{"type":"error","code":"{long_code}\n","message":"m\u0000"}}"#);
        match parse(&error) {
            Some(RuntimeEvent::Error { code, message, .. }) => {
                assert_eq!(text::FAILURE_CODE.violation(&code), None, "{code}");
                assert_eq!(message, "m␀");
            }
            other => panic!("an error event, got {other:?}"),
        }
    }

    #[test]
    fn chat_ids_are_encoded_for_paths() {
        assert_eq!(encode("u1:a1"), "u1:a1");
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }
}
