//! The warm pool on SSH hosts (`WARREN_WARM_POOL` per host, docs/adr/0040-ssh-warm-pool.md).
//!
//! Each host a deployer holds keeps up to that many **slots** while it has room for agents: a
//! directory under [`scripts::POOL_DIR`] with a user of its own, the runtime binary, settings
//! with no agent's in them, a port, and a runtime already started by its supervisor, waiting
//! for an assignment (`WARREN_AGENT_ASSIGNMENT_FILE`) and serving nothing, not even `/health`.
//!
//! An agent **takes** a slot at `allocating`: one rename on the host claims it (two deployers
//! never get one slot), and the agent's directory becomes a link to the slot's, so every other
//! script (stop, list, usage, destroy) finds it where it finds any agent. At `starting`, one
//! command writes the agent's settings, its token, then the assignment the waiting runtime
//! reads: no user to create, no binary to check, no process to start. A slot prepared with
//! other platform settings or another binary, or whose runtime died, is replaced; one whose
//! agent's tier has other limits than the pool's is restarted under them (a cold start).

use super::{SshFleet, failed, scripts};
use crate::deployer::provisioner::{Provisioned, RuntimeSpec, WarmSpec};
use base64::Engine as _;
use warren_domain::host::Host;
use warren_domain::ids::AgentId;

/// How long a claimed slot may stay unlinked before it is an interrupted take and removed.
const STRAY_SECS: u64 = 60;

/// What [`scripts::POOL_LIST`] says of one slot.
struct Slot<'a> {
    slot: &'a str,
    state: &'a str,
    up: bool,
    fingerprint: &'a str,
    binary: &'a str,
    claimed_secs: Option<u64>,
}

fn slots(listing: &str) -> impl Iterator<Item = Slot<'_>> {
    listing.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [slot, state, up, fingerprint, binary, age] = fields.as_slice() else {
            return None;
        };
        Some(Slot {
            slot,
            state,
            up: *up == "up",
            fingerprint,
            binary,
            claimed_secs: age.parse().ok(),
        })
    })
}

