//! `GET /api/v1/health`: is NATS connected, does Postgres answer, how far behind is each projection.
//! Degraded answers 503 in the error envelope, with the same report under `details`.

use crate::error::ApiError;
use crate::openapi::resp;
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
    /// `ok` when every dependency answers, else `degraded`.
    pub status: &'static str,
    /// NATS connection state.
    pub nats: &'static str,
    /// Postgres reachability.
    pub postgres: &'static str,
    /// Each projection's checkpoint and pending commits.
    #[schema(value_type = Vec<Object>)]
    pub projections: Vec<Lag>,
}

/// The health routes.
pub fn routes() -> ApiRouter {
    ApiRouter::new().get("/health", health)
}

/// Liveness of the platform's dependencies and each projection's lag.
#[utoipa::path(get, path = "/api/v1/health", operation_id = "get_health", tag = "meta",
    responses(
        (status = 200, description = "Every dependency answers.", body = Health),
        resp::Unavailable,
    ))]
pub(crate) async fn health(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    let nats_ok = matches!(
        state.nats.connection_state(),
        async_nats::connection::State::Connected
    );
    let projections = status::lags(state.commands.jetstream(), &state.db).await;
    let pg_ok = projections.is_ok();
    let ok = nats_ok && pg_ok;
    let body = Health {
        status: if ok { "ok" } else { "degraded" },
        nats: if nats_ok { "ok" } else { "disconnected" },
        postgres: if pg_ok { "ok" } else { "unreachable" },
        projections: projections.unwrap_or_default(),
    };
    if ok {
        return Ok(Json(body));
    }
    Err(ApiError::Client {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "unavailable",
        message: "a dependency is down".into(),
        details: serde_json::to_value(&body).ok(),
    })
}
