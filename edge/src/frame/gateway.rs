//! Frames as the gateway protocol v1's `event` frames: `message` (a user's, or the agent's own
//! with `role: assistant` and `proactive: true`), `queued`, `status` (`thinking`,
//! `executing_tool`, `streaming`; `resuming` or `at_capacity` while a paused agent is woken for
//! the run), `token`,
//! `tool_call`, `tool_result`, `file`, `final`, `error`, `cancelled`, `reset`, `renamed`,
//! `history_cleared` for the session followed (each with `sessionId`, and `seq` when it has a
//! cursor), and `feed` events for the user-wide feed.

use super::Frame;
use crate::views::MessageView;
use serde_json::{Value, json};
use warren_domain::ids::RunId;

/// An event frame.
pub fn event(name: &str, payload: Value, seq: Option<u64>) -> Value {
    let mut frame = json!({"type": "event", "event": name, "payload": payload});
    if let Some(seq) = seq {
        frame["seq"] = seq.into();
    }
    frame
}

/// A stored message as the gateway shows it (`sessions.history`, `reset`).
pub fn message_view(m: &MessageView) -> Value {
    let mut view = json!({
        "id": m.id, "role": m.role, "content": m.text, "runId": m.run_id,
        "timestamp": m.created_at, "seq": m.seq,
    });
    // A run that ended without a reply: its outcome and public error, as its live `error` said.
    if let (Some(status), Some(code)) = (&m.status, &m.error_code) {
        view["status"] = json!(status);
        view["error"] = json!({
            "code": code, "message": m.error_message, "retryable": m.retryable,
        });
    }
    view
}

/// The session event a frame is for the connection `client_id` following session
/// `session_id` (`fromSelf` tells whether that connection posted the message); none for frames
/// the protocol does not send (keepalives, snapshots: `sessions.switch` answers with those).
pub fn session_event(
    frame: &Frame,
    seq: Option<u64>,
    session_id: &str,
    client_id: &str,
) -> Option<Value> {
    let (name, mut payload) = match frame {
        Frame::Message {
            run_id,
            message_id,
            text,
            client_id: poster,
            client_kind,
        } => (
            "message",
            json!({
                "role": "user", "content": text, "messageId": message_id, "runId": run_id,
                "clientType": client_kind, "fromSelf": poster.as_deref() == Some(client_id),
            }),
        ),
        Frame::Queued {
            run_id, position, ..
        } => (
            "queued",
            json!({
                "runId": run_id, "requestId": run_id, "position": position,
                "message": format!("✓ Message queued (position {position})"),
            }),
        ),
        Frame::Status { run_id, status } => ("status", json!({"runId": run_id, "status": status})),
        Frame::Text { run_id, content } => (
            "token",
            json!({"runId": run_id, "content": content, "delta": true}),
        ),
        Frame::ToolUse {
            run_id,
            call_id,
            name,
            input,
        } => (
            "tool_call",
            json!({"runId": run_id, "callId": call_id, "toolName": name, "arguments": input}),
        ),
        Frame::ToolResult {
            run_id,
            call_id,
            ok,
            output,
        } => (
            "tool_result",
            json!({
                "runId": run_id, "callId": call_id,
                "result": {"success": ok, "content": output},
            }),
        ),
        Frame::File { run_id, path, size } => {
            ("file", json!({"runId": run_id, "path": path, "size": size}))
        }
        Frame::Done {
            run_id,
            message_id,
            text,
            tool_calls,
            usage,
            ..
        } => (
            "final",
            json!({
                "runId": run_id, "messageId": message_id, "content": text,
                "toolCalls": tool_calls,
                "totalTokens": usage.input_tokens + usage.output_tokens,
            }),
        ),
        Frame::Cancelled { run_id, reason } => (
            "cancelled",
            json!({"runId": run_id, "message": Frame::cancelled_message(*reason)}),
        ),
        Frame::Failed {
            run_id,
            code,
            message,
            retryable,
        } => ("error", error(Some(run_id), code, message, *retryable)),
        Frame::End {
            run_id,
            code,
            message,
            retryable,
        } => ("error", error(run_id.as_ref(), code, message, *retryable)),
        Frame::Reset { messages, .. } => (
            "reset",
            json!({
                "reason": "cursor_expired",
                "recentMessages": messages.iter().map(message_view).collect::<Vec<_>>(),
            }),
        ),
        Frame::AgentMessage { message_id, text } => (
            "message",
            json!({
                "role": "assistant", "content": text, "messageId": message_id,
                "fromSelf": false, "proactive": true,
            }),
        ),
        Frame::Renamed { title } => ("renamed", json!({"title": title})),
        Frame::HistoryCleared => ("history_cleared", json!({})),
        Frame::RunStarted { .. }
        | Frame::CancelRequested { .. }
        | Frame::Snapshot { .. }
        | Frame::Keepalive
        | Frame::Ready
        | Frame::Exec(_)
        | Frame::Feed(_) => return None,
    };
    payload["sessionId"] = session_id.into();
    Some(event(name, payload, seq))
}

