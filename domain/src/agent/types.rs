//! The Agent aggregate's value types: runtime, backend, status and the six deployment steps.

use crate::names::string_enum;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

string_enum! {
    /// Which agent runtime runs inside the sandbox (the chat worker talks to each differently).
    #[derive(Default)]
    pub enum RuntimeKind {
        /// Warren's own runtime: token deltas, tool call ids and results, shell exec, uploads.
        #[default]
        Warren => "warren",
        /// An unextended baal-agent (no call ids, no queue; the chat worker fills the gaps).
        BaalAgent => "baal_agent",
    }
}

string_enum! {
    /// Where the deployer provisions the agent.
    #[derive(Default)]
    pub enum Backend {
        /// A local child process with its own workspace (the embedded default).
        #[default]
        Process => "process",
        /// One hardened container per agent.
        Docker => "docker",
        /// An existing VM reached over SSH.
        Ssh => "ssh",
    }
}

string_enum! {
    /// Where the agent stands, derived from its events.
    #[derive(Default)]
    pub enum AgentStatus {
        /// A deployment was requested and no step has completed yet.
        #[default]
        Pending => "pending",
        /// A deployment is under way (at least one step completed).
        Deploying => "deploying",
        /// Deployed and serving.
        Running => "running",
        /// The last deployment failed, or the running agent failed its health checks.
        Failed => "failed",
        /// Stopped on request; its workspace is kept.
        Stopped => "stopped",
        /// Suspended after being idle; resumes on the next message.
        Paused => "paused",
        /// Deleted; its sandbox is (or is being) destroyed. Refuses every command but destroy.
        Deleted => "deleted",
    }
}

string_enum! {
    /// The six steps of one deployment attempt, in the order they must complete.
    #[derive(PartialOrd, Ord)]
    pub enum DeploymentStep {
        /// Reserving capacity (a warm-pool slot, a VM, a port).
        Allocating => "allocating",
        /// Creating the sandbox.
        Provisioning => "provisioning",
        /// Installing the agent runtime.
        Installing => "installing",
        /// Writing the agent's configuration and token.
        Configuring => "configuring",
        /// Starting the runtime.
        Starting => "starting",
        /// Waiting for the runtime's health endpoint.
        HealthCheck => "health_check",
    }
}

impl DeploymentStep {
    /// The step every attempt starts with.
    pub const FIRST: Self = DeploymentStep::Allocating;

    /// The step after this one; `None` after the health check.
    pub fn next(self) -> Option<Self> {
        Self::ALL.get(self.number() as usize).copied()
    }

    /// 1-based position, for "step 3 of 6" progress.
    pub fn number(self) -> u8 {
        match self {
            DeploymentStep::Allocating => 1,
            DeploymentStep::Provisioning => 2,
            DeploymentStep::Installing => 3,
            DeploymentStep::Configuring => 4,
            DeploymentStep::Starting => 5,
            DeploymentStep::HealthCheck => 6,
        }
    }
}

string_enum! {
    /// Why a running agent is deployed again.
    pub enum RedeployReason {
        /// The owner asked (push the latest runtime).
        Manual => "manual",
        /// The system prompt or the model changed.
        ConfigChanged => "config_changed",
        /// The platform's runtime settings changed (model provider, base URL, key, platform
        /// URL): the deployer found the runtime started with older ones.
        PlatformConfigChanged => "platform_config_changed",
    }
}

string_enum! {
    /// What a sandbox alert is about: something an operator must hear of (the notifier mails
    /// admins each one, with `DeploymentFailed`; docs/adr/0026-sandbox-alerts.md).
    pub enum SandboxAlert {
        /// The kernel killed a process of the agent's sandbox for its memory limit.
        OutOfMemory => "out_of_memory",
        /// The agent's runtime failed its health check at three reconciliations in a row.
        HealthFailing => "health_failing",
    }
}

string_enum! {
    /// Why an exec ended without the runtime reporting an exit. Codes only: what went wrong
    /// inside is logged by the edge, never recorded (a client reads these events).
    pub enum ExecFailure {
        /// The runtime could not start the shell.
        ExecFailed => "exec_failed",
        /// The runtime refused the request (e.g. the working directory is not a directory).
        Refused => "refused",
        /// The runtime did not answer, or its stream broke before the exit.
        RuntimeUnavailable => "runtime_unavailable",
        /// The client went away; the runtime killed the command when the edge hung up.
        ClientGone => "client_gone",
        /// The edge shut down during the exec; the runtime killed the command.
        EdgeShutdown => "edge_shutdown",
    }
}

/// The deployment attempt in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// Identifies the attempt; step events for any other attempt are stale.
    pub deployment_id: Uuid,
    /// The last step completed, if any.
    pub completed: Option<DeploymentStep>,
}

impl Deployment {
    /// The step that must complete (or fail) next; `None` once the health check passed.
    pub fn next_step(&self) -> Option<DeploymentStep> {
        match self.completed {
            None => Some(DeploymentStep::FIRST),
            Some(step) => step.next(),
        }
    }
}
