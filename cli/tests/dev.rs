//! `warren dev` from nothing: it starts its own nats-server and PostgreSQL under the data dir and
//! serves `/api/v1/health` within 30 seconds.

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
    assert_eq!(projections, ["users", "agents", "conversations"]);
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
