//! The deployer worker (DESIGN §4): the state machine of agents' deployments, over a
//! [`Provisioner`] that places the runtimes (docs/adr/0025-sandboxes.md).
//!
//! It reads the `AGENTS` stream through the durable consumer `deployer` (explicit acks, up to
//! [`CONCURRENCY`] commits at once, one operation per agent at a time under [`locks`]) and acks
//! a commit only after its side effect and the resulting command are committed; a failure is
//! redelivered after a delay, an unreadable commit is terminated. Every reaction checks the
//! agent's *current* state first, so redelivery, reordering and history replay are harmless:
//!
//! - an attempt opened (`DeploymentRequested`, `RepairRequested`, `RedeployRequested`) is run only
//!   while it is still the agent's current attempt: stop the old runtime, then the six steps
//!   (allocate the workspace, provision the token, install the runtime, configure it, start it,
//!   health-check it), each recorded with `CompleteDeploymentStep` as it completes (steps
//!   already recorded are not recorded again), then `CompleteDeployment`; a failure records
//!   `FailDeployment` at the step that was due and stops the half-started runtime.
//!   `deployment_not_active` and `step_out_of_order` mean someone else moved the agent on: the
//!   attempt is dropped.
//! - `AgentStopped` stops the runtime if the agent is still stopped; `AgentStarted` /
//!   `AgentRestarted` restart it if it is running; `AgentPaused` freezes it if the agent is
//!   still paused (and no run holds it); `AgentResumed` thaws it (or starts it again if it is
//!   gone) if the agent is running, and waits until it answers; `AgentDeleted` removes it and
//!   its workspace, purges its token, then records `DestroyAgent`.
//!
//! A reconciler runs at start and every `reconcile_every`: it compares the agents the log knows
//! (every `agent.*` subject of the stream) with each provisioner's actual runtimes. Running
//! agents whose runtime answers are left alone; a runtime that died or was killed is started
//! again, and one that is missing altogether is recreated on its recorded endpoint, so the
//! endpoint in the log stays valid (docs/adr/0006-deployer.md); stopped, failed or deleted
//! agents' runtimes are stopped or removed; a paused agent's running runtime is frozen and its
//! frozen one left alone (a running agent's frozen runtime is thawed). A running agent whose
//! runtime was configured with other platform settings (`runtime_fingerprint`) is redeployed,
//! recorded as `RedeployRequested { reason: platform_config_changed }`. A running agent unused
//! for `idle_pause` is paused (`PauseAgent`), and after each pass what every sandbox uses is
//! recorded for the agents' status ([`lifecycle`], docs/adr/0024-idle-pause-and-capacity.md).
//!
//! With a warm pool (`warm_pool` > 0, docs/adr/0028-warm-pool.md) the deployer keeps that many
//! started, unassigned runtimes: at start (adopting or replacing a previous deployer's), after
//! every runtime an agent takes, and at every reconciliation. A first deployment takes one at
//! its `allocating` step (its workspace comes with it and is recorded in `AgentDeployed`), is
//! given its configuration and token at `configuring` and `starting`, and is running without a
//! container being created or started; with the pool empty it deploys cold.
//!
//! Runtimes hold no provider key: they call their model through the edge's model proxy
//! (docs/adr/0023-model-proxy.md).
//!
//! Modules: [`provisioner`] (the seam), [`process`] (development only, unconfined), [`docker`]
//! (one locked-down container per agent), [`locks`] (per-agent locks), [`lifecycle`] (pause,
//! resume, idle pause, usage), [`usage`] (measuring runtimes), [`alerts`] (sandbox alerts:
//! out-of-memory kills, failing health checks), [`ssh`] (agents on registered SSH hosts).
//!
//! Under `warren dev` (`stop_agents_on_shutdown`) the deployer stops every runtime when it
//! stops; the next start's first reconciliation restarts the running ones (docs/adr/0021).

pub mod alerts;
pub mod docker;
pub mod lifecycle;
pub mod locks;
pub mod process;
pub mod provisioner;
pub mod ssh;
pub mod usage;

