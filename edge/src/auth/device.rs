//! Signing a device in through a browser (RFC 8628's device authorization grant, on Warren's
//! own routes): the CLI asks for a code pair, the person opens the console's `/device` page
//! where they are signed in (by any method: email, Google, GitHub, wallet) and approves the
//! short user code, and the CLI, polling, receives a session of its own.
//!
//! - `POST /auth/device` → `{device_code, user_code, verification_uri, verification_uri_complete,
//!   expires_in, interval}`. Kept as `device.<sha256(device_code)>` and
//!   `device_user.<user_code>` in the auth bucket for ten minutes.
//! - `POST /auth/device/approve {user_code}` (signed in) approves it for the caller.
//! - `POST /auth/device/token {device_code}` → 400 `authorization_pending` until approved,
//!   `slow_down` when polled faster than `interval`, `expired_token` after ten minutes; then the
//!   token pair, once.

use crate::app::limits;
use crate::auth::routes::SignedIn;
use crate::auth::store::sha256_hex;
use crate::error::ApiError;
use crate::extract::{ApiJson, AuthUser, ClientIp};
use crate::openapi::resp;
use crate::routes::ApiRouter;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use warren_domain::ids::UserId;

/// The device routes.
pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .post("/auth/device", start)
        .post("/auth/device/approve", approve)
        .post("/auth/device/token", token)
}

/// How long a device code may be approved and redeemed.
pub const DEVICE_TTL_SECS: i64 = 600;
/// Seconds a device waits between polls.
pub const INTERVAL_SECS: i64 = 5;

/// Letters of a user code: no vowels (no words), no look-alikes.
const ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// A device's pending sign-in.
#[derive(Serialize, Deserialize)]
struct Pending {
    user_code: String,
    approved_by: Option<UserId>,
    expires_at: i64,
    last_poll: i64,
}

fn device_key(device_code: &str) -> String {
    format!("device.{}", sha256_hex(device_code.as_bytes()))
}

fn user_key(user_code: &str) -> String {
    format!("device_user.{user_code}")
}

/// `ABCD-EFGH` from eight random letters of [`ALPHABET`].
fn new_user_code() -> String {
    let letters: String = (0..8)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{}-{}", &letters[..4], &letters[4..])
}

/// A user code as typed: upper case, the dash optional, spaces ignored.
fn canonical_user_code(typed: &str) -> Option<String> {
    let letters: String = typed
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (letters.len() == 8 && letters.bytes().all(|b| ALPHABET.contains(&b)))
        .then(|| format!("{}-{}", &letters[..4], &letters[4..]))
}

/// The codes of a device sign-in.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceCodes {
    /// The device's secret; poll `/auth/device/token` with it.
    pub device_code: String,
    /// What the person checks in the browser.
    #[schema(example = "BCDF-GHJK")]
    pub user_code: String,
    /// The console page where they approve it.
    pub verification_uri: String,
    /// The same page with the code filled in.
    pub verification_uri_complete: String,
    /// Seconds the codes stay valid.
    pub expires_in: i64,
    /// Seconds to wait between polls.
    pub interval: i64,
}

/// Start signing a device (the CLI) in through a browser.
#[utoipa::path(post, path = "/api/v1/auth/device", operation_id = "post_auth_device", tag = "auth",
    responses((status = 201, description = "The codes.", body = DeviceCodes), resp::RateLimited))]
pub(crate) async fn start(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
) -> Result<(StatusCode, Json<DeviceCodes>), ApiError> {
    limits::auth_request(&state, &ip).await?;
    let device_code = hex::encode(rand::random::<[u8; 32]>());
    let expires_at = chrono::Utc::now().timestamp() + DEVICE_TTL_SECS;
    // A user code names one pending device at a time.
    let mut user_code = new_user_code();
    let mut claimed = false;
    for _ in 0..5 {
        if state
            .auth_kv
            .create(
                &user_key(&user_code),
                &(device_key(&device_code), expires_at),
            )
            .await
            .map_err(ApiError::internal)?
        {
            claimed = true;
            break;
        }
        let stale = state
            .auth_kv
            .get::<(String, i64)>(&user_key(&user_code))
            .await
            .map_err(ApiError::internal)?
            .filter(|((_, expires), _)| *expires < chrono::Utc::now().timestamp());
        if let Some((_, revision)) = stale {
            state
                .auth_kv
                .remove_at(&user_key(&user_code), revision)
                .await
                .map_err(ApiError::internal)?;
        }
        user_code = new_user_code();
    }
    if !claimed {
        return Err(ApiError::Unavailable("device sign-in"));
    }
    state
        .auth_kv
        .put(
            &device_key(&device_code),
            &Pending {
                user_code: user_code.clone(),
                approved_by: None,
                expires_at,
                last_poll: 0,
            },
        )
        .await
        .map_err(ApiError::internal)?;
    let page = format!(
        "{}/device",
        state.settings.frontend_url.trim_end_matches('/')
    );
    Ok((
        StatusCode::CREATED,
        Json(DeviceCodes {
            device_code,
            verification_uri_complete: format!("{page}?code={user_code}"),
            verification_uri: page,
            user_code,
            expires_in: DEVICE_TTL_SECS,
            interval: INTERVAL_SECS,
        }),
    ))
}

