//! Talking to the model: the provider-neutral conversation ([`Message`], [`ToolCall`]), one
//! streamed model turn ([`ModelStream`] yielding [`ModelEvent`]s) and its failures
//! ([`ModelError`]). The wire formats live in [`openai`] and [`anthropic`]; [`sse`] parses the
//! event stream both use.

pub mod anthropic;
pub mod openai;
pub mod sse;

use std::collections::VecDeque;
use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{ModelSettings, ProviderKind};
use sse::SseParser;

/// One entry of a chat's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Message {
    /// What the user said.
    User {
        /// The text.
        content: String,
    },
    /// One model turn: its text and the tools it called.
    Assistant {
        /// The text (may be empty when the turn only calls tools).
        text: String,
        /// The calls, in order.
        #[serde(default)]
        tool_calls: Vec<ToolCall>,
    },
    /// The result of one tool call, fed back to the model.
    Tool {
        /// The call this answers.
        call_id: String,
        /// The tool's name (Anthropic needs none, some OpenAI-compatible servers do).
        name: String,
        /// What the tool printed or returned (bounded).
        output: String,
        /// Whether the tool succeeded.
        ok: bool,
    },
}

/// A tool call the model made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's call id (`call_…`, `toolu_…`), or one we made up if it sent none.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments: a JSON object, or the raw text if the model sent invalid JSON.
    pub input: Value,
}

/// A tool offered to the model.
#[derive(Clone, Debug)]
pub struct ToolSpec {
    /// The name the model calls it by.
    pub name: &'static str,
    /// What it does, for the model.
    pub description: &'static str,
    /// JSON Schema of its input.
    pub parameters: Value,
}

/// Token counts reported by the provider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Self) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
    }
}

/// What a model turn's stream yields.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelEvent {
    /// A piece of text.
    TextDelta(String),
    /// A complete tool call (its arguments fully received).
    ToolCall(ToolCall),
    /// The turn's token usage.
    Usage(Usage),
    /// The turn ended normally.
    Finished,
}

/// Why a model turn failed. The `Display` of each variant is public (it becomes the `error`
/// event's `message`): it never carries its source, whose text may hold a URL with a key in it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Neither a key nor a base URL is configured: the provider's public API cannot be called
    /// without a key, so nothing is sent.
    #[error(
        "no model provider is configured: set WARREN_AGENT_BASE_URL and/or WARREN_AGENT_API_KEY"
    )]
    NotConfigured,
    /// Through the platform's model proxy: the platform has no model provider for this agent
    /// (neither its owner's key nor a platform default).
    #[error("the platform has no model provider configured for this agent")]
    PlatformNotConfigured,
    /// Through the platform's model proxy: the platform could not reach the provider.
    #[error("could not reach the {provider} model provider")]
    UpstreamUnreachable {
        /// The protocol spoken (`openai`, `anthropic`).
        provider: &'static str,
    },
    /// Through the platform's model proxy: the agent owner's daily token quota is used up.
    #[error("{message}")]
    QuotaExceeded {
        /// The platform's words (the limit and what was used).
        message: String,
    },
    /// Connecting or sending failed.
    #[error("could not reach the {provider} model provider")]
    Unreachable {
        /// The protocol spoken (`openai`, `anthropic`).
        provider: &'static str,
        /// What the HTTP client said (logged, never sent).
        #[source]
        source: reqwest::Error,
    },
    /// The provider answered with an error status.
    #[error("model provider answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The provider's error message (bounded).
        message: String,
    },
    /// The provider sent an error event inside the stream.
    #[error("model provider error ({kind}): {message}")]
    Provider {
        /// The provider's error type (`overloaded_error`, `server_error`, …).
        kind: String,
        /// Its message.
        message: String,
    },
    /// The body broke off (connection reset, read timeout).
    #[error("model stream broke off")]
    Broken(#[source] reqwest::Error),
    /// The body ended before the provider's end marker.
    #[error("model stream ended before the turn finished")]
    Truncated,
    /// The stream did not follow the protocol.
    #[error("malformed model stream: {0}")]
    Protocol(String),
}

impl ModelError {
    /// The stable code sent in the `error` event.
    pub fn code(&self) -> &'static str {
        match self {
            ModelError::NotConfigured | ModelError::PlatformNotConfigured => "model_not_configured",
            ModelError::Unreachable { .. } | ModelError::UpstreamUnreachable { .. } => {
                "model_unreachable"
            }
            ModelError::QuotaExceeded { .. } => "quota_exceeded",
            ModelError::Status { .. } => "model_http_error",
            ModelError::Provider { .. } => "model_error",
            ModelError::Broken(_) => "model_stream_broken",
            ModelError::Truncated => "model_stream_truncated",
            ModelError::Protocol(_) => "model_protocol_error",
        }
    }

    /// Whether retrying the same request may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            ModelError::Unreachable { .. }
            | ModelError::UpstreamUnreachable { .. }
            | ModelError::Broken(_)
            | ModelError::Truncated => true,
            ModelError::NotConfigured
            | ModelError::PlatformNotConfigured
            | ModelError::QuotaExceeded { .. } => false,
            ModelError::Status { status, .. } => {
                matches!(status, 408 | 409 | 429 | 529) || *status >= 500
            }
            ModelError::Provider { kind, .. } => matches!(
                kind.as_str(),
                "overloaded_error" | "api_error" | "server_error" | "rate_limit_error"
            ),
            ModelError::Protocol(_) => false,
        }
    }
}

