//! The provisioner seam: the deployer's state machine (the six steps, recording, reconciling)
//! talks to a [`Provisioner`], which owns how a runtime is placed: a local process
//! ([`super::process`]) or a locked-down container ([`super::docker`]). A provisioner holds no
//! state of its own that the log does not also say, except what it can read back from where the
//! runtimes are ([`Provisioner::actual`]): process records, container labels.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use std::collections::HashMap;
use warren_domain::ids::AgentId;
use warren_domain::user::Tier;

/// What a runtime is started with; everything but its token. No provider key and no provider
/// URL: runtimes call the model through the platform's model proxy.
#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeSpec {
    /// The agent.
    pub agent_id: AgentId,
    /// Model identifier.
    pub model: String,
    /// System prompt.
    pub system_prompt: String,
    /// The platform's default provider protocol (`openai` or `anthropic`), if any.
    pub provider: Option<String>,
    /// Where the runtime reaches the edge (its session tools), as the deployer sees it; a
    /// provisioner may route it (a sandbox reaches the edge through the deployer's relay).
    pub platform_url: String,
    /// [`super::DeployerSettings::runtime_fingerprint`] of the platform settings above.
    pub fingerprint: String,
    /// The endpoint to keep, when the log already recorded one (a restart or a recreation
    /// keeps the address the chat worker knows).
    pub endpoint: Option<String>,
    /// The workspace when it is not the agent's default one: the one a warm pool's runtime
    /// came with, recorded in the log (`AgentDeployed`) so a recreated runtime gets it again.
    pub workspace: Option<String>,
    /// The owner's tier when the runtime is configured: a sandbox's limits follow it
    /// (docs/adr/0032-sandbox-limits-per-tier.md).
    pub tier: Tier,
}

/// What a warm pool's runtimes are started with: the platform settings, nothing of any agent.
#[derive(Clone, Debug, PartialEq)]
pub struct WarmSpec {
    /// The platform's default provider protocol, if any.
    pub provider: Option<String>,
    /// Where runtimes reach the platform (see [`RuntimeSpec::platform_url`]).
    pub platform_url: String,
    /// [`super::DeployerSettings::runtime_fingerprint`]: a pooled runtime started with other
    /// platform settings is replaced, never handed out.
    pub fingerprint: String,
}

/// Where a provisioner's runtime of one agent stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActualState {
    /// Started (it may still fail its health check).
    Running,
    /// Frozen, memory and workspace kept.
    Paused,
    /// Present but not running: stopped, exited, killed, or created and never started.
    Stopped,
}

/// One agent's runtime as a provisioner finds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Actual {
    /// The agent.
    pub agent_id: AgentId,
    /// Its state.
    pub state: ActualState,
    /// The fingerprint it was configured with, if recorded.
    pub fingerprint: Option<String>,
    /// Whether its last exit was the kernel's out-of-memory killer.
    pub oom_killed: bool,
}

/// What one runtime uses now, each figure only if the provisioner can tell. CPU is a counter:
/// the deployer turns two samples into a percentage ([`super::usage::CpuMeter`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    /// When the running (or paused) runtime started.
    pub started_at: Option<DateTime<Utc>>,
    /// CPU time it has used since it started, nanoseconds.
    pub cpu_ns: Option<u64>,
    /// Memory in use, bytes.
    pub memory_bytes: Option<u64>,
    /// Its workspace's size on disk, bytes.
    pub disk_bytes: Option<u64>,
}

/// A provisioner's failure: a sentence for the deployer's log (never shown to owners, who read
/// [`super::public_failure`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProvisionError(pub String);

impl ProvisionError {
    /// Wraps any error with what was being done.
    pub fn during(what: impl std::fmt::Display) -> impl FnOnce(ProvisionError) -> Self {
        move |err| Self(format!("{what}: {err}"))
    }
}

/// Shorthand.
pub type Provisioned<T> = Result<T, ProvisionError>;

/// How the deployer places, runs and removes agents' runtimes. Every method is idempotent: the
/// deployer calls them again after a crash or a redelivery.
#[async_trait]
pub trait Provisioner: Send + Sync {
    /// `process` or `docker`, for logs.
    fn kind(&self) -> &'static str;

    /// Step `allocating`: the agent's workspace (a directory, a named volume). Kept across
    /// restarts and redeploys; removed by [`Provisioner::destroy`].
    async fn allocate(&self, agent_id: AgentId) -> Provisioned<()>;

