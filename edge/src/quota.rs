//! Tier quotas (DESIGN §3): agents at once, messages and model tokens per UTC day, checked
//! *before* the work.
//!
//! [`check_agent_quota`] guards `POST /agents`; [`check_message_quota`] is for the point where a
//! message is accepted (the chat route); [`check_token_quota_at`] for the point where the model
//! proxy forwards a model call (ADR 23: it counts the tokens the proxy metered, the providers'
//! own numbers). All read the read models (`agents`, `daily_usage`) and answer 429
//! `quota_exceeded` with `Retry-After` and `{resource, limit, used}` details.

use crate::error::ApiError;
use crate::extract::AuthUser;
use crate::settings::TierLimits;
use crate::views::{self, DailyUsageView};
use chrono::{DateTime, Duration as ChronoDuration, NaiveTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use warren_domain::ids::UserId;
use warren_domain::user::Tier;

/// What `Retry-After` says for the agent quota: it frees up only when an agent is deleted, so
/// this is a hint to come back later rather than a promise.
pub const AGENT_QUOTA_RETRY_SECS: u64 = 3600;

/// Refuses a new agent when `user` already has their tier's maximum.
pub async fn check_agent_quota(
    db: &PgPool,
    tiers: &TierLimits,
    user: &AuthUser,
) -> Result<(), ApiError> {
    let limit = tiers.of(user.user.tier).max_agents;
    let used = views::agent_count(db, user.id).await?;
    if used >= limit {
        return Err(exceeded("agents", limit, used, AGENT_QUOTA_RETRY_SECS));
    }
    Ok(())
}

/// Refuses a message when `user` has sent their tier's daily maximum today (UTC).
pub async fn check_message_quota(
    db: &PgPool,
    tiers: &TierLimits,
    user: &AuthUser,
) -> Result<(), ApiError> {
    check_message_quota_at(db, tiers, user.id, user.user.tier, Utc::now()).await
}

/// [`check_message_quota`] at a given time (for tests and callers that already hold the user's
/// id and tier).
pub async fn check_message_quota_at(
    db: &PgPool,
    tiers: &TierLimits,
    user: UserId,
    tier: Tier,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let limit = tiers.of(tier).messages_per_day;
    check_daily(db, user, now, "messages", limit, |today| {
        today.messages.max(0) as u64
    })
    .await
}

/// Refuses a model call when `user`'s agents have used their tier's daily model tokens today
/// (UTC): the tokens the model proxy metered, read and written together. One call may take the
/// count past the limit; the next is refused.
pub async fn check_token_quota_at(
    db: &PgPool,
    tiers: &TierLimits,
    user: UserId,
    tier: Tier,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let limit = tiers.of(tier).tokens_per_day;
    check_daily(
        db,
        user,
        now,
        "tokens",
        limit,
        DailyUsageView::metered_tokens,
    )
    .await
}

/// Refuses when what `used` counts in `user`'s usage today (UTC) has reached `limit`; the
/// refusal's `Retry-After` is the next UTC midnight.
async fn check_daily(
    db: &PgPool,
    user: UserId,
    now: DateTime<Utc>,
    resource: &'static str,
    limit: u64,
    used: impl FnOnce(&DailyUsageView) -> u64,
) -> Result<(), ApiError> {
    let used = used(&views::usage_on(db, user, now.date_naive()).await?);
    if used >= limit {
        return Err(exceeded(
            resource,
            limit,
            used,
            seconds_until_next_utc_day(now),
        ));
    }
    Ok(())
}

/// Seconds from `now` to the next UTC midnight (at least 1).
pub fn seconds_until_next_utc_day(now: DateTime<Utc>) -> u64 {
    let tomorrow = (now.date_naive() + ChronoDuration::days(1))
        .and_time(NaiveTime::MIN)
        .and_utc();
    (tomorrow - now).num_seconds().max(1) as u64
}

fn exceeded(resource: &'static str, limit: u64, used: u64, retry_after_secs: u64) -> ApiError {
    let per = if resource == "agents" { "" } else { " per day" };
    ApiError::TooMany {
        code: "quota_exceeded",
        message: format!("your plan allows {limit} {resource}{per}; you have used {used}"),
        retry_after_secs,
        details: Some(json!({ "resource": resource, "limit": limit, "used": used })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_message_quota_resets_at_utc_midnight() {
        let now = Utc
            .with_ymd_and_hms(2026, 3, 1, 23, 59, 0)
            .single()
            .expect("time");
        assert_eq!(seconds_until_next_utc_day(now), 60);
        let midnight = Utc
            .with_ymd_and_hms(2026, 3, 1, 0, 0, 0)
            .single()
            .expect("time");
        assert_eq!(seconds_until_next_utc_day(midnight), 86_400);
    }
}
