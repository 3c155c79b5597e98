//! The `docker` provisioner: one locked-down container per agent, through the Docker Engine API
//! (docs/adr/0025-sandboxes.md).
//!
//! - [`image`] builds `warren-agent:<version>` locally from a Debian root filesystem and the
//!   `warren-agent` binary (no registry is needed).
//! - [`network`] makes the sandbox network (internal, no traffic between containers), the
//!   firewall that keeps sandboxes off the host's ports, and the relay that is their one path to
//!   the edge.
//! - [`stats`] measures what each container uses (for the agent's status).
//! - [`relay`] runs the relay of an engine on another machine, as a container there
//!   (docs/adr/0041-docker-hosts.md).
//! - [`pool`] keeps the warm pool: started, unassigned containers an agent takes when it is
//!   created (docs/adr/0028-warm-pool.md).
//!
//! Each agent's container `warren-agent-<id>` runs as uid 10001 with every capability dropped,
//! `no-new-privileges`, a read-only root filesystem with a tmpfs `/tmp`, memory, CPU and PID
//! limits, no host mount and no Docker socket: only its named volume `warren-ws-<id>` at
//! `/data` (workspace, state, and the token file `/data/.warren/token`, written through the
//! archive API so it is in no environment). It has a fixed address on the sandbox network,
//! recorded in its labels, so a recreated container keeps the endpoint the log knows.
//!
//! An agent that took a warm pool's container keeps that container (renamed
//! `warren-agent-<id>`), its volume (recorded in the log, `AgentDeployed.workspace`) and its
//! address (also kept in the volume's labels, so nobody else gets it while the volume lives).

pub mod image;
pub mod network;
pub mod pool;
pub mod relay;
pub mod stats;

use super::provisioner::{
    Actual, ActualState, ProvisionError, Provisioned, Provisioner, RuntimeSpec, Usage, WarmSpec,
};
use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, ContainerUpdateBody, EndpointIpamConfig,
    EndpointSettings, HostConfig, HostConfigLogConfig, Mount, MountType, NetworkingConfig,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, InspectContainerOptions, ListContainersOptions,
    ListVolumesOptions, RemoveContainerOptions, RemoveVolumeOptions, RestartContainerOptions,
    StopContainerOptions, UploadToContainerOptions,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::time::Duration;
use warren_domain::ids::AgentId;
use warren_domain::user::Tier;

/// The uid and gid the runtime runs as inside its container.
pub const AGENT_UID: u64 = 10001;
/// The port the runtime listens on inside its container.
pub const RUNTIME_PORT: u16 = 8080;
/// Where the agent's volume is mounted.
pub const DATA_DIR: &str = "/data";
/// Labels on every container and volume the provisioner makes.
pub const LABEL_AGENT: &str = "org.warren.agent";
/// The sandbox network the container belongs to (one deployment's scope).
pub const LABEL_NETWORK: &str = "org.warren.network";
/// The platform settings' fingerprint the container was configured with.
pub const LABEL_FINGERPRINT: &str = "org.warren.fingerprint";
/// The container's fixed address (also on a warm pool's volume, which keeps it reserved).
pub const LABEL_ADDRESS: &str = "org.warren.address";
/// A warm pool's container or volume: its slot.
pub const LABEL_POOL: &str = "org.warren.pool";
/// Where a warm pool's runtime waits for its assignment (`WARREN_AGENT_ASSIGNMENT_FILE`).
pub const ASSIGNMENT_FILE: &str = "/data/.warren/assignment.json";

/// Resource limits of one sandbox.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxLimits {
    /// Memory (and memory + swap: no swap), bytes.
    pub memory_bytes: i64,
    /// CPUs, in billionths.
    pub nano_cpus: i64,
    /// Processes and threads.
    pub pids: i64,
    /// Size of the tmpfs `/tmp`, bytes.
    pub tmp_bytes: u64,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 2 << 30,
            nano_cpus: 1_000_000_000,
            pids: 256,
            tmp_bytes: 256 << 20,
        }
    }
}

