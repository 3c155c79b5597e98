//! [`AgentTokens`]: each agent's bearer token under `agent-token.<agent_id>`, bound to that key
//! name. The deployer writes tokens; the chat worker and the edge read them to reach runtimes.

use super::{open, seal};
use crate::topology::KV_SECRETS;
use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use async_nats::jetstream::{self, kv};
use warren_domain::ids::AgentId;

/// Why a token could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The master key is not 32 bytes.
    #[error("the encryption key must be 32 bytes")]
    BadMasterKey,
    /// The bucket could not be opened.
    #[error("opening the secrets bucket failed")]
    Bucket(#[source] jetstream::context::KeyValueError),
    /// The KV store failed.
    #[error("secrets bucket: {0}")]
    Kv(String),
    /// The ciphertext does not open under this key.
    #[error("secret {0} does not decrypt")]
    Crypto(String),
}

/// Seals and opens agent tokens. Cheap to clone.
#[derive(Clone)]
pub struct AgentTokens(SealedKv);

/// The KV key of an agent's token.
pub fn token_entry(agent_id: AgentId) -> String {
    format!("agent-token.{agent_id}")
}

impl AgentTokens {
    /// Opens the `secrets` bucket (created by the command service's topology).
    pub async fn open(js: &jetstream::Context, master_key: &[u8]) -> Result<Self, TokenError> {
        SealedKv::open(js, master_key).await.map(Self)
    }

    /// Stores `token` as the agent's token.
    pub async fn put(&self, agent_id: AgentId, token: &str) -> Result<(), TokenError> {
        self.0.put(&token_entry(agent_id), token).await
    }

    /// The agent's token, if one was stored.
    pub async fn get(&self, agent_id: AgentId) -> Result<Option<String>, TokenError> {
        self.0.get(&token_entry(agent_id)).await
    }

    /// Forgets the agent's token (a deleted agent).
    pub async fn purge(&self, agent_id: AgentId) -> Result<(), TokenError> {
        self.0.purge(&token_entry(agent_id)).await
    }
}

/// Texts sealed in the `secrets` bucket, each bound to its key name: what [`AgentTokens`] and
/// [`super::HostKeys`] keep. Cheap to clone.
#[derive(Clone)]
pub(super) struct SealedKv {
    cipher: Aes256Gcm,
    kv: kv::Store,
}

impl SealedKv {
    /// Opens the `secrets` bucket (created by the command service's topology).
    pub(super) async fn open(
        js: &jetstream::Context,
        master_key: &[u8],
    ) -> Result<Self, TokenError> {
        let cipher = Aes256Gcm::new_from_slice(master_key).map_err(|_| TokenError::BadMasterKey)?;
        let kv = js
            .get_key_value(KV_SECRETS)
            .await
            .map_err(TokenError::Bucket)?;
        Ok(Self { cipher, kv })
    }

    /// Stores `plain` sealed under `key`.
    pub(super) async fn put(&self, key: &str, plain: &str) -> Result<(), TokenError> {
        let sealed = seal(&self.cipher, key.as_bytes(), plain.as_bytes())
            .ok_or_else(|| TokenError::Crypto(key.to_owned()))?;
        self.kv
            .put(key, sealed.into())
            .await
            .map_err(|err| TokenError::Kv(err.to_string()))?;
        Ok(())
    }

    /// The text under `key`, if one was stored.
    pub(super) async fn get(&self, key: &str) -> Result<Option<String>, TokenError> {
        let Some(sealed) = self
            .kv
            .get(key)
            .await
            .map_err(|err| TokenError::Kv(err.to_string()))?
        else {
            return Ok(None);
        };
        let plain = open(&self.cipher, key.as_bytes(), &sealed)
            .ok_or_else(|| TokenError::Crypto(key.to_owned()))?;
        String::from_utf8(plain)
            .map(Some)
            .map_err(|_| TokenError::Crypto(key.to_owned()))
    }

    /// Destroys the text under `key`.
    pub(super) async fn purge(&self, key: &str) -> Result<(), TokenError> {
        self.kv
            .purge(key)
            .await
            .map_err(|err| TokenError::Kv(err.to_string()))
    }
}

/// A fresh random token: 32 bytes as 64 hex digits.
pub fn generate() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_token_opens_only_under_its_own_key_name() {
        let cipher = Aes256Gcm::new_from_slice(&[7u8; 32]).expect("32-byte key");
        let sealed = seal(&cipher, b"agent-token.a", b"tok").expect("seal");
        assert_eq!(
            open(&cipher, b"agent-token.a", &sealed).as_deref(),
            Some(&b"tok"[..])
        );
        assert_eq!(open(&cipher, b"agent-token.b", &sealed), None);
    }
}
