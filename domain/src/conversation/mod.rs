//! The Conversation aggregate (a session: one user, one agent): messages and the
//! one-run-at-a-time queue, with cancel and interrupt.
//!
//! Rules worth knowing:
//! - Every posted message queues a run: `MessagePosted` then `RunQueued`, both with the run's
//!   position (0 = next up, see [`ConversationEvent`]). At most one run runs at a time; only the
//!   head of the queue may start, and only when nothing runs.
//! - `PostMode::Interrupt` cancels the running run (`RunCancelled`, reason `interrupted`) and puts
//!   the new run at the head, ahead of any waiting runs.
//! - `RequestCancel` cancels a waiting run at once (later positions shift down) and flags a
//!   running one (`CancelRequested`) for its worker, which confirms with `CancelRun`. A worker
//!   must also stop when it sees `RunCancelled` for its run.
//! - Complete and fail are accepted only for the running run; a stale or duplicate report is
//!   `run_not_active`, so a cancelled run's late result is never recorded.
//! - `ClearHistory` is refused while any run is running or waiting (`run_in_progress`): a waiting
//!   run would otherwise answer a message that no longer exists.
//! - Ownership (the caller is the conversation's user) is the caller's check.
//! - A fork (`ForkConversation`) starts with the origin's history up to a message; until a run
//!   completes in it, [`Conversation::hand_over_history`] tells the chat worker to hand that
//!   history to the runtime with the run (docs/adr/0027-fork.md).
//! - Every text field keeps its [`crate::text`] rule, the chat worker's too: titles, client and
//!   worker ids, tool names and call ids, failure codes on one line; messages, replies, tool
//!   output, tool arguments' strings and failure messages may span lines. The worker escapes
//!   what a runtime sends so its commands always keep them.
//!
//! Layout: `types` (modes, tool calls, usage, queue slots), `command`, `event`, `error`, `live`
//! (the deltas published while a run happens, not folded), `history` (the messages a model
//! reads, folded from the log, forks included), and this
//! file's state, `decide` and `apply`.

mod command;
mod error;
mod event;
pub mod history;
mod live;
mod types;

#[cfg(test)]
mod fork_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod text_tests;

pub use command::ConversationCommand;
pub use error::ConversationError;
pub use event::ConversationEvent;
pub use live::{LiveDelta, RunStatus};
pub use types::{
    CancelReason, ForkOrigin, MAX_PENDING_RUNS, PostMode, RunSlot, TokenUsage, ToolCall,
};

use crate::aggregate::impl_aggregate;
use crate::ids::{AgentId, ConversationId, MessageId, RunId, UserId};
use crate::text::{self, Lines, non_blank, optional};
use serde::{Deserialize, Serialize};

/// A conversation as folded from its events. `id` is `None` until `ConversationStarted`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// The conversation, once started.
    pub id: Option<ConversationId>,
    /// Its user.
    pub user_id: UserId,
    /// Its agent.
    pub agent_id: AgentId,
    /// Its title.
    pub title: Option<String>,
    /// Runs running or waiting, in queue order: index = position.
    pub runs: Vec<RunSlot>,
    /// The conversation it was forked from, if it is a fork.
    #[serde(default)]
    pub forked_from: Option<ForkOrigin>,
    /// Whether the next run must hand the runtime the conversation's history: a fork's runs do
    /// until one completes (or its history is cleared), since the runtime has never seen it.
    #[serde(default)]
    pub hand_over_history: bool,
    /// The text of a message whose `RunQueued` is still to be applied (same commit).
    #[serde(skip)]
    pending_text: Option<(RunId, String)>,
}

impl Conversation {
    /// The run a worker is running, if any.
    pub fn running(&self) -> Option<&RunSlot> {
        self.runs.first().filter(|run| run.is_running())
    }

    /// The run a worker may start now, if any.
    pub fn next_up(&self) -> Option<&RunSlot> {
        self.runs.first().filter(|run| !run.is_running())
    }

    /// A run's current position (0 = running or next up), if it is running or waiting.
    pub fn position(&self, run_id: RunId) -> Option<usize> {
        self.runs.iter().position(|run| run.run_id == run_id)
    }

