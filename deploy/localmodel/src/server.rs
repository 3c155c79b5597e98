//! The OpenAI protocol over the engine: `POST /v1/chat/completions` (streaming as
//! `chat.completion.chunk` server-sent events ending in `[DONE]`, with a `usage` chunk when
//! `stream_options.include_usage` asks, or one `chat.completion`) and `GET /v1/models`.
//! Errors use OpenAI's envelope, `{"error":{"message","type","code"}}`.
//!
//! `tools` are accepted and ignored: the model cannot call them, so an agent's run against it
//! is a plain answer. Tool results and calls in the history reach the model as text.

use crate::MODEL_ID;
use crate::engine::{Engine, Event, Finish, Job, Message, Refusal};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;

/// What every request needs.
pub struct Shared {
    pub engine: Engine,
    pub api_key: Option<String>,
    pub max_tokens: u32,
}

type AppState = Arc<Shared>;

/// The routes.
pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "not_found",
                "no such route: this server has POST /v1/chat/completions and GET /v1/models",
            )
        })
        .with_state(Arc::new(shared))
}

#[derive(Deserialize)]
struct ChatRequest {
    messages: Vec<InMessage>,
    #[serde(default)]
    stream: bool,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f32>,
    seed: Option<u32>,
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct InMessage {
    role: String,
    #[serde(default)]
    content: Value,
    #[serde(default)]
    tool_calls: Vec<Value>,
}

impl InMessage {
    /// The message as the model's chat template takes it: text only, in the roles it knows.
    fn flatten(self) -> Message {
        let mut text = match self.content {
            Value::String(text) => text,
            Value::Array(parts) => parts
                .iter()
                .filter_map(|part| part.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        };
        for call in &self.tool_calls {
            let function = &call["function"];
            let name = function["name"].as_str().unwrap_or("a tool");
            let arguments = function["arguments"].as_str().unwrap_or("{}");
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&format!("(called {name} with {arguments})"));
        }
        let role = match self.role.as_str() {
            "system" | "developer" => "system",
            "assistant" => "assistant",
            "tool" => {
                text = format!("Tool result:\n{text}");
                "user"
            }
            _ => "user",
        };
        Message {
            role: role.to_owned(),
            content: text,
        }
    }
}

async fn models() -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "warren"}],
    }))
    .into_response()
}

async fn chat(State(shared): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(key) = &shared.api_key {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(presented.as_bytes().ct_eq(key.as_bytes())) {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
                "a valid API key is required (Authorization: Bearer …)",
            );
        }
    }
    let request: ChatRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(why) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_body",
                &format!("the body is not a chat completion request: {why}"),
            );
        }
    };
    if request.messages.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_body",
            "messages must not be empty",
        );
    }
    let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
    let stream = request.stream;
    let (events, mut answer) = mpsc::channel(64);
    let job = Job {
        messages: request
            .messages
            .into_iter()
            .map(InMessage::flatten)
            .collect(),
        max_tokens: request
            .max_completion_tokens
            .or(request.max_tokens)
            .unwrap_or(shared.max_tokens)
            .max(1),
        temperature: request.temperature.unwrap_or(0.7),
        seed: request.seed.unwrap_or_else(rand_seed),
        events,
    };
    if let Err(refusal) = shared.engine.submit(job) {
        return refused(refusal);
    }
    // The prompt decoded (or refused) decides the status; tokens follow.
    let prompt_tokens = match answer.recv().await {
        Some(Event::Started { prompt_tokens }) => prompt_tokens,
        Some(Event::Failed(refusal)) => return refused(refusal),
        _ => return refused(Refusal::Internal("the local model gave no answer".into())),
    };
    let meta = Meta::new();
    if stream {
        Sse::new(chunks(meta, answer, prompt_tokens, include_usage)).into_response()
    } else {
        whole(meta, answer, prompt_tokens).await
    }
}

/// Id, creation time and model of one completion, repeated in each of its chunks.
struct Meta {
    id: String,
    created: u64,
}

