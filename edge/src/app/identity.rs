//! Signing in by an identity (an email address, a Telegram account, a wallet, a Google or
//! GitHub account): who the identity belongs to, registration on first sign-in, linking one more identity
//! to an account, and who administers the platform.
//!
//! - An identity maps to one user: `identity.email.<sha256(address)>` or
//!   `identity.telegram.<id>` in the `auth_tokens` bucket, claimed with a KV `create` (of two
//!   first sign-ins racing, one id wins and both use it). Registration then runs on that id; a
//!   repeat is `already_exists` and harmless.
//! - Linking claims the identity's key for the signed-in user; an identity that already belongs
//!   to another user is refused (409 `identity_taken`), never merged.
//! - Admins: an address in `WARREN_ADMIN_EMAILS` (a Telegram id in `WARREN_TELEGRAM_ADMINS`) is
//!   an admin at its first sign-in, and is made one at its next sign-in if it already had an
//!   account. With no such list, the first person to sign in on a platform that has no admin
//!   becomes its admin (once: the claim `bootstrap.first_admin` is never made again, so removing
//!   every admin later does not hand the platform to the next visitor). Both are logged and said
//!   in the answer.

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

/// The KV key of a Telegram account's owner.
pub fn telegram_key(telegram_id: i64) -> String {
    format!("identity.telegram.{telegram_id}")
}

/// The KV key of an identity's owner.
pub fn identity_key(kind: AuthKind, external_id: &str) -> String {
    match kind {
        AuthKind::Email => email_key(external_id),
        other => format!(
            "identity.{}.{}",
            other.as_str(),
            sha256_hex(external_id.as_bytes())
        ),
    }
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

/// Someone signing in: an identity and what it says about them.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Its kind.
    pub kind: AuthKind,
    /// The id the provider knows them by (an address, a Telegram user id).
    pub external_id: String,
    /// Their address, if the identity proves one.
    pub email: Option<String>,
    /// Their name, as the provider gives it.
    pub display_name: Option<String>,
    /// The configuration makes this identity an admin.
    pub listed_admin: bool,
}

impl Identity {
    /// The KV key of its owner.
    fn key(&self) -> String {
        owner_key(self.kind, &self.external_id)
    }
}

/// The KV key naming the owner of the `kind` identity `external_id`.
pub fn owner_key(kind: AuthKind, external_id: &str) -> String {
    match (kind, external_id.parse::<i64>()) {
        (AuthKind::Telegram, Ok(id)) => telegram_key(id),
        _ => identity_key(kind, external_id),
    }
}

/// The user signed in by `email` (canonical, lowercased), registering them on first sign-in and
/// making them an admin when the configuration says so.
pub async fn sign_in_by_email(state: &AppState, email: &str) -> Result<SignedIn, ApiError> {
    sign_in(
        state,
        Identity {
            kind: AuthKind::Email,
            external_id: email.to_owned(),
            email: Some(email.to_owned()),
            display_name: None,
            listed_admin: state.settings.admin_emails.contains(email),
        },
    )
    .await
}

/// The user a Telegram account signs in (`/start`), registering them on first sign-in.
pub async fn sign_in_by_telegram(
    state: &AppState,
    telegram_id: i64,
    display_name: Option<String>,
) -> Result<SignedIn, ApiError> {
    sign_in(
        state,
        Identity {
            kind: AuthKind::Telegram,
            external_id: telegram_id.to_string(),
            email: None,
            display_name,
            listed_admin: state.settings.telegram.admins.contains(&telegram_id),
        },
    )
    .await
}

/// Who an OAuth provider says signed in.
#[derive(Clone, Debug)]
pub struct ProviderIdentity {
    /// `Google` or `Github`.
    pub kind: AuthKind,
    /// The provider's stable id of the person (Google's `sub`, GitHub's numeric id).
    pub subject: String,
    /// Their address, only if the provider marks it verified.
    pub verified_email: Option<String>,
    /// Their name, as the provider gives it.
    pub display_name: Option<String>,
}

impl ProviderIdentity {
    /// The identity itself (its address is a separate identity).
    pub fn into_identity(self) -> Identity {
        Identity {
            kind: self.kind,
            external_id: self.subject,
            email: self.verified_email,
            display_name: self.display_name,
            listed_admin: false,
        }
    }
}

