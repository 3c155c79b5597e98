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
//!
//! Until the catch-up before the swap, the usage facts land without their primary key and
//! secondary indexes ([`Unkeyed`]); [`settle_usage`] then builds each in one pass
//! (docs/adr/0042-usage-analytics.md).

use crate::runner::{self, BatchOutcome, Commit, ProjectorError, SWAP_LOCK};
use crate::schema::{self, LIVE_SCHEMA, SchemaError, quote_ident};
use crate::usage::{self, Unkeyed, UsageAgents, UsageConversations};
use crate::{Projection, agents::Agents, conversations::Conversations, users::Users};
use async_nats::jetstream::{self, consumer};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryFutureExt};
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::task::AbortOnDropHandle;
use warren_commands::codec;

/// Commits fetched and applied together by a rebuild (the live projector takes smaller batches,
/// to show each commit sooner). Each batch costs the writer about ten database round trips,
/// which wait for a core while the reader keeps both busy: fewer, larger batches go faster.
const REPLAY_BATCH: usize = 16_384;

/// Batches read ahead of the writer, per stream: enough to keep the reader busy while the
/// rebuild schema is made (it starts first) and through the writer's slower batches.
const READ_AHEAD: usize = 3;

/// About how many payload bytes one batch holds at most: a stream of large commits is fetched
/// in fewer commits at a time, so what waits in memory stays near `READ_AHEAD + 2` batches of
/// this size per stream (the batch size follows the last batch's mean commit size).
const BATCH_BYTES: usize = 8 << 20;

/// Fewest commits fetched at a time, however large they are.
const MIN_BATCH: usize = 64;

/// Commits in the first batch, before their size is known.
const FIRST_BATCH: usize = 1_024;

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
    // The log is read from the start while the schema is made: a fresh one holds no checkpoint.
    let readers = tokio::try_join!(
        Reader::<Users>::start(js, 0),
        Reader::<Agents>::start(js, 0),
        Reader::<Conversations>::start(js, 0),
        Reader::<Unkeyed<UsageAgents>>::start(js, 0),
        Reader::<Unkeyed<UsageConversations>>::start(js, 0),
    )?;
    let rebuild = schema::open_rebuild(database_url, &built, 6).await?;
    let deferred = defer_indexes(&rebuild, &built, &usage::TABLES).await?;
    let key = usage::unkey_facts(&rebuild).await?;

    // The projections are independent (each reads its own stream and its own rows, as live,
    // where they run side by side too): one's database round trips overlap another's decoding.
    // The live schema is opened meanwhile (and made if missing, so there is one to swap out).
    let (live, users, agents, conversations, usage_agents, usage_conversations) = tokio::try_join!(
        schema::open(database_url, LIVE_SCHEMA, 2).err_into::<ReplayError>(),
        readers.0.write(&rebuild, progress).err_into(),
        readers.1.write(&rebuild, progress).err_into(),
        readers.2.write(&rebuild, progress).err_into(),
        readers.3.write(&rebuild, progress).err_into(),
        readers.4.write(&rebuild, progress).err_into(),
    )?;
    let mut applied = vec![
        (Users::NAME, users),
        (Agents::NAME, agents),
        (Conversations::NAME, conversations),
        (UsageAgents::NAME, usage_agents),
        (UsageConversations::NAME, usage_conversations),
    ];
    settle_usage(&rebuild, &key, deferred).await?;

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
    // Where reading starts (after the last commit before `from`, else from the start) is the
    // log's to say: the log is read from there while the schema is made.
    let starts = match from {
        Some(from) => (
            first_at::<UsageAgents>(js, from).await?.saturating_sub(1),
            first_at::<UsageConversations>(js, from)
                .await?
                .saturating_sub(1),
        ),
        None => (0, 0),
    };
    let readers = tokio::try_join!(
        Reader::<Unkeyed<UsageAgents>>::start(js, starts.0),
        Reader::<Unkeyed<UsageConversations>>::start(js, starts.1),
    )?;
    let rebuild = schema::open_rebuild(database_url, &built, 6).await?;
    let (live_q, built_q) = (quote_ident(LIVE_SCHEMA), quote_ident(&built));
    let deferred = defer_indexes(&rebuild, &built, &usage::TABLES).await?;
    let key = usage::unkey_facts(&rebuild).await?;
    // The live schema is opened alongside the writes below unless the facts before `from` are
    // to be copied from it first.
    let mut live = None;
    if let Some(from) = from {
        let pool = schema::open(database_url, LIVE_SCHEMA, 2).await?;
        keep_before(&pool, &rebuild, &live_q, &built_q, from).await?;
        live = Some(pool);
        for (name, after) in [
            (UsageAgents::NAME, starts.0),
            (UsageConversations::NAME, starts.1),
        ] {
            sqlx::query(
                "INSERT INTO checkpoints (projection, last_seq) VALUES ($1, $2) \
                 ON CONFLICT (projection) DO UPDATE SET last_seq = EXCLUDED.last_seq",
            )
            .bind(name)
            .bind(after as i64)
            .execute(&rebuild)
            .await?;
        }
    }
    let (live, agents, conversations) = tokio::try_join!(
        async {
            match live {
                Some(pool) => Ok(pool),
                None => schema::open(database_url, LIVE_SCHEMA, 2)
                    .await
                    .map_err(ReplayError::from),
            }
        },
        readers.0.write(&rebuild, progress).err_into(),
        readers.1.write(&rebuild, progress).err_into(),
    )?;
    let mut applied = vec![
        (UsageAgents::NAME, agents),
        (UsageConversations::NAME, conversations),
    ];
    settle_usage(&rebuild, &key, deferred).await?;

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