/// What a decoder does with each SSE frame.
trait Decode {
    /// The events this frame completes.
    fn frame(&mut self, frame: sse::Frame) -> Result<Vec<ModelEvent>, ModelError>;
    /// Called when the body ends: `Ok(events)` if the turn is complete.
    fn end(&mut self) -> Result<Vec<ModelEvent>, ModelError>;
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// One model turn being streamed.
pub struct ModelStream {
    body: ByteStream,
    parser: SseParser,
    decoder: Box<dyn Decode + Send>,
    queued: VecDeque<ModelEvent>,
    finished: bool,
}

impl ModelStream {
    /// The next event; `None` after [`ModelEvent::Finished`] or an error.
    pub async fn next(&mut self) -> Option<Result<ModelEvent, ModelError>> {
        loop {
            if let Some(event) = self.queued.pop_front() {
                if event == ModelEvent::Finished {
                    self.finished = true;
                }
                return Some(Ok(event));
            }
            if self.finished {
                return None;
            }
            let decoded = match self.body.next().await {
                Some(Ok(bytes)) => match self.parser.feed(&bytes) {
                    Ok(frames) => frames
                        .into_iter()
                        .map(|frame| self.decoder.frame(frame))
                        .collect::<Result<Vec<_>, _>>()
                        .map(|events| events.into_iter().flatten().collect()),
                    Err(sse::LineTooLong) => Err(ModelError::Protocol("line too long".into())),
                },
                Some(Err(err)) => Err(ModelError::Broken(err)),
                None => {
                    let last = self.parser.finish().map(|frame| self.decoder.frame(frame));
                    match last.transpose() {
                        Ok(last) => self.decoder.end().map(|mut events| {
                            let mut all = last.unwrap_or_default();
                            all.append(&mut events);
                            all
                        }),
                        Err(err) => Err(err),
                    }
                }
            };
            match decoded {
                Ok(events) => self.queued.extend(events),
                Err(err) => {
                    self.finished = true;
                    return Some(Err(err));
                }
            }
        }
    }
}

/// Everything one model request needs.
pub struct TurnRequest<'a> {
    /// Provider, base URL, key, model, prompt.
    pub settings: &'a ModelSettings,
    /// The conversation so far.
    pub history: &'a [Message],
    /// The tools offered.
    pub tools: &'a [ToolSpec],
    /// The W3C trace context of the platform's run, passed on to the provider (or the
    /// platform's model proxy) so the model call belongs to the same trace.
    pub traceparent: Option<&'a str>,
}

/// The header on the platform model proxy's own refusals, naming their code (Warren's ADR 23);
/// the provider's own errors pass through the proxy without it.
pub const PROXY_ERROR: &str = "warren-proxy-error";

/// Sends one streamed model request and returns its event stream once the provider answered
/// 200; an error status becomes [`ModelError::Status`] with the provider's message, or, from the
/// platform's model proxy, the refusal its [`PROXY_ERROR`] header names.
pub async fn stream_turn(
    http: &reqwest::Client,
    request: TurnRequest<'_>,
) -> Result<ModelStream, ModelError> {
    let settings = request.settings;
    if !settings.is_configured() {
        return Err(ModelError::NotConfigured);
    }
    let base = settings.base_url();
    let (builder, decoder): (_, Box<dyn Decode + Send>) = match settings.provider {
        ProviderKind::Openai => {
            let body = openai::request_body(settings, request.history, request.tools);
            let mut builder = http.post(format!("{base}/chat/completions")).json(&body);
            if let Some(key) = settings.key() {
                builder = builder.bearer_auth(key.expose());
            }
            (builder, Box::new(openai::Decoder::default()))
        }
        ProviderKind::Anthropic => {
            let body = anthropic::request_body(settings, request.history, request.tools);
            let mut builder = http
                .post(format!("{base}/messages"))
                .header("anthropic-version", anthropic::API_VERSION)
                .json(&body);
            if let Some(key) = settings.key() {
                builder = builder.header("x-api-key", key.expose());
            }
            (builder, Box::new(anthropic::Decoder::default()))
        }
    };
    let builder = match request.traceparent {
        Some(traceparent) => builder.header("traceparent", traceparent),
        None => builder,
    };
    let response = builder
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send()
        .await
        .map_err(|source| ModelError::Unreachable {
            provider: settings.provider.as_str(),
            source,
        })?;
    let status = response.status();
    if !status.is_success() {
        let refusal = settings
            .proxy
            .as_ref()
            .and_then(|_| response.headers().get(PROXY_ERROR))
            .and_then(|code| code.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.unwrap_or_default();
        let message = provider_message(&text);
        return Err(match refusal.as_deref() {
            Some("model_not_configured") => ModelError::PlatformNotConfigured,
            Some("model_unreachable") => ModelError::UpstreamUnreachable {
                provider: settings.provider.as_str(),
            },
            Some("quota_exceeded") => ModelError::QuotaExceeded { message },
            _ => ModelError::Status {
                status: status.as_u16(),
                message,
            },
        });
    }
    Ok(ModelStream {
        body: Box::pin(response.bytes_stream()),
        parser: SseParser::default(),
        decoder,
        queued: VecDeque::new(),
        finished: false,
    })
}

/// The message inside a provider's error body (`{"error": {"message"}}` for both), else the
/// body's start.
fn provider_message(body: &str) -> String {
    let parsed = serde_json::from_str::<Value>(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v["error"]["message"].as_str().or(v["error"].as_str()))
        .unwrap_or(body);
    crate::process::prefix_within(message.trim(), 500).to_owned()
}

/// Parses a tool call's accumulated JSON arguments (empty = `{}`); invalid JSON is kept as a
/// string so the tool can report it to the model.
pub(crate) fn parse_arguments(raw: &str) -> Value {
    if raw.trim().is_empty() {
        return Value::Object(Default::default());
    }
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}
