//! The projector loop: one durable JetStream consumer per projection, batches applied to Postgres in
//! one transaction together with the projection's checkpoint.
//!
//! Why this is safe under redelivery and replays:
//! - the checkpoint row is read `FOR UPDATE` in the batch's transaction, and every message at or
//!   below it is skipped, so a batch redelivered after a crash between commit and ack is harmless;
//! - the projector remembers the checkpoint it last committed; if the stored one differs (a rebuilt
//!   schema was swapped in, or another replica moved it), it recreates its consumer from the stored
//!   checkpoint instead of trusting the consumer's position;
//! - every batch first takes a shared advisory lock that the schema swap takes exclusively, so no
//!   batch straddles a swap.

use crate::Projection;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use warren_commands::{codec, trace};
use warren_domain::{Actor, Envelope};

/// Advisory lock key shared by projector batches (shared) and the schema swap (exclusive).
pub const SWAP_LOCK: i64 = 0x5741_5252_454e; // "WARREN"

/// How many messages one transaction applies at most.
const BATCH: usize = 256;

/// Why a projector stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    /// Postgres failed.
    #[error("read model database failed")]
    Database(#[from] sqlx::Error),
    /// JetStream failed.
    #[error("consumer {consumer} failed")]
    Consumer {
        /// The durable consumer.
        consumer: String,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A consumer's failure, naming it.
pub(crate) fn consumer_err(
    consumer: &str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> ProjectorError {
    ProjectorError::Consumer {
        consumer: consumer.to_owned(),
        source: Box::new(source),
    }
}

/// One commit read off the log: its stream sequence and the stored message. Read from a
/// JetStream message by [`Commit::read`], which drops the message's client handle where it was
/// received (a rebuild reads on one task and writes on another).
#[derive(Clone, Debug)]
pub struct Commit {
    /// Its sequence in the stream.
    pub seq: u64,
    /// The stored message: subject, headers, payload.
    pub message: async_nats::Message,
}

impl Commit {
    /// The commit a JetStream message delivers, and how many were left after it; `None` for a
    /// message that is not a stream's (no `$JS.ACK` reply to say where it is).
    pub fn read(message: jetstream::Message) -> Option<(Commit, u64)> {
        let info = message.info().ok()?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        Some((
            Commit {
                seq,
                message: message.message,
            },
            pending,
        ))
    }
}

/// The durable consumer name of a projection.
pub fn consumer_name<P: Projection>() -> String {
    format!("projector-{}", P::NAME)
}

/// Reads a projection's checkpoint (0 when it has none yet).
pub async fn checkpoint(pool: &PgPool, name: &str) -> Result<u64, sqlx::Error> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT last_seq FROM checkpoints WHERE projection = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?;
    Ok(row.map_or(0, |(seq,)| seq as u64))
}

/// (Re)creates the projection's durable consumer so it delivers from `after + 1`.
async fn reset_consumer<P: Projection>(
    js: &jetstream::Context,
    after: u64,
) -> Result<consumer::PullConsumer, ProjectorError> {
    let name = consumer_name::<P>();
    let stream = js
        .get_stream_no_info(P::STREAM)
        .await
        .map_err(|e| consumer_err(&name, e))?;
    // Deleting first makes the start position authoritative; a missing consumer is fine.
    let _ = stream.delete_consumer(&name).await;
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: P::FILTER.to_owned(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            },
            ack_policy: consumer::AckPolicy::All,
            ack_wait: Duration::from_secs(60),
            max_ack_pending: 10_000,
            ..Default::default()
        })
        .await
        .map_err(|e| consumer_err(&name, e))
}

