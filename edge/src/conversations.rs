//! `/api/v1/conversations*`: the caller's conversations by last activity, their messages,
//! cancelling a run, forking one after a message, and following a conversation live with one cursor for history and live
//! (`/events`). Another user's conversation is 404, like a missing one.

use crate::app;
use crate::chat::KEEPALIVE;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, ApprovedUser, AuthUser, IdempotencyKey};
use crate::follow::{self, Expired, Follow, Item, Start, follow};
use crate::frame::Frame;
use crate::input::TextFields;
use crate::openapi::resp;
use crate::routes::ApiRouter;
use crate::state::AppState;
use crate::views::{self, ConversationView, MessageView};
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use warren_domain::conversation::Conversation;
use warren_domain::ids::{AgentId, ConversationId, RunId, UserId};
use warren_domain::text;

/// Most items one page holds.
const MAX_PAGE: i64 = 200;

/// The conversation routes.
pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .get("/conversations", list)
        .get("/conversations/{id}/messages", messages)
        .post("/conversations/{id}/cancel", cancel)
        .post("/conversations/{id}/fork", fork)
        .get("/conversations/{id}/events", events)
}

/// Messages in the snapshot that opens a stream without a cursor (or after a reset).
const SNAPSHOT_MESSAGES: i64 = 50;

/// `GET /conversations/{id}/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Resume after this cursor (a frame's `id:`); the `Last-Event-ID` header does the same.
    pub after: Option<u64>,
}

/// `POST /conversations/{id}/cancel`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// The run to cancel; the one running (or next up) if left out.
    pub run_id: Option<Uuid>,
}

impl TextFields for CancelRequest {}

/// `POST /conversations/{id}/fork`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkRequest {
    /// The `seq` of the last message the fork keeps (a message's `seq`, as
    /// `GET /conversations/{id}/messages` lists them).
    #[schema(minimum = 1)]
    pub after: u64,
    /// The fork's title (default: none, listed as `New conversation`).
    pub title: Option<String>,
}

impl TextFields for ForkRequest {
    const TEXT_FIELDS: &'static [(&'static str, text::TextRule)] = &[("title", text::TITLE)];
}

/// A new conversation that continues another.
#[derive(Debug, Serialize, ToSchema)]
pub struct ForkAnswer {
    /// The new conversation (post to it with `conversation_id`, follow it, fork it again).
    pub id: Uuid,
    /// Its agent (the origin's).
    pub agent_id: Uuid,
    /// Its title, if given.
    pub title: Option<String>,
    /// The conversation it continues.
    pub forked_from: Uuid,
    /// The origin's `seq` of the last message it keeps.
    pub forked_after: u64,
    /// How many messages it starts with (the origin's up to `forked_after`).
    pub message_count: usize,
    /// When it was forked.
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The log sequence of the fork's first commit.
    pub seq: u64,
}

/// What a cancel did.
#[derive(Debug, Serialize, ToSchema)]
pub struct CancelAnswer {
    /// The run.
    pub run_id: Uuid,
    /// `cancel_requested` (its worker stops it and confirms) or `cancelled` (it was waiting).
    pub status: String,
}

/// `GET /conversations`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only conversations with this agent.
    pub agent_id: Option<Uuid>,
    /// How many (1 to 200, default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// `GET /conversations/{id}/messages`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// Only messages before this one (for the previous page).
    pub before: Option<Uuid>,
    /// How many (1 to 200, default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// The conversation's current state if it is `user`'s; 404 otherwise (missing or someone
/// else's alike).
pub(crate) async fn owned_conversation(
    state: &AppState,
    user: UserId,
    id: Uuid,
) -> Result<Conversation, ApiError> {
    app::chat::owned_conversation(state, user, ConversationId(id)).await
}

fn page_size(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid_field("limit", "must be from 1 to 200")),
    }
}

/// The caller's conversations, most recently active first.
#[utoipa::path(get, path = "/api/v1/conversations", operation_id = "get_conversations", tag = "conversations", security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, description = "Conversations.", body = Vec<ConversationView>), resp::Unauthorized, resp::Validation))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Vec<ConversationView>>, ApiError> {
    let limit = page_size(query.limit)?;
    Ok(Json(
        views::conversations(&state.db, caller.id, query.agent_id.map(AgentId), limit).await?,
    ))
}

/// A page of a conversation's messages, oldest first.
#[utoipa::path(get, path = "/api/v1/conversations/{id}/messages", operation_id = "get_conversation_messages", tag = "conversations", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Conversation id"), MessagesQuery),
    responses((status = 200, description = "Messages, oldest first.", body = Vec<MessageView>),
        resp::Unauthorized, resp::NotFound, resp::Validation))]
pub(crate) async fn messages(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<MessagesQuery>,
) -> Result<Json<Vec<MessageView>>, ApiError> {
    let limit = page_size(query.limit)?;
    if views::conversation(&state.db, caller.id, id)
        .await?
        .is_none()
    {
        return Err(ApiError::NotFound);
    }
    Ok(Json(
        views::messages(&state.db, id, query.before, limit).await?,
    ))
}

