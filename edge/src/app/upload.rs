//! Upload a file into the owner's running agent's workspace (ADR 18).
//!
//! The body is streamed to the runtime's `POST /files/{path}` as it arrives, never held
//! whole: a declared length over the limit is refused before anything is sent, and a body that
//! grows past it is cut off mid-stream, which makes the runtime drop what it received (it
//! writes to a temporary file and renames it only once the body is complete). Once the runtime
//! has written the file, the upload is recorded (`FileUploaded`).

use super::access::ApprovedUser;
use super::{agents, runtime};
use crate::error::ApiError;
use crate::input::check_field;
use crate::state::AppState;
use axum::body::Body;
use axum::http::{StatusCode, header};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;
use warren_commands::{CommandMeta, bounded};
use warren_domain::Actor;
use warren_domain::agent::AgentCommand;
use warren_domain::ids::{AgentId, CommandId};
use warren_domain::text;

/// How long an upload may take from the first byte to the runtime's answer.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// A file written into the workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uploaded {
    /// Workspace-relative path.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The bytes to upload: the request body as it streams in, and its declared length if any.
pub struct Upload {
    /// Workspace-relative target path (as the client named it).
    pub path: String,
    /// The body.
    pub body: Body,
    /// `Content-Length`, if the client sent one.
    pub declared_len: Option<u64>,
}

/// The largest answer read from the runtime about a written file.
const WRITTEN_CAP: usize = 64 * 1024;

/// The body grew past the upload limit.
#[derive(Debug, thiserror::Error)]
#[error("the upload is larger than {0} bytes")]
struct Oversize(u64);

/// Writes `upload` into the caller's running agent's workspace and records it.
pub async fn upload(
    state: &AppState,
    caller: &ApprovedUser,
    agent: AgentId,
    upload: Upload,
    command_id: CommandId,
) -> Result<Uploaded, ApiError> {
    let segments = runtime::safe_path(&upload.path)?;
    check_field("path", &upload.path, &text::FILE_PATH)?;
    let (agent_id, found) = agents::owned_agent(state, caller.id, agent).await?;
    let (url, token) = runtime::endpoint(state, agent_id, &found).await?;
    let limit = state.settings.upload_max_bytes;
    if upload.declared_len.is_some_and(|length| length > limit) {
        return Err(too_large(limit));
    }
    let cut_off = Arc::new(AtomicBool::new(false));
    // What the edge itself saw go by: the size and digest recorded, whatever the runtime says.
    let seen = Arc::new(Mutex::new((0u64, Sha256::new())));
    let body = {
        let (cut_off, seen) = (cut_off.clone(), seen.clone());
        upload.body.into_data_stream().map(
            move |chunk| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                let chunk = chunk?;
                let mut seen = seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                seen.0 += chunk.len() as u64;
                if seen.0 > limit {
                    cut_off.store(true, Ordering::Relaxed);
                    return Err(Box::new(Oversize(limit)));
                }
                seen.1.update(&chunk);
                Ok(chunk)
            },
        )
    };
    let sent = state
        .http
        .post(runtime::with_path(url, "files", &segments))
        .bearer_auth(token)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .timeout(UPLOAD_TIMEOUT)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await;
    if cut_off.load(Ordering::Relaxed) {
        return Err(too_large(limit));
    }
    let response = sent.map_err(|err| {
        tracing::warn!(agent_id = %agent_id, error = %err, "an upload to the runtime failed");
        ApiError::Unavailable("the agent runtime")
    })?;
    let (size, digest) = {
        let seen = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (seen.0, hex::encode(seen.1.clone().finalize()))
    };
    match response.status() {
        StatusCode::CREATED | StatusCode::OK => {
            // Read within a bound: the runtime is not trusted with the edge's memory.
            let claimed = bounded::read(response.bytes_stream(), WRITTEN_CAP)
                .await
                .ok()
                .and_then(|body| serde_json::from_slice::<Written>(&body).ok());
            match claimed {
                Some(written) if written.size == size => {}
                Some(written) => tracing::warn!(
                    agent_id = %agent_id, sent = size, claimed = written.size,
                    "the runtime claims another size than the edge sent; the edge's is recorded"
                ),
                None => return Err(ApiError::Unavailable("the agent runtime")),
            }
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(ApiError::client(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the file is larger than the agent runtime accepts",
            ));
        }
        StatusCode::BAD_REQUEST => return Err(runtime::not_a_workspace_file()),
        status => {
            tracing::warn!(agent_id = %agent_id, %status, "the runtime refused an upload");
            return Err(ApiError::Unavailable("the agent runtime"));
        }
    }
    let path = segments.join("/");
    // A retry of this upload (same key, path and bytes) is recorded once; the same key with
    // another file is another record, so nothing is written unaudited.
    let meta = CommandMeta {
        command_id: CommandId(Uuid::new_v5(
            &command_id.0,
            format!("{path}\n{size}\n{digest}").as_bytes(),
        )),
        ..CommandMeta::new(Actor::User(caller.id))
    };
    let record = AgentCommand::RecordFileUpload {
        user_id: caller.id,
        path: path.clone(),
        size,
    };
    state
        .commands
        .agents
        .execute(&agent_id.to_string(), record, &meta)
        .await?;
    tracing::info!(agent_id = %agent_id, size, "file uploaded");
    Ok(Uploaded { path, size })
}

/// What the runtime answers a written file with.
#[derive(Deserialize)]
struct Written {
    size: u64,
}

/// 413 for a body over `limit` bytes.
fn too_large(limit: u64) -> ApiError {
    ApiError::Client {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: "payload_too_large",
        message: format!("the file is larger than the upload limit ({limit} bytes)"),
        details: Some(json!({ "limit": limit })),
    }
}
