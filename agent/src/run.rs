//! The model loop of one run: stream a model turn (forwarding `token`s), emit its `text`, run its
//! tool calls (`tool_use` → `tool_result`, `file`), feed the results back, and repeat until the
//! model answers without tools (`done`), the run is cancelled (`error` `cancelled`), the model
//! fails (`error` `model_*`), a tool process is killed for the sandbox's memory (`error`
//! `sandbox_out_of_memory`, when [`Limits::oom_counter`] watches) or the turn budget runs out
//! (`error` `max_iterations`). The terminal event is returned in [`RunEnd`], not sent.
//!
//! Only whole units go back into the history: the user message, and each model turn together
//! with a result for every call it made (a cancelled call gets a "cancelled" result). A turn cut
//! short by an error or a cancel is dropped, so the next request is always well-formed.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Limits, ModelSettings};
use crate::events::AgentEvent;
use crate::model::{
    Message, ModelError, ModelEvent, ToolCall, ToolSpec, TurnRequest, Usage, stream_turn,
};
use crate::tools::{ToolOutcome, Toolbox};

/// One run's inputs.
pub struct Run<'a> {
    /// The HTTP client for the provider.
    pub http: &'a reqwest::Client,
    /// The model to call (request overrides already applied).
    pub settings: ModelSettings,
    /// The tools.
    pub toolbox: &'a Toolbox,
    /// The chat the run answers.
    pub chat_id: &'a str,
    /// Turn budget, idle timeout.
    pub limits: &'a Limits,
    /// Where events go.
    pub events: &'a mpsc::Sender<AgentEvent>,
    /// Fires to stop the run.
    pub cancel: &'a CancellationToken,
    /// The platform's trace context for this run, passed on to every model call.
    pub traceparent: Option<&'a str>,
}

/// A completed model turn.
#[derive(Default)]
struct Turn {
    text: String,
    calls: Vec<ToolCall>,
    usage: Usage,
}

/// How a run ended: the messages to append to the history and the terminal event (`done` or
/// `error`), which the caller sends only after releasing the chat, so a client that reacts to it
/// at once is never told the chat is busy.
pub struct RunEnd {
    /// What to append to the chat's history.
    pub appended: Vec<Message>,
    /// `done` or `error`.
    pub last: AgentEvent,
}

/// Why a model turn did not complete.
enum Stopped {
    Cancelled,
    Failed(ModelError),
    Idle(Duration),
}

