//! `/api/v1/users/me/api-keys*`: provider API keys, encrypted outside the log.
//!
//! Adding a key stores its ciphertext first (under a fresh key id), then records the key id and
//! fingerprint with `SetProviderKey`; if the command is refused the ciphertext is purged. A key
//! replaced (same provider and label) or deleted has its ciphertext purged after the commit.

use crate::app;
use crate::consistency::{self, projection};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, AuthUser};
use crate::input::TextFields;
use crate::openapi::{provider_schema, resp};
use crate::routes::ApiRouter;
use crate::state::AppState;
use crate::views::{self, ApiKeyView};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;
use warren_commands::CommandMeta;
use warren_domain::Actor;
use warren_domain::ids::KeyId;
use warren_domain::text;
use warren_domain::user::{Provider, UserCommand};

/// The API key routes.
pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .get("/users/me/api-keys", list_keys)
        .post("/users/me/api-keys", add_key)
        .delete("/users/me/api-keys/{id}", delete_key)
}

/// `POST /users/me/api-keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// Which API the key is for.
    #[schema(schema_with = provider_schema)]
    pub provider: Provider,
    /// The key itself; stored encrypted, never shown again.
    #[schema(min_length = 1, max_length = 4096)]
    pub api_key: String,
    /// Endpoint override (required for `custom`).
    pub base_url: Option<String>,
    /// Your name for it; a key with the same provider and label is replaced.
    pub label: Option<String>,
}

impl TextFields for NewApiKey {
    const TEXT_FIELDS: &'static [(&'static str, text::TextRule)] =
        &[("label", text::KEY_LABEL), ("base_url", text::BASE_URL)];
}

/// The caller's provider keys, masked.
#[utoipa::path(get, path = "/api/v1/users/me/api-keys", operation_id = "get_users_me_api_keys", tag = "users", security(("bearer" = [])),
    responses((status = 200, description = "Keys, masked, oldest first.", body = Vec<ApiKeyView>), resp::Unauthorized))]
pub(crate) async fn list_keys(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<Json<Vec<ApiKeyView>>, ApiError> {
    consistency::caught_up(&state.db, projection::USERS, caller.seq).await?;
    Ok(Json(views::api_keys(&state.db, caller.id).await?))
}

/// Add a provider key (approved users only).
#[utoipa::path(post, path = "/api/v1/users/me/api-keys", operation_id = "post_users_me_api_keys", tag = "users", security(("bearer" = [])),
    request_body = NewApiKey,
    responses((status = 201, description = "Stored; answered masked.", body = ApiKeyView),
        resp::BadRequest, resp::Unauthorized, resp::Forbidden, resp::Validation, resp::RateLimited))]
pub(crate) async fn add_key(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiJson(request): ApiJson<NewApiKey>,
) -> Result<(StatusCode, Json<ApiKeyView>), ApiError> {
    let key = app::keys::NewKey {
        provider: request.provider,
        api_key: request.api_key,
        base_url: request.base_url,
        label: request.label,
    };
    let view = app::keys::add(&state, &caller, key).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Delete a provider key; its ciphertext is destroyed.
#[utoipa::path(delete, path = "/api/v1/users/me/api-keys/{id}", operation_id = "delete_users_me_api_keys_by_id", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Key id")),
    responses((status = 204, description = "Deleted and destroyed."), resp::Unauthorized, resp::NotFound, resp::RateLimited))]
pub(crate) async fn delete_key(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    let key_id = KeyId(id);
    let committed = state
        .commands
        .users
        .execute(
            &caller.id.to_string(),
            UserCommand::RemoveProviderKey { key_id },
            &CommandMeta::new(Actor::User(caller.id)),
        )
        .await?;
    state
        .secrets
        .destroy(key_id)
        .await
        .map_err(ApiError::internal)?;
    consistency::caught_up(&state.db, projection::USERS, committed.sequence).await?;
    Ok(StatusCode::NO_CONTENT)
}
