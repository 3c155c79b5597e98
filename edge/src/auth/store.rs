//! [`AuthKv`]: JSON records in the `auth_tokens` KV bucket with revision-checked writes, the one
//! place auth state that is not a domain fact is kept (ADR 0005).

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use warren_commands::topology::KV_AUTH;

/// Why the auth store failed.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The bucket could not be opened.
    #[error("opening bucket {KV_AUTH} failed")]
    Bucket(#[source] jetstream::context::KeyValueError),
    /// A read failed.
    #[error("reading {key} failed")]
    Read {
        /// The key.
        key: String,
        /// Cause.
        #[source]
        source: kv::EntryError,
    },
    /// A write failed.
    #[error("writing {key} failed")]
    Write {
        /// The key.
        key: String,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A record did not decode (written by an incompatible version).
    #[error("record {key} is unreadable")]
    Decode {
        /// The key.
        key: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A record kept changing under us.
    #[error("record {0} is contended")]
    Contended(String),
}

/// The `auth_tokens` bucket, holding JSON records. Cheap to clone.
#[derive(Clone)]
pub struct AuthKv {
    kv: kv::Store,
}

impl AuthKv {
    /// Opens the bucket (created by the command service's topology).
    pub async fn open(js: &jetstream::Context) -> Result<Self, KvError> {
        let kv = js.get_key_value(KV_AUTH).await.map_err(KvError::Bucket)?;
        Ok(Self { kv })
    }

    /// The record under `key` and its revision; `None` if absent or deleted.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, u64)>, KvError> {
        let entry = self.kv.entry(key).await.map_err(|source| KvError::Read {
            key: key.to_owned(),
            source,
        })?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok(None);
        };
        let value = serde_json::from_slice(&entry.value).map_err(|source| KvError::Decode {
            key: key.to_owned(),
            source,
        })?;
        Ok(Some((value, entry.revision)))
    }

    /// Creates `key`; `false` if it already exists.
    pub async fn create<T: Serialize>(&self, key: &str, value: &T) -> Result<bool, KvError> {
        match self.kv.create(key, encode(value)).await {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(err) => Err(write_error(key, err)),
        }
    }

    /// Replaces `key` if it is still at `revision`; `false` if it moved.
    pub async fn update<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        revision: u64,
    ) -> Result<bool, KvError> {
        match self.kv.update(key, encode(value), revision).await {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(err) => Err(write_error(key, err)),
        }
    }

    /// Writes `key` unconditionally.
    pub async fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), KvError> {
        self.kv
            .put(key, encode(value))
            .await
            .map(drop)
            .map_err(|err| write_error(key, err))
    }

    /// Removes `key` (and its history) if it is still at `revision`; `false` if it moved.
    pub async fn remove_at(&self, key: &str, revision: u64) -> Result<bool, KvError> {
        match self.kv.purge_expect_revision(key, Some(revision)).await {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == kv::PurgeErrorKind::WrongLastRevision => Ok(false),
            Err(err) => Err(write_error(key, err)),
        }
    }

    /// Removes `key` and its history.
    pub async fn remove(&self, key: &str) -> Result<(), KvError> {
        self.kv
            .purge(key)
            .await
            .map_err(|err| write_error(key, err))
    }
}

fn encode<T: Serialize>(value: &T) -> Bytes {
    // Plain records of strings and numbers always serialize.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

fn write_error(key: &str, err: impl std::error::Error + Send + Sync + 'static) -> KvError {
    KvError::Write {
        key: key.to_owned(),
        source: Box::new(err),
    }
}

/// Hex SHA-256, for storing tokens hashed and for KV-safe keys derived from addresses.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
