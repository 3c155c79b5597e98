//! The projector against real JetStream and Postgres: unreadable commits are parked and the
//! projector goes on; a redelivered batch changes nothing; a usage fact stored twice counts once,
//! live and in a rebuild.

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
use warren_projections::runner::{self, BatchOutcome, Commit};
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
    let messages = commits(&js, topology::USERS, 0).await;
    assert_eq!(messages.len(), 6);
    let headers = messages[1].message.headers.as_ref().expect("headers");
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

/// Appends one commit of `events` for `aggregate` on `subject` as `actor`, straight to the log
/// (no aggregate decides it: this is what a forged or buggy writer could store).
async fn publish_raw<E: serde::Serialize>(
    js: &jetstream::Context,
    subject: String,
    aggregate: &str,
    actor: Actor,
    events: Vec<E>,
) {
    let envelopes: Vec<warren_domain::Envelope<E>> = events
        .into_iter()
        .map(|event| warren_domain::Envelope {
            id: warren_domain::ids::EventId::new(),
            version: warren_domain::versions::current(
                serde_json::to_value(&event).expect("serializes")["type"]
                    .as_str()
                    .unwrap_or_default(),
            )
            .to_owned(),
            aggregate_id: aggregate.to_owned(),
            command_id: warren_domain::ids::CommandId::new(),
            actor: actor.clone(),
            occurred_at: chrono::Utc::now(),
            event,
        })
        .collect();
    js.publish(subject, codec::encode(&envelopes).expect("encode").into())
        .await
        .expect("publish")
        .await
        .expect("ack");
}

/// The projector, running.
struct Running {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), warren_projections::ProjectorError>>,
}

impl Running {
    /// Starts the projector and waits until the users projection reached `checkpoint`.
    async fn until(js: &jetstream::Context, pool: &sqlx::PgPool, checkpoint: u64) -> Self {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(warren_projections::run_all(
            js.clone(),
            pool.clone(),
            shutdown.clone(),
        ));
        wait_until(Duration::from_secs(30), || async {
            runner::checkpoint(pool, "users").await.expect("checkpoint") == checkpoint
        })
        .await;
        Self { shutdown, task }
    }

    /// Stops it; it must not have failed.
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("join").expect("projector");
    }
}

async fn parked(pool: &sqlx::PgPool) -> Vec<(i64, String)> {
    sqlx::query_as("SELECT stream_seq, reason FROM parked_events ORDER BY stream_seq")
        .fetch_all(pool)
        .await
        .expect("parked")
}

#[tokio::test]
async fn a_commit_the_database_refuses_is_parked_and_the_commits_around_it_are_applied() {
    let (_nats, _db, js, commands, pool) = setup().await;
    let meta = || CommandMeta::new(Actor::System("t".into()));
    let before = UserId::new();
    commands
        .users
        .execute(&before.to_string(), register(before), &meta())
        .await
        .expect("register");
    // PostgreSQL text cannot hold U+0000: this row can never be written.
    let poisoned = UserId::new();
    publish_raw(
        &js,
        topology::user_subject(&poisoned.to_string()),
        &poisoned.to_string(),
        Actor::User(poisoned),
        vec![warren_domain::user::UserEvent::UserRegistered {
            user_id: poisoned,
            email: None,
            display_name: Some("nul\u{0}byte".into()),
            avatar_url: None,
            show_tool_calls: true,
            auth: AuthMethod {
                connection_id: ConnectionId::new(),
                kind: AuthKind::Email,
                external_id: poisoned.to_string(),
            },
            role: warren_domain::user::Role::User,
            status: warren_domain::user::UserStatus::Approved,
            tier: warren_domain::user::Tier::Free,
        }],
    )
    .await;
    let after = UserId::new();
    commands
        .users
        .execute(&after.to_string(), register(after), &meta())
        .await
        .expect("register");

    // All three commits arrive in one batch: the refused one must not take the others down.
    let projector = Running::until(&js, &pool, 3).await;
    assert_eq!(count(&pool, "SELECT count(*) FROM users").await, 2);
    let parked = parked(&pool).await;
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].0, 2);
    assert!(
        parked[0].1.contains("read model refused") && parked[0].1.contains("0x00"),
        "{parked:?}"
    );
    let lags = warren_projections::status::lags(&js, &pool)
        .await
        .expect("lags");
    assert_eq!(
        lags.iter().map(|lag| lag.parked).collect::<Vec<_>>(),
        vec![1, 0, 0, 0, 0]
    );

    // Later commits keep flowing.
    let later = UserId::new();
    commands
        .users
        .execute(&later.to_string(), register(later), &meta())
        .await
        .expect("register");
    wait_until(Duration::from_secs(5), || async {
        count(&pool, "SELECT count(*) FROM users").await == 3
    })
    .await;
    projector.stop().await;
}

