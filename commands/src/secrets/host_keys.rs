//! [`HostKeys`]: each SSH host's private key under `host-key.<name>`, sealed and bound to that
//! key name like agent tokens. The edge writes it when an admin registers the host; the
//! deployer reads it to connect.

use super::{open, seal};
use crate::topology::KV_SECRETS;
use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use async_nats::jetstream::{self, kv};

pub use super::agent_tokens::TokenError as HostKeyError;

/// Seals and opens hosts' SSH private keys. Cheap to clone.
#[derive(Clone)]
pub struct HostKeys {
    cipher: Aes256Gcm,
    kv: kv::Store,
}

/// The KV key of a host's private key.
pub fn host_key_entry(name: &str) -> String {
    format!("host-key.{name}")
}

impl HostKeys {
    /// Opens the `secrets` bucket (created by the command service's topology).
    pub async fn open(js: &jetstream::Context, master_key: &[u8]) -> Result<Self, HostKeyError> {
        let cipher =
            Aes256Gcm::new_from_slice(master_key).map_err(|_| HostKeyError::BadMasterKey)?;
        let kv = js
            .get_key_value(KV_SECRETS)
            .await
            .map_err(HostKeyError::Bucket)?;
        Ok(Self { cipher, kv })
    }

    /// Stores `private_key` as the host's key.
    pub async fn put(&self, name: &str, private_key: &str) -> Result<(), HostKeyError> {
        let key = host_key_entry(name);
        let sealed = seal(&self.cipher, key.as_bytes(), private_key.as_bytes())
            .ok_or_else(|| HostKeyError::Crypto(key.clone()))?;
        self.kv
            .put(&key, sealed.into())
            .await
            .map_err(|err| HostKeyError::Kv(err.to_string()))?;
        Ok(())
    }

    /// The host's private key, if one was stored.
    pub async fn get(&self, name: &str) -> Result<Option<String>, HostKeyError> {
        let key = host_key_entry(name);
        let Some(sealed) = self
            .kv
            .get(&key)
            .await
            .map_err(|err| HostKeyError::Kv(err.to_string()))?
        else {
            return Ok(None);
        };
        let plain =
            open(&self.cipher, key.as_bytes(), &sealed).ok_or(HostKeyError::Crypto(key.clone()))?;
        String::from_utf8(plain)
            .map(Some)
            .map_err(|_| HostKeyError::Crypto(key))
    }

    /// Forgets the host's key (a removed host).
    pub async fn purge(&self, name: &str) -> Result<(), HostKeyError> {
        self.kv
            .purge(host_key_entry(name))
            .await
            .map_err(|err| HostKeyError::Kv(err.to_string()))
    }
}
