//! Extractors: input that answers in the error envelope, and who is calling.
//!
//! - [`ApiJson`], [`ApiPath`], [`ApiQuery`] — axum's extractors with their rejections mapped to
//!   [`ApiError`] (bad JSON 400, wrong content type 415, too large 413, invalid fields 422), and
//!   every string in them checked by [`crate::input`] first (422 naming the field).
//! - [`AuthUser`] — a valid access token of a live session, and the user's *current* state
//!   loaded from the log (through the command store's cache, caught up on every request), so a
//!   reject, revoke or role change takes effect on the caller's next request on any replica.
//! - [`ApprovedUser`] (403 `not_approved` otherwise) and [`AdminUser`] (403 `forbidden`).
//! - [`ClientIp`] — the peer address, the key of per-IP rate limits.

use crate::app::{access, limits};
use crate::error::ApiError;
use crate::input::{TextFields, check_json, check_pairs};
use crate::state::AppState;
use axum::extract::{
    ConnectInfo, FromRequest, FromRequestParts, Path, Query, RawPathParams, Request,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::net::SocketAddr;

/// A JSON body whose every string keeps the text rules ([`TextFields`] names the fields that
/// keep a domain field's rule too); rejections answer in the envelope.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned + TextFields,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        // Read as a value first: the strings are checked where they are, by their path, before
        // the body becomes a type (and, later, a command).
        let axum::Json(value) = axum::Json::<Value>::from_request(request, state).await?;
        check_json(&value, T::TEXT_FIELDS)?;
        serde_path_to_error::deserialize(value)
            .map(ApiJson)
            .map_err(|err| body_error(&err))
    }
}

/// A body that does not fit its type: 422 naming the field (a field of a wrong type, a missing
/// one, or one the API does not know — never silently ignored).
fn body_error(err: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let (field, reason) = field_error(err);
    ApiError::invalid_field(&field, reason)
}

/// The field a deserialization error is about (its path, or the name serde's message gives for
/// a missing or unknown field) and the reason, without serde's position.
pub(crate) fn field_error(err: &serde_path_to_error::Error<serde_json::Error>) -> (String, String) {
    let inner = err.inner().to_string();
    // A missing field is named by serde's message only (the path stops above it).
    let named = inner
        .strip_prefix("unknown field `")
        .or_else(|| inner.strip_prefix("missing field `"))
        .and_then(|rest| rest.split('`').next());
    let path = err.path().to_string();
    let field = match (path.as_str(), named) {
        (".", Some(name)) => name.to_owned(),
        (path, _) => path.to_owned(),
    };
    let reason = inner.split(" at line ").next().unwrap_or(&inner).to_owned();
    (field, reason)
}

/// Path parameters, each free of control characters; a malformed id answers 404.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        if let Ok(raw) = RawPathParams::from_request_parts(parts, state).await {
            check_pairs(&raw)?;
        }
        Ok(ApiPath(value))
    }
}

/// Query parameters, each free of control characters; rejections answer 422.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)?;
        check_pairs(
            pairs
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        )?;
        let Query(value) = Query::<T>::try_from_uri(&parts.uri)?;
        Ok(ApiQuery(value))
    }
}

/// The caller's address (the TCP peer).
pub struct ClientIp(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(parts)))
    }
}

/// The peer IP of a request, or `unknown` when served without connect info (tests).
pub fn client_ip(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |info| info.0.ip().to_string())
}

/// Whether a request changes something (and counts against write rate limits).
pub fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The token of an `Authorization: Bearer <token>` header, if there is a non-empty one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(&parts.headers).ok_or_else(|| {
            ApiError::unauthorized(
                "unauthenticated",
                "sign in: send Authorization: Bearer <access token>",
            )
        })?;
        let caller = access::authenticate(state, token).await?;
        if is_write(&parts.method) {
            limits::user_write(state, caller.id).await?;
        }
        Ok(caller)
    }
}

pub use crate::app::access::{AdminUser, ApprovedUser, AuthUser, token_error};
pub use crate::idempotency::IdempotencyKey;

impl FromRequestParts<AppState> for ApprovedUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = AuthUser::from_request_parts(parts, state).await?;
        access::approved(state, caller).await
    }
}

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = AuthUser::from_request_parts(parts, state).await?;
        access::admin(caller)
    }
}
