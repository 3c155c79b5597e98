//! Request rate limits: fixed windows counted in the `rate_limits` KV bucket, so a limit holds
//! across every edge process, not per process (ADR 17).
//!
//! A window's count lives under `<scope>.<sha256(key)>.<window number>`; a request reads it and
//! writes it back one higher with a revision check (retrying when another request got there
//! first), so concurrent requests on several processes count exactly. The bucket forgets keys
//! after an hour, the longest window. If the bucket cannot be reached the request is let
//! through with a warning: the limits brake abuse, they must not stop the platform.

use crate::error::ApiError;
use async_nats::jetstream::{self, kv};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use warren_commands::topology::KV_RATE_LIMITS;

/// How often a count is retried when other requests keep changing it.
const ATTEMPTS: usize = 16;

/// Counts requests per (scope, key) in fixed windows, in the shared bucket.
#[derive(Clone)]
pub struct RateLimiter {
    bucket: kv::Store,
}

impl RateLimiter {
    /// The limiter on the `rate_limits` bucket (created by the log's topology).
    pub async fn open(js: &jetstream::Context) -> Result<Self, jetstream::context::KeyValueError> {
        Ok(Self {
            bucket: js.get_key_value(KV_RATE_LIMITS).await?,
        })
    }

    /// Counts one request of `key` in `scope`; 429 with `Retry-After` once `limit` requests were
    /// made in the current `window` (by any edge process).
    pub async fn check(
        &self,
        scope: &'static str,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<(), ApiError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let window_secs = window.as_secs().max(1);
        let number = now.as_secs() / window_secs;
        let hash = Sha256::digest(key.as_bytes());
        let name = format!("{scope}.{}.{number}", hex::encode(&hash[..16]));
        match self.count(&name, limit).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                let ends = (number + 1) * window_secs;
                let retry_after_secs = ends.saturating_sub(now.as_secs()).max(1);
                Err(ApiError::TooMany {
                    code: "rate_limited",
                    message: format!("too many requests ({scope}); slow down"),
                    retry_after_secs,
                    details: Some(
                        json!({ "scope": scope, "limit": limit, "window_secs": window_secs }),
                    ),
                })
            }
            Err(err) => {
                tracing::warn!(scope, error = %err, "rate limit not counted; letting the request through");
                Ok(())
            }
        }
    }

    /// Adds one to the window's count if it is under `limit`; whether it was.
    async fn count(
        &self,
        name: &str,
        limit: u32,
    ) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
        for _ in 0..ATTEMPTS {
            let entry = self.bucket.entry(name).await?;
            let current = entry
                .as_ref()
                .filter(|entry| entry.operation == kv::Operation::Put)
                .map(|entry| {
                    std::str::from_utf8(&entry.value)
                        .ok()
                        .and_then(|n| n.parse::<u32>().ok())
                        .unwrap_or(0)
                });
            if current.is_some_and(|n| n >= limit) || limit == 0 {
                return Ok(false);
            }
            let next = (current.unwrap_or(0) + 1).to_string().into();
            let written = match (&entry, current) {
                (Some(entry), Some(_)) => {
                    self.bucket.update(name, next, entry.revision).await.is_ok()
                }
                _ => self.bucket.create(name, next).await.is_ok(),
            };
            if written {
                return Ok(true);
            }
        }
        Err(format!("rate-limit count {name} kept changing").into())
    }
}