/// `POST /auth/device/approve`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    /// The code the device shows.
    #[schema(example = "BCDF-GHJK")]
    pub user_code: String,
}

/// `POST /auth/device/token`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The device's secret from `POST /auth/device`.
    pub device_code: String,
}

impl crate::input::TextFields for ApproveRequest {}
impl crate::input::TextFields for TokenRequest {}

fn unknown_code() -> ApiError {
    ApiError::client(
        StatusCode::NOT_FOUND,
        "unknown_code",
        "no device waits with this code: check it, or start again on the device",
    )
}

/// Approve a device's sign-in: it gets a session of the caller's.
#[utoipa::path(post, path = "/api/v1/auth/device/approve", operation_id = "post_auth_device_approve", tag = "auth",
    security(("bearer" = [])), request_body = ApproveRequest,
    responses((status = 204, description = "Approved: the device signs in at its next poll."),
        resp::Unauthorized, resp::NotFound, resp::Validation, resp::RateLimited))]
pub(crate) async fn approve(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiJson(request): ApiJson<ApproveRequest>,
) -> Result<StatusCode, ApiError> {
    limits::user_write(&state, caller.id).await?;
    let user_code = canonical_user_code(&request.user_code).ok_or_else(unknown_code)?;
    let (device, _) = state
        .auth_kv
        .get::<(String, i64)>(&user_key(&user_code))
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(unknown_code)?;
    let now = chrono::Utc::now().timestamp();
    for _ in 0..5 {
        let (mut pending, revision) = state
            .auth_kv
            .get::<Pending>(&device.0)
            .await
            .map_err(ApiError::internal)?
            .filter(|(pending, _)| pending.expires_at >= now && pending.user_code == user_code)
            .ok_or_else(unknown_code)?;
        if pending.approved_by.is_some() {
            return Err(unknown_code());
        }
        pending.approved_by = Some(caller.id);
        if state
            .auth_kv
            .update(&device.0, &pending, revision)
            .await
            .map_err(ApiError::internal)?
        {
            tracing::info!(user_id = %caller.id, "device sign-in approved");
            return Ok(StatusCode::NO_CONTENT);
        }
    }
    Err(ApiError::Unavailable("device sign-in"))
}

fn pending_error(code: &'static str, message: &str) -> ApiError {
    ApiError::client(StatusCode::BAD_REQUEST, code, message.to_owned())
}

/// Poll for the device's tokens.
#[utoipa::path(post, path = "/api/v1/auth/device/token", operation_id = "post_auth_device_token", tag = "auth",
    request_body = TokenRequest,
    responses((status = 200, description = "Approved: the device's token pair.", body = SignedIn),
        (status = 400, description = "`authorization_pending`, `slow_down` or `expired_token`.", body = crate::error::ErrorEnvelope),
        resp::Validation, resp::RateLimited))]
pub(crate) async fn token(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<TokenRequest>,
) -> Result<Json<SignedIn>, ApiError> {
    let key = device_key(request.device_code.trim());
    let expired = || {
        pending_error(
            "expired_token",
            "this device sign-in is unknown or expired: start again",
        )
    };
    let (mut pending, revision) = state
        .auth_kv
        .get::<Pending>(&key)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(expired)?;
    let now = chrono::Utc::now().timestamp();
    if pending.expires_at < now {
        return Err(expired());
    }
    let Some(user) = pending.approved_by else {
        let too_fast = now - pending.last_poll < INTERVAL_SECS - 1;
        pending.last_poll = now;
        // A lost race with an approval is answered as pending: the next poll sees it.
        state
            .auth_kv
            .update(&key, &pending, revision)
            .await
            .map_err(ApiError::internal)?;
        return Err(if too_fast {
            pending_error("slow_down", "polled too often: wait `interval` seconds")
        } else {
            pending_error(
                "authorization_pending",
                "not approved yet: open the page and approve the code",
            )
        });
    };
    // Redeemed once: of two polls racing, one gets the tokens.
    if !state
        .auth_kv
        .remove_at(&key, revision)
        .await
        .map_err(ApiError::internal)?
    {
        return Err(expired());
    }
    state
        .auth_kv
        .remove(&user_key(&pending.user_code))
        .await
        .map_err(ApiError::internal)?;
    let signed_in = crate::app::identity::SignedIn {
        user_id: user,
        became_admin: false,
    };
    Ok(Json(crate::auth::routes::session(&state, signed_in).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_read_as_people_type_them() {
        let code = new_user_code();
        assert_eq!(canonical_user_code(&code).as_deref(), Some(code.as_str()));
        assert_eq!(
            canonical_user_code(" bcdf ghjk ").as_deref(),
            Some("BCDF-GHJK")
        );
        for junk in ["", "BCDF-GHJ", "BCDF-GHJKL", "ABCD-EFGH", "../../x"] {
            assert_eq!(canonical_user_code(junk), None, "{junk:?}");
        }
    }
}
