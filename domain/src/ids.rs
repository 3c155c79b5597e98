//! Typed identifiers. Every id is a UUID underneath; the newtype keeps a user id from being passed
//! where an agent id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {$(
        #[$doc]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh, time-ordered id (UUID v7).
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
            /// The underlying UUID.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    )*};
}

typed_id!(
    /// A user (the `user.<id>` subject).
    UserId,
    /// An agent (the `agent.<id>` subject).
    AgentId,
    /// A conversation, also called a session (the `conv.<id>.*` subjects).
    ConversationId,
    /// A command; the log's `Nats-Msg-Id`, so a retried command is stored once.
    CommandId,
    /// One event.
    EventId,
    /// One message posted into a conversation.
    MessageId,
    /// One run of the agent (a model turn answering a message).
    RunId,
    /// A provider API key kept outside the log.
    KeyId,
    /// An auth method (connection) linked to a user.
    ConnectionId,
    /// One shell command run in an agent's workspace (`POST /agents/{id}/exec`).
    ExecId,
);
