//! The User aggregate: registration and approval, roles, sign-in identities, profile, provider
//! keys and tier.
//!
//! Rules worth knowing:
//! - Registration outcome: a configured admin is an approved `admin`; in `open` mode a user is an
//!   approved `user`; in `required` mode a pending `guest`.
//! - Approve works from pending, rejected and revoked; reject only from pending; revoke only from
//!   approved. Approving an approved user is `invalid_state`.
//! - Setting commands (`ChangeRole`, `ChangeTier`, `UpdateProfile`) that would change nothing are
//!   accepted with no events, so retries and double clicks are harmless.
//! - A user keeps at least one auth method. Uniqueness of an identity *across* users is the
//!   caller's check (it needs a read model); here an identity is never linked twice to one user.
//! - Provider keys need an approved user; the log only sees a key id and a masked fingerprint.
//! - Every text field keeps its [`crate::text`] rule (emails, names, URLs, ids, labels and
//!   fingerprints on one line; reasons may span lines), checked on the trimmed value stored.
//!
//! Layout: `types` (value types), `command`, `event`, `error`, and this file's state, `decide`
//! and `apply`.

mod command;
mod error;
mod event;
mod types;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod text_tests;

pub use command::UserCommand;
pub use error::UserError;
pub use event::UserEvent;
pub use types::{
    ApprovalMode, AuthKind, AuthMethod, MAX_FINGERPRINT_CHARS, ModelProtocol, Provider,
    ProviderKey, Role, Tier, UserStatus, fingerprint,
};

use crate::aggregate::impl_aggregate;
use crate::ids::{ConnectionId, KeyId, UserId};
use crate::text::{self, is_http_url, non_blank, optional};
use serde::{Deserialize, Serialize};

/// A user as folded from its events. `id` is `None` until `UserRegistered`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// The user, once registered.
    pub id: Option<UserId>,
    /// Contact address.
    pub email: Option<String>,
    /// Name to show.
    pub display_name: Option<String>,
    /// Picture URL.
    pub avatar_url: Option<String>,
    /// Whether clients show tool calls.
    pub show_tool_calls: bool,
    /// Current role.
    pub role: Role,
    /// Where the user stands in the approval flow.
    pub status: UserStatus,
    /// Current plan.
    pub tier: Tier,
    /// Linked sign-in identities, oldest first.
    pub auth_methods: Vec<AuthMethod>,
    /// Recorded provider keys, oldest first.
    pub provider_keys: Vec<ProviderKey>,
}

impl User {
    /// Whether the user may use agents and store keys.
    pub fn is_approved(&self) -> bool {
        self.status == UserStatus::Approved
    }

    /// The key recorded for `provider` with `label`, if any.
    pub fn provider_key(&self, provider: Provider, label: &str) -> Option<&ProviderKey> {
        self.provider_keys
            .iter()
            .find(|key| key.provider == provider && key.label == label)
    }

    /// Decides what `command` changes, validating everything; never mutates.
    pub fn decide(&self, command: &UserCommand) -> Result<Vec<UserEvent>, UserError> {
        use UserCommand as C;
        let Some(user_id) = self.id else {
            return match command {
                C::RegisterUser {
                    user_id,
                    email,
                    display_name,
                    avatar_url,
                    auth,
                    approval,
                    is_admin,
                } => register(
                    *user_id,
                    email.as_ref(),
                    display_name.as_ref(),
                    avatar_url.as_ref(),
                    auth,
                    *approval,
                    *is_admin,
                ),
                _ => Err(UserError::NotFound {
                    command: command.name(),
                }),
            };
        };
        match command {
            C::RegisterUser { .. } => Err(UserError::AlreadyExists { user_id }),
            C::ApproveUser => self.approve(user_id),
            C::RejectUser { reason } => self.reject(user_id, reason.as_ref()),
            C::RevokeAccess { reason } => self.revoke(user_id, reason.as_ref()),
            C::ChangeRole { role } => self.change_role(user_id, *role),
            C::LinkAuthMethod { auth } => self.link(user_id, auth),
            C::UnlinkAuthMethod { connection_id } => self.unlink(user_id, *connection_id),
            C::UpdateProfile {
                display_name,
                avatar_url,
                show_tool_calls,
            } => self.update_profile(
                user_id,
                display_name.as_ref(),
                avatar_url.as_ref(),
                *show_tool_calls,
            ),
            C::SetProviderKey {
                key_id,
                provider,
                base_url,
                label,
                fingerprint,
            } => self.set_provider_key(
                user_id,
                *key_id,
                *provider,
                base_url.as_ref(),
                label.as_ref(),
                fingerprint,
            ),
            C::RemoveProviderKey { key_id } => self.remove_provider_key(user_id, *key_id),
            C::ChangeTier { tier } => Ok(if *tier == self.tier {
                vec![]
            } else {
                vec![UserEvent::TierChanged {
                    user_id,
                    tier: *tier,
                }]
            }),
        }
    }