impl Meta {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self {
            id: format!("chatcmpl-local-{}", NEXT.fetch_add(1, Ordering::Relaxed)),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    fn chunk(&self, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": MODEL_ID,
            "choices": choices,
        })
    }
}

fn usage(prompt_tokens: u32, completion_tokens: u32) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

fn finish_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

/// The streamed answer: a role chunk, content chunks, a finish chunk, the usage chunk if
/// asked, `[DONE]`. A failure mid-answer is an `error` event, then the end.
fn chunks(
    meta: Meta,
    mut answer: mpsc::Receiver<Event>,
    prompt_tokens: u32,
    include_usage: bool,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    async_stream(move |out| async move {
        let data = |value: Value| SseEvent::default().data(value.to_string());
        let role = json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]);
        if out.send(data(meta.chunk(role))).await.is_err() {
            return;
        }
        while let Some(event) = answer.recv().await {
            let next = match event {
                Event::Text(text) => data(meta.chunk(
                    json!([{"index": 0, "delta": {"content": text}, "finish_reason": null}]),
                )),
                Event::Done {
                    completion_tokens,
                    finish,
                } => {
                    let end =
                        json!([{"index": 0, "delta": {}, "finish_reason": finish_reason(finish)}]);
                    if out.send(data(meta.chunk(end))).await.is_err() {
                        return;
                    }
                    if include_usage {
                        let mut last = meta.chunk(json!([]));
                        last["usage"] = usage(prompt_tokens, completion_tokens);
                        if out.send(data(last)).await.is_err() {
                            return;
                        }
                    }
                    let _ = out.send(SseEvent::default().data("[DONE]")).await;
                    return;
                }
                Event::Failed(refusal) => {
                    let (_, body) = refusal_parts(refusal);
                    let _ = out.send(data(body)).await;
                    return;
                }
                Event::Started { .. } => continue,
            };
            if out.send(next).await.is_err() {
                return;
            }
        }
    })
}

/// A stream fed by a task through a channel (the task ends when the client does).
fn async_stream<F, Fut>(body: F) -> impl Stream<Item = Result<SseEvent, Infallible>>
where
    F: FnOnce(mpsc::Sender<SseEvent>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (out, events) = mpsc::channel(16);
    tokio::spawn(body(out));
    futures::stream::unfold(events, |mut events| async move {
        events.recv().await.map(|event| (Ok(event), events))
    })
}

/// The answer as one `chat.completion`.
async fn whole(meta: Meta, mut answer: mpsc::Receiver<Event>, prompt_tokens: u32) -> Response {
    let mut text = String::new();
    while let Some(event) = answer.recv().await {
        match event {
            Event::Text(piece) => text.push_str(&piece),
            Event::Done {
                completion_tokens,
                finish,
            } => {
                return axum::Json(json!({
                    "id": meta.id,
                    "object": "chat.completion",
                    "created": meta.created,
                    "model": MODEL_ID,
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish_reason(finish),
                    }],
                    "usage": usage(prompt_tokens, completion_tokens),
                }))
                .into_response();
            }
            Event::Failed(refusal) => return refused(refusal),
            Event::Started { .. } => {}
        }
    }
    refused(Refusal::Internal(
        "the local model stopped mid-answer".into(),
    ))
}

fn refusal_parts(refusal: Refusal) -> (StatusCode, Value) {
    let (status, kind, code, message) = match refusal {
        Refusal::TooLong(message) => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "context_length_exceeded",
            message,
        ),
        Refusal::Busy => (
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "overloaded",
            "the local model is busy with other answers; try again shortly".to_owned(),
        ),
        Refusal::Internal(message) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            format!("the local model failed: {message}"),
        ),
    };
    (
        status,
        json!({"error": {"message": message, "type": kind, "code": code}}),
    )
}

fn refused(refusal: Refusal) -> Response {
    let (status, body) = refusal_parts(refusal);
    (status, axum::Json(body)).into_response()
}

fn error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"message": message, "type": kind, "code": code}})),
    )
        .into_response()
}

/// A seed per request when the caller names none (answers vary, as a provider's do).
fn rand_seed() -> u32 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id()
}
