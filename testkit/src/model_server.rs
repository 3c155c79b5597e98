//! [`ModelServer`]: a local, scripted LLM provider that speaks the real wire protocols, so the
//! agent runtime and the chat worker are tested against HTTP exactly as a provider sends it.
//!
//! - OpenAI `POST /v1/chat/completions`: streaming (`data: {chunk}` lines ending in
//!   `data: [DONE]`, tool calls as `choices[0].delta.tool_calls[]` fragments with
//!   index/id/name/arguments split across chunks, a final `usage` chunk with empty `choices` when
//!   `stream_options.include_usage` is set) and non-streaming (`chat.completion` JSON).
//! - Anthropic `POST /v1/messages`: streaming (`event:` + `data:` pairs: `message_start`, `ping`,
//!   `content_block_start` / `_delta` (`text_delta`, `input_json_delta`) / `_stop`,
//!   `message_delta` with usage, `message_stop`) and non-streaming (`message` JSON). Requests
//!   without `anthropic-version` or `max_tokens` are refused with 400, as the real API does.
//!
//! Each request takes the next [`Reply`] from a queue; with none queued it answers 500 with a
//! message naming the problem. Every request is recorded (body, path and the API key presented).
//!
//! ```no_run
//! use serde_json::json;
//! use warren_testkit::model_server::{ModelServer, Reply};
//!
//! # async fn example() {
//! let server = ModelServer::start().await;
//! server.push(Reply::tool_call("shell", json!({"command": "echo hi"})));
//! server.push(Reply::text("It printed hi."));
//! // point the code under test at server.url() (".../v1"), run it, then:
//! assert_eq!(server.request_count(), 2);
//! let second = &server.requests()[1];
//! # }
//! ```

mod anthropic;
mod openai;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A scripted provider on `127.0.0.1:<free port>`; stops when dropped.
pub struct ModelServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

/// One scripted answer: what the model "says", and how the response ends.
#[derive(Clone, Debug)]
pub struct Reply {
    pub(crate) text: Option<String>,
    pub(crate) tool_calls: Vec<(String, Value)>,
    pub(crate) ending: Ending,
    pub(crate) chunk_delay: Duration,
    pub(crate) usage: Option<(u64, u64)>,
}

/// How a reply's response ends.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Ending {
    /// Finish reason, usage and the protocol's end marker.
    Complete,
    /// Stream the content, then send nothing more until the client goes away.
    Hang,
    /// Stream the content, then break the connection mid-body.
    Drop,
    /// An HTTP error status with the provider's JSON error body.
    Status(u16, String),
    /// Stream the content, then the provider's in-stream error event.
    StreamError(String),
}

/// A request the server received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// `/v1/chat/completions` or `/v1/messages`.
    pub path: String,
    /// The key from `Authorization: Bearer` or `x-api-key`, if any.
    pub api_key: Option<String>,
    /// The JSON body (`Value::String` of the raw text if it was not JSON).
    pub body: Value,
    /// The W3C `traceparent` header, if one came.
    pub traceparent: Option<String>,
}

pub(crate) struct Shared {
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<RecordedRequest>>,
    expected_key: Mutex<Option<String>>,
    next_id: AtomicU64,
    pub(crate) stop: CancellationToken,
}

