//! [`ProviderKeys`]: users' provider API keys under `provider_key.<key id>`, bound to the key id
//! and its owner, so a ciphertext copied under another id or user does not decrypt. Events carry
//! only the key id and a masked fingerprint; purging the entry destroys the key for good. The
//! edge writes them; the chat worker reads them to run a user's messages on the user's key.

use super::{open, seal};
use crate::topology::KV_SECRETS;
use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use warren_domain::ids::{KeyId, UserId};

/// Why a secret could not be stored, read or destroyed.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The master key is not 32 bytes.
    #[error("the encryption key must be 32 bytes")]
    BadMasterKey,
    /// The bucket could not be opened.
    #[error("opening the secrets bucket failed")]
    Bucket(#[source] jetstream::context::KeyValueError),
    /// Writing the ciphertext failed.
    #[error("storing secret {key} failed")]
    Put {
        /// The KV key.
        key: String,
        /// Cause.
        #[source]
        source: kv::PutError,
    },
    /// Reading the ciphertext failed.
    #[error("reading secret {key} failed")]
    Get {
        /// The KV key.
        key: String,
        /// Cause.
        #[source]
        source: kv::EntryError,
    },
    /// Purging the ciphertext failed.
    #[error("purging secret {key} failed")]
    Purge {
        /// The KV key.
        key: String,
        /// Cause.
        #[source]
        source: kv::PurgeError,
    },
    /// Encryption failed, or the ciphertext does not open under this key and binding.
    #[error("secret {key} does not encrypt or decrypt")]
    Crypto {
        /// The KV key.
        key: String,
    },
}

/// Seals and opens provider keys and keeps their ciphertext in KV. Cheap to clone.
#[derive(Clone)]
pub struct ProviderKeys {
    cipher: Aes256Gcm,
    kv: kv::Store,
}

/// The KV key of a provider key's ciphertext.
pub fn provider_key_entry(key_id: KeyId) -> String {
    format!("provider_key.{key_id}")
}

impl ProviderKeys {
    /// Opens the `secrets` bucket (created by the command service's topology).
    pub async fn open(js: &jetstream::Context, master_key: &[u8]) -> Result<Self, SecretError> {
        let cipher =
            Aes256Gcm::new_from_slice(master_key).map_err(|_| SecretError::BadMasterKey)?;
        let kv = js
            .get_key_value(KV_SECRETS)
            .await
            .map_err(SecretError::Bucket)?;
        Ok(Self { cipher, kv })
    }

    /// Encrypts `secret` for `owner` and stores it under `key_id`.
    pub async fn put(&self, owner: UserId, key_id: KeyId, secret: &str) -> Result<(), SecretError> {
        let key = provider_key_entry(key_id);
        let sealed = seal(&self.cipher, &binding(owner, key_id), secret.as_bytes())
            .ok_or_else(|| SecretError::Crypto { key: key.clone() })?;
        self.kv
            .put(&key, Bytes::from(sealed))
            .await
            .map_err(|source| SecretError::Put { key, source })?;
        Ok(())
    }

    /// Decrypts the key stored under `key_id` for `owner`; `None` if it was destroyed.
    pub async fn get(&self, owner: UserId, key_id: KeyId) -> Result<Option<String>, SecretError> {
        let key = provider_key_entry(key_id);
        let Some(sealed) = self.kv.get(&key).await.map_err(|source| SecretError::Get {
            key: key.clone(),
            source,
        })?
        else {
            return Ok(None);
        };
        open(&self.cipher, &binding(owner, key_id), &sealed)
            .and_then(|plain| String::from_utf8(plain).ok())
            .map(Some)
            .ok_or(SecretError::Crypto { key })
    }

    /// Destroys the ciphertext (a purge: no history of it is kept).
    pub async fn destroy(&self, key_id: KeyId) -> Result<(), SecretError> {
        let key = provider_key_entry(key_id);
        self.kv
            .purge(&key)
            .await
            .map_err(|source| SecretError::Purge { key, source })
    }
}

fn binding(owner: UserId, key_id: KeyId) -> Vec<u8> {
    format!("warren/provider_key/{owner}/{key_id}").into_bytes()
}
