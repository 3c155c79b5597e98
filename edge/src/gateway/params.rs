//! Each method's params as a type. A param of the wrong type, a missing one, or one the method
//! does not know is refused with `invalid_params` naming it (as REST's 422 names a body field),
//! never silently ignored. `idempotencyKey` is a param of the write methods only.

use super::methods::Refusal;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;
use warren_domain::conversation::PostMode;

/// `connect` (the first frame).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Connect {
    /// The protocol version the client speaks.
    pub version: Option<String>,
    /// An access token (else the `Authorization` header's).
    pub token: Option<String>,
    /// `web`, `cli`, `telegram`, … (default `web`).
    pub client_type: Option<String>,
}

/// `agent`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Agent {
    /// The message (or a slash command).
    pub message: String,
    /// The session to post to (default: the current one).
    pub session_id: Option<Uuid>,
    /// The agent to start a session with, when there is none yet.
    pub agent_id: Option<Uuid>,
    /// Queue behind a running run (the default), or interrupt it.
    pub mode: Option<Mode>,
    /// Retries with the same key are answered once (checked before the method runs).
    #[serde(rename = "idempotencyKey")]
    pub _idempotency_key: Option<String>,
}

/// How a message meets a running run.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Wait behind it.
    #[default]
    Queue,
    /// Cancel it.
    Interrupt,
}

impl From<Mode> for PostMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Queue => PostMode::Queue,
            Mode::Interrupt => PostMode::Interrupt,
        }
    }
}

/// `agent.cancel`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cancel {
    /// The run (default: the session's running one).
    pub run_id: Option<Uuid>,
    /// The session (default: the current one).
    pub session_id: Option<Uuid>,
    /// See [`Agent`].
    #[serde(rename = "idempotencyKey")]
    pub _idempotency_key: Option<String>,
}

/// `sessions.list`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct List {
    /// Page size (1–200, default 10).
    pub limit: Option<i64>,
    /// Sessions to skip.
    pub offset: Option<i64>,
}

/// `sessions.new`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct New {
    /// The agent (default: the current session's).
    pub agent_id: Option<Uuid>,
    /// A title.
    pub title: Option<String>,
    /// See [`Agent`].
    #[serde(rename = "idempotencyKey")]
    pub _idempotency_key: Option<String>,
}

/// `sessions.fork`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Fork {
    /// The session to continue (default: the current one).
    pub session_id: Option<Uuid>,
    /// The `seq` of the last message the fork keeps.
    pub after: u64,
    /// A title.
    pub title: Option<String>,
    /// See [`Agent`].
    #[serde(rename = "idempotencyKey")]
    pub _idempotency_key: Option<String>,
}

/// `sessions.switch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Switch {
    /// The session.
    pub session_id: Uuid,
    /// Resume after this cursor (default: a snapshot of the recent messages).
    pub after: Option<u64>,
}

/// `sessions.history`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct History {
    /// The session (default: the current one).
    pub session_id: Option<Uuid>,
    /// Page size (1–200, default 20).
    pub limit: Option<i64>,
    /// Messages before this one.
    pub before: Option<Uuid>,
}

/// `status`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Status {
    /// The session (default: the current one).
    pub session_id: Option<Uuid>,
}

/// `auth.refresh`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refresh {
    /// A new access token for the same user.
    pub token: String,
}

/// Methods without params (`feed.subscribe`, `feed.unsubscribe`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nothing {}

/// The params as `T`; absent params are `{}`.
pub fn parse<T: DeserializeOwned>(params: &Value) -> Result<T, Refusal> {
    let params = match params {
        Value::Null => json!({}),
        Value::Object(_) => params.clone(),
        _ => return Err(invalid("params", "params must be an object")),
    };
    serde_path_to_error::deserialize(params).map_err(|err| {
        let (field, reason) = crate::extract::field_error(&err);
        invalid(&field, &reason)
    })
}

/// `invalid_params` naming `field` (in the message and `details.fields`).
pub fn invalid(field: &str, reason: &str) -> Refusal {
    let field = if field == "params" {
        field.to_owned()
    } else {
        format!("params.{field}")
    };
    Refusal::with_details(
        "invalid_params",
        format!("invalid {field}: {reason}"),
        json!({"fields": [{"field": field, "reason": reason}]}),
    )
}

/// A page size or offset from `0` to `max`, else `default`.
pub fn bounded(value: Option<i64>, name: &str, default: i64, max: i64) -> Result<i64, Refusal> {
    match value {
        None => Ok(default),
        Some(n) if (0..=max).contains(&n) => Ok(n),
        Some(_) => Err(invalid(name, &format!("must be from 0 to {max}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused<T: DeserializeOwned + std::fmt::Debug>(params: Value) -> (String, Value) {
        let Refusal(code, message, _, details) = parse::<T>(&params).expect_err("refused");
        assert_eq!(code, "invalid_params");
        (message, details.expect("details"))
    }

    #[test]
    fn unknown_wrong_and_missing_params_are_refused_by_name() {
        let (message, details) = refused::<Agent>(json!({"message": "hi", "backend": "ssh"}));
        assert!(message.contains("params.backend"), "{message}");
        assert_eq!(details["fields"][0]["field"], "params.backend");
        let (message, _) = refused::<Agent>(json!({"message": 42}));
        assert!(message.contains("params.message"), "{message}");
        let (message, _) = refused::<Agent>(json!({}));
        assert!(message.contains("params.message"), "{message}");
        let (message, _) = refused::<Agent>(json!({"message": "hi", "mode": "shout"}));
        assert!(message.contains("params.mode"), "{message}");
        let (message, _) = refused::<Switch>(json!({"sessionId": "nope"}));
        assert!(message.contains("params.sessionId"), "{message}");
        let (message, _) = refused::<Nothing>(json!({"x": 1}));
        assert!(message.contains("params.x"), "{message}");
        let (message, _) = refused::<List>(json!([1]));
        assert!(message.contains("params must be an object"), "{message}");
        assert!(parse::<Nothing>(&Value::Null).is_ok());
        assert!(parse::<Agent>(&json!({"message": "hi", "idempotencyKey": "k"})).is_ok());
    }
}