    /// Folds one event into the state. No rules here: `decide` already checked them.
    pub fn apply(&mut self, event: &UserEvent) {
        match event {
            UserEvent::UserRegistered {
                user_id,
                email,
                display_name,
                avatar_url,
                show_tool_calls,
                auth,
                role,
                status,
                tier,
            } => {
                *self = User {
                    id: Some(*user_id),
                    email: email.clone(),
                    display_name: display_name.clone(),
                    avatar_url: avatar_url.clone(),
                    show_tool_calls: *show_tool_calls,
                    role: *role,
                    status: *status,
                    tier: *tier,
                    auth_methods: vec![auth.clone()],
                    provider_keys: vec![],
                };
            }
            UserEvent::UserApproved { role, .. } => {
                self.status = UserStatus::Approved;
                self.role = *role;
            }
            UserEvent::UserRejected { .. } => self.status = UserStatus::Rejected,
            UserEvent::UserAccessRevoked { role, .. } => {
                self.status = UserStatus::Revoked;
                self.role = *role;
            }
            UserEvent::RoleChanged { role, .. } => self.role = *role,
            UserEvent::AuthMethodLinked { auth, .. } => self.auth_methods.push(auth.clone()),
            UserEvent::AuthMethodUnlinked { connection_id, .. } => self
                .auth_methods
                .retain(|auth| auth.connection_id != *connection_id),
            UserEvent::ProfileUpdated {
                display_name,
                avatar_url,
                show_tool_calls,
                ..
            } => {
                self.display_name = display_name.clone();
                self.avatar_url = avatar_url.clone();
                self.show_tool_calls = *show_tool_calls;
            }
            UserEvent::ProviderKeySet { key, .. } => self.provider_keys.push(key.clone()),
            UserEvent::ProviderKeyRemoved { key_id, .. } => {
                self.provider_keys.retain(|key| key.key_id != *key_id)
            }
            UserEvent::TierChanged { tier, .. } => self.tier = *tier,
        }
    }

    fn approve(&self, user_id: UserId) -> Result<Vec<UserEvent>, UserError> {
        match self.status {
            UserStatus::Pending | UserStatus::Rejected | UserStatus::Revoked => {
                Ok(vec![UserEvent::UserApproved {
                    user_id,
                    role: Role::User,
                }])
            }
            status @ UserStatus::Approved => Err(UserError::InvalidState {
                action: "approve",
                status,
            }),
        }
    }

    fn reject(
        &self,
        user_id: UserId,
        reason: Option<&String>,
    ) -> Result<Vec<UserEvent>, UserError> {
        let reason = valid_reason(reason)?;
        if self.status != UserStatus::Pending {
            return Err(UserError::InvalidState {
                action: "reject",
                status: self.status,
            });
        }
        Ok(vec![UserEvent::UserRejected { user_id, reason }])
    }

