//! Event schema versions and the steps that lift an older stored shape to the current one.
//!
//! Every event type starts at version `"1"`. A type whose shape changes gets a new version here
//! and an upcast step from the version before, so every event ever written stays readable:
//! readers of the log lift an event before deserializing it (`warren_commands::codec`), and each
//! step has a golden-JSON test of the old form (`domain/tests/golden_json.rs`).
//!
//! | type | version | change |
//! |---|---|---|
//! | `ModelUsageMetered` | 2 | `cached_input_tokens` (version 1 reads as 0) |
//! | `RunCompleted` | 2 | `model`, `provider` (version 1 reads as unknown: `null`) |

use serde_json::{Value, json};

/// The version `event_type` is written at today.
pub fn current(event_type: &str) -> &'static str {
    match event_type {
        "ModelUsageMetered" | "RunCompleted" => "2",
        _ => "1",
    }
}

/// Lifts one stored envelope (`{"type", "version", "data", …}`) to its type's current version,
/// in place. An envelope already current, or of a version no step knows, is left as it is (the
/// reader then refuses it as unreadable).
pub fn upcast(envelope: &mut Value) {
    loop {
        let event_type = envelope.get("type").and_then(Value::as_str).unwrap_or("");
        let version = envelope
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or("");
        let next = match (event_type, version) {
            ("ModelUsageMetered", "1") => {
                set_missing(envelope, "cached_input_tokens", json!(0));
                "2"
            }
            ("RunCompleted", "1") => {
                set_missing(envelope, "model", Value::Null);
                set_missing(envelope, "provider", Value::Null);
                "2"
            }
            _ => return,
        };
        envelope["version"] = Value::String(next.to_owned());
    }
}

/// Sets `data.<field>` unless the event already has it.
fn set_missing(envelope: &mut Value, field: &str, value: Value) {
    if let Some(data) = envelope.get_mut("data").and_then(Value::as_object_mut) {
        data.entry(field).or_insert(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_one_run_completed_is_lifted_to_two_with_an_unknown_model() {
        let mut stored =
            json!({"type": "RunCompleted", "version": "1", "data": {"duration_ms": 5}});
        upcast(&mut stored);
        assert_eq!(
            stored,
            json!({"type": "RunCompleted", "version": "2",
                   "data": {"duration_ms": 5, "model": null, "provider": null}})
        );
    }

    #[test]
    fn current_and_unknown_versions_are_left_alone() {
        let current = json!({"type": "ModelUsageMetered", "version": "2", "data": {"cached_input_tokens": 7}});
        let mut lifted = current.clone();
        upcast(&mut lifted);
        assert_eq!(lifted, current);
        let future = json!({"type": "RunCompleted", "version": "9", "data": {}});
        let mut lifted = future.clone();
        upcast(&mut lifted);
        assert_eq!(lifted, future);
    }
}
