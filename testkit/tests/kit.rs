//! The kit's own tests: the servers it starts are real and behave as the other crates' tests
//! rely on.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use warren_testkit::{TestDb, TestNats, wait_for, wait_until};

const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_test_nats_server_answers_jetstream_requests() {
    let nats = TestNats::start().await;
    assert!(nats.url().starts_with("nats://127.0.0.1:"));
    assert!(nats.pid().is_some());

    let js = nats.jetstream().await;
    let account = js.query_account().await.expect("account info");
    assert_eq!(account.streams, 0);
    assert!(warren_deploy::find_running(&nats.url()).await);
}

#[tokio::test]
async fn start_with_passes_the_sync_interval_through() {
    let nats = TestNats::start_with("always").await;
    let config = std::fs::read_to_string(nats.config_path()).expect("config");
    assert!(config.contains("sync_interval: \"always\""), "{config}");
    nats.jetstream()
        .await
        .query_account()
        .await
        .expect("account info");
}

#[tokio::test]
async fn killing_and_restarting_nats_keeps_a_streams_messages() {
    let mut nats = TestNats::start().await;
    let js = nats.jetstream().await;
    js.create_stream(stream::Config {
        name: "KIT".into(),
        subjects: vec!["kit.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("create stream");
    for i in 0..50u32 {
        js.publish(format!("kit.{}", i % 5), i.to_string().into())
            .await
            .expect("publish")
            .await
            .expect("publish ack");
    }
    let old_pid = nats.pid();

    nats.kill().await.expect("kill");
    assert_eq!(nats.pid(), None);
    assert!(!warren_deploy::find_running(&nats.url()).await);
    nats.restart().await.expect("restart");
    assert_ne!(nats.pid(), old_pid);

    // A fresh client: the old one reconnects on its own, but on its own schedule.
    let js = nats.jetstream().await;
    let mut stream = js.get_stream("KIT").await.expect("stream after restart");
    let info = stream.info().await.expect("stream info");
    assert_eq!(info.state.messages, 50);
    let last = stream
        .get_last_raw_message_by_subject("kit.4")
        .await
        .expect("last message on kit.4");
    assert_eq!(&last.payload[..], b"49");
}

#[tokio::test]
async fn an_old_client_reconnects_after_a_restart() {
    let mut nats = TestNats::start().await;
    let client = nats.client().await;
    nats.kill().await.expect("kill");
    nats.restart().await.expect("restart");
    wait_until(TIMEOUT, || async {
        client.connection_state() == async_nats::connection::State::Connected
    })
    .await;
    let account = jetstream::new(client)
        .query_account()
        .await
        .expect("account info");
    assert_eq!(account.streams, 0);
}

#[tokio::test]
async fn two_test_databases_are_distinct() {
    let a = TestDb::create().await;
    let b = TestDb::create().await;
    assert_ne!(a.name(), b.name());
    assert_ne!(a.url(), b.url());

    let current: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(a.pool())
        .await
        .expect("current_database");
    assert_eq!(current, a.name());

    sqlx::query("CREATE TABLE only_in_a (id int)")
        .execute(a.pool())
        .await
        .expect("create table in a");
    let in_b: Option<String> = sqlx::query_scalar("SELECT to_regclass('only_in_a')::text")
        .fetch_one(b.pool())
        .await
        .expect("lookup in b");
    assert_eq!(in_b, None);
}

#[tokio::test]
async fn a_test_database_is_dropped_with_its_handle() {
    let db = TestDb::create().await;
    let name = db.name().to_owned();
    let server = sqlx::PgPool::connect(db.server_url())
        .await
        .expect("connect to server");
    let count = |server: sqlx::PgPool, name: String| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_one(&server)
            .await
            .expect("count")
    };
    assert_eq!(count(server.clone(), name.clone()).await, 1);
    drop(db);
    assert_eq!(count(server, name).await, 0);
}

#[tokio::test]
async fn wait_for_returns_the_value_once_it_is_there() {
    let started = std::time::Instant::now();
    let value = wait_for(TIMEOUT, || async {
        (started.elapsed() > Duration::from_millis(30)).then_some(42)
    })
    .await;
    assert_eq!(value, 42);
}

#[tokio::test]
#[should_panic(expected = "kit.rs")]
async fn wait_until_names_the_caller_when_it_times_out() {
    wait_until(Duration::from_millis(50), || async { false }).await;
}
