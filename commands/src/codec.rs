//! The stored form of one commit: a JSON array of [`Envelope`]s in one log message, with headers
//! that let readers route without parsing the body.
//!
//! Decoding goes through [`upcast`], so an event written under an older version is lifted to the
//! current shape before it meets the domain.

use async_nats::HeaderMap;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::value::BorrowedStrDeserializer;
use serde::de::{DeserializeOwned, DeserializeSeed, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;
use warren_domain::ids::{CommandId, EventId};
use warren_domain::{Actor, Envelope, versions};

/// Header naming the event types of a commit, comma-separated (cheap filtering).
pub const HEADER_EVENT_TYPES: &str = "Warren-Event-Types";
/// Header carrying the actor (`user:<id>` or `system:<role>`).
pub const HEADER_ACTOR: &str = "Warren-Actor";
/// W3C trace context header.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// NATS dedupe header; Warren sets it to the command id.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";

/// Why a stored message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body is not a JSON array of envelopes.
    #[error("malformed commit body")]
    Malformed(#[source] serde_json::Error),
    /// An event's type or version is not one this build can read.
    #[error("unreadable event of type {event_type:?} version {version:?}")]
    Unreadable {
        /// The stored type string.
        event_type: String,
        /// The stored version.
        version: String,
        /// What serde said (an unknown variant, a missing field, …).
        #[source]
        source: Option<serde_json::Error>,
    },
}

/// Serializes one commit's envelopes.
pub fn encode<E: serde::Serialize>(
    envelopes: &[Envelope<E>],
) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(envelopes)
}

/// Decodes one commit into typed envelopes, upcasting older versions first.
///
/// A commit whose events are all at their types' current versions (nearly every one) is read in
/// one pass ([`decode_current`]); any other, or one that pass cannot read, goes through a JSON
/// value and [`upcast`], which also says what is wrong with it.
pub fn decode<E: DeserializeOwned>(body: &[u8]) -> Result<Vec<Envelope<E>>, DecodeError> {
    match decode_current(body) {
        Some(envelopes) => Ok(envelopes),
        None => decode_upcasting(body),
    }
}

/// Decodes through a JSON value, lifting each event to its current version first.
fn decode_upcasting<E: DeserializeOwned>(body: &[u8]) -> Result<Vec<Envelope<E>>, DecodeError> {
    let raw: Vec<Value> = serde_json::from_slice(body).map_err(DecodeError::Malformed)?;
    raw.into_iter()
        .map(|mut value| {
            upcast(&mut value);
            let field = |name: &str| {
                value
                    .get(name)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let (event_type, version) = (field("type"), field("version"));
            if version != versions::current(&event_type) {
                return Err(DecodeError::Unreadable {
                    event_type,
                    version,
                    source: None,
                });
            }
            serde_json::from_value(value).map_err(|source| DecodeError::Unreadable {
                event_type,
                version,
                source: Some(source),
            })
        })
        .collect()
}

/// One stored envelope with its event left raw. The derived `Envelope` reads its flattened event
/// through serde's buffer of every remaining field; this reads the metadata in place and hands the
/// event's `data` to its type with the tag first, which needs no buffer.
#[derive(Deserialize)]
struct Stored<'a> {
    id: EventId,
    #[serde(borrow)]
    version: Cow<'a, str>,
    aggregate_id: String,
    command_id: CommandId,
    actor: Actor,
    occurred_at: DateTime<Utc>,
    #[serde(rename = "type", borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// The commit's envelopes if every event is at its type's current version and reads as `E`;
/// `None` sends the commit to the upcasting path.
fn decode_current<E: DeserializeOwned>(body: &[u8]) -> Option<Vec<Envelope<E>>> {
    let stored: Vec<Stored<'_>> = serde_json::from_slice(body).ok()?;
    stored
        .into_iter()
        .map(|stored| {
            if stored.version != versions::current(&stored.event_type) {
                return None;
            }
            let tagged = Tagged {
                event_type: &stored.event_type,
                data: stored.data,
                at: 0,
            };
            let event = E::deserialize(tagged).ok()?;
            Some(Envelope {
                id: stored.id,
                version: stored.version.into_owned(),
                aggregate_id: stored.aggregate_id,
                command_id: stored.command_id,
                actor: stored.actor,
                occurred_at: stored.occurred_at,
                event,
            })
        })
        .collect()
}

/// An event as its adjacently tagged enum reads it: a map of `type`, then `data` (absent for a
/// variant without fields).
struct Tagged<'a> {
    event_type: &'a str,
    data: Option<&'a RawValue>,
    /// Entries handed out so far.
    at: u8,
}

