//! The stored form of an event: the payload plus the facts every event carries (DESIGN §2).
//!
//! One command's events are stored as one log message (a JSON array of envelopes), so a command is
//! atomic and its command id is the message's dedupe id.

use crate::ids::{CommandId, EventId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Who caused an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Actor {
    /// A signed-in user (by user id).
    User(crate::ids::UserId),
    /// A platform role, e.g. `deployer`, `chat`, `edge`.
    System(String),
}

impl Actor {
    /// Stable string form, used in log headers: `user:<uuid>` or `system:<name>`.
    pub fn to_header(&self) -> String {
        match self {
            Actor::User(id) => format!("user:{id}"),
            Actor::System(name) => format!("system:{name}"),
        }
    }

    /// Parses [`Actor::to_header`]'s form.
    pub fn from_header(s: &str) -> Option<Self> {
        let (kind, rest) = s.split_once(':')?;
        match kind {
            "user" => rest.parse().ok().map(Actor::User),
            "system" => Some(Actor::System(rest.to_owned())),
            _ => None,
        }
    }
}

/// One stored event with its metadata. `E` is an aggregate's event enum, serialized adjacently
/// tagged (`"type"` + `"data"`) and flattened into the envelope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope<E> {
    /// Unique id of this event.
    pub id: EventId,
    /// Schema version of this event type (`"1"`, `"2"`, …); readers upcast older versions.
    pub version: String,
    /// The aggregate this event belongs to (the UUID as a string).
    pub aggregate_id: String,
    /// The command that produced it.
    pub command_id: CommandId,
    /// Who issued the command.
    pub actor: Actor,
    /// When the command was decided.
    pub occurred_at: DateTime<Utc>,
    /// The event itself: `{"type": "...", "data": {...}}`.
    #[serde(flatten)]
    pub event: E,
}
