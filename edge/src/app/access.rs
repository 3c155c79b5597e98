//! Who is asking, as of now: the one place a caller is authenticated and authorised, for REST
//! requests, each gateway request, and open streams when the caller's access changes.
//!
//! - [`authenticate`]: an access token's signature, expiry and session, and the user's current
//!   state loaded from the log (caught up on every call), so a reject, revoke or role change
//!   applies to the very next request on any replica.
//! - [`approved`]: the user may use agents. With `WARREN_APPROVAL=open`, a user still pending
//!   from before is let in here, at their next request. A pending user is told whether anyone
//!   can approve them yet.
//! - [`recheck`]: what an open connection asks when [`super::revocation`] says the caller's
//!   access may have changed: still signed in, still the same standing? If not, the connection
//!   ends with the code this returns.

use crate::error::ApiError;
use crate::state::AppState;
use crate::{auth::tokens::TokenError, views};
use axum::http::StatusCode;
use serde_json::json;
use std::ops::Deref;
use uuid::Uuid;
use warren_commands::CommandMeta;
use warren_domain::Actor;
use warren_domain::ids::UserId;
use warren_domain::user::{ApprovalMode, Role, User, UserCommand, UserStatus};

/// A signed-in caller.
#[derive(Clone, Debug)]
pub struct AuthUser {
    /// The user.
    pub id: UserId,
    /// The user's current state.
    pub user: User,
    /// Stream sequence of the user's last commit (for read-after-write on their rows).
    pub seq: u64,
    /// The session (refresh family) the access token belongs to.
    pub session: Uuid,
    /// When the access token expires (seconds since the epoch).
    pub expires_at: i64,
}

/// A signed-in caller whom an admin approved (or who joined while approval is open).
#[derive(Clone, Debug)]
pub struct ApprovedUser(pub AuthUser);

impl Deref for ApprovedUser {
    type Target = AuthUser;
    fn deref(&self) -> &AuthUser {
        &self.0
    }
}

/// An approved admin.
#[derive(Clone, Debug)]
pub struct AdminUser(pub AuthUser);

impl Deref for AdminUser {
    type Target = AuthUser;
    fn deref(&self) -> &AuthUser {
        &self.0
    }
}

/// The signed-in user an access token names (its signature, expiry and session checked).
pub async fn authenticate(state: &AppState, token: &str) -> Result<AuthUser, ApiError> {
    let claims = state
        .tokens
        .verify_access(token)
        .await
        .map_err(token_error)?;
    let id = UserId(claims.sub);
    let (user, seq) = load(state, id).await?;
    Ok(AuthUser {
        id,
        user,
        seq,
        session: claims.sid,
        expires_at: claims.exp,
    })
}

/// The user a channel vouches for without a token (the Telegram bridge: Telegram authenticated
/// the sender, and their id maps to this user), as of now. Such a caller has no session to
/// sign out of; everything else (approval, revocation, role, limits) applies as it does to a
/// signed-in user.
pub async fn vouched(state: &AppState, id: UserId) -> Result<AuthUser, ApiError> {
    let (user, seq) = load(state, id).await?;
    Ok(AuthUser {
        id,
        user,
        seq,
        session: Uuid::nil(),
        expires_at: i64::MAX,
    })
}

async fn load(state: &AppState, id: UserId) -> Result<(User, u64), ApiError> {
    let (user, seq) = state
        .commands
        .users
        .load(&id.to_string())
        .await
        .map_err(ApiError::internal)?;
    if user.id.is_none() {
        return Err(ApiError::unauthorized("invalid_token", "unknown user"));
    }
    Ok((user, seq))
}