/// Runs one projection until `shutdown` fires.
pub async fn run<P: Projection>(
    js: jetstream::Context,
    pool: PgPool,
    shutdown: CancellationToken,
) -> Result<(), ProjectorError> {
    let name = consumer_name::<P>();
    let mut committed = checkpoint(&pool, P::NAME).await?;
    let mut consumer = reset_consumer::<P>(&js, committed).await?;
    loop {
        let fetch = consumer
            .fetch()
            .max_messages(BATCH)
            .expires(Duration::from_millis(500))
            .messages();
        let mut batch = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            batch = fetch => batch.map_err(|e| consumer_err(&name, e))?,
        };
        let mut messages = Vec::new();
        while let Some(message) = batch.next().await {
            messages.push(message.map_err(|e| ProjectorError::Consumer {
                consumer: name.clone(),
                source: e,
            })?);
        }
        // AckPolicy::All: one ack of the last message covers the whole batch.
        let Some(last) = messages.last().cloned() else {
            continue;
        };
        let commits: Vec<Commit> = messages
            .into_iter()
            .filter_map(|message| Commit::read(message).map(|(commit, _)| commit))
            .collect();
        match apply_batch::<P>(&pool, committed, &commits, true).await? {
            BatchOutcome::Applied(applied) => {
                committed = applied;
                last.ack()
                    .await
                    .map_err(|e| consumer_err(&name, std::io::Error::other(e)))?;
            }
            BatchOutcome::Moved(stored) => {
                tracing::info!(
                    projection = P::NAME,
                    stored,
                    committed,
                    "checkpoint moved elsewhere, resetting consumer"
                );
                committed = stored;
                consumer = reset_consumer::<P>(&js, committed).await?;
            }
        }
    }
}

/// The result of applying one batch.
#[derive(Debug, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Applied up to this stream sequence.
    Applied(u64),
    /// The stored checkpoint is not the one this projector committed; nothing was applied.
    Moved(u64),
}

/// Applies a batch in one transaction with the checkpoint. `swap_lock`: take the shared swap lock
/// (live projectors do; a rebuild, which runs while the swap holds the lock, must not).
///
/// A commit the database refuses (bad data, a broken constraint, a value too large) must not stop
/// every later commit, whoever they belong to: the whole batch is rolled back and applied again
/// with a savepoint per commit, so that the refused one is parked and the rest applied.
pub async fn apply_batch<P: Projection>(
    pool: &PgPool,
    committed: u64,
    commits: &[Commit],
    swap_lock: bool,
) -> Result<BatchOutcome, ProjectorError> {
    apply_decoded::<P>(pool, committed, commits, Vec::new(), swap_lock).await
}

/// Each message's envelopes, decoded ahead of its batch; `None` (or a short list) where a
/// message was not.
pub type Decoded<E> = Vec<Option<Result<Vec<Envelope<E>>, codec::DecodeError>>>;

/// [`apply_batch`] with the commits' envelopes decoded ahead (a rebuild decodes the next batch
/// while this one is written). Only a bulk projection's fast path uses them.
pub async fn apply_decoded<P: Projection>(
    pool: &PgPool,
    committed: u64,
    commits: &[Commit],
    mut decoded: Decoded<P::Event>,
    swap_lock: bool,
) -> Result<BatchOutcome, ProjectorError> {
    let first = try_batch::<P>(
        pool,
        committed,
        commits,
        &mut decoded,
        swap_lock,
        Isolation::Batch,
    );
    match first.await {
        Err(Attempt::Refused(seq)) => {
            tracing::info!(
                projection = P::NAME,
                seq,
                "the database refused a commit; applying the batch one commit at a time"
            );
            // Taken by the first attempt: each commit is decoded again, alone.
            decoded.clear();
            let again = try_batch::<P>(
                pool,
                committed,
                commits,
                &mut decoded,
                swap_lock,
                Isolation::PerCommit,
            );
            again.await.map_err(Attempt::into_error)
        }
        other => other.map_err(Attempt::into_error),
    }
}

/// How a batch's commits are isolated from each other.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// One transaction, no savepoints: the fast path.
    Batch,
    /// A savepoint per commit, so a refused commit can be parked alone.
    PerCommit,
}

/// Why one attempt at a batch ended early.
enum Attempt {
    /// On the fast path, the database refused the commit at this sequence.
    Refused(u64),
    /// Anything else: the projector stops and is restarted.
    Failed(ProjectorError),
}

