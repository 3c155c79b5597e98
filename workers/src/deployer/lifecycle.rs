//! The deployer's part in agents' lifecycle (docs/adr/0024-idle-pause-and-capacity.md):
//! freezing a paused agent's runtime and thawing a resumed one, pausing agents left idle, and
//! recording what each sandbox uses.
//!
//! The idle clock is the later of the agent's last commit in the log (deployed, resumed,
//! started, an exec, …) and its stamp in `agent_activity`, which the chat worker writes when it
//! takes one of the agent's runs, at every beat of that run's lease and when the run ends. An
//! agent is paused only under its lock, in two reads around the `PauseAgent` commit: a chat
//! worker stamps the agent *before* it reads the agent's status, so one that saw it running
//! changed the stamp before the pause was committed, and the pause is taken back
//! (`ResumeAgent`) instead of freezing a runtime in the middle of a run. One that saw it paused
//! resumes it itself.

use super::provisioner::{ActualState, Provisioner};
use super::{Deployer, Outcome};
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use warren_commands::sandboxes::{SandboxState, SandboxStats, Stamp};
use warren_commands::topology;
use warren_domain::agent::{AgentCommand, AgentStatus};
use warren_domain::ids::AgentId;

/// How recently a stamp must have been written for a paused agent's runtime to count as still
/// in use (and not be frozen yet) when idle pauses are off: anything a chat worker holds is
/// stamped far more often.
const IN_USE_WITHOUT_IDLE_PAUSE: Duration = Duration::from_secs(60);

fn retry(err: impl std::fmt::Display) -> Outcome {
    Outcome::Retry(err.to_string())
}

impl Deployer {
    /// `AgentPaused`: freezes the runtime if the agent is still paused and nobody is using it.
    pub(super) async fn on_paused(&self, agent_id: AgentId) -> Result<(), Outcome> {
        let agent = self.load(agent_id).await?;
        if agent.status != AgentStatus::Paused {
            return Ok(());
        }
        if let Some((provisioner, actual)) = self.holder(agent_id).await
            && actual.state == ActualState::Running
        {
            self.freeze_unless_used(agent_id, provisioner.as_ref())
                .await?;
        }
        Ok(())
    }

    /// `AgentResumed`: thaws the runtime if the agent is running (starting it again when it is
    /// stopped or gone) and waits until it answers.
    pub(super) async fn on_resumed(&self, agent_id: AgentId) -> Result<(), Outcome> {
        let agent = self.load(agent_id).await?;
        if agent.status != AgentStatus::Running {
            return Ok(());
        }
        match self.holder(agent_id).await {
            Some((provisioner, actual)) if actual.state == ActualState::Paused => {
                if let Err(err) = provisioner.resume(agent_id).await {
                    tracing::warn!(%agent_id, error = %err, "resuming the runtime failed: restarting it");
                    self.restart(agent_id, &agent).await;
                } else if self.wait_healthy(provisioner.as_ref(), agent_id).await {
                    tracing::info!(%agent_id, "agent runtime resumed");
                } else {
                    tracing::warn!(%agent_id, "resumed agent does not answer /health");
                }
            }
            Some((_, actual)) if actual.state == ActualState::Running => {}
            _ => {
                tracing::info!(%agent_id, "resumed agent has no live runtime: starting it");
                self.restart(agent_id, &agent).await;
            }
        }
        Ok(())
    }

    /// A paused agent's running runtime (the reconciler found it, or `AgentPaused` was
    /// handled): freezes it, unless a chat worker stamped the agent within the idle time (a run
    /// taken just before the pause: it finishes first, and a later pass freezes it).
    pub(super) async fn freeze_unless_used(
        &self,
        agent_id: AgentId,
        provisioner: &dyn Provisioner,
    ) -> Result<(), Outcome> {
        let window = self
            .settings
            .idle_pause
            .unwrap_or(IN_USE_WITHOUT_IDLE_PAUSE);
        let stamp = self.activity.last(agent_id).await.map_err(retry)?;
        if stamp.is_some_and(|stamp| age(stamp.at) < window) {
            tracing::debug!(%agent_id, "paused agent still in use: not freezing it yet");
            return Ok(());
        }
        self.freeze(agent_id, provisioner).await;
        Ok(())
    }

    async fn freeze(&self, agent_id: AgentId, provisioner: &dyn Provisioner) {
        match provisioner.pause(agent_id).await {
            Ok(()) => {
                tracing::info!(%agent_id, sandbox = provisioner.kind(), "agent runtime paused")
            }
            Err(err) => tracing::warn!(%agent_id, error = %err, "pausing the runtime failed"),
        }
    }

