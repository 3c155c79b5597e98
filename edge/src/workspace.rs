//! `POST /agents/{id}/exec` and `PUT /files/{agent_id}/{path}`: the owner's hands in the
//! running agent's workspace. Both only translate; the use cases are [`crate::app::exec`] and
//! [`crate::app::upload`], which record each exec and upload in the log (ADR 18).

use crate::app::{self, exec::ExecFrame};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApprovedUser, IdempotencyKey};
use crate::follow::{self, Item};
use crate::frame::Frame;
use crate::input::TextFields;
use crate::openapi::resp;
use crate::routes::ApiRouter;
use crate::state::AppState;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use warren_domain::ids::AgentId;
use warren_domain::text;

/// The exec and upload routes.
pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .post("/agents/{id}/exec", exec)
        .put("/files/{id}/{*path}", upload)
}

/// `POST /agents/{id}/exec`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// The command, run with `bash -c` in the workspace (not blank; up to 16,000 characters).
    #[schema(example = "ls -la")]
    pub command: String,
    /// Timeout in milliseconds (the runtime's default if left out; it caps it).
    pub timeout_ms: Option<u64>,
    /// Workspace-relative working directory (the workspace root if left out).
    pub cwd: Option<String>,
}

impl TextFields for ExecRequest {
    const TEXT_FIELDS: &'static [(&'static str, text::TextRule)] =
        &[("command", text::EXEC_COMMAND), ("cwd", text::EXEC_CWD)];
}

/// `PUT /files/{agent_id}/{path}`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Uploaded {
    /// Workspace-relative path of the file written.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Run a shell command in the agent and stream its output.
#[utoipa::path(post, path = "/api/v1/agents/{id}/exec", operation_id = "post_agents_by_id_exec", tag = "agents", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Agent id")),
    request_body = ExecRequest,
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "The command's output as SSE: `data:` JSON frames with a `type` of `stdout` / `stderr` (`data`), `keepalive`, then `exit` (`code`, `signal`, `timed_out`, `truncated`) or `error` (`code`, `message`). The exec is recorded in the agent's log (`ExecRequested`, then `ExecFinished`). A retry with the same `Idempotency-Key` does not run it again (409 `exec_already_ran`)."),
        resp::BadRequest, resp::Unauthorized, resp::Forbidden, resp::NotFound, resp::Conflict,
        resp::Validation, resp::RateLimited, resp::Unavailable))]
pub(crate) async fn exec(
    State(state): State<AppState>,
    caller: ApprovedUser,
    ApiPath(id): ApiPath<Uuid>,
    key: IdempotencyKey,
    ApiJson(request): ApiJson<ExecRequest>,
) -> Result<Response, ApiError> {
    let started = app::exec::exec(
        &state,
        &caller,
        AgentId(id),
        app::exec::ExecRequest {
            command: request.command,
            timeout_ms: request.timeout_ms,
            cwd: request.cwd,
        },
        key.command_id(caller.id),
    )
    .await?;
    let items = futures::stream::unfold(started.frames, |mut frames| async move {
        let frame = frames.recv().await?;
        Some((item(frame), frames))
    });
    Ok(follow::sse_response(follow::guarded(
        state.clone(),
        caller.0.clone(),
        items,
    )))
}

/// One exec frame as an SSE item (no `id:`: an exec's output cannot be resumed).
fn item(frame: ExecFrame) -> Item {
    Item::new(None, Frame::Exec(frame))
}

/// Upload a file into the agent's workspace (the raw body; parents are created, an existing
/// file is replaced atomically).
#[utoipa::path(put, path = "/api/v1/files/{id}/{path}", operation_id = "put_file", tag = "chat", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Agent id"),
        ("path" = String, Path, description = "Workspace-relative path; `..` is refused")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "The file's bytes, at most `WARREN_UPLOAD_MAX_BYTES` (25 MiB by default)."),
    responses((status = 201, description = "Written, and recorded in the agent's log (`FileUploaded`).", body = Uploaded),
        resp::BadRequest, resp::Unauthorized, resp::Forbidden, resp::NotFound, resp::Conflict,
        resp::TooLarge, resp::Validation, resp::RateLimited, resp::Unavailable))]
pub(crate) async fn upload(
    State(state): State<AppState>,
    caller: ApprovedUser,
    ApiPath((id, path)): ApiPath<(Uuid, String)>,
    key: IdempotencyKey,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Uploaded>), ApiError> {
    let declared_len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok());
    let uploaded = app::upload::upload(
        &state,
        &caller,
        AgentId(id),
        app::upload::Upload {
            path,
            body,
            declared_len,
        },
        key.command_id(caller.id),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(Uploaded {
            path: uploaded.path,
            size: uploaded.size,
        }),
    ))
}
