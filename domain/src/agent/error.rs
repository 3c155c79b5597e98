//! Why an agent command was refused.

use super::types::{AgentStatus, DeploymentStep};
use crate::ids::AgentId;
use crate::text::InvalidText;
use thiserror::Error;
use uuid::Uuid;

/// A refused agent command. [`AgentError::code`] is the stable machine code the edge maps.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum AgentError {
    /// The command needs an existing agent and there is none.
    #[error("agent not found ({command})")]
    NotFound {
        /// The refused command's name.
        command: &'static str,
    },
    /// `CreateAgent` for an agent that already exists.
    #[error("agent {agent_id} already exists")]
    AlreadyExists {
        /// The existing agent.
        agent_id: AgentId,
    },
    /// The agent is deleted; only `DestroyAgent` is accepted.
    #[error("agent {agent_id} is deleted")]
    Deleted {
        /// The agent.
        agent_id: AgentId,
    },
    /// The transition is not possible from the agent's current status.
    #[error("cannot {action} an agent that is {status}")]
    InvalidState {
        /// What was attempted, e.g. `restart`.
        action: &'static str,
        /// The status that forbids it.
        status: AgentStatus,
    },
    /// A command field is malformed.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `StartAgent` on an agent stopped before it was ever deployed (repair it instead).
    #[error("agent {agent_id} was never deployed; repair it to deploy it")]
    NeverDeployed {
        /// The agent.
        agent_id: AgentId,
    },
    /// Progress for an attempt that is not the current one (stale, superseded or finished).
    #[error("deployment {deployment_id} is not the active deployment")]
    DeploymentNotActive {
        /// The stale attempt.
        deployment_id: Uuid,
    },
    /// A step reported out of order.
    #[error(
        "step {got} is out of order in deployment {deployment_id} (next is {})",
        .expected.map_or("none", DeploymentStep::as_str)
    )]
    StepOutOfOrder {
        /// The attempt.
        deployment_id: Uuid,
        /// The step that was due, `None` when all six are done.
        expected: Option<DeploymentStep>,
        /// The step reported.
        got: DeploymentStep,
    },
    /// `CompleteDeployment` before the health check step completed.
    #[error("deployment {deployment_id} has not passed its health check")]
    DeploymentIncomplete {
        /// The attempt.
        deployment_id: Uuid,
        /// The last step completed, if any.
        completed: Option<DeploymentStep>,
    },
}

impl AgentError {
    /// A stable snake_case code for clients and the HTTP mapping, e.g. `deleted`.
    pub fn code(&self) -> &'static str {
        match self {
            AgentError::NotFound { .. } => "not_found",
            AgentError::AlreadyExists { .. } => "already_exists",
            AgentError::Deleted { .. } => "deleted",
            AgentError::InvalidState { .. } => "invalid_state",
            AgentError::InvalidInput { .. } => "invalid_input",
            AgentError::NeverDeployed { .. } => "never_deployed",
            AgentError::DeploymentNotActive { .. } => "deployment_not_active",
            AgentError::StepOutOfOrder { .. } => "step_out_of_order",
            AgentError::DeploymentIncomplete { .. } => "deployment_incomplete",
        }
    }
}

impl From<InvalidText> for AgentError {
    fn from(InvalidText { field, reason }: InvalidText) -> Self {
        AgentError::InvalidInput { field, reason }
    }
}
