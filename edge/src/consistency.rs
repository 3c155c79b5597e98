//! Read-after-write over an eventually consistent read side.
//!
//! A write answers only after the projection that serves its reads has applied the commit
//! (`checkpoints.last_seq ≥ Committed.sequence`), waiting at most [`MAX_WAIT`]; so a client's
//! next GET sees its own write. Reads of a user's own rows wait the same way for the user
//! aggregate's last sequence, which the auth extractor has just loaded.

use sqlx::PgPool;
use std::time::{Duration, Instant};

/// The longest a request waits for a projection.
pub const MAX_WAIT: Duration = Duration::from_secs(2);

/// Projection names, as in `checkpoints.projection`.
pub mod projection {
    /// Users, auth methods, provider keys.
    pub const USERS: &str = "users";
    /// Agents and deployment history.
    pub const AGENTS: &str = "agents";
    /// Conversations, messages, runs (and message usage).
    pub const CONVERSATIONS: &str = "conversations";
}

/// Waits until `projection` has applied stream sequence `seq`; `false` if it has not within
/// [`MAX_WAIT`] (the caller answers anyway, possibly stale, and the lag is logged).
pub async fn caught_up(
    db: &PgPool,
    projection: &'static str,
    seq: u64,
) -> Result<bool, sqlx::Error> {
    if seq == 0 {
        return Ok(true);
    }
    let started = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        let applied: Option<(i64,)> =
            sqlx::query_as("SELECT last_seq FROM checkpoints WHERE projection = $1")
                .bind(projection)
                .fetch_optional(db)
                .await?;
        if applied.is_some_and(|(last,)| last >= seq as i64) {
            return Ok(true);
        }
        if started.elapsed() >= MAX_WAIT {
            tracing::warn!(
                projection,
                seq,
                "read model still behind the write; answering anyway"
            );
            return Ok(false);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
