//! Hosts that are Docker engines (docs/adr/0041-docker-hosts.md): a host registered with
//! `engine: docker` runs its agents as the `docker` provisioner's locked-down containers, on its
//! own engine, reached through the SSH connection (the host's sealed key, its pinned host key).
//!
//! For each such host this deployer holds one [`Engine`]: an `ssh -N -L` forwarding a local
//! socket to the host's `/var/run/docker.sock`, and a [`DockerProvisioner`] on it, whose
//! network, relay (a container on the host's network) and published ports are made on the
//! host. Before that, the host's firewall is installed over SSH (as root there), so sandboxes
//! reach the relay's port of the host and nothing else of it. The agent image is built on the
//! host's engine when it is missing there (the same recipe as `warren image build`).

use super::conn::Session;
use crate::deployer::docker::{self, DockerProvisioner, DockerSettings, Published, image, network};
use crate::deployer::provisioner::{ProvisionError, Provisioned};
use std::collections::HashMap;
use std::sync::Arc;
use warren_domain::host::Host;

/// The Docker engine's socket on the host.
pub const REMOTE_SOCKET: &str = "/var/run/docker.sock";
/// The first port runtimes are published on (the subnet's base address's).
pub const FIRST_PORT: u16 = 20_000;
/// Addresses forwarded beyond a host's capacity (containers being replaced, stale ones).
const SPARE_SLOTS: usize = 8;

/// What docker hosts are built with.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// The sandboxes' settings (image, network name and subnet, relay port, limits).
    pub sandboxes: DockerSettings,
    /// How to build the agent image on a host whose engine lacks it; `None`: it must be there.
    pub recipe: Option<image::ImageRecipe>,
    /// The platform's URL for hosts registered without one.
    pub platform_url: String,
}

/// One docker host, connected.
pub struct Engine {
    /// The docker provisioner on the host's engine.
    pub provisioner: DockerProvisioner,
    /// The socket forwarding (ended when this is dropped).
    tunnel: tokio::sync::Mutex<tokio::process::Child>,
    /// What it was made for: the host's spec and key, so a changed host gets a new one.
    made_for: String,
}

impl Engine {
    /// Whether the forwarding still runs.
    async fn alive(&self) -> bool {
        matches!(self.tunnel.lock().await.try_wait(), Ok(None))
    }
}

/// This deployer's docker hosts, connected on first use.
#[derive(Default)]
pub struct Engines {
    settings: Option<EngineSettings>,
    connected: tokio::sync::Mutex<HashMap<String, Arc<Engine>>>,
}

impl Engines {
    /// Docker hosts built with `settings`.
    pub fn new(settings: EngineSettings) -> Self {
        Self {
            settings: Some(settings),
            connected: tokio::sync::Mutex::default(),
        }
    }

    /// Host `name`'s engine, connected (again) when it is not, through `session`.
    pub async fn get(
        &self,
        name: &str,
        host: &Host,
        session: &Session,
    ) -> Provisioned<Arc<Engine>> {
        let settings = self.settings.as_ref().ok_or_else(|| {
            ProvisionError(format!(
                "host {name} is a Docker engine, and this deployer has no docker settings for it"
            ))
        })?;
        let spec = host
            .spec
            .as_ref()
            .ok_or_else(|| ProvisionError(format!("host {name} is not registered")))?;
        let made_for = format!(
            "{}:{}:{}:{:?}:{:?}",
            spec.address, spec.port, spec.user, host.host_key, spec.platform_url
        );
        // One connection at a time: a burst of deployments makes one.
        let mut connected = self.connected.lock().await;
        if let Some(engine) = connected.get(name)
            && engine.made_for == made_for
            && engine.alive().await
        {
            return Ok(engine.clone());
        }
        connected.remove(name);
        self.firewall(session).await?;
        let local = session.engine_socket();
        let tunnel = session
            .forward_socket(&local, REMOTE_SOCKET)
            .await
            .map_err(|err| ProvisionError(err.to_string()))?;
        let engine = docker::connect(&format!("unix://{}", local.display()))
            .await
            .map_err(|err| ProvisionError(format!("host {name}'s Docker engine: {err}")))?;
        if engine
            .inspect_image(&settings.sandboxes.image)
            .await
            .is_err()
        {
            let recipe = settings.recipe.clone().ok_or_else(|| {
                ProvisionError(format!(
                    "host {name}'s Docker engine has no {} image, and this deployer cannot build it",
                    settings.sandboxes.image
                ))
            })?;
            tracing::info!(
                host = name,
                image = recipe.tag,
                "building the agent image on the host's engine"
            );
            image::build(&engine, &recipe).await?;
        }
        let platform_url = spec
            .platform_url
            .clone()
            .unwrap_or_else(|| settings.platform_url.clone());
        let provisioner = DockerProvisioner::on_remote_engine(
            engine,
            settings.sandboxes.clone(),
            &platform_url,
            Published {
                address: spec.address.clone(),
                first_port: FIRST_PORT,
                slots: spec.capacity as usize + SPARE_SLOTS,
            },
        )
        .await?;
        let engine = Arc::new(Engine {
            provisioner,
            tunnel: tokio::sync::Mutex::new(tunnel),
            made_for,
        });
        connected.insert(name.to_owned(), engine.clone());
        tracing::info!(host = name, "connected to the host's Docker engine");
        Ok(engine)
    }

    /// (Re)installs the sandbox firewall on the host (at each connection and each listing, so
    /// a host that restarted has it again by the next reconciliation).
    pub async fn firewall(&self, session: &Session) -> Provisioned<()> {
        let Some(settings) = &self.settings else {
            return Ok(());
        };
        session
            .run(
                "installing the sandbox firewall",
                &network::firewall_script(
                    &settings.sandboxes.network,
                    settings.sandboxes.relay_port,
                ),
                b"",
            )
            .await
            .map(drop)
            .map_err(|err| ProvisionError(err.to_string()))
    }

    /// Forgets host `name`'s engine (it stopped answering): the next use connects again.
    pub async fn forget(&self, name: &str) {
        self.connected.lock().await.remove(name);
    }
}
