//! The `ssh` provisioner: agents on hosts an admin registered (existing VMs reached over SSH,
//! docs/adr/0039-ssh-hosts.md).
//!
//! - [`conn`] opens one host's SSH connection (the system `ssh` client, the pinned host key
//!   checked every time, one multiplexed master per host).
//! - [`scripts`] holds what runs on a host: the agent's user and directories, the runtime
//!   binary by content, its settings, its token, and the supervisor that keeps it running.
//! - [`engine`] connects to hosts that are Docker engines, whose agents are the `docker`
//!   provisioner's containers (docs/adr/0041-docker-hosts.md).
//! - [`lease`] shares the hosts among deployers: each reconciles the hosts it holds a lease on.
//!
//! **Scale-out.** With leases ([`SshFleet::with_leases`]) a deployer lists and reconciles only
//! the hosts it holds; a dead deployer's leases go stale after [`lease::STALE`] and another
//! takes them and reconciles at once, leaving healthy agents alone. A host that stops answering
//! is recorded down; its agents are reported lost (and deployed elsewhere when
//! `redeploy_lost`), or deployed on it again when it answers again. Agent directories on a host
//! the agent is no longer placed on (a host that was down while its agents moved) are removed
//! when the host answers again.
//!
//! **Placement.** An agent is placed on a host by the Host aggregate (`PlaceAgent`, refused when
//! the host is full or down), so two deployers never fill a host beyond its capacity; the host
//! with the most room (by share of its capacity) is tried first, among the hosts named or
//! labelled by the admin who chose one at creation. The placement is in the log,
//! so any deployer finds the agent's host again; destroying the agent releases it.
//!
//! **Keys.** The host's private key comes from the `secrets` bucket; its public key is pinned on
//! first contact (`ssh-keyscan`, recorded as `HostKeyPinned`) unless the admin pinned it, and
//! every connection is refused when the host presents another.
//!
//! **Network.** The runtime listens on the host's address on a port of its own (kept across
//! restarts), and chat workers reach it there with its bearer token; it reaches the platform on
//! the host's `platform_url` (the platform's runtime URL by default), holding no provider key.
//!
//! **Limits and usage.** Each agent runs under its owner's tier's sandbox limits
//! ([`SshFleet::with_limits`]: rlimits, and a cgroup on cgroup v2 hosts); its usage is read
//! from the host's `/proc` at each reconciliation.

pub mod conn;
pub mod engine;
pub mod lease;
mod pool;
pub mod scripts;

use super::docker::SandboxLimits;
use super::provisioner::{
    Actual, ActualState, ProvisionError, Provisioned, Provisioner, RuntimeSpec, Usage, WarmSpec,
};
use async_trait::async_trait;
use conn::{Session, SshError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use warren_commands::secrets::HostKeys;
use warren_commands::{CommandError, CommandMeta, CommandService};
use warren_domain::Actor;
use warren_domain::host::{Host, HostCommand, HostError};
use warren_domain::ids::AgentId;
use warren_domain::user::Tier;

/// The first port tried for an agent's runtime on a host.
const FIRST_PORT: u16 = 20_000;
/// How many ports agents' runtimes may use on a host, from [`FIRST_PORT`].
const PORTS: u16 = 10_000;

/// Where one agent's runtime answers.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Endpoint {
    host: String,
    address: String,
    port: u16,
}

impl Endpoint {
    fn url(&self) -> String {
        if self.address.contains(':') {
            format!("http://[{}]:{}", self.address, self.port)
        } else {
            format!("http://{}:{}", self.address, self.port)
        }
    }
}

/// The `ssh` provisioner over every registered host.
pub struct SshFleet {
    commands: CommandService,
    keys: HostKeys,
    /// Per-host key files.
    dir: PathBuf,
    /// The runtime binary uploaded to hosts, and its SHA-256.
    binary: PathBuf,
    binary_sha: String,
    http: reqwest::Client,
    /// Where each agent's runtime answers, as last configured or listed.
    endpoints: Mutex<HashMap<AgentId, Endpoint>>,
    /// The hosts' leases; `None`: this deployer reconciles every host.
    leases: Option<lease::HostLeases>,
    /// What the last tend and listing saw.
    seen: Mutex<Seen>,
    /// Whether agents of a host that is down are deployed again elsewhere.
    redeploy_lost: bool,
    /// One port choice at a time per host (two agents configured at once would pick one port).
    port_locks: Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
    /// Warm pool slots agents took, until their runtime is assigned at `start`: the spec
    /// `configure` was given, once it was.
    taken: Mutex<HashMap<AgentId, Option<RuntimeSpec>>>,
    /// Each agent's limits, by its owner's tier (the sandboxes' settings).
    limits: SandboxLimits,
    tier_limits: std::collections::BTreeMap<Tier, SandboxLimits>,
    /// The hosts that are Docker engines, connected.
    engines: engine::Engines,
}

/// Whether `host` runs its agents in its Docker engine.
fn is_docker(host: &Host) -> bool {
    host.spec
        .as_ref()
        .is_some_and(|spec| spec.engine == warren_domain::host::HostEngine::Docker)
}