impl Attempt {
    fn into_error(self) -> ProjectorError {
        match self {
            Attempt::Failed(err) => err,
            // Only the fast path refuses; the per-commit path parks instead.
            Attempt::Refused(seq) => ProjectorError::Database(sqlx::Error::Protocol(format!(
                "commit {seq} refused on the per-commit path"
            ))),
        }
    }
}

impl From<sqlx::Error> for Attempt {
    fn from(err: sqlx::Error) -> Self {
        Attempt::Failed(ProjectorError::Database(err))
    }
}

async fn try_batch<P: Projection>(
    pool: &PgPool,
    committed: u64,
    commits: &[Commit],
    decoded: &mut Decoded<P::Event>,
    swap_lock: bool,
    isolation: Isolation,
) -> Result<BatchOutcome, Attempt> {
    let mut tx = pool.begin().await?;
    if swap_lock {
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
            .bind(SWAP_LOCK)
            .execute(&mut *tx)
            .await?;
    }
    // The checkpoint, made if missing and locked until this transaction ends, in one statement.
    let (stored,): (i64,) = sqlx::query_as(
        "INSERT INTO checkpoints (projection, last_seq) VALUES ($1, 0) \
         ON CONFLICT (projection) DO UPDATE SET last_seq = checkpoints.last_seq \
         RETURNING last_seq",
    )
    .bind(P::NAME)
    .fetch_one(&mut *tx)
    .await?;
    let stored = stored as u64;
    if stored != committed {
        return Ok(BatchOutcome::Moved(stored));
    }
    let mut last = stored;
    // A bulk projection's events wait here and are written together (`Projection::apply_many`).
    let mut pending: Vec<(u64, Envelope<P::Event>)> =
        Vec::with_capacity(if P::BULK { commits.len() } else { 0 });
    for (at, Commit { seq, message }) in commits.iter().enumerate() {
        let seq = *seq;
        if seq <= last {
            continue; // redelivered: already in this schema
        }
        let (subject, payload) = (message.subject.as_str(), &message.payload[..]);
        if P::BULK && isolation == Isolation::Batch {
            let ahead = decoded.get_mut(at).and_then(Option::take);
            let envelopes = match ahead.unwrap_or_else(|| codec::decode::<P::Event>(payload)) {
                Ok(envelopes) => envelopes,
                Err(err) => {
                    park::<P>(&mut tx, seq, subject, payload, &error_chain(&err)).await?;
                    last = seq;
                    continue;
                }
            };
            // The guard reads the projection's rows for a user's commit: what waits goes first.
            if envelopes.iter().any(|e| matches!(e.actor, Actor::User(_))) {
                flush::<P>(&mut tx, &mut pending).await?;
            }
            match crate::guard::refusal::<P>(&mut tx, &envelopes).await? {
                Some(reason) => park::<P>(&mut tx, seq, subject, payload, &reason).await?,
                None => pending.extend(envelopes.into_iter().map(|e| (seq, e))),
            }
            last = seq;
            continue;
        }
        // Applying a commit continues its trace (a span when spans are exported).
        let parent = message
            .headers
            .as_ref()
            .and_then(|headers| codec::header(headers, trace::HEADER));
        match isolation {
            Isolation::Batch => {
                match trace::observe("project", trace::SpanKind::Consumer, parent, async {
                    trace::attribute("warren.projection", P::NAME);
                    apply_message::<P>(&mut tx, seq, subject, payload).await
                })
                .await
                {
                    Err(err) if refused_by_database(&err) => return Err(Attempt::Refused(seq)),
                    other => other?,
                }
            }
            Isolation::PerCommit => {
                let mut savepoint = sqlx::Acquire::begin(&mut *tx).await?;
                let applied = trace::observe("project", trace::SpanKind::Consumer, parent, async {
                    trace::attribute("warren.projection", P::NAME);
                    apply_message::<P>(&mut savepoint, seq, subject, payload).await
                });
                match applied.await {
                    Ok(()) => savepoint.commit().await?,
                    Err(err) if refused_by_database(&err) => {
                        savepoint.rollback().await?;
                        let reason = format!("the read model refused it: {}", error_chain(&err));
                        park::<P>(&mut tx, seq, subject, payload, &reason).await?;
                    }
                    Err(err) => return Err(err.into()),
                }
            }
        }
        last = seq;
    }
    flush::<P>(&mut tx, &mut pending).await?;
    sqlx::query("UPDATE checkpoints SET last_seq = $2 WHERE projection = $1")
        .bind(P::NAME)
        .bind(last as i64)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(BatchOutcome::Applied(last))
}

