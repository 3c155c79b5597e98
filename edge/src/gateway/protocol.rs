//! The gateway protocol v1 (Agent Blob): `req` frames in, `res` frames out; `event` frames are
//! [`crate::frame::gateway`]'s serialization of the typed frames.

use crate::follow::Item;
use crate::frame::gateway;
use axum::extract::ws::Utf8Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use warren_domain::text::{self, TextRule};

/// The protocol version this gateway speaks.
pub const VERSION: &str = "1";
/// What `connect` reports as the gateway's version.
pub const GATEWAY_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The methods a connected client may call.
pub const METHODS: &[&str] = &[
    "agent",
    "agent.cancel",
    "sessions.list",
    "sessions.new",
    "sessions.fork",
    "sessions.switch",
    "sessions.history",
    "status",
    "feed.subscribe",
    "feed.unsubscribe",
    "auth.refresh",
];

/// A client's request.
#[derive(Debug, Deserialize)]
pub struct Req {
    /// Must be `req`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Echoed in the response.
    pub id: String,
    /// What to do.
    pub method: String,
    /// Method parameters.
    #[serde(default)]
    pub params: Value,
}

/// The domain rule each method's params that become command fields follow, beyond the check of
/// every string in every request's params ([`crate::input`]).
pub fn text_params(method: &str) -> &'static [(&'static str, TextRule)] {
    match method {
        "connect" => &[("clientType", text::CLIENT_KIND)],
        "agent" => &[("message", text::MESSAGE)],
        "sessions.new" | "sessions.fork" => &[("title", text::TITLE)],
        _ => &[],
    }
}

/// A successful response.
pub fn ok(id: &str, payload: Value) -> Value {
    json!({"type": "res", "id": id, "ok": true, "payload": payload})
}

/// A failed response (the connection stays open).
pub fn fail(id: &str, code: &str, message: &str) -> Value {
    json!({"type": "res", "id": id, "ok": false, "error": message, "errorCode": code})
}

/// A request refused for one of its params: `invalid_params`, naming the field in the message and
/// in `details.fields` as REST's 422 does (the connection stays open).
pub fn invalid_field(id: &str, field: &str, reason: &str) -> Value {
    let mut frame = fail(
        id,
        "invalid_params",
        &format!("invalid params.{field}: {reason}"),
    );
    frame["details"] = json!({"fields": [{"field": field, "reason": reason}]});
    frame
}

/// The event frame's text for this connection, made once per item for all clients that sent
/// its message and once for all others.
pub fn encode(item: &Item, session_id: &str, client_id: &str) -> Option<Utf8Bytes> {
    let from_self = item.frame().client_id() == Some(client_id);
    item.encoded(from_self, |item| {
        gateway::session_event(item.frame(), item.seq(), session_id, client_id)
            .map(|event| Utf8Bytes::from(event.to_string()))
    })
}
