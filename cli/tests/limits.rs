//! Request rate limits and CORS over HTTP against the real binary.

mod common;
mod edge_support;

use edge_support::Platform;
use serde_json::json;

#[tokio::test]
async fn sign_in_requests_past_the_per_address_and_per_ip_limits_get_429_with_retry_after() {
    let platform = Platform::start(&[
        ("WARREN_RATE_LOGIN_PER_EMAIL_PER_HOUR", "2"),
        ("WARREN_RATE_AUTH_PER_IP_PER_MINUTE", "5"),
    ])
    .await;
    common::with_a_minute_window_left(std::time::Duration::from_secs(30)).await;
    let login = |email: &'static str| {
        platform.post("/api/v1/auth/login/email", None, json!({ "email": email }))
    };
    assert_eq!(login("same@example.com").await.status, 202);
    assert_eq!(login("same@example.com").await.status, 202);
    let third = login("same@example.com").await;
    assert_eq!(third.status, 429, "{third:?}");
    assert_eq!(third.body["error"]["code"], "rate_limited");
    assert_eq!(third.body["error"]["details"]["scope"], "login_per_email");
    assert!(
        third
            .retry_after
            .is_some_and(|secs| secs > 0 && secs <= 3601),
        "{third:?}"
    );
    assert_eq!(
        platform.smtp.mails_to("same@example.com").len(),
        2,
        "no mail past the limit"
    );

    assert_eq!(login("other1@example.com").await.status, 202);
    assert_eq!(login("other2@example.com").await.status, 202);
    let sixth = login("other3@example.com").await;
    assert_eq!(sixth.status, 429);
    assert_eq!(sixth.body["error"]["details"]["scope"], "auth_per_ip");
    assert!(sixth.retry_after.is_some_and(|secs| secs <= 61));
    let verify = platform
        .post(
            "/api/v1/auth/verify-magic-link",
            None,
            json!({ "token": "x" }),
        )
        .await;
    assert_eq!(verify.status, 429, "verify shares the per-IP auth limit");
}

#[tokio::test]
async fn writes_past_the_per_user_limit_get_429_while_reads_go_on() {
    let platform = Platform::start(&[("WARREN_RATE_WRITES_PER_USER_PER_MINUTE", "3")]).await;
    common::with_a_minute_window_left(std::time::Duration::from_secs(30)).await;
    let me = platform.sign_in("busy@example.com").await;
    for _ in 0..3 {
        let patched = platform
            .patch("/api/v1/users/me", Some(&me.access), json!({}))
            .await;
        assert_eq!(patched.status, 200);
    }
    let fourth = platform
        .patch("/api/v1/users/me", Some(&me.access), json!({}))
        .await;
    assert_eq!(fourth.status, 429);
    assert_eq!(fourth.body["error"]["details"]["scope"], "writes_per_user");
    assert!(fourth.retry_after.is_some());
    assert_eq!(
        platform
            .get("/api/v1/users/me", Some(&me.access))
            .await
            .status,
        200
    );
    let other = platform.sign_in("calm@example.com").await;
    let theirs = platform
        .patch("/api/v1/users/me", Some(&other.access), json!({}))
        .await;
    assert_eq!(theirs.status, 200, "limits are per user");
}

#[tokio::test]
async fn cors_answers_the_configured_origins_only() {
    let platform = Platform::start(&[(
        "WARREN_CORS_ORIGINS",
        "http://app.test, http://localhost:19006",
    )])
    .await;
    let preflight = |origin: &'static str| {
        platform
            .http
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/api/v1/agents", platform.base),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let allowed = preflight("http://app.test").await.expect("preflight");
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://app.test"
    );
    let methods = allowed.headers()["access-control-allow-methods"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        methods.contains("POST") && methods.contains("PATCH"),
        "{methods}"
    );
    let denied = preflight("http://evil.test").await.expect("preflight");
    assert!(
        denied
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let simple = platform
        .http
        .get(format!("{}/api/v1/health", platform.base))
        .header("origin", "http://localhost:19006")
        .send()
        .await
        .expect("get");
    assert_eq!(
        simple.headers()["access-control-allow-origin"],
        "http://localhost:19006"
    );
}

#[tokio::test]
async fn writes_past_the_per_ip_limit_get_429() {
    // Sign-in is two writes (login, verify); then two profile updates fill the window.
    let platform = Platform::start(&[("WARREN_RATE_WRITES_PER_IP_PER_MINUTE", "4")]).await;
    common::with_a_minute_window_left(std::time::Duration::from_secs(30)).await;
    let me = platform.sign_in("ip@example.com").await;
    for _ in 0..2 {
        assert_eq!(
            platform
                .patch("/api/v1/users/me", Some(&me.access), json!({}))
                .await
                .status,
            200
        );
    }
    let fifth = platform
        .patch("/api/v1/users/me", Some(&me.access), json!({}))
        .await;
    assert_eq!(fifth.status, 429, "{fifth:?}");
    assert_eq!(fifth.body["error"]["details"]["scope"], "writes_per_ip");
    assert!(fifth.retry_after.is_some());
    assert_eq!(
        platform
            .get("/api/v1/users/me", Some(&me.access))
            .await
            .status,
        200,
        "reads are not writes"
    );
}
