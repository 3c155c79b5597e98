//! Waking a paused agent for a run (docs/adr/0024-idle-pause-and-capacity.md).
//!
//! The run waits still queued, under its lease, which is beaten meanwhile (so no sweeper takes
//! it, and its agent stays stamped as in use). While the platform has no room for one more
//! awake sandbox (`WARREN_MAX_SANDBOXES`), every client of the conversation is told
//! `at_capacity`; once there is room the worker records `ResumeAgent`, says `resuming`, and the
//! run starts when the runtime answers `/health` (or after [`RESUME_TIMEOUT`], and then fails as
//! any run on a dead runtime does). A cancel ends the wait; a worker that stops keeps the lease,
//! which goes stale, and another replica's sweeper takes the run from the queue again: nothing
//! is lost.

use super::Shared;
use super::lease::Held;
use super::run::{Job, publish_delta};
use futures::StreamExt;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use warren_commands::{CommandError, CommandMeta, codec, topology};
use warren_domain::Actor;
use warren_domain::agent::{AgentCommand, AgentStatus};
use warren_domain::conversation::{ConversationEvent, LiveDelta, RunStatus};
use warren_projections::capacity::Room;

/// How often a run waiting for room looks again.
const CAPACITY_POLL: Duration = Duration::from_secs(1);
/// How often a resuming runtime is asked whether it answers.
const HEALTH_POLL: Duration = Duration::from_millis(200);
/// How long a resumed runtime may take to answer before the run starts anyway.
pub const RESUME_TIMEOUT: Duration = Duration::from_secs(60);

/// How a wait ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Woken {
    /// Start the run: the agent is awake (or no longer paused at all, and the run will say so).
    Ready,
    /// The run was cancelled: give up the lease.
    Cancelled,
    /// The lease was lost or the worker is stopping: leave the run to whoever holds it next.
    Abandoned,
}

/// Where the wait is.
enum Phase {
    /// The agent is paused: resume it when there is room.
    Asleep,
    /// `ResumeAgent` is recorded: wait for the runtime to answer.
    Resuming(Instant),
}

/// Waits until `job`'s paused agent is awake.
pub async fn until_awake(
    shared: &Shared,
    job: &Job,
    held: &mut Held,
    signals: &mut async_nats::Subscriber,
    shutdown: &CancellationToken,
) -> Woken {
    let mut said = None;
    let mut phase = Phase::Asleep;
    let mut beat = tokio::time::interval(shared.settings.lease_beat);
    beat.tick().await;
    let mut due = Instant::now();
    loop {
        if Instant::now() >= due {
            let next = match phase {
                Phase::Asleep => match asleep(shared, job).await {
                    Asleep::Resuming => {
                        phase = Phase::Resuming(Instant::now());
                        say(shared, job, &mut said, RunStatus::Resuming).await;
                        Duration::ZERO
                    }
                    Asleep::Full => {
                        say(shared, job, &mut said, RunStatus::AtCapacity).await;
                        CAPACITY_POLL
                    }
                    Asleep::Other => return Woken::Ready,
                    Asleep::Later => CAPACITY_POLL,
                },
                Phase::Resuming(since) => {
                    if answers(shared, job).await {
                        tracing::info!(conversation_id = %job.conversation_id, agent_id = %job.agent_id, "the agent is awake: starting the run");
                        return Woken::Ready;
                    }
                    if since.elapsed() >= RESUME_TIMEOUT {
                        tracing::warn!(agent_id = %job.agent_id, "the resumed agent does not answer: starting the run anyway");
                        return Woken::Ready;
                    }
                    HEALTH_POLL
                }
            };
            due = Instant::now() + next;
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Woken::Abandoned,
            Some(signal) = signals.next() => {
                if cancelled(&signal.payload, job) {
                    return Woken::Cancelled;
                }
            }
            _ = beat.tick() => {
                if let Err(err) = shared.leases.beat(held).await {
                    tracing::warn!(run_id = %job.run_id, error = %err, "lost the run lease while waking its agent");
                    return Woken::Abandoned;
                }
            }
            _ = tokio::time::sleep_until(due) => {}
        }
    }
}

/// What one look at a paused agent came to.
enum Asleep {
    /// It is being resumed (by this worker now, or by someone else already).
    Resuming,
    /// No room: wait.
    Full,
    /// Neither paused nor running (stopped, failed, deleted, redeploying): the run says so.
    Other,
    /// The log or the read models did not answer: look again later.
    Later,
}

async fn asleep(shared: &Shared, job: &Job) -> Asleep {
    let agent = match shared.commands.agents.load(&job.agent_id.to_string()).await {
        Ok((agent, _)) => agent,
        Err(err) => {
            tracing::warn!(agent_id = %job.agent_id, error = %err, "reading the agent failed");
            return Asleep::Later;
        }
    };
    match agent.status {
        AgentStatus::Running => return Asleep::Resuming,
        AgentStatus::Paused => {}
        _ => return Asleep::Other,
    }
    match shared.capacity.room().await {
        Ok(Room::Free) => {}
        Ok(Room::Full { awake, max }) => {
            tracing::info!(agent_id = %job.agent_id, awake, max, "no room to resume the agent: the run waits");
            return Asleep::Full;
        }
        Err(err) => {
            tracing::warn!(error = %err, "counting the awake sandboxes failed");
            return Asleep::Later;
        }
    }
    let meta = CommandMeta::new(Actor::System(shared.worker_id.clone()));
    match shared
        .commands
        .agents
        .execute(&job.agent_id.to_string(), AgentCommand::ResumeAgent, &meta)
        .await
    {
        Ok(_) => {
            tracing::info!(agent_id = %job.agent_id, conversation_id = %job.conversation_id, "resuming the paused agent for a message");
            Asleep::Resuming
        }
        // It moved on meanwhile (stopped, redeployed): look again.
        Err(CommandError::Rejected(_)) => Asleep::Later,
        Err(err) => {
            tracing::warn!(agent_id = %job.agent_id, error = %err, "recording ResumeAgent failed");
            Asleep::Later
        }
    }
}

/// Tells every client of the conversation what the run waits for (each state once).
async fn say(shared: &Shared, job: &Job, said: &mut Option<RunStatus>, status: RunStatus) {
    if *said == Some(status) {
        return;
    }
    *said = Some(status);
    let subject = topology::conversation_live_subject(&job.conversation_id.to_string());
    let delta = LiveDelta::Status {
        run_id: job.run_id,
        status,
    };
    publish_delta(shared, &subject, &delta).await;
}

/// Whether the agent's runtime answers `/health`.
async fn answers(shared: &Shared, job: &Job) -> bool {
    let Ok((agent, _)) = shared.commands.agents.load(&job.agent_id.to_string()).await else {
        return false;
    };
    let Some(endpoint) = agent.endpoint_url else {
        return false;
    };
    shared
        .http
        .get(format!("{}/health", endpoint.trim_end_matches('/')))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|response| response.status().is_success())
}

/// Whether a commit of the conversation took the run out of the queue.
fn cancelled(payload: &[u8], job: &Job) -> bool {
    codec::decode::<ConversationEvent>(payload).is_ok_and(|envelopes| {
        envelopes.iter().any(|envelope| {
            matches!(&envelope.event, ConversationEvent::RunCancelled { run_id, .. } if *run_id == job.run_id)
        })
    })
}