use crate::consume::{ConsumeError, Durable, Handled, consume_concurrently};
use crate::supervise::supervise;
use async_nats::jetstream;
use futures::StreamExt;
use provisioner::{Actual, ActualState, Provisioner, RuntimeSpec, WarmSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use warren_commands::sandboxes::{Activity, SandboxKvError, SandboxStatsStore};
use warren_commands::secrets::{self, AgentTokens, TokenError};
use warren_commands::{CommandError, CommandMeta, CommandService, codec, topology, trace};
use warren_domain::agent::{
    Agent, AgentCommand, AgentError, AgentEvent, AgentStatus, Backend, DeploymentStep,
};
use warren_domain::envelope::Actor;
use warren_domain::ids::AgentId;
use warren_domain::user::Tier;

/// The durable consumer's name.
pub const CONSUMER: &str = "deployer";

/// Commits handled at once (each agent's under its own lock).
pub const CONCURRENCY: usize = 8;

/// How often provisioners keep their share of the work ([`Provisioner::tend`]: SSH hosts'
/// leases).
pub const TEND_EVERY: Duration = Duration::from_secs(3);

/// The deployer's configuration.
#[derive(Clone, Debug)]
pub struct DeployerSettings {
    /// The `process` provisioner's agents live under `<data_dir>/agents`.
    pub data_dir: PathBuf,
    /// `warren-agent`, if configured (else next to the current executable, else `PATH`).
    pub agent_bin: Option<PathBuf>,
    /// How often the reconciler runs.
    pub reconcile_every: Duration,
    /// How long a started runtime may take to answer `/health`.
    pub health_timeout: Duration,
    /// The protocol of the platform's default provider (`openai` or `anthropic`), which the
    /// runtime speaks to the model proxy unless a run names another.
    pub default_provider: Option<String>,
    /// The edge URL runtimes call back on for their session tools and their model (the proxy).
    pub platform_url: String,
    /// Whether the agents' runtimes stop when the deployer does (`warren dev`: nothing it
    /// started outlives it; the next start restarts them). Otherwise they outlive it.
    pub stop_agents_on_shutdown: bool,
    /// A running agent unused this long is paused; `None`: never.
    pub idle_pause: Option<Duration>,
    /// Started, unassigned runtimes kept for new agents (`WARREN_WARM_POOL`); 0: none.
    pub warm_pool: usize,
}

impl DeployerSettings {
    /// A fingerprint of the platform settings that shape a runtime (the default provider's
    /// protocol, the platform URL, and that it calls its model through the proxy, so runtimes
    /// started with a key before ADR 23 are redeployed without one, and watches its OOM kills,
    /// ADR 26). `process.json` keeps it; a
    /// running agent whose runtime was started with another one is redeployed
    /// (`ReconfigureAgent`). The provider's key and URL are the edge's business now: changing
    /// them redeploys nothing.
    pub fn runtime_fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        for part in [
            Some("model-proxy"),
            // Runtimes that watch their sandbox's OOM kills (docs/adr/0026): older containers
            // lack `WARREN_AGENT_WATCH_OOM` and are redeployed once.
            Some("oom-watch"),
            self.default_provider.as_deref(),
            Some(self.platform_url.as_str()),
        ] {
            // Length-prefixed, so no two different settings hash the same bytes.
            let part = part.map(str::as_bytes);
            hash.update([u8::from(part.is_some())]);
            hash.update((part.unwrap_or_default().len() as u64).to_le_bytes());
            hash.update(part.unwrap_or_default());
        }
        hex::encode(&hash.finalize()[..16])
    }

    /// What `agent`'s runtime is configured with now, its owner on `tier`.
    fn spec(&self, agent_id: AgentId, agent: &Agent, tier: Tier) -> RuntimeSpec {
        RuntimeSpec {
            agent_id,
            model: agent.model.clone(),
            system_prompt: agent.system_prompt.clone(),
            provider: self.default_provider.clone(),
            platform_url: self.platform_url.clone(),
            fingerprint: self.runtime_fingerprint(),
            endpoint: agent.endpoint_url.clone(),
            workspace: agent.workspace.clone(),
            tier,
        }
    }

    /// What the warm pool's runtimes are started with.
    pub fn warm_spec(&self) -> WarmSpec {
        WarmSpec {
            provider: self.default_provider.clone(),
            platform_url: self.platform_url.clone(),
            fingerprint: self.runtime_fingerprint(),
        }
    }
}

