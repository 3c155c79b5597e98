//! `warren dev` with neither `WARREN_SMTP_URL` nor secrets configured: the sign-in link and code
//! go to its log, and the JWT secret and encryption key it generates are kept in the data dir
//! (owner-only), so sessions survive a restart.

mod common;

use common::{Warren, free_port, get_json};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use warren_testkit::{TestDb, TestNats, wait_for, wait_until};

async fn start(
    nats: &TestNats,
    db: &TestDb,
    data: &std::path::Path,
    name: &str,
) -> (Warren, String) {
    let port = free_port();
    let mut env = [nats.warren_env(), db.warren_env()].concat();
    env.extend([
        ("WARREN_DATA_DIR", data.display().to_string()),
        ("WARREN_HTTP_ADDR", format!("127.0.0.1:{port}")),
        ("WARREN_AGENT_BIN", "/nonexistent/warren-agent".into()),
    ]);
    let warren = Warren::spawn(&["dev"], &env, data.parent().expect("parent"), name);
    let base = format!("http://127.0.0.1:{port}");
    let health = format!("{base}/api/v1/health");
    wait_until(Duration::from_secs(60), || async {
        matches!(get_json(&health).await, Some((200, _)))
    })
    .await;
    (warren, base)
}

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .expect("post");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn me(base: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}/api/v1/users/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("get")
        .status()
        .as_u16()
}

#[tokio::test]
async fn dev_logs_the_sign_in_code_and_keeps_its_generated_secrets_across_restarts() {
    let nats = TestNats::start().await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (first, base) = start(&nats, &db, &data, "dev-1").await;

    let (status, _) = post(
        &base,
        "/api/v1/auth/login/email",
        json!({ "email": "dev@example.com" }),
    )
    .await;
    assert_eq!(status, 202);
    let code = wait_for(Duration::from_secs(10), || async {
        let log = first.log_text();
        let at = log.find("code: ")? + "code: ".len();
        let code: String = log[at..].chars().take(6).collect();
        code.chars().all(|c| c.is_ascii_digit()).then_some(code)
    })
    .await;
    // With no WARREN_FRONTEND_URL, the link points at the edge that sent it.
    assert!(
        first
            .log_text()
            .contains(&format!("{base}/auth/verify?token=")),
        "the link is logged too, on the edge's own address"
    );
    let (status, pair) = post(
        &base,
        "/api/v1/auth/verify-magic-link",
        json!({ "email": "dev@example.com", "code": code }),
    )
    .await;
    assert_eq!(status, 200, "{pair}");
    let access = pair["access_token"].as_str().expect("access").to_owned();
    assert_eq!(me(&base, &access).await, 200);

    for name in ["jwt_secret", "encryption_key"] {
        let path = data.join(name);
        let mode = std::fs::metadata(&path)
            .expect("generated")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{name} is readable by others: {mode:o}");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read").trim().len(),
            64
        );
    }

    drop(first);
    let (_second, base) = start(&nats, &db, &data, "dev-2").await;
    assert_eq!(
        me(&base, &access).await,
        200,
        "the same JWT secret after a restart"
    );
    let (status, rotated) = post(
        &base,
        "/api/v1/auth/refresh",
        json!({ "refresh_token": pair["refresh_token"] }),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
}
