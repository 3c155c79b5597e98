//! `warren replay`: rebuild every read model from sequence 1 into a fresh schema while the system
//! runs, then swap it in.
//!
//! The rebuild reads each stream with an ephemeral consumer into `warren_rebuild_<time>`, using the
//! same projection code and checkpoint transactions as the live projector. When it has caught up, it
//! takes the swap lock exclusively (live projector batches hold it shared, so none is in flight),
//! catches up the last few commits, and in one transaction renames the live schema away, renames the
//! rebuild to the live name, and drops the old one. Live projectors notice the checkpoint they
//! remember is gone and resume from the rebuilt checkpoint.

use crate::runner::{self, BatchOutcome, ProjectorError, SWAP_LOCK};
use crate::schema::{self, LIVE_SCHEMA, SchemaError, quote_ident};
use crate::{Projection, agents::Agents, conversations::Conversations, users::Users};
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use sqlx::PgPool;
use std::time::Duration;

/// Progress of one projection during a rebuild.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Projection name.
    pub projection: &'static str,
    /// Commits applied so far in this rebuild.
    pub applied: u64,
    /// Commits still to read when last asked.
    pub pending: u64,
}

/// Why a replay failed. The live schema is untouched unless the swap committed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The rebuild schema could not be prepared.
    #[error("preparing the rebuild schema failed")]
    Schema(#[from] SchemaError),
    /// Projecting into the rebuild failed.
    #[error("projecting into the rebuild failed")]
    Project(#[from] ProjectorError),
    /// The swap failed.
    #[error("swapping the rebuilt schema in failed")]
    Swap(#[from] sqlx::Error),
}

/// What a finished replay did.
#[derive(Clone, Debug)]
pub struct ReplayReport {
    /// The schema that was built and is now live.
    pub built: String,
    /// Commits applied per projection.
    pub applied: Vec<(&'static str, u64)>,
}

/// Rebuilds every read model and swaps the result in. `progress` is called as batches land.
pub async fn replay(
    js: &jetstream::Context,
    database_url: &str,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<ReplayReport, ReplayError> {
    let built = format!(
        "warren_rebuild_{}",
        chrono::Utc::now().format("%Y%m%d%H%M%S%f")
    );
    let rebuild = schema::open(database_url, &built, 4).await?;
    // Make sure the live schema exists, so there is something to swap out.
    let live = schema::open(database_url, LIVE_SCHEMA, 2).await?;

    let mut applied = vec![
        (
            Users::NAME,
            catch_up::<Users>(js, &rebuild, progress).await?,
        ),
        (
            Agents::NAME,
            catch_up::<Agents>(js, &rebuild, progress).await?,
        ),
        (
            Conversations::NAME,
            catch_up::<Conversations>(js, &rebuild, progress).await?,
        ),
    ];

    let mut tx = live.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SWAP_LOCK)
        .execute(&mut *tx)
        .await?;
    // No live batch is in flight now; take the last few commits that landed meanwhile.
    applied[0].1 += catch_up::<Users>(js, &rebuild, progress).await?;
    applied[1].1 += catch_up::<Agents>(js, &rebuild, progress).await?;
    applied[2].1 += catch_up::<Conversations>(js, &rebuild, progress).await?;
    rebuild.close().await;

    let retired = format!("{built}_retired");
    for statement in [
        format!(
            "ALTER SCHEMA {} RENAME TO {}",
            quote_ident(LIVE_SCHEMA),
            quote_ident(&retired)
        ),
        format!(
            "ALTER SCHEMA {} RENAME TO {}",
            quote_ident(&built),
            quote_ident(LIVE_SCHEMA)
        ),
        // Dropping in the same transaction invalidates every cached plan on the old tables, so
        // other connections re-resolve their statements against the new schema.
        format!("DROP SCHEMA {} CASCADE", quote_ident(&retired)),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    live.close().await;
    Ok(ReplayReport { built, applied })
}

/// Applies everything in the stream after the rebuild's checkpoint. Returns how many commits.
async fn catch_up<P: Projection>(
    js: &jetstream::Context,
    pool: &PgPool,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<u64, ProjectorError> {
    let name = format!("replay-{}", P::NAME);
    let err = |source: Box<dyn std::error::Error + Send + Sync>| ProjectorError::Consumer {
        consumer: name.clone(),
        source,
    };
    let mut committed = runner::checkpoint(pool, P::NAME).await?;
    let stream = js
        .get_stream_no_info(P::STREAM)
        .await
        .map_err(|e| err(Box::new(e)))?;
    let mut consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: P::FILTER.to_owned(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: committed + 1,
            },
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(|e| err(Box::new(e)))?;
    let mut applied = 0;
    loop {
        let pending = consumer
            .info()
            .await
            .map_err(|e| err(Box::new(e)))?
            .num_pending;
        if pending == 0 {
            return Ok(applied);
        }
        let mut batch = consumer
            .fetch()
            .max_messages(256)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .map_err(|e| err(Box::new(e)))?;
        let mut messages = Vec::new();
        while let Some(message) = batch.next().await {
            messages.push(message.map_err(&err)?);
        }
        if messages.is_empty() {
            continue;
        }
        match runner::apply_batch::<P>(pool, committed, &messages, false).await? {
            BatchOutcome::Applied(last) => {
                applied += messages.len() as u64;
                committed = last;
            }
            BatchOutcome::Moved(stored) => committed = stored,
        }
        progress(&Progress {
            projection: P::NAME,
            applied,
            pending: pending.saturating_sub(messages.len() as u64),
        });
    }
}
