//! An owner's agents: create (within the tier's quota), configure, delete, and drive the
//! lifecycle (stop, start, restart, repair, redeploy). Every outcome is the agent's id once its
//! commit is in the log and the agents read model has it.
//!
//! Whatever would wake one more sandbox (a new agent; starting, restarting, repairing,
//! redeploying or reconfiguring one that is not awake) is refused with 503 `at_capacity` while
//! the platform runs as many as it may (`WARREN_MAX_SANDBOXES`, docs/adr/0024). A message to a
//! paused agent is never refused: it waits, queued, for room (the chat worker's part).

use super::access::ApprovedUser;
use crate::consistency::{self, projection};
use crate::error::ApiError;
use crate::quota;
use crate::state::AppState;
use uuid::Uuid;
use warren_commands::CommandMeta;
use warren_domain::Actor;
use warren_domain::agent::{Agent, AgentCommand, AgentStatus, Backend, RuntimeKind};
use warren_domain::ids::{AgentId, CommandId, UserId};
use warren_domain::user::Role;
use warren_projections::capacity::{self, Room};

/// A new agent's configuration.
#[derive(Clone, Debug)]
pub struct NewAgent {
    /// Display name.
    pub name: String,
    /// System prompt (empty if none).
    pub system_prompt: Option<String>,
    /// Model; the platform default if none.
    pub model: Option<String>,
    /// Runtime to install.
    pub runtime: RuntimeKind,
    /// Where it runs.
    pub backend: Backend,
    /// The SSH host, by name or label (admins only).
    pub host: Option<String>,
}

/// A configuration change; `None` keeps a field.
#[derive(Clone, Debug, Default)]
pub struct Change {
    /// New name.
    pub name: Option<String>,
    /// New system prompt.
    pub system_prompt: Option<String>,
    /// New model.
    pub model: Option<String>,
}

/// What an owner may ask of an existing agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// Stop its sandbox.
    Stop,
    /// Start a stopped agent.
    Start,
    /// Restart a running one.
    Restart,
    /// Deploy a failed or stopped one again.
    Repair,
    /// Deploy a running or paused one again.
    Redeploy,
    /// Delete it (its sandbox is then destroyed).
    Delete,
}

/// Creates an agent for `caller` (its first deployment requested at once). The agent's id
/// follows from the command's, so a retried create (same idempotency key) creates nothing
/// more and answers with the same agent.
pub async fn create(
    state: &AppState,
    caller: &ApprovedUser,
    agent: NewAgent,
    command_id: CommandId,
) -> Result<AgentId, ApiError> {
    if agent.host.is_some() && caller.user.role != Role::Admin {
        return Err(ApiError::forbidden(
            "forbidden",
            "only admins choose the host an agent runs on",
        ));
    }
    let agent_id = AgentId(Uuid::new_v5(&command_id.0, b"warren/agent-of-create"));
    if let Ok((existing, _)) = load(state, agent_id).await
        && existing.id.is_some()
    {
        // The same create again: its answer is the agent it made.
        return Ok(agent_id);
    }
    quota::check_agent_quota(&state.db, &state.settings.tiers, caller).await?;
    check_capacity(state).await?;
    execute(
        state,
        caller.id,
        agent_id,
        AgentCommand::CreateAgent {
            agent_id,
            owner_id: caller.id,
            name: agent.name,
            system_prompt: agent.system_prompt.unwrap_or_default(),
            model: agent
                .model
                .unwrap_or_else(|| state.settings.defaults.model.clone()),
            runtime: agent.runtime,
            backend: agent.backend,
            host: agent.host,
            deployment_id: Uuid::now_v7(),
        },
        command_id,
    )
    .await?;
    tracing::info!(agent_id = %agent_id, owner = %caller.id, "agent created");
    Ok(agent_id)
}

