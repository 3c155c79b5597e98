//! `warren dev` from nothing: it starts its own nats-server and PostgreSQL under the data dir and
//! serves `/api/v1/health` within 30 seconds; both admit only Warren's roles, with credentials it
//! generated into the data dir, owner-only.

mod common;

use common::{Warren, free_port, get_json};
use std::time::{Duration, Instant};

#[tokio::test]
async fn warren_dev_serves_health_within_30_seconds_of_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = free_port();
    let started = Instant::now();
    let warren = Warren::spawn(
        &["dev"],
        &[
            (
                "WARREN_DATA_DIR",
                dir.path().join("data").display().to_string(),
            ),
            ("WARREN_HTTP_ADDR", format!("127.0.0.1:{http}")),
        ],
        dir.path(),
        "dev",
    );
    let url = format!("http://127.0.0.1:{http}/api/v1/health");
    let (status, body) = match tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some((200, body)) = get_json(&url).await {
                return (200, body);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    {
        Ok(answer) => answer,
        Err(_) => panic!("no healthy answer within 30 s; log:\n{}", warren.log_text()),
    };
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["nats"], "ok");
    assert_eq!(body["postgres"], "ok");
    let projections: Vec<&str> = body["projections"]
        .as_array()
        .expect("projections")
        .iter()
        .filter_map(|p| p["projection"].as_str())
        .collect();
    assert_eq!(
        projections,
        [
            "users",
            "agents",
            "conversations",
            "usage_agents",
            "usage_conversations"
        ]
    );
    assert!(
        dir.path().join("data/nats").is_dir(),
        "NATS store under the data dir"
    );
    assert!(
        dir.path().join("data/pg").is_dir(),
        "Postgres cluster under the data dir"
    );
    eprintln!("healthy after {:?}", started.elapsed());
}

#[tokio::test]
async fn the_local_nats_and_postgres_admit_only_warrens_roles_each_with_its_own_rights() {
    use sqlx::Connection as _;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let (http, nats_port, pg_port) = (free_port(), free_port(), free_port());
    let warren = Warren::spawn(
        &["dev"],
        &[
            (
                "WARREN_DATA_DIR",
                dir.path().join("data").display().to_string(),
            ),
            ("WARREN_HTTP_ADDR", format!("127.0.0.1:{http}")),
            ("WARREN_DEV_NATS_PORT", nats_port.to_string()),
            ("WARREN_DEV_POSTGRES_PORT", pg_port.to_string()),
        ],
        dir.path(),
        "dev",
    );
    let health = format!("http://127.0.0.1:{http}/api/v1/health");
    warren_testkit::wait_until(Duration::from_secs(60), || async {
        matches!(get_json(&health).await, Some((200, _)))
    })
    .await;
    let credentials = dir.path().join("data/credentials");
    for file in [
        "nats/admin.nk",
        "nats/edge.nk",
        "nats/projector.nk",
        "postgres/postgres.password",
        "postgres/warren_writer.password",
        "postgres/warren_reader.password",
    ] {
        let mode = std::fs::metadata(credentials.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}; log:\n{}", warren.log_text()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
        // Nor does the log hold it (the superuser's password was in the "postgres ready" line).
        let secret = std::fs::read_to_string(credentials.join(file)).expect("the secret");
        assert!(
            !warren.log_text().contains(secret.trim()),
            "the log holds {file}"
        );
    }

    // NATS: no key, no connection; the projector's key cannot append a commit.
    let nats_url = format!("nats://127.0.0.1:{nats_port}");
    assert!(
        async_nats::ConnectOptions::new()
            .max_reconnects(Some(1))
            .connect(&nats_url)
            .await
            .is_err(),
        "connected to NATS without a key"
    );
    let keys = warren_deploy::NatsKeys::open(credentials.join("nats"));
    let projector =
        warren_deploy::nats_auth::connect(&nats_url, Some(&keys), warren_deploy::Role::Projector)
            .await
            .expect("the projector connects");
    let js = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(projector);
    let forged = async {
        js.publish("user.00000000-0000-0000-0000-000000000001", "[]".into())
            .await?
            .await
    }
    .await;
    assert!(forged.is_err(), "the projector appended a commit");

    // PostgreSQL: no password, no login; the edge's (reader) login cannot change the schema.
    let no_password = format!("postgres://postgres@127.0.0.1:{pg_port}/warren");
    assert!(sqlx::PgConnection::connect(&no_password).await.is_err());
    let reader_password =
        std::fs::read_to_string(credentials.join("postgres/warren_reader.password"))
            .expect("password");
    let mut reader = sqlx::PgConnection::connect(&format!(
        "postgres://warren_reader:{}@127.0.0.1:{pg_port}/warren",
        reader_password.trim()
    ))
    .await
    .expect("the reader logs in");
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM warren.users")
        .fetch_one(&mut reader)
        .await
        .expect("the reader reads");
    assert_eq!(users, 0);
    for statement in [
        "CREATE TABLE warren.evil (id int)",
        "DROP TABLE warren.users",
        "DELETE FROM warren.checkpoints",
    ] {
        assert!(
            sqlx::raw_sql(statement).execute(&mut reader).await.is_err(),
            "the reader could: {statement}"
        );
    }
}

#[tokio::test]
async fn unknown_routes_get_the_json_error_envelope() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = free_port();
    let warren = Warren::spawn(
        &["dev"],
        &[
            (
                "WARREN_DATA_DIR",
                dir.path().join("data").display().to_string(),
            ),
            ("WARREN_HTTP_ADDR", format!("127.0.0.1:{http}")),
        ],
        dir.path(),
        "dev",
    );
    let base = format!("http://127.0.0.1:{http}");
    warren_testkit::wait_until(Duration::from_secs(60), || async {
        matches!(
            get_json(&format!("{base}/api/v1/health")).await,
            Some((200, _))
        )
    })
    .await;
    let (status, body) = get_json(&format!("{base}/api/v1/nope"))
        .await
        .expect("answer");
    assert_eq!(status, 404, "log: {}", warren.log_text());
    assert_eq!(body["error"]["code"], "not_found");
}
