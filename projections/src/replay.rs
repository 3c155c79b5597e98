//! `warren replay`: rebuild every read model from sequence 1 into a fresh schema while the system
//! runs, then swap it in; or only the usage read model ([`replay_usage`]), optionally from a time
//! on.
//!
//! The rebuild reads each stream with an ephemeral consumer into `warren_rebuild_<time>`, using the
//! same projection code and checkpoint transactions as the live projector. When it has caught up, it
//! takes the swap lock exclusively (live projector batches hold it shared, so none is in flight),
//! catches up the last few commits, and in one transaction renames the live schema away, renames the
//! rebuild to the live name, and drops the old one. Live projectors notice the checkpoint they
//! remember is gone and resume from the rebuilt checkpoint.

use crate::runner::{self, BatchOutcome, ProjectorError, SWAP_LOCK};
use crate::schema::{self, LIVE_SCHEMA, SchemaError, quote_ident};
use crate::usage::{self, UsageAgents, UsageConversations};
use crate::{Projection, agents::Agents, conversations::Conversations, users::Users};
use async_nats::jetstream::{self, consumer};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use sqlx::PgPool;
use std::time::Duration;

/// Commits fetched and applied together by a rebuild (the live projector takes smaller batches,
/// to show each commit sooner).
const REPLAY_BATCH: usize = 2_048;

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
    /// The log could not say where a time starts.
    #[error("finding the log's first commit at {at} failed")]
    Start {
        /// The time asked for.
        at: DateTime<Utc>,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
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
        (
            UsageAgents::NAME,
            catch_up::<UsageAgents>(js, &rebuild, progress).await?,
        ),
        (
            UsageConversations::NAME,
            catch_up::<UsageConversations>(js, &rebuild, progress).await?,
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
    applied[3].1 += catch_up::<UsageAgents>(js, &rebuild, progress).await?;
    applied[4].1 += catch_up::<UsageConversations>(js, &rebuild, progress).await?;
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

/// Rebuilds only the usage read model (`usage_events`, `daily_usage`, `usage_owners`) into a
/// fresh schema while live, and swaps its tables in, the other read models untouched: what a
/// changed usage projection, or a repaired history, needs.
///
/// With `from`, the facts before `from` are kept as they are and only the log from `from` on is
/// read again (the day counters are re-added from the kept facts).
pub async fn replay_usage(
    js: &jetstream::Context,
    database_url: &str,
    from: Option<DateTime<Utc>>,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<ReplayReport, ReplayError> {
    let built = format!(
        "warren_rebuild_usage_{}",
        chrono::Utc::now().format("%Y%m%d%H%M%S%f")
    );
    let rebuild = schema::open(database_url, &built, 4).await?;
    let live = schema::open(database_url, LIVE_SCHEMA, 2).await?;
    let (live_q, built_q) = (quote_ident(LIVE_SCHEMA), quote_ident(&built));
    if let Some(from) = from {
        keep_before(&live, &live_q, &built_q, from).await?;
        let agents = first_at::<UsageAgents>(js, from).await?;
        let conversations = first_at::<UsageConversations>(js, from).await?;
        for (name, first) in [
            (UsageAgents::NAME, agents),
            (UsageConversations::NAME, conversations),
        ] {
            sqlx::query(
                "INSERT INTO checkpoints (projection, last_seq) VALUES ($1, $2) \
                 ON CONFLICT (projection) DO UPDATE SET last_seq = EXCLUDED.last_seq",
            )
            .bind(name)
            .bind(first.saturating_sub(1) as i64)
            .execute(&rebuild)
            .await?;
        }
    }
    let mut applied = vec![
        (
            UsageAgents::NAME,
            catch_up::<UsageAgents>(js, &rebuild, progress).await?,
        ),
        (
            UsageConversations::NAME,
            catch_up::<UsageConversations>(js, &rebuild, progress).await?,
        ),
    ];

    let mut tx = live.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SWAP_LOCK)
        .execute(&mut *tx)
        .await?;
    applied[0].1 += catch_up::<UsageAgents>(js, &rebuild, progress).await?;
    applied[1].1 += catch_up::<UsageConversations>(js, &rebuild, progress).await?;
    rebuild.close().await;
    let mut statements = Vec::new();
    for table in usage::TABLES {
        let table = quote_ident(table);
        statements.push(format!("DROP TABLE {live_q}.{table}"));
        statements.push(format!("ALTER TABLE {built_q}.{table} SET SCHEMA {live_q}"));
    }
    for table in ["checkpoints", "parked_events"] {
        statements.push(format!(
            "DELETE FROM {live_q}.{table} WHERE projection IN ('{}', '{}')",
            usage::NAMES[0],
            usage::NAMES[1]
        ));
        statements.push(format!(
            "INSERT INTO {live_q}.{table} SELECT * FROM {built_q}.{table} \
             WHERE projection IN ('{}', '{}')",
            usage::NAMES[0],
            usage::NAMES[1]
        ));
    }
    statements.push(format!("DROP SCHEMA {built_q} CASCADE"));
    for statement in statements {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    live.close().await;
    Ok(ReplayReport { built, applied })
}

/// Copies the live usage facts before `from` (and every owner) into the rebuild, with the day
/// counters they add up to.
async fn keep_before(
    live: &PgPool,
    live_q: &str,
    built_q: &str,
    from: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let mut tx = live.begin().await?;
    for statement in [
        format!("INSERT INTO {built_q}.usage_owners SELECT * FROM {live_q}.usage_owners"),
        format!(
            "INSERT INTO {built_q}.usage_events SELECT * FROM {live_q}.usage_events \
             WHERE created_at < $1"
        ),
        format!(
            "INSERT INTO {built_q}.daily_usage (user_id, day, messages, input_tokens, output_tokens, \
               deployments, metered_input_tokens, metered_output_tokens) \
             SELECT user_id, (created_at AT TIME ZONE 'UTC')::date, \
               count(*) FILTER (WHERE kind = 'message'), \
               coalesce(sum(input_tokens) FILTER (WHERE kind <> 'model_call'), 0), \
               coalesce(sum(output_tokens) FILTER (WHERE kind <> 'model_call'), 0), \
               count(*) FILTER (WHERE kind = 'deployment'), \
               coalesce(sum(input_tokens) FILTER (WHERE kind = 'model_call'), 0), \
               coalesce(sum(output_tokens) FILTER (WHERE kind = 'model_call'), 0) \
             FROM {built_q}.usage_events GROUP BY 1, 2"
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(from)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// The stream sequence of `P`'s first commit at or after `at` (one past the last when none is).
async fn first_at<P: Projection>(
    js: &jetstream::Context,
    at: DateTime<Utc>,
) -> Result<u64, ReplayError> {
    let err = |source: Box<dyn std::error::Error + Send + Sync>| ReplayError::Start { at, source };
    let nanos = at
        .timestamp_nanos_opt()
        .ok_or_else(|| err("the time is out of range".into()))?;
    let start_time = async_nats::datetime::from_nanos(i128::from(nanos)).map_err(err)?;
    let mut stream = js
        .get_stream(P::STREAM)
        .await
        .map_err(|e| err(Box::new(e)))?;
    let mut consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: P::FILTER.to_owned(),
            deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time },
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(|e| err(Box::new(e)))?;
    loop {
        let pending = consumer
            .info()
            .await
            .map_err(|e| err(Box::new(e)))?
            .num_pending;
        if pending == 0 {
            let last = stream
                .info()
                .await
                .map_err(|e| err(Box::new(e)))?
                .state
                .last_sequence;
            return Ok(last + 1);
        }
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .map_err(|e| err(Box::new(e)))?;
        if let Some(message) = batch.next().await {
            let message = message.map_err(&err)?;
            return Ok(message.info().map_err(&err)?.stream_sequence);
        }
    }
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
    // What is left to read: asked of the consumer at first and whenever a fetch comes back
    // empty, else read off the last message fetched (one round trip less per batch).
    let mut pending = None;
    loop {
        let left = match pending {
            Some(left) => left,
            None => {
                consumer
                    .info()
                    .await
                    .map_err(|e| err(Box::new(e)))?
                    .num_pending
            }
        };
        if left == 0 {
            return Ok(applied);
        }
        let mut batch = consumer
            .fetch()
            .max_messages(REPLAY_BATCH)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .map_err(|e| err(Box::new(e)))?;
        let mut messages = Vec::new();
        while let Some(message) = batch.next().await {
            messages.push(message.map_err(&err)?);
        }
        pending = messages
            .last()
            .and_then(|message| message.info().ok())
            .map(|info| info.pending);
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
            pending: pending.unwrap_or_default(),
        });
    }
}
