//! The router really serves every operation of the OpenAPI document: each is sent, unauthenticated
//! and with placeholder path parameters, through the real router (real NATS and PostgreSQL
//! behind it), and none may fall through to "no such route" or "method not allowed".

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use tower::ServiceExt;
use utoipa::OpenApi;
use warren_commands::CommandService;
use warren_edge::mail::Mailer;
use warren_edge::openapi::ApiDoc;
use warren_edge::{AppState, EdgeSettings};
use warren_projections::schema::{self, LIVE_SCHEMA};
use warren_testkit::{TestDb, TestNats};

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let nats = TestNats::start().await;
    let db = TestDb::create().await;
    let commands = CommandService::start(nats.jetstream().await, &Default::default())
        .await
        .expect("command service");
    let pool = schema::open(db.url(), LIVE_SCHEMA, 2)
        .await
        .expect("read models");
    let state = AppState::build(
        commands,
        pool,
        nats.client().await,
        EdgeSettings::for_tests(),
        Mailer::Log,
    )
    .await
    .expect("state");
    let router = warren_edge::router(state);

    let doc = serde_json::to_value(ApiDoc::openapi()).expect("json");
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("item").keys() {
            let uri = path
                .replace("{id}", "00000000-0000-0000-0000-000000000000")
                .replace("{path}", "notes/today.md");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let request = Request::builder()
                .method(method.clone())
                .uri(&uri)
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .expect("request");
            let response = router.clone().oneshot(request).await.expect("response");
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("body");
            let text = String::from_utf8_lossy(&body);
            assert_ne!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {uri}: {text}"
            );
            assert!(
                !(status == StatusCode::NOT_FOUND && text.contains("no such route")),
                "{method} {uri} is documented but not routed"
            );
            assert!(!status.is_server_error(), "{method} {uri}: {status} {text}");
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} operations");

    // And the fallback really says "no such route" for what is not routed.
    let response = router
        .oneshot(
            Request::get("/api/v1/nope")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}
