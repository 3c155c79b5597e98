//! `GET /api/v1/admin/usage` (analysts and admins: every user's usage) and `GET
//! /api/v1/usage/report` (a user's own): usage over a time range per `hour`, `day` or `month`,
//! grouped by user, agent, model or tier, with totals and cost ([`app::analytics`]).

use crate::app::access::{self, AuthUser};
use crate::app::analytics::{self, Bucket, GroupBy, MAX_BUCKETS, UsageReport};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::openapi::resp;
use crate::routes::ApiRouter;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use utoipa::IntoParams;

/// The analytics routes.
pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .get("/admin/usage", everyone)
        .get("/usage/report", own)
}

/// What a usage report covers.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// The first instant counted: RFC 3339, or a UTC day (`2026-01-31`). Default: 30 days
    /// before `to`.
    pub from: Option<String>,
    /// The first instant not counted: RFC 3339, or a UTC day (its start). Default: now.
    pub to: Option<String>,
    /// `hour`, `day` (default) or `month`.
    pub bucket: Option<String>,
    /// `user`, `agent`, `model` or `tier` (`/usage/report`: `agent` or `model`); default: none.
    pub group_by: Option<String>,
}

/// Every user's usage over a time range, per bucket and group, with totals and cost.
#[utoipa::path(get, path = "/api/v1/admin/usage", operation_id = "get_admin_usage", tag = "admin", security(("bearer" = [])),
    params(ReportQuery),
    responses((status = 200, description = "The usage report.", body = UsageReport),
        resp::Unauthorized, resp::Forbidden, resp::Validation))]
pub(crate) async fn everyone(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiQuery(query): ApiQuery<ReportQuery>,
) -> Result<Json<UsageReport>, ApiError> {
    access::analyst(caller)?;
    let query = parse(&query, None)?;
    Ok(Json(analytics::report(&state, &query).await?))
}

/// The caller's own usage over a time range, per bucket and agent or model, with totals and
/// cost.
#[utoipa::path(get, path = "/api/v1/usage/report", operation_id = "get_usage_report", tag = "usage", security(("bearer" = [])),
    params(ReportQuery),
    responses((status = 200, description = "The caller's usage report.", body = UsageReport),
        resp::Unauthorized, resp::Validation))]
pub(crate) async fn own(
    State(state): State<AppState>,
    caller: AuthUser,
    ApiQuery(query): ApiQuery<ReportQuery>,
) -> Result<Json<UsageReport>, ApiError> {
    let query = parse(&query, Some(&caller))?;
    Ok(Json(analytics::report(&state, &query).await?))
}

/// The report asked for, checked; `caller` scopes it to their own usage.
fn parse(query: &ReportQuery, caller: Option<&AuthUser>) -> Result<analytics::Query, ApiError> {
    let to = match &query.to {
        Some(text) => instant("to", text)?,
        None => Utc::now(),
    };
    let from = match &query.from {
        Some(text) => instant("from", text)?,
        None => to - Duration::days(30),
    };
    if from >= to {
        return Err(ApiError::invalid_field("from", "must be before `to`"));
    }
    let bucket = match query.bucket.as_deref() {
        None => Bucket::Day,
        Some(text) => Bucket::parse(text)
            .ok_or_else(|| ApiError::invalid_field("bucket", "must be hour, day or month"))?,
    };
    if bucket.count(from, to) > MAX_BUCKETS {
        return Err(ApiError::invalid_field(
            "bucket",
            format!("the range spans more than {MAX_BUCKETS} buckets: use a larger bucket"),
        ));
    }
    let group_by = match (query.group_by.as_deref(), caller) {
        (None, _) => None,
        (Some(text), None) => Some(GroupBy::parse(text).ok_or_else(|| {
            ApiError::invalid_field("group_by", "must be user, agent, model or tier")
        })?),
        (Some(text), Some(_)) => match GroupBy::parse(text) {
            Some(group @ (GroupBy::Agent | GroupBy::Model)) => Some(group),
            _ => {
                return Err(ApiError::invalid_field(
                    "group_by",
                    "must be agent or model",
                ));
            }
        },
    };
    Ok(analytics::Query {
        from,
        to,
        bucket,
        group_by,
        user: caller.map(|caller| caller.id),
    })
}

/// An RFC 3339 instant, or a UTC day's start.
fn instant(field: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    warren_domain::usage::parse_instant(text).ok_or_else(|| {
        ApiError::invalid_field(field, "must be an RFC 3339 time or a day (YYYY-MM-DD)")
    })
}
