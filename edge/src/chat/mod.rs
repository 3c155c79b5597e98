//! `/api/v1/chat/*` and `/api/v1/files/*`: talking to an agent the LiberClaw way.
//!
//! `POST /chat/{agent_id}` records the message (`PostMessage`: quota first, then the log) and
//! streams *that run* as SSE, read back from the conversation's log — not proxied from the
//! runtime. The chat worker does the talking; the stream is the run's deltas and outcome as
//! they land, each with `id:` = its stream sequence. A client that drops loses nothing: the run
//! goes on and its reply is in the log and in `GET /conversations/{id}/messages`.
//!
//! Without `conversation_id` a message goes to the caller's most recently active conversation
//! with the agent (a new one the first time), like LiberClaw's one chat per agent.
//!
//! The handlers and runtime proxies are here; the frames are [`crate::frame`], the streaming
//! itself is [`crate::follow`].

use crate::agents::owned_agent;
use crate::app::{
    self,
    chat::{Client, Target},
    runtime,
};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApprovedUser, IdempotencyKey};
use crate::follow::{self, Follow, follow};
use crate::input::TextFields;
use crate::openapi::resp;
use crate::routes::ApiRouter;
use crate::state::AppState;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;
use uuid::Uuid;
use warren_commands::{bounded, proactive};
use warren_domain::conversation::PostMode;
use warren_domain::ids::{AgentId, ConversationId};
use warren_domain::text;

/// A keepalive frame is sent this often on SSE streams (baal-agent's interval).
pub(crate) const KEEPALIVE: Duration = Duration::from_secs(15);
/// How long a runtime proxy request may take.
const PROXY_TIMEOUT: Duration = Duration::from_secs(30);

/// The chat and file routes.
pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .post("/chat/{id}", send)
        .delete("/chat/{id}", clear)
        .get("/chat/{id}/pending", pending)
        .get("/files/{id}/{*path}", file)
}

/// `POST /chat/{agent_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// The message (not blank).
    pub message: String,
    /// The conversation to post in; the most recent one with this agent if left out.
    pub conversation_id: Option<Uuid>,
    /// `queue` (default: wait behind a running run) or `interrupt` (cancel it).
    #[schema(value_type = Option<String>, example = "queue")]
    pub mode: Option<PostMode>,
}

impl TextFields for ChatRequest {
    const TEXT_FIELDS: &'static [(&'static str, text::TextRule)] = &[("message", text::MESSAGE)];
}

/// `DELETE /chat/{agent_id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cleared {
    /// Always `ok`.
    pub status: String,
    /// The conversation whose history was cleared, if there was one.
    pub conversation_id: Option<Uuid>,
}

/// Send a message to the agent and stream the run that answers it.
#[utoipa::path(post, path = "/api/v1/chat/{id}", operation_id = "post_chat", tag = "chat", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Agent id")),
    request_body = ChatRequest,
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "The run as SSE: `data:` JSON frames with a `type` of `queued`, `status` (`resuming` or `at_capacity` first when the agent was paused), `text` (a piece of the reply), `tool_use`, `tool_result`, `file`, `keepalive`, then `done` or `error`; `id:` is the conversation's log sequence."),
        resp::BadRequest, resp::Unauthorized, resp::Forbidden, resp::NotFound, resp::Conflict,
        resp::Validation, resp::RateLimited))]
pub(crate) async fn send(
    State(state): State<AppState>,
    caller: ApprovedUser,
    ApiPath(id): ApiPath<Uuid>,
    key: IdempotencyKey,
    ApiJson(request): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let agent = AgentId(id);
    let target = match request.conversation_id {
        Some(conversation) => Target::Both(ConversationId(conversation), agent),
        None => Target::Agent(agent),
    };
    let posted = app::chat::post(
        &state,
        &caller,
        app::chat::Message {
            target,
            text: request.message,
            mode: request.mode.unwrap_or_default(),
            client: Client {
                id: None,
                kind: "sse".to_owned(),
            },
            command_id: key.command_id(caller.id),
        },
    )
    .await?;
    let frames = follow(
        &state.hub,
        Follow {
            conversation_id: posted.conversation_id,
            from_seq: posted.seq,
            run: Some(posted.run_id),
            opening: vec![],
            keepalive: Some(KEEPALIVE),
        },
    )
    .await?;
    Ok(follow::sse_for(&state, &caller, frames))
}

/// Clear the history of the caller's conversation with the agent (here and in the runtime).
#[utoipa::path(delete, path = "/api/v1/chat/{id}", operation_id = "delete_chat", tag = "chat", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Agent id")),
    responses((status = 200, description = "Cleared (or nothing to clear).", body = Cleared),
        resp::Unauthorized, resp::Forbidden, resp::NotFound, resp::Conflict))]
