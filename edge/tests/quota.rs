//! The message quota at component level, against a real PostgreSQL read model: the chat route
//! (issue 4) calls `check_message_quota` where a message is accepted.

use chrono::{Duration, TimeZone, Utc};
use warren_domain::ids::UserId;
use warren_domain::user::Tier;
use warren_edge::ApiError;
use warren_edge::quota::check_message_quota_at;
use warren_edge::settings::{Limits, TierLimits};
use warren_projections::schema::{self, LIVE_SCHEMA};
use warren_testkit::TestDb;

const TIERS: TierLimits = TierLimits {
    free: Limits {
        messages_per_day: 3,
        max_agents: 1,
    },
    pro: Limits {
        messages_per_day: 10,
        max_agents: 5,
    },
    enterprise: Limits {
        messages_per_day: 100,
        max_agents: 50,
    },
};

#[tokio::test]
async fn the_message_after_the_daily_limit_is_refused_until_the_next_utc_day() {
    let db = TestDb::create().await;
    let pool = schema::open(db.url(), LIVE_SCHEMA, 2)
        .await
        .expect("read models");
    let user = UserId::new();
    let now = Utc
        .with_ymd_and_hms(2026, 5, 4, 22, 0, 0)
        .single()
        .expect("time");
    let set_messages = |count: i64, day: chrono::NaiveDate| {
        let pool = pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO daily_usage (user_id, day, messages) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id, day) DO UPDATE SET messages = EXCLUDED.messages",
            )
            .bind(user.0)
            .bind(day)
            .bind(count)
            .execute(&pool)
            .await
            .expect("usage row");
        }
    };

    // No row yet, then under the limit: accepted.
    check_message_quota_at(&pool, &TIERS, user, Tier::Free, now)
        .await
        .expect("no usage yet");
    set_messages(2, now.date_naive()).await;
    check_message_quota_at(&pool, &TIERS, user, Tier::Free, now)
        .await
        .expect("2 of 3");

    // At the limit: the next (limit + 1th) message is refused until midnight UTC, two hours away.
    set_messages(3, now.date_naive()).await;
    match check_message_quota_at(&pool, &TIERS, user, Tier::Free, now).await {
        Err(ApiError::TooMany {
            code,
            retry_after_secs,
            details,
            ..
        }) => {
            assert_eq!(code, "quota_exceeded");
            assert_eq!(retry_after_secs, 2 * 3600);
            let details = details.expect("details");
            assert_eq!(details["resource"], "messages");
            assert_eq!(details["limit"], 3);
            assert_eq!(details["used"], 3);
        }
        other => panic!("expected 429 quota_exceeded, got {other:?}"),
    }

    // Another tier's limit, and the next day, accept it.
    check_message_quota_at(&pool, &TIERS, user, Tier::Pro, now)
        .await
        .expect("pro allows 10");
    check_message_quota_at(&pool, &TIERS, user, Tier::Free, now + Duration::hours(3))
        .await
        .expect("a new day");
    // Yesterday's usage does not count today; another user's never does.
    check_message_quota_at(&pool, &TIERS, UserId::new(), Tier::Free, now)
        .await
        .expect("another user");
}