/// The docker provisioner's configuration.
#[derive(Clone, Debug)]
pub struct DockerSettings {
    /// `unix:///var/run/docker.sock` (default) or `tcp://host:port`.
    pub host: String,
    /// The image with `warren-agent` on its `PATH`.
    pub image: String,
    /// The sandbox network's name (created if missing).
    pub network: String,
    /// Its IPv4 subnet, when it is created.
    pub subnet: String,
    /// The relay's port on the sandbox network's gateway address.
    pub relay_port: u16,
    /// Whether to install the host firewall that keeps sandboxes off the host's other ports.
    pub firewall: bool,
    /// Per-sandbox limits: a warm pool's, and those of a tier with none of its own.
    pub limits: SandboxLimits,
    /// Each tier's limits where the operator set some (docs/adr/0032-sandbox-limits-per-tier.md).
    pub tier_limits: BTreeMap<Tier, SandboxLimits>,
    /// Whether sandboxes may open connections to public internet addresses (never to the
    /// host, private, loopback or link-local ranges, or each other).
    pub internet: bool,
}

impl DockerSettings {
    /// The limits of a sandbox whose owner is on `tier`.
    pub fn limits_for(&self, tier: Tier) -> &SandboxLimits {
        self.tier_limits.get(&tier).unwrap_or(&self.limits)
    }
}

impl Default for DockerSettings {
    fn default() -> Self {
        Self {
            host: "unix:///var/run/docker.sock".into(),
            image: image::default_tag(),
            network: "warren-sandbox".into(),
            subnet: "10.213.0.0/16".into(),
            relay_port: 7811,
            firewall: true,
            limits: SandboxLimits::default(),
            tier_limits: BTreeMap::new(),
            internet: false,
        }
    }
}

/// Connects to the engine at `host` and agrees on an API version with it.
pub async fn connect(host: &str) -> Result<Docker, ProvisionError> {
    let docker = if let Some(path) = host.strip_prefix("unix://") {
        Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(host, 120, bollard::API_DEFAULT_VERSION)
    } else {
        Docker::connect_with_unix(host, 120, bollard::API_DEFAULT_VERSION)
    }
    .map_err(|err| ProvisionError(format!("connecting to the Docker engine at {host}: {err}")))?;
    let docker = docker.negotiate_version().await.map_err(|err| {
        ProvisionError(format!(
            "the Docker engine at {host} does not answer: {err}"
        ))
    })?;
    docker.ping().await.map_err(|err| {
        ProvisionError(format!(
            "the Docker engine at {host} does not answer: {err}"
        ))
    })?;
    Ok(docker)
}

/// Whether a Docker error is "no such object".
pub fn not_found(err: &DockerError) -> bool {
    matches!(
        err,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn failed(what: impl std::fmt::Display) -> impl FnOnce(DockerError) -> ProvisionError {
    move |err| ProvisionError(format!("{what}: {err}"))
}

/// `warren-agent-<id>`.
pub fn container_name(agent_id: AgentId) -> String {
    format!("warren-agent-{agent_id}")
}

/// `warren-ws-<id>`.
pub fn volume_name(agent_id: AgentId) -> String {
    format!("warren-ws-{agent_id}")
}

/// What a container is made for.
enum Role<'a> {
    /// One agent's runtime.
    Agent(&'a RuntimeSpec),
    /// A warm pool's runtime in its slot, waiting for an agent.
    Warm(&'a str, &'a WarmSpec),
}

/// One file written into a container's volume.
struct VolumeFile<'a> {
    path: &'a str,
    mode: u32,
    data: &'a [u8],
}

/// The agent a listed container runs: its label, or, for a warm pool's container taken by an
/// agent (labels cannot change), its name. Unassigned pool containers are no agent's.
fn agent_of(container: &bollard::models::ContainerSummary) -> Option<AgentId> {
    let labels = container.labels.as_ref()?;
    if let Some(agent) = labels.get(LABEL_AGENT) {
        return agent.parse().ok();
    }
    labels.get(LABEL_POOL)?;
    container
        .names
        .as_ref()?
        .iter()
        .find_map(|name| name.strip_prefix("/warren-agent-")?.parse().ok())
}

/// Where chat workers reach the runtimes of an engine on another machine: its host's address,
/// one port per container address (the relay container forwards `first_port + offset` to the
/// address `offset` into the subnet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The host's address.
    pub address: String,
    /// The port of the subnet's base address (offset 0).
    pub first_port: u16,
    /// How many container addresses are used (and forwarded), from the lowest.
    pub slots: usize,
}

