//! Chat routes: start a run (`POST /chat` → SSE), cancel it, clear a chat, collect pending
//! proactive messages.
//!
//! A run lives in its own task and stops when it ends, when it is cancelled
//! (`POST /chat/{id}/cancel`, `DELETE /chat/{id}`, server shutdown) or when the client reading
//! its stream goes away — so a crashed caller never leaves a chat busy.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::chats::RunTicket;
use crate::config::{ModelSettings, ProviderKind, Secret};
use crate::error::ApiError;
use crate::events::{AgentEvent, sse_response};
use crate::model::Message;
use crate::run::Run;
use crate::server::AppState;

/// Events buffered between a run and its (slow) reader.
const EVENT_BUFFER: usize = 256;

/// `POST /chat` body. Unknown fields are ignored (baal-agent clients send `mode`).
#[derive(Deserialize)]
pub struct ChatRequest {
    /// The user's message.
    message: String,
    /// The conversation (baal: `{user_id}:{agent_id}`); default `default`.
    #[serde(default = "default_chat_id")]
    chat_id: String,
    /// Provider protocol for this run; a different one than configured drops the configured
    /// base URL and key.
    provider: Option<ProviderKind>,
    /// API base (with `/v1`) for this run.
    base_url: Option<String>,
    /// Provider key for this run (the user's own).
    api_key: Option<Secret>,
    /// Model for this run.
    model: Option<String>,
    /// System prompt for this run.
    system_prompt: Option<String>,
    /// The chat's history to run from, replacing the one kept: the platform sends it for a
    /// conversation this runtime has never seen (a fork's first runs, docs/adr/0027-fork.md).
    history: Option<Vec<HistoryTurn>>,
}

/// One message of a handed-over history.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryTurn {
    /// `user` or `assistant`.
    role: TurnRole,
    /// What was said.
    content: String,
}

/// Who said a handed-over message.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum TurnRole {
    User,
    Assistant,
}

impl From<HistoryTurn> for Message {
    fn from(turn: HistoryTurn) -> Self {
        match turn.role {
            TurnRole::User => Message::User {
                content: turn.content,
            },
            TurnRole::Assistant => Message::Assistant {
                text: turn.content,
                tool_calls: vec![],
            },
        }
    }
}

fn default_chat_id() -> String {
    "default".into()
}

impl ChatRequest {
    /// The configured model settings with this request's overrides. Through the platform's
    /// model proxy only the provider (the protocol spoken to the proxy), model and prompt may
    /// change: a per-run base URL or key is refused, since the proxy is there so that no key
    /// enters the sandbox.
    fn settings(&self, configured: &ModelSettings) -> Result<ModelSettings, ApiError> {
        let mut settings = configured.clone();
        if configured.proxy.is_some() {
            let given = |value: Option<&str>| value.is_some_and(|v| !v.is_empty());
            if given(self.base_url.as_deref()) || given(self.api_key.as_ref().map(Secret::expose)) {
                return Err(ApiError::invalid(
                    "this runtime reaches its model through the platform's model proxy: \
                     base_url and api_key cannot be set per run",
                ));
            }
            if let Some(provider) = self.provider {
                settings.provider = provider;
            }
            return Ok(self.with_model(settings));
        }
        if let Some(provider) = self.provider
            && provider != configured.provider
        {
            settings.provider = provider;
            settings.base_url = None;
            settings.api_key = None;
        }
        if let Some(base_url) = self.base_url.as_ref().filter(|u| !u.is_empty()) {
            settings.base_url = Some(base_url.clone());
        }
        if let Some(api_key) = self.api_key.as_ref().filter(|k| !k.expose().is_empty()) {
            settings.api_key = Some(api_key.clone());
        }
        Ok(self.with_model(settings))
    }

    /// `settings` with this request's model and prompt, if it names them.
    fn with_model(&self, mut settings: ModelSettings) -> ModelSettings {
        if let Some(model) = self.model.as_ref().filter(|m| !m.is_empty()) {
            settings.model = model.clone();
        }
        if let Some(prompt) = &self.system_prompt {
            settings.system_prompt = prompt.clone();
        }
        settings
    }
}

