//! The warm pool (docs/adr/0028-warm-pool.md): containers created and started before any agent
//! asks, so a new agent's runtime is serving in the time it takes to write two files.
//!
//! A pool container `warren-pool-<slot>` is an agent's container in all but its identity: the
//! same image, lockdown, limits and network, a fixed address, and a volume of its own
//! (`warren-ws-pool-<slot>`, labelled with that address); its runtime waits for
//! `/data/.warren/assignment.json` and serves nothing until then (no token, no agent's data,
//! nothing bound). An agent takes one by renaming it `warren-agent-<id>` (atomic in the engine:
//! two agents cannot take the same one), and the deployer records the volume in the log. Labels
//! cannot change, so a taken container keeps its pool label: its name says whose it is.

use super::{
    DockerProvisioner, LABEL_ADDRESS, LABEL_FINGERPRINT, LABEL_NETWORK, LABEL_POOL, Role,
    container_name, failed, not_found,
};
use crate::deployer::provisioner::{ProvisionError, Provisioned, WarmSpec};
use bollard::models::{ContainerSummary, ContainerSummaryStateEnum, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, RemoveContainerOptions,
    RenameContainerOptions, StartContainerOptions,
};
use std::collections::HashMap;
use warren_domain::ids::AgentId;

/// `warren-pool-<slot>`.
pub fn pool_container_name(slot: &str) -> String {
    format!("warren-pool-{slot}")
}

/// `warren-ws-pool-<slot>`.
pub fn pool_volume_name(slot: &str) -> String {
    format!("warren-ws-pool-{slot}")
}

fn slot_of(container: &ContainerSummary) -> Option<&str> {
    container
        .labels
        .as_ref()?
        .get(LABEL_POOL)
        .map(String::as_str)
}

fn unassigned(container: &ContainerSummary) -> bool {
    container
        .names
        .iter()
        .flatten()
        .any(|name| name.starts_with("/warren-pool-"))
}

impl DockerProvisioner {
    /// This network's unassigned pool containers, whatever their state.
    async fn pool_containers(&self) -> Provisioned<Vec<ContainerSummary>> {
        let filters = self.pool_filters();
        Ok(self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(failed("listing the warm pool"))?
            .into_iter()
            .filter(unassigned)
            .collect())
    }

    /// Whether a pool container may be handed out: running, from the current image, with the
    /// current platform settings.
    fn ready(container: &ContainerSummary, image: &str, warm: &WarmSpec) -> bool {
        container.state == Some(ContainerSummaryStateEnum::RUNNING)
            && container.image_id.as_deref() == Some(image)
            && container
                .labels
                .as_ref()
                .and_then(|labels| labels.get(LABEL_FINGERPRINT))
                == Some(&warm.fingerprint)
    }

    async fn image_id(&self) -> Provisioned<String> {
        self.docker
            .inspect_image(&self.settings.image)
            .await
            .map_err(failed("inspecting the agent image"))?
            .id
            .ok_or_else(|| ProvisionError("the agent image has no id".into()))
    }

    /// How many pool containers are ready to be handed out now.
    pub async fn warm_ready(&self, warm: &WarmSpec) -> Provisioned<usize> {
        let image = self.image_id().await?;
        Ok(self
            .pool_containers()
            .await?
            .iter()
            .filter(|c| Self::ready(c, &image, warm))
            .count())
    }

    /// See [`crate::deployer::provisioner::Provisioner::fill_pool`].
    pub(super) async fn fill(&self, size: usize, warm: &WarmSpec) -> Provisioned<usize> {
        let image = self.image_id().await?;
        let mut ready = 0;
        for container in self.pool_containers().await? {
            let Some(slot) = slot_of(&container) else {
                continue;
            };
            if ready < size && Self::ready(&container, &image, warm) {
                ready += 1;
            } else {
                // Stopped, stale, or more than wanted.
                self.discard(slot).await?;
            }
        }
        let mut started = 0;
        while ready + started < size {
            self.start_warm(warm).await?;
            started += 1;
        }
        Ok(started)
    }