    /// Decides what `command` changes, validating everything; never mutates.
    pub fn decide(
        &self,
        command: &ConversationCommand,
    ) -> Result<Vec<ConversationEvent>, ConversationError> {
        use ConversationCommand as C;
        use ConversationEvent as E;
        let Some(conversation_id) = self.id else {
            return match command {
                C::StartConversation {
                    conversation_id,
                    user_id,
                    agent_id,
                    title,
                } => {
                    let title = optional(title.as_ref());
                    text::TITLE.check_optional(title.as_deref())?;
                    Ok(vec![E::ConversationStarted {
                        conversation_id: *conversation_id,
                        user_id: *user_id,
                        agent_id: *agent_id,
                        title,
                    }])
                }
                C::ForkConversation {
                    conversation_id,
                    user_id,
                    agent_id,
                    title,
                    origin_id,
                    after,
                } => {
                    let title = optional(title.as_ref());
                    text::TITLE.check_optional(title.as_deref())?;
                    if origin_id == conversation_id {
                        return Err(ConversationError::InvalidInput {
                            field: "origin_id",
                            reason: "must be another conversation",
                        });
                    }
                    if *after == 0 {
                        return Err(ConversationError::InvalidInput {
                            field: "after",
                            reason: "must be a message's log sequence",
                        });
                    }
                    Ok(vec![E::ConversationForked {
                        conversation_id: *conversation_id,
                        user_id: *user_id,
                        agent_id: *agent_id,
                        title,
                        origin_id: *origin_id,
                        after: *after,
                    }])
                }
                _ => Err(ConversationError::NotFound {
                    command: command.name(),
                }),
            };
        };
        match command {
            C::StartConversation { .. } | C::ForkConversation { .. } => {
                Err(ConversationError::AlreadyExists { conversation_id })
            }
            C::RenameConversation { title } => {
                let title = non_blank(title).ok_or(ConversationError::InvalidInput {
                    field: "title",
                    reason: "must not be blank",
                })?;
                text::TITLE.check(&title)?;
                Ok(if self.title.as_ref() == Some(&title) {
                    vec![]
                } else {
                    vec![E::ConversationRenamed {
                        conversation_id,
                        title,
                    }]
                })
            }
            C::PostMessage {
                message_id,
                run_id,
                text,
                client_id,
                client_kind,
                mode,
            } => self.post(
                conversation_id,
                *message_id,
                *run_id,
                text,
                (optional(client_id.as_ref()), optional(client_kind.as_ref())),
                *mode,
            ),
            C::StartRun { run_id, worker_id } => {
                self.start_run(conversation_id, *run_id, worker_id)
            }
            C::CompleteRun {
                run_id,
                reply_id,
                text,
                tool_calls,
                usage,
                duration_ms,
                model,
                provider,
            } => {
                text::REPLY.check(text)?;
                if let Some(model) = model {
                    text::MODEL.check(model)?;
                }
                tool_calls.iter().try_for_each(valid_tool_call)?;
                self.expect_running(*run_id)?;
                Ok(vec![E::RunCompleted {
                    conversation_id,
                    run_id: *run_id,
                    reply_id: *reply_id,
                    user_id: self.user_id,
                    agent_id: self.agent_id,
                    text: text.clone(),
                    tool_calls: tool_calls.clone(),
                    usage: *usage,
                    duration_ms: *duration_ms,
                    model: model.clone(),
                    provider: *provider,
                }])
            }
            C::FailRun {
                run_id,
                code,
                message,
                retryable,
            } => {
                text::FAILURE_CODE.check(code)?;
                text::FAILURE_MESSAGE.check(message)?;
                self.expect_running(*run_id)?;
                Ok(vec![E::RunFailed {
                    conversation_id,
                    run_id: *run_id,
                    code: code.clone(),
                    message: message.clone(),
                    retryable: *retryable,
                }])
            }
            C::RequestCancel { run_id } => {
                let run = self.slot(*run_id)?;
                Ok(match (run.is_running(), run.cancel_requested) {
                    (true, true) => vec![],
                    (true, false) => vec![E::CancelRequested {
                        conversation_id,
                        run_id: *run_id,
                    }],
                    (false, _) => vec![E::RunCancelled {
                        conversation_id,
                        run_id: *run_id,
                        reason: CancelReason::Requested,
                    }],
                })
            }
            C::CancelRun { run_id } => {
                self.slot(*run_id)?;
                Ok(vec![E::RunCancelled {
                    conversation_id,
                    run_id: *run_id,
                    reason: CancelReason::Requested,
                }])
            }
            C::ClearHistory => match self.runs.first() {
                Some(run) => Err(ConversationError::RunInProgress { run_id: run.run_id }),
                None => Ok(vec![E::HistoryCleared { conversation_id }]),
            },
            C::DeliverAgentMessage { message_id, text } => {
                let text = non_blank(text).ok_or(ConversationError::InvalidInput {
                    field: "text",
                    reason: "must not be blank",
                })?;
                text::REPLY.check(&text)?;
                Ok(vec![E::AgentMessagePosted {
                    conversation_id,
                    message_id: *message_id,
                    user_id: self.user_id,
                    agent_id: self.agent_id,
                    text,
                }])
            }
        }
    }