/// Drops the secondary indexes of `tables` in the rebuild `schema` (not the unique ones, which
/// the projections' `ON CONFLICT` needs, nor the partial ones, which cost a row outside them
/// next to nothing and would cost a whole scan to build) and returns how to make them again:
/// rows land faster without them, and each is then built in one pass by [`restore_indexes`].
/// Only for tables whose projections never read through those indexes.
async fn defer_indexes(
    pool: &PgPool,
    schema: &str,
    tables: &[&str],
) -> Result<Vec<String>, sqlx::Error> {
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT i.relname::text, pg_get_indexdef(x.indexrelid) FROM pg_index x \
         JOIN pg_class i ON i.oid = x.indexrelid \
         JOIN pg_class t ON t.oid = x.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = $1 AND t.relname = ANY($2) AND NOT x.indisunique \
           AND x.indpred IS NULL",
    )
    .bind(schema)
    .bind(tables)
    .fetch_all(pool)
    .await?;
    if indexes.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = indexes
        .iter()
        .map(|(index, _)| format!("{}.{}", quote_ident(schema), quote_ident(index)))
        .collect();
    let drop = format!("DROP INDEX {}", names.join(", "));
    sqlx::query(sqlx::AssertSqlSafe(drop)).execute(pool).await?;
    Ok(indexes
        .into_iter()
        .map(|(_, definition)| definition)
        .collect())
}

/// Gives the usage facts an [`Unkeyed`] rebuild copied in their primary key and their secondary
/// indexes, built side by side on connections of their own; if the log recorded a fact twice,
/// drops the later copies and sums the day counters again first.
async fn settle_usage(pool: &PgPool, key: &str, deferred: Vec<String>) -> Result<(), sqlx::Error> {
    let (keyed, indexed) = tokio::join!(
        usage::index_facts(pool, key),
        restore_indexes(pool, deferred)
    );
    indexed?;
    match keyed {
        Ok(()) => {}
        Err(err) if usage::is_repeat(&err) => {
            usage::drop_repeats(pool).await?;
            usage::sum_days(pool).await?;
            usage::index_facts(pool, key).await?;
        }
        Err(err) => return Err(err),
    }
    usage::key_facts(pool, key).await
}

/// Makes again the indexes [`defer_indexes`] dropped, each on a connection of its own (an index
/// build is one process's work in PostgreSQL).
async fn restore_indexes(pool: &PgPool, definitions: Vec<String>) -> Result<(), sqlx::Error> {
    let builds = definitions.into_iter().map(|definition| async move {
        sqlx::query(sqlx::AssertSqlSafe(definition))
            .execute(pool)
            .await
            .map(drop)
    });
    futures::future::try_join_all(builds).await.map(drop)
}

/// Copies the live usage facts before `from` (and every owner) into the rebuild, with the day
/// counters they add up to.
async fn keep_before(
    live: &PgPool,
    rebuild: &PgPool,
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
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .bind(from)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    usage::sum_days(rebuild).await
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
    let after = runner::checkpoint(pool, P::NAME).await?;
    let reader = Reader::<P>::start(js, after).await?;
    reader.write(pool, progress).await
}

/// One projection's commits after a sequence, read off the log ahead of the writer.
///
/// A task of its own fetches and decodes the batches ([`read_batches`]), so the next batch is
/// read off the log while this one is written to the database, and the first ones while the
/// rebuild schema is still being made. (Not an ordered consumer: held back by a slow writer, one
/// stalled for half a minute before it reset.)
struct Reader<P: Projection> {
    /// The sequence the rebuild's checkpoint holds when writing starts.
    after: u64,
    /// The batches, then the end of the channel when the log has nothing more.
    received: tokio::sync::mpsc::Receiver<Result<Decoding<P::Event>, ProjectorError>>,
    _task: Option<AbortOnDropHandle<()>>,
}

