//! The deployer worker (DESIGN §4) with the `process` provisioner.
//!
//! It reads the `AGENTS` stream through the durable consumer `deployer` (explicit acks) and acks
//! a commit only after its side effect and the resulting command are committed; a failure is
//! redelivered after a delay, an unreadable commit is terminated. Every reaction checks the
//! agent's *current* state first, so redelivery and history replay are harmless:
//!
//! - an attempt opened (`DeploymentRequested`, `RepairRequested`, `RedeployRequested`) is run only
//!   while it is still the agent's current attempt: stop the old process, then the six steps,
//!   each recorded with `CompleteDeploymentStep` as it completes (steps already recorded are not
//!   recorded again), then `CompleteDeployment`; a failure records `FailDeployment` at the step
//!   that was due and stops the half-started process. `deployment_not_active` and
//!   `step_out_of_order` mean someone else moved the agent on: the attempt is dropped.
//! - `AgentStopped` kills the process group if the agent is still stopped; `AgentStarted` /
//!   `AgentRestarted` restart it from `process.json` if it is running; `AgentDeleted` kills it,
//!   removes its files and token, then records `DestroyAgent`.
//!
//! A reconciler runs at start and every `reconcile_every`: for each agent directory it compares
//! the agent's state in the log with the process (pid alive and `/health` answering). Running
//! agents that answer are left alone; missing ones are restarted on their recorded address, so
//! the endpoint in the log stays valid (docs/adr/0006-deployer.md); stopped or failed ones are
//! killed; deleted ones are cleaned up and destroyed. A running agent whose runtime was started
//! with other platform settings (the default provider's protocol, the platform URL:
//! `runtime_fingerprint`) is redeployed instead, recorded as
//! `RedeployRequested { reason: platform_config_changed }`. Runtimes hold no provider key: they
//! call their model through the edge's model proxy (ADR 23).
//!
//! Under `warren dev` (`stop_agents_on_shutdown`) the deployer stops every agent process when it
//! stops; the next start's first reconciliation restarts the running ones (docs/adr/0021).

pub mod process;

use crate::consume::{ConsumeError, Durable, Handled, consume};
use crate::supervise::supervise;
use async_nats::jetstream;
use process::{Layout, ProcessError, ProcessRecord, ProcessSettings};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use warren_commands::secrets::{self, AgentTokens, TokenError};
use warren_commands::{CommandError, CommandMeta, CommandService, codec, topology};
use warren_domain::agent::{
    Agent, AgentCommand, AgentError, AgentEvent, AgentStatus, DeploymentStep,
};
use warren_domain::envelope::Actor;
use warren_domain::ids::AgentId;

/// The durable consumer's name.
pub const CONSUMER: &str = "deployer";

/// The deployer's configuration.
#[derive(Clone, Debug)]
pub struct DeployerSettings {
    /// Agents' files live under `<data_dir>/agents`.
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
    /// Whether the agents' processes stop when the deployer does (`warren dev`: nothing it
    /// started outlives it; the next start restarts them). Otherwise they outlive it.
    pub stop_agents_on_shutdown: bool,
}

impl DeployerSettings {
    /// A fingerprint of the platform settings that shape a runtime (the default provider's
    /// protocol, the platform URL, and that it calls its model through the proxy, so runtimes
    /// started with a key before ADR 23 are redeployed without one). `process.json` keeps it; a
    /// running agent whose runtime was started with another one is redeployed
    /// (`ReconfigureAgent`). The provider's key and URL are the edge's business now: changing
    /// them redeploys nothing.
    pub fn runtime_fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        for part in [
            Some("model-proxy"),
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

    /// Puts the current platform settings into a runtime's settings.
    fn apply_platform(&self, settings: &mut ProcessSettings) {
        settings.provider = self.default_provider.clone();
        settings.platform_url = Some(self.platform_url.clone());
        settings.platform_fingerprint = Some(self.runtime_fingerprint());
    }
}

/// Why the deployer could not start or its consumer stopped.
#[derive(Debug, thiserror::Error)]
pub enum DeployerError {
    /// The token store could not be opened.
    #[error("opening the secrets bucket failed")]
    Tokens(#[from] TokenError),
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
    layout: Layout,
    settings: DeployerSettings,
    http: reqwest::Client,
    /// One agent operation at a time (consumer and reconciler share the processes).
    ops: tokio::sync::Mutex<()>,
}

type Step = Result<(), (DeploymentStep, String)>;

impl Deployer {
    /// Builds the deployer; `master_key` is the 32-byte AES key that seals agent tokens.
    pub async fn build(
        commands: CommandService,
        master_key: &[u8],
        settings: DeployerSettings,
    ) -> Result<Self, DeployerError> {
        let js = commands.jetstream().clone();
        let tokens = AgentTokens::open(&js, master_key).await?;
        Ok(Self {
            js,
            commands,
            tokens,
            layout: Layout::new(&settings.data_dir),
            settings,
            http: reqwest::Client::new(),
            ops: tokio::sync::Mutex::new(()),
        })
    }

