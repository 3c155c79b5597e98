//! What a client is sent of a conversation: its log messages (`conv.<id>.ev` commits and
//! `conv.<id>.live` deltas) turned into LiberClaw/baal-agent SSE frames, each a JSON object with
//! a `type`: `message` (a user message), `queued`, `run_started`, `status`, `text` (a piece of
//! the reply), `tool_use`, `tool_result`, `file`, `cancel_requested`, then one terminal `done` or
//! `error` per run; and `renamed`, `history_cleared` for the conversation. Every frame that
//! belongs to a run names it (`run_id`).

use serde_json::{Value, json};
use warren_commands::codec;
use warren_domain::conversation::{ConversationEvent, LiveDelta};
use warren_domain::ids::RunId;

/// One frame for a client.
#[derive(Debug, PartialEq)]
pub struct Frame {
    /// The JSON object sent as `data:`.
    pub data: Value,
    /// The run it belongs to, if any.
    pub run_id: Option<RunId>,
    /// Whether it ends its run.
    pub terminal: bool,
}

fn frame(run_id: RunId, data: Value) -> Frame {
    Frame {
        data,
        run_id: Some(run_id),
        terminal: false,
    }
}

fn terminal(run_id: RunId, data: Value) -> Frame {
    Frame {
        data,
        run_id: Some(run_id),
        terminal: true,
    }
}

/// The frames of one log message, in order; only those of `run` if given.
pub fn of_message(subject: &str, payload: &[u8], run: Option<RunId>) -> Vec<Frame> {
    let frames = if subject.ends_with(".live") {
        match serde_json::from_slice::<LiveDelta>(payload) {
            Ok(delta) => vec![of_delta(delta)],
            Err(err) => {
                tracing::warn!(subject, error = %err, "unreadable live delta, skipped");
                vec![]
            }
        }
    } else {
        match codec::decode::<ConversationEvent>(payload) {
            Ok(envelopes) => envelopes
                .into_iter()
                .filter_map(|envelope| of_event(envelope.event))
                .collect(),
            Err(err) => {
                tracing::warn!(subject, error = %err, "unreadable commit, skipped");
                vec![]
            }
        }
    };
    match run {
        Some(run) => frames
            .into_iter()
            .filter(|f| f.run_id == Some(run))
            .collect(),
        None => frames,
    }
}

fn of_delta(delta: LiveDelta) -> Frame {
    let run_id = delta.run_id();
    frame(
        run_id,
        match delta {
            LiveDelta::Token { text, .. } => {
                json!({"type": "text", "run_id": run_id, "content": text})
            }
            LiveDelta::ToolCall {
                call_id,
                name,
                args,
                ..
            } => json!({
                "type": "tool_use", "run_id": run_id, "call_id": call_id, "name": name,
                "input": args,
            }),
            LiveDelta::ToolResult {
                call_id,
                ok,
                output,
                ..
            } => json!({
                "type": "tool_result", "run_id": run_id, "call_id": call_id, "ok": ok,
                "output": output,
            }),
            LiveDelta::Status { status, .. } => {
                json!({"type": "status", "run_id": run_id, "status": status})
            }
            LiveDelta::File { path, size, .. } => {
                json!({"type": "file", "run_id": run_id, "path": path, "size": size})
            }
        },
    )
}

fn error_frame(run_id: RunId, code: &str, message: &str, retryable: bool) -> Frame {
    terminal(
        run_id,
        json!({
            "type": "error",
            "run_id": run_id,
            "code": code,
            "message": message,
            "retryable": retryable,
            // baal-agent clients read `content`.
            "content": message,
        }),
    )
}

fn of_event(event: ConversationEvent) -> Option<Frame> {
    use ConversationEvent as E;
    Some(match event {
        E::MessagePosted {
            message_id,
            run_id,
            text,
            client_id,
            client_kind,
            ..
        } => frame(
            run_id,
            json!({
                "type": "message", "run_id": run_id, "message_id": message_id, "role": "user",
                "text": text, "client_id": client_id, "client_kind": client_kind,
            }),
        ),
        E::RunQueued {
            conversation_id,
            run_id,
            message_id,
            position,
        } => frame(
            run_id,
            json!({
                "type": "queued",
                "conversation_id": conversation_id,
                "run_id": run_id,
                "message_id": message_id,
                "position": position,
            }),
        ),
        E::RunStarted { run_id, .. } => {
            frame(run_id, json!({"type": "run_started", "run_id": run_id}))
        }
        E::CancelRequested { run_id, .. } => frame(
            run_id,
            json!({"type": "cancel_requested", "run_id": run_id}),
        ),
        E::RunCompleted {
            conversation_id,
            run_id,
            reply_id,
            text,
            tool_calls,
            usage,
            duration_ms,
            ..
        } => terminal(
            run_id,
            json!({
                "type": "done",
                "conversation_id": conversation_id,
                "run_id": run_id,
                "message_id": reply_id,
                "text": text,
                "tool_calls": tool_calls,
                "usage": usage,
                "duration_ms": duration_ms,
            }),
        ),
        E::RunFailed {
            run_id,
            code,
            message,
            retryable,
            ..
        } => error_frame(run_id, &code, &message, retryable),
        E::RunCancelled { run_id, reason, .. } => error_frame(
            run_id,
            "cancelled",
            &format!("the run was cancelled ({reason})"),
            false,
        ),
        E::ConversationRenamed { title, .. } => Frame {
            data: json!({"type": "renamed", "title": title}),
            run_id: None,
            terminal: false,
        },
        E::HistoryCleared { .. } => Frame {
            data: json!({"type": "history_cleared"}),
            run_id: None,
            terminal: false,
        },
        E::ConversationStarted { .. } => return None,
    })
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
            of_message("conv.x.live", &token, Some(run)),
            vec![frame(
                run,
                json!({"type": "text", "run_id": run, "content": "Hel"})
            )]
        );
        assert_eq!(of_message("conv.x.live", &token, Some(other)), vec![]);
        assert_eq!(of_message("conv.x.live", &token, None).len(), 1);
        let status = serde_json::to_vec(&LiveDelta::Status {
            run_id: run,
            status: RunStatus::ExecutingTool,
        })
        .expect("json");
        assert_eq!(
            of_message("conv.x.live", &status, Some(run))[0].data["status"],
            "executing_tool"
        );
        assert_eq!(of_message("conv.x.live", b"not json", Some(run)), vec![]);
    }
}
