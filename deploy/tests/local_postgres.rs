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

#[tokio::test]
async fn with_a_superuser_password_only_password_logins_get_in_and_the_reader_cannot_change_the_schema()
 {
    use warren_deploy::postgres::{Login, provision_roles};
    let dir = tempfile::tempdir().expect("tempdir");
    let pg = LocalPostgres::start(
        dir.path(),
        PostgresOptions {
            initdb_no_sync: true,
            superuser_password: Some("s3cret'pw".into()),
            ..PostgresOptions::default()
        },
    )
    .await
    .expect("start postgres");
    let no_password = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port());
    assert!(
        sqlx::PgConnection::connect(&no_password).await.is_err(),
        "trust is gone: a login without a password is refused"
    );
    pg.create_database("warren").await.expect("create database");
    let writer = Login {
        user: "warren_writer".into(),
        password: "w-pass".into(),
    };
    let reader = Login {
        user: "warren_reader".into(),
        password: "r-pass".into(),
    };
    provision_roles(&pg.url("postgres"), "warren", &writer, &reader)
        .await
        .expect("roles");
    // Again: idempotent.
    provision_roles(&pg.url("postgres"), "warren", &writer, &reader)
        .await
        .expect("roles again");

    let mut w = sqlx::PgConnection::connect(&pg.url_as("warren_writer", "w-pass", "warren"))
        .await
        .expect("writer logs in");
    sqlx::raw_sql(
        "CREATE SCHEMA warren; CREATE TABLE warren.users (id int); \
         INSERT INTO warren.users VALUES (1)",
    )
    .execute(&mut w)
    .await
    .expect("the writer owns its schema");
    let mut r = sqlx::PgConnection::connect(&pg.url_as("warren_reader", "r-pass", "warren"))
        .await
        .expect("reader logs in");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM warren.users")
        .fetch_one(&mut r)
        .await
        .expect("the reader reads what the writer made");
    assert_eq!(rows, 1);
    for statement in [
        "CREATE TABLE warren.evil (id int)",
        "CREATE TABLE public.evil (id int)",
        "CREATE SCHEMA evil",
        "DROP TABLE warren.users",
        "DELETE FROM warren.users",
        "INSERT INTO warren.users VALUES (2)",
        "ALTER TABLE warren.users ADD COLUMN x int",
    ] {
        let refused = sqlx::raw_sql(statement).execute(&mut r).await;
        assert!(refused.is_err(), "the reader could: {statement}");
    }
    for role in ["warren_writer", "warren_reader"] {
        let (superuser, createrole, createdb): (bool, bool, bool) = sqlx::query_as(
            "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = $1",
        )
        .bind(role)
        .fetch_one(&mut w)
        .await
        .expect("role");
        assert!(!superuser && !createrole && !createdb, "{role}");
    }
    assert!(
        sqlx::PgConnection::connect(&pg.url_as("warren_reader", "wrong", "warren"))
            .await
            .is_err(),
        "a wrong password is refused"
    );
}

#[tokio::test]
async fn a_cluster_made_without_passwords_requires_them_once_given_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trusting = PostgresOptions {
        initdb_no_sync: true,
        ..PostgresOptions::default()
    };
    let pg = LocalPostgres::start(dir.path(), trusting.clone())
        .await
        .expect("first start, trusting");
    let port = pg.port();
    drop(pg);
    let pg = LocalPostgres::start(
        dir.path(),
        PostgresOptions {
            port: Some(port),
            superuser_password: Some("now-a-password".into()),
            ..trusting
        },
    )
    .await
    .expect("second start, with a password");
    let no_password = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    assert!(sqlx::PgConnection::connect(&no_password).await.is_err());
    sqlx::PgConnection::connect(&pg.url("postgres"))
        .await
        .expect("the superuser logs in with its password");
}
