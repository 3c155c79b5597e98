//! Why a user command was refused.

use super::types::{AuthKind, UserStatus};
use crate::ids::{ConnectionId, KeyId, UserId};
use crate::text::InvalidText;
use thiserror::Error;

/// A refused user command. [`UserError::code`] is the stable machine code the edge maps.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum UserError {
    /// The command needs a registered user and there is none.
    #[error("user not found ({command})")]
    NotFound {
        /// The refused command's name.
        command: &'static str,
    },
    /// `RegisterUser` for a user that already exists.
    #[error("user {user_id} already exists")]
    AlreadyExists {
        /// The existing user.
        user_id: UserId,
    },
    /// The transition is not possible from the user's current status.
    #[error("cannot {action} a user who is {status}")]
    InvalidState {
        /// What was attempted, e.g. `approve`.
        action: &'static str,
        /// The status that forbids it.
        status: UserStatus,
    },
    /// Only approved users may do this.
    #[error("user is not approved (status {status})")]
    NotApproved {
        /// The user's status.
        status: UserStatus,
    },
    /// A command field is malformed.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The identity (or the connection id) is already linked to this user.
    #[error("{kind} identity {external_id:?} is already linked")]
    AuthMethodAlreadyLinked {
        /// The identity's kind.
        kind: AuthKind,
        /// The identity.
        external_id: String,
    },
    /// No such link on this user.
    #[error("auth method {connection_id} not found")]
    AuthMethodNotFound {
        /// The unknown link.
        connection_id: ConnectionId,
    },
    /// Unlinking would leave the user unable to sign in.
    #[error("auth method {connection_id} is the last one and cannot be unlinked")]
    LastAuthMethod {
        /// The last link.
        connection_id: ConnectionId,
    },
    /// A key id that is already recorded.
    #[error("provider key {key_id} already exists")]
    DuplicateKey {
        /// The key id.
        key_id: KeyId,
    },
    /// No such key on this user.
    #[error("provider key {key_id} not found")]
    KeyNotFound {
        /// The unknown key id.
        key_id: KeyId,
    },
}

impl UserError {
    /// A stable snake_case code for clients and the HTTP mapping, e.g. `not_approved`.
    pub fn code(&self) -> &'static str {
        match self {
            UserError::NotFound { .. } => "not_found",
            UserError::AlreadyExists { .. } => "already_exists",
            UserError::InvalidState { .. } => "invalid_state",
            UserError::NotApproved { .. } => "not_approved",
            UserError::InvalidInput { .. } => "invalid_input",
            UserError::AuthMethodAlreadyLinked { .. } => "auth_method_already_linked",
            UserError::AuthMethodNotFound { .. } => "auth_method_not_found",
            UserError::LastAuthMethod { .. } => "last_auth_method",
            UserError::DuplicateKey { .. } => "duplicate_key",
            UserError::KeyNotFound { .. } => "key_not_found",
        }
    }
}

impl From<InvalidText> for UserError {
    fn from(InvalidText { field, reason }: InvalidText) -> Self {
        UserError::InvalidInput { field, reason }
    }
}
