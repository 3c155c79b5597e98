//! Reading a file out of the caller's running agent's workspace (the Telegram bridge's `/get`),
//! within a size cap: the runtime is not trusted with the edge's memory, so a body past the
//! cap is cut off and refused (413), never buffered whole.

use super::access::ApprovedUser;
use super::{agents, runtime};
use crate::error::ApiError;
use crate::state::AppState;
use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::json;
use std::time::Duration;
use warren_commands::{CommandMeta, bounded};
use warren_domain::Actor;
use warren_domain::agent::AgentCommand;
use warren_domain::ids::{AgentId, UserId};
use warren_domain::text;

/// How long reading a file may take.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// A file read from the workspace.
#[derive(Clone, Debug)]
pub struct Downloaded {
    /// Workspace-relative path.
    pub path: String,
    /// Its bytes.
    pub bytes: Bytes,
}

/// The file at `path` in `agent`'s workspace, if it is at most `max_bytes` long: 404
/// `file_not_found` for a missing file, 413 `payload_too_large` past the cap, 400
/// `invalid_path` for a path leaving the workspace, 409 `agent_not_running`.
pub async fn download(
    state: &AppState,
    caller: &ApprovedUser,
    agent: AgentId,
    path: &str,
    max_bytes: usize,
) -> Result<Downloaded, ApiError> {
    let segments = runtime::safe_path(path)?;
    let (agent_id, found) = agents::owned_agent(state, caller.id, agent).await?;
    let (url, token) = runtime::endpoint(state, agent_id, &found).await?;
    let response = state
        .http
        .get(runtime::with_path(url, "files", &segments))
        .bearer_auth(token)
        .timeout(DOWNLOAD_TIMEOUT)
        .send()
        .await
        .map_err(|err| {
            tracing::warn!(agent_id = %agent_id, error = %err, "a download from the runtime failed");
            ApiError::Unavailable("the agent runtime")
        })?;
    match response.status() {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => {
            return Err(ApiError::client(
                StatusCode::NOT_FOUND,
                "file_not_found",
                format!("there is no file {path} in the agent's workspace"),
            ));
        }
        StatusCode::BAD_REQUEST => return Err(runtime::not_a_workspace_file()),
        status => {
            tracing::warn!(agent_id = %agent_id, %status, "the runtime refused a download");
            return Err(ApiError::Unavailable("the agent runtime"));
        }
    }
    if response
        .content_length()
        .is_some_and(|length| length > max_bytes as u64)
    {
        return Err(too_large(max_bytes));
    }
    let bytes = bounded::read(response.bytes_stream(), max_bytes)
        .await
        .map_err(|err| match err {
            bounded::Bounded::TooLarge(_) => too_large(max_bytes),
            bounded::Bounded::Source(_) => ApiError::Unavailable("the agent runtime"),
        })?;
    let path = segments.join("/");
    record(state, caller.id, agent_id, &path, bytes.len() as u64).await;
    Ok(Downloaded {
        path,
        bytes: Bytes::from(bytes),
    })
}

/// Records a download in the agent's log once its bytes went out (`FileDownloaded`, a usage
/// fact). The file is already the caller's, so a log that cannot take the record is logged, not
/// turned into an error.
pub async fn record(state: &AppState, user: UserId, agent: AgentId, path: &str, size: u64) {
    let command = AgentCommand::RecordFileDownload {
        user_id: user,
        path: text::FILE_PATH.fit(path),
        size,
    };
    let meta = CommandMeta::new(Actor::User(user));
    if let Err(err) = state
        .commands
        .agents
        .execute(&agent.to_string(), command, &meta)
        .await
    {
        tracing::warn!(agent_id = %agent, error = %err, "a download could not be recorded");
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::Client {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: "payload_too_large",
        message: format!("the file is larger than {limit} bytes"),
        details: Some(json!({ "limit": limit })),
    }
}
