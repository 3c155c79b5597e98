//! [`HostKeys`]: each SSH host's private key under `host-key.<name>`, sealed and bound to that
//! key name like agent tokens. The edge writes it when an admin registers the host; the
//! deployer reads it to connect.

use super::agent_tokens::SealedKv;
use async_nats::jetstream;

pub use super::agent_tokens::TokenError as HostKeyError;

/// Seals and opens hosts' SSH private keys. Cheap to clone.
#[derive(Clone)]
pub struct HostKeys(SealedKv);

/// The KV key of a host's private key.
pub fn host_key_entry(name: &str) -> String {
    format!("host-key.{name}")
}

impl HostKeys {
    /// Opens the `secrets` bucket (created by the command service's topology).
    pub async fn open(js: &jetstream::Context, master_key: &[u8]) -> Result<Self, HostKeyError> {
        SealedKv::open(js, master_key).await.map(Self)
    }

    /// Stores `private_key` as the host's key.
    pub async fn put(&self, name: &str, private_key: &str) -> Result<(), HostKeyError> {
        self.0.put(&host_key_entry(name), private_key).await
    }

    /// The host's private key, if one was stored.
    pub async fn get(&self, name: &str) -> Result<Option<String>, HostKeyError> {
        self.0.get(&host_key_entry(name)).await
    }

    /// Forgets the host's key (a removed host).
    pub async fn purge(&self, name: &str) -> Result<(), HostKeyError> {
        self.0.purge(&host_key_entry(name)).await
    }
}