impl Run<'_> {
    /// Runs the loop for `message` after `history`, sending every event but the last.
    pub async fn execute(self, history: &[Message], message: String) -> RunEnd {
        let mut transcript = history.to_vec();
        let start = transcript.len();
        transcript.push(Message::User { content: message });
        let specs = self.toolbox.specs();
        let mut usage = Usage::default();
        let mut texts: Vec<String> = Vec::new();
        let oom_kills_before = match &self.limits.oom_counter {
            Some(counter) => counter.kills().await,
            None => 0,
        };

        for iteration in 1..=self.limits.max_iterations {
            let turn = match self.model_turn(&transcript, &specs).await {
                Ok(turn) => turn,
                Err(stopped) => return end(transcript.split_off(start), stopped_event(stopped)),
            };
            usage += turn.usage;
            if !turn.text.is_empty() {
                self.emit(AgentEvent::Text {
                    content: turn.text.clone(),
                })
                .await;
                texts.push(turn.text.clone());
            }
            transcript.push(Message::Assistant {
                text: turn.text,
                tool_calls: turn.calls.clone(),
            });
            if turn.calls.is_empty() {
                let done = AgentEvent::Done {
                    text: texts.join("\n\n"),
                    usage,
                    iterations: iteration,
                };
                return end(transcript.split_off(start), done);
            }
            for call in &turn.calls {
                self.emit(AgentEvent::ToolUse {
                    call_id: call.id.clone(),
                    name: call.name.clone(),
                    input: call.input.clone(),
                })
                .await;
            }
            for call in &turn.calls {
                let outcome = if self.cancel.is_cancelled() {
                    ToolOutcome::failed("cancelled")
                } else {
                    self.toolbox.execute(call, self.chat_id, self.cancel).await
                };
                self.emit(AgentEvent::ToolResult {
                    call_id: call.id.clone(),
                    name: call.name.clone(),
                    ok: outcome.ok,
                    output: outcome.output.clone(),
                    truncated: outcome.truncated,
                })
                .await;
                for (path, size) in &outcome.files {
                    self.emit(AgentEvent::File {
                        path: path.clone(),
                        size: *size,
                    })
                    .await;
                }
                transcript.push(Message::Tool {
                    call_id: call.id.clone(),
                    name: call.name.clone(),
                    output: outcome.output,
                    ok: outcome.ok,
                });
            }
            if self.cancel.is_cancelled() {
                return end(
                    transcript.split_off(start),
                    stopped_event(Stopped::Cancelled),
                );
            }
            if let Some(counter) = &self.limits.oom_counter
                && counter.kills().await > oom_kills_before
            {
                // The turn and its results stay in the history (the model sees next time what
                // was killed); the run stops rather than let the model retry into the limit.
                tracing::warn!(
                    chat_id = self.chat_id,
                    "a tool process was killed for memory"
                );
                let killed = AgentEvent::error(
                    "sandbox_out_of_memory",
                    "a command of this run was killed: it used more memory than the sandbox allows",
                    false,
                );
                return end(transcript.split_off(start), killed);
            }
        }
        let exhausted = AgentEvent::error(
            "max_iterations",
            format!(
                "stopped after {} model turns without a final answer",
                self.limits.max_iterations
            ),
            false,
        );
        end(transcript.split_off(start), exhausted)
    }

    /// Streams one model turn, forwarding text deltas as `token` events.
    async fn model_turn(
        &self,
        transcript: &[Message],
        specs: &[ToolSpec],
    ) -> Result<Turn, Stopped> {
        let idle = self.limits.model_idle_timeout;
        let request = TurnRequest {
            settings: &self.settings,
            history: transcript,
            tools: specs,
            traceparent: self.traceparent,
        };
        let mut stream = tokio::select! {
            _ = self.cancel.cancelled() => return Err(Stopped::Cancelled),
            started = tokio::time::timeout(idle, stream_turn(self.http, request)) => {
                started.map_err(|_| Stopped::Idle(idle))?.map_err(Stopped::Failed)?
            }
        };
        let mut turn = Turn::default();
        loop {
            let next = tokio::select! {
                _ = self.cancel.cancelled() => return Err(Stopped::Cancelled),
                next = tokio::time::timeout(idle, stream.next()) => {
                    next.map_err(|_| Stopped::Idle(idle))?
                }
            };
            match next {
                Some(Ok(ModelEvent::TextDelta(delta))) => {
                    turn.text.push_str(&delta);
                    self.emit(AgentEvent::Token { delta }).await;
                }
                Some(Ok(ModelEvent::ToolCall(call))) => turn.calls.push(call),
                Some(Ok(ModelEvent::Usage(usage))) => turn.usage += usage,
                Some(Ok(ModelEvent::Finished)) | None => return Ok(turn),
                Some(Err(err)) => return Err(Stopped::Failed(err)),
            }
        }
    }

    /// Sends an event; a gone client is noticed by the run's watcher, which cancels the run.
    async fn emit(&self, event: AgentEvent) {
        let _ = self.events.send(event).await;
    }
}

fn end(appended: Vec<Message>, last: AgentEvent) -> RunEnd {
    RunEnd { appended, last }
}

fn stopped_event(stopped: Stopped) -> AgentEvent {
    match stopped {
        Stopped::Cancelled => AgentEvent::error("cancelled", "the run was cancelled", false),
        Stopped::Idle(idle) => AgentEvent::error(
            "model_timeout",
            format!("the model sent nothing for {}s", idle.as_secs()),
            true,
        ),
        Stopped::Failed(err) => {
            // The cause chain (which may name the URL, key in its query and all) goes to the
            // log only; the event carries the error's own public words.
            tracing::warn!(
                error = cause_chain(&err),
                code = err.code(),
                "model turn failed"
            );
            AgentEvent::error(err.code(), err.to_string(), err.retryable())
        }
    }
}

/// `err: cause: cause…`, for the log.
fn cause_chain(err: &dyn std::error::Error) -> String {
    let mut chain = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}
