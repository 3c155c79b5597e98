//! Idempotent writes: `Idempotency-Key` on any POST/PUT/PATCH/DELETE, `idempotencyKey` in a
//! gateway write method's params. A retry with the same key returns the first answer and
//! changes nothing; the same key with a different request is refused (422
//! `idempotency_key_reused`).
//!
//! Two layers, so that neither a lost answer nor a race can double a write:
//! - **the log**: the key decides the command id ([`IdempotencyKey::command_id`]), and the ids of
//!   what the command creates follow from it (an agent, a run, a conversation), so a retried
//!   command is recognised by the store (`Nats-Msg-Id`, ADR 2) and addresses the same aggregate;
//! - **the answer** (POST, PATCH, DELETE): the first answer (status and body) is kept in the
//!   `idempotency` bucket for a day, under the caller's credentials and the key, with a hash of
//!   the request. A retry gets it replayed (`idempotency-replayed: true`); a request still
//!   running answers 409 `idempotency_in_progress`. Streams (`text/event-stream`) are not kept:
//!   their retries run again, and the log layer makes that a replay of the same run (an exec
//!   is not run twice: 409 `exec_already_ran`). A 5xx is not kept either, so the retry can
//!   succeed. A PUT (an upload) skips this layer: it is idempotent by itself and its body is
//!   not held (ADR 18).
//!
//! The bucket is shared by every edge process, so this holds across replicas.

use crate::error::ApiError;
use crate::state::AppState;
use async_nats::jetstream::kv;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use warren_domain::ids::{CommandId, UserId};

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// Set on a replayed answer.
pub const REPLAYED: &str = "idempotency-replayed";
/// The longest key accepted.
pub const MAX_KEY: usize = 255;
/// The largest answer kept (anything larger runs again on a retry, idempotent in the log).
const MAX_KEPT_BODY: usize = 256 * 1024;
/// Namespace of the command ids keys decide.
const NAMESPACE: Uuid = Uuid::from_u128(0x7761_7272_656e_2d69_6465_6d70_6f74_656e);

/// A request's idempotency key, if it sent one (checked: 1 to 255 visible ASCII characters).
#[derive(Clone, Debug, Default)]
pub struct IdempotencyKey(pub Option<String>);

impl IdempotencyKey {
    /// Parses a key sent by a client.
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        match raw {
            None => Ok(Self(None)),
            Some(key) if valid(key) => Ok(Self(Some(key.to_owned()))),
            Some(_) => Err(ApiError::invalid_field(
                "Idempotency-Key",
                format!("must be 1 to {MAX_KEY} visible ASCII characters"),
            )),
        }
    }

    /// The command id for `user`'s write: decided by the key (the same for every retry), or
    /// fresh without one.
    pub fn command_id(&self, user: UserId) -> CommandId {
        match &self.0 {
            Some(key) => CommandId(Uuid::new_v5(
                &NAMESPACE,
                format!("{}/{key}", user.0).as_bytes(),
            )),
            None => CommandId::new(),
        }
    }
}

fn valid(key: &str) -> bool {
    (1..=MAX_KEY).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let raw = parts
            .headers
            .get(HEADER)
            .map(|v| v.to_str().unwrap_or("\u{0}"));
        IdempotencyKey::parse(raw)
    }
}

/// What the bucket keeps per (caller, key).
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// SHA-256 of the request (method, path, body or params).
    request: String,
    /// The answer, once there is one.
    answer: Option<Kept>,
    /// A stream was answered: retries run again.
    streamed: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Kept {
    status: u16,
    content_type: Option<String>,
    body: String,
}

/// What a new request with a key finds.
pub enum Begin {
    /// Nobody used the key: go on, then [`Ledger::finish`] or [`Ledger::abandon`].
    Fresh(Claim),
    /// The same request was answered: this is its answer (status, content type, body).
    Replay(u16, Option<String>, String),
    /// The same request answered with a stream: run it again (the log makes it the same).
    Again,
    /// The same request is still running.
    InProgress,
    /// Another request used the key.
    Reused,
}

/// A key claimed by a running request.
pub struct Claim {
    name: String,
    request: String,
    revision: u64,
}

/// The `idempotency` bucket.
#[derive(Clone)]
pub struct Ledger {
    bucket: kv::Store,
}

impl Ledger {
    /// The ledger on the `idempotency` bucket (created by the log's topology).
    pub async fn open(
        js: &async_nats::jetstream::Context,
    ) -> Result<Self, async_nats::jetstream::context::KeyValueError> {
        Ok(Self {
            bucket: js
                .get_key_value(warren_commands::topology::KV_IDEMPOTENCY)
                .await?,
        })
    }

    /// Looks up (and claims, if free) `key` of the caller `scope` for a request hashing to
    /// `request`.
    pub async fn begin(&self, scope: &str, key: &str, request: &str) -> Result<Begin, ApiError> {
        let name = format!(
            "key.{}",
            hex::encode(Sha256::digest(format!("{scope}\n{key}").as_bytes()))
        );
        for _ in 0..4 {
            match self.bucket.entry(&name).await.map_err(ApiError::internal)? {
                Some(entry) if entry.operation == kv::Operation::Put => {
                    let record: Record =
                        serde_json::from_slice(&entry.value).map_err(ApiError::internal)?;
                    return Ok(if record.request != request {
                        Begin::Reused
                    } else if let Some(kept) = record.answer {
                        Begin::Replay(kept.status, kept.content_type, kept.body)
                    } else if record.streamed {
                        Begin::Again
                    } else {
                        Begin::InProgress
                    });
                }
                _ => {
                    let record = Record {
                        request: request.to_owned(),
                        answer: None,
                        streamed: false,
                    };
                    let value = serde_json::to_vec(&record).map_err(ApiError::internal)?;
                    if let Ok(revision) = self.bucket.create(&name, value.into()).await {
                        return Ok(Begin::Fresh(Claim {
                            name,
                            request: request.to_owned(),
                            revision,
                        }));
                    }
                }
            }
        }
        Err(ApiError::Unavailable("idempotency ledger"))
    }

