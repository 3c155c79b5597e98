//! What each agent's container uses: when it started (inspect), its CPU counter and memory (the
//! engine's one-shot stats, memory without the page cache it could drop, as `docker stats`
//! counts it), and its volume's size on disk, walked on this host when the engine keeps its
//! volumes here (a remote engine's are out of reach: no disk figure then).

use super::{DATA_DIR, container_name};
use crate::deployer::provisioner::Usage;
use crate::deployer::usage::disk_bytes;
use bollard::Docker;
use bollard::query_parameters::{InspectContainerOptions, StatsOptions};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use std::path::PathBuf;
use warren_domain::ids::AgentId;

/// The agent's container's use; `None` when it has no container.
pub async fn sample(docker: &Docker, agent_id: AgentId) -> Option<Usage> {
    let name = container_name(agent_id);
    let info = docker
        .inspect_container(&name, None::<InspectContainerOptions>)
        .await
        .ok()?;
    // The volume it mounts: the agent's own, or the warm pool's it came with.
    let volume = info
        .mounts
        .unwrap_or_default()
        .into_iter()
        .find(|m| m.destination.as_deref() == Some(DATA_DIR))
        .and_then(|m| m.name);
    let state = info.state.unwrap_or_default();
    let live = state.running.unwrap_or(false) || state.paused.unwrap_or(false);
    let mut usage = Usage {
        disk_bytes: match volume {
            Some(volume) => volume_bytes(docker, &volume).await,
            None => None,
        },
        ..Usage::default()
    };
    if !live {
        return Some(usage);
    }
    usage.started_at = state
        .started_at
        .as_deref()
        .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
        .map(|at| at.with_timezone(&Utc));
    let options = StatsOptions {
        stream: false,
        one_shot: true,
    };
    if let Some(Ok(stats)) = docker.stats(&name, Some(options)).next().await {
        usage.cpu_ns = stats.cpu_stats.and_then(|cpu| cpu.cpu_usage?.total_usage);
        usage.memory_bytes = stats.memory_stats.and_then(|memory| {
            let used = memory.usage?;
            let cache = memory.stats.as_ref().and_then(|stats| {
                // cgroup v2, then v1.
                stats
                    .get("inactive_file")
                    .or_else(|| stats.get("total_inactive_file"))
                    .copied()
            });
            Some(used.saturating_sub(cache.unwrap_or(0)))
        });
    }
    Some(usage)
}

/// The size of a volume, when its directory is on this host and readable.
async fn volume_bytes(docker: &Docker, volume: &str) -> Option<u64> {
    let volume = docker.inspect_volume(volume).await.ok()?;
    let path = PathBuf::from(volume.mountpoint);
    tokio::task::spawn_blocking(move || disk_bytes(&path))
        .await
        .ok()
        .flatten()
}
