//! One run, from `RunStarted` to its recorded outcome: call the agent runtime, publish its live
//! deltas (tokens coalesced), watch for cancels, keep the lease fresh, and record
//! `CompleteRun`, `FailRun` or `CancelRun`. The lease is released only once the outcome is in the
//! log: a run whose outcome cannot be recorded is left to the sweepers, never left hanging.
//!
//! The runtime's text arrives escaped (`runtime`); the outcome is also fitted to the domain's
//! maxima here (the reply, failure codes and messages, which may quote a runtime's answer), so
//! the aggregate never refuses it for its text and a run is always recorded.

use super::Shared;
use super::failure::{ModelSource, public_message};
use super::lease::Held;
use super::runtime::{IDLE_TIMEOUT, Runtime, RuntimeError, RuntimeEvent};
use crate::supervise::cause_chain;
use async_nats::HeaderMap;
use futures::StreamExt;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use warren_commands::{CommandError, CommandMeta, codec, topology};
use warren_domain::Actor;
use warren_domain::agent::{AgentCommand, AgentStatus};
use warren_domain::conversation::history::Entry;
use warren_domain::conversation::{
    ConversationCommand, ConversationError, ConversationEvent, LiveDelta, RunStatus, TokenUsage,
    ToolCall,
};
use warren_domain::ids::{AgentId, ConversationId, MessageId, RunId, UserId};
use warren_domain::text;
use warren_domain::user::{ModelProtocol, Provider};

/// Tokens are published at most this often per run (DESIGN §4: 25–40 ms). A token arriving
/// after a quiet spell goes out at once; tokens arriving faster are gathered until the window
/// since the last publish closes, so coalescing adds latency only to bursts.
const COALESCE: Duration = Duration::from_millis(30);
/// Tool output kept in the log and in deltas, per call: a commit must stay well under NATS's
/// message size limit even with many calls. In bytes, so never more characters than the
/// domain's `TOOL_OUTPUT` rule allows.
pub const OUTPUT_CAP_BYTES: usize = 16 * 1024;
const _: () = assert!(OUTPUT_CAP_BYTES <= text::TOOL_OUTPUT.max_chars);
/// How often recording an outcome is tried before the run is left to the sweepers.
const RECORD_ATTEMPTS: u32 = 5;
/// How long a run waits for a runtime that says the chat is busy (409 `chat_busy`): its
/// previous run is winding down, which takes moments.
const BUSY_PATIENCE: Duration = Duration::from_secs(10);
/// How often it asks again meanwhile.
const BUSY_RETRY: Duration = Duration::from_millis(100);

/// A run this worker has started.
pub struct Job {
    /// Its conversation.
    pub conversation_id: ConversationId,
    /// The conversation's agent.
    pub agent_id: AgentId,
    /// The conversation's user (whose own provider key, if any, the model proxy uses).
    pub user_id: UserId,
    /// The run.
    pub run_id: RunId,
    /// The message it answers.
    pub text: String,
    /// The history to hand the runtime first, for a conversation it has never seen (a fork
    /// until a run completes in it, docs/adr/0027-fork.md); `None`: the runtime's own.
    pub history: Option<Vec<Entry>>,
}

/// How a run ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    Completed {
        text: String,
        usage: TokenUsage,
    },
    Failed {
        code: String,
        message: String,
        retryable: bool,
    },
    /// Stopped after a cancel request: confirm it.
    Cancelled,
    /// Already out of the queue (interrupted, or taken over): record nothing.
    Gone,
}

fn failed(code: &str, message: impl Into<String>, retryable: bool) -> Outcome {
    Outcome::Failed {
        code: code.to_owned(),
        message: message.into(),
        retryable,
    }
}

/// A retryable failure inside the platform: `public` for the client, the cause chain for the log.
fn internal(code: &str, public: &str, err: &dyn std::error::Error) -> Outcome {
    tracing::warn!(code, error = cause_chain(err), "{public}");
    failed(code, public, true)
}

