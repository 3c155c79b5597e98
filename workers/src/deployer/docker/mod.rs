//! The `docker` provisioner: one locked-down container per agent, through the Docker Engine API
//! (docs/adr/0025-sandboxes.md).
//!
//! - [`image`] builds `warren-agent:<version>` locally from a Debian root filesystem and the
//!   `warren-agent` binary (no registry is needed).
//! - [`network`] makes the sandbox network (internal, no traffic between containers), the
//!   firewall that keeps sandboxes off the host's ports, and the relay that is their one path to
//!   the edge.
//! - [`stats`] measures what each container uses (for the agent's status).
//!
//! Each agent's container `warren-agent-<id>` runs as uid 10001 with every capability dropped,
//! `no-new-privileges`, a read-only root filesystem with a tmpfs `/tmp`, memory, CPU and PID
//! limits, no host mount and no Docker socket: only its named volume `warren-ws-<id>` at
//! `/data` (workspace, state, and the token file `/data/.warren/token`, written through the
//! archive API so it is in no environment). It has a fixed address on the sandbox network,
//! recorded in its labels, so a recreated container keeps the endpoint the log knows.

pub mod image;
pub mod network;
pub mod stats;

use super::provisioner::{
    Actual, ActualState, ProvisionError, Provisioned, Provisioner, RuntimeSpec, Usage,
};
use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, EndpointIpamConfig, EndpointSettings,
    HostConfig, HostConfigLogConfig, Mount, MountType, NetworkingConfig, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, InspectContainerOptions, ListContainersOptions,
    RemoveContainerOptions, RemoveVolumeOptions, RestartContainerOptions, StopContainerOptions,
    UploadToContainerOptions,
};
use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::time::Duration;
use warren_domain::ids::AgentId;

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
/// The container's fixed address.
pub const LABEL_ADDRESS: &str = "org.warren.address";

/// Resource limits of one sandbox.
#[derive(Clone, Debug)]
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
    /// Per-sandbox limits.
    pub limits: SandboxLimits,
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

