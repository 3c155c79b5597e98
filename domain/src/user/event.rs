//! What has happened to a user. Each variant's name is its stable type string; its fields are
//! everything the read models need, so projections never look elsewhere.

use super::types::{AuthKind, AuthMethod, ProviderKey, Role, Tier, UserStatus};
use crate::ids::{ConnectionId, KeyId, UserId};
use serde::{Deserialize, Serialize};

/// A fact about a user, stored as `{"type": "<variant>", "data": {…}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum UserEvent {
    /// A user signed in for the first time.
    UserRegistered {
        /// The user.
        user_id: UserId,
        /// Contact address, if known.
        email: Option<String>,
        /// Name to show.
        display_name: Option<String>,
        /// Picture URL.
        avatar_url: Option<String>,
        /// Whether clients show tool calls (on at registration).
        show_tool_calls: bool,
        /// The identity used.
        auth: AuthMethod,
        /// `admin` (bootstrap), `user` (open mode) or `guest` (approval required).
        role: Role,
        /// `approved` or `pending`.
        status: UserStatus,
        /// Always `free` at registration.
        tier: Tier,
    },
    /// An admin let the user in.
    UserApproved {
        /// The user.
        user_id: UserId,
        /// The role granted (`user`).
        role: Role,
    },
    /// An admin turned a pending user down.
    UserRejected {
        /// The user.
        user_id: UserId,
        /// Optional explanation.
        reason: Option<String>,
    },
    /// An admin took an approved user's access away.
    UserAccessRevoked {
        /// The user.
        user_id: UserId,
        /// Optional explanation.
        reason: Option<String>,
        /// The role left (`guest`).
        role: Role,
    },
    /// An admin changed an approved user's role.
    RoleChanged {
        /// The user.
        user_id: UserId,
        /// The new role.
        role: Role,
    },
    /// A sign-in identity was added.
    AuthMethodLinked {
        /// The user.
        user_id: UserId,
        /// The identity.
        auth: AuthMethod,
    },
    /// A sign-in identity was removed.
    AuthMethodUnlinked {
        /// The user.
        user_id: UserId,
        /// The removed link.
        connection_id: ConnectionId,
        /// Its kind.
        kind: AuthKind,
    },
    /// Profile fields changed; carries the whole resulting profile.
    ProfileUpdated {
        /// The user.
        user_id: UserId,
        /// Name to show.
        display_name: Option<String>,
        /// Picture URL.
        avatar_url: Option<String>,
        /// Whether clients show tool calls.
        show_tool_calls: bool,
    },
    /// A provider key was recorded (its ciphertext is stored outside the log).
    ProviderKeySet {
        /// The user.
        user_id: UserId,
        /// The key's public facts.
        key: ProviderKey,
    },
    /// A provider key was forgotten; its ciphertext must be deleted.
    ProviderKeyRemoved {
        /// The user.
        user_id: UserId,
        /// The key.
        key_id: KeyId,
    },
    /// The user moved to another plan.
    TierChanged {
        /// The user.
        user_id: UserId,
        /// The new plan.
        tier: Tier,
    },
}

impl UserEvent {
    /// The stable type string: the variant name, e.g. `UserRegistered`.
    pub fn event_type(&self) -> &'static str {
        match self {
            UserEvent::UserRegistered { .. } => "UserRegistered",
            UserEvent::UserApproved { .. } => "UserApproved",
            UserEvent::UserRejected { .. } => "UserRejected",
            UserEvent::UserAccessRevoked { .. } => "UserAccessRevoked",
            UserEvent::RoleChanged { .. } => "RoleChanged",
            UserEvent::AuthMethodLinked { .. } => "AuthMethodLinked",
            UserEvent::AuthMethodUnlinked { .. } => "AuthMethodUnlinked",
            UserEvent::ProfileUpdated { .. } => "ProfileUpdated",
            UserEvent::ProviderKeySet { .. } => "ProviderKeySet",
            UserEvent::ProviderKeyRemoved { .. } => "ProviderKeyRemoved",
            UserEvent::TierChanged { .. } => "TierChanged",
        }
    }

    /// The schema version of this event's shape (every user event is at `"1"`).
    pub fn event_version(&self) -> &'static str {
        "1"
    }
}