/// What the fleet last saw of the hosts.
#[derive(Default)]
struct Seen {
    /// The hosts this deployer holds (when leased).
    mine: std::collections::BTreeSet<String>,
    /// Each placed agent's host.
    placements: HashMap<AgentId, String>,
    /// Agents placed on hosts (this deployer's) that are down.
    lost: Vec<AgentId>,
    /// Agents placed on hosts that were down and answer again, until the deployer takes them
    /// (gathered by every listing: whichever call saw the host come back).
    returned: std::collections::BTreeSet<AgentId>,
}

fn failed(err: impl std::fmt::Display) -> ProvisionError {
    ProvisionError(err.to_string())
}

impl SshFleet {
    /// The provisioner: hosts' key files under `dir`, the runtime `binary` uploaded to hosts.
    pub fn new(
        commands: CommandService,
        keys: HostKeys,
        dir: &Path,
        binary: &Path,
    ) -> Result<Self, ProvisionError> {
        let mut hash = Sha256::new();
        let mut file = std::fs::File::open(binary)
            .map_err(|err| ProvisionError(format!("reading {}: {err}", binary.display())))?;
        std::io::copy(&mut file, &mut hash)
            .map_err(|err| ProvisionError(format!("reading {}: {err}", binary.display())))?;
        Ok(Self {
            commands,
            keys,
            dir: dir.to_owned(),
            binary: binary.to_owned(),
            binary_sha: hex::encode(hash.finalize()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(failed)?,
            endpoints: Mutex::default(),
            leases: None,
            seen: Mutex::default(),
            redeploy_lost: false,
            port_locks: Mutex::default(),
            taken: Mutex::default(),
            limits: SandboxLimits::default(),
            tier_limits: std::collections::BTreeMap::new(),
            engines: engine::Engines::default(),
        })
    }

    /// Runs the agents of hosts registered as Docker engines with `settings`.
    pub fn with_docker_hosts(mut self, settings: engine::EngineSettings) -> Self {
        self.engines = engine::Engines::new(settings);
        self
    }

    /// The docker provisioner of host `name`, when it is a Docker engine.
    async fn engine(
        &self,
        name: &str,
        host: &Host,
    ) -> Provisioned<Option<std::sync::Arc<engine::Engine>>> {
        if !is_docker(host) {
            return Ok(None);
        }
        let session = self.session(name, host).await?;
        self.engines.get(name, host, &session).await.map(Some)
    }

    /// The docker provisioner of the agent's host, when that host is a Docker engine.
    async fn agent_engine(
        &self,
        agent_id: AgentId,
    ) -> Provisioned<Option<std::sync::Arc<engine::Engine>>> {
        match self.placed(agent_id).await? {
            Some((name, host)) => self.engine(&name, &host).await,
            None => Ok(None),
        }
    }

    /// Shares the hosts with other deployers through leases in `kv` (the `leases` bucket),
    /// as deployer `deployer`.
    pub fn with_leases(mut self, kv: async_nats::jetstream::kv::Store, deployer: String) -> Self {
        self.leases = Some(lease::HostLeases::new(kv, deployer));
        self
    }

    /// Each agent's memory, CPU and process limits: `limits`, or its owner's tier's.
    pub fn with_limits(
        mut self,
        limits: SandboxLimits,
        tier_limits: std::collections::BTreeMap<Tier, SandboxLimits>,
    ) -> Self {
        self.limits = limits;
        self.tier_limits = tier_limits;
        self
    }

    /// Deploys the agents of a host that is down again on another host.
    pub fn redeploying_lost(mut self, redeploy: bool) -> Self {
        self.redeploy_lost = redeploy;
        self
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().expect("seen lock")
    }

    /// Whether this deployer reconciles host `name`.
    fn holds(&self, name: &str) -> bool {
        self.leases.is_none() || self.seen().mine.contains(name)
    }

    fn meta() -> CommandMeta {
        CommandMeta::new(Actor::System(super::CONSUMER.into()))
    }

    async fn hosts(&self) -> Provisioned<Vec<(String, Host)>> {
        self.commands
            .hosts()
            .await
            .map_err(|err| ProvisionError(format!("reading the hosts: {err}")))
    }

    /// The host `agent_id` is placed on, if any.
    async fn placed(&self, agent_id: AgentId) -> Provisioned<Option<(String, Host)>> {
        Ok(self
            .hosts()
            .await?
            .into_iter()
            .find(|(_, host)| host.agents.contains(&agent_id)))
    }

    /// A connection to `name`, its key pinned first if it is not yet.
    async fn session(&self, name: &str, host: &Host) -> Provisioned<Session> {
        let spec = host
            .spec
            .as_ref()
            .ok_or_else(|| ProvisionError(format!("host {name} is not registered")))?;
        let private_key = self
            .keys
            .get(name)
            .await
            .map_err(failed)?
            .ok_or_else(|| ProvisionError(format!("host {name} has no private key")))?;
        let host_key = match &host.host_key {
            Some(key) => key.clone(),
            None => {
                let seen = conn::scan_host_key(&spec.address, spec.port)
                    .await
                    .map_err(failed)?;
                let pinned = self
                    .commands
                    .hosts
                    .execute(
                        name,
                        HostCommand::PinHostKey {
                            host_key: seen.clone(),
                        },
                        &Self::meta(),
                    )
                    .await;
                match pinned {
                    Ok(_) => {
                        tracing::info!(host = name, key = seen, "host key pinned");
                        seen
                    }
                    // Another connection pinned first (maybe another of the host's keys): that
                    // pin stands, and the connection checks it.
                    Err(CommandError::Rejected(HostError::HostKeyMismatch { .. })) => {
                        let (host, _) = self.commands.hosts.load(name).await.map_err(failed)?;
                        host.host_key.ok_or_else(|| {
                            ProvisionError(format!("host {name}: the pinned key vanished"))
                        })?
                    }
                    Err(err) => return Err(ProvisionError(format!("pinning the host key: {err}"))),
                }
            }
        };
        Session::prepare(&self.dir, name, spec, &private_key, &host_key).map_err(failed)
    }

    /// The agent's host and a connection to it.
    async fn agent_session(&self, agent_id: AgentId) -> Provisioned<Option<(Session, Host)>> {
        match self.placed(agent_id).await? {
            Some((name, host)) => Ok(Some((self.session(&name, &host).await?, host))),
            None => Ok(None),
        }
    }

    /// Runs `script` on the agent's host; `None` when the agent is on no host.
    async fn on_agent_host(
        &self,
        agent_id: AgentId,
        what: &str,
        script: &str,
        input: &[u8],
    ) -> Provisioned<Option<String>> {
        match self.agent_session(agent_id).await? {
            Some((session, _)) => session
                .run(what, script, input)
                .await
                .map(Some)
                .map_err(failed),
            None => Ok(None),
        }
    }

    /// Places the agent on the host with the most room among those it may go to (the one named,
    /// or labelled, by the admin who created it; any otherwise), unless it is placed already.
    async fn place(&self, agent_id: AgentId) -> Provisioned<(String, Host)> {
        let hosts = self.hosts().await?;
        if let Some(found) = hosts
            .iter()
            .find(|(_, host)| host.agents.contains(&agent_id))
        {
            return Ok(found.clone());
        }
        let (agent, _) = self
            .commands
            .agents
            .load(&agent_id.to_string())
            .await
            .map_err(failed)?;
        let wanted = agent.host.as_deref();
        let allowed = |name: &str, host: &Host| {
            wanted.is_none_or(|wanted| {
                name == wanted
                    || host
                        .spec
                        .as_ref()
                        .is_some_and(|spec| spec.labels.contains(wanted))
            })
        };
        let mut candidates: Vec<&(String, Host)> = hosts
            .iter()
            .filter(|(name, host)| host.has_room() && allowed(name, host))
            .collect();
        // The least loaded first, by share of capacity, then by name.
        candidates.sort_by(|(a_name, a), (b_name, b)| {
            let share = |host: &Host| {
                let capacity = host.spec.as_ref().map_or(1, |spec| spec.capacity.max(1));
                host.agents.len() as f64 / f64::from(capacity)
            };
            share(a).total_cmp(&share(b)).then(a_name.cmp(b_name))
        });
        for (name, _) in candidates {
            let placed = self
                .commands
                .hosts
                .execute(name, HostCommand::PlaceAgent { agent_id }, &Self::meta())
                .await;
            match placed {
                Ok(_) => {
                    let (host, _) = self.commands.hosts.load(name).await.map_err(failed)?;
                    tracing::info!(%agent_id, host = name, "agent placed");
                    return Ok((name.clone(), host));
                }
                // Filled or lost since the listing: the next one.
                Err(CommandError::Rejected(err)) => {
                    tracing::info!(%agent_id, host = name, reason = %err, "host refused the agent")
                }
                Err(err) => return Err(ProvisionError(format!("placing the agent: {err}"))),
            }
        }
        Err(ProvisionError(match wanted {
            Some(wanted) => format!(
                "no SSH host named or labelled {wanted} has room for another agent (register one or raise its capacity)"
            ),
            None => "no SSH host has room for another agent (register a host or raise a capacity)"
                .into(),
        }))
    }

    /// The binary is on the host (uploaded when it is missing or another one).
    async fn ensure_binary(&self, session: &Session) -> Provisioned<String> {
        let path = self.binary_path();
        match session
            .run(
                "checking the runtime binary",
                &scripts::has_binary(&path, &self.binary_sha),
                b"",
            )
            .await
        {
            Ok(_) => return Ok(path),
            Err(SshError::Failed { code: 3, .. }) => {}
            Err(err) => return Err(failed(err)),
        }
        let bytes = tokio::fs::read(&self.binary)
            .await
            .map_err(|err| ProvisionError(format!("reading {}: {err}", self.binary.display())))?;
        session
            .run(
                "uploading the runtime binary",
                &scripts::upload_binary(&path, &self.binary_sha),
                &bytes,
            )
            .await
            .map_err(failed)?;
        tracing::info!(host = session.name, path, "runtime binary uploaded");
        Ok(path)
    }

    /// One port choice at a time on host `name`: held until the port is written there.
    async fn choosing_port(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .port_locks
            .lock()
            .expect("port locks")
            .entry(name.to_owned())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// Where the runtime binary is on a host: by content.
    fn binary_path(&self) -> String {
        format!(
            "{}/warren-agent-{}",
            scripts::BIN_DIR,
            &self.binary_sha[..16]
        )
    }

    /// The port the agent's runtime listens on: the recorded endpoint's, else the one it kept
    /// on the host, else a free one no other agent there keeps.
    async fn port(&self, session: &Session, spec: &RuntimeSpec) -> Provisioned<u16> {
        if let Some(port) = spec
            .endpoint
            .as_deref()
            .and_then(|url| url.rsplit_once(':'))
            .and_then(|(_, port)| port.trim_end_matches('/').parse::<u16>().ok())
        {
            return Ok(port);
        }
        // From the id's last bytes (random in both v4 and v7 ids: agents created together do
        // not all try the same port first).
        let bytes = spec.agent_id.0.as_bytes();
        Self::free_port(
            session,
            &scripts::ports(spec.agent_id),
            [bytes[14], bytes[15]],
        )
        .await
    }

    /// The port `ports` (a [`scripts::ports`] listing) says is this one's, else a free one no
    /// agent or slot keeps, tried from `seed` on.
    async fn free_port(session: &Session, ports: &str, seed: [u8; 2]) -> Provisioned<u16> {
        let listing = session
            .run("listing ports", ports, b"")
            .await
            .map_err(failed)?;
        let mut used = std::collections::HashSet::new();
        for line in listing.lines() {
            match line.split_once(' ') {
                Some(("mine", port)) => {
                    if let Ok(port) = port.trim().parse() {
                        return Ok(port);
                    }
                }
                Some(("listen", hex)) => {
                    if let Ok(port) = u16::from_str_radix(hex.trim(), 16) {
                        used.insert(port);
                    }
                }
                Some(("taken", port)) => {
                    if let Ok(port) = port.trim().parse::<u16>() {
                        used.insert(port);
                    }
                }
                _ => {}
            }
        }
        let start = u16::from_le_bytes(seed) % PORTS;
        (0..PORTS)
            .map(|i| FIRST_PORT + (start + i) % PORTS)
            .find(|port| !used.contains(port))
            .ok_or_else(|| ProvisionError(format!("host {} has no free port", session.name)))
    }

    /// The settings of a runtime in directory `dir` on `host`, listening on `port`: the
    /// platform's (its URL as the host reaches it, the default provider), `limits`, and no
    /// agent's.
    fn base_env(
        host: &Host,
        platform_url: &str,
        (dir, binary, port): (&str, &str, u16),
        limits: &SandboxLimits,
        provider: Option<&str>,
    ) -> Vec<(&'static str, String)> {
        let platform_url = host
            .spec
            .as_ref()
            .and_then(|spec| spec.platform_url.clone())
            .unwrap_or_else(|| platform_url.to_owned());
        let mut vars = vec![
            ("PATH", "/usr/local/bin:/usr/bin:/bin".to_owned()),
            ("HOME", format!("{dir}/home")),
            ("RUNTIME_BINARY", binary.to_owned()),
            ("LIMIT_MEMORY", limits.memory_bytes.to_string()),
            ("LIMIT_PIDS", limits.pids.to_string()),
            // cgroup v2 `cpu.max`: microseconds per 100 ms period.
            (
                "LIMIT_CPU",
                (limits.nano_cpus / 10_000).max(1000).to_string(),
            ),
            ("WARREN_AGENT_ADDR", format!("0.0.0.0:{port}")),
            ("WARREN_AGENT_TOKEN_FILE", format!("{dir}/token")),
            ("WARREN_AGENT_WORKSPACE", format!("{dir}/home/workspace")),
            ("WARREN_AGENT_STATE_DIR", format!("{dir}/home/state")),
            // No provider key on the host: the model is reached through the platform (ADR 23).
            ("WARREN_AGENT_MODEL_PROXY", "true".to_owned()),
            ("WARREN_AGENT_PLATFORM_URL", platform_url),
        ];
        if let Some(provider) = provider {
            vars.push(("WARREN_AGENT_PROVIDER", provider.to_owned()));
        }
        vars
    }

    /// The agent's runtime's settings: [`Self::base_env`] with its owner's tier's limits, and
    /// the agent's id, model and system prompt.
    fn agent_env(
        &self,
        host: &Host,
        spec: &RuntimeSpec,
        binary: &str,
        port: u16,
    ) -> Vec<(&'static str, String)> {
        let limits = self.tier_limits.get(&spec.tier).unwrap_or(&self.limits);
        let dir = scripts::dir_of(spec.agent_id);
        let mut vars = Self::base_env(
            host,
            &spec.platform_url,
            (&dir, binary, port),
            limits,
            spec.provider.as_deref(),
        );
        vars.extend([
            ("WARREN_AGENT_MODEL", spec.model.clone()),
            ("WARREN_AGENT_SYSTEM_PROMPT", spec.system_prompt.clone()),
            ("WARREN_AGENT_ID", spec.agent_id.to_string()),
        ]);
        vars
    }

    fn remember(&self, agent_id: AgentId, endpoint: Endpoint) {
        self.endpoints
            .lock()
            .expect("endpoints lock")
            .insert(agent_id, endpoint);
    }

    fn endpoint(&self, agent_id: AgentId) -> Option<Endpoint> {
        self.endpoints
            .lock()
            .expect("endpoints lock")
            .get(&agent_id)
            .cloned()
    }

    /// What one reachable host has; a host that does not answer is marked down (and up again
    /// once it answers).
    async fn list_host(&self, name: &str, host: &Host) -> Option<Vec<(Actual, Option<Endpoint>)>> {
        let session = match self.session(name, host).await {
            Ok(session) => session,
            Err(err) => {
                tracing::warn!(host = name, error = %err, "cannot reach the host");
                return None;
            }
        };
        let mut listing = session.run("listing agents", scripts::LIST, b"").await;
        if listing.as_ref().is_err_and(SshError::unreachable) {
            // Once more before calling the host down: one dropped connection is not a host
            // gone.
            tokio::time::sleep(Duration::from_secs(1)).await;
            listing = session.run("listing agents", scripts::LIST, b"").await;
        }
        let listing = match listing {
            Ok(listing) => listing,
            Err(err) => {
                tracing::warn!(host = name, error = %err, "listing the host's agents failed");
                // A host that does not answer, or answers with another key, takes no agent.
                if err.unreachable() || matches!(err, SshError::HostKeyMismatch(_)) {
                    self.mark(name, false, &err.to_string()).await;
                }
                return None;
            }
        };
        if is_docker(host) {
            // The host answers; its agents are its engine's containers.
            let listed = match self.engine(name, host).await {
                Ok(Some(engine)) => match self.engines.firewall(&session).await {
                    Ok(()) => engine.provisioner.actual().await,
                    Err(err) => Err(err),
                },
                Ok(None) => Ok(Vec::new()),
                Err(err) => Err(err),
            };
            return match listed {
                Ok(listed) => {
                    if host.down {
                        self.mark(name, true, "answers again").await;
                    }
                    Some(listed.into_iter().map(|actual| (actual, None)).collect())
                }
                // The host answered over SSH just now: its engine's trouble (a timeout, a
                // build, a relay) is not the host being down. Connected again next time.
                Err(err) => {
                    tracing::warn!(host = name, error = %err, "listing the host's containers failed");
                    self.engines.forget(name).await;
                    None
                }
            };
        }
        if host.down {
            self.mark(name, true, "answers again").await;
        }
        let spec = host.spec.as_ref()?;
        Some(
            listing
                .lines()
                .filter_map(|line| {
                    let mut parts = line.split_whitespace();
                    let agent_id: AgentId = parts.next()?.parse().ok()?;
                    let state = match parts.next()? {
                        "running" => ActualState::Running,
                        "paused" => ActualState::Paused,
                        _ => ActualState::Stopped,
                    };
                    let port = parts.next()?.parse().ok()?;
                    let fingerprint = parts.next().filter(|f| *f != "-").map(str::to_owned);
                    Some((
                        Actual {
                            agent_id,
                            state,
                            fingerprint,
                            oom_killed: false,
                        },
                        Some(Endpoint {
                            host: name.to_owned(),
                            address: spec.address.clone(),
                            port,
                        }),
                    ))
                })
                .collect(),
        )
    }

    /// Removes the agent's directory and user from its host; the error says whether the host
    /// was away (unreachable or another key).
    async fn destroy_on_host(
        &self,
        name: &str,
        host: &Host,
        agent_id: AgentId,
    ) -> Result<(), (bool, ProvisionError)> {
        match self.session(name, host).await {
            Ok(session) => session
                .run("removing the agent", &scripts::destroy(agent_id), b"")
                .await
                .map(drop)
                .map_err(|err| {
                    let away = err.unreachable() || matches!(err, SshError::HostKeyMismatch(_));
                    (away, failed(err))
                }),
            Err(err) => Err((false, err)),
        }
    }

    /// Removes an agent's directory and user from a host it is not placed on.
    async fn remove_orphan(&self, name: &str, host: &Host, agent_id: AgentId) {
        let removed = if is_docker(host) {
            match self.engine(name, host).await {
                Ok(Some(engine)) => engine.provisioner.destroy(agent_id, None).await,
                Ok(None) => Ok(()),
                Err(err) => Err(err),
            }
        } else {
            self.remove_orphan_dir(name, host, agent_id).await
        };
        match removed {
            Ok(()) => {
                tracing::info!(%agent_id, host = name, "stale agent removed from a host it is not placed on")
            }
            Err(err) => {
                tracing::warn!(%agent_id, host = name, error = %err, "removing a stale agent failed")
            }
        }
    }

    async fn remove_orphan_dir(
        &self,
        name: &str,
        host: &Host,
        agent_id: AgentId,
    ) -> Provisioned<()> {
        match self.session(name, host).await {
            Ok(session) => session
                .run("removing a stale agent", &scripts::destroy(agent_id), b"")
                .await
                .map(drop)
                .map_err(failed),
            Err(err) => Err(err),
        }
    }

    async fn mark(&self, name: &str, up: bool, reason: &str) {
        let marked = self
            .commands
            .hosts
            .execute(
                name,
                HostCommand::MarkHost {
                    up,
                    reason: reason.to_owned(),
                },
                &Self::meta(),
            )
            .await;
        match marked {
            Ok(committed) if !committed.events.is_empty() => {
                if up {
                    tracing::info!(host = name, "host up");
                } else {
                    tracing::warn!(host = name, reason, "host down");
                }
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(host = name, error = %err, "recording the host's state failed")
            }
        }
    }
}

#[async_trait]
impl Provisioner for SshFleet {
    fn kind(&self) -> &'static str {
        "ssh"
    }

    async fn allocate(&self, agent_id: AgentId) -> Provisioned<()> {
        let (name, host) = self.place(agent_id).await?;
        if let Some(engine) = self.engine(&name, &host).await? {
            return engine.provisioner.allocate(agent_id).await;
        }
        let session = self.session(&name, &host).await?;
        session
            .run(
                "creating the agent's user",
                &scripts::allocate(agent_id),
                b"",
            )
            .await
            .map_err(failed)?;
        Ok(())
    }

    async fn install(&self) -> Provisioned<()> {
        // The binary goes to the agent's host at `configure`, once its host is known.
        Ok(())
    }

    async fn configure(&self, spec: &RuntimeSpec) -> Provisioned<()> {
        let agent_id = spec.agent_id;
        if self.assigned_later(spec) {
            return Ok(());
        }
        if let Some(engine) = self.agent_engine(agent_id).await? {
            return engine.provisioner.configure(spec).await;
        }
        let (session, host) = match self.agent_session(agent_id).await? {
            Some(found) => found,
            // A warm pool's slot recorded as its workspace, and no host (it was lost with its
            // host): placed anew, and the configuration makes its directories. Workspaces do
            // not move between hosts.
            None if spec.workspace.is_some() => {
                let (name, host) = self.place(agent_id).await?;
                if let Some(engine) = self.engine(&name, &host).await? {
                    engine.provisioner.allocate(agent_id).await?;
                    return engine.provisioner.configure(spec).await;
                }
                (self.session(&name, &host).await?, host)
            }
            None => {
                return Err(ProvisionError(
                    "the agent is on no host: allocate it first".into(),
                ));
            }
        };
        let binary = self.ensure_binary(&session).await?;
        session
            .run("stopping the old runtime", &scripts::stop(agent_id), b"")
            .await
            .map_err(failed)?;
        // Held until the port is written on the host.
        let _choosing = self.choosing_port(&session.name).await;
        let port = self.port(&session, spec).await?;
        let vars = self.agent_env(&host, spec, &binary, port);
        session
            .run(
                "configuring the runtime",
                &scripts::configure(agent_id, port, &spec.fingerprint),
                scripts::env_file(&vars).as_bytes(),
            )
            .await
            .map_err(failed)?;
        self.remember(
            agent_id,
            Endpoint {
                host: session.name.clone(),
                address: session.address.clone(),
                port,
            },
        );
        Ok(())
    }

    async fn start(&self, agent_id: AgentId, token: &str) -> Provisioned<String> {
        if let Some(url) = self.assign(agent_id, token).await? {
            return Ok(url);
        }
        if let Some(engine) = self.agent_engine(agent_id).await? {
            return engine.provisioner.start(agent_id, token).await;
        }
        let (session, _) = self
            .agent_session(agent_id)
            .await?
            .ok_or_else(|| ProvisionError("the agent is on no host".into()))?;
        session
            .run(
                "storing the token",
                &scripts::write_token(agent_id),
                token.as_bytes(),
            )
            .await
            .map_err(failed)?;
        session
            .run("starting the runtime", &scripts::start(agent_id), b"")
            .await
            .map_err(failed)?;
        let endpoint = match self.endpoint(agent_id) {
            Some(endpoint) if endpoint.host == session.name => endpoint,
            _ => {
                let port = session
                    .run(
                        "reading the runtime's port",
                        &format!("cat {}/port", conn::quote(&scripts::dir_of(agent_id))),
                        b"",
                    )
                    .await
                    .map_err(failed)?
                    .trim()
                    .parse()
                    .map_err(|_| ProvisionError("the runtime has no port: configure it".into()))?;
                let endpoint = Endpoint {
                    host: session.name.clone(),
                    address: session.address.clone(),
                    port,
                };
                self.remember(agent_id, endpoint.clone());
                endpoint
            }
        };
        Ok(endpoint.url())
    }

    async fn healthy(&self, agent_id: AgentId) -> bool {
        match self.agent_engine(agent_id).await {
            Ok(Some(engine)) => return engine.provisioner.healthy(agent_id).await,
            Ok(None) => {}
            Err(_) => return false,
        }
        let endpoint = match self.endpoint(agent_id) {
            Some(endpoint) => endpoint,
            None => {
                let _ = self.actual().await;
                match self.endpoint(agent_id) {
                    Some(endpoint) => endpoint,
                    None => return false,
                }
            }
        };
        super::process::healthy(&self.http, &endpoint.url()).await
    }

    async fn stop(&self, agent_id: AgentId) {
        match self.agent_engine(agent_id).await {
            Ok(Some(engine)) => return engine.provisioner.stop(agent_id).await,
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(%agent_id, error = %err, "stopping the agent on its host failed");
                return;
            }
        }
        if let Err(err) = self
            .on_agent_host(
                agent_id,
                "stopping the runtime",
                &scripts::stop(agent_id),
                b"",
            )
            .await
        {
            tracing::warn!(%agent_id, error = %err, "stopping the agent on its host failed");
        }
    }