    /// Step `installing`: the runtime can be started here (binary present, image built).
    async fn install(&self) -> Provisioned<()>;

    /// Step `configuring`: (re)creates the agent's runtime from `spec`, replacing an old one;
    /// the runtime is not started.
    async fn configure(&self, spec: &RuntimeSpec) -> Provisioned<()>;

    /// Step `starting`: starts the configured runtime with its token (handed over without an
    /// environment variable other sandboxes or `docker inspect` could read); returns its
    /// endpoint. Starting a running one restarts it.
    async fn start(&self, agent_id: AgentId, token: &str) -> Provisioned<String>;

    /// Whether the runtime answers `/health`.
    async fn healthy(&self, agent_id: AgentId) -> bool;

    /// Stops the runtime, keeping its configuration and workspace. A missing one is fine.
    async fn stop(&self, agent_id: AgentId);

    /// Freezes the runtime (memory and workspace kept).
    async fn pause(&self, agent_id: AgentId) -> Provisioned<()>;

    /// Thaws a paused runtime.
    async fn resume(&self, agent_id: AgentId) -> Provisioned<()>;

    /// Removes the runtime and its workspace (the agent's default one, and `workspace` when
    /// the log recorded another). A missing one is fine.
    async fn destroy(&self, agent_id: AgentId, workspace: Option<&str>) -> Provisioned<()>;

    /// Every agent runtime this provisioner has, whatever its state.
    async fn actual(&self) -> Provisioned<Vec<Actual>>;

    /// What each of its runtimes uses now (those it cannot measure are left out).
    async fn usage(&self) -> Provisioned<HashMap<AgentId, Usage>>;

    /// The warm pool: makes sure `size` started, unassigned runtimes configured as `warm`
    /// says are ready, replacing any configured otherwise (a restarted deployer adopts the
    /// good ones); returns how many it started. Unassigned runtimes are no agent's: they hold
    /// no token and no agent's data, and [`Provisioner::actual`] does not list them. A
    /// provisioner without a pool does nothing.
    async fn fill_pool(&self, size: usize, warm: &WarmSpec) -> Provisioned<usize> {
        let _ = (size, warm);
        Ok(0)
    }

    /// Step `allocating` from the warm pool: hands the agent a started, unassigned runtime
    /// (configured as `warm` says) and returns the workspace that came with it; `None` when
    /// the pool has none ready (then [`Provisioner::allocate`] as usual). Taking it again for
    /// the same agent returns the same one. The runtime serves as the agent only after
    /// [`Provisioner::configure`] and [`Provisioner::start`].
    async fn take_warm(&self, agent_id: AgentId, warm: &WarmSpec) -> Provisioned<Option<String>> {
        let _ = (agent_id, warm);
        Ok(None)
    }

    /// Removes every unassigned runtime of the warm pool (and its workspace).
    async fn drain_pool(&self) {}

    /// Keeps this deployer's share of the provisioner's work (an SSH host's lease, say), every
    /// few seconds; whether it took on work since the last call (the deployer then reconciles
    /// at once rather than at its next pass).
    async fn tend(&self) -> bool {
        false
    }

    /// Whether another deployer looks after this agent's runtime (its host's lease is
    /// another's): the reconciler leaves it alone.
    fn foreign(&self, agent_id: AgentId) -> bool {
        let _ = agent_id;
        false
    }

    /// Agents whose runtime is lost with the machine it was on (a host that is down), as of
    /// the last [`Provisioner::actual`]; the deployer reports them failed.
    fn lost(&self) -> Vec<AgentId> {
        Vec::new()
    }

    /// Whether the deployer deploys [`Provisioner::lost`] agents again elsewhere (after
    /// [`Provisioner::destroy`], which forgets a lost runtime without reaching its machine).
    fn redeploys_lost(&self) -> bool {
        false
    }

    /// Agents whose machine answers again after it was down, seen by any
    /// [`Provisioner::actual`] since the last call (each is handed out once): those failed
    /// with it are deployed there again.
    fn returned(&self) -> Vec<AgentId> {
        Vec::new()
    }

    /// The agents whose sandbox had a process killed for its memory limit, as it happens;
    /// `None` when this provisioner cannot tell. The stream ends with its connection (the
    /// deployer asks again).
    fn oom_kills(&self) -> Option<BoxStream<'static, AgentId>> {
        None
    }
}
