//! Who an email address belongs to. The domain cannot see across users, so the edge makes an
//! address map to one user: `identity.email.<sha256(address)>` in the `auth_tokens` bucket,
//! claimed with a KV `create` (atomic: of two first sign-ins racing, one id wins and both use it).
//! Registration then runs on that id; a repeat is `already_exists` and harmless.

use crate::consistency::{self, projection};
use crate::error::ApiError;
use crate::state::AppState;
use warren_commands::{CommandError, CommandMeta};
use warren_domain::Actor;
use warren_domain::ids::{ConnectionId, UserId};
use warren_domain::user::{AuthKind, AuthMethod, UserCommand, UserError};

use super::store::sha256_hex;

/// The KV key of an address's owner.
pub fn email_key(email: &str) -> String {
    format!("identity.email.{}", sha256_hex(email.as_bytes()))
}

/// The user signed in by `email` (canonical, lowercased), registering them on first sign-in.
pub async fn sign_in_by_email(state: &AppState, email: &str) -> Result<UserId, ApiError> {
    let key = email_key(email);
    let user_id = match state
        .auth_kv
        .get::<UserId>(&key)
        .await
        .map_err(ApiError::internal)?
    {
        Some((id, _)) => id,
        None => {
            let id = UserId::new();
            if state
                .auth_kv
                .create(&key, &id)
                .await
                .map_err(ApiError::internal)?
            {
                id
            } else {
                state
                    .auth_kv
                    .get::<UserId>(&key)
                    .await
                    .map_err(ApiError::internal)?
                    .map(|(id, _)| id)
                    .ok_or(ApiError::Unavailable("identity store"))?
            }
        }
    };
    let (user, _) = state
        .commands
        .users
        .load(&user_id.to_string())
        .await
        .map_err(ApiError::internal)?;
    if user.id.is_some() {
        return Ok(user_id);
    }
    let is_admin = state.settings.admin_emails.contains(email);
    let register = UserCommand::RegisterUser {
        user_id,
        email: Some(email.to_owned()),
        display_name: None,
        avatar_url: None,
        auth: AuthMethod {
            connection_id: ConnectionId::new(),
            kind: AuthKind::Email,
            external_id: email.to_owned(),
        },
        approval: state.settings.approval,
        is_admin,
    };
    match state
        .commands
        .users
        .execute(
            &user_id.to_string(),
            register,
            &CommandMeta::new(Actor::User(user_id)),
        )
        .await
    {
        Ok(committed) => {
            tracing::info!(user_id = %user_id, is_admin, "user registered");
            consistency::caught_up(&state.db, projection::USERS, committed.sequence).await?;
        }
        Err(CommandError::Rejected(UserError::AlreadyExists { .. })) => {}
        Err(err) => return Err(err.into()),
    }
    Ok(user_id)
}