impl Shared {
    /// A fresh id suffix for call ids and message ids.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// A test helper: a poisoned lock only means another test thread panicked already.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ModelServer {
    /// Starts the server on a free port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("model server: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("model server: local addr");
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            replies: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            expected_key: Mutex::new(None),
            next_id: AtomicU64::new(1),
            stop: stop.clone(),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(openai_completions))
            .route("/v1/messages", post(anthropic_messages))
            .with_state(shared.clone());
        let until = stop.clone();
        tokio::spawn(async move {
            // Not graceful: a hanging reply must not keep the server alive past the test.
            tokio::select! {
                _ = axum::serve(listener, app) => {}
                _ = until.cancelled() => {}
            }
        });
        Self { addr, shared, stop }
    }

    /// Starts the server and requires `key` on every request (else 401, as providers answer).
    pub async fn start_with_key(key: &str) -> Self {
        let server = Self::start().await;
        server.expect_api_key(key);
        server
    }

    /// The base URL to configure as a provider's base: `http://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requires `key` (as `Authorization: Bearer` or `x-api-key`) from now on.
    pub fn expect_api_key(&self, key: &str) {
        *lock(&self.shared.expected_key) = Some(key.to_owned());
    }

    /// Queues the answer to a future request (first pushed, first served).
    pub fn push(&self, reply: Reply) {
        lock(&self.shared.replies).push_back(reply);
    }

    /// How many pushed replies no request has taken yet.
    pub fn pending_replies(&self) -> usize {
        lock(&self.shared.replies).len()
    }

    /// The JSON bodies of every request received, in order.
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.shared.requests)
            .iter()
            .map(|r| r.body.clone())
            .collect()
    }

    /// Every request received, with its path and the key it presented.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// How many requests arrived (including refused ones).
    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Reply {
    fn new(text: Option<String>, tool_calls: Vec<(String, Value)>, ending: Ending) -> Self {
        Self {
            text,
            tool_calls,
            ending,
            chunk_delay: Duration::ZERO,
            usage: None,
        }
    }

    /// A text answer, streamed in word-sized pieces (`"Hello world"` → `"Hello "`, `"world"`).
    pub fn text(text: impl Into<String>) -> Self {
        Self::new(Some(text.into()), Vec::new(), Ending::Complete)
    }

    /// A single tool call; its JSON arguments are streamed in fragments.
    pub fn tool_call(name: impl Into<String>, input: Value) -> Self {
        Self::new(None, vec![(name.into(), input)], Ending::Complete)
    }

    /// Adds another tool call after this reply's text and calls (parallel tool calls).
    pub fn and_tool_call(mut self, name: impl Into<String>, input: Value) -> Self {
        self.tool_calls.push((name.into(), input));
        self
    }

    /// An HTTP error with the provider's JSON error body.
    pub fn error(status: u16) -> Self {
        Self::error_with(status, format!("scripted error {status}"))
    }

    /// An HTTP error with the provider's JSON error body carrying `message`.
    pub fn error_with(status: u16, message: impl Into<String>) -> Self {
        Self::new(None, Vec::new(), Ending::Status(status, message.into()))
    }

    /// Starts answering (a first text piece `"Thinking"`) and never finishes: for cancel tests.
    pub fn hang() -> Self {
        Self::text("Thinking").then_hang()
    }

    /// Streams a partial answer then breaks the connection in the middle of the body.
    pub fn drop_mid_stream() -> Self {
        Self::text("Partial answer").then_drop()
    }

    /// Streams this reply's content, then never finishes (the connection stays open).
    pub fn then_hang(mut self) -> Self {
        self.ending = Ending::Hang;
        self
    }

    /// Streams this reply's content, then breaks the connection.
    pub fn then_drop(mut self) -> Self {
        self.ending = Ending::Drop;
        self
    }

    /// Streams this reply's content, then the provider's in-stream error (`event: error` with
    /// `overloaded_error` for Anthropic, a `data: {"error": ...}` chunk for OpenAI).
    pub fn then_stream_error(mut self, message: impl Into<String>) -> Self {
        self.ending = Ending::StreamError(message.into());
        self
    }

    /// Waits `delay` before each streamed chunk.
    pub fn with_chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay = delay;
        self
    }

    /// Reports this usage instead of the default estimate.
    pub fn with_usage(mut self, input_tokens: u64, output_tokens: u64) -> Self {
        self.usage = Some((input_tokens, output_tokens));
        self
    }

    /// The text split into the pieces streamed one per chunk.
    pub(crate) fn text_pieces(&self) -> Vec<String> {
        self.text
            .as_deref()
            .map(|text| text.split_inclusive(' ').map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// The usage reported: scripted, or an estimate (request bytes / 4, one per streamed piece).
    pub(crate) fn usage_for(&self, request: &Value) -> (u64, u64) {
        self.usage.unwrap_or_else(|| {
            let input = (request.to_string().len() as u64 / 4).max(1);
            let pieces = self.text_pieces().len() + self.tool_calls.len();
            (input, pieces.max(1) as u64)
        })
    }
}

/// A tool call's arguments as JSON text cut into fragments of a few characters, as providers
/// stream them (never on a boundary a naive parser could rely on).
pub(crate) fn argument_fragments(input: &Value) -> Vec<String> {
    let text = input.to_string();
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(7).map(|c| c.iter().collect()).collect()
}

/// An SSE body being written: its frames, the pause between them, and how it ends.
pub(crate) struct Script {
    pub(crate) frames: Vec<Bytes>,
    pub(crate) delay: Duration,
    pub(crate) ending: Ending,
}

impl Script {
    /// The response: `text/event-stream` whose body plays the frames.
    pub(crate) fn into_response(self, stop: CancellationToken) -> Response {
        let state = (
            self.frames.into_iter(),
            self.delay,
            self.ending,
            stop,
            false,
        );
        let body = futures::stream::unfold(
            state,
            |(mut frames, delay, ending, stop, ended)| async move {
                if ended {
                    return None;
                }
                if let Some(frame) = frames.next() {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    return Some((Ok(frame), (frames, delay, ending, stop, false)));
                }
                match ending {
                    Ending::Hang => {
                        stop.cancelled().await;
                        None
                    }
                    Ending::Drop => {
                        // Let the connection flush what was streamed, so the client sees the
                        // partial answer before the break.
                        for _ in 0..4 {
                            tokio::task::yield_now().await;
                        }
                        let broken = std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "scripted mid-stream drop",
                        );
                        Some((Err(broken), (frames, delay, ending, stop, true)))
                    }
                    _ => None,
                }
            },
        );
        let mut response = Body::from_stream(body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }
}

/// One SSE frame: `event: <name>` (if any) and one `data:` line.
pub(crate) fn frame(event: Option<&str>, data: &str) -> Bytes {
    match event {
        Some(event) => Bytes::from(format!("event: {event}\ndata: {data}\n\n")),
        None => Bytes::from(format!("data: {data}\n\n")),
    }
}

/// The two wire protocols, for what differs in admission.
#[derive(Clone, Copy)]
enum Protocol {
    OpenAi,
    Anthropic,
}

impl Protocol {
    fn error_response(self, status: u16, message: &str) -> Response {
        match self {
            Protocol::OpenAi => openai::error_response(status, message),
            Protocol::Anthropic => anthropic::error_response(status, message),
        }
    }

    /// What the real API refuses with 400 before doing anything.
    fn invalid(self, headers: &HeaderMap, body: &Value) -> Option<&'static str> {
        if !body.is_object() {
            return Some("body is not a JSON object");
        }
        if !body.get("model").is_some_and(Value::is_string) {
            return Some("model: field required");
        }
        if !body.get("messages").is_some_and(Value::is_array) {
            return Some("messages: field required");
        }
        match self {
            Protocol::OpenAi => None,
            Protocol::Anthropic if !headers.contains_key("anthropic-version") => {
                Some("anthropic-version: header is required")
            }
            Protocol::Anthropic if !body.get("max_tokens").is_some_and(Value::is_u64) => {
                Some("max_tokens: field required")
            }
            Protocol::Anthropic => None,
        }
    }
}

