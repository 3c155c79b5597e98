//! Frames as LiberClaw / baal-agent SSE: one JSON object with a `type` per `data:` line —
//! `message` (a user message), `queued`, `run_started`, `status` (`thinking`, `executing_tool`,
//! `streaming`; before a run starts, `resuming` or `at_capacity` while its paused agent is
//! woken), `text` (a piece of the reply),
//! `tool_use`, `tool_result`, `file`, `cancel_requested`, then one terminal `done` or `error` per
//! run; `agent_message` (the agent's own, outside any run), `renamed`, `history_cleared`; the openings `snapshot` and `reset`; `keepalive`; the
//! feed's `ready`, `agent` and `conversation`; an exec's `stdout`, `stderr`, `exit`; and a
//! stream's last `error`. Every frame that
//! belongs to a run names it (`run_id`); errors carry `content` too (baal-agent clients read it).

use super::Frame;
use serde_json::{Value, json};

/// The frame's JSON object.
pub fn to_json(frame: &Frame) -> Value {
    match frame {
        Frame::Message {
            run_id,
            message_id,
            text,
            client_id,
            client_kind,
        } => json!({
            "type": "message", "run_id": run_id, "message_id": message_id, "role": "user",
            "text": text, "client_id": client_id, "client_kind": client_kind,
        }),
        Frame::Queued {
            conversation_id,
            run_id,
            message_id,
            position,
        } => json!({
            "type": "queued", "conversation_id": conversation_id, "run_id": run_id,
            "message_id": message_id, "position": position,
        }),
        Frame::RunStarted { run_id } => json!({"type": "run_started", "run_id": run_id}),
        Frame::Status { run_id, status } => {
            json!({"type": "status", "run_id": run_id, "status": status})
        }
        Frame::Text { run_id, content } => {
            json!({"type": "text", "run_id": run_id, "content": content})
        }
        Frame::ToolUse {
            run_id,
            call_id,
            name,
            input,
        } => json!({
            "type": "tool_use", "run_id": run_id, "call_id": call_id, "name": name,
            "input": input,
        }),
        Frame::ToolResult {
            run_id,
            call_id,
            ok,
            output,
        } => json!({
            "type": "tool_result", "run_id": run_id, "call_id": call_id, "ok": ok,
            "output": output,
        }),
        Frame::File { run_id, path, size } => {
            json!({"type": "file", "run_id": run_id, "path": path, "size": size})
        }
        Frame::CancelRequested { run_id } => {
            json!({"type": "cancel_requested", "run_id": run_id})
        }
        Frame::Done {
            conversation_id,
            run_id,
            message_id,
            text,
            tool_calls,
            usage,
            duration_ms,
        } => json!({
            "type": "done", "conversation_id": conversation_id, "run_id": run_id,
            "message_id": message_id, "text": text, "tool_calls": tool_calls, "usage": usage,
            "duration_ms": duration_ms,
        }),
        Frame::Failed {
            run_id,
            code,
            message,
            retryable,
        } => error(Some(run_id), code, message, *retryable),
        Frame::Cancelled { run_id, reason } => error(
            Some(run_id),
            "cancelled",
            &Frame::cancelled_message(*reason),
            false,
        ),
        Frame::AgentMessage { message_id, text } => json!({
            "type": "agent_message", "message_id": message_id, "role": "assistant", "text": text,
        }),
        Frame::Renamed { title } => json!({"type": "renamed", "title": title}),
        Frame::HistoryCleared => json!({"type": "history_cleared"}),
        Frame::Snapshot {
            conversation_id,
            messages,
        } => json!({"type": "snapshot", "conversation_id": conversation_id, "messages": messages}),
        Frame::Reset {
            conversation_id,
            after,
            oldest,
            messages,
        } => json!({
            "type": "reset", "reason": "cursor_expired", "after": after, "oldest": oldest,
            "conversation_id": conversation_id, "messages": messages,
        }),
        Frame::Keepalive => json!({"type": "keepalive"}),
        Frame::Ready => json!({"type": "ready"}),
        Frame::Feed(change) => change.to_json(),
        Frame::Exec(frame) => serde_json::to_value(frame).unwrap_or_else(|err| {
            tracing::error!(error = %err, "an exec frame could not be serialized");
            json!({"type": "keepalive"})
        }),
        Frame::End {
            run_id,
            code,
            message,
            retryable,
        } => error(run_id.as_ref(), code, message, *retryable),
    }
}

fn error<R: serde::Serialize>(
    run_id: Option<R>,
    code: &str,
    message: &str,
    retryable: bool,
) -> Value {
    json!({
        "type": "error", "run_id": run_id, "code": code, "message": message,
        "retryable": retryable, "content": message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;
    use warren_domain::conversation::RunStatus;
    use warren_domain::ids::RunId;

    #[test]
    fn a_run_waiting_for_its_paused_agent_says_resuming_or_at_capacity() {
        let run_id = RunId(Uuid::from_u128(1));
        for (status, said) in [
            (RunStatus::Resuming, "resuming"),
            (RunStatus::AtCapacity, "at_capacity"),
        ] {
            let json = to_json(&Frame::Status { run_id, status });
            assert_eq!(json["type"], "status", "{json}");
            assert_eq!(json["status"], said, "{json}");
            assert_eq!(json["run_id"], run_id.0.to_string(), "{json}");
        }
    }
}