    async fn pause(&self, agent_id: AgentId) -> Provisioned<()> {
        if let Some(engine) = self.agent_engine(agent_id).await? {
            return engine.provisioner.pause(agent_id).await;
        }
        self.on_agent_host(agent_id, "pausing", &scripts::signal(agent_id, "STOP"), b"")
            .await
            .map(drop)
    }

    async fn resume(&self, agent_id: AgentId) -> Provisioned<()> {
        if let Some(engine) = self.agent_engine(agent_id).await? {
            return engine.provisioner.resume(agent_id).await;
        }
        self.on_agent_host(
            agent_id,
            "resuming",
            &scripts::signal(agent_id, "CONT"),
            b"",
        )
        .await
        .map(drop)
    }

    async fn destroy(&self, agent_id: AgentId, workspace: Option<&str>) -> Provisioned<()> {
        let Some((name, host)) = self.placed(agent_id).await? else {
            return Ok(());
        };
        let removed = if is_docker(&host) {
            match self.engine(&name, &host).await {
                Ok(Some(engine)) => engine
                    .provisioner
                    .destroy(agent_id, workspace)
                    .await
                    .map_err(|err| (false, err)),
                Ok(None) => Ok(()),
                // Not reached: released all the same when the host is down.
                Err(err) => Err((true, err)),
            }
        } else {
            self.destroy_on_host(&name, &host, agent_id).await
        };
        match removed {
            Ok(()) => {}
            // A host that is down keeps what it had; the placement is released all the same,
            // or a dead host would hold its agents forever.
            Err((true, err)) if host.down => {
                tracing::warn!(%agent_id, host = name, error = %err, "the agent's host is down: releasing it without removing its files");
            }
            Err((_, err)) => return Err(err),
        }
        self.commands
            .hosts
            .execute(&name, HostCommand::ReleaseAgent { agent_id }, &Self::meta())
            .await
            .map_err(|err| ProvisionError(format!("releasing the agent's host: {err}")))?;
        self.endpoints
            .lock()
            .expect("endpoints lock")
            .remove(&agent_id);
        tracing::info!(%agent_id, host = name, "agent removed from its host");
        Ok(())
    }