    fn revoke(
        &self,
        user_id: UserId,
        reason: Option<&String>,
    ) -> Result<Vec<UserEvent>, UserError> {
        let reason = valid_reason(reason)?;
        if self.status != UserStatus::Approved {
            return Err(UserError::InvalidState {
                action: "revoke",
                status: self.status,
            });
        }
        Ok(vec![UserEvent::UserAccessRevoked {
            user_id,
            reason,
            role: Role::Guest,
        }])
    }

    fn change_role(&self, user_id: UserId, role: Role) -> Result<Vec<UserEvent>, UserError> {
        if role == Role::Guest {
            return Err(UserError::InvalidInput {
                field: "role",
                reason: "guest is not assignable; revoke access instead",
            });
        }
        if !self.is_approved() {
            return Err(UserError::NotApproved {
                status: self.status,
            });
        }
        Ok(if role == self.role {
            vec![]
        } else {
            vec![UserEvent::RoleChanged { user_id, role }]
        })
    }

    fn link(&self, user_id: UserId, auth: &AuthMethod) -> Result<Vec<UserEvent>, UserError> {
        let auth = valid_auth(auth)?;
        let linked = self.auth_methods.iter().any(|existing| {
            existing.connection_id == auth.connection_id
                || (existing.kind == auth.kind && existing.external_id == auth.external_id)
        });
        if linked {
            return Err(UserError::AuthMethodAlreadyLinked {
                kind: auth.kind,
                external_id: auth.external_id,
            });
        }
        Ok(vec![UserEvent::AuthMethodLinked { user_id, auth }])
    }

    fn unlink(
        &self,
        user_id: UserId,
        connection_id: ConnectionId,
    ) -> Result<Vec<UserEvent>, UserError> {
        let auth = self
            .auth_methods
            .iter()
            .find(|auth| auth.connection_id == connection_id)
            .ok_or(UserError::AuthMethodNotFound { connection_id })?;
        if self.auth_methods.len() == 1 {
            return Err(UserError::LastAuthMethod { connection_id });
        }
        Ok(vec![UserEvent::AuthMethodUnlinked {
            user_id,
            connection_id,
            kind: auth.kind,
        }])
    }

    fn update_profile(
        &self,
        user_id: UserId,
        display_name: Option<&String>,
        avatar_url: Option<&String>,
        show_tool_calls: Option<bool>,
    ) -> Result<Vec<UserEvent>, UserError> {
        let display_name = match display_name {
            Some(name) => valid_display_name(Some(name))?,
            None => self.display_name.clone(),
        };
        let avatar_url = match avatar_url {
            Some(url) => valid_avatar(Some(url))?,
            None => self.avatar_url.clone(),
        };
        let show_tool_calls = show_tool_calls.unwrap_or(self.show_tool_calls);
        let unchanged = display_name == self.display_name
            && avatar_url == self.avatar_url
            && show_tool_calls == self.show_tool_calls;
        Ok(if unchanged {
            vec![]
        } else {
            vec![UserEvent::ProfileUpdated {
                user_id,
                display_name,
                avatar_url,
                show_tool_calls,
            }]
        })
    }

    fn set_provider_key(
        &self,
        user_id: UserId,
        key_id: KeyId,
        provider: Provider,
        base_url: Option<&String>,
        label: Option<&String>,
        fingerprint: &str,
    ) -> Result<Vec<UserEvent>, UserError> {
        if !self.is_approved() {
            return Err(UserError::NotApproved {
                status: self.status,
            });
        }
        let base_url = optional(base_url);
        text::BASE_URL.check_optional(base_url.as_deref())?;
        match &base_url {
            None if provider == Provider::Custom => {
                return Err(UserError::InvalidInput {
                    field: "base_url",
                    reason: "required for the custom provider",
                });
            }
            Some(url) if !is_http_url(url) => {
                return Err(UserError::InvalidInput {
                    field: "base_url",
                    reason: "must be an http or https URL",
                });
            }
            _ => {}
        }
        let fingerprint = non_blank(fingerprint).ok_or(UserError::InvalidInput {
            field: "fingerprint",
            reason: "must not be blank",
        })?;
        if fingerprint.chars().count() > MAX_FINGERPRINT_CHARS {
            return Err(UserError::InvalidInput {
                field: "fingerprint",
                reason: "too long for a masked key; never put a key in an event",
            });
        }
        text::FINGERPRINT.check(&fingerprint)?;
        let label = optional(label);
        text::KEY_LABEL.check_optional(label.as_deref())?;
        if self.provider_keys.iter().any(|key| key.key_id == key_id) {
            return Err(UserError::DuplicateKey { key_id });
        }
        let label = label.unwrap_or_else(|| "default".to_owned());
        let mut events: Vec<UserEvent> = self
            .provider_key(provider, &label)
            .map(|old| UserEvent::ProviderKeyRemoved {
                user_id,
                key_id: old.key_id,
            })
            .into_iter()
            .collect();
        events.push(UserEvent::ProviderKeySet {
            user_id,
            key: ProviderKey {
                key_id,
                provider,
                base_url,
                label,
                fingerprint,
            },
        });
        Ok(events)
    }

