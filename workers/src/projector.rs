//! The projector worker: keeps every read model up to date. Run one active replica per database;
//! a second one is harmless (the checkpoint guards every batch) but does no extra work.

use crate::supervise::supervise;
use async_nats::jetstream;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// The projector, built and ready to run.
pub struct Projector {
    js: jetstream::Context,
    pool: PgPool,
}

impl Projector {
    /// Builds the projector on a JetStream context and a pool bound to the live schema.
    pub fn build(js: jetstream::Context, pool: PgPool) -> Self {
        Self { js, pool }
    }

    /// Runs until `shutdown`, restarting after failures.
    pub async fn run(self, shutdown: CancellationToken) {
        supervise("projector", shutdown.clone(), || {
            warren_projections::run_all(self.js.clone(), self.pool.clone(), shutdown.child_token())
        })
        .await;
    }
}
