//! `GET /api/v1/health`: is NATS connected, does Postgres answer, how far behind is each
//! projection, and did any of them park a commit.
//!
//! Three answers:
//! - `ok` (200): every dependency answers and the read models are current;
//! - `degraded` (200): the platform serves, but something needs an operator: a projection parked
//!   commits (facts missing from the read models) or lags more than `WARREN_HEALTH_MAX_LAG`
//!   commits behind the log. `problems` says what. Still 200, so a load balancer keeps routing to
//!   an edge that works: a parked commit is not a reason to stop serving everyone else;
//! - `unavailable` (503, in the error envelope with the report under `details`): NATS or
//!   PostgreSQL is down.

use crate::error::ApiError;
use crate::openapi::resp;
use crate::ops;
use crate::routes::ApiRouter;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use warren_projections::status::{self, Lag};

/// The health report.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when a projection parked commits or lags (see `problems`).
    pub status: &'static str,
    /// NATS: `ok`, or `unreachable` (not connected, or no answer to a ping within the budget).
    pub nats: &'static str,
    /// Postgres reachability.
    pub postgres: &'static str,
    /// Each projection's checkpoint, pending commits and parked commits.
    #[schema(value_type = Vec<Object>)]
    pub projections: Vec<Lag>,
    /// What makes the platform degraded, one sentence each; empty when `ok`.
    pub problems: Vec<String>,
}

/// The health routes.
pub fn routes() -> ApiRouter {
    ApiRouter::new().get("/health", health)
}

/// Liveness of the platform's dependencies, each projection's lag and parked commits.
#[utoipa::path(get, path = "/api/v1/health", operation_id = "get_health", tag = "meta",
    responses(
        (status = 200, description = "The platform serves; `status` is `ok` or `degraded`.", body = Health),
        resp::Unavailable,
    ))]
pub(crate) async fn health(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    // Every part is bounded: the answer comes within a second whatever is down or hangs.
    let lags = tokio::time::timeout(
        ops::CHECK_BUDGET,
        status::lags(state.commands.jetstream(), &state.db),
    );
    let (found, lags) = tokio::join!(ops::dependencies(&state.nats, &state.db), lags);
    let (nats_ok, pg_ok) = (found.nats, found.postgres);
    let read = matches!(lags, Ok(Ok(_)));
    let projections = match lags {
        Ok(Ok(lags)) => lags,
        _ => Vec::new(),
    };
    let mut problems = problems(&projections, state.settings.health_max_lag);
    if !read {
        problems.push("the projections' positions could not be read in time".to_owned());
    }
    let body = Health {
        status: if problems.is_empty() {
            "ok"
        } else {
            "degraded"
        },
        nats: if nats_ok { "ok" } else { "unreachable" },
        postgres: if pg_ok { "ok" } else { "unreachable" },
        projections,
        problems,
    };
    if nats_ok && pg_ok {
        return Ok(Json(body));
    }
    Err(ApiError::Client {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "unavailable",
        message: format!("a dependency is down: {}", found.down()),
        details: serde_json::to_value(&body).ok(),
    })
}

/// What an operator should look at: parked commits, and projections more than `max_lag`
/// commits behind.
fn problems(projections: &[Lag], max_lag: u64) -> Vec<String> {
    let mut problems = Vec::new();
    for lag in projections {
        if lag.parked > 0 {
            problems.push(format!(
                "projection {} parked {} commit(s) it could not apply (see parked_events)",
                lag.projection, lag.parked
            ));
        }
        if let Some(pending) = lag.pending.filter(|pending| *pending > max_lag) {
            problems.push(format!(
                "projection {} is {pending} commits behind the log",
                lag.projection
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag(pending: Option<u64>, parked: u64) -> Lag {
        Lag {
            projection: "users",
            checkpoint: 7,
            pending,
            parked,
        }
    }

    #[test]
    fn parked_commits_and_a_long_lag_are_problems_a_short_lag_is_not() {
        assert!(problems(&[lag(Some(10), 0)], 1000).is_empty());
        assert!(problems(&[lag(None, 0)], 1000).is_empty());
        let found = problems(&[lag(Some(1001), 2)], 1000);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("parked 2"), "{found:?}");
        assert!(found[1].contains("1001 commits behind"), "{found:?}");
    }
}
