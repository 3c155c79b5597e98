//! What a client is sent on a stream, typed once. A [`Frame`] is made from the log's events
//! ([`of_message`]: `conv.<id>.ev` commits and `conv.<id>.live` deltas, each matched
//! exhaustively, so an event without a frame does not compile) or by the edge for the stream
//! itself (snapshot, reset, keepalive, the last `End`), an exec's output and the user-wide feed
//! ([`feed`]). Each
//! protocol has one serializer, an exhaustive match over [`Frame`]:
//! - [`sse`] — LiberClaw / baal-agent SSE frames (`message`, `text`, `done`, `error`, …);
//! - [`gateway`] — the gateway protocol v1's `event` frames (`message`, `token`, `final`, …).
//!
//! Nothing reads a frame back by string keys.

pub mod feed;
pub mod gateway;
pub mod sse;

use crate::app::exec::ExecFrame;
use crate::views::MessageView;
use serde_json::Value;
use uuid::Uuid;
use warren_commands::codec;
use warren_domain::conversation::{
    CancelReason, ConversationEvent, LiveDelta, RunStatus, TokenUsage, ToolCall,
};
use warren_domain::ids::{ConversationId, MessageId, RunId};

pub use feed::FeedFrame;

/// One frame for clients.
#[derive(Debug)]
pub enum Frame {
    /// A user message was posted (its run answers it).
    Message {
        /// The run answering it.
        run_id: RunId,
        /// The message.
        message_id: MessageId,
        /// Its text.
        text: String,
        /// The posting client's connection id.
        client_id: Option<String>,
        /// The posting client's kind (`web`, `sse`, `telegram`, …).
        client_kind: Option<String>,
    },
    /// A run waits behind others.
    Queued {
        /// The conversation.
        conversation_id: ConversationId,
        /// The run.
        run_id: RunId,
        /// The message it answers.
        message_id: MessageId,
        /// Its place in the queue (1 is next).
        position: u32,
    },
    /// A run started.
    RunStarted {
        /// The run.
        run_id: RunId,
    },
    /// What a run is doing.
    Status {
        /// The run.
        run_id: RunId,
        /// Thinking, executing a tool or streaming.
        status: RunStatus,
    },
    /// A piece of the reply.
    Text {
        /// The run.
        run_id: RunId,
        /// The text since the previous piece.
        content: String,
    },
    /// The agent calls a tool.
    ToolUse {
        /// The run.
        run_id: RunId,
        /// The call.
        call_id: String,
        /// The tool.
        name: String,
        /// Its arguments.
        input: Value,
    },
    /// A tool's result.
    ToolResult {
        /// The run.
        run_id: RunId,
        /// The call.
        call_id: String,
        /// Whether the tool succeeded.
        ok: bool,
        /// Its output.
        output: String,
    },
    /// The agent wrote a file.
    File {
        /// The run.
        run_id: RunId,
        /// Workspace-relative path.
        path: String,
        /// Its size, when known.
        size: Option<u64>,
    },
    /// Somebody asked to cancel a run.
    CancelRequested {
        /// The run.
        run_id: RunId,
    },
    /// A run ended with a reply (terminal).
    Done {
        /// The conversation.
        conversation_id: ConversationId,
        /// The run.
        run_id: RunId,
        /// The reply.
        message_id: MessageId,
        /// The reply's text.
        text: String,
        /// Tools called while answering.
        tool_calls: Vec<ToolCall>,
        /// Tokens used.
        usage: TokenUsage,
        /// How long it took.
        duration_ms: u64,
    },
    /// A run failed (terminal): a public code and message.
    Failed {
        /// The run.
        run_id: RunId,
        /// A stable code.
        code: String,
        /// A public message.
        message: String,
        /// Whether sending again may work.
        retryable: bool,
    },
    /// A run was cancelled (terminal).
    Cancelled {
        /// The run.
        run_id: RunId,
        /// Why.
        reason: CancelReason,
    },
    /// The agent sent a message of its own accord (a reminder, a background result).
    AgentMessage {
        /// The message.
        message_id: MessageId,
        /// Its text.
        text: String,
    },
    /// The conversation was renamed.
    Renamed {
        /// The new title.
        title: String,
    },
    /// The conversation's history was cleared.
    HistoryCleared,
    /// The opening of a stream with no cursor: the recent messages.
    Snapshot {
        /// The conversation.
        conversation_id: Uuid,
        /// Its newest messages, oldest first.
        messages: Vec<MessageView>,
    },
    /// The opening of a stream whose cursor is gone from the log: the recent messages instead.
    Reset {
        /// The conversation.
        conversation_id: Uuid,
        /// The cursor the client sent.
        after: u64,
        /// The oldest position still in the log.
        oldest: u64,
        /// Its newest messages, oldest first.
        messages: Vec<MessageView>,
    },
    /// Nothing happened for a while; the stream is alive.
    Keepalive,
    /// The user-wide feed is subscribed.
    Ready,
    /// A piece of a shell command's output, or its end (`POST /agents/{id}/exec`).
    Exec(ExecFrame),
    /// A change to one of the user's agents or conversations (the feed).
    Feed(FeedFrame),
    /// The last frame of a stream that ends: why, and whether reconnecting may work.
    End {
        /// The run followed, if the stream follows one.
        run_id: Option<RunId>,
        /// A stable code: `stream_interrupted`, `slow_consumer`, `session_revoked`, …
        code: String,
        /// A public message.
        message: String,
        /// Whether reconnecting may work.
        retryable: bool,
    },
}

/// Why a stream ends, when the stream itself (not the caller's access) ends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interruption {
    /// The server's read of the log stopped (restart, NATS gone).
    Interrupted,
    /// This client fell behind the live frames.
    SlowConsumer,
}