impl<'de> serde::Deserializer<'de> for Tagged<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de> MapAccess<'de> for Tagged<'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let key = match (self.at, self.data) {
            (0, _) => "type",
            (1, Some(_)) => "data",
            _ => return Ok(None),
        };
        self.at += 1;
        seed.deserialize(BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        match (self.at, self.data) {
            (1, _) => seed.deserialize(BorrowedStrDeserializer::new(self.event_type)),
            (_, Some(data)) => {
                seed.deserialize(&mut serde_json::Deserializer::from_str(data.get()))
            }
            _ => Err(serde::de::Error::custom("no value left")),
        }
    }
}

/// Lifts an event written under an older schema version to the current one, in place (the steps
/// are [`warren_domain::versions`]', each with a golden-JSON test of the old form).
pub fn upcast(event: &mut Value) {
    versions::upcast(event);
}

/// Reads a header as a string.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_domain::agent::{AgentEvent, Backend, RuntimeKind};
    use warren_domain::ids::{AgentId, UserId};
    use warren_domain::user::Provider;

    fn envelope(event: AgentEvent) -> Envelope<AgentEvent> {
        Envelope {
            id: EventId::new(),
            version: event.event_version().to_owned(),
            aggregate_id: AgentId::new().to_string(),
            command_id: CommandId::new(),
            actor: Actor::User(UserId::new()),
            occurred_at: Utc::now(),
            event,
        }
    }

    #[test]
    fn a_current_commit_is_read_in_one_pass_exactly_as_through_a_value() {
        let (agent_id, user_id) = (AgentId::new(), UserId::new());
        let commit = vec![
            envelope(AgentEvent::AgentCreated {
                agent_id,
                owner_id: user_id,
                name: "quote \" and \\ and \u{e9}".into(),
                system_prompt: "line\nbreak".into(),
                model: "gpt-4o".into(),
                runtime: RuntimeKind::Warren,
                backend: Backend::Docker,
                host: None,
            }),
            envelope(AgentEvent::ModelUsageMetered {
                agent_id,
                user_id,
                provider: Provider::Anthropic,
                model: "claude".into(),
                own_key: true,
                input_tokens: 12,
                output_tokens: 3,
                cached_input_tokens: 4,
            }),
        ];
        let body = encode(&commit).expect("encodes");
        let fast: Vec<Envelope<AgentEvent>> = decode_current(&body).expect("one pass reads it");
        let slow: Vec<Envelope<AgentEvent>> = decode_upcasting(&body).expect("a value reads it");
        assert_eq!(fast, commit);
        assert_eq!(slow, commit);
    }

    #[test]
    fn an_older_version_goes_through_the_upcast() {
        let mut stored = serde_json::to_value(envelope(AgentEvent::ModelUsageMetered {
            agent_id: AgentId::new(),
            user_id: UserId::new(),
            provider: Provider::Openai,
            model: "gpt-4o".into(),
            own_key: false,
            input_tokens: 10,
            output_tokens: 1,
            cached_input_tokens: 0,
        }))
        .expect("serializes");
        stored["version"] = "1".into();
        stored["data"]
            .as_object_mut()
            .expect("data")
            .remove("cached_input_tokens");
        let body = serde_json::to_vec(&vec![stored]).expect("encodes");
        assert!(decode_current::<AgentEvent>(&body).is_none());
        let lifted: Vec<Envelope<AgentEvent>> = decode(&body).expect("upcast");
        assert_eq!(lifted[0].version, "2");
        assert!(matches!(
            lifted[0].event,
            AgentEvent::ModelUsageMetered {
                cached_input_tokens: 0,
                ..
            }
        ));
    }

    #[test]
    fn an_unknown_version_or_type_is_refused_with_its_name() {
        let mut stored = serde_json::to_value(envelope(AgentEvent::AgentDeleted {
            agent_id: AgentId::new(),
        }))
        .expect("serializes");
        stored["version"] = "9".into();
        let body = serde_json::to_vec(&vec![stored.clone()]).expect("encodes");
        let err = decode::<AgentEvent>(&body).expect_err("refused");
        assert!(err.to_string().contains("\"9\""), "{err}");
        stored["version"] = "1".into();
        stored["type"] = "NoSuchEvent".into();
        let body = serde_json::to_vec(&vec![stored]).expect("encodes");
        let err = decode::<AgentEvent>(&body).expect_err("refused");
        assert!(err.to_string().contains("NoSuchEvent"), "{err}");
    }
}