/// Why the deployer could not start or its consumer stopped.
#[derive(Debug, thiserror::Error)]
pub enum DeployerError {
    /// The token store could not be opened.
    #[error("opening the secrets bucket failed")]
    Tokens(#[from] TokenError),
    /// The activity or usage bucket could not be opened.
    #[error(transparent)]
    Buckets(#[from] SandboxKvError),
    /// The consumer could not be set up or read.
    #[error(transparent)]
    Consumer(#[from] ConsumeError),
}

/// What handling one message came to.
enum Outcome {
    /// Try again later (log or store unavailable).
    Retry(String),
}

/// The deployer, built and ready to run.
pub struct Deployer {
    js: jetstream::Context,
    commands: CommandService,
    tokens: AgentTokens,
    settings: DeployerSettings,
    /// Where new deployments go, unless the agent asked for SSH hosts.
    sandbox: Arc<dyn Provisioner>,
    /// The `ssh` provisioner, when this deployer places agents on SSH hosts.
    ssh: Option<Arc<dyn Provisioner>>,
    /// Every provisioner whose runtimes this deployer looks after (the sandbox first): an agent
    /// deployed under an earlier setting is still found, stopped and removed.
    provisioners: Vec<Arc<dyn Provisioner>>,
    locks: locks::AgentLocks,
    /// One reconciliation pass at a time (the periodic one and one after a takeover).
    reconciling: tokio::sync::Mutex<()>,
    /// When each agent was last used (the idle pause's clock).
    activity: Activity,
    /// What each sandbox uses, for the agents' status.
    stats: SandboxStatsStore,
    cpu: usage::CpuMeter,
    /// Wakes the warm pool's keeper when an agent took one of its runtimes.
    refill: tokio::sync::Notify,
    /// Failed health checks in a row (the health alert).
    health: alerts::HealthStreaks,
    /// The read models (the deployer's read-only role), for the owners' tiers; `None`: every
    /// owner is on the default tier.
    read_models: Option<sqlx::PgPool>,
}

type Step = Result<(), (DeploymentStep, String)>;

impl Deployer {
    /// Builds the deployer; `master_key` is the 32-byte AES key that seals agent tokens. New
    /// deployments go to `sandbox`; `others` are looked after too.
    pub async fn build(
        commands: CommandService,
        master_key: &[u8],
        settings: DeployerSettings,
        sandbox: Arc<dyn Provisioner>,
        others: Vec<Arc<dyn Provisioner>>,
    ) -> Result<Self, DeployerError> {
        let js = commands.jetstream().clone();
        let tokens = AgentTokens::open(&js, master_key).await?;
        let activity = Activity::open(&js).await?;
        let stats = SandboxStatsStore::open(&js).await?;
        let mut provisioners = vec![sandbox.clone()];
        provisioners.extend(others);
        Ok(Self {
            js,
            commands,
            tokens,
            settings,
            sandbox,
            ssh: None,
            provisioners,
            locks: locks::AgentLocks::default(),
            reconciling: tokio::sync::Mutex::new(()),
            activity,
            stats,
            cpu: usage::CpuMeter::default(),
            refill: tokio::sync::Notify::new(),
            health: alerts::HealthStreaks::default(),
            read_models: None,
        })
    }

    /// Places agents that ask for the `ssh` backend with `ssh` (docs/adr/0039-ssh-hosts.md),
    /// and looks after its runtimes like the others'.
    pub fn with_ssh(mut self, ssh: Arc<dyn Provisioner>) -> Self {
        self.provisioners.push(ssh.clone());
        self.ssh = Some(ssh);
        self
    }

    /// Where `agent` runs: on an SSH host when it asked for the `ssh` backend, else in this
    /// platform's sandbox. An agent that asked for `docker` on a platform without docker
    /// sandboxes is refused, never run less confined than it asked.
    fn sandbox_for(&self, agent: &Agent) -> Result<Arc<dyn Provisioner>, String> {
        match agent.backend {
            Backend::Ssh => self
                .ssh
                .clone()
                .ok_or_else(|| "this deployer places no agents on SSH hosts".to_owned()),
            Backend::Docker if self.sandbox.kind() != "docker" => Err(format!(
                "the agent asked for a docker sandbox; this deployer runs {} sandboxes",
                self.sandbox.kind()
            )),
            Backend::Docker | Backend::Process => Ok(self.sandbox.clone()),
        }
    }

    /// Reads the owners' tiers from the read models `db` (docs/adr/0032): their sandboxes get
    /// their tier's limits.
    pub fn with_read_models(mut self, db: sqlx::PgPool) -> Self {
        self.read_models = Some(db);
        self
    }

    /// The tier of `agent`'s owner, as the `users` read model has it; the default tier for an
    /// owner it does not have (yet), or when there is no `users` table. An unreachable database
    /// is an error: a sandbox is not created with another tier's limits.
    async fn owner_tier(&self, agent: &Agent) -> Result<Tier, String> {
        let Some(db) = &self.read_models else {
            return Ok(Tier::default());
        };
        let tier: Option<String> = match sqlx::query_scalar("SELECT tier FROM users WHERE id = $1")
            .bind(agent.owner_id.0)
            .fetch_optional(db)
            .await
        {
            Ok(tier) => tier,
            // 42P01, undefined table: the read models are not migrated (yet), so nobody
            // is on another tier there. Any other failure is a retry.
            Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some("42P01") => {
                tracing::warn!(owner_id = %agent.owner_id, "no users read model: the default tier");
                None
            }
            Err(err) => return Err(format!("reading the owner's tier: {err}")),
        };
        Ok(match tier {
            Some(tier) => tier.parse().unwrap_or_else(|_| {
                tracing::warn!(owner_id = %agent.owner_id, tier, "unknown tier in the read model: the default one");
                Tier::default()
            }),
            None => Tier::default(),
        })
    }

    /// Runs the consumer and the reconciler until `shutdown`, restarting after failures.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = &self;
        let consume = supervise("deployer", shutdown.clone(), || {
            this.run_once(shutdown.clone())
        });
        // Work another deployer left is reconciled at once, not at the next pass; by the
        // reconciler, so the leases are beaten all the while (a pass can wait long on agents
        // being deployed, and a lease not beaten is taken by another deployer).
        let taken_over = tokio::sync::Notify::new();
        let reconcile = async {
            let mut after_takeover = false;
            loop {
                this.reconcile().await;
                if after_takeover {
                    tracing::info!("reconciled the work taken over");
                }
                after_takeover = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(this.settings.reconcile_every) => false,
                    _ = taken_over.notified() => true,
                };
            }
        };
        let tend = async {
            loop {
                let mut taken = false;
                for provisioner in &this.provisioners {
                    taken |= provisioner.tend().await;
                }
                if taken {
                    taken_over.notify_one();
                    // Its hosts' warm pools too.
                    this.refill.notify_one();
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(TEND_EVERY) => {}
                }
            }
        };
        tokio::join!(
            consume,
            reconcile,
            tend,
            this.keep_pool(&shutdown),
            this.watch_oom(shutdown.clone())
        );
        if self.settings.stop_agents_on_shutdown {
            self.stop_all().await;
        }
    }

    /// Keeps the warm pool full until `shutdown`: at start, whenever an agent took one of its
    /// runtimes, and every `reconcile_every` (a pool container that died or was removed is
    /// replaced then).
    async fn keep_pool(&self, shutdown: &CancellationToken) {
        let size = self.settings.warm_pool;
        if size == 0 {
            return;
        }
        let warm = self.settings.warm_spec();
        loop {
            for provisioner in &self.provisioners {
                match provisioner.fill_pool(size, &warm).await {
                    Ok(0) => {}
                    Ok(started) => {
                        tracing::info!(
                            started,
                            size,
                            sandbox = provisioner.kind(),
                            "warm pool topped up"
                        )
                    }
                    Err(err) => {
                        tracing::warn!(sandbox = provisioner.kind(), error = %err, "filling the warm pool failed")
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.refill.notified() => {}
                _ = tokio::time::sleep(self.settings.reconcile_every) => {}
            }
        }
    }

    /// Stops every agent runtime (the log still wants the running ones running: the next
    /// start's reconciliation restarts them) and removes the warm pool.
    async fn stop_all(&self) {
        for provisioner in &self.provisioners {
            provisioner.drain_pool().await;
        }
        let mut stops = Vec::new();
        for provisioner in &self.provisioners {
            match provisioner.actual().await {
                Ok(actual) => stops.extend(
                    actual
                        .into_iter()
                        .filter(|a| a.state != ActualState::Stopped)
                        .map(|a| (provisioner.clone(), a.agent_id)),
                ),
                Err(err) => {
                    tracing::warn!(sandbox = provisioner.kind(), error = %err, "listing runtimes failed")
                }
            }
        }
        futures::future::join_all(stops.into_iter().map(|(provisioner, agent_id)| async move {
            let _guard = self.locks.lock(agent_id).await;
            provisioner.stop(agent_id).await;
        }))
        .await;
        tracing::info!("agent runtimes stopped with the deployer");
    }

    async fn run_once(&self, shutdown: CancellationToken) -> Result<(), DeployerError> {
        let durable = Durable {
            stream: topology::AGENTS,
            name: CONSUMER,
            filter: "agent.*",
            ack_wait: Duration::from_secs(300),
        };
        consume_concurrently(
            &self.js,
            &durable,
            &shutdown,
            CONCURRENCY,
            |message| async move {
                let envelopes = match codec::decode::<AgentEvent>(&message.payload) {
                    Ok(envelopes) => envelopes,
                    Err(err) => return Handled::Poison(err.to_string()),
                };
                // The deployment continues the trace of the request that asked for it.
                let parent = message
                    .headers
                    .as_ref()
                    .and_then(|headers| codec::header(headers, trace::HEADER));
                for envelope in envelopes {
                    let handled = trace::span(
                        "deploy",
                        trace::SpanKind::Consumer,
                        parent,
                        self.handle(&envelope.event),
                    );
                    if let Err(Outcome::Retry(reason)) = handled.await {
                        return Handled::Retry {
                            reason,
                            after: Duration::from_secs(2),
                        };
                    }
                }
                Handled::Done
            },
        )
        .await?;
        Ok(())
    }

    async fn handle(&self, event: &AgentEvent) -> Result<(), Outcome> {
        let agent_id = agent_of(event);
        let _guard = self.locks.lock(agent_id).await;
        if let Some(deployment_id) = event.opened_deployment() {
            return self.deploy(agent_id, deployment_id).await;
        }
        match event {
            AgentEvent::AgentStopped { .. } => {
                let agent = self.load(agent_id).await?;
                if agent.status == AgentStatus::Stopped {
                    self.stop_everywhere(agent_id).await;
                }
                Ok(())
            }
            AgentEvent::AgentStarted { .. } | AgentEvent::AgentRestarted { .. } => {
                let agent = self.load(agent_id).await?;
                if agent.status == AgentStatus::Running {
                    self.restart(agent_id, &agent).await;
                }
                Ok(())
            }
            AgentEvent::AgentPaused { .. } => self.on_paused(agent_id).await,
            AgentEvent::AgentResumed { .. } => self.on_resumed(agent_id).await,
            AgentEvent::AgentDeleted { .. } => self.destroy(agent_id).await,
            _ => Ok(()),
        }
    }

    async fn load(&self, agent_id: AgentId) -> Result<Agent, Outcome> {
        self.commands
            .agents
            .load(&agent_id.to_string())
            .await
            .map(|(agent, _)| agent)
            .map_err(|err| Outcome::Retry(err.to_string()))
    }

    /// Executes a deployer command; `Ok(false)` when the domain says the attempt moved on.
    async fn execute(&self, agent_id: AgentId, command: AgentCommand) -> Result<bool, Outcome> {
        let meta = CommandMeta::new(Actor::System(CONSUMER.into()));
        match self
            .commands
            .agents
            .execute(&agent_id.to_string(), command, &meta)
            .await
        {
            Ok(_) => Ok(true),
            Err(CommandError::Rejected(
                AgentError::DeploymentNotActive { .. }
                | AgentError::StepOutOfOrder { .. }
                | AgentError::Deleted { .. },
            )) => Ok(false),
            Err(CommandError::Rejected(other)) => {
                tracing::warn!(%agent_id, error = %other, "deployer command refused");
                Ok(false)
            }
            Err(err) => Err(Outcome::Retry(err.to_string())),
        }
    }

    /// Stops the agent's runtime wherever it is.
    async fn stop_everywhere(&self, agent_id: AgentId) {
        for provisioner in &self.provisioners {
            provisioner.stop(agent_id).await;
        }
    }

    /// The provisioner that has a runtime of the agent, if any.
    async fn holder(&self, agent_id: AgentId) -> Option<(Arc<dyn Provisioner>, Actual)> {
        for provisioner in &self.provisioners {
            if let Ok(actual) = provisioner.actual().await
                && let Some(found) = actual.into_iter().find(|a| a.agent_id == agent_id)
            {
                return Some((provisioner.clone(), found));
            }
        }
        None
    }

    #[tracing::instrument(skip_all, fields(agent_id = %agent_id, deployment_id = %deployment_id))]
    async fn deploy(&self, agent_id: AgentId, deployment_id: Uuid) -> Result<(), Outcome> {
        let agent = self.load(agent_id).await?;
        let Some(deployment) = agent
            .deployment
            .filter(|d| d.deployment_id == deployment_id)
        else {
            // Completed, failed or superseded already.
            return Ok(());
        };
        let target = self.sandbox_for(&agent);
        let kind = target.as_ref().map_or("none", |t| t.kind());
        tracing::info!(%agent_id, %deployment_id, sandbox = kind, "deploying");
        // A redeploy or repair replaces the old runtime, wherever it was.
        self.stop_everywhere(agent_id).await;
        for provisioner in &self.provisioners {
            if target.as_ref().is_ok_and(|t| Arc::ptr_eq(t, provisioner))
                || Arc::ptr_eq(provisioner, &self.sandbox)
            {
                continue;
            }
            if let Err(err) = provisioner.destroy(agent_id, None).await {
                tracing::warn!(%agent_id, sandbox = provisioner.kind(), error = %err, "removing the old runtime failed");
            }
        }
        let mut endpoint = String::new();
        let mut workspace = None;
        let outcome = match &target {
            Ok(target) => {
                self.run_steps(
                    agent_id,
                    deployment_id,
                    (&agent, target),
                    deployment.completed,
                    (&mut endpoint, &mut workspace),
                )
                .await
            }
            Err(err) => Ok(Err((
                deployment
                    .completed
                    .map_or(DeploymentStep::Allocating, |done| {
                        done.next().unwrap_or(DeploymentStep::Allocating)
                    }),
                err.clone(),
            ))),
        };
        let sandbox = target.unwrap_or_else(|_| self.sandbox.clone());
        match outcome {
            Ok(Ok(())) => {
                let completed = self
                    .execute(
                        agent_id,
                        AgentCommand::CompleteDeployment {
                            deployment_id,
                            endpoint_url: endpoint.clone(),
                            workspace,
                        },
                    )
                    .await?;
                if completed {
                    tracing::info!(%agent_id, endpoint, "agent deployed");
                }
                Ok(())
            }
            Ok(Err((step, error))) => {
                tracing::warn!(%agent_id, %step, error, "deployment failed");
                if agent.workspace.is_none() && workspace.is_some() {
                    // A warm pool's runtime taken by a first deployment holds nothing of the
                    // agent's yet: removed, so a retry starts from a fresh one.
                    if let Err(err) = sandbox.destroy(agent_id, workspace.as_deref()).await {
                        tracing::warn!(%agent_id, error = %err, "removing the taken warm runtime failed");
                    }
                } else {
                    sandbox.stop(agent_id).await;
                }
                self.execute(
                    agent_id,
                    AgentCommand::FailDeployment {
                        deployment_id,
                        step,
                        // The owner reads a fixed sentence; the cause (paths, system errors)
                        // is in the log line above.
                        error: public_failure(step).to_owned(),
                    },
                )
                .await?;
                Ok(())
            }
            Err(outcome) => Err(outcome),
        }
    }

    /// Runs the six steps. The outer error is a retry (the log was unreachable); the inner one
    /// a failed step; `Ok(Ok(()))` also when the attempt moved on (nothing more to do).
    async fn run_steps(
        &self,
        agent_id: AgentId,
        deployment_id: Uuid,
        (agent, sandbox): (&Agent, &Arc<dyn Provisioner>),
        done: Option<DeploymentStep>,
        (endpoint, workspace): (&mut String, &mut Option<String>),
    ) -> Result<Step, Outcome> {
        use DeploymentStep as S;
        let record = |step: DeploymentStep| async move {
            if done.is_some_and(|done| step <= done) {
                return Ok(true);
            }
            self.execute(
                agent_id,
                AgentCommand::CompleteDeploymentStep {
                    deployment_id,
                    step,
                },
            )
            .await
        };
        macro_rules! step {
            ($step:expr, $body:expr) => {{
                let began = std::time::Instant::now();
                let result =
                    trace::child($step.as_str(), trace::SpanKind::Internal, async { $body }).await;
                warren_commands::metrics::global().deploy_step($step.as_str(), began.elapsed());
                let value = match result {
                    Ok(value) => value,
                    Err(err) => return Ok(Err(($step, err.to_string()))),
                };
                if !record($step).await? {
                    sandbox.stop(agent_id).await;
                    return Ok(Ok(()));
                }
                value
            }};
        }
        *workspace = step!(S::Allocating, self.allocate(agent_id, agent, sandbox).await);
        let token = secrets::generate();
        step!(S::Provisioning, self.tokens.put(agent_id, &token).await);
        step!(S::Installing, sandbox.install().await);
        // A fresh deployment gets a fresh address (a warm pool's workspace keeps its own).
        // The tier is read now, so a redeploy applies the owner's current one.
        let tier = self.owner_tier(agent).await.map_err(Outcome::Retry)?;
        let spec = RuntimeSpec {
            endpoint: None,
            workspace: workspace.clone(),
            ..self.settings.spec(agent_id, agent, tier)
        };
        step!(S::Configuring, sandbox.configure(&spec).await);
        let url = step!(S::Starting, sandbox.start(agent_id, &token).await);
        step!(S::HealthCheck, {
            if self.wait_healthy(sandbox.as_ref(), agent_id).await {
                Ok(())
            } else {
                Err(format!(
                    "the runtime did not answer /health within {:?}",
                    self.settings.health_timeout
                ))
            }
        });
        *endpoint = url;
        Ok(Ok(()))
    }

    /// Step `allocating`: the workspace the log recorded, else a warm pool's runtime for an
    /// agent never deployed (its workspace comes with it), else the agent's default one.
    async fn allocate(
        &self,
        agent_id: AgentId,
        agent: &Agent,
        sandbox: &Arc<dyn Provisioner>,
    ) -> Result<Option<String>, provisioner::ProvisionError> {
        if agent.workspace.is_some() {
            return Ok(agent.workspace.clone());
        }
        if self.settings.warm_pool > 0 && agent.endpoint_url.is_none() {
            let taken = sandbox
                .take_warm(agent_id, &self.settings.warm_spec())
                .await;
            match taken {
                Ok(Some(workspace)) => {
                    self.refill.notify_one();
                    return Ok(Some(workspace));
                }
                Ok(None) => tracing::info!(%agent_id, "the warm pool is empty: a cold start"),
                Err(err) => {
                    tracing::warn!(%agent_id, error = %err, "taking from the warm pool failed: a cold start");
                }
            }
        }
        sandbox.allocate(agent_id).await.map(|()| None)
    }

    /// Polls the runtime's health until it answers or the health timeout passes: every 25 ms
    /// for the first second (a warm pool's runtime answers within tens of milliseconds, and
    /// each poll costs a request on the host), then every 100 ms.
    async fn wait_healthy(&self, provisioner: &dyn Provisioner, agent_id: AgentId) -> bool {
        let started = tokio::time::Instant::now();
        let deadline = started + self.settings.health_timeout;
        loop {
            if provisioner.healthy(agent_id).await {
                return true;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            let pause = if now - started < Duration::from_secs(1) {
                Duration::from_millis(25)
            } else {
                Duration::from_millis(100)
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// (Re)starts a running agent's runtime where it is, or recreates it in the sandbox on its
    /// recorded endpoint when it is nowhere; logs failures (the reconciler tries again).
    async fn restart(&self, agent_id: AgentId, agent: &Agent) {
        let token = match self.tokens.get(agent_id).await {
            Ok(Some(token)) => token,
            Ok(None) => {
                tracing::warn!(%agent_id, "no stored token: cannot start the agent");
                return;
            }
            Err(err) => {
                tracing::warn!(%agent_id, error = %err, "reading the agent token failed");
                return;
            }
        };
        let provisioner = match self.holder(agent_id).await {
            Some((provisioner, _)) => provisioner,
            None => {
                let tier = match self.owner_tier(agent).await {
                    Ok(tier) => tier,
                    Err(err) => {
                        tracing::warn!(%agent_id, error = err, "not recreating the agent's runtime");
                        return;
                    }
                };
                let sandbox = match self.sandbox_for(agent) {
                    Ok(sandbox) => sandbox,
                    Err(err) => {
                        tracing::warn!(%agent_id, error = err, "not recreating the agent's runtime");
                        return;
                    }
                };
                let spec = self.settings.spec(agent_id, agent, tier);
                let made = async {
                    if spec.workspace.is_none() {
                        sandbox.allocate(agent_id).await?;
                    }
                    sandbox.configure(&spec).await
                }
                .await;
                if let Err(err) = made {
                    tracing::warn!(%agent_id, error = %err, "recreating the agent's runtime failed");
                    return;
                }
                tracing::info!(%agent_id, sandbox = sandbox.kind(), "agent runtime recreated");
                sandbox
            }
        };
        match provisioner.start(agent_id, &token).await {
            Ok(url) => {
                if agent.endpoint_url.as_deref().is_some_and(|e| e != url) {
                    tracing::warn!(%agent_id, endpoint = url, recorded = ?agent.endpoint_url, "the runtime came back on another address");
                }
                if self.wait_healthy(provisioner.as_ref(), agent_id).await {
                    tracing::info!(%agent_id, endpoint = url, "agent runtime started");
                } else {
                    tracing::warn!(%agent_id, "restarted agent does not answer /health");
                }
            }
            Err(err) => tracing::warn!(%agent_id, error = %err, "starting the agent failed"),
        }
    }

    /// Removes the runtime and workspace everywhere, purges the token, then records
    /// `DestroyAgent`.
    async fn destroy(&self, agent_id: AgentId) -> Result<(), Outcome> {
        let agent = self.load(agent_id).await?;
        if agent.status != AgentStatus::Deleted {
            return Ok(());
        }
        for provisioner in &self.provisioners {
            provisioner
                .destroy(agent_id, agent.workspace.as_deref())
                .await
                .map_err(|err| Outcome::Retry(err.to_string()))?;
        }
        self.tokens
            .purge(agent_id)
            .await
            .map_err(|err| Outcome::Retry(err.to_string()))?;
        self.forget_usage(agent_id).await;
        if !agent.destroyed {
            self.execute(agent_id, AgentCommand::DestroyAgent).await?;
            tracing::info!(%agent_id, "agent destroyed");
        }
        Ok(())
    }

    /// Every agent the log knows: one subject per agent in the `AGENTS` stream.
    async fn known_agents(&self) -> Result<BTreeSet<AgentId>, String> {
        let stream = self
            .js
            .get_stream_no_info(topology::AGENTS)
            .await
            .map_err(|err| err.to_string())?;
        let mut subjects = stream
            .info_with_subjects("agent.*")
            .await
            .map_err(|err| err.to_string())?;
        let mut agents = BTreeSet::new();
        while let Some(subject) = subjects.next().await {
            let (subject, _) = subject.map_err(|err| err.to_string())?;
            if let Some(id) = subject
                .strip_prefix("agent.")
                .and_then(|id| id.parse().ok())
            {
                agents.insert(id);
            }
        }
        Ok(agents)
    }

    /// One reconciliation pass: the agents the log knows against every provisioner's runtimes.
    pub async fn reconcile(&self) {
        let _pass = self.reconciling.lock().await;
        let mut actual: BTreeMap<AgentId, (Arc<dyn Provisioner>, Actual)> = BTreeMap::new();
        for provisioner in &self.provisioners {
            match provisioner.actual().await {
                Ok(found) => {
                    for runtime in found {
                        actual
                            .entry(runtime.agent_id)
                            .or_insert_with(|| (provisioner.clone(), runtime));
                    }
                }
                Err(err) => {
                    tracing::warn!(sandbox = provisioner.kind(), error = %err, "listing runtimes failed: not reconciling");
                    return;
                }
            }
        }
        let known = match self.known_agents().await {
            Ok(known) => known,
            Err(err) => {
                tracing::warn!(
                    error = err,
                    "listing the log's agents failed: not reconciling"
                );
                return;
            }
        };
        let mut lost = self.handle_lost().await;
        lost.extend(self.handle_returned().await);
        let ids: BTreeSet<AgentId> = known.into_iter().chain(actual.keys().copied()).collect();
        for agent_id in ids {
            // Another deployer's (its host's lease), or handled above.
            if lost.contains(&agent_id) || self.provisioners.iter().any(|p| p.foreign(agent_id)) {
                continue;
            }
            let _guard = self.locks.lock(agent_id).await;
            // The list was taken before the lock: a deployment may have finished since. A
            // runtime that looked missing or stopped is looked at again before acting.
            let fresh = match actual.get(&agent_id) {
                Some(found) if found.1.state != ActualState::Stopped => Some(found.clone()),
                _ => self.holder(agent_id).await,
            };
            // Looking again read the placements again: an agent placed since the pass began, on
            // a host another deployer holds, is that deployer's (else a healthy runtime there
            // would be taken for missing and recreated).
            if fresh.is_none() && self.provisioners.iter().any(|p| p.foreign(agent_id)) {
                continue;
            }
            if let Err(Outcome::Retry(reason)) = self.reconcile_one(agent_id, fresh.as_ref()).await
            {
                tracing::warn!(%agent_id, reason, "reconciling failed");
            }
        }
        self.record_usage().await;
    }

    /// Whether a runtime that should be up answers `/health`: asked up to three times, half a
    /// second apart, so one slow answer (a busy host, a takeover's burst of checks) does not
    /// restart a healthy agent.
    async fn answers(&self, provisioner: &dyn Provisioner, agent_id: AgentId) -> bool {
        for attempt in 0..3 {
            if provisioner.healthy(agent_id).await {
                return true;
            }
            if attempt < 2 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        false
    }

    /// Agents whose runtime went with its machine (a host that is down): a running one is
    /// reported failed, and deployed elsewhere when the provisioner says so. Returns them.
    async fn handle_lost(&self) -> BTreeSet<AgentId> {
        let mut handled = BTreeSet::new();
        for provisioner in &self.provisioners {
            for agent_id in provisioner.lost() {
                let _guard = self.locks.lock(agent_id).await;
                let outcome = async {
                    let agent = self.load(agent_id).await?;
                    // Stopped, paused or deleted ones are reconciled as usual (a deleted one is
                    // released from its host).
                    if !matches!(agent.status, AgentStatus::Running | AgentStatus::Failed) {
                        return Ok(());
                    }
                    handled.insert(agent_id);
                    if agent.status == AgentStatus::Running {
                        let command = AgentCommand::ReportAgentFailure {
                            error: "its host is down".into(),
                        };
                        if self.execute(agent_id, command).await? {
                            tracing::warn!(%agent_id, "the agent's host is down: agent failed");
                        }
                    }
                    let agent = self.load(agent_id).await?;
                    if provisioner.redeploys_lost() && agent.status == AgentStatus::Failed {
                        provisioner
                            .destroy(agent_id, None)
                            .await
                            .map_err(|err| Outcome::Retry(err.to_string()))?;
                        let command = AgentCommand::RepairAgent {
                            deployment_id: Uuid::now_v7(),
                        };
                        if self.execute(agent_id, command).await? {
                            tracing::info!(%agent_id, "deploying the agent of a down host elsewhere");
                        }
                    }
                    Ok::<(), Outcome>(())
                }
                .await;
                if let Err(Outcome::Retry(reason)) = outcome {
                    tracing::warn!(%agent_id, reason, "handling a lost agent failed");
                }
            }
        }
        handled
    }

    /// Agents whose host answers again after it was down: the ones failed with it (and not
    /// moved elsewhere) are deployed on it again. Returns them.
    async fn handle_returned(&self) -> BTreeSet<AgentId> {
        let mut handled = BTreeSet::new();
        for provisioner in &self.provisioners {
            for agent_id in provisioner.returned() {
                let _guard = self.locks.lock(agent_id).await;
                let outcome = async {
                    if self.load(agent_id).await?.status != AgentStatus::Failed {
                        return Ok(());
                    }
                    handled.insert(agent_id);
                    let command = AgentCommand::RepairAgent {
                        deployment_id: Uuid::now_v7(),
                    };
                    if self.execute(agent_id, command).await? {
                        tracing::info!(%agent_id, "the agent's host answers again: deploying it there again");
                    }
                    Ok::<(), Outcome>(())
                }
                .await;
                if let Err(Outcome::Retry(reason)) = outcome {
                    tracing::warn!(%agent_id, reason, "handling a returned agent failed");
                }
            }
        }
        handled
    }

    async fn reconcile_one(
        &self,
        agent_id: AgentId,
        actual: Option<&(Arc<dyn Provisioner>, Actual)>,
    ) -> Result<(), Outcome> {
        let agent = self.load(agent_id).await?;
        match agent.status {
            AgentStatus::Deleted if actual.is_some() || !agent.destroyed => {
                self.destroy(agent_id).await
            }
            AgentStatus::Running => {
                let current = self.settings.runtime_fingerprint();
                if let Some((_, runtime)) = actual
                    && runtime.fingerprint.as_deref() != Some(current.as_str())
                {
                    // Recorded as an attempt of its own, so owners see why their agent moved.
                    let command = AgentCommand::ReconfigureAgent {
                        deployment_id: Uuid::now_v7(),
                    };
                    if self.execute(agent_id, command).await? {
                        tracing::info!(%agent_id, "the platform's runtime settings changed: redeploying");
                    }
                    return Ok(());
                }
                match actual {
                    Some((provisioner, runtime)) => {
                        if runtime.oom_killed && runtime.state == ActualState::Stopped {
                            tracing::warn!(%agent_id, "the agent's runtime was killed for memory: restarting it");
                        }
                        let up = match runtime.state {
                            ActualState::Running => {
                                self.answers(provisioner.as_ref(), agent_id).await
                            }
                            ActualState::Paused => {
                                // The log does not say paused: thaw it.
                                if let Err(err) = provisioner.resume(agent_id).await {
                                    tracing::warn!(%agent_id, error = %err, "resuming failed");
                                }
                                provisioner.healthy(agent_id).await
                            }
                            ActualState::Stopped => false,
                        };
                        if runtime.state != ActualState::Stopped {
                            self.health_checked(agent_id, up).await;
                        }
                        if up {
                            self.pause_if_idle(agent_id, provisioner.as_ref()).await?;
                        } else {
                            tracing::info!(%agent_id, "running agent has no live runtime: restarting it");
                            self.restart(agent_id, &agent).await;
                        }
                    }
                    None => {
                        tracing::info!(%agent_id, "running agent has no runtime: recreating it");
                        self.restart(agent_id, &agent).await;
                    }
                }
                Ok(())
            }
            AgentStatus::Paused => {
                // A frozen runtime is left alone; a stopped or missing one is started again
                // when the agent resumes.
                if let Some((provisioner, runtime)) = actual
                    && runtime.state == ActualState::Running
                {
                    self.freeze_unless_used(agent_id, provisioner.as_ref())
                        .await?;
                }
                Ok(())
            }
            AgentStatus::Stopped | AgentStatus::Failed => {
                if let Some((provisioner, runtime)) = actual
                    && runtime.state != ActualState::Stopped
                {
                    provisioner.stop(agent_id).await;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

fn agent_of(event: &AgentEvent) -> AgentId {
    match event {
        AgentEvent::DeploymentRequested { agent_id, .. }
        | AgentEvent::RepairRequested { agent_id, .. }
        | AgentEvent::RedeployRequested { agent_id, .. }
        | AgentEvent::AgentCreated { agent_id, .. }
        | AgentEvent::AgentConfigUpdated { agent_id, .. }
        | AgentEvent::DeploymentStepCompleted { agent_id, .. }
        | AgentEvent::AgentDeployed { agent_id, .. }
        | AgentEvent::DeploymentFailed { agent_id, .. }
        | AgentEvent::AgentStopped { agent_id }
        | AgentEvent::AgentStarted { agent_id }
        | AgentEvent::AgentRestarted { agent_id }
        | AgentEvent::AgentPaused { agent_id }
        | AgentEvent::AgentResumed { agent_id }
        | AgentEvent::AgentFailed { agent_id, .. }
        | AgentEvent::AgentDeleted { agent_id }
        | AgentEvent::AgentDestroyed { agent_id }
        | AgentEvent::ExecRequested { agent_id, .. }
        | AgentEvent::ExecFinished { agent_id, .. }
        | AgentEvent::FileUploaded { agent_id, .. }
        | AgentEvent::FileDownloaded { agent_id, .. }
        | AgentEvent::ModelUsageMetered { agent_id, .. }
        | AgentEvent::SandboxAlerted { agent_id, .. } => *agent_id,
    }
}

/// What an agent's owner is told when a deployment step fails: a fixed sentence per step. The
/// cause may name host paths, binaries and system errors, so it goes to the deployer's log only.
pub fn public_failure(step: DeploymentStep) -> &'static str {
    match step {
        DeploymentStep::Allocating => "could not set up the agent's workspace",
        DeploymentStep::Provisioning => "could not provision the agent's credentials",
        DeploymentStep::Installing => "the agent runtime is not installed on this platform",
        DeploymentStep::Configuring => "could not write the agent's configuration",
        DeploymentStep::Starting => "the agent runtime did not start",
        DeploymentStep::HealthCheck => "the agent runtime did not become healthy in time",
    }
}
