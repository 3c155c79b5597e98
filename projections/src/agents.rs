//! Agents and their deployment history.

use crate::Projection;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;
use warren_commands::topology;
use warren_domain::agent::AgentEvent;
use warren_domain::{Authority, Envelope};

/// The agents projection.
pub struct Agents;

impl Projection for Agents {
    const NAME: &'static str = "agents";
    const STREAM: &'static str = topology::AGENTS;
    const FILTER: &'static str = "agent.*";
    type Event = AgentEvent;

    fn authority(event: &AgentEvent) -> Authority {
        event.authority()
    }

    async fn subject(
        tx: &mut PgConnection,
        envelope: &Envelope<AgentEvent>,
    ) -> Result<Option<Uuid>, sqlx::Error> {
        // The row's owner wins over what the event says: only a creation names its owner.
        let Ok(agent_id) = envelope.aggregate_id.parse::<Uuid>() else {
            return Ok(None);
        };
        let stored: Option<Uuid> = sqlx::query_scalar("SELECT owner_id FROM agents WHERE id = $1")
            .bind(agent_id)
            .fetch_optional(&mut *tx)
            .await?;
        Ok(stored.or_else(|| envelope.event.owner().map(|owner| owner.0)))
    }

    async fn apply(
        tx: &mut PgConnection,
        seq: u64,
        envelope: &Envelope<AgentEvent>,
    ) -> Result<(), sqlx::Error> {
        let at = envelope.occurred_at;
        let seq = seq as i64;
        let event_id = envelope.id.0;
        match &envelope.event {
            AgentEvent::AgentCreated { agent_id, owner_id, name, system_prompt, model, runtime, backend, .. } => {
                sqlx::query(
                    "INSERT INTO agents (id, owner_id, name, system_prompt, model, runtime, backend, status, \
                     created_at, updated_at, last_seq) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $8, $9) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(agent_id.0)
                .bind(owner_id.0)
                .bind(name)
                .bind(system_prompt)
                .bind(model)
                .bind(runtime.as_str())
                .bind(backend.as_str())
                .bind(at)
                .bind(seq)
                .execute(&mut *tx)
                .await
                .map(drop)
            }
            AgentEvent::AgentConfigUpdated { agent_id, name, system_prompt, model } => sqlx::query(
                "UPDATE agents SET name = $2, system_prompt = $3, model = $4, updated_at = $5, last_seq = $6 \
                 WHERE id = $1 AND last_seq <= $6",
            )
            .bind(agent_id.0)
            .bind(name)
            .bind(system_prompt)
            .bind(model)
            .bind(at)
            .bind(seq)
            .execute(&mut *tx)
            .await
            .map(drop),
            AgentEvent::DeploymentRequested { agent_id, deployment_id }
            | AgentEvent::RepairRequested { agent_id, deployment_id }
            | AgentEvent::RedeployRequested { agent_id, deployment_id, .. } => {
                sqlx::query(
                    "UPDATE agents SET status = 'deploying', deployment_id = $2, current_step = NULL, \
                     last_error = NULL, updated_at = $3, last_seq = $4 WHERE id = $1 AND last_seq <= $4",
                )
                .bind(agent_id.0)
                .bind(deployment_id)
                .bind(at)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
                let status = match &envelope.event {
                    AgentEvent::RepairRequested { .. } => "repair_requested",
                    AgentEvent::RedeployRequested { .. } => "redeploy_requested",
                    _ => "requested",
                };
                history(tx, event_id, agent_id.0, Some(*deployment_id), status, None, None, at, seq).await
            }
            AgentEvent::DeploymentStepCompleted { agent_id, deployment_id, step } => {
                sqlx::query(
                    "UPDATE agents SET current_step = $2, updated_at = $3, last_seq = $4 WHERE id = $1 AND last_seq <= $4",
                )
                .bind(agent_id.0)
                .bind(step.as_str())
                .bind(at)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
                history(tx, event_id, agent_id.0, Some(*deployment_id), "step_completed", Some(step.as_str()), None, at, seq)
                    .await
            }
            AgentEvent::AgentDeployed { agent_id, deployment_id, endpoint_url, .. } => {
                sqlx::query(
                    "UPDATE agents SET status = 'running', endpoint = $2, last_error = NULL, updated_at = $3, \
                     last_seq = $4 WHERE id = $1 AND last_seq <= $4",
                )
                .bind(agent_id.0)
                .bind(endpoint_url)
                .bind(at)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
                history(tx, event_id, agent_id.0, Some(*deployment_id), "deployed", None, None, at, seq).await
            }
            AgentEvent::DeploymentFailed { agent_id, deployment_id, step, error } => {
                sqlx::query(
                    "UPDATE agents SET status = 'failed', current_step = $2, last_error = $3, updated_at = $4, \
                     last_seq = $5 WHERE id = $1 AND last_seq <= $5",
                )
                .bind(agent_id.0)
                .bind(step.as_str())
                .bind(error)
                .bind(at)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
                history(tx, event_id, agent_id.0, Some(*deployment_id), "failed", Some(step.as_str()), Some(error), at, seq)
                    .await
            }
            AgentEvent::AgentStopped { agent_id } => set_status(tx, agent_id.0, "stopped", None, at, seq).await,
            AgentEvent::AgentStarted { agent_id }
            | AgentEvent::AgentRestarted { agent_id }
            | AgentEvent::AgentResumed { agent_id } => set_status(tx, agent_id.0, "running", None, at, seq).await,
            AgentEvent::AgentPaused { agent_id } => set_status(tx, agent_id.0, "paused", None, at, seq).await,
            AgentEvent::AgentFailed { agent_id, error } => {
                set_status(tx, agent_id.0, "failed", Some(error), at, seq).await
            }
            AgentEvent::AgentDeleted { agent_id } | AgentEvent::AgentDestroyed { agent_id } => sqlx::query(
                "UPDATE agents SET status = 'deleted', deleted_at = COALESCE(deleted_at, $2), updated_at = $2, \
                 last_seq = $3 WHERE id = $1 AND last_seq <= $3",
            )
            .bind(agent_id.0)
            .bind(at)
            .bind(seq)
            .execute(&mut *tx)
            .await
            .map(drop),
            // Audit facts (ADR 18): nothing about the agent a read model shows changes, so its
            // row (and `updated_at`) stays as it was.
            AgentEvent::ExecRequested { .. }
            | AgentEvent::ExecFinished { .. }
            | AgentEvent::FileUploaded { .. }
            | AgentEvent::FileDownloaded { .. }
            | AgentEvent::SandboxAlerted { .. }
            // Usage is the usage projections' (`crate::usage`).
            | AgentEvent::ModelUsageMetered { .. } => Ok(()),
        }
    }
}

async fn set_status(
    tx: &mut PgConnection,
    agent_id: Uuid,
    status: &str,
    error: Option<&str>,
    at: DateTime<Utc>,
    seq: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE agents SET status = $2, last_error = COALESCE($3, last_error), updated_at = $4, last_seq = $5 \
         WHERE id = $1 AND last_seq <= $5",
    )
    .bind(agent_id)
    .bind(status)
    .bind(error)
    .bind(at)
    .bind(seq)
    .execute(&mut *tx)
    .await
    .map(drop)
}

#[allow(clippy::too_many_arguments)]
async fn history(
    tx: &mut PgConnection,
    event_id: Uuid,
    agent_id: Uuid,
    deployment_id: Option<Uuid>,
    status: &str,
    step: Option<&str>,
    error: Option<&str>,
    at: DateTime<Utc>,
    seq: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO deployment_history (event_id, agent_id, deployment_id, status, step, error_message, created_at, \
         stream_seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event_id)
    .bind(agent_id)
    .bind(deployment_id)
    .bind(status)
    .bind(step)
    .bind(error)
    .bind(at)
    .bind(seq)
    .execute(&mut *tx)
    .await
    .map(drop)
}