/// The docker provisioner, connected, with its network, firewall and relay up.
pub struct DockerProvisioner {
    docker: Docker,
    settings: DockerSettings,
    sandbox_net: network::SandboxNetwork,
    /// For an engine on another machine: where its runtimes are published.
    published: Option<Published>,
    http: reqwest::Client,
    /// Address allocation and container creation, one at a time.
    create: tokio::sync::Mutex<()>,
    /// Agents that took a pool container in this deployment, until it is started as theirs:
    /// their spec once configured ([`Provisioner::configure`] keeps the running container).
    taken: std::sync::Mutex<HashMap<AgentId, Option<RuntimeSpec>>>,
}

impl DockerProvisioner {
    /// Connects, makes the sandbox network, firewall and relay (to `platform_url`, the edge).
    pub async fn start(
        settings: DockerSettings,
        platform_url: &str,
    ) -> Result<Self, ProvisionError> {
        let docker = connect(&settings.host).await?;
        let sandbox_net = network::SandboxNetwork::up(
            &docker,
            &settings.network,
            &settings.subnet,
            settings.relay_port,
            platform_url,
            settings.firewall,
            settings.internet,
        )
        .await?;
        tracing::info!(
            network = settings.network,
            gateway = %sandbox_net.gateway(),
            relay = sandbox_net.platform_url(),
            internet = settings.internet,
            image = settings.image,
            "docker sandboxes: one locked-down container per agent"
        );
        Ok(Self {
            docker,
            settings,
            sandbox_net,
            published: None,
            http: crate::runtime_http(),
            create: tokio::sync::Mutex::new(()),
            taken: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The provisioner for the engine of another machine, reached through `docker` (an SSH
    /// tunnel to its socket, docs/adr/0041-docker-hosts.md): its sandbox network made there,
    /// and its relay started there as a container forwarding the gateway's relay port to
    /// `platform_url` (as that machine reaches the platform) and the published ports to the
    /// runtimes. The host's firewall is the caller's ([`network::firewall_script`]).
    pub async fn on_remote_engine(
        docker: Docker,
        mut settings: DockerSettings,
        platform_url: &str,
        published: Published,
    ) -> Result<Self, ProvisionError> {
        // Nothing of this deployer's host applies there.
        settings.internet = false;
        settings.host = "ssh tunnel".into();
        let sandbox_net = network::SandboxNetwork::remote(
            &docker,
            &settings.network,
            &settings.subnet,
            settings.relay_port,
            platform_url,
        )
        .await?;
        // `!`: the sandboxes' way out, bounded per sandbox.
        let mut forwards = vec![format!(
            "!{}:{}={}",
            sandbox_net.gateway(),
            settings.relay_port,
            network::target_of(platform_url)?
        )];
        // On the host's address when it is one (a name: every address).
        let bind = published
            .address
            .parse::<Ipv4Addr>()
            .map_or_else(|_| "0.0.0.0".to_owned(), |ip| ip.to_string());
        for ip in sandbox_net.hosts().take(published.slots) {
            let port = u32::from(published.first_port) + sandbox_net.offset_of(ip);
            let port = u16::try_from(port).map_err(|_| {
                ProvisionError("the published ports run past 65535: use a smaller subnet".into())
            })?;
            forwards.push(format!("{bind}:{port}={ip}:{RUNTIME_PORT}"));
        }
        relay::ensure(&docker, &settings.network, &settings.image, &forwards).await?;
        tracing::info!(
            network = settings.network,
            gateway = %sandbox_net.gateway(),
            address = published.address,
            "docker sandboxes on a remote engine: relay container up"
        );
        Ok(Self {
            docker,
            settings,
            sandbox_net,
            published: Some(published),
            http: crate::runtime_http(),
            create: tokio::sync::Mutex::new(()),
            taken: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The runtime's URL for a container at `ip`: on the sandbox network, or where it is
    /// published.
    fn url_of(&self, ip: Ipv4Addr) -> String {
        match &self.published {
            None => format!("http://{ip}:{RUNTIME_PORT}"),
            Some(published) => {
                let port = u32::from(published.first_port) + self.sandbox_net.offset_of(ip);
                if published.address.contains(':') {
                    format!("http://[{}]:{port}", published.address)
                } else {
                    format!("http://{}:{port}", published.address)
                }
            }
        }
    }

    /// The container address a recorded endpoint names, if it is one of this network's.
    fn ip_of_url(&self, url: &str) -> Option<Ipv4Addr> {
        let authority = url.strip_prefix("http://")?.split('/').next()?;
        let (host, port) = authority.rsplit_once(':')?;
        let ip = match &self.published {
            None => host.parse().ok()?,
            Some(published) => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                if host != published.address {
                    return None;
                }
                let offset = port
                    .parse::<u32>()
                    .ok()?
                    .checked_sub(published.first_port.into())?;
                let ip = self.sandbox_net.at(offset);
                // Only the addresses the relay forwards.
                return self
                    .sandbox_net
                    .hosts()
                    .take(published.slots)
                    .any(|host| host == ip)
                    .then_some(ip);
            }
        };
        self.sandbox_net.contains(ip).then_some(ip)
    }

    /// The Docker client.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The agent's container's labels, if it exists.
    async fn labels(&self, agent_id: AgentId) -> Provisioned<Option<HashMap<String, String>>> {
        match self
            .docker
            .inspect_container(&container_name(agent_id), None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => Ok(Some(
                info.config
                    .and_then(|config| config.labels)
                    .unwrap_or_default(),
            )),
            Err(err) if not_found(&err) => Ok(None),
            Err(err) => Err(failed("inspecting the agent's container")(err)),
        }
    }

    /// The agent's container's endpoint, if it exists.
    async fn endpoint(&self, agent_id: AgentId) -> Option<String> {
        let labels = self.labels(agent_id).await.ok()??;
        let address = labels.get(LABEL_ADDRESS)?.parse().ok()?;
        Some(self.url_of(address))
    }

    /// Addresses taken by this network's containers (running or not) and kept by warm pools'
    /// volumes (an agent's, while its container is being recreated).
    async fn taken_addresses(&self) -> Provisioned<BTreeSet<Ipv4Addr>> {
        let mut taken: BTreeSet<Ipv4Addr> = self
            .containers()
            .await?
            .into_iter()
            .filter_map(|c| c.labels?.get(LABEL_ADDRESS)?.parse().ok())
            .collect();
        taken.extend(
            self.pool_volumes()
                .await?
                .into_iter()
                .filter_map(|v| v.labels.get(LABEL_ADDRESS)?.parse::<Ipv4Addr>().ok()),
        );
        Ok(taken)
    }

    /// The Engine API filter for this network's warm pool containers or volumes.
    fn pool_filters(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{LABEL_NETWORK}={}", self.settings.network),
                LABEL_POOL.to_owned(),
            ],
        )])
    }

    /// This network's warm pool volumes (unassigned ones and agents').
    async fn pool_volumes(&self) -> Provisioned<Vec<bollard::models::Volume>> {
        let filters = self.pool_filters();
        Ok(self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(failed("listing the warm pool's volumes"))?
            .volumes
            .unwrap_or_default())
    }

    async fn containers(&self) -> Provisioned<Vec<bollard::models::ContainerSummary>> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_NETWORK}={}", self.settings.network)],
        )]);
        self.docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(failed("listing the sandbox containers"))
    }

    /// The address to give a new container: the recorded one if it is on this network, else
    /// the one its warm pool volume keeps, else the lowest free one.
    async fn address_for(&self, spec: &RuntimeSpec) -> Provisioned<Ipv4Addr> {
        let recorded = spec.endpoint.as_deref().and_then(|url| self.ip_of_url(url));
        if let Some(ip) = recorded {
            return Ok(ip);
        }
        if let Some(workspace) = &spec.workspace
            && let Ok(volume) = self.docker.inspect_volume(workspace).await
            && let Some(ip) = volume
                .labels
                .get(LABEL_ADDRESS)
                .and_then(|ip| ip.parse().ok())
            && self.sandbox_net.contains(ip)
        {
            return Ok(ip);
        }
        self.free_address().await
    }

    /// The lowest address no container or warm pool volume has.
    async fn free_address(&self) -> Provisioned<Ipv4Addr> {
        let taken = self.taken_addresses().await?;
        let slots = self.published.as_ref().map_or(usize::MAX, |p| p.slots);
        self.sandbox_net
            .hosts()
            .take(slots)
            .find(|ip| !taken.contains(ip))
            .ok_or_else(|| ProvisionError("the sandbox network has no free address".into()))
    }

    /// Writes `files` (paths under `/data`) into the agent's volume, in this order, owned by
    /// the agent's uid, through the archive API: no environment variable, nothing in `docker
    /// inspect`.
    async fn put_files(&self, agent_id: AgentId, files: &[VolumeFile<'_>]) -> Provisioned<()> {
        let pack =
            |err: std::io::Error| ProvisionError(format!("packing the agent's files: {err}"));
        let mut archive = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o700);
        dir.set_uid(AGENT_UID);
        dir.set_gid(AGENT_UID);
        dir.set_size(0);
        archive
            .append_data(&mut dir, ".warren/", &[][..])
            .map_err(pack)?;
        for file in files {
            let mut header = tar::Header::new_gnu();
            header.set_mode(file.mode);
            header.set_uid(AGENT_UID);
            header.set_gid(AGENT_UID);
            header.set_size(file.data.len() as u64);
            archive
                .append_data(&mut header, file.path, file.data)
                .map_err(pack)?;
        }
        let bytes = archive.into_inner().map_err(pack)?;
        self.docker
            .upload_to_container(
                &container_name(agent_id),
                Some(UploadToContainerOptions {
                    path: DATA_DIR.into(),
                    ..Default::default()
                }),
                bollard::body_full(bytes.into()),
            )
            .await
            .map_err(failed("writing into the agent's volume"))
    }

    /// Writes the token as `/data/.warren/token` (0400).
    async fn put_token(&self, agent_id: AgentId, token: &str) -> Provisioned<()> {
        self.put_files(
            agent_id,
            &[VolumeFile {
                path: ".warren/token",
                mode: 0o400,
                data: token.as_bytes(),
            }],
        )
        .await
    }

    /// Makes a taken pool container's waiting runtime `spec`'s agent's: its owner's limits,
    /// the token, then the assignment the runtime waits for (written last, so the token is
    /// whole when it is read, and nothing of the agent's runs under the pool's limits).
    async fn assign(&self, spec: &RuntimeSpec, token: &str) -> Provisioned<()> {
        let limits = self.settings.limits_for(spec.tier);
        if *limits != self.settings.limits {
            self.docker
                .update_container(
                    &container_name(spec.agent_id),
                    ContainerUpdateBody {
                        memory: Some(limits.memory_bytes),
                        memory_swap: Some(limits.memory_bytes),
                        nano_cpus: Some(limits.nano_cpus),
                        pids_limit: Some(limits.pids),
                        ..Default::default()
                    },
                )
                .await
                .map_err(failed("applying the owner's tier limits"))?;
        }
        let assignment = serde_json::json!({
            "agent_id": spec.agent_id.to_string(),
            "platform_url": self.sandbox_net.platform_url(),
            "model": spec.model,
            "system_prompt": spec.system_prompt,
        })
        .to_string();
        let assignment_path = ASSIGNMENT_FILE
            .strip_prefix("/data/")
            .unwrap_or(ASSIGNMENT_FILE);
        self.put_files(
            spec.agent_id,
            &[
                VolumeFile {
                    path: ".warren/token",
                    mode: 0o400,
                    data: token.as_bytes(),
                },
                VolumeFile {
                    path: assignment_path,
                    mode: 0o400,
                    data: assignment.as_bytes(),
                },
            ],
        )
        .await
    }

    fn taken_lock(&self) -> std::sync::MutexGuard<'_, HashMap<AgentId, Option<RuntimeSpec>>> {
        self.taken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn remove_volume(&self, volume: &str) -> Provisioned<()> {
        match self
            .docker
            .remove_volume(volume, Some(RemoveVolumeOptions { force: true }))
            .await
        {
            Err(err) if !not_found(&err) => Err(failed("removing a sandbox volume")(err)),
            _ => Ok(()),
        }
    }

    async fn remove_container(&self, agent_id: AgentId) -> Provisioned<()> {
        match self
            .docker
            .remove_container(
                &container_name(agent_id),
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Err(err) if !not_found(&err) => Err(failed("removing the agent's container")(err)),
            _ => Ok(()),
        }
    }

    /// The container for `role`: the same lockdown whatever it is for; only its environment
    /// and labels differ (a warm pool's runtime has nothing of any agent's).
    fn body(&self, role: Role<'_>, address: Ipv4Addr, volume: &str) -> ContainerCreateBody {
        // A warm pool's runtime has no owner yet: it gets its owner's when it is taken.
        let limits = match &role {
            Role::Agent(spec) => self.settings.limits_for(spec.tier),
            Role::Warm(..) => &self.settings.limits,
        };
        let mut env = vec![
            format!("WARREN_AGENT_ADDR=0.0.0.0:{RUNTIME_PORT}"),
            format!("WARREN_AGENT_TOKEN_FILE={DATA_DIR}/.warren/token"),
            format!("WARREN_AGENT_WORKSPACE={DATA_DIR}/workspace"),
            format!("WARREN_AGENT_STATE_DIR={DATA_DIR}/state"),
            // No provider key in the sandbox: the model is reached through the platform's
            // model proxy, over the relay.
            "WARREN_AGENT_MODEL_PROXY=true".to_owned(),
            // A tool process killed for the container's memory limit ends its run with
            // `sandbox_out_of_memory` (docs/adr/0026-sandbox-alerts.md).
            "WARREN_AGENT_WATCH_OOM=true".to_owned(),
            format!("HOME={DATA_DIR}"),
        ];
        let mut labels = HashMap::from([
            (LABEL_NETWORK.to_owned(), self.settings.network.clone()),
            (LABEL_ADDRESS.to_owned(), address.to_string()),
        ]);
        let (provider, fingerprint) = match role {
            Role::Agent(spec) => {
                env.extend([
                    format!("WARREN_AGENT_MODEL={}", spec.model),
                    format!("WARREN_AGENT_SYSTEM_PROMPT={}", spec.system_prompt),
                    format!(
                        "WARREN_AGENT_PLATFORM_URL={}",
                        self.sandbox_net.platform_url()
                    ),
                    format!("WARREN_AGENT_ID={}", spec.agent_id),
                ]);
                labels.insert(LABEL_AGENT.to_owned(), spec.agent_id.to_string());
                (&spec.provider, &spec.fingerprint)
            }
            Role::Warm(slot, warm) => {
                env.push(format!("WARREN_AGENT_ASSIGNMENT_FILE={ASSIGNMENT_FILE}"));
                labels.insert(LABEL_POOL.to_owned(), slot.to_owned());
                (&warm.provider, &warm.fingerprint)
            }
        };
        if let Some(provider) = provider {
            env.push(format!("WARREN_AGENT_PROVIDER={provider}"));
        }
        labels.insert(LABEL_FINGERPRINT.to_owned(), fingerprint.clone());
        ContainerCreateBody {
            image: Some(self.settings.image.clone()),
            user: Some(format!("{AGENT_UID}:{AGENT_UID}")),
            env: Some(env),
            cmd: Some(vec!["warren-agent".into()]),
            working_dir: Some(format!("{DATA_DIR}/workspace")),
            labels: Some(labels),
            host_config: Some(HostConfig {
                mounts: Some(vec![Mount {
                    typ: Some(MountType::VOLUME),
                    source: Some(volume.to_owned()),
                    target: Some(DATA_DIR.into()),
                    ..Default::default()
                }]),
                tmpfs: Some(HashMap::from([(
                    "/tmp".to_owned(),
                    format!("rw,nosuid,nodev,size={}", limits.tmp_bytes),
                )])),
                readonly_rootfs: Some(true),
                // IPv4 only: the firewall and the relay speak IPv4, so a link-local IPv6 path
                // to the host or another sandbox must not exist. (A kernel without IPv6 has
                // no such setting, and no such path.)
                // On another machine's engine they are always set: this machine's kernel says
                // nothing of that one's, and a refusal is better than an IPv6 path.
                sysctls: (self.published.is_some()
                    || std::path::Path::new("/proc/sys/net/ipv6").exists())
                .then(|| {
                    HashMap::from([
                        ("net.ipv6.conf.all.disable_ipv6".to_owned(), "1".to_owned()),
                        (
                            "net.ipv6.conf.default.disable_ipv6".to_owned(),
                            "1".to_owned(),
                        ),
                    ])
                }),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                memory: Some(limits.memory_bytes),
                memory_swap: Some(limits.memory_bytes),
                nano_cpus: Some(limits.nano_cpus),
                pids_limit: Some(limits.pids),
                init: Some(true),
                network_mode: Some(self.settings.network.clone()),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".into()),
                    config: Some(HashMap::from([
                        ("max-size".to_owned(), "10m".to_owned()),
                        ("max-file".to_owned(), "2".to_owned()),
                    ])),
                }),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    self.settings.network.clone(),
                    EndpointSettings {
                        ipam_config: Some(EndpointIpamConfig {
                            ipv4_address: Some(address.to_string()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        }
    }
}

#[async_trait]
impl Provisioner for DockerProvisioner {
    fn kind(&self) -> &'static str {
        "docker"
    }

    async fn allocate(&self, agent_id: AgentId) -> Provisioned<()> {
        let labels = HashMap::from([
            (LABEL_AGENT.to_owned(), agent_id.to_string()),
            (LABEL_NETWORK.to_owned(), self.settings.network.clone()),
        ]);
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(volume_name(agent_id)),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .map(drop)
            .map_err(failed("creating the agent's volume"))
    }

    async fn install(&self) -> Provisioned<()> {
        match self.docker.inspect_image(&self.settings.image).await {
            Ok(_) => Ok(()),
            Err(err) if not_found(&err) => Err(ProvisionError(format!(
                "the agent image {} is missing: build it with `warren image build` (or set WARREN_AGENT_IMAGE)",
                self.settings.image
            ))),
            Err(err) => Err(failed("inspecting the agent image")(err)),
        }
    }

    async fn configure(&self, spec: &RuntimeSpec) -> Provisioned<()> {
        // A taken pool container is kept running: it is assigned when started.
        if let Some(taken) = self.taken_lock().get_mut(&spec.agent_id) {
            *taken = Some(spec.clone());
            return Ok(());
        }
        let _one_at_a_time = self.create.lock().await;
        self.remove_container(spec.agent_id).await?;
        let address = self.address_for(spec).await?;
        let volume = spec
            .workspace
            .clone()
            .unwrap_or_else(|| volume_name(spec.agent_id));
        self.docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(container_name(spec.agent_id)),
                    ..Default::default()
                }),
                self.body(Role::Agent(spec), address, &volume),
            )
            .await
            .map(drop)
            .map_err(failed("creating the agent's container"))
    }

    async fn start(&self, agent_id: AgentId, token: &str) -> Provisioned<String> {
        let name = container_name(agent_id);
        let endpoint = self
            .endpoint(agent_id)
            .await
            .ok_or_else(|| ProvisionError(format!("agent {agent_id} has no container")))?;
        let assigned = self.taken_lock().remove(&agent_id).flatten();
        if let Some(spec) = assigned {
            // The waiting runtime reads its assignment and serves: no restart. One that
            // stopped meanwhile reads it when started.
            self.assign(&spec, token).await?;
            let running = self
                .docker
                .inspect_container(&name, None::<InspectContainerOptions>)
                .await
                .ok()
                .and_then(|info| info.state?.running)
                .unwrap_or(false);
            if !running {
                self.docker
                    .restart_container(&name, None::<RestartContainerOptions>)
                    .await
                    .map_err(failed("starting the agent's container"))?;
            }
            return Ok(endpoint);
        }
        // A paused one cannot be restarted; a token may have been rotated.
        let _ = self.docker.unpause_container(&name).await;
        self.put_token(agent_id, token).await?;
        self.docker
            .restart_container(
                &name,
                Some(RestartContainerOptions {
                    t: Some(2),
                    ..Default::default()
                }),
            )
            .await
            .map_err(failed("starting the agent's container"))?;
        Ok(endpoint)
    }

    async fn healthy(&self, agent_id: AgentId) -> bool {
        let Some(endpoint) = self.endpoint(agent_id).await else {
            return false;
        };
        self.http
            .get(format!("{endpoint}/health"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
    }

    async fn stop(&self, agent_id: AgentId) {
        let name = container_name(agent_id);
        let _ = self.docker.unpause_container(&name).await;
        match self
            .docker
            .stop_container(
                &name,
                Some(StopContainerOptions {
                    t: Some(5),
                    ..Default::default()
                }),
            )
            .await
        {
            // 304: already stopped.
            Err(err)
                if !not_found(&err)
                    && !matches!(
                        err,
                        DockerError::DockerResponseServerError {
                            status_code: 304,
                            ..
                        }
                    ) =>
            {
                tracing::warn!(%agent_id, error = %err, "stopping the agent's container failed");
            }
            _ => {}
        }
    }

    async fn pause(&self, agent_id: AgentId) -> Provisioned<()> {
        self.docker
            .pause_container(&container_name(agent_id))
            .await
            .map_err(failed("pausing the agent's container"))
    }

    async fn resume(&self, agent_id: AgentId) -> Provisioned<()> {
        self.docker
            .unpause_container(&container_name(agent_id))
            .await
            .map_err(failed("resuming the agent's container"))
    }

    async fn destroy(&self, agent_id: AgentId, workspace: Option<&str>) -> Provisioned<()> {
        self.taken_lock().remove(&agent_id);
        let mut volumes = BTreeSet::from([volume_name(agent_id)]);
        volumes.extend(workspace.map(str::to_owned));
        // The volume its container mounts (a warm pool's, taken before anything was recorded).
        if let Ok(info) = self
            .docker
            .inspect_container(&container_name(agent_id), None::<InspectContainerOptions>)
            .await
        {
            volumes.extend(
                info.mounts
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|m| m.destination.as_deref() == Some(DATA_DIR))
                    .filter_map(|m| m.name),
            );
        }
        self.remove_container(agent_id).await?;
        for volume in volumes {
            self.remove_volume(&volume).await?;
        }
        Ok(())
    }

    async fn actual(&self) -> Provisioned<Vec<Actual>> {
        let mut found = Vec::new();
        for container in self.containers().await? {
            let Some(agent_id) = agent_of(&container) else {
                continue;
            };
            let labels = container.labels.unwrap_or_default();
            let state = match container.state {
                Some(
                    ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::RESTARTING,
                ) => ActualState::Running,
                Some(ContainerSummaryStateEnum::PAUSED) => ActualState::Paused,
                _ => ActualState::Stopped,
            };
            let oom_killed = state == ActualState::Stopped
                && self
                    .docker
                    .inspect_container(&container_name(agent_id), None::<InspectContainerOptions>)
                    .await
                    .ok()
                    .and_then(|info| info.state?.oom_killed)
                    .unwrap_or(false);
            found.push(Actual {
                agent_id,
                state,
                fingerprint: labels.get(LABEL_FINGERPRINT).cloned(),
                oom_killed,
            });
        }
        Ok(found)
    }

    async fn usage(&self) -> Provisioned<HashMap<AgentId, Usage>> {
        let agents: Vec<AgentId> = self
            .containers()
            .await?
            .iter()
            .filter_map(agent_of)
            .collect();
        let sampled = futures::future::join_all(agents.into_iter().map(|agent_id| async move {
            Some((agent_id, stats::sample(&self.docker, agent_id).await?))
        }))
        .await;
        Ok(sampled.into_iter().flatten().collect())
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

    fn oom_kills(&self) -> Option<futures::stream::BoxStream<'static, AgentId>> {
        use futures::StreamExt;
        // The engine's `oom` event: the kernel killed a process in the container's cgroup for
        // its limit (the container itself may live on).
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            ("event".to_owned(), vec!["oom".to_owned()]),
            (
                "label".to_owned(),
                vec![format!("{LABEL_NETWORK}={}", self.settings.network)],
            ),
        ]);
        let events = self.docker.events(Some(EventsOptions {
            filters: Some(filters),
            ..Default::default()
        }));
        Some(
            events
                .filter_map(|event| async move {
                    let event = event
                        .inspect_err(|err| tracing::warn!(error = %err, "docker events ended"))
                        .ok()?;
                    event.actor?.attributes?.get(LABEL_AGENT)?.parse().ok()
                })
                .boxed(),
        )
    }
}