    /// Creates and starts one pool container with its own volume and address.
    async fn start_warm(&self, warm: &WarmSpec) -> Provisioned<()> {
        let slot = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let (name, volume) = (pool_container_name(&slot), pool_volume_name(&slot));
        {
            // The volume keeps the address: created under the lock, so no other container gets it.
            let _one_at_a_time = self.create.lock().await;
            let address = self.free_address().await?;
            let labels = HashMap::from([
                (LABEL_NETWORK.to_owned(), self.settings.network.clone()),
                (LABEL_POOL.to_owned(), slot.clone()),
                (LABEL_ADDRESS.to_owned(), address.to_string()),
            ]);
            self.docker
                .create_volume(VolumeCreateRequest {
                    name: Some(volume.clone()),
                    labels: Some(labels),
                    ..Default::default()
                })
                .await
                .map_err(failed("creating a warm pool volume"))?;
            self.docker
                .create_container(
                    Some(CreateContainerOptions {
                        name: Some(name.clone()),
                        ..Default::default()
                    }),
                    self.body(Role::Warm(&slot, warm), address, &volume),
                )
                .await
                .map_err(failed("creating a warm pool container"))?;
        }
        self.docker
            .start_container(&name, None::<StartContainerOptions>)
            .await
            .map_err(failed("starting a warm pool container"))?;
        tracing::debug!(slot, "warm pool container started");
        Ok(())
    }

    /// Removes an unassigned pool container and its volume. One taken meanwhile (renamed) is
    /// not found under its pool name, and its volume, now an agent's, is kept.
    async fn discard(&self, slot: &str) -> Provisioned<()> {
        match self
            .docker
            .remove_container(
                &pool_container_name(slot),
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => self.remove_volume(&pool_volume_name(slot)).await,
            Err(err) if not_found(&err) => Ok(()),
            Err(err) => Err(failed("removing a warm pool container")(err)),
        }
    }

    /// See [`crate::deployer::provisioner::Provisioner::take_warm`].
    pub(super) async fn take(
        &self,
        agent_id: AgentId,
        warm: &WarmSpec,
    ) -> Provisioned<Option<String>> {
        let name = container_name(agent_id);
        match self
            .docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
        {
            // Taken already (a redelivered deployment): the same one. An agent's own container
            // (a cold one) is not a pool's.
            Ok(info) => {
                let pooled = info
                    .config
                    .and_then(|config| config.labels)
                    .is_some_and(|labels| labels.contains_key(LABEL_POOL));
                if !pooled {
                    return Ok(None);
                }
                let volume = info
                    .mounts
                    .unwrap_or_default()
                    .into_iter()
                    .find(|m| m.destination.as_deref() == Some(super::DATA_DIR))
                    .and_then(|m| m.name);
                if volume.is_some() {
                    self.taken_lock().entry(agent_id).or_insert(None);
                }
                return Ok(volume);
            }
            Err(err) if not_found(&err) => {}
            Err(err) => return Err(failed("inspecting the agent's container")(err)),
        }
        let image = self.image_id().await?;
        for container in self.pool_containers().await? {
            let Some(slot) = slot_of(&container).filter(|_| Self::ready(&container, &image, warm))
            else {
                continue;
            };
            match self
                .docker
                .rename_container(
                    &pool_container_name(slot),
                    RenameContainerOptions { name: name.clone() },
                )
                .await
            {
                Ok(()) => {
                    self.taken_lock().insert(agent_id, None);
                    tracing::info!(%agent_id, slot, "agent took a warm pool container");
                    return Ok(Some(pool_volume_name(slot)));
                }
                // Taken by another agent or discarded meanwhile: the next one.
                Err(err) if not_found(&err) || is_conflict(&err) => continue,
                Err(err) => return Err(failed("taking a warm pool container")(err)),
            }
        }
        Ok(None)
    }

    /// See [`crate::deployer::provisioner::Provisioner::drain_pool`].
    pub(super) async fn drain(&self) {
        let containers = match self.pool_containers().await {
            Ok(containers) => containers,
            Err(err) => {
                tracing::warn!(error = %err, "listing the warm pool failed");
                return;
            }
        };
        for slot in containers.iter().filter_map(slot_of) {
            if let Err(err) = self.discard(slot).await {
                tracing::warn!(slot, error = %err, "removing a warm pool container failed");
            }
        }
    }
}

fn is_conflict(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            ..
        }
    )
}