#[tokio::test]
async fn a_commit_whose_actor_could_not_have_caused_it_is_parked_never_applied() {
    let (_nats, _db, js, commands, pool) = setup().await;
    let user = UserId::new();
    // Approval required: a pending guest.
    let mut command = register(user);
    if let UserCommand::RegisterUser { approval, .. } = &mut command {
        *approval = ApprovalMode::Required;
    }
    commands
        .users
        .execute(
            &user.to_string(),
            command,
            &CommandMeta::new(Actor::User(user)),
        )
        .await
        .expect("register");
    // The guest "approves" and promotes themself.
    publish_raw(
        &js,
        topology::user_subject(&user.to_string()),
        &user.to_string(),
        Actor::User(user),
        vec![
            warren_domain::user::UserEvent::UserApproved {
                user_id: user,
                role: warren_domain::user::Role::User,
            },
            warren_domain::user::UserEvent::RoleChanged {
                user_id: user,
                role: warren_domain::user::Role::Admin,
            },
        ],
    )
    .await;
    // Someone edits another user's profile.
    let other = UserId::new();
    commands
        .users
        .execute(
            &other.to_string(),
            register(other),
            &CommandMeta::new(Actor::User(other)),
        )
        .await
        .expect("register");
    publish_raw(
        &js,
        topology::user_subject(&other.to_string()),
        &other.to_string(),
        Actor::User(user),
        vec![warren_domain::user::UserEvent::ProfileUpdated {
            user_id: other,
            display_name: Some("owned".into()),
            avatar_url: None,
            show_tool_calls: true,
        }],
    )
    .await;
    // The user's own profile change, and a platform role's approval, are applied.
    commands
        .users
        .execute(
            &user.to_string(),
            UserCommand::UpdateProfile {
                display_name: Some("Grace".into()),
                avatar_url: None,
                show_tool_calls: None,
            },
            &CommandMeta::new(Actor::User(user)),
        )
        .await
        .expect("profile");

    let projector = Running::until(&js, &pool, 5).await;
    let (status, role, name): (String, String, Option<String>) =
        sqlx::query_as("SELECT status, role, display_name FROM users WHERE id = $1")
            .bind(user.0)
            .fetch_one(&pool)
            .await
            .expect("user row");
    assert_eq!((status.as_str(), role.as_str()), ("pending", "guest"));
    assert_eq!(name.as_deref(), Some("Grace"));
    let other_name: Option<String> =
        sqlx::query_scalar("SELECT display_name FROM users WHERE id = $1")
            .bind(other.0)
            .fetch_one(&pool)
            .await
            .expect("other row");
    assert_eq!(other_name.as_deref(), Some("Ada"));
    let parked = parked(&pool).await;
    assert_eq!(
        parked.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        vec![2, 4],
        "{parked:?}"
    );
    assert!(
        parked[0].1.contains("UserApproved needs an admin"),
        "{parked:?}"
    );
    assert!(parked[1].1.contains("may not cause it"), "{parked:?}");
    projector.stop().await;
}

/// One stored commit of an agent's `event`, with the envelope id given (the same event stored
/// twice has the same id).
async fn publish_agent_event(
    js: &jetstream::Context,
    agent: warren_domain::ids::AgentId,
    id: warren_domain::ids::EventId,
    event: warren_domain::agent::AgentEvent,
) {
    let envelope = warren_domain::Envelope {
        id,
        version: event.event_version().to_owned(),
        aggregate_id: agent.to_string(),
        command_id: warren_domain::ids::CommandId::new(),
        actor: Actor::System("edge".into()),
        occurred_at: chrono::Utc::now(),
        event,
    };
    let subject = topology::agent_subject(&agent.to_string());
    js.publish(subject, codec::encode(&[envelope]).expect("encode").into())
        .await
        .expect("publish")
        .await
        .expect("ack");
}

/// The commits of `stream` after `after` (up to 100).
async fn commits(js: &jetstream::Context, stream: &str, after: u64) -> Vec<Commit> {
    let stream = js.get_stream(stream).await.expect("stream");
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            },
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
    let mut commits = Vec::new();
    while let Some(message) = batch.next().await {
        let (commit, _) = Commit::read(message.expect("message")).expect("a stream's message");
        commits.push(commit);
    }
    commits
}

