//! `GET /files/{path}` (download) and `POST /files/{path}` (upload, the raw body). Paths are
//! workspace-relative; `..`, absolute paths and symlinks leading out are refused with 400
//! `invalid_path`, a missing file is 404.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use crate::error::ApiError;
use crate::server::AppState;

fn internal(err: std::io::Error) -> ApiError {
    ApiError::Internal(Box::new(err))
}

fn not_a_file(raw: &str) -> ApiError {
    ApiError::BadRequest {
        code: "not_a_file",
        message: format!("{raw:?} is a directory"),
    }
}

/// Streams a workspace file as `application/octet-stream`.
pub async fn download(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(raw) = path.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    let resolved = state.workspace.existing(&raw)?;
    let metadata = tokio::fs::metadata(&resolved).await.map_err(internal)?;
    if metadata.is_dir() {
        return Err(not_a_file(&raw));
    }
    let file = tokio::fs::File::open(&resolved).await.map_err(internal)?;
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
        (header::CONTENT_LENGTH, metadata.len().to_string()),
    ];
    Ok((headers, Body::from_stream(ReaderStream::new(file))).into_response())
}

/// Writes the body to a workspace file (parents created, replaced atomically):
/// 201 `{"path", "size"}`; 413 `too_large` over the upload limit.
pub async fn upload(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path(raw) = path.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    let limit = state.config.limits.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(ApiError::TooLarge(limit));
    }
    let target = state.workspace.writable(&raw, false)?;
    if target.is_dir() {
        return Err(not_a_file(&raw));
    }
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(internal)?;
    }
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = target.with_file_name(format!(".{name}.upload-tmp"));
    let written = receive(body, &temporary, limit).await;
    let size = match written {
        Ok(size) => size,
        Err(err) => {
            let _ = tokio::fs::remove_file(&temporary).await;
            return Err(err);
        }
    };
    if let Err(err) = tokio::fs::rename(&temporary, &target).await {
        let _ = tokio::fs::remove_file(&temporary).await;
        return Err(internal(err));
    }
    let shown = state.workspace.display(&target);
    Ok((
        StatusCode::CREATED,
        Json(json!({"path": shown, "size": size})),
    )
        .into_response())
}

/// Streams `body` into `path`, failing with `TooLarge` past `limit` bytes.
async fn receive(body: Body, path: &std::path::Path, limit: u64) -> Result<u64, ApiError> {
    let mut file = tokio::fs::File::create(path).await.map_err(internal)?;
    let mut stream = body.into_data_stream();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|err| ApiError::invalid(format!("reading the body: {err}")))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(ApiError::TooLarge(limit));
        }
        file.write_all(&chunk).await.map_err(internal)?;
    }
    file.flush().await.map_err(internal)?;
    Ok(size)
}
