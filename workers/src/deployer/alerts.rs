//! Sandbox alerts (issue 12 §4, docs/adr/0026-sandbox-alerts.md): what the deployer sees go
//! wrong with a sandbox and an operator must hear of becomes a `SandboxAlerted` fact on the
//! agent, which the notifier mails to admins (a failed deployment is `DeploymentFailed`
//! already, mailed the same way).
//!
//! - **Out of memory**: the provisioner's stream of out-of-memory kills (the Docker engine's
//!   `oom` events of the sandbox network's containers), watched for as long as the deployer
//!   runs; kills while it is down are not alerted.
//! - **Health failing**: a running agent whose runtime fails its health check at
//!   [`HEALTH_STRIKES`] reconciliations in a row (it is restarted after each), once per streak.

use super::{Deployer, Outcome};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use warren_domain::agent::{AgentCommand, SandboxAlert};
use warren_domain::ids::AgentId;

/// Failed health checks in a row that make an alert.
pub const HEALTH_STRIKES: u32 = 3;

/// Failed health checks in a row, per agent.
#[derive(Default)]
pub struct HealthStreaks(Mutex<HashMap<AgentId, u32>>);

impl HealthStreaks {
    /// Counts one health check; true when this one completes a streak of [`HEALTH_STRIKES`].
    pub fn checked(&self, agent_id: AgentId, healthy: bool) -> bool {
        let mut streaks = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if healthy {
            streaks.remove(&agent_id);
            return false;
        }
        let streak = streaks.entry(agent_id).or_default();
        *streak += 1;
        *streak == HEALTH_STRIKES
    }
}

impl Deployer {
    /// Records an alert; failures are logged (an alert is worth less than a retry loop).
    pub(super) async fn raise(&self, agent_id: AgentId, alert: SandboxAlert, detail: String) {
        let command = AgentCommand::RaiseSandboxAlert { alert, detail };
        match self.execute(agent_id, command).await {
            Ok(true) => tracing::warn!(%agent_id, %alert, "sandbox alert raised"),
            Ok(false) => {}
            Err(Outcome::Retry(reason)) => {
                tracing::warn!(%agent_id, %alert, reason, "recording a sandbox alert failed")
            }
        }
    }

    /// Counts a running agent's health check; the third failure in a row raises an alert.
    pub(super) async fn health_checked(&self, agent_id: AgentId, healthy: bool) {
        if self.health.checked(agent_id, healthy) {
            let detail = format!(
                "the agent's runtime failed its health check at {HEALTH_STRIKES} reconciliations \
                 in a row; the deployer restarts it each time"
            );
            self.raise(agent_id, SandboxAlert::HealthFailing, detail)
                .await;
        }
    }

    /// Alerts each out-of-memory kill the sandbox provisioner reports, until `shutdown`.
    pub(super) async fn watch_oom(&self, shutdown: CancellationToken) {
        loop {
            let Some(mut kills) = self.sandbox.oom_kills() else {
                return;
            };
            loop {
                let agent_id = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    next = kills.next() => match next {
                        Some(agent_id) => agent_id,
                        None => break,
                    },
                };
                let detail = format!(
                    "a process in the agent's {} sandbox was killed by the kernel for the \
                     sandbox's memory limit",
                    self.sandbox.kind()
                );
                self.raise(agent_id, SandboxAlert::OutOfMemory, detail)
                    .await;
            }
            // The engine's stream ended (restarted, connection lost): ask again.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_third_failure_in_a_row_alerts_once_and_a_success_starts_over() {
        let streaks = HealthStreaks::default();
        let agent = AgentId::new();
        assert!(!streaks.checked(agent, false));
        assert!(!streaks.checked(agent, false));
        assert!(streaks.checked(agent, false));
        assert!(!streaks.checked(agent, false), "once per streak");
        assert!(!streaks.checked(agent, true));
        assert!(!streaks.checked(agent, false));
        assert!(!streaks.checked(agent, false));
        assert!(streaks.checked(agent, false));
    }
}