async fn usage_rows(pool: &sqlx::PgPool) -> Vec<(uuid::Uuid, i64, i64, Vec<String>)> {
    sqlx::query_as("SELECT event_id, input_tokens, seq, tools FROM usage_events ORDER BY seq")
        .fetch_all(pool)
        .await
        .expect("usage rows")
}

async fn metered_input(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_as::<_, (i64,)>(
        "SELECT coalesce(sum(metered_input_tokens), 0)::int8 FROM daily_usage",
    )
    .fetch_one(pool)
    .await
    .expect("daily usage")
    .0
}

#[tokio::test]
async fn a_usage_fact_stored_twice_counts_once_live_and_in_a_rebuild() {
    use warren_domain::agent::{AgentEvent, Backend, RuntimeKind};
    use warren_domain::ids::{AgentId, EventId};
    use warren_projections::usage::UsageAgents;
    let (_nats, db, js, _commands, pool) = setup().await;
    let (agent, owner) = (AgentId::new(), UserId::new());
    let metered = |input_tokens: u64| AgentEvent::ModelUsageMetered {
        agent_id: agent,
        user_id: owner,
        provider: warren_domain::user::Provider::Openai,
        model: "gpt-4o".into(),
        own_key: false,
        input_tokens,
        output_tokens: 1,
        cached_input_tokens: 0,
    };
    let created = AgentEvent::AgentCreated {
        agent_id: agent,
        owner_id: owner,
        name: "twice".into(),
        system_prompt: String::new(),
        model: "gpt-4o".into(),
        runtime: RuntimeKind::Warren,
        backend: Backend::Docker,
        host: None,
    };
    let (a, b, c) = (EventId::new(), EventId::new(), EventId::new());
    // The duplicate lands in the same batch as the first copy…
    publish_agent_event(&js, agent, EventId::new(), created).await;
    publish_agent_event(&js, agent, a, metered(100)).await;
    publish_agent_event(&js, agent, a, metered(100)).await;
    publish_agent_event(&js, agent, b, metered(20)).await;
    let first = commits(&js, topology::AGENTS, 0).await;
    assert_eq!(first.len(), 4);
    let applied = runner::apply_batch::<UsageAgents>(&pool, 0, &first, true)
        .await
        .expect("apply");
    assert_eq!(applied, BatchOutcome::Applied(4));
    // …and again in a later one.
    publish_agent_event(&js, agent, a, metered(100)).await;
    publish_agent_event(&js, agent, c, metered(3)).await;
    let second = commits(&js, topology::AGENTS, 4).await;
    let applied = runner::apply_batch::<UsageAgents>(&pool, 4, &second, true)
        .await
        .expect("apply");
    assert_eq!(applied, BatchOutcome::Applied(6));

    let live = usage_rows(&pool).await;
    let ids: Vec<uuid::Uuid> = live.iter().map(|row| row.0).collect();
    assert_eq!(
        ids,
        vec![a.0, b.0, c.0],
        "one fact per event, the first copy's"
    );
    assert_eq!(live[0].2, 2, "kept with the first copy's sequence");
    assert_eq!(
        metered_input(&pool).await,
        123,
        "the day counts each event once"
    );

    // A rebuild of the usage read model (which lands the facts unkeyed, then keys them) lands
    // the same rows and counters, and the same keys and indexes.
    let keys = usage_keys(&pool).await;
    assert!(
        keys.iter().any(|(name, _)| name == "usage_events_pkey"),
        "{keys:?}"
    );
    warren_projections::replay::replay_usage(&js, db.url(), None, &|_| {})
        .await
        .expect("replay");
    assert_eq!(usage_rows(&pool).await, live);
    assert_eq!(metered_input(&pool).await, 123);
    assert_eq!(usage_keys(&pool).await, keys);
}

/// The usage tables' constraints and indexes in the live schema, with their definitions.
async fn usage_keys(pool: &sqlx::PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT conname::text, pg_get_constraintdef(c.oid) FROM pg_constraint c \
           JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = 'warren' AND t.relname IN ('usage_events', 'daily_usage', 'usage_owners') \
         UNION ALL \
         SELECT indexname::text, indexdef FROM pg_indexes \
         WHERE schemaname = 'warren' AND tablename IN ('usage_events', 'daily_usage', 'usage_owners') \
         ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .expect("usage keys")
}
