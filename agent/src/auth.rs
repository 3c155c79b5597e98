//! Bearer-token middleware: every route but `/health` requires `Authorization: Bearer <token>`,
//! compared in constant time so response timing does not reveal how much of a guess matched.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::server::AppState;

/// Rejects the request with 401 unless it carries the configured token.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let expected = state.config.token.expose().as_bytes();
    match presented {
        Some(token) if bool::from(token.as_bytes().ct_eq(expected)) => next.run(request).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}
