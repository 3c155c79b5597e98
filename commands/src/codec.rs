//! The stored form of one commit: a JSON array of [`Envelope`]s in one log message, with headers
//! that let readers route without parsing the body.
//!
//! Decoding goes through [`upcast`], so an event written under an older version is lifted to the
//! current shape before it meets the domain.

use async_nats::HeaderMap;
use serde::de::DeserializeOwned;
use serde_json::Value;
use warren_domain::Envelope;
use warren_domain::versions::{self, Versioned};

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
/// A commit whose events are all at their types' current versions (nearly every one) is read
/// straight into its types, in one pass; any other goes through a JSON value and [`upcast`].
pub fn decode<E: DeserializeOwned + Versioned>(
    body: &[u8],
) -> Result<Vec<Envelope<E>>, DecodeError> {
    if let Ok(envelopes) = serde_json::from_slice::<Vec<Envelope<E>>>(body)
        && envelopes
            .iter()
            .all(|envelope| envelope.version == envelope.event.current_version())
    {
        return Ok(envelopes);
    }
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

/// Lifts an event written under an older schema version to the current one, in place (the steps
/// are [`warren_domain::versions`]', each with a golden-JSON test of the old form).
pub fn upcast(event: &mut Value) {
    versions::upcast(event);
}

/// Reads a header as a string.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.as_str())
}
