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
    /// The local end of the forwarding.
    socket: std::path::PathBuf,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
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
    /// Each host's engine, behind a lock of its own: connecting to one host (an image build
    /// included) holds up no other.
    connected: std::sync::Mutex<HashMap<String, Slot>>,
}

/// One host's engine, once connected.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Engine>>>>;

impl Engines {
    /// Docker hosts built with `settings`.
    pub fn new(settings: EngineSettings) -> Self {
        Self {
            settings: Some(settings),
            connected: std::sync::Mutex::default(),
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
        // The engine socket's path names the address, port, user, host key and private key.
        let made_for = format!(
            "{}:{}:{:?}",
            session.engine_socket().display(),
            spec.capacity,
            spec.platform_url
        );
        // A path per connection: one being replaced still serves whoever holds it.
        static CONNECTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let local = session.engine_socket().with_extension(format!(
            "docker{}",
            CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let slot = self.slot(name);
        // One connection per host at a time: a burst of deployments makes one.
        let mut connected = slot.lock().await;
        if let Some(engine) = connected.as_ref()
            && engine.made_for == made_for
            && engine.alive().await
        {
            return Ok(engine.clone());
        }
        *connected = None;
        self.firewall(session).await?;
        let tunnel = session
            .forward_socket(&local, REMOTE_SOCKET)
            .await
            .map_err(|err| ProvisionError(err.to_string()))?;
        let engine = docker::connect(&format!("unix://{}", local.display()))
            .await
            .map_err(|err| ProvisionError(format!("host {name}'s Docker engine: {err}")))?;
        match &settings.recipe {
            // Nothing is built when the host's image holds this runtime already; an older one
            // is replaced.
            Some(recipe) => {
                let built = image::build(&engine, recipe).await?;
                if !built.unchanged {
                    tracing::info!(
                        host = name,
                        image = built.tag,
                        "agent image built on the host's engine"
                    );
                }
            }
            None => {
                engine
                    .inspect_image(&settings.sandboxes.image)
                    .await
                    .map_err(|err| {
                        ProvisionError(format!(
                            "host {name}'s Docker engine has no {} image ({err}), and this deployer cannot build it",
                            settings.sandboxes.image
                        ))
                    })?;
            }
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
            socket: local,
        });
        *connected = Some(engine.clone());
        tracing::info!(host = name, "connected to the host's Docker engine");
        Ok(engine)
    }

    fn slot(&self, name: &str) -> Slot {
        self.connected
            .lock()
            .expect("engines lock")
            .entry(name.to_owned())
            .or_default()
            .clone()
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
        let slot = self
            .connected
            .lock()
            .expect("engines lock")
            .get(name)
            .cloned();
        if let Some(slot) = slot {
            *slot.lock().await = None;
        }
    }

    /// Ends the connections to every host but `keep` (hosts removed, or no longer docker
    /// hosts): no tunnel to an engine stays open for nothing. (A host another deployer holds
    /// keeps its connection: deployments reach it through any deployer.)
    pub fn retain(&self, keep: &std::collections::BTreeSet<String>) {
        self.connected
            .lock()
            .expect("engines lock")
            .retain(|name, _| keep.contains(name));
    }
}