impl Frame {
    /// The run it belongs to, if any.
    pub fn run_id(&self) -> Option<RunId> {
        match self {
            Frame::Message { run_id, .. }
            | Frame::Queued { run_id, .. }
            | Frame::RunStarted { run_id }
            | Frame::Status { run_id, .. }
            | Frame::Text { run_id, .. }
            | Frame::ToolUse { run_id, .. }
            | Frame::ToolResult { run_id, .. }
            | Frame::File { run_id, .. }
            | Frame::CancelRequested { run_id }
            | Frame::Done { run_id, .. }
            | Frame::Failed { run_id, .. }
            | Frame::Cancelled { run_id, .. } => Some(*run_id),
            Frame::End { run_id, .. } => *run_id,
            Frame::Renamed { .. }
            | Frame::AgentMessage { .. }
            | Frame::HistoryCleared
            | Frame::Snapshot { .. }
            | Frame::Reset { .. }
            | Frame::Keepalive
            | Frame::Ready
            | Frame::Exec(_)
            | Frame::Feed(_) => None,
        }
    }

    /// Whether it ends its run.
    pub fn terminal(&self) -> bool {
        matches!(
            self,
            Frame::Done { .. } | Frame::Failed { .. } | Frame::Cancelled { .. }
        )
    }

    /// Whether it is a stream's last frame.
    pub fn ends_stream(&self) -> bool {
        matches!(self, Frame::End { .. })
    }

    /// The code of a stream's last frame.
    pub fn end_code(&self) -> Option<&str> {
        match self {
            Frame::End { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The connection that posted it (user messages).
    pub fn client_id(&self) -> Option<&str> {
        match self {
            Frame::Message { client_id, .. } => client_id.as_deref(),
            _ => None,
        }
    }

    /// What a client is told of a cancelled run.
    pub fn cancelled_message(reason: CancelReason) -> String {
        format!("the run was cancelled ({reason})")
    }

    /// The last frame of a stream the server stopped.
    pub fn interrupted(run_id: Option<RunId>, why: Interruption) -> Self {
        let (code, message) = match why {
            Interruption::Interrupted => (
                "stream_interrupted",
                "the live stream was interrupted; resume with the last cursor",
            ),
            Interruption::SlowConsumer => (
                "slow_consumer",
                "this client fell behind; resume after the last cursor it got",
            ),
        };
        Frame::End {
            run_id,
            code: code.to_owned(),
            message: message.to_owned(),
            retryable: true,
        }
    }
}

/// The frames of one log message of a conversation, in order.
pub fn of_message(subject: &str, payload: &[u8]) -> Vec<Frame> {
    if subject.ends_with(".live") {
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
    }
}

fn of_delta(delta: LiveDelta) -> Frame {
    match delta {
        LiveDelta::Token { run_id, text } => Frame::Text {
            run_id,
            content: text,
        },
        LiveDelta::ToolCall {
            run_id,
            call_id,
            name,
            args,
        } => Frame::ToolUse {
            run_id,
            call_id,
            name,
            input: args,
        },
        LiveDelta::ToolResult {
            run_id,
            call_id,
            ok,
            output,
        } => Frame::ToolResult {
            run_id,
            call_id,
            ok,
            output,
        },
        LiveDelta::Status { run_id, status } => Frame::Status { run_id, status },
        LiveDelta::File { run_id, path, size } => Frame::File { run_id, path, size },
    }
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
        } => Frame::Message {
            run_id,
            message_id,
            text,
            client_id,
            client_kind,
        },
        E::RunQueued {
            conversation_id,
            run_id,
            message_id,
            position,
        } => Frame::Queued {
            conversation_id,
            run_id,
            message_id,
            position,
        },
        E::RunStarted { run_id, .. } => Frame::RunStarted { run_id },
        E::CancelRequested { run_id, .. } => Frame::CancelRequested { run_id },
        E::RunCompleted {
            conversation_id,
            run_id,
            reply_id,
            text,
            tool_calls,
            usage,
            duration_ms,
            ..
        } => Frame::Done {
            conversation_id,
            run_id,
            message_id: reply_id,
            text,
            tool_calls,
            usage,
            duration_ms,
        },
        E::RunFailed {
            run_id,
            code,
            message,
            retryable,
            ..
        } => Frame::Failed {
            run_id,
            code,
            message,
            retryable,
        },
        E::RunCancelled { run_id, reason, .. } => Frame::Cancelled { run_id, reason },
        E::ConversationRenamed { title, .. } => Frame::Renamed { title },
        E::HistoryCleared { .. } => Frame::HistoryCleared,
        E::AgentMessagePosted {
            message_id, text, ..
        } => Frame::AgentMessage { message_id, text },
        // A follower of a new conversation (a fork's too) opens with its snapshot.
        E::ConversationStarted { .. } | E::ConversationForked { .. } => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_become_frames_of_their_run_and_unreadable_ones_are_skipped() {
        let run = RunId(Uuid::from_u128(1));
        let token = serde_json::to_vec(&LiveDelta::Token {
            run_id: run,
            text: "Hel".into(),
        })
        .expect("json");
        let frames = of_message("conv.x.live", &token);
        assert!(
            matches!(&frames[..], [Frame::Text { run_id, content }] if *run_id == run && content == "Hel"),
            "{frames:?}"
        );
        assert_eq!(frames[0].run_id(), Some(run));
        assert!(!frames[0].terminal());
        assert!(of_message("conv.x.live", b"not json").is_empty());
        assert!(of_message("conv.x.ev", b"not json").is_empty());
    }
}
