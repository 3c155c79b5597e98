//! What the platform knows of agents' sandboxes outside the log (docs/adr/0024): neither is a
//! fact worth keeping, both are rewritten all the time, so they live in KV buckets beside it.
//!
//! - [`Activity`] (`agent_activity`): when each agent was last used. The chat worker stamps an
//!   agent when it takes one of its runs, at every beat of that run's lease, and when the run
//!   ends; the deployer's idle pause reads the stamp. The stamp's time is the server's (the
//!   entry's), like the log's own times, so no two hosts' clocks are compared.
//! - [`SandboxStats`] (`sandbox_stats`): what each sandbox used at the deployer's last
//!   reconciliation, for `GET /api/v1/agents/{id}/status`.

use crate::topology::{KV_ACTIVITY, KV_SANDBOX_STATS};
use async_nats::jetstream::{self, kv};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use warren_domain::ids::AgentId;

/// Why a sandbox bucket could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum SandboxKvError {
    /// The bucket could not be opened (the topology is missing: run `warren migrate`).
    #[error("opening the {bucket} bucket failed")]
    Bucket {
        /// Which one.
        bucket: &'static str,
        /// Cause.
        #[source]
        source: jetstream::context::KeyValueError,
    },
    /// The KV store failed.
    #[error("{bucket} bucket: {message}")]
    Kv {
        /// Which one.
        bucket: &'static str,
        /// What failed.
        message: String,
    },
}

async fn open(js: &jetstream::Context, bucket: &'static str) -> Result<kv::Store, SandboxKvError> {
    js.get_key_value(bucket)
        .await
        .map_err(|source| SandboxKvError::Bucket { bucket, source })
}

fn kv_error(bucket: &'static str, err: impl std::fmt::Display) -> SandboxKvError {
    SandboxKvError::Kv {
        bucket,
        message: err.to_string(),
    }
}

/// An agent's last use: when, and the entry's revision (which changes with every stamp, so a
/// reader can tell whether the agent was used between two reads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// When the stamp was written (the NATS server's time).
    pub at: DateTime<Utc>,
    /// The entry's revision.
    pub revision: u64,
}

/// When each agent was last used. Cheap to clone.
#[derive(Clone)]
pub struct Activity {
    kv: kv::Store,
}

impl Activity {
    /// Opens the `agent_activity` bucket (created by the log topology).
    pub async fn open(js: &jetstream::Context) -> Result<Self, SandboxKvError> {
        Ok(Self {
            kv: open(js, KV_ACTIVITY).await?,
        })
    }

    /// Says that `agent_id` is being used now, by `by` (a worker's id, for whoever reads the
    /// bucket by hand).
    pub async fn stamp(&self, agent_id: AgentId, by: &str) -> Result<(), SandboxKvError> {
        self.kv
            .put(agent_id.to_string(), by.to_owned().into())
            .await
            .map(drop)
            .map_err(|err| kv_error(KV_ACTIVITY, err))
    }

    /// The agent's last stamp, if it was ever used.
    pub async fn last(&self, agent_id: AgentId) -> Result<Option<Stamp>, SandboxKvError> {
        let entry = self
            .kv
            .entry(agent_id.to_string())
            .await
            .map_err(|err| kv_error(KV_ACTIVITY, err))?;
        Ok(entry
            .filter(|entry| entry.operation == kv::Operation::Put)
            .and_then(|entry| {
                let nanos = i64::try_from(entry.created.unix_timestamp_nanos()).ok()?;
                Some(Stamp {
                    at: DateTime::from_timestamp_nanos(nanos),
                    revision: entry.revision,
                })
            }))
    }
}

/// Where a sandbox's runtime stands, as its provisioner found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    /// Started.
    Running,
    /// Frozen (memory and workspace kept).
    Paused,
    /// Present but not running.
    Stopped,
}

/// What one sandbox used when the deployer last looked; each figure only if its provisioner can
/// tell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SandboxStats {
    /// The runtime's state.
    pub state: SandboxState,
    /// When the running (or paused) runtime started.
    pub started_at: Option<DateTime<Utc>>,
    /// CPU used since the previous sample, in percent of one core.
    pub cpu_percent: Option<f64>,
    /// Memory in use, bytes.
    pub memory_bytes: Option<u64>,
    /// The workspace's size on disk, bytes.
    pub disk_bytes: Option<u64>,
    /// When this was sampled.
    pub sampled_at: DateTime<Utc>,
}

/// The last [`SandboxStats`] of each agent. Cheap to clone.
#[derive(Clone)]
pub struct SandboxStatsStore {
    kv: kv::Store,
}

impl SandboxStatsStore {
    /// Opens the `sandbox_stats` bucket (created by the log topology).
    pub async fn open(js: &jetstream::Context) -> Result<Self, SandboxKvError> {
        Ok(Self {
            kv: open(js, KV_SANDBOX_STATS).await?,
        })
    }

    /// Records the agent's latest sample.
    pub async fn put(&self, agent_id: AgentId, stats: &SandboxStats) -> Result<(), SandboxKvError> {
        let body = serde_json::to_vec(stats).map_err(|err| kv_error(KV_SANDBOX_STATS, err))?;
        self.kv
            .put(agent_id.to_string(), body.into())
            .await
            .map(drop)
            .map_err(|err| kv_error(KV_SANDBOX_STATS, err))
    }

    /// The agent's latest sample, if any (an unreadable one counts as none).
    pub async fn get(&self, agent_id: AgentId) -> Result<Option<SandboxStats>, SandboxKvError> {
        let value = self
            .kv
            .get(agent_id.to_string())
            .await
            .map_err(|err| kv_error(KV_SANDBOX_STATS, err))?;
        Ok(value.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    /// Forgets the agent's samples (its sandbox is gone).
    pub async fn remove(&self, agent_id: AgentId) -> Result<(), SandboxKvError> {
        self.kv
            .purge(agent_id.to_string())
            .await
            .map_err(|err| kv_error(KV_SANDBOX_STATS, err))
    }
}
