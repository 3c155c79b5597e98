//! A user's provider API keys, for REST (`/users/me/api-keys`) and the Telegram bridge's
//! `/setkey` alike: the ciphertext is stored first (under a fresh key id), then the key id and
//! fingerprint are recorded with `SetProviderKey`; if the command is refused the ciphertext is
//! purged. A key replaced (same provider and label) has its ciphertext purged after the commit.

use super::access::AuthUser;
use crate::consistency::{self, projection};
use crate::error::ApiError;
use crate::state::AppState;
use crate::views::{self, ApiKeyView};
use warren_commands::CommandMeta;
use warren_domain::Actor;
use warren_domain::ids::KeyId;
use warren_domain::user::{Provider, UserCommand, UserEvent, fingerprint};

/// The longest API key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;

/// A key to store.
#[derive(Clone, Debug)]
pub struct NewKey {
    /// Which API it is for.
    pub provider: Provider,
    /// The key itself.
    pub api_key: String,
    /// Endpoint override (required for `custom`).
    pub base_url: Option<String>,
    /// The owner's name for it; a key with the same provider and label is replaced.
    pub label: Option<String>,
}

/// Stores `key` for `caller`, sealed, and answers it masked.
pub async fn add(state: &AppState, caller: &AuthUser, key: NewKey) -> Result<ApiKeyView, ApiError> {
    let secret = key.api_key.trim();
    if secret.is_empty() || secret.len() > MAX_KEY_BYTES || secret.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "api_key",
            "must be 1 to 4096 printable characters",
        ));
    }
    let key_id = KeyId::new();
    state
        .secrets
        .put(caller.id, key_id, secret)
        .await
        .map_err(ApiError::internal)?;
    let outcome = state
        .commands
        .users
        .execute(
            &caller.id.to_string(),
            UserCommand::SetProviderKey {
                key_id,
                provider: key.provider,
                base_url: key.base_url,
                label: key.label,
                fingerprint: fingerprint(secret),
            },
            &CommandMeta::new(Actor::User(caller.id)),
        )
        .await;
    let committed = match outcome {
        Ok(committed) => committed,
        Err(err) => {
            state
                .secrets
                .destroy(key_id)
                .await
                .map_err(ApiError::internal)?;
            return Err(err.into());
        }
    };
    for envelope in &committed.events {
        if let UserEvent::ProviderKeyRemoved { key_id: old, .. } = &envelope.event {
            state
                .secrets
                .destroy(*old)
                .await
                .map_err(ApiError::internal)?;
        }
    }
    consistency::caught_up(&state.db, projection::USERS, committed.sequence).await?;
    views::api_keys(&state.db, caller.id)
        .await?
        .into_iter()
        .find(|view| view.id == key_id.0)
        .ok_or(ApiError::Unavailable("the read models"))
}