    /// Folds one event into the state. No rules here: `decide` already checked them.
    pub fn apply(&mut self, event: &ConversationEvent) {
        use ConversationEvent as E;
        match event {
            E::ConversationStarted {
                conversation_id,
                user_id,
                agent_id,
                title,
            } => {
                *self = Conversation {
                    id: Some(*conversation_id),
                    user_id: *user_id,
                    agent_id: *agent_id,
                    title: title.clone(),
                    ..Conversation::default()
                };
            }
            E::ConversationForked {
                conversation_id,
                user_id,
                agent_id,
                title,
                origin_id,
                after,
            } => {
                *self = Conversation {
                    id: Some(*conversation_id),
                    user_id: *user_id,
                    agent_id: *agent_id,
                    title: title.clone(),
                    forked_from: Some(ForkOrigin {
                        origin_id: *origin_id,
                        after: *after,
                    }),
                    hand_over_history: true,
                    ..Conversation::default()
                };
            }
            E::ConversationRenamed { title, .. } => self.title = Some(title.clone()),
            // A post's `MessagePosted` precedes its `RunQueued` in the same commit: the first
            // keeps the text, the second places the run.
            E::MessagePosted { run_id, text, .. } => {
                self.pending_text = Some((*run_id, text.clone()));
            }
            E::RunQueued {
                run_id,
                message_id,
                position,
                ..
            } => {
                let text = match self.pending_text.take() {
                    Some((posted, text)) if posted == *run_id => text,
                    _ => String::new(),
                };
                // `min` only guards a corrupt log; decide never emits a position past the end.
                let index = (*position as usize).min(self.runs.len());
                self.runs.insert(
                    index,
                    RunSlot {
                        run_id: *run_id,
                        message_id: *message_id,
                        text,
                        worker_id: None,
                        cancel_requested: false,
                    },
                );
            }
            E::RunStarted {
                run_id, worker_id, ..
            } => {
                if let Some(run) = self.runs.iter_mut().find(|run| run.run_id == *run_id) {
                    run.worker_id = Some(worker_id.clone());
                }
            }
            E::CancelRequested { run_id, .. } => {
                if let Some(run) = self.runs.iter_mut().find(|run| run.run_id == *run_id) {
                    run.cancel_requested = true;
                }
            }
            E::RunCompleted { run_id, .. } => {
                self.runs.retain(|run| run.run_id != *run_id);
                self.hand_over_history = false;
            }
            E::RunFailed { run_id, .. } | E::RunCancelled { run_id, .. } => {
                self.runs.retain(|run| run.run_id != *run_id)
            }
            E::HistoryCleared { .. } => self.hand_over_history = false,
            E::AgentMessagePosted { .. } => {}
        }
    }