pub(crate) async fn clear(
    State(state): State<AppState>,
    caller: ApprovedUser,
    ApiPath(id): ApiPath<Uuid>,
    key: IdempotencyKey,
) -> Result<Json<Cleared>, ApiError> {
    let cleared = app::chat::clear(&state, &caller, AgentId(id), key.command_id(caller.id)).await?;
    Ok(Json(Cleared {
        status: "ok".to_owned(),
        conversation_id: cleared.map(|id| id.0),
    }))
}

/// `GET url` on a runtime with its token; 503 if it does not answer.
async fn runtime_get(
    state: &AppState,
    url: reqwest::Url,
    token: &str,
) -> Result<reqwest::Response, ApiError> {
    state
        .http
        .get(url)
        .bearer_auth(token)
        .timeout(PROXY_TIMEOUT)
        .send()
        .await
        .map_err(|_| ApiError::Unavailable("the agent runtime"))
}

/// Proactive messages the agent queued (reminders, background results), taken from its runtime
/// now and delivered into its conversations like the chat worker does after each run: every
/// client of the conversation gets them live (`agent_message`) and in its history.
#[utoipa::path(get, path = "/api/v1/chat/{id}/pending", operation_id = "get_chat_pending", tag = "chat", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Agent id")),
    responses((status = 200, description = "`{\"messages\": [{\"chat_id\", \"message_id\", \"content\"}]}`: the messages delivered now.", body = Object),
        resp::Unauthorized, resp::Forbidden, resp::NotFound, resp::Conflict, resp::Unavailable))]
pub(crate) async fn pending(
    State(state): State<AppState>,
    caller: ApprovedUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (agent_id, agent) = owned_agent(&state, &caller, id).await?;
    let (mut url, token) = runtime::endpoint(&state, agent_id, &agent).await?;
    url.set_path("/pending");
    let response = runtime_get(&state, url, &token).await?;
    if !response.status().is_success() {
        return Err(ApiError::Unavailable("the agent runtime"));
    }
    // Read within the cap: a runtime answering without a length (or lying about it) is not
    // trusted with the edge's memory.
    let body = bounded::read(response.bytes_stream(), proactive::PENDING_CAP)
        .await
        .map_err(|err| {
            tracing::warn!(%agent_id, error = %err, "reading a runtime's /pending failed");
            ApiError::Unavailable("the agent runtime")
        })?;
    let list: proactive::PendingList =
        serde_json::from_slice(&body).map_err(|_| ApiError::Unavailable("the agent runtime"))?;
    let delivered = proactive::deliver(&state.commands, agent_id, list.messages, "edge").await;
    let messages: Vec<serde_json::Value> = delivered
        .into_iter()
        .map(|m| {
            serde_json::json!({
                "chat_id": m.conversation_id, "message_id": m.message_id, "content": m.text,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({"messages": messages})))
}

/// Download a file from the agent's workspace.
#[utoipa::path(get, path = "/api/v1/files/{id}/{path}", operation_id = "get_file", tag = "chat", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Agent id"),
        ("path" = String, Path, description = "Workspace-relative path; `..` is refused")),
    responses((status = 200, description = "The file's bytes.", content_type = "application/octet-stream", body = Vec<u8>),
        resp::BadRequest, resp::Unauthorized, resp::Forbidden, resp::NotFound, resp::Conflict, resp::Unavailable))]
pub(crate) async fn file(
    State(state): State<AppState>,
    caller: ApprovedUser,
    ApiPath((id, path)): ApiPath<(Uuid, String)>,
) -> Result<Response, ApiError> {
    let segments = runtime::safe_path(&path)?;
    let (agent_id, agent) = owned_agent(&state, &caller, id).await?;
    let (url, token) = runtime::endpoint(&state, agent_id, &agent).await?;
    let url = runtime::with_path(url, "files", &segments);
    let response = runtime_get(&state, url, &token).await?;
    match response.status() {
        status if status.is_success() => {}
        StatusCode::NOT_FOUND => return Err(ApiError::NotFound),
        StatusCode::BAD_REQUEST => {
            return Err(ApiError::client(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                "the path is not a file inside the agent's workspace",
            ));
        }
        _ => return Err(ApiError::Unavailable("the agent runtime")),
    }
    let mut answer = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CACHE_CONTROL, "no-store");
    if let Some(length) = response.content_length() {
        answer = answer.header(header::CONTENT_LENGTH, length);
    }
    // The download is recorded (a usage fact) once the whole body went out.
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = sent.clone();
    let (user, path) = (caller.id, segments.join("/"));
    let body = response
        .bytes_stream()
        .inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                counted.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        })
        .chain(
            futures::stream::once(async move {
                let size = sent.load(std::sync::atomic::Ordering::Relaxed);
                crate::app::download::record(&state, user, agent_id, &path, size).await;
            })
            .filter_map(|()| async { None }),
        );
    answer
        .body(Body::from_stream(body))
        .map_err(ApiError::internal)
}
