//! Request rate limits: fixed windows counted in this process's memory.
//!
//! Per process on purpose (ADR 0005): the counters are a brake on abuse, not an accounting, and
//! keeping them off the request path's network hops matters more than exactness across replicas.
//! Attempt limits that guard a secret (wrong magic codes) are *not* here: they live with the
//! secret in KV and hold across replicas.

use crate::error::ApiError;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept before expired windows are swept.
const SWEEP_AT: usize = 10_000;

/// Window start and count, per (scope, key).
type Windows = HashMap<(&'static str, String), (Instant, u32)>;

/// Counts requests per (scope, key) in fixed windows.
#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<Windows>,
}

impl RateLimiter {
    /// Counts one request of `key` in `scope`; 429 with `Retry-After` once `limit` requests were
    /// made in the current `window`.
    pub fn check(
        &self,
        scope: &'static str,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if windows.len() >= SWEEP_AT {
            windows.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let (start, count) = windows.entry((scope, key.to_owned())).or_insert((now, 0));
        if now.duration_since(*start) >= window {
            *start = now;
            *count = 0;
        }
        if *count >= limit {
            let retry_after = window.saturating_sub(now.duration_since(*start));
            return Err(ApiError::TooMany {
                code: "rate_limited",
                message: format!("too many requests ({scope}); slow down"),
                retry_after_secs: retry_after.as_secs() + 1,
                details: Some(
                    json!({ "scope": scope, "limit": limit, "window_secs": window.as_secs() }),
                ),
            });
        }
        *count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_after_the_limit_is_refused_with_a_retry_after() {
        let limiter = RateLimiter::default();
        for _ in 0..3 {
            limiter
                .check("test", "k", 3, Duration::from_secs(60))
                .expect("within the limit");
        }
        match limiter.check("test", "k", 3, Duration::from_secs(60)) {
            Err(ApiError::TooMany {
                retry_after_secs, ..
            }) => assert!((1..=61).contains(&retry_after_secs)),
            other => panic!("expected 429, got {other:?}"),
        }
        limiter
            .check("test", "other", 3, Duration::from_secs(60))
            .expect("keys are counted apart");
    }
}