/// The docker provisioner, connected, with its network, firewall and relay up.
pub struct DockerProvisioner {
    docker: Docker,
    settings: DockerSettings,
    sandbox_net: network::SandboxNetwork,
    http: reqwest::Client,
    /// Address allocation and container creation, one at a time.
    create: tokio::sync::Mutex<()>,
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
        )
        .await?;
        tracing::info!(
            network = settings.network,
            gateway = %sandbox_net.gateway(),
            relay = sandbox_net.platform_url(),
            image = settings.image,
            "docker sandboxes: one locked-down container per agent"
        );
        Ok(Self {
            docker,
            settings,
            sandbox_net,
            http: reqwest::Client::new(),
            create: tokio::sync::Mutex::new(()),
        })
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
        let address = labels.get(LABEL_ADDRESS)?;
        Some(format!("http://{address}:{RUNTIME_PORT}"))
    }

    /// Addresses taken by this network's containers (running or not).
    async fn taken_addresses(&self) -> Provisioned<BTreeSet<Ipv4Addr>> {
        Ok(self
            .containers()
            .await?
            .into_iter()
            .filter_map(|c| c.labels?.get(LABEL_ADDRESS)?.parse().ok())
            .collect())
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
    /// the lowest free one.
    async fn address_for(&self, spec: &RuntimeSpec) -> Provisioned<Ipv4Addr> {
        let recorded = spec
            .endpoint
            .as_deref()
            .and_then(|url| url.strip_prefix("http://"))
            .and_then(|rest| rest.split(':').next())
            .and_then(|host| host.parse::<Ipv4Addr>().ok())
            .filter(|ip| self.sandbox_net.contains(*ip));
        if let Some(ip) = recorded {
            return Ok(ip);
        }
        let taken = self.taken_addresses().await?;
        self.sandbox_net
            .hosts()
            .find(|ip| !taken.contains(ip))
            .ok_or_else(|| ProvisionError("the sandbox network has no free address".into()))
    }

    /// Writes the token into the agent's volume as `/data/.warren/token` (0400, the agent's
    /// uid), through the archive API: no environment variable, nothing in `docker inspect`.
    async fn put_token(&self, agent_id: AgentId, token: &str) -> Provisioned<()> {
        let mut archive = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o700);
        dir.set_uid(AGENT_UID);
        dir.set_gid(AGENT_UID);
        dir.set_size(0);
        let append = |archive: &mut tar::Builder<Vec<u8>>,
                      header: &mut tar::Header,
                      path: &str,
                      data: &[u8]| {
            archive
                .append_data(header, path, data)
                .map_err(|err| ProvisionError(format!("packing the token: {err}")))
        };
        append(&mut archive, &mut dir, ".warren/", &[])?;
        let mut file = tar::Header::new_gnu();
        file.set_mode(0o400);
        file.set_uid(AGENT_UID);
        file.set_gid(AGENT_UID);
        file.set_size(token.len() as u64);
        append(&mut archive, &mut file, ".warren/token", token.as_bytes())?;
        let bytes = archive
            .into_inner()
            .map_err(|err| ProvisionError(format!("packing the token: {err}")))?;
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
            .map_err(failed("writing the token into the agent's volume"))
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

    fn body(&self, spec: &RuntimeSpec, address: Ipv4Addr) -> ContainerCreateBody {
        let limits = &self.settings.limits;
        let mut env = vec![
            format!("WARREN_AGENT_ADDR=0.0.0.0:{RUNTIME_PORT}"),
            format!("WARREN_AGENT_TOKEN_FILE={DATA_DIR}/.warren/token"),
            format!("WARREN_AGENT_WORKSPACE={DATA_DIR}/workspace"),
            format!("WARREN_AGENT_STATE_DIR={DATA_DIR}/state"),
            format!("WARREN_AGENT_MODEL={}", spec.model),
            format!("WARREN_AGENT_SYSTEM_PROMPT={}", spec.system_prompt),
            format!(
                "WARREN_AGENT_PLATFORM_URL={}",
                self.sandbox_net.platform_url()
            ),
            format!("WARREN_AGENT_ID={}", spec.agent_id),
            // No provider key in the sandbox: the model is reached through the platform's
            // model proxy, over the relay.
            "WARREN_AGENT_MODEL_PROXY=true".to_owned(),
            // A tool process killed for the container's memory limit ends its run with
            // `sandbox_out_of_memory` (docs/adr/0026-sandbox-alerts.md).
            "WARREN_AGENT_WATCH_OOM=true".to_owned(),
            format!("HOME={DATA_DIR}"),
        ];
        if let Some(provider) = &spec.provider {
            env.push(format!("WARREN_AGENT_PROVIDER={provider}"));
        }
        let labels = HashMap::from([
            (LABEL_AGENT.to_owned(), spec.agent_id.to_string()),
            (LABEL_NETWORK.to_owned(), self.settings.network.clone()),
            (LABEL_FINGERPRINT.to_owned(), spec.fingerprint.clone()),
            (LABEL_ADDRESS.to_owned(), address.to_string()),
        ]);
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
                    source: Some(volume_name(spec.agent_id)),
                    target: Some(DATA_DIR.into()),
                    ..Default::default()
                }]),
                tmpfs: Some(HashMap::from([(
                    "/tmp".to_owned(),
                    format!("rw,nosuid,nodev,size={}", limits.tmp_bytes),
                )])),
                readonly_rootfs: Some(true),
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
        let _one_at_a_time = self.create.lock().await;
        self.remove_container(spec.agent_id).await?;
        let address = self.address_for(spec).await?;
        self.docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(container_name(spec.agent_id)),
                    ..Default::default()
                }),
                self.body(spec, address),
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

    async fn destroy(&self, agent_id: AgentId) -> Provisioned<()> {
        self.remove_container(agent_id).await?;
        match self
            .docker
            .remove_volume(
                &volume_name(agent_id),
                Some(RemoveVolumeOptions { force: true }),
            )
            .await
        {
            Err(err) if !not_found(&err) => Err(failed("removing the agent's volume")(err)),
            _ => Ok(()),
        }
    }

    async fn actual(&self) -> Provisioned<Vec<Actual>> {
        let mut found = Vec::new();
        for container in self.containers().await? {
            let labels = container.labels.unwrap_or_default();
            let Some(agent_id) = labels.get(LABEL_AGENT).and_then(|id| id.parse().ok()) else {
                continue;
            };
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
            .into_iter()
            .filter_map(|c| c.labels?.get(LABEL_AGENT)?.parse().ok())
            .collect();
        let sampled = futures::future::join_all(agents.into_iter().map(|agent_id| async move {
            Some((agent_id, stats::sample(&self.docker, agent_id).await?))
        }))
        .await;
        Ok(sampled.into_iter().flatten().collect())
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