/// Changes the caller's agent's configuration (a prompt or model change redeploys it).
pub async fn configure(
    state: &AppState,
    caller: &ApprovedUser,
    agent: AgentId,
    change: Change,
    command_id: CommandId,
) -> Result<AgentId, ApiError> {
    let (_, current) = owned_agent(state, caller.id, agent).await?;
    // A prompt or model change redeploys an agent that is not stopped.
    let redeploys = change.system_prompt.is_some() || change.model.is_some();
    if redeploys && current.status != AgentStatus::Stopped && !awake(current.status) {
        check_capacity(state).await?;
    }
    let command = AgentCommand::UpdateAgentConfig {
        name: change.name,
        system_prompt: change.system_prompt,
        model: change.model,
        deployment_id: Uuid::now_v7(),
    };
    execute(state, caller.id, agent, command, command_id).await?;
    Ok(agent)
}

/// Asks `what` of the caller's agent.
pub async fn lifecycle(
    state: &AppState,
    caller: &ApprovedUser,
    agent: AgentId,
    what: Lifecycle,
    command_id: CommandId,
) -> Result<AgentId, ApiError> {
    let (_, current) = owned_agent(state, caller.id, agent).await?;
    let wakes = matches!(
        what,
        Lifecycle::Start | Lifecycle::Restart | Lifecycle::Repair | Lifecycle::Redeploy
    );
    if wakes && !awake(current.status) {
        check_capacity(state).await?;
    }
    let deployment_id = Uuid::now_v7();
    let command = match what {
        Lifecycle::Stop => AgentCommand::StopAgent,
        Lifecycle::Start => AgentCommand::StartAgent,
        Lifecycle::Restart => AgentCommand::RestartAgent,
        Lifecycle::Repair => AgentCommand::RepairAgent { deployment_id },
        Lifecycle::Redeploy => AgentCommand::RedeployAgent { deployment_id },
        Lifecycle::Delete => AgentCommand::DeleteAgent,
    };
    execute(state, caller.id, agent, command, command_id).await?;
    tracing::info!(agent_id = %agent, ?what, "agent lifecycle");
    Ok(agent)
}

/// The agent's current state if `owner` owns it and it is not deleted; 404 otherwise (missing
/// and someone else's alike).
pub async fn owned_agent(
    state: &AppState,
    owner: UserId,
    agent: AgentId,
) -> Result<(AgentId, Agent), ApiError> {
    let (found, _) = load(state, agent).await?;
    if found.id.is_none() || found.owner_id != owner || found.status == AgentStatus::Deleted {
        return Err(ApiError::NotFound);
    }
    Ok((agent, found))
}

/// Whether the agent's sandbox counts as awake.
fn awake(status: AgentStatus) -> bool {
    capacity::AWAKE.contains(&status)
}

/// Refuses to wake one more sandbox while the platform runs as many as it may.
async fn check_capacity(state: &AppState) -> Result<(), ApiError> {
    match state.capacity.room().await? {
        Room::Free => Ok(()),
        Room::Full { awake, max } => {
            tracing::warn!(awake, max, "at capacity: a new or woken sandbox is refused");
            Err(ApiError::at_capacity(awake, max))
        }
    }
}

async fn load(state: &AppState, agent: AgentId) -> Result<(Agent, u64), ApiError> {
    state
        .commands
        .agents
        .load(&agent.to_string())
        .await
        .map_err(ApiError::internal)
}

/// Runs `command` on the agent and waits for the read model, so the next read agrees.
async fn execute(
    state: &AppState,
    user: UserId,
    agent: AgentId,
    command: AgentCommand,
    command_id: CommandId,
) -> Result<(), ApiError> {
    let meta = CommandMeta {
        command_id,
        ..CommandMeta::new(Actor::User(user))
    };
    let committed = state
        .commands
        .agents
        .execute(&agent.to_string(), command, &meta)
        .await?;
    consistency::caught_up(&state.db, projection::AGENTS, committed.sequence).await?;
    Ok(())
}
