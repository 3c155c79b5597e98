//! Which deployer looks after which SSH host: leases in the `leases` KV bucket.
//!
//! - `deployer.<id>`: a deployer says it is alive (rewritten every tend).
//! - `host.<name>`: the deployer that reconciles the host, and when it last said so.
//!
//! Every few seconds ([`HostLeases::tend`]) a deployer beats its leases and its presence, and
//! evens the hosts out: each live deployer holds at most its fair share (hosts divided by live
//! deployers, rounded up), gives up the surplus (written stale, so another takes it at once) and
//! takes free or stale leases up to its share. A lease not rewritten for [`STALE`] belongs to a
//! deployer that died. Every write is guarded by the revision read, so two deployers never both
//! take one lease.
//!
//! Leases say who *reconciles* a host (lists it, restarts its agents, marks it down). Deploying,
//! stopping and deleting one agent go through the log's consumer, which hands each commit to
//! one deployer, and act on the agent's host whoever holds its lease.

use async_nats::jetstream::kv::{self, Operation};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A lease or presence not rewritten for this long is dead.
pub const STALE: Duration = Duration::from_secs(10);
/// A deployer's presence not rewritten for this long is removed from the bucket, ms.
const FORGET_MS: i64 = 60_000;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Lease {
    deployer: String,
    beat_ms: i64,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn fresh(beat_ms: i64) -> bool {
    now_ms() - beat_ms < STALE.as_millis() as i64
}

/// One deployer's leases.
pub struct HostLeases {
    kv: kv::Store,
    /// This deployer.
    pub deployer: String,
}

/// What one tend came to.
#[derive(Debug, Default)]
pub struct Tended {
    /// The hosts this deployer holds now.
    pub mine: BTreeSet<String>,
    /// The hosts it took since the last tend.
    pub taken: BTreeSet<String>,
}

impl HostLeases {
    /// Leases of deployer `deployer` in `kv`.
    pub fn new(kv: kv::Store, deployer: String) -> Self {
        Self { kv, deployer }
    }

    async fn read(&self, key: &str) -> Result<Option<(Lease, u64)>, String> {
        let entry = self.kv.entry(key).await.map_err(|err| err.to_string())?;
        Ok(entry.and_then(|entry| {
            if entry.operation != Operation::Put {
                return None;
            }
            serde_json::from_slice(&entry.value)
                .ok()
                .map(|lease| (lease, entry.revision))
        }))
    }

    fn lease(&self, beat_ms: i64) -> bytes::Bytes {
        serde_json::to_vec(&Lease {
            deployer: self.deployer.clone(),
            beat_ms,
        })
        .expect("a lease serializes")
        .into()
    }

    /// The live deployers (this one included).
    async fn live(&self) -> Result<BTreeSet<String>, String> {
        let mut live = BTreeSet::from([self.deployer.clone()]);
        let mut keys = self.kv.keys().await.map_err(|err| err.to_string())?;
        while let Some(key) = keys.next().await {
            let key = key.map_err(|err| err.to_string())?;
            let Some(id) = key.strip_prefix("deployer.") else {
                continue;
            };
            match self.read(&key).await? {
                Some((lease, _)) if fresh(lease.beat_ms) => {
                    live.insert(id.to_owned());
                }
                // A deployer gone for good (restarts take new ids): its presence is removed,
                // unless it beat since.
                Some((lease, revision)) if now_ms() - lease.beat_ms > FORGET_MS => {
                    let _ = self.kv.purge_expect_revision(&key, Some(revision)).await;
                }
                _ => {}
            }
        }
        Ok(live)
    }

    /// Beats, evens out and takes leases on `hosts`; `held` is what this deployer held after
    /// the last tend.
    pub async fn tend(&self, hosts: &[String], held: &BTreeSet<String>) -> Result<Tended, String> {
        // Hosts removed while this deployer held them: their leases go with them.
        for gone in held.iter().filter(|host| !hosts.contains(host)) {
            if let Some((lease, revision)) = self.read(&format!("host.{gone}")).await?
                && lease.deployer == self.deployer
            {
                let _ = self
                    .kv
                    .purge_expect_revision(format!("host.{gone}"), Some(revision))
                    .await;
            }
        }
        self.kv
            .put(format!("deployer.{}", self.deployer), self.lease(now_ms()))
            .await
            .map_err(|err| err.to_string())?;
        let live = self.live().await?;
        let share = hosts.len().div_ceil(live.len().max(1));
        let mut leases = BTreeMap::new();
        for host in hosts {
            leases.insert(host.clone(), self.read(&format!("host.{host}")).await?);
        }
        let mut tended = Tended::default();
        // Beat what is still mine, up to my share; the surplus is written stale.
        for (host, lease) in &leases {
            let Some((lease, revision)) = lease else {
                continue;
            };
            if lease.deployer != self.deployer {
                continue;
            }
            let keep = tended.mine.len() < share;
            let beat = if keep { now_ms() } else { 0 };
            let written = self
                .kv
                .update(format!("host.{host}"), self.lease(beat), *revision)
                .await;
            if written.is_ok() && keep {
                tended.mine.insert(host.clone());
            } else if !keep {
                tracing::info!(host, share, "host handed to another deployer");
            }
        }
        // Take free and stale ones, up to my share.
        for (host, lease) in &leases {
            if tended.mine.len() >= share {
                break;
            }
            let key = format!("host.{host}");
            let taken = match lease {
                None => self.kv.create(&key, self.lease(now_ms())).await.is_ok(),
                Some((lease, revision))
                    if lease.deployer != self.deployer && !fresh(lease.beat_ms) =>
                {
                    self.kv
                        .update(&key, self.lease(now_ms()), *revision)
                        .await
                        .is_ok()
                }
                _ => false,
            };
            if taken {
                tended.mine.insert(host.clone());
            }
        }
        tended.taken = tended.mine.difference(held).cloned().collect();
        Ok(tended)
    }
}