/// The user an OAuth identity signs in. A first sign-in whose verified address already signs
/// an account in joins that account; otherwise it registers one, and its verified address, if
/// no account uses it, becomes one more way into it. Later sign-ins link nothing. An unverified address joins nothing and makes
/// nobody an admin.
pub async fn sign_in_by_provider(
    state: &AppState,
    who: ProviderIdentity,
) -> Result<SignedIn, ApiError> {
    let email = who
        .verified_email
        .as_deref()
        .and_then(|email| crate::auth::routes::canonical_email(email).ok());
    let mut identity = ProviderIdentity {
        verified_email: email.clone(),
        ..who
    }
    .into_identity();
    identity.listed_admin = email
        .as_ref()
        .is_some_and(|email| state.settings.admin_emails.contains(email));
    let known = owner(state, identity.kind, &identity.external_id)
        .await?
        .is_some();
    if let (false, Some(email)) = (known, &email)
        && let Some(existing) = owner(state, AuthKind::Email, email).await?
    {
        link(state, existing, identity.clone()).await?;
    }
    let signed_in = sign_in(state, identity).await?;
    // A first sign-in that registered an account: its verified address signs it in too.
    if let (false, Some(email)) = (known, email)
        && owner(state, AuthKind::Email, &email).await?.is_none()
    {
        let address = Identity {
            kind: AuthKind::Email,
            external_id: email.clone(),
            email: Some(email),
            display_name: None,
            listed_admin: false,
        };
        // Taken meanwhile by someone signing in by email: theirs stays theirs.
        match link(state, signed_in.user_id, address).await {
            Ok(()) | Err(ApiError::Client { .. }) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(signed_in)
}

/// The user `identity` belongs to, if any (no registration).
pub async fn owner(
    state: &AppState,
    kind: AuthKind,
    external_id: &str,
) -> Result<Option<UserId>, ApiError> {
    let identity = Identity {
        kind,
        external_id: external_id.to_owned(),
        email: None,
        display_name: None,
        listed_admin: false,
    };
    Ok(state
        .auth_kv
        .get::<UserId>(&identity.key())
        .await
        .map_err(ApiError::internal)?
        .map(|(id, _)| id))
}

/// The user `identity` signs in, registering them on first sign-in and making them an admin
/// when the configuration says so.
pub async fn sign_in(state: &AppState, identity: Identity) -> Result<SignedIn, ApiError> {
    let user_id = owner_of(state, &identity.key()).await?;
    let user = load_user(state, user_id).await?;
    let listed = identity.listed_admin;
    if user.id.is_none() {
        let is_admin = listed || first_admin(state, user_id).await?;
        register(state, user_id, &identity, is_admin).await?;
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

/// Links `identity` to `user` as one more way to sign in. Linking an identity the user has
/// already is a no-op; one that belongs to someone else is refused (409 `identity_taken`).
pub async fn link(state: &AppState, user_id: UserId, identity: Identity) -> Result<(), ApiError> {
    let key = identity.key();
    let kv = &state.auth_kv;
    let claimed = kv
        .create(&key, &user_id)
        .await
        .map_err(ApiError::internal)?;
    if !claimed {
        let owner = kv
            .get::<UserId>(&key)
            .await
            .map_err(ApiError::internal)?
            .map(|(id, _)| id);
        if owner != Some(user_id) {
            return Err(ApiError::conflict(
                "identity_taken",
                format!(
                    "this {} account already signs in another Warren account; \
                     unlink it there first",
                    identity.kind
                ),
            ));
        }
    }
    let user = load_user(state, user_id).await?;
    let linked = user
        .auth_methods
        .iter()
        .any(|auth| auth.kind == identity.kind && auth.external_id == identity.external_id);
    if linked {
        return Ok(());
    }
    let outcome = state
        .commands
        .users
        .execute(
            &user_id.to_string(),
            UserCommand::LinkAuthMethod {
                auth: AuthMethod {
                    connection_id: ConnectionId::new(),
                    kind: identity.kind,
                    external_id: identity.external_id.clone(),
                },
            },
            &CommandMeta::new(Actor::User(user_id)),
        )
        .await;
    match outcome {
        Ok(committed) => {
            tracing::info!(user_id = %user_id, kind = %identity.kind, "identity linked");
            consistency::caught_up(&state.db, projection::USERS, committed.sequence).await?;
            Ok(())
        }
        Err(err) => {
            if claimed {
                kv.remove(&key).await.map_err(ApiError::internal)?;
            }
            Err(err.into())
        }
    }
}

async fn load_user(
    state: &AppState,
    user_id: UserId,
) -> Result<warren_domain::user::User, ApiError> {
    let (user, _) = state
        .commands
        .users
        .load(&user_id.to_string())
        .await
        .map_err(ApiError::internal)?;
    Ok(user)
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
    let listed =
        !state.settings.admin_emails.is_empty() || !state.settings.telegram.admins.is_empty();
    if listed || views::admin_count(&state.db).await? > 0 {
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
    identity: &Identity,
    is_admin: bool,
) -> Result<(), ApiError> {
    let register = UserCommand::RegisterUser {
        user_id,
        email: identity.email.clone(),
        display_name: identity.display_name.clone(),
        avatar_url: None,
        auth: AuthMethod {
            connection_id: ConnectionId::new(),
            kind: identity.kind,
            external_id: identity.external_id.clone(),
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

/// How long a code that links a channel (Telegram) to an account stays valid.
pub const LINK_CODE_TTL_SECS: i64 = 600;

/// A one-time code that links a channel to an account, as stored.
#[derive(serde::Serialize, serde::Deserialize)]
struct LinkCode {
    user_id: UserId,
    kind: AuthKind,
    expires_at: i64,
}

fn link_code_key(code: &str) -> String {
    format!("link.{}", sha256_hex(code.trim().as_bytes()))
}

/// A new one-time code with which the signed-in `user` links a `kind` identity (Telegram:
/// `/start <code>` to the bot), valid for [`LINK_CODE_TTL_SECS`]. Only its digest is stored.
pub async fn link_code(state: &AppState, user: UserId, kind: AuthKind) -> Result<String, ApiError> {
    let code = hex::encode(rand::random::<[u8; 12]>());
    let record = LinkCode {
        user_id: user,
        kind,
        expires_at: chrono::Utc::now().timestamp() + LINK_CODE_TTL_SECS,
    };
    state
        .auth_kv
        .put(&link_code_key(&code), &record)
        .await
        .map_err(ApiError::internal)?;
    Ok(code)
}

/// The user a link code was made for, without consuming it (to ask for a confirmation first):
/// refused if it is unknown, of another kind or expired.
pub async fn peek_link_code(
    state: &AppState,
    code: &str,
    kind: AuthKind,
) -> Result<UserId, ApiError> {
    let record = state
        .auth_kv
        .get::<LinkCode>(&link_code_key(code))
        .await
        .map_err(ApiError::internal)?
        .map(|(record, _)| record)
        .filter(|record| {
            record.kind == kind && record.expires_at >= chrono::Utc::now().timestamp()
        });
    record.map(|record| record.user_id).ok_or_else(|| {
        ApiError::invalid_field(
            "code",
            "this link code is unknown, expired or already used: make a new one",
        )
    })
}

/// The user a link code was made for, consuming it: a code works once, for its kind, until it
/// expires.
pub async fn redeem_link_code(
    state: &AppState,
    code: &str,
    kind: AuthKind,
) -> Result<UserId, ApiError> {
    let refused = || {
        ApiError::invalid_field(
            "code",
            "this link code is unknown, expired or already used: make a new one",
        )
    };
    let key = link_code_key(code);
    let Some((record, revision)) = state
        .auth_kv
        .get::<LinkCode>(&key)
        .await
        .map_err(ApiError::internal)?
    else {
        return Err(refused());
    };
    // Of two redemptions racing, only the one that removes the code wins.
    let won = state
        .auth_kv
        .remove_at(&key, revision)
        .await
        .map_err(ApiError::internal)?;
    if !won || record.kind != kind || record.expires_at < chrono::Utc::now().timestamp() {
        return Err(refused());
    }
    Ok(record.user_id)
}
