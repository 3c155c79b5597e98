//! `/api/v1/users/me*`: the caller's profile and sign-in connections.

use crate::app::identity::owner_key;
use crate::consistency::{self, projection};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, AuthUser};
use crate::input::TextFields;
use crate::openapi::resp;
use crate::routes::ApiRouter;
use crate::state::AppState;
use crate::views::{self, ConnectionView, UserView};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;
use warren_commands::CommandMeta;
use warren_domain::Actor;
use warren_domain::ids::ConnectionId;
use warren_domain::text;
use warren_domain::user::{AuthKind, UserCommand};

/// The `/users/me` routes (API keys are in `keys`).
pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .get("/users/me", get_me)
        .patch("/users/me", patch_me)
        .get("/users/me/connections", list_connections)
        .delete("/users/me/connections/{id}", delete_connection)
        .post("/users/me/connections/telegram", link_telegram)
        .post("/users/me/connections/wallet", link_wallet)
        .post("/users/me/connections/google", link_google)
        .post("/users/me/connections/github", link_github)
}

/// Link a Google account to the caller's: open `authorize_url` in this browser (the answer
/// sets the cookie that binds the flow); Google sends it back to `/settings#linked=google`. An
/// account already linked to another user is refused there (409 `identity_taken`). 404 when
/// Google sign-in is not configured.
#[utoipa::path(post, path = "/api/v1/users/me/connections/google", operation_id = "post_users_me_connections_google", tag = "users", security(("bearer" = [])),
    responses((status = 201, description = "Where to consent.", body = crate::auth::oauth::LinkStart),
        resp::Unauthorized, resp::NotFound, resp::RateLimited))]
pub(crate) async fn link_google(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<axum::response::Response, ApiError> {
    crate::auth::oauth::link(&state, caller.id, "google").await
}

/// Link a GitHub account to the caller's, as for Google; back at `/settings#linked=github`.
#[utoipa::path(post, path = "/api/v1/users/me/connections/github", operation_id = "post_users_me_connections_github", tag = "users", security(("bearer" = [])),
    responses((status = 201, description = "Where to consent.", body = crate::auth::oauth::LinkStart),
        resp::Unauthorized, resp::NotFound, resp::RateLimited))]
pub(crate) async fn link_github(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<axum::response::Response, ApiError> {
    crate::auth::oauth::link(&state, caller.id, "github").await
}

/// Link a wallet to the caller's account: a challenge from `POST /auth/wallet/challenge`,
/// signed by the wallet. The wallet then signs in to this account; one that already signs in
/// another account is refused (409 `identity_taken`), never merged.
#[utoipa::path(post, path = "/api/v1/users/me/connections/wallet", operation_id = "post_users_me_connections_wallet", tag = "users", security(("bearer" = [])),
    request_body = crate::auth::wallet::VerifyRequest,
    responses((status = 200, description = "The caller's sign-in methods, the wallet among them.", body = Vec<ConnectionView>),
        resp::Unauthorized, resp::Conflict, resp::Validation, resp::RateLimited))]
pub(crate) async fn link_wallet(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiJson(request): ApiJson<crate::auth::wallet::VerifyRequest>,
) -> Result<Json<Vec<ConnectionView>>, ApiError> {
    crate::app::limits::user_write(&state, caller.id).await?;
    let address = crate::auth::wallet::verified_signer(&state, &request).await?;
    let wallet = crate::app::identity::Identity {
        kind: AuthKind::Wallet,
        external_id: address,
        email: None,
        display_name: None,
        listed_admin: false,
    };
    crate::app::identity::link(&state, caller.id, wallet).await?;
    Ok(Json(views::connections(&state.db, caller.id).await?))
}

/// A one-time code that links a Telegram account.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct LinkCodeView {
    /// The code; send `/start <code>` to the platform's Telegram bot.
    pub code: String,
    /// What to send the bot.
    pub command: String,
    /// Seconds the code stays valid.
    pub expires_in: i64,
}

/// A one-time code to link a Telegram account to the caller's: send `/start <code>` to the
/// platform's bot within ten minutes. A Telegram account already linked to another user is
/// refused there, never merged.
#[utoipa::path(post, path = "/api/v1/users/me/connections/telegram", operation_id = "post_users_me_connections_telegram", tag = "users", security(("bearer" = [])),
    responses((status = 201, description = "The code.", body = LinkCodeView), resp::Unauthorized, resp::RateLimited))]