/// What every handler does first: record, check the key and the request, take the next reply.
fn admit(
    shared: &Shared,
    protocol: Protocol,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Reply, Value), Box<Response>> {
    let api_key = presented_key(headers);
    let body_json = serde_json::from_slice::<Value>(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    lock(&shared.requests).push(RecordedRequest {
        path: path.to_owned(),
        api_key: api_key.clone(),
        body: body_json.clone(),
        traceparent: headers
            .get("traceparent")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
    });
    if let Some(expected) = lock(&shared.expected_key).as_deref()
        && api_key.as_deref() != Some(expected)
    {
        return Err(Box::new(protocol.error_response(401, "invalid api key")));
    }
    if let Some(problem) = protocol.invalid(headers, &body_json) {
        return Err(Box::new(protocol.error_response(400, problem)));
    }
    match lock(&shared.replies).pop_front() {
        Some(reply) => Ok((reply, body_json)),
        None => Err(Box::new(protocol.error_response(
            500,
            "model server: no scripted reply queued for this request",
        ))),
    }
}

fn presented_key(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let x_api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    x_api_key.or(bearer).map(str::to_owned)
}

async fn openai_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match admit(
        &shared,
        Protocol::OpenAi,
        "/v1/chat/completions",
        &headers,
        &body,
    ) {
        Ok((reply, request)) => openai::respond(&shared, &reply, &request),
        Err(response) => *response,
    }
}

async fn anthropic_messages(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match admit(
        &shared,
        Protocol::Anthropic,
        "/v1/messages",
        &headers,
        &body,
    ) {
        Ok((reply, request)) => anthropic::respond(&shared, &reply, &request),
        Err(response) => *response,
    }
}