/// Cuts `text` to at most `cap` bytes on a character boundary.
fn bounded(mut text: String, cap: usize) -> String {
    if text.len() > cap {
        let mut end = cap;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// What the run has seen so far.
#[derive(Default)]
struct Progress {
    /// Token text not yet published, when it is due, and when tokens were last published.
    pending: String,
    flush_at: Option<tokio::time::Instant>,
    last_flush: Option<tokio::time::Instant>,
    /// Whether the current model turn streamed tokens (else its `text` is published whole).
    turn_streamed: bool,
    turns: Vec<String>,
    tool_calls: Vec<ToolCall>,
    status: Option<RunStatus>,
    /// When the run started, until its first token is counted (`time_to_first_token`).
    started: Option<Instant>,
}

impl Progress {
    /// Records the time to the first token, once.
    fn first_token(&mut self) {
        if let Some(started) = self.started.take() {
            warren_commands::metrics::global()
                .time_to_first_token
                .observe(started.elapsed().as_secs_f64());
        }
    }
}

/// Runs the job to its recorded outcome, then releases the lease.
#[tracing::instrument(name = "run", skip_all, fields(run_id = %job.run_id, conversation_id = %job.conversation_id))]
pub async fn run(
    shared: &Shared,
    job: Job,
    mut held: Held,
    mut signals: async_nats::Subscriber,
    shutdown: CancellationToken,
) {
    let started = Instant::now();
    let metrics = warren_commands::metrics::global();
    metrics.runs_started.inc();
    let live = Live {
        shared,
        subject: topology::conversation_live_subject(&job.conversation_id.to_string()),
        run_id: job.run_id,
    };
    let mut progress = Progress {
        started: Some(started),
        ..Progress::default()
    };
    // The lease is beaten for the whole run, whatever it waits on (loading a long-lived user
    // from the log, a runtime slow to answer): a stale lease makes a sweeper take the run for
    // lost while it is alive.
    let mut beat = tokio::time::interval(shared.settings.lease_beat);
    beat.tick().await;
    let resolved = beating(
        shared,
        &job,
        &mut held,
        &shutdown,
        &mut beat,
        resolve(shared, job.agent_id, job.user_id),
    )
    .await
    .and_then(|resolved| resolved);
    // The run's model and provider, for its usage fact: the agent's model, served through the
    // owner's own key if they have one, else the platform's.
    let mut served: (Option<String>, Option<Provider>) = (None, None);
    let outcome = match resolved {
        Err(outcome) => outcome,
        Ok(Resolved {
            runtime,
            own_key,
            model,
        }) => {
            served = (Some(model), own_key.or(shared.settings.platform_provider));
            live.status(&mut progress, RunStatus::Thinking).await;
            let outcome = drive(
                shared,
                &job,
                &runtime,
                own_key.map(Provider::protocol),
                &live,
                &mut progress,
                &mut held,
                &mut beat,
                &mut signals,
                &shutdown,
            )
            .await;
            if matches!(&outcome, Outcome::Failed { code, .. } if code.starts_with("runtime_"))
                && !runtime.healthy().await
            {
                report_agent_failure(shared, job.agent_id).await;
            }
            let source = match own_key {
                Some(provider) => ModelSource::UserKey(provider),
                None => ModelSource::Platform(shared.settings.platform_provider),
            };
            match outcome {
                Outcome::Failed {
                    code,
                    message,
                    retryable,
                } => Outcome::Failed {
                    message: public_message(&code, message, source),
                    code,
                    retryable,
                },
                other => other,
            }
        }
    };
    live.flush(&mut progress).await;
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    metrics.run_finished(match &outcome {
        Outcome::Completed { .. } => "completed",
        Outcome::Failed { .. } => "failed",
        Outcome::Cancelled => "cancelled",
        Outcome::Gone => "gone",
    });
    let command = match outcome {
        Outcome::Completed { text, usage } => Some(ConversationCommand::CompleteRun {
            run_id: job.run_id,
            reply_id: MessageId::new(),
            text: text::REPLY.fit(&text),
            tool_calls: progress.tool_calls,
            usage,
            duration_ms,
            model: served.0.map(|model| text::MODEL.fit(&model)),
            provider: served.1,
        }),
        Outcome::Failed {
            code,
            message,
            retryable,
        } => {
            let code = text::FAILURE_CODE.fit(&code);
            let message = text::FAILURE_MESSAGE.fit(&message);
            tracing::warn!(conversation_id = %job.conversation_id, run_id = %job.run_id, code, message, "run failed");
            Some(ConversationCommand::FailRun {
                run_id: job.run_id,
                code,
                message,
                retryable,
            })
        }
        Outcome::Cancelled => Some(ConversationCommand::CancelRun { run_id: job.run_id }),
        Outcome::Gone => None,
    };
    if let Some(command) = command
        && !record(shared, job.conversation_id, command).await
    {
        // Keep the lease: it goes stale, and a sweeper closes the run.
        return;
    }
    if let Err(err) = shared.leases.release(held).await {
        tracing::warn!(run_id = %job.run_id, error = %err, "releasing the run lease failed");
    }
    // What the agent queued during the run (a background result, a reminder due now).
    shared.watched.ran(job.agent_id);
    super::pending::collect(shared, job.agent_id).await;
}

/// Marks the agent failed (its runtime is gone), so its owner sees it and can repair it.
async fn report_agent_failure(shared: &Shared, agent_id: AgentId) {
    let meta = CommandMeta::new(Actor::System(shared.worker_id.clone()));
    let command = AgentCommand::ReportAgentFailure {
        error: "the agent runtime stopped answering during a run".to_owned(),
    };
    match shared
        .commands
        .agents
        .execute(&agent_id.to_string(), command, &meta)
        .await
    {
        Ok(_) => tracing::warn!(%agent_id, "agent runtime is gone, agent marked failed"),
        // No longer running (stopped, redeploying, failed already): nothing to report.
        Err(CommandError::Rejected(_)) => {}
        Err(err) => tracing::warn!(%agent_id, error = %err, "reporting the agent failure failed"),
    }
}

/// The agent's runtime, if the agent is running and has an endpoint and a token, and the
/// provider of the user's own key if they added one (the most recent, which the model proxy
/// uses; else the platform's default).
async fn resolve(shared: &Shared, agent_id: AgentId, user_id: UserId) -> Result<Resolved, Outcome> {
    let (agent, _) = shared
        .commands
        .agents
        .load(&agent_id.to_string())
        .await
        .map_err(|err| internal("log_unavailable", "the platform's log is unavailable", &err))?;
    let endpoint = match (&agent.status, &agent.endpoint_url) {
        // Paused too: a run taken as the deployer paused the agent holds it awake, and the
        // deployer takes the pause back (docs/adr/0024).
        (AgentStatus::Running | AgentStatus::Paused, Some(endpoint)) => endpoint.clone(),
        (status, _) => {
            return Err(failed(
                "agent_unavailable",
                format!("the agent is not running (it is {status})"),
                true,
            ));
        }
    };
    let token = shared
        .tokens
        .get(agent_id)
        .await
        .map_err(|err| {
            internal(
                "agent_unavailable",
                "the agent's token cannot be read",
                &err,
            )
        })?
        .ok_or_else(|| failed("agent_unavailable", "the agent has no token", true))?;
    let own_key = own_key(shared, user_id).await?;
    Ok(Resolved {
        runtime: Runtime::new(shared.http.clone(), &endpoint, token),
        own_key,
        model: agent.model.clone(),
    })
}

/// What a run needs of its agent: the runtime, the provider of the owner's own key if any, and
/// the agent's model (recorded with the run's usage).
struct Resolved {
    runtime: Runtime,
    own_key: Option<Provider>,
    model: String,
}

/// The provider of the user's most recently added key, the one the model proxy calls (the
/// key itself stays with the proxy: ADR 23).
async fn own_key(shared: &Shared, user_id: UserId) -> Result<Option<Provider>, Outcome> {
    let (user, _) = shared
        .commands
        .users
        .load(&user_id.to_string())
        .await
        .map_err(|err| internal("log_unavailable", "the platform's log is unavailable", &err))?;
    Ok(user.provider_keys.last().map(|key| key.provider))
}

/// Reads the runtime's stream until the run ends.
#[allow(clippy::too_many_arguments)]
async fn drive(
    shared: &Shared,
    job: &Job,
    runtime: &Runtime,
    protocol: Option<ModelProtocol>,
    live: &Live<'_>,
    progress: &mut Progress,
    held: &mut Held,
    beat: &mut tokio::time::Interval,
    signals: &mut async_nats::Subscriber,
    shutdown: &CancellationToken,
) -> Outcome {
    let chat_id = job.conversation_id.to_string();
    let asked = tokio::time::Instant::now();
    let events = loop {
        let opening = runtime.chat(&chat_id, &job.text, protocol, job.history.as_deref());
        let opened = match beating(shared, job, held, shutdown, beat, opening).await {
            Ok(opened) => opened,
            Err(outcome) => return outcome,
        };
        match opened {
            Ok(events) => break events,
            // The chat's previous run (cancelled, or interrupted by this message) is still
            // winding down in the runtime, which frees the chat when it has recorded it.
            Err(RuntimeError::Status { status: 409, .. }) if asked.elapsed() < BUSY_PATIENCE => {
                tokio::time::sleep(BUSY_RETRY).await;
            }
            Err(err) => {
                return internal(
                    "runtime_unavailable",
                    "the agent runtime could not be reached",
                    &err,
                );
            }
        }
    };
    let mut events = std::pin::pin!(events);
    let mut cancel_asked = false;
    let mut interrupted = false;
    loop {
        let flush_at = progress.flush_at;
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                return failed("worker_stopped", "the chat worker stopped during the run", true);
            }
            Some(signal) = signals.next() => {
                let Some(kind) = cancel_signal(&signal.payload, job.run_id) else { continue };
                interrupted |= kind == Signal::Gone;
                if !cancel_asked {
                    cancel_asked = true;
                    if let Err(err) = runtime.cancel(&chat_id).await {
                        // A baal-agent has no cancel route: dropping the stream stops it.
                        tracing::info!(run_id = %job.run_id, error = %err, "runtime cancel failed, closing the stream");
                        return if interrupted { Outcome::Gone } else { Outcome::Cancelled };
                    }
                }
            }
            _ = beat.tick() => {
                if let Err(err) = shared.leases.beat(held).await {
                    tracing::warn!(run_id = %job.run_id, error = %err, "lost the run lease, abandoning the run");
                    return Outcome::Gone;
                }
            }
            _ = sleep_until(flush_at) => live.flush(progress).await,
            next = tokio::time::timeout(IDLE_TIMEOUT, events.next()) => {
                let event = match next {
                    Err(_) => return failed("runtime_stream_broken", "the agent runtime went silent", true),
                    Ok(None) => return failed("runtime_stream_broken", "the agent runtime closed the stream before the run ended", true),
                    Ok(Some(Err(err))) => return internal("runtime_stream_broken", "the agent runtime's stream broke off", &err),
                    Ok(Some(Ok(event))) => event,
                };
                if let Some(outcome) = live.handle(progress, event).await {
                    return match outcome {
                        Outcome::Failed { code, .. } if code == "cancelled" && interrupted => Outcome::Gone,
                        Outcome::Failed { code, .. } if code == "cancelled" => Outcome::Cancelled,
                        other => other,
                    };
                }
            }
        }
    }
}