    fn remove_provider_key(
        &self,
        user_id: UserId,
        key_id: KeyId,
    ) -> Result<Vec<UserEvent>, UserError> {
        if !self.provider_keys.iter().any(|key| key.key_id == key_id) {
            return Err(UserError::KeyNotFound { key_id });
        }
        Ok(vec![UserEvent::ProviderKeyRemoved { user_id, key_id }])
    }
}

fn register(
    user_id: UserId,
    email: Option<&String>,
    display_name: Option<&String>,
    avatar_url: Option<&String>,
    auth: &AuthMethod,
    approval: ApprovalMode,
    is_admin: bool,
) -> Result<Vec<UserEvent>, UserError> {
    let email = optional(email);
    text::EMAIL.check_optional(email.as_deref())?;
    if email.as_ref().is_some_and(|email| !email.contains('@')) {
        return Err(UserError::InvalidInput {
            field: "email",
            reason: "must be an email address",
        });
    }
    let (role, status) = match (is_admin, approval) {
        (true, _) => (Role::Admin, UserStatus::Approved),
        (false, ApprovalMode::Open) => (Role::User, UserStatus::Approved),
        (false, ApprovalMode::Required) => (Role::Guest, UserStatus::Pending),
    };
    Ok(vec![UserEvent::UserRegistered {
        user_id,
        email,
        display_name: valid_display_name(display_name)?,
        avatar_url: valid_avatar(avatar_url)?,
        show_tool_calls: true,
        auth: valid_auth(auth)?,
        role,
        status,
        tier: Tier::Free,
    }])
}

fn valid_auth(auth: &AuthMethod) -> Result<AuthMethod, UserError> {
    let external_id = non_blank(&auth.external_id).ok_or(UserError::InvalidInput {
        field: "external_id",
        reason: "must not be blank",
    })?;
    text::EXTERNAL_ID.check(&external_id)?;
    Ok(AuthMethod {
        external_id,
        ..auth.clone()
    })
}

fn valid_avatar(url: Option<&String>) -> Result<Option<String>, UserError> {
    let url = optional(url);
    text::AVATAR_URL.check_optional(url.as_deref())?;
    match url {
        Some(url) if !is_http_url(&url) => Err(UserError::InvalidInput {
            field: "avatar_url",
            reason: "must be an http or https URL",
        }),
        url => Ok(url),
    }
}

/// The trimmed name, `None` when blank.
fn valid_display_name(name: Option<&String>) -> Result<Option<String>, UserError> {
    let name = optional(name);
    text::DISPLAY_NAME.check_optional(name.as_deref())?;
    Ok(name)
}

/// The trimmed reason, `None` when blank.
fn valid_reason(reason: Option<&String>) -> Result<Option<String>, UserError> {
    let reason = optional(reason);
    text::REASON.check_optional(reason.as_deref())?;
    Ok(reason)
}

impl_aggregate! {
    aggregate: User,
    type: "user",
    command: UserCommand,
    event: UserEvent,
    error: UserError,
}
