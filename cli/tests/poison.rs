//! One bad commit must not stop the platform for everyone: a commit PostgreSQL refuses, put in
//! the log directly (as a bug or a forged writer could), is parked, health says so, and every
//! other tenant's writes keep reaching the read models.

mod common;
mod edge_support;

use async_nats::jetstream;
use edge_support::Platform;
use serde_json::json;
use std::time::Duration;
use warren_commands::{codec, topology};
use warren_domain::ids::{CommandId, EventId, UserId};
use warren_domain::user::{AuthKind, AuthMethod, Role, Tier, UserEvent, UserStatus};
use warren_domain::{Actor, Envelope};
use warren_testkit::wait_until;

#[tokio::test]
async fn a_commit_postgres_refuses_is_parked_and_other_tenants_writes_show_within_a_second() {
    let platform = Platform::start(&[("WARREN_APPROVAL", "open")]).await;
    let before = platform.sign_in("before@example.com").await;

    // The poison: a registration whose name PostgreSQL cannot store.
    let poisoned = UserId::new();
    let envelope = Envelope {
        id: EventId::new(),
        version: warren_domain::versions::current("UserRegistered").to_owned(),
        aggregate_id: poisoned.to_string(),
        command_id: CommandId::new(),
        actor: Actor::User(poisoned),
        occurred_at: chrono::Utc::now(),
        event: UserEvent::UserRegistered {
            user_id: poisoned,
            email: Some("poison@example.com".into()),
            display_name: Some("nul \u{0} here".into()),
            avatar_url: None,
            show_tool_calls: true,
            auth: AuthMethod {
                connection_id: warren_domain::ids::ConnectionId::new(),
                kind: AuthKind::Email,
                external_id: "poison@example.com".into(),
            },
            role: Role::User,
            status: UserStatus::Approved,
            tier: Tier::Free,
        },
    };
    let js = jetstream::new(platform.nats.client().await);
    js.publish(
        topology::user_subject(&poisoned.to_string()),
        codec::encode(&[envelope]).expect("encode").into(),
    )
    .await
    .expect("publish")
    .await
    .expect("stored");

    // Another tenant signs up and renames themself; an existing one too: both show at once.
    let after = platform.sign_in("after@example.com").await;
    for (session, name) in [(&after, "After"), (&before, "Before")] {
        let patched = platform
            .patch(
                "/api/v1/users/me",
                Some(&session.access),
                json!({ "display_name": name }),
            )
            .await;
        assert_eq!(patched.status, 200, "{patched:?}");
        wait_until(Duration::from_secs(1), || async {
            platform
                .get("/api/v1/users/me", Some(&session.access))
                .await
                .body["display_name"]
                == name
        })
        .await;
    }

    let health = platform.get("/api/v1/health", None).await;
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(health.body["status"], "degraded", "{health:?}");
    let users = &health.body["projections"][0];
    assert_eq!(users["projection"], "users");
    assert_eq!(users["parked"], 1, "{health:?}");
    assert!(
        health.body["problems"][0]
            .as_str()
            .is_some_and(|problem| problem.contains("users parked 1")),
        "{health:?}"
    );
    let reason: String =
        sqlx::query_scalar("SELECT reason FROM warren.parked_events WHERE projection = 'users'")
            .fetch_one(platform.db.pool())
            .await
            .expect("parked row");
    assert!(reason.contains("0x00"), "{reason}");
}
