//! [`ApiError`]: the one place HTTP statuses and the JSON error envelope are decided.
//!
//! Clients get `{"error": {"code", "message", "details"?}}` for every non-2xx answer; internal
//! detail goes to the log only. Domain refusals are mapped by their stable `code()` in
//! [`domain_status`], axum's extractor rejections in the `From` impls below, so no handler picks a
//! status by hand.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use warren_commands::CommandError;
use warren_domain::agent::AgentError;
use warren_domain::conversation::ConversationError;
use warren_domain::host::HostError;
use warren_domain::user::UserError;

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// What went wrong, for machines (`code`) and people (`message`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable snake_case code, e.g. `not_approved`, `validation_failed`, `rate_limited`.
    pub code: String,
    /// A human-readable explanation; never internal detail.
    pub message: String,
    /// Structured context: offending fields for validation errors, limits for quotas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// An error a handler returns.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// An error the client is told about, with its status and stable code.
    #[error("{status} {code}: {message}")]
    Client {
        /// The HTTP status (4xx, or 503 with details).
        status: StatusCode,
        /// The stable code.
        code: &'static str,
        /// What to tell the client.
        message: String,
        /// Structured context.
        details: Option<Value>,
    },
    /// Too many requests, or a quota is used up; answered with `Retry-After`.
    #[error("{code}: retry after {retry_after_secs} s")]
    TooMany {
        /// `rate_limited` or `quota_exceeded`.
        code: &'static str,
        /// What to tell the client.
        message: String,
        /// Seconds until a retry may succeed.
        retry_after_secs: u64,
        /// Structured context (limit, used).
        details: Option<Value>,
    },
    /// The resource does not exist, or belongs to someone else (never leak which).
    #[error("not found")]
    NotFound,
    /// A dependency is down.
    #[error("service unavailable: {0}")]
    Unavailable(&'static str),
    /// Something failed inside; the cause is logged, not sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// 422 for one invalid field.
    pub fn invalid_field(field: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        ApiError::Client {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "validation_failed",
            message: format!("invalid {field}: {reason}"),
            details: Some(json!({ "fields": [{ "field": field, "reason": reason }] })),
        }
    }

    /// 401 with a code saying why.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 403 with a code saying why.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::FORBIDDEN, code, message)
    }

    /// 409 with a code saying why.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::CONFLICT, code, message)
    }

    /// Any client error.
    pub fn client(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Client {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    /// 503 `at_capacity`: the platform runs as many sandboxes as it may
    /// (`WARREN_MAX_SANDBOXES`).
    pub fn at_capacity(awake: u64, max: u32) -> Self {
        ApiError::Client {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "at_capacity",
            message: "the platform is at capacity: stop another agent or try again later"
                .to_owned(),
            details: Some(json!({ "limit": max, "awake": awake })),
        }
    }

    /// Wraps an internal failure (logged when answered, never sent).
    pub fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        ApiError::Internal(Box::new(err))
    }

    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Client { status, .. } => *status,
            ApiError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told (never internal detail).
    pub fn body(&self) -> ErrorBody {
        let (code, message, details) = match self {
            ApiError::Client {
                code,
                message,
                details,
                ..
            }
            | ApiError::TooMany {
                code,
                message,
                details,
                ..
            } => (*code, message.clone(), details.clone()),
            ApiError::NotFound => ("not_found", "not found".to_owned(), None),
            ApiError::Unavailable(what) => ("unavailable", format!("{what} is unavailable"), None),
            ApiError::Internal(_) => ("internal", "internal error".to_owned(), None),
        };
        ErrorBody {
            code: code.to_owned(),
            message,
            details,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(source) => {
                tracing::error!(error = %chain(source.as_ref()), "request failed")
            }
            ApiError::Unavailable(what) => tracing::warn!(dependency = what, "request failed"),
            _ => {}
        }
        let status = self.status();
        let mut response = (status, Json(ErrorEnvelope { error: self.body() })).into_response();
        if let ApiError::TooMany {
            retry_after_secs, ..
        } = &self
        {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs.max(&1).to_owned()),
            );
        }
        response
    }
}