/// Awaits `work` while beating the run's lease every tick of `beat`; the run's outcome instead
/// if the worker stops or the lease was taken over meanwhile.
async fn beating<T>(
    shared: &Shared,
    job: &Job,
    held: &mut Held,
    shutdown: &CancellationToken,
    beat: &mut tokio::time::Interval,
    work: impl Future<Output = T>,
) -> Result<T, Outcome> {
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                return Err(failed("worker_stopped", "the chat worker stopped during the run", true));
            }
            _ = beat.tick() => {
                if let Err(err) = shared.leases.beat(held).await {
                    tracing::warn!(run_id = %job.run_id, error = %err, "lost the run lease, abandoning the run");
                    return Err(Outcome::Gone);
                }
            }
            done = &mut work => return Ok(done),
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[derive(Debug, PartialEq)]
enum Signal {
    /// `CancelRequested`: stop and confirm.
    Cancel,
    /// `RunCancelled`: already out of the queue (interrupt).
    Gone,
}

/// Whether a commit on the conversation asks this run to stop.
fn cancel_signal(payload: &[u8], run_id: RunId) -> Option<Signal> {
    let envelopes = codec::decode::<ConversationEvent>(payload).ok()?;
    envelopes.iter().find_map(|envelope| match &envelope.event {
        ConversationEvent::CancelRequested { run_id: r, .. } if *r == run_id => {
            Some(Signal::Cancel)
        }
        ConversationEvent::RunCancelled { run_id: r, .. } if *r == run_id => Some(Signal::Gone),
        _ => None,
    })
}

