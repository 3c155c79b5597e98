//! `/api/v1/admin/users*`: the approval flow and roles, for admins only. An admin cannot reject,
//! revoke or change the role of their own account (409 `cannot_change_self`), so the last admin
//! cannot lock everyone out.

use crate::app;
use crate::error::ApiError;
use crate::extract::{AdminUser, ApiJson, ApiPath, ApiQuery};
use crate::input::TextFields;
use crate::openapi::{resp, role_schema, tier_schema};
use crate::routes::ApiRouter;
use crate::state::AppState;
use crate::views::{self, UserView};
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use warren_domain::ids::UserId;
use warren_domain::text;
use warren_domain::user::{Role, Tier, UserCommand};

/// The most users one listing returns.
const MAX_LIST: i64 = 500;

/// The admin routes.
pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .get("/admin/users", list_users)
        .post("/admin/users/{id}/approve", approve)
        .post("/admin/users/{id}/reject", reject)
        .post("/admin/users/{id}/revoke", revoke)
        .patch("/admin/users/{id}", update_user)
}

/// Which users to list.
#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct UserFilter {
    /// `pending` (default), `approved`, `rejected`, `revoked` or `all`.
    #[param(schema_with = status_filter_schema)]
    pub status: Option<String>,
}

fn status_filter_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["pending", "approved", "rejected", "revoked", "all"]))
        .build()
}

/// `POST /admin/users/{id}/reject` and `/revoke`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    /// Shown to the user.
    pub reason: Option<String>,
}

impl TextFields for Reason {
    const TEXT_FIELDS: &'static [(&'static str, text::TextRule)] = &[("reason", text::REASON)];
}

/// `PATCH /admin/users/{id}`: fields left out are kept.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// `user`, `admin` or `analyst` (the user must be approved; `guest` is refused: revoke
    /// instead).
    #[schema(schema_with = role_schema)]
    pub role: Option<Role>,
    /// The user's plan.
    #[schema(schema_with = tier_schema)]
    pub tier: Option<Tier>,
}

impl TextFields for UserPatch {}

/// Users by approval status, newest first.
#[utoipa::path(get, path = "/api/v1/admin/users", operation_id = "get_admin_users", tag = "admin", security(("bearer" = [])),
    params(UserFilter),
    responses((status = 200, description = "Users, newest first (at most 500).", body = Vec<UserView>),
        resp::Unauthorized, resp::Forbidden, resp::Validation))]
pub(crate) async fn list_users(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(filter): ApiQuery<UserFilter>,
) -> Result<Json<Vec<UserView>>, ApiError> {
    let status = match filter.status.as_deref().unwrap_or("pending") {
        "all" => None,
        status @ ("pending" | "approved" | "rejected" | "revoked") => Some(status),
        _ => {
            return Err(ApiError::invalid_field(
                "status",
                "must be pending, approved, rejected, revoked or all",
            ));
        }
    };
    Ok(Json(
        views::users_by_status(&state.db, status, MAX_LIST).await?,
    ))
}

async fn act(
    state: &AppState,
    admin: &AdminUser,
    id: Uuid,
    command: UserCommand,
) -> Result<Json<UserView>, ApiError> {
    Ok(Json(
        app::admin::decide(state, admin, UserId(id), command).await?,
    ))
}

/// Let a pending, rejected or revoked user in (role `user`).
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/approve", operation_id = "post_admin_users_by_id_approve", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 200, description = "The approved user.", body = UserView),
        resp::Unauthorized, resp::Forbidden, resp::NotFound, resp::Conflict, resp::RateLimited))]
pub(crate) async fn approve(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<UserView>, ApiError> {
    act(&state, &admin, id, UserCommand::ApproveUser).await
}

/// Turn a pending user down.
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/reject", operation_id = "post_admin_users_by_id_reject", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    request_body = Reason,
    responses((status = 200, description = "The rejected user.", body = UserView),
        resp::BadRequest, resp::Unauthorized, resp::Forbidden, resp::NotFound, resp::Conflict, resp::Validation, resp::RateLimited))]
pub(crate) async fn reject(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<Reason>,
) -> Result<Json<UserView>, ApiError> {
    act(
        &state,
        &admin,
        id,
        UserCommand::RejectUser {
            reason: body.reason,
        },
    )
    .await
}

/// Take an approved user's access away (role back to `guest`); effective on their next request.
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/revoke", operation_id = "post_admin_users_by_id_revoke", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    request_body = Reason,
    responses((status = 200, description = "The revoked user.", body = UserView),
        resp::BadRequest, resp::Unauthorized, resp::Forbidden, resp::NotFound, resp::Conflict, resp::Validation, resp::RateLimited))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<Reason>,
) -> Result<Json<UserView>, ApiError> {
    act(
        &state,
        &admin,
        id,
        UserCommand::RevokeAccess {
            reason: body.reason,
        },
    )
    .await
}

/// Change an approved user's role, or anyone's tier.
#[utoipa::path(patch, path = "/api/v1/admin/users/{id}", operation_id = "patch_admin_users_by_id", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    request_body = UserPatch,
    responses((status = 200, description = "The updated user.", body = UserView),
        resp::BadRequest, resp::Unauthorized, resp::Forbidden, resp::NotFound, resp::Validation, resp::RateLimited))]
pub(crate) async fn update_user(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(patch): ApiJson<UserPatch>,
) -> Result<Json<UserView>, ApiError> {
    let mut answer = None;
    if let Some(role) = patch.role {
        answer = Some(act(&state, &admin, id, UserCommand::ChangeRole { role }).await?);
    }
    if let Some(tier) = patch.tier {
        answer = Some(act(&state, &admin, id, UserCommand::ChangeTier { tier }).await?);
    }
    match answer {
        Some(answer) => Ok(answer),
        None => {
            // Nothing to change; still 404 for an unknown user.
            let (user, _) = state
                .commands
                .users
                .load(&id.to_string())
                .await
                .map_err(ApiError::internal)?;
            if user.id.is_none() {
                return Err(ApiError::NotFound);
            }
            Ok(Json(views::user(&state.db, UserId(id)).await?))
        }
    }
}
