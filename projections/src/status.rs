//! How far behind each projection is and how many commits it parked, for `/api/v1/health` and
//! `warren replay`'s progress.

use crate::usage::{UsageAgents, UsageConversations};
use crate::{Projection, agents::Agents, conversations::Conversations, runner, users::Users};
use async_nats::jetstream;
use serde::Serialize;
use sqlx::PgPool;

/// One projection's position.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Lag {
    /// Projection name.
    pub projection: &'static str,
    /// Last stream sequence applied.
    pub checkpoint: u64,
    /// Commits in the log not yet applied (`None` when the projector has not started).
    pub pending: Option<u64>,
    /// Commits kept aside instead of applied (unreadable, not allowed, or refused by the
    /// database); each one is a fact missing from the read model until an operator acts.
    pub parked: u64,
}

async fn lag_of<P: Projection>(js: &jetstream::Context, pool: &PgPool) -> Result<Lag, sqlx::Error> {
    let pending = async {
        match js.get_stream_no_info(P::STREAM).await {
            Ok(stream) => match stream.consumer_info(runner::consumer_name::<P>()).await {
                Ok(info) => Some(info.num_pending + info.num_ack_pending as u64),
                Err(_) => None,
            },
            Err(_) => None,
        }
    };
    // The checkpoint and the parked count in one query.
    let positions = sqlx::query_as::<_, (Option<i64>, i64)>(
        "SELECT (SELECT last_seq FROM checkpoints WHERE projection = $1), \
         (SELECT count(*) FROM parked_events WHERE projection = $1)",
    )
    .bind(P::NAME)
    .fetch_one(pool);
    let (pending, positions) = futures::join!(pending, positions);
    let (checkpoint, parked) = positions?;
    Ok(Lag {
        projection: P::NAME,
        checkpoint: checkpoint.unwrap_or(0) as u64,
        pending,
        parked: parked as u64,
    })
}

/// The lag of every projection (asked at once: health checks should be cheap).
pub async fn lags(js: &jetstream::Context, pool: &PgPool) -> Result<Vec<Lag>, sqlx::Error> {
    let (users, agents, conversations, usage_agents, usage_conversations) = futures::try_join!(
        lag_of::<Users>(js, pool),
        lag_of::<Agents>(js, pool),
        lag_of::<Conversations>(js, pool),
        lag_of::<UsageAgents>(js, pool),
        lag_of::<UsageConversations>(js, pool),
    )?;
    Ok(vec![
        users,
        agents,
        conversations,
        usage_agents,
        usage_conversations,
    ])
}
