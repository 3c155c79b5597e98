//! `warren replay` rebuilds every read model from sequence 1 into a fresh schema while the platform
//! runs, swaps it in, and the result is identical, row for row, to what the live projector built.

mod common;

use common::{Warren, scenario};
use std::time::Duration;
use warren_commands::CommandService;
use warren_commands::topology::LogSettings;
use warren_projections::schema::LIVE_SCHEMA;
use warren_testkit::{TestDb, TestNats};

/// Waits until every projection has applied everything in its stream.
async fn caught_up(js: &async_nats::jetstream::Context, url: &str) {
    let live = warren_projections::schema::pool(url, LIVE_SCHEMA, 1)
        .await
        .expect("live pool");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let lags = warren_projections::status::lags(js, &live).await;
        if lags
            .as_ref()
            .is_ok_and(|lags| lags.iter().all(|lag| lag.pending == Some(0)))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "projections did not catch up: {lags:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rows_in(dump: &[(String, Vec<serde_json::Value>)], table: &str) -> usize {
    dump.iter()
        .find(|(name, _)| name == table)
        .map_or(0, |(_, rows)| rows.len())
}

async fn schema_oid(db: &sqlx::PgPool) -> u32 {
    let (oid,): (sqlx::postgres::types::Oid,) =
        sqlx::query_as("SELECT oid FROM pg_namespace WHERE nspname = $1")
            .bind(LIVE_SCHEMA)
            .fetch_one(db)
            .await
            .expect("schema");
    oid.0
}

#[tokio::test]
async fn replay_rebuilds_read_models_identical_to_the_live_ones_while_the_system_runs() {
    let nats = TestNats::start().await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [nats.warren_env(), db.warren_env()].concat();
    let js = nats.jetstream().await;
    let commands = CommandService::start(js.clone(), &LogSettings::default())
        .await
        .expect("commands");
    let _projector = Warren::spawn(&["worker", "projector"], &env, dir.path(), "projector");

    for n in 0..10 {
        scenario::user_story(&commands, n).await;
    }
    caught_up(&js, db.url()).await;
    let live = scenario::dump(db.pool(), LIVE_SCHEMA).await;
    // Per story: three messages posted, one reply, and the entries of the cancelled and the
    // failed run.
    assert_eq!(rows_in(&live, "messages"), 60);
    let before = schema_oid(db.pool()).await;

    let mut replay = Warren::spawn(&["replay"], &env, dir.path(), "replay-1");
    assert!(
        replay.wait_success(Duration::from_secs(120)).await,
        "replay failed: {}",
        replay.log_text()
    );
    assert_ne!(
        schema_oid(db.pool()).await,
        before,
        "the rebuilt schema was swapped in"
    );
    caught_up(&js, db.url()).await;
    let rebuilt = scenario::dump(db.pool(), LIVE_SCHEMA).await;
    assert!(
        rebuilt == live,
        "the rebuild differs from the live read models (first: live, second: rebuilt):\n{}",
        scenario::differences(&live, &rebuilt)
    );

    // Again, with commands landing while the rebuild runs: the live projector must carry on from
    // the swapped-in checkpoint, so a final rebuild still matches.
    let mut replay = Warren::spawn(&["replay"], &env, dir.path(), "replay-2");
    for n in 10..20 {
        scenario::user_story(&commands, n).await;
    }
    assert!(
        replay.wait_success(Duration::from_secs(120)).await,
        "replay failed: {}",
        replay.log_text()
    );
    caught_up(&js, db.url()).await;
    let live = scenario::dump(db.pool(), LIVE_SCHEMA).await;
    assert_eq!(rows_in(&live, "users"), 20);

    let mut replay = Warren::spawn(&["replay"], &env, dir.path(), "replay-3");
    assert!(
        replay.wait_success(Duration::from_secs(120)).await,
        "replay failed: {}",
        replay.log_text()
    );
    caught_up(&js, db.url()).await;
    let rebuilt = scenario::dump(db.pool(), LIVE_SCHEMA).await;
    assert!(
        rebuilt == live,
        "the rebuild differs from the live read models (first: live, second: rebuilt):\n{}",
        scenario::differences(&live, &rebuilt)
    );
    let leftovers: Vec<(String,)> = sqlx::query_as(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'warren_rebuild%'",
    )
    .fetch_all(db.pool())
    .await
    .expect("schemas");
    assert!(
        leftovers.is_empty(),
        "no rebuild schema is left behind: {leftovers:?}"
    );
}