pub(crate) async fn link_telegram(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<(StatusCode, Json<LinkCodeView>), ApiError> {
    crate::app::limits::user_write(&state, caller.id).await?;
    let code = crate::app::identity::link_code(&state, caller.id, AuthKind::Telegram).await?;
    Ok((
        StatusCode::CREATED,
        Json(LinkCodeView {
            command: format!("/start {code}"),
            code,
            expires_in: crate::app::identity::LINK_CODE_TTL_SECS,
        }),
    ))
}

/// `PATCH /users/me`: fields left out are kept; a blank text clears it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfilePatch {
    /// Name to show.
    pub display_name: Option<String>,
    /// Picture URL (http or https).
    pub avatar_url: Option<String>,
    /// Whether clients show tool calls in chat.
    pub show_tool_calls: Option<bool>,
}

impl TextFields for ProfilePatch {
    const TEXT_FIELDS: &'static [(&'static str, text::TextRule)] = &[
        ("display_name", text::DISPLAY_NAME),
        ("avatar_url", text::AVATAR_URL),
    ];
}

/// The caller's profile, approval status and tier.
#[utoipa::path(get, path = "/api/v1/users/me", operation_id = "get_users_me", tag = "users", security(("bearer" = [])),
    responses((status = 200, description = "The profile.", body = UserView), resp::Unauthorized, resp::Unavailable))]
pub(crate) async fn get_me(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<Json<UserView>, ApiError> {
    consistency::caught_up(&state.db, projection::USERS, caller.seq).await?;
    Ok(Json(views::user(&state.db, caller.id).await?))
}

/// Update the caller's profile and preferences.
#[utoipa::path(patch, path = "/api/v1/users/me", operation_id = "patch_users_me", tag = "users", security(("bearer" = [])),
    request_body = ProfilePatch,
    responses((status = 200, description = "The updated profile.", body = UserView),
        resp::BadRequest, resp::Unauthorized, resp::Validation, resp::RateLimited))]
pub(crate) async fn patch_me(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiJson(patch): ApiJson<ProfilePatch>,
) -> Result<Json<UserView>, ApiError> {
    let committed = state
        .commands
        .users
        .execute(
            &caller.id.to_string(),
            UserCommand::UpdateProfile {
                display_name: patch.display_name,
                avatar_url: patch.avatar_url,
                show_tool_calls: patch.show_tool_calls,
            },
            &CommandMeta::new(Actor::User(caller.id)),
        )
        .await?;
    consistency::caught_up(&state.db, projection::USERS, committed.sequence).await?;
    Ok(Json(views::user(&state.db, caller.id).await?))
}

/// The caller's sign-in methods.
#[utoipa::path(get, path = "/api/v1/users/me/connections", operation_id = "get_users_me_connections", tag = "users", security(("bearer" = [])),
    responses((status = 200, description = "Linked sign-in methods, oldest first.", body = Vec<ConnectionView>), resp::Unauthorized))]
pub(crate) async fn list_connections(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<Json<Vec<ConnectionView>>, ApiError> {
    consistency::caught_up(&state.db, projection::USERS, caller.seq).await?;
    Ok(Json(views::connections(&state.db, caller.id).await?))
}

/// Unlink a sign-in method; the last one cannot be removed (409 `last_auth_method`).
#[utoipa::path(delete, path = "/api/v1/users/me/connections/{id}", operation_id = "delete_users_me_connections_by_id", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Connection id")),
    responses((status = 204, description = "Unlinked."), resp::Unauthorized, resp::NotFound, resp::Conflict, resp::RateLimited))]
pub(crate) async fn delete_connection(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    let connection_id = ConnectionId(id);
    let unlinked = caller
        .user
        .auth_methods
        .iter()
        .find(|auth| auth.connection_id == connection_id)
        .cloned();
    let committed = state
        .commands
        .users
        .execute(
            &caller.id.to_string(),
            UserCommand::UnlinkAuthMethod { connection_id },
            &CommandMeta::new(Actor::User(caller.id)),
        )
        .await?;
    // The identity no longer signs this user in: release it.
    if let Some(auth) = unlinked {
        state
            .auth_kv
            .remove(&owner_key(auth.kind, &auth.external_id))
            .await
            .map_err(ApiError::internal)?;
    }
    consistency::caught_up(&state.db, projection::USERS, committed.sequence).await?;
    Ok(StatusCode::NO_CONTENT)
}
