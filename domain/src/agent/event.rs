//! What has happened to an agent. Each variant's name is its stable type string.
//!
//! Three events open a deployment attempt — `DeploymentRequested` (first deploy),
//! `RepairRequested` and `RedeployRequested` — and each carries the attempt's `deployment_id`;
//! the deployer reacts to all three the same way.
//!
//! `ExecRequested`, `ExecFinished` and `FileUploaded` are audit facts: what the owner did in
//! the agent's workspace. They change no state (ADR 18). `ModelUsageMetered` is one too: a
//! model call of the agent's runtime, as the platform's model proxy counted it (ADR 23).

use super::types::{
    Backend, DeploymentStep, ExecFailure, RedeployReason, RuntimeKind, SandboxAlert,
};
use crate::ids::{AgentId, ExecId, UserId};
use crate::user::Provider;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A fact about an agent, stored as `{"type": "<variant>", "data": {…}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum AgentEvent {
    /// An agent was created (its first deployment is requested alongside).
    AgentCreated {
        /// The agent.
        agent_id: AgentId,
        /// Its owner.
        owner_id: UserId,
        /// Display name.
        name: String,
        /// The system prompt.
        system_prompt: String,
        /// Model identifier.
        model: String,
        /// The runtime it runs.
        runtime: RuntimeKind,
        /// Where it is provisioned.
        backend: Backend,
        /// The SSH host it is placed on, by name or label (absent: any host with room).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
    /// Configuration changed; carries the whole resulting configuration.
    AgentConfigUpdated {
        /// The agent.
        agent_id: AgentId,
        /// Display name.
        name: String,
        /// The system prompt.
        system_prompt: String,
        /// Model identifier.
        model: String,
    },
    /// The first deployment attempt was requested.
    DeploymentRequested {
        /// The agent.
        agent_id: AgentId,
        /// The attempt.
        deployment_id: Uuid,
    },
    /// One step of the current attempt finished.
    DeploymentStepCompleted {
        /// The agent.
        agent_id: AgentId,
        /// The attempt.
        deployment_id: Uuid,
        /// The step.
        step: DeploymentStep,
    },
    /// The attempt succeeded; the agent is running.
    AgentDeployed {
        /// The agent.
        agent_id: AgentId,
        /// The attempt.
        deployment_id: Uuid,
        /// The runtime's base URL.
        endpoint_url: String,
        /// The workspace (a docker volume) when it is not the agent's default one: a warm
        /// pool's runtime came with its own. Absent in events from before the warm pool, and
        /// for agents deployed cold.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        workspace: Option<String>,
    },
    /// The attempt failed.
    DeploymentFailed {
        /// The agent.
        agent_id: AgentId,
        /// The attempt.
        deployment_id: Uuid,
        /// The step that failed.
        step: DeploymentStep,
        /// What went wrong.
        error: String,
    },
    /// The agent was stopped (workspace kept); any attempt in progress is abandoned.
    AgentStopped {
        /// The agent.
        agent_id: AgentId,
    },
    /// A stopped agent was started.
    AgentStarted {
        /// The agent.
        agent_id: AgentId,
    },
    /// The runtime was restarted.
    AgentRestarted {
        /// The agent.
        agent_id: AgentId,
    },
    /// An idle agent was suspended.
    AgentPaused {
        /// The agent.
        agent_id: AgentId,
    },
    /// A paused agent was resumed.
    AgentResumed {
        /// The agent.
        agent_id: AgentId,
    },
    /// A running agent failed its health checks.
    AgentFailed {
        /// The agent.
        agent_id: AgentId,
        /// What the health check saw.
        error: String,
    },
    /// A repair attempt was requested for a failed or stopped agent.
    RepairRequested {
        /// The agent.
        agent_id: AgentId,
        /// The new attempt.
        deployment_id: Uuid,
    },
    /// A redeploy attempt was requested.
    RedeployRequested {
        /// The agent.
        agent_id: AgentId,
        /// The new attempt.
        deployment_id: Uuid,
        /// Why.
        reason: RedeployReason,
    },
    /// The agent was deleted; its sandbox must be destroyed.
    AgentDeleted {
        /// The agent.
        agent_id: AgentId,
    },
    /// The deleted agent's sandbox is gone.
    AgentDestroyed {
        /// The agent.
        agent_id: AgentId,
    },
    /// The owner asked the running agent to run a shell command (recorded before it ran; an
    /// audit fact, it changes no state).
    ExecRequested {
        /// The agent.
        agent_id: AgentId,
        /// The exec.
        exec_id: ExecId,
        /// Who asked.
        user_id: UserId,
        /// The command, as sent to the runtime.
        command: String,
        /// Workspace-relative working directory, if not the root.
        cwd: Option<String>,
        /// Timeout asked for, in milliseconds.
        timeout_ms: Option<u64>,
    },
    /// A requested exec ended (as the edge saw it).
    ExecFinished {
        /// The agent.
        agent_id: AgentId,
        /// The exec.
        exec_id: ExecId,
        /// The command's exit code (`None` if killed, or if it never ran).
        exit_code: Option<i32>,
        /// The signal that ended it, if any.
        signal: Option<i32>,
        /// The runtime's timeout killed it.
        timed_out: bool,
        /// Why no exit was reported, if none was.
        failure: Option<ExecFailure>,
    },
    /// The owner uploaded a file into the agent's workspace (an audit fact).
    FileUploaded {
        /// The agent.
        agent_id: AgentId,
        /// Who uploaded it.
        user_id: UserId,
        /// Workspace-relative path.
        path: String,
        /// Its size in bytes.
        size: u64,
    },
    /// The owner downloaded a file out of the agent's workspace (an audit and usage fact).
    FileDownloaded {
        /// The agent.
        agent_id: AgentId,
        /// Who downloaded it.
        user_id: UserId,
        /// Workspace-relative path.
        path: String,
        /// Its size in bytes.
        size: u64,
    },
    /// The platform's model proxy forwarded one model call of the agent's runtime; the tokens
    /// are the provider's own numbers, read from its answer (an audit and usage fact).
    ModelUsageMetered {
        /// The agent whose runtime called.
        agent_id: AgentId,
        /// Its owner, whose quota the tokens count against.
        user_id: UserId,
        /// The provider called.
        provider: Provider,
        /// The model the call asked for.
        model: String,
        /// Whether the owner's own key paid for it (else the platform's).
        own_key: bool,
        /// Tokens the provider read (prompt, cache included).
        input_tokens: u64,
        /// Tokens the provider wrote.
        output_tokens: u64,
        /// Of `input_tokens`, those the provider read from its prompt cache (version 2; an
        /// event of version 1 reads as 0).
        cached_input_tokens: u64,
    },
    /// Something is wrong with the agent's sandbox that an operator must hear of
    /// (docs/adr/0026-sandbox-alerts.md); an audit fact, no state changes.
    SandboxAlerted {
        /// The agent.
        agent_id: AgentId,
        /// What.
        alert: SandboxAlert,
        /// A sentence for admins.
        detail: String,
    },
}

impl AgentEvent {
    /// The stable type string: the variant name, e.g. `AgentCreated`.
    pub fn event_type(&self) -> &'static str {
        match self {
            AgentEvent::AgentCreated { .. } => "AgentCreated",
            AgentEvent::AgentConfigUpdated { .. } => "AgentConfigUpdated",
            AgentEvent::DeploymentRequested { .. } => "DeploymentRequested",
            AgentEvent::DeploymentStepCompleted { .. } => "DeploymentStepCompleted",
            AgentEvent::AgentDeployed { .. } => "AgentDeployed",
            AgentEvent::DeploymentFailed { .. } => "DeploymentFailed",
            AgentEvent::AgentStopped { .. } => "AgentStopped",
            AgentEvent::AgentStarted { .. } => "AgentStarted",
            AgentEvent::AgentRestarted { .. } => "AgentRestarted",
            AgentEvent::AgentPaused { .. } => "AgentPaused",
            AgentEvent::AgentResumed { .. } => "AgentResumed",
            AgentEvent::AgentFailed { .. } => "AgentFailed",
            AgentEvent::RepairRequested { .. } => "RepairRequested",
            AgentEvent::RedeployRequested { .. } => "RedeployRequested",
            AgentEvent::AgentDeleted { .. } => "AgentDeleted",
            AgentEvent::AgentDestroyed { .. } => "AgentDestroyed",
            AgentEvent::ExecRequested { .. } => "ExecRequested",
            AgentEvent::ExecFinished { .. } => "ExecFinished",
            AgentEvent::FileUploaded { .. } => "FileUploaded",
            AgentEvent::FileDownloaded { .. } => "FileDownloaded",
            AgentEvent::ModelUsageMetered { .. } => "ModelUsageMetered",
            AgentEvent::SandboxAlerted { .. } => "SandboxAlerted",
        }
    }

    /// The schema version of this event's shape: `"2"` for `ModelUsageMetered` (which gained
    /// `cached_input_tokens`), `"1"` for every other agent event. Older versions are lifted on
    /// read (`warren_commands::codec::upcast`).
    pub fn event_version(&self) -> &'static str {
        crate::versions::current(self.event_type())
    }

    /// The deployment attempt this event opens, if it opens one.
    pub fn opened_deployment(&self) -> Option<Uuid> {
        match self {
            AgentEvent::DeploymentRequested { deployment_id, .. }
            | AgentEvent::RepairRequested { deployment_id, .. }
            | AgentEvent::RedeployRequested { deployment_id, .. } => Some(*deployment_id),
            _ => None,
        }
    }
}