    fn post(
        &self,
        conversation_id: ConversationId,
        message_id: MessageId,
        run_id: RunId,
        text: &str,
        (client_id, client_kind): (Option<String>, Option<String>),
        mode: PostMode,
    ) -> Result<Vec<ConversationEvent>, ConversationError> {
        if text.trim().is_empty() {
            return Err(ConversationError::InvalidInput {
                field: "text",
                reason: "must not be blank",
            });
        }
        text::MESSAGE.check(text)?;
        text::CLIENT_ID.check_optional(client_id.as_deref())?;
        text::CLIENT_KIND.check_optional(client_kind.as_deref())?;
        if self.position(run_id).is_some() {
            return Err(ConversationError::DuplicateRun { run_id });
        }
        let interrupted = match mode {
            PostMode::Interrupt => self.running(),
            PostMode::Queue => None,
        };
        let remaining = self.runs.len() - usize::from(interrupted.is_some());
        if remaining >= MAX_PENDING_RUNS {
            return Err(ConversationError::QueueFull {
                limit: MAX_PENDING_RUNS,
            });
        }
        let position = match mode {
            PostMode::Interrupt => 0,
            // Bounded by MAX_PENDING_RUNS, so it always fits.
            PostMode::Queue => remaining as u32,
        };
        let mut events = vec![ConversationEvent::MessagePosted {
            conversation_id,
            message_id,
            agent_id: self.agent_id,
            user_id: self.user_id,
            text: text.to_owned(),
            client_id,
            client_kind,
            run_id,
            position,
        }];
        if let Some(running) = interrupted {
            events.push(ConversationEvent::RunCancelled {
                conversation_id,
                run_id: running.run_id,
                reason: CancelReason::Interrupted,
            });
        }
        events.push(ConversationEvent::RunQueued {
            conversation_id,
            run_id,
            message_id,
            position,
        });
        Ok(events)
    }

    fn start_run(
        &self,
        conversation_id: ConversationId,
        run_id: RunId,
        worker_id: &str,
    ) -> Result<Vec<ConversationEvent>, ConversationError> {
        let worker_id = non_blank(worker_id).ok_or(ConversationError::InvalidInput {
            field: "worker_id",
            reason: "must not be blank",
        })?;
        text::WORKER_ID.check(&worker_id)?;
        if let Some(running) = self.running() {
            return Err(ConversationError::RunInProgress {
                run_id: running.run_id,
            });
        }
        match self.next_up() {
            Some(next) if next.run_id == run_id => Ok(vec![ConversationEvent::RunStarted {
                conversation_id,
                run_id,
                worker_id,
            }]),
            Some(next) if self.position(run_id).is_some() => Err(ConversationError::RunNotNext {
                run_id,
                next: next.run_id,
            }),
            _ => Err(ConversationError::RunNotActive { run_id }),
        }
    }

    /// The slot of a running or waiting run.
    fn slot(&self, run_id: RunId) -> Result<&RunSlot, ConversationError> {
        self.runs
            .iter()
            .find(|run| run.run_id == run_id)
            .ok_or(ConversationError::RunNotActive { run_id })
    }

    fn expect_running(&self, run_id: RunId) -> Result<(), ConversationError> {
        match self.running() {
            Some(run) if run.run_id == run_id => Ok(()),
            _ => Err(ConversationError::RunNotActive { run_id }),
        }
    }
}

/// A tool call keeps the text rules: call id and name on one line, output and every string (and
/// key) of the arguments multi-line.
fn valid_tool_call(call: &ToolCall) -> Result<(), ConversationError> {
    text::CALL_ID.check(&call.call_id)?;
    text::TOOL_NAME.check(&call.name)?;
    text::TOOL_OUTPUT.check(&call.output)?;
    match text::json_violation(&call.args, Lines::Multi) {
        Some(violation) => Err(ConversationError::InvalidInput {
            field: text::TOOL_ARGS_FIELD,
            reason: violation.reason,
        }),
        None => Ok(()),
    }
}

impl_aggregate! {
    aggregate: Conversation,
    type: "conversation",
    command: ConversationCommand,
    event: ConversationEvent,
    error: ConversationError,
}
