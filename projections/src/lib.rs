//! Warren's read side: JetStream consumers that maintain Postgres read models.
//!
//! Each projection reads one stream (filtered to durable facts), and applies each batch of commits
//! in one transaction together with its checkpoint, so redelivery and full replays are harmless.
//! Timestamps come from the events, never from the clock, so a rebuild is row-for-row identical.
//!
//! Layout:
//! - [`schema`] — the read-model schema, pools bound to it, the embedded migrations.
//! - [`runner`] — the projector loop: durable consumer, batch + checkpoint transactions, parking
//!   of commits that cannot be read, may not be applied, or that the database refuses.
//! - [`guard`] — the check every commit passes before it is applied: could its actor cause it?
//! - [`users`], [`agents`], [`conversations`] — each aggregate's events → rows.
//! - [`usage`] — the usage read model: every usage fact, and the daily counters quotas read; two
//!   projections (one per stream) that can be rebuilt on their own.
//! - [`copy`] — rows in PostgreSQL's binary `COPY` format, how the usage facts land.
//! - [`replay`] — `warren replay`: rebuild every read model, or only usage, into a fresh schema
//!   while live, then swap it in.
//! - [`status`] — per-projection lag, for health checks.
//! - [`capacity`] — how many sandboxes are awake, against the platform's cap.

pub mod agents;
pub mod capacity;
pub mod conversations;
pub mod copy;
pub mod guard;
pub mod replay;
pub mod runner;
pub mod schema;
pub mod status;
pub mod usage;
pub mod users;

use async_nats::jetstream;
use serde::de::DeserializeOwned;
use sqlx::{PgConnection, PgPool};
use std::future::Future;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use warren_domain::{Authority, Envelope};

pub use runner::ProjectorError;

/// One read model fed by one stream.
pub trait Projection: Send + Sync + 'static {
    /// Checkpoint key and consumer suffix.
    const NAME: &'static str;
    /// The stream it reads.
    const STREAM: &'static str;
    /// The subjects it reads (durable facts only).
    const FILTER: &'static str;
    /// The aggregate's event type.
    type Event: DeserializeOwned + serde::Serialize + Send + Sync;

    /// Which signed-in users may cause `event` (see [`warren_domain::authority`]).
    fn authority(event: &Self::Event) -> Authority;

    /// The user `envelope` is about (the user, or the agent's or conversation's owner), from the
    /// event or from this projection's own rows; `None` when it is unknown here.
    fn subject(
        tx: &mut PgConnection,
        envelope: &Envelope<Self::Event>,
    ) -> impl Future<Output = Result<Option<Uuid>, sqlx::Error>> + Send;

    /// Applies one event of the commit stored at stream sequence `seq`.
    fn apply(
        tx: &mut PgConnection,
        seq: u64,
        envelope: &Envelope<Self::Event>,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// Whether [`Projection::apply_many`] writes a batch's events in fewer statements than one
    /// per event: then the runner hands it the events of several commits at once.
    const BULK: bool = false;

    /// Applies the events of several commits, in log order (each with its commit's sequence).
    /// The default applies them one by one.
    fn apply_many(
        tx: &mut PgConnection,
        events: &[(u64, Envelope<Self::Event>)],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        async move {
            for (seq, envelope) in events {
                Self::apply(tx, *seq, envelope).await?;
            }
            Ok(())
        }
    }
}

/// Runs every projection until `shutdown`, each in its own task. Returns the first error.
pub async fn run_all(
    js: jetstream::Context,
    pool: PgPool,
    shutdown: CancellationToken,
) -> Result<(), ProjectorError> {
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(runner::run::<users::Users>(
        js.clone(),
        pool.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(runner::run::<agents::Agents>(
        js.clone(),
        pool.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(runner::run::<conversations::Conversations>(
        js.clone(),
        pool.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(runner::run::<usage::UsageAgents>(
        js.clone(),
        pool.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(runner::run::<usage::UsageConversations>(
        js,
        pool,
        shutdown.clone(),
    ));
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                shutdown.cancel();
                return Err(err);
            }
            Err(join) => {
                shutdown.cancel();
                return Err(ProjectorError::Consumer {
                    consumer: "projector".into(),
                    source: Box::new(join),
                });
            }
        }
    }
    Ok(())
}