/// The error and its causes on one line, for the log.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A domain refusal: a stable code and, for `invalid_input`, the offending field.
pub trait DomainRefusal: std::error::Error + Send + Sync + 'static {
    /// The stable code.
    fn code(&self) -> &'static str;
    /// `(field, reason)` when the refusal is about one input field.
    fn invalid_field(&self) -> Option<(&'static str, &'static str)>;
}

macro_rules! domain_refusal {
    ($($error:ident),*) => {$(
        impl DomainRefusal for $error {
            fn code(&self) -> &'static str {
                <$error>::code(self)
            }
            fn invalid_field(&self) -> Option<(&'static str, &'static str)> {
                match self {
                    $error::InvalidInput { field, reason } => Some((field, reason)),
                    _ => None,
                }
            }
        }
    )*};
}

domain_refusal!(UserError, AgentError, ConversationError, HostError);

/// The HTTP status of a domain code. The only table of its kind.
pub fn domain_status(code: &str) -> StatusCode {
    match code {
        "not_found" | "key_not_found" | "auth_method_not_found" => StatusCode::NOT_FOUND,
        "not_approved" => StatusCode::FORBIDDEN,
        "invalid_input" => StatusCode::UNPROCESSABLE_ENTITY,
        "queue_full" => StatusCode::TOO_MANY_REQUESTS,
        // already_exists, invalid_state, deleted, never_deployed, duplicate_key, last_auth_method,
        // auth_method_already_linked, deployment_not_active, run_in_progress, …: the resource's
        // state forbids the change.
        _ => StatusCode::CONFLICT,
    }
}

impl<E: DomainRefusal> From<CommandError<E>> for ApiError {
    fn from(err: CommandError<E>) -> Self {
        match err {
            CommandError::Rejected(refusal) => {
                if let Some((field, reason)) = refusal.invalid_field() {
                    return ApiError::invalid_field(field, reason);
                }
                let code = refusal.code();
                match domain_status(code) {
                    StatusCode::NOT_FOUND => ApiError::NotFound,
                    StatusCode::TOO_MANY_REQUESTS => ApiError::TooMany {
                        code,
                        message: refusal.to_string(),
                        retry_after_secs: 1,
                        details: None,
                    },
                    status => ApiError::Client {
                        status,
                        code,
                        message: refusal.to_string(),
                        details: None,
                    },
                }
            }
            CommandError::Conflict { .. } => ApiError::conflict(
                "conflict",
                "the resource changed concurrently; retry the request",
            ),
            CommandError::Store(source) => ApiError::internal(source),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::UNPROCESSABLE_ENTITY => "validation_failed",
            _ => "invalid_json",
        };
        // The text describes the client's own input (serde's path and reason), never our state.
        ApiError::Client {
            status,
            code,
            message: rejection.body_text(),
            details: None,
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::Client {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "validation_failed",
            message: rejection.body_text(),
            details: None,
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> Self {
        // A malformed id names nothing that exists.
        ApiError::NotFound
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        ApiError::internal(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_codes_map_to_their_statuses() {
        assert_eq!(domain_status("not_found"), StatusCode::NOT_FOUND);
        assert_eq!(domain_status("not_approved"), StatusCode::FORBIDDEN);
        assert_eq!(domain_status("invalid_state"), StatusCode::CONFLICT);
        assert_eq!(domain_status("last_auth_method"), StatusCode::CONFLICT);
        assert_eq!(
            domain_status("invalid_input"),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    #[test]
    fn an_invalid_input_refusal_becomes_a_422_naming_the_field() {
        let err: ApiError = CommandError::Rejected(UserError::InvalidInput {
            field: "avatar_url",
            reason: "must be an http or https URL",
        })
        .into();
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = err.body();
        assert_eq!(body.code, "validation_failed");
        assert_eq!(
            body.details.expect("details")["fields"][0]["field"],
            "avatar_url"
        );
    }

    #[test]
    fn internal_errors_never_carry_their_text_to_the_client() {
        let err = ApiError::internal(std::io::Error::other("password=hunter2"));
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!err.body().message.contains("hunter2"));
    }
}
