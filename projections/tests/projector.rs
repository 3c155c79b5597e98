//! The projector against real JetStream and Postgres: unreadable commits are parked and the
//! projector goes on; a redelivered batch changes nothing.

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use warren_commands::store::CommandMeta;
use warren_commands::topology::{self, LogSettings};
use warren_commands::{CommandService, codec};
use warren_domain::Actor;
use warren_domain::ids::{ConnectionId, UserId};
use warren_domain::user::{ApprovalMode, AuthKind, AuthMethod, UserCommand};
use warren_projections::runner::{self, BatchOutcome};
use warren_projections::schema::{self, LIVE_SCHEMA};
use warren_projections::users::Users;
use warren_testkit::{TestDb, TestNats, wait_until};

fn register(id: UserId) -> UserCommand {
    UserCommand::RegisterUser {
        user_id: id,
        email: None,
        display_name: Some("Ada".into()),
        avatar_url: None,
        auth: AuthMethod {
            connection_id: ConnectionId::new(),
            kind: AuthKind::Email,
            external_id: id.to_string(),
        },
        approval: ApprovalMode::Open,
        is_admin: false,
    }
}

async fn setup() -> (
    TestNats,
    TestDb,
    jetstream::Context,
    CommandService,
    sqlx::PgPool,
) {
    let nats = TestNats::start().await;
    let db = TestDb::create().await;
    let js = nats.jetstream().await;
    let commands = CommandService::start(js.clone(), &LogSettings::default())
        .await
        .expect("commands");
    let pool = schema::open(db.url(), LIVE_SCHEMA, 4)
        .await
        .expect("schema");
    (nats, db, js, commands, pool)
}

async fn count(pool: &sqlx::PgPool, sql: &'static str) -> i64 {
    sqlx::query_as::<_, (i64,)>(sql)
        .fetch_one(pool)
        .await
        .expect("count")
        .0
}

#[tokio::test]
async fn an_unreadable_commit_is_parked_with_its_reason_and_the_projector_goes_on() {
    let (_nats, _db, js, commands, pool) = setup().await;
    // A commit from a future version of Warren: a type this build does not know.
    let stranger = UserId::new();
    let body = serde_json::json!([{
        "id": uuid::Uuid::now_v7(), "version": "1", "aggregate_id": stranger.to_string(),
        "command_id": uuid::Uuid::now_v7(), "actor": {"kind": "system", "id": "future"},
        "occurred_at": "2026-11-22T00:00:00Z", "type": "UserTeleported", "data": {"to": "mars"}
    }]);
    js.publish(
        topology::user_subject(&stranger.to_string()),
        serde_json::to_vec(&body).expect("json").into(),
    )
    .await
    .expect("publish")
    .await
    .expect("ack");
    let user = UserId::new();
    commands
        .users
        .execute(
            &user.to_string(),
            register(user),
            &CommandMeta::new(Actor::System("t".into())),
        )
        .await
        .expect("register");

    let shutdown = CancellationToken::new();
    let projector = tokio::spawn(warren_projections::run_all(
        js.clone(),
        pool.clone(),
        shutdown.clone(),
    ));
    wait_until(Duration::from_secs(30), || async {
        count(&pool, "SELECT count(*) FROM users").await == 1
    })
    .await;
    let (reason, seq): (String, i64) =
        sqlx::query_as("SELECT reason, stream_seq FROM parked_events")
            .fetch_one(&pool)
            .await
            .expect("parked");
    assert!(reason.contains("UserTeleported"), "{reason}");
    assert_eq!(seq, 1);
    assert_eq!(
        runner::checkpoint(&pool, "users")
            .await
            .expect("checkpoint"),
        2
    );
    shutdown.cancel();
    projector.await.expect("join").expect("projector");
}

#[tokio::test]
async fn a_redelivered_batch_changes_nothing() {
    let (_nats, _db, js, commands, pool) = setup().await;
    let meta = || CommandMeta::new(Actor::System("t".into()));
    for _ in 0..3 {
        let user = UserId::new();
        commands
            .users
            .execute(&user.to_string(), register(user), &meta())
            .await
            .expect("register");
        commands
            .users
            .execute(
                &user.to_string(),
                UserCommand::ChangeTier {
                    tier: warren_domain::user::Tier::Pro,
                },
                &meta(),
            )
            .await
            .expect("tier");
    }
    let stream = js.get_stream(topology::USERS).await.expect("stream");
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut batch = consumer
        .fetch()
        .max_messages(100)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .expect("fetch");
    let mut messages = Vec::new();
    while let Some(message) = batch.next().await {
        messages.push(message.expect("message"));
    }
    assert_eq!(messages.len(), 6);
    let headers = messages[1].headers.as_ref().expect("headers");
    assert_eq!(
        codec::header(headers, codec::HEADER_EVENT_TYPES),
        Some("TierChanged")
    );

    let first = runner::apply_batch::<Users>(&pool, 0, &messages, true)
        .await
        .expect("apply");
    assert_eq!(first, BatchOutcome::Applied(6));
    let snapshot = count(&pool, "SELECT count(*) FROM users WHERE tier = 'pro'").await;
    // The same batch again, as after a crash between commit and ack: every commit is skipped.
    let again = runner::apply_batch::<Users>(&pool, 6, &messages, true)
        .await
        .expect("apply again");
    assert_eq!(again, BatchOutcome::Applied(6));
    assert_eq!(
        count(&pool, "SELECT count(*) FROM users WHERE tier = 'pro'").await,
        snapshot
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM auth_methods").await, 3);
    // A projector that believes it is elsewhere does not write at all.
    let stale = runner::apply_batch::<Users>(&pool, 0, &messages, true)
        .await
        .expect("stale");
    assert_eq!(stale, BatchOutcome::Moved(6));
}