    /// Pauses a running agent unused for `idle_pause` (called by the reconciler, under the
    /// agent's lock, once its runtime answered).
    pub(super) async fn pause_if_idle(
        &self,
        agent_id: AgentId,
        provisioner: &dyn Provisioner,
    ) -> Result<(), Outcome> {
        let Some(idle) = self.settings.idle_pause else {
            return Ok(());
        };
        let before: Option<Stamp> = self.activity.last(agent_id).await.map_err(retry)?;
        let committed = self.last_commit_at(agent_id).await?;
        let Some(used) = before
            .map(|stamp| stamp.at)
            .into_iter()
            .chain(committed)
            .max()
        else {
            return Ok(());
        };
        if age(used) < idle {
            return Ok(());
        }
        if !self.execute(agent_id, AgentCommand::PauseAgent).await? {
            return Ok(());
        }
        let after = self.activity.last(agent_id).await.map_err(retry)?;
        if after.map(|stamp| stamp.revision) != before.map(|stamp| stamp.revision) {
            tracing::info!(%agent_id, "the agent was used while it was being paused: resuming it");
            self.execute(agent_id, AgentCommand::ResumeAgent).await?;
            return Ok(());
        }
        tracing::info!(%agent_id, idle_secs = age(used).as_secs(), "agent idle: pausing it");
        self.freeze(agent_id, provisioner).await;
        Ok(())
    }

    /// When the agent's last commit was appended (the NATS server's time).
    async fn last_commit_at(&self, agent_id: AgentId) -> Result<Option<DateTime<Utc>>, Outcome> {
        let stream = self
            .js
            .get_stream_no_info(topology::AGENTS)
            .await
            .map_err(retry)?;
        let last = stream
            .get_last_raw_message_by_subject(&topology::agent_subject(&agent_id.to_string()))
            .await
            .map_err(retry)?;
        Ok(i64::try_from(last.time.unix_timestamp_nanos())
            .ok()
            .map(DateTime::from_timestamp_nanos))
    }

    /// Records what each runtime uses now, for the agents' status (best effort: a failure is
    /// logged and the next pass tries again).
    pub(super) async fn record_usage(&self) {
        let sampled_at = Utc::now();
        let now = Instant::now();
        let mut seen = HashSet::new();
        for provisioner in &self.provisioners {
            let (actual, usage) = match tokio::join!(provisioner.actual(), provisioner.usage()) {
                (Ok(actual), Ok(usage)) => (actual, usage),
                (Err(err), _) | (_, Err(err)) => {
                    tracing::warn!(sandbox = provisioner.kind(), error = %err, "measuring runtimes failed");
                    continue;
                }
            };
            let metrics = warren_commands::metrics::global();
            for (state, name) in [
                (ActualState::Running, "running"),
                (ActualState::Paused, "paused"),
                (ActualState::Stopped, "stopped"),
            ] {
                let count = actual.iter().filter(|r| r.state == state).count();
                metrics.set_sandboxes(provisioner.kind(), name, count as i64);
            }
            for runtime in actual {
                // An agent found by two provisioners is the first one's (as the reconciler has it).
                if !seen.insert(runtime.agent_id) {
                    continue;
                }
                let used = usage.get(&runtime.agent_id).cloned().unwrap_or_default();
                let stats = SandboxStats {
                    state: match runtime.state {
                        ActualState::Running => SandboxState::Running,
                        ActualState::Paused => SandboxState::Paused,
                        ActualState::Stopped => SandboxState::Stopped,
                    },
                    cpu_percent: self.cpu.percent(runtime.agent_id, &used, now),
                    started_at: used.started_at,
                    memory_bytes: used.memory_bytes,
                    disk_bytes: used.disk_bytes,
                    sampled_at,
                };
                if let Err(err) = self.stats.put(runtime.agent_id, &stats).await {
                    tracing::warn!(agent_id = %runtime.agent_id, error = %err, "recording a sandbox's use failed");
                }
            }
        }
        self.cpu.retain(&seen);
    }

    /// Forgets what the agent's sandbox used (it is destroyed).
    pub(super) async fn forget_usage(&self, agent_id: AgentId) {
        if let Err(err) = self.stats.remove(agent_id).await {
            tracing::warn!(%agent_id, error = %err, "forgetting a sandbox's use failed");
        }
    }
}

/// How long ago `at` was (zero if it is in the future: another host's clock).
fn age(at: DateTime<Utc>) -> Duration {
    (Utc::now() - at).to_std().unwrap_or_default()
}
