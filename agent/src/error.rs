//! [`ApiError`]: the one place HTTP statuses and the JSON error envelope are decided.
//! Clients get `{"error": {"code", "message"}}`; internal detail goes to the log only.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::workspace::PathError;

/// Axum's default body limit, which the JSON routes keep.
pub const JSON_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// An error a handler returns.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing or wrong bearer token.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// The request is malformed.
    #[error("{message}")]
    BadRequest {
        /// Stable code (`invalid_request`, `invalid_path`, `not_a_file`).
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Nothing there.
    #[error("{0}")]
    NotFound(String),
    /// A run is already going for this chat.
    #[error("a run is already in progress for chat {0:?}")]
    ChatBusy(String),
    /// The body is over the limit.
    #[error("body exceeds the limit of {0} bytes")]
    TooLarge(u64),
    /// Something failed inside; the cause is logged, not sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// A 400 `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code: "invalid_request",
            message: message.into(),
        }
    }

    /// A JSON body that could not be read: 413 if it was over the body limit, else 400 with
    /// the parser's explanation.
    pub fn from_json(rejection: axum::extract::rejection::JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::TooLarge(JSON_BODY_LIMIT as u64);
        }
        ApiError::invalid(rejection.body_text())
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::ChatBusy(_) => (StatusCode::CONFLICT, "chat_busy"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<PathError> for ApiError {
    fn from(err: PathError) -> Self {
        match err {
            PathError::Invalid(_) | PathError::Escapes(_) => ApiError::BadRequest {
                code: "invalid_path",
                message: err.to_string(),
            },
            PathError::NotFound(_) => ApiError::NotFound(err.to_string()),
            PathError::Io { .. } => ApiError::Internal(Box::new(err)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(source) = &self {
            tracing::error!(error = %source, "request failed");
        }
        let (status, code) = self.status_and_code();
        let body = Json(json!({"error": {"code": code, "message": self.to_string()}}));
        if status == StatusCode::UNAUTHORIZED {
            return (status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
        }
        (status, body).into_response()
    }
}