/// `caller`, if they may use agents: approved, or pending while approval is open (then they are
/// approved now, by the platform).
pub async fn approved(state: &AppState, caller: AuthUser) -> Result<ApprovedUser, ApiError> {
    if caller.user.is_approved() {
        return Ok(ApprovedUser(caller));
    }
    let status = caller.user.status;
    if status == UserStatus::Pending && state.settings.approval == ApprovalMode::Open {
        let committed = state
            .commands
            .users
            .execute(
                &caller.id.to_string(),
                UserCommand::ApproveUser,
                &CommandMeta::new(Actor::System("edge".into())),
            )
            .await?;
        tracing::info!(user_id = %caller.id, "pending user let in: approval is open");
        let (user, seq) = load(state, caller.id).await?;
        return Ok(ApprovedUser(AuthUser {
            user,
            seq: seq.max(committed.sequence),
            ..caller
        }));
    }
    let admins = views::admin_count(&state.db).await?;
    let message = match (status, admins) {
        (UserStatus::Pending, 0) => "your account is pending, and this platform has no admin yet: \
             its operator can list your address in WARREN_ADMIN_EMAILS (you become admin at your \
             next sign-in) or set WARREN_APPROVAL=open"
            .to_owned(),
        (UserStatus::Pending, _) => {
            format!(
                "your account is pending; one of the platform's {admins} admin(s) has to approve it"
            )
        }
        (status, _) => format!("your account is {status}; an admin has to approve it first"),
    };
    Err(ApiError::Client {
        status: StatusCode::FORBIDDEN,
        code: "not_approved",
        message,
        details: Some(json!({ "status": status.as_str(), "admins": admins })),
    })
}

/// `caller`, if they are an approved admin.
pub fn admin(caller: AuthUser) -> Result<AdminUser, ApiError> {
    if caller.user.role != Role::Admin || !caller.user.is_approved() {
        return Err(ApiError::forbidden("forbidden", "admins only"));
    }
    Ok(AdminUser(caller))
}

/// An approved analyst or admin: may read every user's usage.
#[derive(Clone, Debug)]
pub struct AnalystUser(pub AuthUser);

impl Deref for AnalystUser {
    type Target = AuthUser;
    fn deref(&self) -> &AuthUser {
        &self.0
    }
}

/// `caller`, if they are an approved analyst or admin.
pub fn analyst(caller: AuthUser) -> Result<AnalystUser, ApiError> {
    if !matches!(caller.user.role, Role::Admin | Role::Analyst) || !caller.user.is_approved() {
        return Err(ApiError::forbidden("forbidden", "analysts and admins only"));
    }
    Ok(AnalystUser(caller))
}

/// Whether `caller` (as they were when their connection opened or last passed this check) may
/// go on: their session is alive and their standing is the same. The refreshed caller, or the
/// refusal the connection ends with. (A socket ends at its token's expiry by a timer of its
/// own; a stream, which cannot renew in-band, is held to its session instead.)
pub async fn recheck(state: &AppState, caller: &AuthUser) -> Result<AuthUser, ApiError> {
    state
        .tokens
        .session_alive(caller.id, caller.session)
        .await
        .map_err(token_error)?;
    let (user, seq) = load(state, caller.id).await?;
    let was = &caller.user;
    let shut_out = matches!(user.status, UserStatus::Rejected | UserStatus::Revoked);
    if user.status != was.status && (was.is_approved() || shut_out) {
        return Err(ApiError::forbidden(
            "access_revoked",
            format!("your account is now {}", user.status),
        ));
    }
    if user.role != was.role {
        return Err(ApiError::forbidden(
            "role_changed",
            format!("your role is now {}: reconnect", user.role),
        ));
    }
    Ok(AuthUser {
        user,
        seq,
        ..caller.clone()
    })
}

/// Maps a refused token to its 401.
pub fn token_error(err: TokenError) -> ApiError {
    match err {
        TokenError::Invalid => ApiError::unauthorized("invalid_token", "the token is invalid"),
        TokenError::Expired => ApiError::unauthorized("token_expired", "the token has expired"),
        TokenError::Revoked => {
            ApiError::unauthorized("session_revoked", "this session was signed out")
        }
        TokenError::Reused => ApiError::unauthorized(
            "refresh_token_reused",
            "this refresh token was already used; the session is revoked",
        ),
        TokenError::Store(source) => ApiError::internal(source),
    }
}
