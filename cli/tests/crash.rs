//! SIGKILL of the whole platform (warren, its nats-server and its PostgreSQL) under load, then a
//! restart: no acknowledged command is lost and the read models converge on the log.

mod common;

use async_nats::jetstream;
use common::{Warren, free_port, get_json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;
use warren_commands::store::CommandMeta;
use warren_commands::topology::{self, LogSettings};
use warren_commands::{CommandService, codec};
use warren_domain::Actor;
use warren_domain::ids::{ConnectionId, UserId};
use warren_domain::user::{ApprovalMode, AuthKind, AuthMethod, UserCommand};
use warren_testkit::wait_until;

struct Ports {
    nats: u16,
    pg: u16,
    http: u16,
}

fn spawn_dev(dir: &std::path::Path, ports: &Ports, name: &str) -> Warren {
    Warren::spawn(
        &["dev"],
        &[
            ("WARREN_DATA_DIR", dir.join("data").display().to_string()),
            ("WARREN_HTTP_ADDR", format!("127.0.0.1:{}", ports.http)),
            ("WARREN_DEV_NATS_PORT", ports.nats.to_string()),
            ("WARREN_DEV_POSTGRES_PORT", ports.pg.to_string()),
        ],
        dir,
        name,
    )
}

async fn healthy(http: u16, warren: &Warren) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !matches!(
        get_json(&format!("http://127.0.0.1:{http}/api/v1/health")).await,
        Some((200, _))
    ) {
        assert!(
            std::time::Instant::now() < deadline,
            "warren dev never became healthy:\n{}",
            warren.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn register(id: UserId) -> UserCommand {
    UserCommand::RegisterUser {
        user_id: id,
        email: Some(format!("{id}@example.test")),
        display_name: None,
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

/// Every `Nats-Msg-Id` stored on a subject.
async fn stored_ids(js: &jetstream::Context, subject: &str) -> HashSet<String> {
    let stream = js.get_stream(topology::USERS).await.expect("stream");
    let mut ids = HashSet::new();
    let mut next = 1;
    while let Ok(message) = stream
        .direct_get_next_for_subject(subject, Some(next))
        .await
    {
        next = message.sequence + 1;
        if let Some(id) = codec::header(&message.headers, codec::HEADER_MSG_ID) {
            ids.insert(id.to_owned());
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_command_and_read_models_converge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = Ports {
        nats: free_port(),
        pg: free_port(),
        http: free_port(),
    };
    let mut warren = spawn_dev(dir.path(), &ports, "dev-1");
    healthy(ports.http, &warren).await;

    let nats_url = format!("nats://127.0.0.1:{}", ports.nats);
    // The admin's key, which `warren dev` generated for its nats-server.
    let keys = warren_deploy::NatsKeys::open(dir.path().join("data/credentials/nats"));
    let seed = keys.seed(warren_deploy::Role::Admin).expect("admin key");
    let client = warren_deploy::nats_auth::options(Some(seed), warren_deploy::Role::Admin)
        .retry_on_initial_connect()
        .connect(&nats_url)
        .await
        .expect("connect");
    let js = jetstream::new(client);
    let commands = CommandService::start(js.clone(), &LogSettings::default())
        .await
        .expect("commands");

    // Writers: register a user, then rename it over and over; remember every acknowledged command.
    let acked: Arc<Mutex<Vec<(UserId, String)>>> = Arc::default();
    let acked_count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for _ in 0..8 {
        let (commands, acked, acked_count, stop) = (
            commands.clone(),
            acked.clone(),
            acked_count.clone(),
            stop.clone(),
        );
        writers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let user = UserId::new();
                let meta = CommandMeta::new(Actor::System("crash-test".into()));
                if commands
                    .users
                    .execute(&user.to_string(), register(user), &meta)
                    .await
                    .is_err()
                {
                    continue;
                }
                acked.lock().await.push((user, meta.command_id.to_string()));
                acked_count.fetch_add(1, Ordering::Relaxed);
                for i in 0..5 {
                    let meta = CommandMeta::new(Actor::System("crash-test".into()));
                    let rename = UserCommand::UpdateProfile {
                        display_name: Some(format!("name {i}")),
                        avatar_url: None,
                        show_tool_calls: None,
                    };
                    if commands
                        .users
                        .execute(&user.to_string(), rename, &meta)
                        .await
                        .is_ok()
                    {
                        acked.lock().await.push((user, meta.command_id.to_string()));
                        acked_count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let counter = acked_count.clone();
    wait_until(Duration::from_secs(60), || {
        let counter = counter.clone();
        async move { counter.load(Ordering::Relaxed) >= 400 }
    })
    .await;

    warren.kill_group().await;
    stop.store(true, Ordering::Relaxed);
    let mut warren = spawn_dev(dir.path(), &ports, "dev-2");
    healthy(ports.http, &warren).await;
    for writer in writers {
        writer.await.expect("writer");
    }

    // Every acknowledged command is in the log.
    let acked = acked.lock().await.clone();
    let mut by_user: HashMap<UserId, Vec<String>> = HashMap::new();
    for (user, command_id) in &acked {
        by_user.entry(*user).or_default().push(command_id.clone());
    }
    for (user, command_ids) in &by_user {
        let stored = stored_ids(&js, &topology::user_subject(&user.to_string())).await;
        for id in command_ids {
            assert!(
                stored.contains(id),
                "acknowledged command {id} of user {user} was lost"
            );
        }
    }

    // The read models converge: every user in the log has its row, at its last name.
    let password = std::fs::read_to_string(
        dir.path()
            .join("data/credentials/postgres/warren_reader.password"),
    )
    .expect("the reader's password");
    let db = sqlx::PgPool::connect(&format!(
        "postgres://warren_reader:{}@127.0.0.1:{}/warren",
        password.trim(),
        ports.pg
    ))
    .await
    .expect("database");
    let stream_last = js
        .get_stream(topology::USERS)
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .state
        .last_sequence;
    wait_until(Duration::from_secs(60), || {
        let db = db.clone();
        async move {
            let row: Option<(i64,)> = sqlx::query_as(
                "SELECT last_seq FROM warren.checkpoints WHERE projection = 'users'",
            )
            .fetch_optional(&db)
            .await
            .ok()
            .flatten();
            row.is_some_and(|(seq,)| seq as u64 >= stream_last)
        }
    })
    .await;
    let rows: HashMap<uuid::Uuid, Option<String>> =
        sqlx::query_as::<_, (uuid::Uuid, Option<String>)>(
            "SELECT id, display_name FROM warren.users",
        )
        .fetch_all(&db)
        .await
        .expect("users")
        .into_iter()
        .collect();
    let store: warren_commands::Store<warren_domain::user::User> =
        warren_commands::Store::open(js.clone())
            .await
            .expect("store");
    for user in by_user.keys() {
        let events = cqrs_es::EventStore::load_events(&store, &user.to_string())
            .await
            .expect("events");
        let mut expected = None;
        for envelope in events {
            if let warren_domain::user::UserEvent::ProfileUpdated { display_name, .. } =
                envelope.payload
            {
                expected = display_name;
            }
        }
        let row = rows
            .get(&user.0)
            .unwrap_or_else(|| panic!("user {user} has no row"));
        assert_eq!(row, &expected, "user {user}");
    }
    warren.kill_group().await;
}
