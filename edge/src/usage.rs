//! `/api/v1/usage*`: today's counts against the tier's limits, and the daily history.

use crate::app;
use crate::error::ApiError;
use crate::extract::{ApiQuery, AuthUser};
use crate::openapi::resp;
use crate::routes::ApiRouter;
use crate::state::AppState;
use crate::views::{self, DailyUsageView};
use axum::Json;
use axum::extract::State;
use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The longest history one request returns, in days.
const MAX_DAYS: i64 = 366;

/// The usage routes.
pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .get("/usage", summary)
        .get("/usage/history", history)
}

/// A count against its limit.
#[derive(Debug, Serialize, ToSchema)]
pub struct Metered {
    /// Used so far.
    pub used: u64,
    /// The tier's limit.
    pub limit: u64,
}

/// Today's usage.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageSummary {
    /// The UTC day counted.
    #[schema(value_type = String, format = Date)]
    pub day: NaiveDate,
    /// The caller's tier.
    #[schema(example = "free")]
    pub tier: String,
    /// Messages sent today against the daily limit.
    pub messages: Metered,
    /// Agents owned against the tier's maximum.
    pub agents: Metered,
    /// Model tokens (read and written) the model proxy metered today against the daily limit:
    /// the providers' own numbers (ADR 23).
    pub tokens: Metered,
    /// Model tokens read today, as the runs' runtimes reported them.
    pub input_tokens: i64,
    /// Model tokens written today, as the runs' runtimes reported them.
    pub output_tokens: i64,
    /// Deployments requested today.
    pub deployments: i64,
}

/// `GET /usage/history`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// How many days back, today included (1 to 366, default 30).
    #[param(minimum = 1, maximum = 366)]
    pub days: Option<i64>,
}

/// The caller's usage today against their tier's limits.
#[utoipa::path(get, path = "/api/v1/usage", operation_id = "get_usage", tag = "usage", security(("bearer" = [])),
    responses((status = 200, description = "Today's usage.", body = UsageSummary), resp::Unauthorized))]
pub(crate) async fn summary(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<Json<UsageSummary>, ApiError> {
    Ok(Json(app::usage::summary(&state, &caller).await?))
}

/// The caller's usage per UTC day, oldest first (days without usage are left out).
#[utoipa::path(get, path = "/api/v1/usage/history", operation_id = "get_usage_history", tag = "usage", security(("bearer" = [])),
    params(HistoryQuery),
    responses((status = 200, description = "Daily usage.", body = Vec<DailyUsageView>), resp::Unauthorized, resp::Validation))]
pub(crate) async fn history(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<Vec<DailyUsageView>>, ApiError> {
    let days = query.days.unwrap_or(30);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ApiError::invalid_field("days", "must be between 1 and 366"));
    }
    let today = Utc::now().date_naive();
    Ok(Json(
        views::usage_history(&state.db, caller.id, today, days).await?,
    ))
}