    async fn actual(&self) -> Provisioned<Vec<Actual>> {
        let hosts = self.hosts().await?;
        let placements = hosts
            .iter()
            .flat_map(|(name, host)| host.agents.iter().map(|agent| (*agent, name.clone())))
            .collect();
        self.seen().placements = placements;
        self.engines.retain(
            &hosts
                .iter()
                .filter(|(_, host)| !host.removed && is_docker(host))
                .map(|(name, _)| name.clone())
                .collect(),
        );
        let listings =
            futures::future::join_all(
                hosts
                    .iter()
                    .filter(|(name, host)| !host.removed && host.spec.is_some() && self.holds(name))
                    .map(|(name, host)| async move {
                        (name, host.down, self.list_host(name, host).await)
                    }),
            )
            .await;
        let mut found = Vec::new();
        let mut lost = Vec::new();
        let mut returned = std::collections::BTreeSet::new();
        for (name, was_down, listing) in listings {
            // Read again after the listing: an agent placed since the first read has its
            // directory listed, and is not an orphan.
            let (host, _) = self.commands.hosts.load(name).await.map_err(failed)?;
            let Some(listing) = listing else {
                if host.down {
                    lost.extend(host.agents.iter().copied());
                }
                continue;
            };
            if was_down {
                returned.extend(host.agents.iter().copied());
            }
            for (actual, endpoint) in listing {
                if host.agents.contains(&actual.agent_id) {
                    if let Some(endpoint) = endpoint {
                        self.remember(actual.agent_id, endpoint);
                    }
                    found.push(actual);
                } else {
                    // Left behind while the host was away and the agent moved or was
                    // deleted: removed, so it does not run twice.
                    self.remove_orphan(name, &host, actual.agent_id).await;
                }
            }
        }
        let mut seen = self.seen();
        seen.lost = lost;
        seen.returned.extend(returned);
        Ok(found)
    }