/// Cancel a run: a waiting one at once, a running one by asking its worker (which stops the
/// agent's tool and confirms). The run's stream ends with an `error` frame of code `cancelled`.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/cancel", operation_id = "post_conversation_cancel", tag = "conversations", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Conversation id")),
    request_body = CancelRequest,
    responses((status = 202, description = "Cancelled or cancel requested.", body = CancelAnswer),
        resp::BadRequest, resp::Unauthorized, resp::Forbidden, resp::NotFound, resp::Conflict, resp::Validation))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: ApprovedUser,
    ApiPath(id): ApiPath<Uuid>,
    key: IdempotencyKey,
    ApiJson(request): ApiJson<CancelRequest>,
) -> Result<(StatusCode, Json<CancelAnswer>), ApiError> {
    let cancelled = app::chat::cancel(
        &state,
        &caller,
        ConversationId(id),
        request.run_id.map(RunId),
        key.command_id(caller.id),
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(CancelAnswer {
            run_id: cancelled.run_id.0,
            status: if cancelled.at_once {
                "cancelled"
            } else {
                "cancel_requested"
            }
            .to_owned(),
        }),
    ))
}

/// Fork the conversation after one of its messages: a new conversation with the same agent whose
/// history is this one's up to and including the message at `after` (copied; this one is
/// unchanged), recorded as a fact that names its origin. The first run in the fork gives the
/// agent exactly that history. Retried with the same `Idempotency-Key`, it forks once.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/fork", operation_id = "post_conversation_fork", tag = "conversations", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Conversation id")),
    request_body = ForkRequest,
    responses((status = 201, description = "Forked; the new conversation is listed with its messages.", body = ForkAnswer),
        resp::BadRequest, resp::Unauthorized, resp::Forbidden, resp::NotFound, resp::ForkPoint))]
pub(crate) async fn fork(
    State(state): State<AppState>,
    caller: ApprovedUser,
    ApiPath(id): ApiPath<Uuid>,
    key: IdempotencyKey,
    ApiJson(request): ApiJson<ForkRequest>,
) -> Result<(StatusCode, Json<ForkAnswer>), ApiError> {
    let forked = app::fork::fork(
        &state,
        &caller,
        app::fork::Fork {
            origin_id: ConversationId(id),
            after: request.after,
            title: request.title,
            command_id: key.command_id(caller.id),
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(ForkAnswer {
            id: forked.conversation_id.0,
            agent_id: forked.agent_id.0,
            title: forked.title,
            forked_from: forked.origin_id.0,
            forked_after: forked.after,
            message_count: forked.messages,
            created_at: forked.created_at,
            seq: forked.seq,
        }),
    ))
}

/// Follow the conversation: every frame after the cursor, then live, each with `id:` = its log
/// sequence, so a client that reconnects with `Last-Event-ID` (or `?after=`) gets exactly what it
/// missed. Without a cursor the stream opens with a `snapshot` frame (the latest messages) and
/// goes on from there; a cursor older than the log retains gets a `reset` frame with the same
/// snapshot instead of a silent gap.
#[utoipa::path(get, path = "/api/v1/conversations/{id}/events", operation_id = "get_conversation_events", tag = "conversations", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Conversation id"), EventsQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "The last frame's `id:` seen (as `after`)")),
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "SSE: `snapshot` or `reset` first when there is no usable cursor, then `message`, `queued`, `run_started`, `status`, `text`, `tool_use`, `tool_result`, `file`, `cancel_requested`, `done`, `error`, `agent_message` (the agent's own message outside any run), `renamed`, `history_cleared` and `keepalive` frames; `id:` is the log sequence."),
        resp::Unauthorized, resp::NotFound, resp::Validation))]
pub(crate) async fn events(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    owned_conversation(&state, caller.id, id).await?;
    let cursor = query.after.or_else(|| {
        headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
    });
    let (from_seq, opening) = match Start::of(&state, id, cursor, SNAPSHOT_MESSAGES).await? {
        Start::After(after) => (after + 1, vec![]),
        Start::Snapshot {
            checkpoint,
            messages,
            expired,
        } => {
            let frame = match expired {
                Some(Expired { after, oldest }) => Frame::Reset {
                    conversation_id: id,
                    after,
                    oldest,
                    messages,
                },
                None => Frame::Snapshot {
                    conversation_id: id,
                    messages,
                },
            };
            let opening = Item::new(Some(checkpoint), frame);
            (checkpoint + 1, vec![opening])
        }
    };
    let frames = follow(
        &state.hub,
        Follow {
            conversation_id: ConversationId(id),
            from_seq,
            run: None,
            opening,
            keepalive: Some(KEEPALIVE),
        },
    )
    .await?;
    Ok(follow::sse_for(&state, &caller, frames))
}
