//! Run leases in the `leases` KV bucket: `run.<run_id>` names the worker running (or about to
//! start) a run and when it last said so.
//!
//! Creating the key is atomic, so it is also the start lock: only the worker that created the
//! lease issues `StartRun`. The holder rewrites it every beat (guarded by its revision); a lease
//! not rewritten for the stale age belongs to a worker that died, and any replica's sweeper may
//! take it over (see `super::ChatWorker::sweep`).
//!
//! Taking, beating and giving up a lease also stamps the run's agent as in use
//! (`agent_activity`), the clock of the deployer's idle pause: an agent is never paused while a
//! worker holds one of its runs (docs/adr/0024). The stamp is written when the lease is taken,
//! before the worker reads the agent's status.

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use warren_commands::sandboxes::Activity;
use warren_commands::topology::KV_LEASES;
use warren_domain::ids::{AgentId, ConversationId, RunId};

/// Why the lease bucket failed.
#[derive(Debug, thiserror::Error)]
#[error("lease bucket: {0}")]
pub struct LeaseError(String);

fn lease_error(err: impl std::fmt::Display) -> LeaseError {
    LeaseError(err.to_string())
}

/// What a lease says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// The holder.
    pub worker_id: String,
    /// The run's conversation.
    pub conversation_id: ConversationId,
    /// The conversation's agent (absent in leases written before it was recorded).
    #[serde(default)]
    pub agent_id: Option<AgentId>,
    /// The run.
    pub run_id: RunId,
    /// When the holder last wrote it (Unix milliseconds).
    pub beat_ms: i64,
}

/// A lease this worker holds: the KV revision it last wrote.
#[derive(Debug)]
pub struct Held {
    key: String,
    lease: Lease,
    revision: u64,
}

impl Held {
    /// The run.
    pub fn run_id(&self) -> RunId {
        self.lease.run_id
    }
}

/// The bucket, for one worker.
#[derive(Clone)]
pub struct Leases {
    kv: kv::Store,
    activity: Activity,
    worker_id: String,
}

fn key_of(run_id: RunId) -> String {
    format!("run.{run_id}")
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Leases {
    /// Opens the bucket (created by the log topology).
    pub async fn open(js: &jetstream::Context, worker_id: String) -> Result<Self, LeaseError> {
        let kv = js.get_key_value(KV_LEASES).await.map_err(lease_error)?;
        let activity = Activity::open(js).await.map_err(lease_error)?;
        Ok(Self {
            kv,
            activity,
            worker_id,
        })
    }

    /// Takes the run's lease; `None` if someone holds it already.
    pub async fn acquire(
        &self,
        conversation_id: ConversationId,
        agent_id: AgentId,
        run_id: RunId,
    ) -> Result<Option<Held>, LeaseError> {
        let key = key_of(run_id);
        let lease = Lease {
            worker_id: self.worker_id.clone(),
            conversation_id,
            agent_id: Some(agent_id),
            run_id,
            beat_ms: now_ms(),
        };
        let body = serde_json::to_vec(&lease).map_err(lease_error)?;
        match self.kv.create(&key, body.into()).await {
            Ok(revision) => {
                let held = Held {
                    key,
                    lease,
                    revision,
                };
                self.stamp(&held).await;
                Ok(Some(held))
            }
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(err) => Err(lease_error(err)),
        }
    }

    /// Says again that this worker holds the lease. Fails if someone took it over.
    pub async fn beat(&self, held: &mut Held) -> Result<(), LeaseError> {
        held.lease.beat_ms = now_ms();
        let body = serde_json::to_vec(&held.lease).map_err(lease_error)?;
        held.revision = self
            .kv
            .update(&held.key, body.into(), held.revision)
            .await
            .map_err(lease_error)?;
        self.stamp(held).await;
        Ok(())
    }

    /// Gives the lease up (if it is still ours).
    pub async fn release(&self, held: Held) -> Result<(), LeaseError> {
        self.stamp(&held).await;
        self.remove(&held.key, held.revision).await
    }

    /// Stamps the lease's agent as in use (best effort: a missed stamp only makes the agent
    /// look idle sooner, and the deployer checks again before it pauses).
    async fn stamp(&self, held: &Held) {
        let Some(agent_id) = held.lease.agent_id else {
            return;
        };
        if let Err(err) = self.activity.stamp(agent_id, &self.worker_id).await {
            tracing::warn!(%agent_id, error = %err, "stamping the agent as in use failed");
        }
    }

    async fn remove(&self, key: &str, revision: u64) -> Result<(), LeaseError> {
        self.kv
            .purge_expect_revision(key, Some(revision))
            .await
            .map_err(lease_error)
    }

    /// Every lease not written for `stale_ms`, with its revision.
    pub async fn stale(&self, stale_ms: i64) -> Result<Vec<(Lease, u64)>, LeaseError> {
        let mut keys = self.kv.keys().await.map_err(lease_error)?;
        let mut stale = Vec::new();
        let now = now_ms();
        while let Some(key) = keys.next().await {
            let key = key.map_err(lease_error)?;
            // The bucket holds other leases too (deployers' hosts): only runs are read here.
            if !key.starts_with("run.") {
                continue;
            }
            let Some(entry) = self.kv.entry(key).await.map_err(lease_error)? else {
                continue;
            };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            match serde_json::from_slice::<Lease>(&entry.value) {
                Ok(lease) if now - lease.beat_ms > stale_ms => stale.push((lease, entry.revision)),
                Ok(_) => {}
                Err(err) => tracing::warn!(key = entry.key, error = %err, "unreadable lease"),
            }
        }
        Ok(stale)
    }

    /// Removes a stale lease found by [`Leases::stale`], unless it changed since.
    pub async fn remove_stale(&self, lease: &Lease, revision: u64) -> Result<(), LeaseError> {
        self.remove(&key_of(lease.run_id), revision).await
    }
}