    async fn tend(&self) -> bool {
        let Some(leases) = &self.leases else {
            return false;
        };
        let names: Vec<String> = match self.hosts().await {
            Ok(hosts) => hosts
                .into_iter()
                .filter(|(_, host)| !host.removed)
                .map(|(name, _)| name)
                .collect(),
            Err(err) => {
                tracing::warn!(error = %err, "reading the hosts failed: leases not tended");
                return false;
            }
        };
        let held = self.seen().mine.clone();
        if names.is_empty() && held.is_empty() {
            // No host registered: nothing to share, and no presence written every few seconds.
            return false;
        }
        match leases.tend(&names, &held).await {
            Ok(tended) => {
                for host in &tended.taken {
                    tracing::info!("took over host {host} as deployer {}", leases.deployer);
                }
                let taken = !tended.taken.is_empty();
                self.seen().mine = tended.mine;
                taken
            }
            Err(err) => {
                tracing::warn!(error = err, "tending the host leases failed");
                false
            }
        }
    }

    fn foreign(&self, agent_id: AgentId) -> bool {
        if self.leases.is_none() {
            return false;
        }
        let seen = self.seen();
        seen.placements
            .get(&agent_id)
            .is_some_and(|host| !seen.mine.contains(host))
    }

    fn lost(&self) -> Vec<AgentId> {
        self.seen().lost.clone()
    }