/// An `error` event's payload: a failed run, or a stream's last frame.
fn error(run_id: Option<&RunId>, code: &str, message: &str, retryable: bool) -> Value {
    json!({"runId": run_id, "message": message, "retryable": retryable, "errorCode": code})
}

/// The feed event a frame of the user-wide feed is: a `feed` event per change, and an `error`
/// event (`scope: feed`) when the feed ends; none for `ready` and keepalives.
pub fn feed_event(frame: &Frame) -> Option<Value> {
    match frame {
        Frame::Feed(change) => Some(event("feed", change.to_json(), None)),
        Frame::End {
            code,
            message,
            retryable,
            ..
        } => Some(event(
            "error",
            json!({
                "scope": "feed", "message": message, "retryable": retryable,
                "errorCode": code,
            }),
            None,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;
    use warren_domain::conversation::CancelReason;
    use warren_domain::ids::{MessageId, RunId};

    #[test]
    fn log_frames_become_protocol_events_with_the_cursor_as_seq() {
        let run_id = RunId(Uuid::from_u128(1));
        let message = Frame::Message {
            run_id,
            message_id: MessageId(Uuid::from_u128(2)),
            text: "hi".into(),
            client_id: Some("ws-1".into()),
            client_kind: Some("web".into()),
        };
        let mine = session_event(&message, Some(7), "s", "ws-1").expect("event");
        assert_eq!(mine["event"], "message");
        assert_eq!(mine["seq"], 7);
        assert_eq!(mine["payload"]["fromSelf"], true);
        assert_eq!(mine["payload"]["sessionId"], "s");
        let theirs = session_event(&message, Some(7), "s", "ws-2").expect("event");
        assert_eq!(theirs["payload"]["fromSelf"], false);
        let cancelled = Frame::Cancelled {
            run_id,
            reason: CancelReason::Requested,
        };
        assert_eq!(
            session_event(&cancelled, Some(9), "s", "c").expect("event")["event"],
            "cancelled"
        );
        assert!(session_event(&Frame::Keepalive, None, "s", "c").is_none());
    }

    #[test]
    fn a_run_waiting_for_its_paused_agent_is_a_status_event() {
        use warren_domain::conversation::RunStatus;
        let run_id = RunId(Uuid::from_u128(1));
        for (status, said) in [
            (RunStatus::Resuming, "resuming"),
            (RunStatus::AtCapacity, "at_capacity"),
        ] {
            let event = session_event(&Frame::Status { run_id, status }, Some(3), "s", "c")
                .expect("a status event");
            assert_eq!(event["event"], "status", "{event}");
            assert_eq!(event["payload"]["status"], said, "{event}");
            assert_eq!(event["payload"]["runId"], run_id.0.to_string(), "{event}");
        }
    }
}