/// Publishes one run's live deltas to `conv.<id>.live`.
struct Live<'a> {
    shared: &'a Shared,
    subject: String,
    run_id: RunId,
}

/// Publishes one live delta to `subject` (`conv.<id>.live`) with the live TTL.
pub(super) async fn publish_delta(shared: &Shared, subject: &str, delta: &LiveDelta) {
    let payload = match serde_json::to_vec(delta) {
        Ok(payload) => payload,
        Err(err) => {
            tracing::error!(error = %err, "a live delta does not serialize");
            return;
        }
    };
    let mut headers = HeaderMap::new();
    headers.insert("Nats-TTL", shared.settings.live_ttl_header.as_str());
    // Awaiting each ack keeps deltas ordered before the run's outcome in the stream.
    let result = match shared
        .js
        .publish_with_headers(subject.to_owned(), headers, payload.into())
        .await
    {
        Ok(ack) => ack.await.map(|_| ()).map_err(|err| err.to_string()),
        Err(err) => Err(err.to_string()),
    };
    if let Err(err) = result {
        // Deltas are a live view; the outcome event carries everything durable.
        tracing::warn!(subject, error = err, "publishing a live delta failed");
    }
}

impl Live<'_> {
    async fn publish(&self, delta: LiveDelta) {
        publish_delta(self.shared, &self.subject, &delta).await;
    }

    async fn status(&self, progress: &mut Progress, status: RunStatus) {
        if progress.status != Some(status) {
            progress.status = Some(status);
            self.publish(LiveDelta::Status {
                run_id: self.run_id,
                status,
            })
            .await;
        }
    }

    async fn flush(&self, progress: &mut Progress) {
        progress.flush_at = None;
        if progress.pending.is_empty() {
            return;
        }
        progress.last_flush = Some(tokio::time::Instant::now());
        let text = std::mem::take(&mut progress.pending);
        self.publish(LiveDelta::Token {
            run_id: self.run_id,
            text,
        })
        .await;
    }

    /// Applies one runtime event; `Some` when it ends the run.
    async fn handle(&self, progress: &mut Progress, event: RuntimeEvent) -> Option<Outcome> {
        if !matches!(event, RuntimeEvent::Token(_)) {
            self.flush(progress).await;
        }
        match event {
            RuntimeEvent::Token(delta) => {
                progress.first_token();
                if !progress.turn_streamed {
                    progress.turn_streamed = true;
                    self.status(progress, RunStatus::Streaming).await;
                }
                progress.pending.push_str(&delta);
                if progress.flush_at.is_none() {
                    let now = tokio::time::Instant::now();
                    match progress.last_flush.map(|last| last + COALESCE) {
                        Some(due) if due > now => progress.flush_at = Some(due),
                        _ => self.flush(progress).await,
                    }
                }
            }
            RuntimeEvent::Text(content) => {
                if !content.is_empty() {
                    progress.first_token();
                }
                if !progress.turn_streamed && !content.is_empty() {
                    // A baal-agent turn: its text arrives whole.
                    self.status(progress, RunStatus::Streaming).await;
                    self.publish(LiveDelta::Token {
                        run_id: self.run_id,
                        text: content.clone(),
                    })
                    .await;
                }
                progress.turn_streamed = false;
                progress.turns.push(content);
            }
            RuntimeEvent::ToolUse {
                call_id,
                name,
                input,
            } => {
                progress.turn_streamed = false;
                let call_id =
                    call_id.unwrap_or_else(|| format!("call_{}", progress.tool_calls.len() + 1));
                self.status(progress, RunStatus::ExecutingTool).await;
                self.publish(LiveDelta::ToolCall {
                    run_id: self.run_id,
                    call_id: call_id.clone(),
                    name: name.clone(),
                    args: input.clone(),
                })
                .await;
                progress.tool_calls.push(ToolCall {
                    call_id,
                    name,
                    args: input,
                    output: String::new(),
                    ok: true,
                });
            }
            RuntimeEvent::ToolResult {
                call_id,
                ok,
                output,
            } => {
                let output = bounded(output, OUTPUT_CAP_BYTES);
                self.publish(LiveDelta::ToolResult {
                    run_id: self.run_id,
                    call_id: call_id.clone(),
                    ok,
                    output: output.clone(),
                })
                .await;
                if let Some(call) = progress
                    .tool_calls
                    .iter_mut()
                    .find(|call| call.call_id == call_id)
                {
                    call.ok = ok;
                    call.output = output;
                }
                self.status(progress, RunStatus::Thinking).await;
            }
            RuntimeEvent::File { path, size } => {
                self.publish(LiveDelta::File {
                    run_id: self.run_id,
                    path,
                    size,
                })
                .await;
            }
            RuntimeEvent::Done { text, usage } => {
                let text = text.unwrap_or_else(|| {
                    let turns: Vec<&str> = progress
                        .turns
                        .iter()
                        .map(String::as_str)
                        .filter(|t| !t.is_empty())
                        .collect();
                    turns.join("\n\n")
                });
                return Some(Outcome::Completed { text, usage });
            }
            RuntimeEvent::Error {
                code,
                message,
                retryable,
            } => {
                return Some(Outcome::Failed {
                    code,
                    message,
                    retryable,
                });
            }
        }
        None
    }
}

/// Records the run's outcome; `false` if the log could not be reached in time.
async fn record(
    shared: &Shared,
    conversation_id: ConversationId,
    command: ConversationCommand,
) -> bool {
    let meta = CommandMeta::new(Actor::System(shared.worker_id.clone()));
    for attempt in 1..=RECORD_ATTEMPTS {
        match shared
            .commands
            .conversations
            .execute(&conversation_id.to_string(), command.clone(), &meta)
            .await
        {
            Ok(_) => return true,
            // Cancelled or taken over meanwhile: nothing to record.
            Err(CommandError::Rejected(ConversationError::RunNotActive { .. })) => return true,
            Err(CommandError::Rejected(other)) => {
                tracing::error!(%conversation_id, error = %other, "run outcome refused");
                return true;
            }
            Err(err) => {
                tracing::warn!(%conversation_id, attempt, error = %err, "recording the run outcome failed, retrying");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_bounded_on_a_character_boundary() {
        assert_eq!(bounded("héllo".into(), 2), "h");
        assert_eq!(bounded("hello".into(), 10), "hello");
    }
}