    fn redeploys_lost(&self) -> bool {
        self.redeploy_lost
    }

    fn returned(&self) -> Vec<AgentId> {
        std::mem::take(&mut self.seen().returned)
            .into_iter()
            .collect()
    }

    async fn fill_pool(&self, size: usize, warm: &WarmSpec) -> Provisioned<usize> {
        self.fill(size, warm).await
    }

    async fn take_warm(&self, agent_id: AgentId, warm: &WarmSpec) -> Provisioned<Option<String>> {
        self.take(agent_id, warm).await
    }

    async fn drain_pool(&self) {
        self.drain().await;
    }

    async fn usage(&self) -> Provisioned<HashMap<AgentId, Usage>> {
        let hosts = self.hosts().await?;
        let measured = futures::future::join_all(
            hosts
                .iter()
                .filter(|(name, host)| {
                    !host.removed && !host.down && host.spec.is_some() && self.holds(name)
                })
                .map(|(name, host)| async move {
                    if is_docker(host) {
                        let engine = self.engine(name, host).await.ok()??;
                        return engine.provisioner.usage().await.ok().map(|usage| {
                            usage
                                .into_iter()
                                .filter(|(agent_id, _)| host.agents.contains(agent_id))
                                .collect::<Vec<_>>()
                        });
                    }
                    let session = self.session(name, host).await.ok()?;
                    match session.run("measuring the agents", scripts::USAGE, b"").await {
                        Ok(text) => Some(
                            usage_of(&text)
                                .into_iter()
                                .filter(|(agent_id, _)| host.agents.contains(agent_id))
                                .collect::<Vec<_>>(),
                        ),
                        Err(err) => {
                            tracing::debug!(host = name, error = %err, "measuring the agents failed");
                            None
                        }
                    }
                }),
        )
        .await;
        Ok(measured.into_iter().flatten().flatten().collect())
    }
}

