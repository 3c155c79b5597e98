//! The gateway protocol v1 (Agent Blob): `req` frames in, `res` and `event` frames out, and how a
//! conversation's log frames ([`crate::follow::Item`]) become `event` frames.

use crate::follow::Item;
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
        "sessions.new" => &[("title", text::TITLE)],
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

/// An event frame.
pub fn event(name: &str, payload: Value, seq: Option<u64>) -> Value {
    let mut frame = json!({"type": "event", "event": name, "payload": payload});
    if let Some(seq) = seq {
        frame["seq"] = seq.into();
    }
    frame
}

/// The event frame's text for this connection, made once per item for all clients that sent
/// its message and once for all others.
pub fn encode(item: &Item, session_id: &str, client_id: &str) -> Option<Utf8Bytes> {
    let from_self = from_self(item, client_id);
    item.encoded(from_self, |item| {
        of_item(item, session_id, client_id).map(|event| Utf8Bytes::from(event.to_string()))
    })
}

fn from_self(item: &Item, client_id: &str) -> bool {
    item.data()["client_id"].as_str() == Some(client_id)
}

/// The event a log frame is for this connection (`client_id` tells `fromSelf`), if any.
pub fn of_item(item: &Item, session_id: &str, client_id: &str) -> Option<Value> {
    let d = item.data();
    let run_id = &d["run_id"];
    let (name, payload) = match d["type"].as_str()? {
        "message" => (
            "message",
            json!({
                "role": "user", "content": d["text"], "messageId": d["message_id"],
                "runId": run_id, "clientType": d["client_kind"],
                "fromSelf": d["client_id"].as_str() == Some(client_id),
            }),
        ),
        "queued" => {
            let position = d["position"].as_u64().unwrap_or(0);
            (
                "queued",
                json!({
                    "runId": run_id, "requestId": run_id, "position": position,
                    "message": format!("✓ Message queued (position {position})"),
                }),
            )
        }
        "status" => ("status", json!({"runId": run_id, "status": d["status"]})),
        "text" => (
            "token",
            json!({"runId": run_id, "content": d["content"], "delta": true}),
        ),
        "tool_use" => (
            "tool_call",
            json!({
                "runId": run_id, "callId": d["call_id"], "toolName": d["name"],
                "arguments": d["input"],
            }),
        ),
        "tool_result" => (
            "tool_result",
            json!({
                "runId": run_id, "callId": d["call_id"],
                "result": {"success": d["ok"], "content": d["output"]},
            }),
        ),
        "file" => (
            "file",
            json!({"runId": run_id, "path": d["path"], "size": d["size"]}),
        ),
        "done" => {
            let usage = &d["usage"];
            let total = usage["input_tokens"].as_u64().unwrap_or(0)
                + usage["output_tokens"].as_u64().unwrap_or(0);
            (
                "final",
                json!({
                    "runId": run_id, "messageId": d["message_id"], "content": d["text"],
                    "toolCalls": d["tool_calls"], "totalTokens": total,
                }),
            )
        }
        "error" if d["code"] == "cancelled" => (
            "cancelled",
            json!({"runId": run_id, "message": d["message"]}),
        ),
        "error" => (
            "error",
            json!({
                "runId": run_id, "message": d["message"], "retryable": d["retryable"],
                "errorCode": d["code"],
            }),
        ),
        "reset" => (
            "reset",
            json!({"reason": d["reason"], "recentMessages": d["messages"]}),
        ),
        "renamed" => ("renamed", json!({"title": d["title"]})),
        "history_cleared" => ("history_cleared", json!({})),
        _ => return None,
    };
    let mut payload = payload;
    payload["sessionId"] = session_id.into();
    Some(event(name, payload, item.seq()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_frames_become_protocol_events_with_the_cursor_as_seq() {
        let item = Item::new(
            Some(7),
            json!({"type": "message", "run_id": "r", "text": "hi", "message_id": "m",
                "client_id": "ws-1", "client_kind": "web"}),
        );
        let mine = of_item(&item, "s", "ws-1").expect("event");
        assert_eq!(mine["event"], "message");
        assert_eq!(mine["seq"], 7);
        assert_eq!(mine["payload"]["fromSelf"], true);
        assert_eq!(mine["payload"]["sessionId"], "s");
        let theirs = of_item(&item, "s", "ws-2").expect("event");
        assert_eq!(theirs["payload"]["fromSelf"], false);
        let cancelled = Item::new(
            Some(9),
            json!({"type": "error", "run_id": "r", "code": "cancelled", "message": "x"}),
        );
        assert_eq!(
            of_item(&cancelled, "s", "c").expect("event")["event"],
            "cancelled"
        );
        let keepalive = Item::new(None, json!({"type": "keepalive"}));
        assert!(of_item(&keepalive, "s", "c").is_none());
    }
}