impl SshFleet {
    fn taken_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<AgentId, Option<RuntimeSpec>>> {
        self.taken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// See [`crate::deployer::provisioner::Provisioner::fill_pool`]: every host this deployer
    /// holds, up, keeps `size` ready slots (fewer when it has less room for agents).
    pub(super) async fn fill(&self, size: usize, warm: &WarmSpec) -> Provisioned<usize> {
        let hosts = self.hosts().await?;
        let filled = futures::future::join_all(
            hosts
                .iter()
                .filter(|(name, host)| {
                    !host.removed
                        && !host.down
                        && host.spec.as_ref().is_some_and(|spec| spec.engine.is_ssh())
                        && self.holds(name)
                })
                .map(|(name, host)| async move {
                    match self.fill_host(name, host, size, warm).await {
                        Ok(started) => started,
                        Err(err) => {
                            tracing::warn!(host = name, error = %err, "filling the host's warm pool failed");
                            0
                        }
                    }
                }),
        )
        .await;
        Ok(filled.into_iter().sum())
    }

    async fn fill_host(
        &self,
        name: &str,
        host: &Host,
        size: usize,
        warm: &WarmSpec,
    ) -> Provisioned<usize> {
        let session = self.session(name, host).await?;
        let listing = session
            .run("listing the warm pool", scripts::POOL_LIST, b"")
            .await
            .map_err(failed)?;
        let binary = self.binary_path();
        let mut ready = Vec::new();
        for slot in slots(&listing) {
            let discard = match slot.state {
                "free" => {
                    let good =
                        slot.up && slot.fingerprint == warm.fingerprint && slot.binary == binary;
                    if good {
                        ready.push(slot.slot.to_owned());
                    }
                    !good
                }
                "stray" => slot.claimed_secs.is_some_and(|secs| secs > STRAY_SECS),
                _ => false,
            };
            if discard {
                self.discard(&session, slot.slot, slot.state == "stray")
                    .await;
            }
        }
        let room = host
            .spec
            .as_ref()
            .map_or(0, |spec| spec.capacity as usize)
            .saturating_sub(host.agents.len());
        let target = size.min(room);
        for extra in ready.iter().skip(target) {
            self.discard(&session, extra, false).await;
        }
        let missing = target.saturating_sub(ready.len());
        if missing == 0 {
            return Ok(0);
        }
        let binary = self.ensure_binary(&session).await?;
        for _ in 0..missing {
            let slot = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
            let _choosing = self.choosing_port(name).await;
            let seed = uuid::Uuid::new_v4();
            let seed = [seed.as_bytes()[0], seed.as_bytes()[1]];
            let port = Self::free_port(&session, &scripts::ports_for_slot(&slot), seed).await?;
            let dir = scripts::slot_dir(&slot);
            let mut vars = Self::base_env(
                host,
                &warm.platform_url,
                (&dir, &binary, port),
                &self.limits,
                warm.provider.as_deref(),
            );
            // The platform's URL comes with the assignment (the runtime wants an agent id with
            // it).
            vars.retain(|(name, _)| *name != "WARREN_AGENT_PLATFORM_URL");
            vars.push((
                "WARREN_AGENT_ASSIGNMENT_FILE",
                format!("{dir}/assignment.json"),
            ));
            session
                .run(
                    "preparing a warm pool slot",
                    &scripts::create_slot(&slot, port, &warm.fingerprint, &binary),
                    scripts::env_file(&vars).as_bytes(),
                )
                .await
                .map_err(failed)?;
            tracing::debug!(host = name, slot, port, "warm pool slot ready");
        }
        Ok(missing)
    }

    async fn discard(&self, session: &super::Session, slot: &str, stray: bool) {
        match session
            .run(
                "removing a warm pool slot",
                &scripts::discard_slot(slot, stray),
                b"",
            )
            .await
        {
            Ok(_) => tracing::debug!(host = session.name, slot, "warm pool slot removed"),
            Err(err) => {
                tracing::warn!(host = session.name, slot, error = %err, "removing a warm pool slot failed")
            }
        }
    }

    /// See [`crate::deployer::provisioner::Provisioner::take_warm`]: the agent is placed as
    /// usual, and takes a ready slot of that host if it has one.
    pub(super) async fn take(
        &self,
        agent_id: AgentId,
        warm: &WarmSpec,
    ) -> Provisioned<Option<String>> {
        let (name, host) = self.place(agent_id).await?;
        if super::is_docker(&host) {
            // A docker host keeps no slots of this kind.
            return Ok(None);
        }
        let session = self.session(&name, &host).await?;
        let taken = session
            .run(
                "taking a warm pool slot",
                &scripts::take_slot(agent_id, &warm.fingerprint, &self.binary_path()),
                b"",
            )
            .await;
        let output = match taken {
            Ok(output) => output,
            Err(super::SshError::Failed { code: 3, .. }) => return Ok(None),
            Err(err) => return Err(failed(err)),
        };
        let mut fields = output.split_whitespace();
        let (Some("taken"), Some(slot), Some(port)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(super::ProvisionError(format!(
                "taking a warm pool slot: unexpected answer {output:?}"
            )));
        };
        let port = port.parse().map_err(|_| {
            super::ProvisionError(format!("taking a warm pool slot: port {port:?}"))
        })?;
        self.remember(
            agent_id,
            super::Endpoint {
                host: name.clone(),
                address: session.address.clone(),
                port,
            },
        );
        self.taken_lock().insert(agent_id, None);
        tracing::info!(%agent_id, host = name, slot, "agent took a warm pool slot");
        Ok(Some(format!("ssh-pool:{slot}")))
    }

    /// At `configure`: whether the agent's runtime is a taken slot's that `start` assigns (its
    /// spec kept until then). Not when its owner's tier has other limits than the pool's: that
    /// runtime is configured and restarted as any other.
    pub(super) fn assigned_later(&self, spec: &RuntimeSpec) -> bool {
        let same_limits = self
            .tier_limits
            .get(&spec.tier)
            .is_none_or(|limits| *limits == self.limits);
        let mut taken = self.taken_lock();
        match taken.get_mut(&spec.agent_id) {
            Some(kept) if same_limits => {
                *kept = Some(spec.clone());
                true
            }
            Some(_) => {
                taken.remove(&spec.agent_id);
                false
            }
            None => false,
        }
    }

    /// At `start`: assigns the taken slot's waiting runtime to the agent, if it took one and
    /// was configured; its endpoint URL. One command on the host.
    pub(super) async fn assign(
        &self,
        agent_id: AgentId,
        token: &str,
    ) -> Provisioned<Option<String>> {
        let Some(spec) = self.taken_lock().remove(&agent_id).flatten() else {
            return Ok(None);
        };
        let (session, host) = self
            .agent_session(agent_id)
            .await?
            .ok_or_else(|| super::ProvisionError("the agent is on no host".into()))?;
        let endpoint = self
            .endpoint(agent_id)
            .filter(|endpoint| endpoint.host == session.name)
            .ok_or_else(|| super::ProvisionError("the taken slot's port is not known".into()))?;
        let vars = self.agent_env(&host, &spec, &self.binary_path(), endpoint.port);
        let platform_url = vars
            .iter()
            .find(|(name, _)| *name == "WARREN_AGENT_PLATFORM_URL")
            .map(|(_, url)| url.clone());
        let assignment = serde_json::json!({
            "agent_id": agent_id.to_string(),
            "platform_url": platform_url,
            "model": spec.model,
            "system_prompt": spec.system_prompt,
        })
        .to_string();
        let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        let input = format!(
            "{}\n{}\n{}\n",
            b64(token),
            b64(&scripts::env_file(&vars)),
            b64(&assignment)
        );
        session
            .run(
                "assigning the warm runtime",
                &scripts::assign_slot(agent_id, &spec.fingerprint),
                input.as_bytes(),
            )
            .await
            .map_err(failed)?;
        Ok(Some(endpoint.url()))
    }

    /// See [`crate::deployer::provisioner::Provisioner::drain_pool`]: the free slots of the
    /// hosts this deployer holds.
    pub(super) async fn drain(&self) {
        let Ok(hosts) = self.hosts().await else {
            return;
        };
        for (name, host) in hosts.iter().filter(|(name, host)| {
            !host.removed && !host.down && !super::is_docker(host) && self.holds(name)
        }) {
            let Ok(session) = self.session(name, host).await else {
                continue;
            };
            let Ok(listing) = session
                .run("listing the warm pool", scripts::POOL_LIST, b"")
                .await
            else {
                continue;
            };
            for slot in slots(&listing).filter(|slot| slot.state == "free") {
                self.discard(&session, slot.slot, false).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_listing_is_read_per_slot() {
        let listing = "0123456789abcdef free up fp1 /opt/warren/bin/warren-agent-1 -\n\
                       fedcba9876543210 stray down fp1 /opt/warren/bin/warren-agent-1 75\n\
                       short line\n";
        let found: Vec<Slot<'_>> = slots(listing).collect();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].slot, "0123456789abcdef");
        assert!(found[0].up && found[0].state == "free" && found[0].claimed_secs.is_none());
        assert_eq!(found[1].claimed_secs, Some(75));
        assert!(!found[1].up);
    }
}
