//! Signing in by an identity (an email address today; OAuth, wallets and Telegram plug in
//! here): who the identity belongs to, registration on first sign-in, and who administers the
//! platform.
//!
//! - An address maps to one user: `identity.email.<sha256(address)>` in the `auth_tokens`
//!   bucket, claimed with a KV `create` (of two first sign-ins racing, one id wins and both use
//!   it). Registration then runs on that id; a repeat is `already_exists` and harmless.
//! - Admins: an address in `WARREN_ADMIN_EMAILS` is an admin at its first sign-in, and is made
//!   one at its next sign-in if it already had an account. With no such list, the first person
//!   to sign in on a platform that has no admin becomes its admin (once: the claim
//!   `bootstrap.first_admin` is never made again, so removing every admin later does not hand
//!   the platform to the next visitor). Both are logged and said in the answer.

use crate::auth::store::sha256_hex;
use crate::consistency::{self, projection};
use crate::error::ApiError;
use crate::state::AppState;
use crate::views;
use warren_commands::{CommandError, CommandMeta};
use warren_domain::Actor;
use warren_domain::ids::{ConnectionId, UserId};
use warren_domain::user::{AuthKind, AuthMethod, Role, UserCommand, UserError};

/// The KV key of an address's owner.
pub fn email_key(email: &str) -> String {
    format!("identity.email.{}", sha256_hex(email.as_bytes()))
}

/// The KV key that the platform's first admin claims.
const FIRST_ADMIN: &str = "bootstrap.first_admin";

/// A sign-in's outcome.
#[derive(Clone, Copy, Debug)]
pub struct SignedIn {
    /// The user.
    pub user_id: UserId,
    /// The user became an admin with this sign-in.
    pub became_admin: bool,
}

/// The user signed in by `email` (canonical, lowercased), registering them on first sign-in and
/// making them an admin when the configuration says so.
pub async fn sign_in_by_email(state: &AppState, email: &str) -> Result<SignedIn, ApiError> {
    let user_id = owner_of(state, &email_key(email)).await?;
    let (user, _) = state
        .commands
        .users
        .load(&user_id.to_string())
        .await
        .map_err(ApiError::internal)?;
    let listed = state.settings.admin_emails.contains(email);
    if user.id.is_none() {
        let is_admin = listed || first_admin(state, user_id).await?;
        register(state, user_id, email, is_admin).await?;
        return Ok(SignedIn {
            user_id,
            became_admin: is_admin,
        });
    }
    let already = user.role == Role::Admin && user.is_approved();
    let promote = !already && (listed || first_admin(state, user_id).await?);
    if promote {
        make_admin(state, user_id, &user).await?;
    }
    Ok(SignedIn {
        user_id,
        became_admin: promote,
    })
}

/// The user an identity key names, claiming a new id for it if it has none.
async fn owner_of(state: &AppState, key: &str) -> Result<UserId, ApiError> {
    let kv = &state.auth_kv;
    if let Some((id, _)) = kv.get::<UserId>(key).await.map_err(ApiError::internal)? {
        return Ok(id);
    }
    let id = UserId::new();
    if kv.create(key, &id).await.map_err(ApiError::internal)? {
        return Ok(id);
    }
    kv.get::<UserId>(key)
        .await
        .map_err(ApiError::internal)?
        .map(|(id, _)| id)
        .ok_or(ApiError::Unavailable("identity store"))
}

/// Whether `user` becomes the platform's first admin: no admin list is configured, nobody is an
/// admin, and nobody claimed it before.
async fn first_admin(state: &AppState, user: UserId) -> Result<bool, ApiError> {
    if !state.settings.admin_emails.is_empty() || views::admin_count(&state.db).await? > 0 {
        return Ok(false);
    }
    let won = state
        .auth_kv
        .create(FIRST_ADMIN, &user)
        .await
        .map_err(ApiError::internal)?;
    if won {
        tracing::warn!(
            user_id = %user,
            "the platform had no admin: the first person to sign in is now its admin \
             (set WARREN_ADMIN_EMAILS to choose admins instead)"
        );
    }
    Ok(won)
}

async fn register(
    state: &AppState,
    user_id: UserId,
    email: &str,
    is_admin: bool,
) -> Result<(), ApiError> {
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
            Ok(())
        }
        Err(CommandError::Rejected(UserError::AlreadyExists { .. })) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Approves `user` if needed and makes them an admin (as the platform: the configuration
/// decided it, not a user).
async fn make_admin(
    state: &AppState,
    user_id: UserId,
    user: &warren_domain::user::User,
) -> Result<(), ApiError> {
    let meta = || CommandMeta::new(Actor::System("edge".into()));
    let id = user_id.to_string();
    let mut last = 0;
    if !user.is_approved() {
        last = state
            .commands
            .users
            .execute(&id, UserCommand::ApproveUser, &meta())
            .await?
            .sequence;
    }
    last = last.max(
        state
            .commands
            .users
            .execute(&id, UserCommand::ChangeRole { role: Role::Admin }, &meta())
            .await?
            .sequence,
    );
    tracing::warn!(user_id = %user_id, "user made an admin at sign-in");
    consistency::caught_up(&state.db, projection::USERS, last).await?;
    Ok(())
}
