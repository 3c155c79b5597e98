//! The message and token quotas at component level, against a real PostgreSQL read model: the
//! chat route (issue 4) calls `check_message_quota` where a message is accepted, the model proxy
//! `check_token_quota_at` before it forwards a model call (ADR 23).

use chrono::{Duration, TimeZone, Utc};
use warren_domain::ids::UserId;
use warren_domain::user::Tier;
use warren_edge::ApiError;
use warren_edge::quota::{check_message_quota_at, check_token_quota_at};
use warren_edge::settings::{Limits, TierLimits};
use warren_projections::schema::{self, LIVE_SCHEMA};
use warren_testkit::TestDb;

const TIERS: TierLimits = TierLimits {
    free: Limits {
        messages_per_day: 3,
        max_agents: 1,
        tokens_per_day: 1_000,
    },
    pro: Limits {
        messages_per_day: 10,
        max_agents: 5,
        tokens_per_day: 10_000,
    },
    enterprise: Limits {
        messages_per_day: 100,
        max_agents: 50,
        tokens_per_day: 100_000,
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

#[tokio::test]
async fn model_calls_past_the_daily_metered_tokens_are_refused_and_reported_tokens_do_not_count() {
    let db = TestDb::create().await;
    let pool = schema::open(db.url(), LIVE_SCHEMA, 2)
        .await
        .expect("read models");
    let user = UserId::new();
    let now = Utc
        .with_ymd_and_hms(2026, 5, 4, 23, 0, 0)
        .single()
        .expect("time");
    let set = |reported: i64, metered_in: i64, metered_out: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO daily_usage (user_id, day, input_tokens, metered_input_tokens, \
                 metered_output_tokens) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, day) \
                 DO UPDATE SET input_tokens = EXCLUDED.input_tokens, \
                 metered_input_tokens = EXCLUDED.metered_input_tokens, \
                 metered_output_tokens = EXCLUDED.metered_output_tokens",
            )
            .bind(user.0)
            .bind(now.date_naive())
            .bind(reported)
            .bind(metered_in)
            .bind(metered_out)
            .execute(&pool)
            .await
            .expect("usage row");
        }
    };

    check_token_quota_at(&pool, &TIERS, user, Tier::Free, now)
        .await
        .expect("no usage yet");
    // What runtimes reported for their runs is their word: only metered tokens count.
    set(5_000, 600, 399).await;
    check_token_quota_at(&pool, &TIERS, user, Tier::Free, now)
        .await
        .expect("999 of 1000 metered");
    set(5_000, 600, 400).await;
    match check_token_quota_at(&pool, &TIERS, user, Tier::Free, now).await {
        Err(ApiError::TooMany {
            code,
            message,
            retry_after_secs,
            details,
        }) => {
            assert_eq!(code, "quota_exceeded");
            assert_eq!(retry_after_secs, 3600, "until midnight UTC");
            assert!(message.contains("1000 tokens per day"), "{message}");
            let details = details.expect("details");
            assert_eq!(details["resource"], "tokens");
            assert_eq!(details["limit"], 1_000);
            assert_eq!(details["used"], 1_000);
        }
        other => panic!("expected 429 quota_exceeded, got {other:?}"),
    }
    check_token_quota_at(&pool, &TIERS, user, Tier::Pro, now)
        .await
        .expect("pro allows 10000");
    check_token_quota_at(&pool, &TIERS, user, Tier::Free, now + Duration::hours(2))
        .await
        .expect("a new day");
}