    /// Runs the consumer and the reconciler until `shutdown`, restarting after failures.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = &self;
        let consume = supervise("deployer", shutdown.clone(), || {
            this.run_once(shutdown.clone())
        });
        let reconcile = async {
            loop {
                this.reconcile().await;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(this.settings.reconcile_every) => {}
                }
            }
        };
        tokio::join!(consume, reconcile);
        if self.settings.stop_agents_on_shutdown {
            self.stop_all().await;
        }
    }

    /// Stops every agent process (the log still wants the running ones running: the next
    /// start's reconciliation restarts them).
    async fn stop_all(&self) {
        let _guard = self.ops.lock().await;
        let stops = self
            .layout
            .agents()
            .into_iter()
            .map(|agent_id| self.stop_process(agent_id));
        futures::future::join_all(stops).await;
        tracing::info!("agent processes stopped with the deployer");
    }

    async fn run_once(&self, shutdown: CancellationToken) -> Result<(), DeployerError> {
        let durable = Durable {
            stream: topology::AGENTS,
            name: CONSUMER,
            filter: "agent.*",
            ack_wait: Duration::from_secs(300),
        };
        consume(&self.js, &durable, &shutdown, |message| async move {
            let envelopes = match codec::decode::<AgentEvent>(&message.payload) {
                Ok(envelopes) => envelopes,
                Err(err) => return Handled::Poison(err.to_string()),
            };
            for envelope in envelopes {
                if let Err(Outcome::Retry(reason)) = self.handle(&envelope.event).await {
                    return Handled::Retry {
                        reason,
                        after: Duration::from_secs(2),
                    };
                }
            }
            Handled::Done
        })
        .await?;
        Ok(())
    }