    /// Keeps the answer to a claimed key (or, for a stream, that retries run again).
    pub async fn finish(&self, claim: Claim, answer: Option<(u16, Option<String>, String)>) {
        let record = Record {
            request: claim.request,
            streamed: answer.is_none(),
            answer: answer.map(|(status, content_type, body)| Kept {
                status,
                content_type,
                body,
            }),
        };
        let Ok(value) = serde_json::to_vec(&record) else {
            return;
        };
        if let Err(err) = self
            .bucket
            .update(&claim.name, value.into(), claim.revision)
            .await
        {
            tracing::warn!(error = %err, "keeping an idempotent answer failed");
        }
    }

    /// Frees a claimed key (the request failed inside: a retry may try again).
    pub async fn abandon(&self, claim: Claim) {
        let _ = self.bucket.purge(&claim.name).await;
    }
}

/// The hash of a request: method, path and body.
pub fn request_hash(method: &str, path: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(method.as_bytes());
    hash.update(b"\n");
    hash.update(path.as_bytes());
    hash.update(b"\n");
    hash.update(body);
    hex::encode(hash.finalize())
}

/// The REST layer: replays kept answers and keeps first answers of keyed writes.
pub async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // A PUT (a file upload) is idempotent by itself, and its body may be far larger than
    // this layer keeps: it is streamed on, and its key only names its command (ADR 18).
    // A model call through the proxy is not a write to replay: its answer is the provider's
    // (ADR 23), and its body may be far larger than this layer keeps.
    if !crate::extract::is_write(request.method())
        || request.method() == Method::PUT
        || crate::model_proxy::is_model_path(request.uri().path())
    {
        return next.run(request).await;
    }
    let key = match request.headers().get(HEADER) {
        None => return next.run(request).await,
        Some(raw) => match IdempotencyKey::parse(Some(raw.to_str().unwrap_or("\u{0}"))) {
            Ok(IdempotencyKey(Some(key))) => key,
            Ok(IdempotencyKey(None)) => return next.run(request).await,
            Err(err) => return err.into_response(),
        },
    };
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, state.settings.max_body_bytes).await else {
        return ApiError::client(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is too large",
        )
        .into_response();
    };
    let scope = scope_of(&parts.headers, &parts);
    let hash = request_hash(parts.method.as_str(), parts.uri.path(), &body);
    let claim = match state.idempotency.begin(&scope, &key, &hash).await {
        Err(err) => return err.into_response(),
        Ok(Begin::Replay(status, content_type, body)) => {
            return replay(status, content_type, body);
        }
        Ok(Begin::Reused) => {
            return ApiError::client(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request",
            )
            .into_response();
        }
        Ok(Begin::InProgress) => {
            return ApiError::TooMany {
                code: "idempotency_in_progress",
                message: "a request with this Idempotency-Key is still running".into(),
                retry_after_secs: 1,
                details: None,
            }
            .into_response();
        }
        Ok(Begin::Again) => None,
        Ok(Begin::Fresh(claim)) => Some(claim),
    };
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    let Some(claim) = claim else {
        return response;
    };
    if response.status().is_server_error() {
        state.idempotency.abandon(claim).await;
        return response;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if content_type
        .as_deref()
        .is_some_and(|t| t.starts_with("text/event-stream"))
    {
        state.idempotency.finish(claim, None).await;
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_KEPT_BODY).await else {
        state.idempotency.finish(claim, None).await;
        return ApiError::Unavailable("answer too large to keep").into_response();
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    state
        .idempotency
        .finish(claim, Some((parts.status.as_u16(), content_type, text)))
        .await;
    Response::from_parts(parts, Body::from(bytes))
}

/// Whose key it is: the caller's credentials (a key is never replayed to someone else), or,
/// without any, the client's address.
fn scope_of(headers: &HeaderMap, parts: &Parts) -> String {
    match headers.get(header::AUTHORIZATION) {
        Some(auth) => format!("auth:{}", hex::encode(Sha256::digest(auth.as_bytes()))),
        None => format!("ip:{}", crate::extract::client_ip(parts)),
    }
}

fn replay(status: u16, content_type: Option<String>, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = (status, Bytes::from(body)).into_response();
    if let Some(content_type) = content_type.and_then(|t| HeaderValue::from_str(&t).ok()) {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_decides_the_command_id_for_its_user_only() {
        let (ada, bob) = (UserId::new(), UserId::new());
        let key = IdempotencyKey::parse(Some("order-17")).expect("valid");
        assert_eq!(key.command_id(ada), key.command_id(ada));
        assert_ne!(key.command_id(ada), key.command_id(bob));
        let none = IdempotencyKey::default();
        assert_ne!(none.command_id(ada), none.command_id(ada));
    }

    #[test]
    fn keys_are_short_visible_ascii() {
        for bad in ["", "a b", "é", &"x".repeat(256), "a\u{0}"] {
            assert!(IdempotencyKey::parse(Some(bad)).is_err(), "{bad:?}");
        }
        assert!(IdempotencyKey::parse(Some("2f9c-Retry_1")).is_ok());
    }
}