/// What [`scripts::USAGE`] printed, per agent.
fn usage_of(text: &str) -> HashMap<AgentId, Usage> {
    /// `USER_HZ`: Linux fixes it at 100.
    const TICK_NS: u64 = 10_000_000;
    let (mut boot, mut page) = (None, 4096u64);
    let mut found = HashMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["btime", secs] => boot = secs.parse::<i64>().ok(),
            ["page", bytes] => page = bytes.parse().unwrap_or(page),
            [id, cpu, rss, start, disk] => {
                let Ok(agent_id) = id.parse::<AgentId>() else {
                    continue;
                };
                let start: Option<u64> = start.parse().ok();
                let running = start.is_some();
                found.insert(
                    agent_id,
                    Usage {
                        started_at: start.zip(boot).and_then(|(ticks, boot)| {
                            chrono::DateTime::from_timestamp_millis(
                                boot * 1000 + (ticks * 10) as i64,
                            )
                        }),
                        cpu_ns: running
                            .then(|| cpu.parse::<u64>().ok())
                            .flatten()
                            .map(|ticks| ticks * TICK_NS),
                        memory_bytes: running
                            .then(|| rss.parse::<u64>().ok())
                            .flatten()
                            .map(|pages| pages * page),
                        disk_bytes: disk.parse().ok(),
                    },
                );
            }
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hosts_figures_are_read_per_agent() {
        let agent = AgentId::new();
        let stopped = AgentId::new();
        let text = format!(
            "btime 1700000000\npage 4096\n{agent} 250 1000 150 8192\n{stopped} 0 0 - -\nnot-an-id 1 2 3 4\n"
        );
        let found = usage_of(&text);
        assert_eq!(found.len(), 2);
        let running = &found[&agent];
        assert_eq!(running.cpu_ns, Some(2_500_000_000));
        assert_eq!(running.memory_bytes, Some(4_096_000));
        assert_eq!(running.disk_bytes, Some(8192));
        assert_eq!(
            running.started_at.map(|at| at.timestamp_millis()),
            Some(1_700_000_001_500)
        );
        let idle = &found[&stopped];
        assert_eq!(
            (idle.cpu_ns, idle.memory_bytes, idle.disk_bytes),
            (None, None, None)
        );
        assert_eq!(idle.started_at, None);
    }
}