/// Writes the events a bulk projection holds back. A refusal names the first commit among them
/// (the batch is then applied again one commit at a time, which finds the culprit).
async fn flush<P: Projection>(
    tx: &mut sqlx::PgConnection,
    pending: &mut Vec<(u64, Envelope<P::Event>)>,
) -> Result<(), Attempt> {
    let Some(&(first, _)) = pending.first() else {
        return Ok(());
    };
    match P::apply_many(tx, pending).await {
        Err(err) if refused_by_database(&err) => Err(Attempt::Refused(first)),
        other => {
            pending.clear();
            other.map_err(Attempt::from)
        }
    }
}

/// Whether the database refused a commit for what it holds (a data exception such as a NUL in
/// text, a broken constraint, a value beyond a limit), as opposed to failing for a reason that
/// a retry can cure (a lost connection, a serialization failure).
fn refused_by_database(err: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = err else {
        return false;
    };
    // SQLSTATE classes 22 (data exception), 23 (integrity constraint violation) and 54
    // (program limit exceeded, e.g. an index row too large).
    db.code().is_some_and(|code| {
        ["22", "23", "54"]
            .iter()
            .any(|class| code.starts_with(class))
    })
}

/// Applies one stored commit, or parks it with the reason if it cannot be read or its actor
/// could not have caused it ([`guard`](crate::guard)).
#[tracing::instrument(level = "debug", skip_all, fields(seq = seq, subject = subject))]
pub async fn apply_message<P: Projection>(
    tx: &mut sqlx::PgConnection,
    seq: u64,
    subject: &str,
    payload: &[u8],
) -> Result<(), sqlx::Error> {
    let envelopes = match codec::decode::<P::Event>(payload) {
        Ok(envelopes) => envelopes,
        Err(err) => {
            let reason = error_chain(&err);
            return park::<P>(tx, seq, subject, payload, &reason).await;
        }
    };
    if let Some(reason) = crate::guard::refusal::<P>(tx, &envelopes).await? {
        return park::<P>(tx, seq, subject, payload, &reason).await;
    }
    for envelope in &envelopes {
        P::apply(tx, seq, envelope).await?;
    }
    Ok(())
}

/// Keeps a commit that will not be applied, with why, and raises the alarm: `GET
/// /api/v1/health` reports parked commits as degraded until an operator deals with them.
async fn park<P: Projection>(
    tx: &mut sqlx::PgConnection,
    seq: u64,
    subject: &str,
    payload: &[u8],
    reason: &str,
) -> Result<(), sqlx::Error> {
    tracing::error!(
        projection = P::NAME,
        seq,
        subject,
        reason,
        "parked a commit: it is not applied to the read model"
    );
    // Whatever made the commit unfit may be in these strings too: PostgreSQL text holds no NUL.
    sqlx::query(
        "INSERT INTO parked_events (projection, stream_seq, subject, reason, payload) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(P::NAME)
    .bind(seq as i64)
    .bind(storable(subject))
    .bind(storable(reason))
    .bind(storable(&String::from_utf8_lossy(payload)))
    .execute(&mut *tx)
    .await
    .map(drop)
}

/// `text` with every NUL replaced (U+FFFD), so PostgreSQL can store it.
fn storable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        text.replace('\0', "\u{fffd}").into()
    } else {
        text.into()
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
