//! An admin's decisions about a user — approve, reject, revoke, change role — for REST
//! (`/admin/users/*`) and the Telegram bridge's Approve / Reject buttons alike. An admin cannot
//! reject, revoke or change the role of their own account (409 `cannot_change_self`), so the
//! last admin cannot lock everyone out.

use super::access::AdminUser;
use crate::consistency::{self, projection};
use crate::error::ApiError;
use crate::state::AppState;
use crate::views::{self, UserView};
use warren_commands::CommandMeta;
use warren_domain::Actor;
use warren_domain::ids::UserId;
use warren_domain::user::UserCommand;

/// Applies `command` to `user` as `admin`, and answers the user as the read model then shows
/// them.
pub async fn decide(
    state: &AppState,
    admin: &AdminUser,
    user: UserId,
    command: UserCommand,
) -> Result<UserView, ApiError> {
    // An admin cannot lock themselves out; another admin has to do it.
    let locks_out = matches!(
        command,
        UserCommand::RejectUser { .. }
            | UserCommand::RevokeAccess { .. }
            | UserCommand::ChangeRole { .. }
    );
    if locks_out && user == admin.id {
        return Err(ApiError::conflict(
            "cannot_change_self",
            "admins cannot reject, revoke or change the role of their own account",
        ));
    }
    let committed = state
        .commands
        .users
        .execute(
            &user.to_string(),
            command,
            &CommandMeta::new(Actor::User(admin.id)),
        )
        .await?;
    tracing::info!(admin = %admin.id, user_id = %user, sequence = committed.sequence, "admin action");
    consistency::caught_up(&state.db, projection::USERS, committed.sequence).await?;
    views::user(&state.db, user).await
}
