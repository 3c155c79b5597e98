//! What a client is sent of a run: the conversation's log messages (`conv.<id>.ev` commits and
//! `conv.<id>.live` deltas) turned into LiberClaw/baal-agent SSE frames, each a JSON object with
//! a `type`: `queued`, `status`, `text` (a piece of the reply), `tool_use`, `tool_result`,
//! `file`, then one terminal `done` or `error`.

use serde_json::{Value, json};
use warren_commands::codec;
use warren_domain::conversation::{ConversationEvent, LiveDelta};
use warren_domain::ids::RunId;

/// One frame for a client.
#[derive(Debug, PartialEq)]
pub struct Frame {
    /// The JSON object sent as `data:`.
    pub data: Value,
    /// Whether it ends the run.
    pub terminal: bool,
}

fn frame(data: Value) -> Frame {
    Frame {
        data,
        terminal: false,
    }
}

fn terminal(data: Value) -> Frame {
    Frame {
        data,
        terminal: true,
    }
}

/// The frames of one log message that concern `run_id`, in order.
pub fn of_message(subject: &str, payload: &[u8], run_id: RunId) -> Vec<Frame> {
    if subject.ends_with(".live") {
        return match serde_json::from_slice::<LiveDelta>(payload) {
            Ok(delta) if delta.run_id() == run_id => vec![of_delta(delta)],
            Ok(_) => vec![],
            Err(err) => {
                tracing::warn!(subject, error = %err, "unreadable live delta, skipped");
                vec![]
            }
        };
    }
    match codec::decode::<ConversationEvent>(payload) {
        Ok(envelopes) => envelopes
            .into_iter()
            .filter_map(|envelope| of_event(envelope.event, run_id))
            .collect(),
        Err(err) => {
            tracing::warn!(subject, error = %err, "unreadable commit, skipped");
            vec![]
        }
    }
}

fn of_delta(delta: LiveDelta) -> Frame {
    frame(match delta {
        LiveDelta::Token { text, .. } => json!({"type": "text", "content": text}),
        LiveDelta::ToolCall {
            call_id,
            name,
            args,
            ..
        } => json!({"type": "tool_use", "call_id": call_id, "name": name, "input": args}),
        LiveDelta::ToolResult {
            call_id,
            ok,
            output,
            ..
        } => json!({"type": "tool_result", "call_id": call_id, "ok": ok, "output": output}),
        LiveDelta::Status { status, .. } => json!({"type": "status", "status": status}),
        LiveDelta::File { path, size, .. } => json!({"type": "file", "path": path, "size": size}),
    })
}

fn error_frame(run_id: RunId, code: &str, message: &str, retryable: bool) -> Frame {
    terminal(json!({
        "type": "error",
        "run_id": run_id,
        "code": code,
        "message": message,
        "retryable": retryable,
        // baal-agent clients read `content`.
        "content": message,
    }))
}

fn of_event(event: ConversationEvent, run_id: RunId) -> Option<Frame> {
    use ConversationEvent as E;
    match event {
        E::RunQueued {
            conversation_id,
            run_id: r,
            message_id,
            position,
        } if r == run_id => Some(frame(json!({
            "type": "queued",
            "conversation_id": conversation_id,
            "run_id": run_id,
            "message_id": message_id,
            "position": position,
        }))),
        E::RunCompleted {
            conversation_id,
            run_id: r,
            reply_id,
            text,
            tool_calls,
            usage,
            duration_ms,
            ..
        } if r == run_id => Some(terminal(json!({
            "type": "done",
            "conversation_id": conversation_id,
            "run_id": run_id,
            "message_id": reply_id,
            "text": text,
            "tool_calls": tool_calls,
            "usage": usage,
            "duration_ms": duration_ms,
        }))),
        E::RunFailed {
            run_id: r,
            code,
            message,
            retryable,
            ..
        } if r == run_id => Some(error_frame(run_id, &code, &message, retryable)),
        E::RunCancelled {
            run_id: r, reason, ..
        } if r == run_id => Some(error_frame(
            run_id,
            "cancelled",
            &format!("the run was cancelled ({reason})"),
            false,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;
    use warren_domain::conversation::RunStatus;

    #[test]
    fn deltas_of_the_run_become_frames_and_others_are_skipped() {
        let run = RunId(Uuid::from_u128(1));
        let other = RunId(Uuid::from_u128(2));
        let token = serde_json::to_vec(&LiveDelta::Token {
            run_id: run,
            text: "Hel".into(),
        })
        .expect("json");
        assert_eq!(
            of_message("conv.x.live", &token, run),
            vec![frame(json!({"type": "text", "content": "Hel"}))]
        );
        assert_eq!(of_message("conv.x.live", &token, other), vec![]);
        let status = serde_json::to_vec(&LiveDelta::Status {
            run_id: run,
            status: RunStatus::ExecutingTool,
        })
        .expect("json");
        assert_eq!(
            of_message("conv.x.live", &status, run)[0].data["status"],
            "executing_tool"
        );
        assert_eq!(of_message("conv.x.live", b"not json", run), vec![]);
    }
}