/// `POST /chat`: starts a run and streams its events; 409 `chat_busy` if the chat has one.
pub async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ChatRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(ApiError::from_json)?;
    if request.message.trim().is_empty() {
        return Err(ApiError::invalid("message must not be empty"));
    }
    if request.chat_id.is_empty() {
        return Err(ApiError::invalid("chat_id must not be empty"));
    }
    let settings = request.settings(&state.config.model)?;
    let history = request
        .history
        .map(|turns| turns.into_iter().map(Message::from).collect());
    let ticket = state
        .chats
        .begin_from(&request.chat_id, history)
        .ok_or_else(|| ApiError::ChatBusy(request.chat_id.clone()))?;
    let (events, receiver) = mpsc::channel(EVENT_BUFFER);
    let ids = ticket.ids.clone();
    let keepalive = state.config.limits.keepalive;
    let traceparent = headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .filter(|value| is_traceparent(value))
        .map(str::to_owned);
    let input = Input {
        settings,
        message: request.message,
        traceparent,
    };
    tokio::spawn(drive(state, ticket, input, events));
    Ok(sse_response(receiver, ids, keepalive).into_response())
}

/// What a run is started with.
struct Input {
    settings: ModelSettings,
    message: String,
    traceparent: Option<String>,
}

/// Whether a `traceparent` has the W3C version-00 shape (`00-<32 hex>-<16 hex>-<2 hex>`); only
/// such a one is passed on to the model.
fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    matches!(parts.as_slice(), ["00", trace, span, flags]
    if [(trace, 32), (span, 16), (flags, 2)].iter().all(|(part, len)| {
        part.len() == *len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }))
}

/// Runs to the end, cancelling the run if its reader goes away; records the history and frees
/// the chat, then sends the terminal event.
async fn drive(state: AppState, ticket: RunTicket, input: Input, events: mpsc::Sender<AgentEvent>) {
    let Input {
        settings,
        message,
        traceparent,
    } = input;
    let cancel = ticket.cancel.clone();
    let end = {
        let run = Run {
            http: &state.http,
            settings,
            toolbox: &state.toolbox,
            chat_id: &ticket.chat_id,
            limits: &state.config.limits,
            events: &events,
            cancel: &cancel,
            traceparent: traceparent.as_deref(),
        };
        let work = run.execute(&ticket.history, message);
        tokio::pin!(work);
        tokio::select! {
            end = &mut work => end,
            _ = events.closed() => {
                tracing::info!(chat_id = %ticket.chat_id, "client went away, cancelling the run");
                cancel.cancel();
                work.await
            }
        }
    };
    let last = match end.last {
        AgentEvent::Error { ref code, .. }
            if code == "cancelled" && state.shutdown.is_cancelled() =>
        {
            AgentEvent::error("shutting_down", "the agent runtime is shutting down", true)
        }
        last => last,
    };
    state.chats.finish(ticket, end.appended).await;
    let _ = events.send(last).await;
}

/// `POST /chat/{chat_id}/cancel`: `{"cancelled": true}` if a run was going. Its stream then
/// ends with an `error` event, code `cancelled`.
pub async fn cancel(State(state): State<AppState>, Path(chat_id): Path<String>) -> Json<Value> {
    Json(json!({"cancelled": state.chats.cancel(&chat_id)}))
}

/// `DELETE /chat/{chat_id}`: clears the history and cancels a running run:
/// `{"status": "ok", "deleted": <messages>, "cancelled": <bool>}`.
pub async fn clear(State(state): State<AppState>, Path(chat_id): Path<String>) -> Json<Value> {
    let (deleted, cancelled) = state.chats.clear(&chat_id).await;
    Json(json!({"status": "ok", "deleted": deleted, "cancelled": cancelled}))
}

/// `GET /pending?chat_id=`.
#[derive(Deserialize)]
pub struct PendingQuery {
    chat_id: Option<String>,
}

/// `GET /pending`: removes and returns queued proactive messages:
/// `{"messages": [{"chat_id", "content"}]}`.
pub async fn pending(
    State(state): State<AppState>,
    Query(query): Query<PendingQuery>,
) -> Json<Value> {
    Json(json!({"messages": state.pending.drain(query.chat_id.as_deref())}))
}
