//! The operators' listener every role serves on `WARREN_METRICS_ADDR` (ADR 36), apart from the
//! public API so that it can stay on a private address:
//! - `GET /metrics` — every series of [`warren_commands::metrics`] in OpenMetrics text, with the
//!   scrape-time values (durable consumers' and projections' lag) refreshed first;
//! - `GET /healthz` — liveness: the process serves (200, always);
//! - `GET /readyz` — readiness: NATS and PostgreSQL answer, within a second whatever is down
//!   (503 naming what is down).
//!
//! [`dependencies`] is the one bounded check of NATS and PostgreSQL, shared with
//! `/api/v1/health`.

use async_nats::jetstream;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use sqlx::PgPool;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warren_commands::metrics;
use warren_projections::status;

/// How long one dependency check may take: a probe must answer within a second even when a
/// dependency hangs rather than refuses.
pub const CHECK_BUDGET: Duration = Duration::from_millis(700);

/// The content type of `/metrics`.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether each dependency answered within [`CHECK_BUDGET`].
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct Dependencies {
    /// NATS: connected, and JetStream answered.
    pub nats: bool,
    /// PostgreSQL: `SELECT 1` came back.
    pub postgres: bool,
}

impl Dependencies {
    /// Both answered.
    pub fn ok(self) -> bool {
        self.nats && self.postgres
    }

    /// What is down, for a 503's message (`nats`, `postgres`, `nats, postgres`).
    pub fn down(self) -> String {
        let mut down = Vec::new();
        if !self.nats {
            down.push("nats");
        }
        if !self.postgres {
            down.push("postgres");
        }
        down.join(", ")
    }
}

/// Asks NATS (JetStream's info of a stream) and PostgreSQL (`SELECT 1`) at once, each bounded by [`CHECK_BUDGET`].
pub async fn dependencies(nats: &async_nats::Client, db: &PgPool) -> Dependencies {
    let round_trip = async {
        matches!(
            nats.connection_state(),
            async_nats::connection::State::Connected
        ) && matches!(
            tokio::time::timeout(CHECK_BUDGET, stream_info(nats)).await,
            Ok(true)
        )
    };
    let select = async {
        matches!(
            tokio::time::timeout(CHECK_BUDGET, sqlx::query("SELECT 1").execute(db)).await,
            Ok(Ok(_))
        )
    };
    let (nats, postgres) = tokio::join!(round_trip, select);
    Dependencies { nats, postgres }
}

/// A round trip to JetStream that every role may make: the `USERS` stream's info. (A flush
/// only writes the socket: it succeeds against a server that hangs.)
async fn stream_info(nats: &async_nats::Client) -> bool {
    jetstream::new(nats.clone())
        .get_stream(warren_commands::topology::USERS)
        .await
        .is_ok()
}

/// What the ops listener probes.
#[derive(Clone)]
pub struct Probes {
    /// The role's NATS connection.
    pub nats: async_nats::Client,
    /// The role's read-model pool.
    pub db: PgPool,
    /// The projector's connection and pool, in the process that runs it: a scrape then
    /// reports each projection's lag and parked commits.
    pub projections: Option<(jetstream::Context, PgPool)>,
}

/// The ops routes.
pub fn router(probes: Probes) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(probes)
}

/// Serves the ops routes on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    probes: Probes,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(probes))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn scrape(State(probes): State<Probes>) -> Response {
    // A slow dependency delays a scrape by at most the budget; the gauges keep their last value.
    let _ = tokio::time::timeout(CHECK_BUDGET, refresh(&probes)).await;
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        metrics::global().render(),
    )
        .into_response()
}

/// Sets the gauges measured only when scraped.
async fn refresh(probes: &Probes) {
    let metrics = metrics::global();
    let durables = async {
        for (stream, name, js) in metrics.durables() {
            let Ok(stream) = js.get_stream_no_info(stream).await else {
                continue;
            };
            if let Ok(info) = stream.consumer_info(&name).await {
                let pending = info.num_pending + info.num_ack_pending as u64;
                metrics
                    .consumer_pending
                    .get_or_create(&metrics::Named { name })
                    .set(i64::try_from(pending).unwrap_or(i64::MAX));
            }
        }
    };
    let projections = async {
        let Some((js, db)) = &probes.projections else {
            return;
        };
        let Ok(lags) = status::lags(js, db).await else {
            return;
        };
        for lag in lags {
            let name = metrics::Named {
                name: lag.projection.to_owned(),
            };
            if let Some(pending) = lag.pending {
                metrics
                    .projection_lag
                    .get_or_create(&name)
                    .set(i64::try_from(pending).unwrap_or(i64::MAX));
            }
            metrics
                .projection_parked
                .get_or_create(&name)
                .set(i64::try_from(lag.parked).unwrap_or(i64::MAX));
        }
    };
    tokio::join!(durables, projections);
}

/// The readiness report.
#[derive(Serialize)]
struct Ready {
    status: &'static str,
    nats: &'static str,
    postgres: &'static str,
}

async fn ready(State(probes): State<Probes>) -> Response {
    let found = dependencies(&probes.nats, &probes.db).await;
    let body = Ready {
        status: if found.ok() { "ready" } else { "unavailable" },
        nats: if found.nats { "ok" } else { "unreachable" },
        postgres: if found.postgres { "ok" } else { "unreachable" },
    };
    if found.ok() {
        return Json(body).into_response();
    }
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}