impl<P: Projection> Reader<P> {
    /// Starts reading `P`'s commits after `after`.
    async fn start(js: &jetstream::Context, after: u64) -> Result<Self, ProjectorError> {
        let name = format!("replay-{}", P::NAME);
        let stream = js
            .get_stream_no_info(P::STREAM)
            .await
            .map_err(|e| runner::consumer_err(&name, e))?;
        let consumer: consumer::PullConsumer = stream
            .create_consumer(consumer::pull::Config {
                filter_subject: P::FILTER.to_owned(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                },
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(|e| runner::consumer_err(&name, e))?;
        let (batches, received) = tokio::sync::mpsc::channel(READ_AHEAD);
        let task = (consumer.cached_info().num_pending > 0).then(|| {
            AbortOnDropHandle::new(tokio::spawn(read_batches::<P>(name, consumer, batches)))
        });
        Ok(Self {
            after,
            received,
            _task: task,
        })
    }

    /// Applies every batch read, from the checkpoint the reader started after (which the rebuild
    /// must hold by now). Returns how many commits.
    async fn write(
        mut self,
        pool: &PgPool,
        progress: &(dyn Fn(&Progress) + Sync),
    ) -> Result<u64, ProjectorError> {
        let mut committed = self.after;
        let mut applied = 0;
        while let Some(batch) = self.received.recv().await {
            let Batch {
                commits,
                decoded,
                pending,
            } = batch?
                .await
                .map_err(|e| runner::consumer_err(&format!("replay-{}", P::NAME), e))?;
            match runner::apply_decoded::<P>(pool, committed, &commits, decoded, false).await? {
                BatchOutcome::Applied(last) => {
                    applied += commits.len() as u64;
                    committed = last;
                }
                BatchOutcome::Moved(stored) => committed = stored,
            }
            progress(&Progress {
                projection: P::NAME,
                applied,
                pending,
            });
        }
        Ok(applied)
    }
}

/// A batch being decoded.
type Decoding<E> = AbortOnDropHandle<Batch<E>>;

/// One batch read off the log.
struct Batch<E> {
    commits: Vec<Commit>,
    /// For a bulk projection, the commits' envelopes (decoded by the reader, off the writer's
    /// path).
    decoded: runner::Decoded<E>,
    /// How many commits were left after it when it was read.
    pending: u64,
}

/// Fetches batches of up to [`REPLAY_BATCH`] commits (and about [`BATCH_BYTES`]; the first is
/// small, to learn the commits' size) and decodes them, until the log has nothing more to hand
/// out, then ends.
async fn read_batches<P: Projection>(
    name: String,
    mut consumer: consumer::PullConsumer,
    batches: tokio::sync::mpsc::Sender<Result<Decoding<P::Event>, ProjectorError>>,
) {
    let read = async {
        // What is left: read off the last message fetched, else asked of the consumer.
        let mut pending = None;
        let mut size = FIRST_BATCH;
        loop {
            let left = match pending {
                Some(left) => left,
                None => {
                    consumer
                        .info()
                        .await
                        .map_err(|e| runner::consumer_err(&name, e))?
                        .num_pending
                }
            };
            if left == 0 {
                return Ok(());
            }
            let mut fetched = consumer
                .fetch()
                .max_messages(size)
                .expires(Duration::from_millis(500))
                .messages()
                .await
                .map_err(|e| runner::consumer_err(&name, e))?;
            let mut commits = Vec::with_capacity(size);
            let mut left = None;
            while let Some(message) = fetched.next().await {
                let message = message.map_err(|source| ProjectorError::Consumer {
                    consumer: name.clone(),
                    source,
                })?;
                let Some((commit, after)) = Commit::read(message) else {
                    continue;
                };
                commits.push(commit);
                left = Some(after);
            }
            pending = left;
            if commits.is_empty() {
                continue;
            }
            let bytes: usize = commits.iter().map(|c| c.message.payload.len()).sum();
            size = (BATCH_BYTES * commits.len() / bytes.max(1)).clamp(MIN_BATCH, REPLAY_BATCH);
            // Decoded on a task of its own, while the next batch is fetched.
            let pending = pending.unwrap_or_default();
            let decoding = tokio::spawn(async move {
                let decoded = if P::BULK {
                    commits
                        .iter()
                        .map(|commit| Some(codec::decode::<P::Event>(&commit.message.payload)))
                        .collect()
                } else {
                    Vec::new()
                };
                Batch {
                    commits,
                    decoded,
                    pending,
                }
            });
            if batches
                .send(Ok(AbortOnDropHandle::new(decoding)))
                .await
                .is_err()
            {
                return Ok(()); // the writer stopped
            }
        }
    };
    if let Err(err) = read.await {
        let _ = batches.send(Err(err)).await;
    }
}
