//! `LocalPostgres` from an empty directory: initdb, start, databases, crash and restart.

use std::time::Instant;

use sqlx::Connection as _;
use warren_deploy::{LocalPostgres, PostgresOptions};

#[tokio::test]
async fn an_empty_directory_becomes_a_running_server_that_survives_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let mut pg = LocalPostgres::start(
        dir.path(),
        PostgresOptions {
            initdb_no_sync: true,
            settings: vec![("max_connections".into(), "20".into())],
            ..PostgresOptions::default()
        },
    )
    .await
    .expect("start postgres");
    eprintln!("initdb + start took {:?}", started.elapsed());
    assert!(dir.path().join("data/PG_VERSION").exists());

    pg.create_database("warren").await.expect("create database");
    pg.create_database("warren").await.expect("create it again");
    let url = pg.url("warren");
    assert!(url.ends_with("/warren"), "{url}");

    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    let max: String = sqlx::query_scalar("SHOW max_connections")
        .fetch_one(&mut conn)
        .await
        .expect("show");
    assert_eq!(max, "20");
    sqlx::raw_sql("CREATE TABLE facts (id int); INSERT INTO facts VALUES (1), (2)")
        .execute(&mut conn)
        .await
        .expect("write");
    drop(conn);

    pg.kill().await.expect("kill");
    assert_eq!(pg.pid(), None);
    let restarted = Instant::now();
    pg.restart().await.expect("restart");
    eprintln!("restart after kill took {:?}", restarted.elapsed());

    let mut conn = sqlx::PgConnection::connect(&url).await.expect("reconnect");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM facts")
        .fetch_one(&mut conn)
        .await
        .expect("read");
    assert_eq!(count, 2);
    conn.close().await.expect("close");

    pg.stop().await.expect("stop");
    assert_eq!(pg.pid(), None);
}

#[tokio::test]
async fn a_second_start_on_the_same_directory_reuses_the_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = PostgresOptions {
        initdb_no_sync: true,
        ..PostgresOptions::default()
    };
    let pg = LocalPostgres::start(dir.path(), options.clone())
        .await
        .expect("first start");
    pg.create_database("kept").await.expect("create database");
    drop(pg);

    let pg = LocalPostgres::start(dir.path(), options)
        .await
        .expect("second start");
    let conn = sqlx::PgConnection::connect(&pg.url("kept"))
        .await
        .expect("database is still there");
    conn.close().await.expect("close");
}