    async fn handle(&self, event: &AgentEvent) -> Result<(), Outcome> {
        let _guard = self.ops.lock().await;
        if let Some(deployment_id) = event.opened_deployment() {
            let agent_id = agent_of(event);
            return self.deploy(agent_id, deployment_id).await;
        }
        match event {
            AgentEvent::AgentStopped { agent_id } => {
                let agent = self.load(*agent_id).await?;
                if agent.status == AgentStatus::Stopped {
                    self.stop_process(*agent_id).await;
                }
                Ok(())
            }
            AgentEvent::AgentStarted { agent_id } | AgentEvent::AgentRestarted { agent_id } => {
                let agent = self.load(*agent_id).await?;
                if agent.status == AgentStatus::Running {
                    self.restart(*agent_id).await;
                }
                Ok(())
            }
            AgentEvent::AgentDeleted { agent_id } => self.destroy(*agent_id).await,
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

    async fn deploy(&self, agent_id: AgentId, deployment_id: Uuid) -> Result<(), Outcome> {
        let agent = self.load(agent_id).await?;
        let Some(deployment) = agent
            .deployment
            .filter(|d| d.deployment_id == deployment_id)
        else {
            // Completed, failed or superseded already.
            return Ok(());
        };
        tracing::info!(%agent_id, %deployment_id, "deploying");
        // A redeploy or repair replaces the old process.
        self.stop_process(agent_id).await;
        let done = deployment.completed;
        let mut endpoint = String::new();
        let outcome = self
            .run_steps(agent_id, deployment_id, &agent, done, &mut endpoint)
            .await;
        match outcome {
            Ok(Ok(())) => {
                let completed = self
                    .execute(
                        agent_id,
                        AgentCommand::CompleteDeployment {
                            deployment_id,
                            endpoint_url: endpoint.clone(),
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
                self.stop_process(agent_id).await;
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
        agent: &Agent,
        done: Option<DeploymentStep>,
        endpoint: &mut String,
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
                let value = match $body {
                    Ok(value) => value,
                    Err(err) => return Ok(Err(($step, err.to_string()))),
                };
                if !record($step).await? {
                    self.stop_process(agent_id).await;
                    return Ok(Ok(()));
                }
                value
            }};
        }
        let (workspace, state_dir) = step!(S::Allocating, self.layout.allocate(agent_id));
        let token = secrets::generate();
        step!(S::Provisioning, self.tokens.put(agent_id, &token).await);
        let binary = step!(
            S::Installing,
            process::locate_binary(self.settings.agent_bin.as_deref())
        );
        let mut settings = ProcessSettings {
            workspace,
            state_dir,
            binary,
            system_prompt: agent.system_prompt.clone(),
            model: agent.model.clone(),
            provider: None,
            addr: "127.0.0.1:0".into(),
            platform_url: None,
            agent_id: Some(agent_id),
            platform_fingerprint: None,
        };
        self.settings.apply_platform(&mut settings);
        let mut process_record = ProcessRecord {
            settings,
            pid: None,
            endpoint: None,
        };
        step!(S::Configuring, self.layout.write(agent_id, &process_record));
        let (pid, url) = step!(
            S::Starting,
            async {
                let (pid, url) = self
                    .spawn(agent_id, &process_record.settings, &token)
                    .await?;
                process_record.pid = Some(pid);
                process_record.endpoint = Some(url.clone());
                process_record.settings.addr = url.trim_start_matches("http://").to_owned();
                self.layout.write(agent_id, &process_record)?;
                Ok::<_, ProcessError>((pid, url))
            }
            .await
        );
        let _ = pid;
        step!(S::HealthCheck, {
            if process::wait_healthy(&self.http, &url, self.settings.health_timeout).await {
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

    async fn spawn(
        &self,
        agent_id: AgentId,
        settings: &ProcessSettings,
        token: &str,
    ) -> Result<(i32, String), ProcessError> {
        let log = self.layout.agent_dir(agent_id).join("agent.log");
        process::start(settings, token, &log).await
    }

    /// Kills the agent's process group, if one is recorded and alive, and forgets the pid.
    async fn stop_process(&self, agent_id: AgentId) {
        let Some(mut record) = self.layout.read(agent_id) else {
            return;
        };
        if let Some(pid) = record.pid.take() {
            if process::alive(pid) {
                process::kill_group(pid).await;
                tracing::info!(%agent_id, pid, "agent process stopped");
            }
            if let Err(err) = self.layout.write(agent_id, &record) {
                tracing::warn!(%agent_id, error = %err, "updating process.json failed");
            }
        }
    }

    /// (Re)starts the agent from `process.json` on its recorded address, with the platform's
    /// current settings; logs failures (the reconciler tries again).
    async fn restart(&self, agent_id: AgentId) {
        self.stop_process(agent_id).await;
        let Some(mut record) = self.layout.read(agent_id) else {
            tracing::warn!(%agent_id, "no process.json: cannot start the agent");
            return;
        };
        self.settings.apply_platform(&mut record.settings);
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
        match self.spawn(agent_id, &record.settings, &token).await {
            Ok((pid, url)) => {
                record.pid = Some(pid);
                record.endpoint = Some(url.clone());
                if let Err(err) = self.layout.write(agent_id, &record) {
                    tracing::warn!(%agent_id, error = %err, "writing process.json failed");
                }
                if process::wait_healthy(&self.http, &url, self.settings.health_timeout).await {
                    tracing::info!(%agent_id, pid, endpoint = url, "agent process started");
                } else {
                    tracing::warn!(%agent_id, pid, "restarted agent does not answer /health");
                }
            }
            Err(err) => tracing::warn!(%agent_id, error = %err, "starting the agent failed"),
        }
    }

    /// Kills, removes the files and token, then records `DestroyAgent`.
    async fn destroy(&self, agent_id: AgentId) -> Result<(), Outcome> {
        let agent = self.load(agent_id).await?;
        if agent.status != AgentStatus::Deleted {
            return Ok(());
        }
        self.stop_process(agent_id).await;
        self.layout
            .remove(agent_id)
            .map_err(|err| Outcome::Retry(err.to_string()))?;
        self.tokens
            .purge(agent_id)
            .await
            .map_err(|err| Outcome::Retry(err.to_string()))?;
        if !agent.destroyed {
            self.execute(agent_id, AgentCommand::DestroyAgent).await?;
            tracing::info!(%agent_id, "agent destroyed");
        }
        Ok(())
    }

    /// One reconciliation pass over every agent directory.
    pub async fn reconcile(&self) {
        for agent_id in self.layout.agents() {
            let _guard = self.ops.lock().await;
            if let Err(Outcome::Retry(reason)) = self.reconcile_one(agent_id).await {
                tracing::warn!(%agent_id, reason, "reconciling failed");
            }
        }
    }

    async fn reconcile_one(&self, agent_id: AgentId) -> Result<(), Outcome> {
        let agent = self.load(agent_id).await?;
        match agent.status {
            AgentStatus::Deleted => self.destroy(agent_id).await,
            AgentStatus::Running => {
                let record = self.layout.read(agent_id);
                let current = self.settings.runtime_fingerprint();
                if let Some(record) = &record
                    && record.settings.platform_fingerprint.as_deref() != Some(current.as_str())
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
                let up = match record.as_ref().and_then(|r| r.pid.zip(r.endpoint.as_ref())) {
                    Some((pid, endpoint)) => {
                        process::alive(pid) && process::healthy(&self.http, endpoint).await
                    }
                    None => false,
                };
                if !up {
                    tracing::info!(%agent_id, "running agent has no live process: restarting it");
                    self.restart(agent_id).await;
                }
                Ok(())
            }
            AgentStatus::Stopped | AgentStatus::Failed => {
                self.stop_process(agent_id).await;
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
        | AgentEvent::ModelUsageMetered { agent_id, .. } => *agent_id,
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
