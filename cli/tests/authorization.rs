//! The authorization matrix: every route, called by nobody, a pending guest, user A (the owner
//! of the resources in the paths), user B and an admin, each with its expected status. B never
//! sees A's agents, keys or usage; another user's resource is 404, never 403.

mod common;
mod edge_support;

use edge_support::{Platform, Session};
use serde_json::{Value, json};

/// Expected statuses, in the order: anonymous, guest, A, B, admin.
type Expect = [u16; 5];

struct Row {
    method: &'static str,
    path: &'static str,
    body: Option<Value>,
    expect: Expect,
    /// The status A's agent must have settled at before this row runs (lifecycle rows).
    settle: Option<&'static str>,
}

fn row(method: &'static str, path: &'static str, body: Option<Value>, expect: Expect) -> Row {
    Row {
        method,
        path,
        body,
        expect,
        settle: None,
    }
}

/// A row that runs once A's agent is `status` (its failed deployments settle in their time).
fn settled(status: &'static str, row: Row) -> Row {
    Row {
        settle: Some(status),
        ..row
    }
}

#[tokio::test]
async fn every_route_answers_each_kind_of_caller_with_its_expected_status() {
    let platform = Platform::start(&[
        ("WARREN_ADMIN_EMAILS", "admin@example.com"),
        ("WARREN_TIER_FREE_MAX_AGENTS", "10"),
    ])
    .await;
    let admin = platform.sign_in("admin@example.com").await;
    let guest = platform.sign_in("guest@example.com").await;
    let a = platform.sign_in("a@example.com").await;
    let b = platform.sign_in("b@example.com").await;
    let pending = platform.sign_in("pending@example.com").await;
    let id_of = |session: Session| {
        let platform = &platform;
        async move {
            platform
                .get("/api/v1/users/me", Some(&session.access))
                .await
                .body["id"]
                .as_str()
                .expect("id")
                .to_owned()
        }
    };
    let (a_id, b_id, guest_id, pending_id) = (
        id_of(a.clone()).await,
        id_of(b.clone()).await,
        id_of(guest.clone()).await,
        id_of(pending.clone()).await,
    );
    for id in [&a_id, &b_id] {
        let approved = platform
            .call(
                "POST",
                &format!("/api/v1/admin/users/{id}/approve"),
                Some(&admin.access),
                None,
            )
            .await;
        assert_eq!(approved.status, 200);
    }
    let agent = platform
        .post(
            "/api/v1/agents",
            Some(&a.access),
            json!({ "name": "A's agent" }),
        )
        .await;
    assert_eq!(agent.status, 201);
    let agent_id = agent.body["id"].as_str().expect("id").to_owned();
    let key = platform
        .post(
            "/api/v1/users/me/api-keys",
            Some(&a.access),
            json!({ "provider": "openai", "api_key": "sk-a-0000000000000000000" }),
        )
        .await;
    let key_id = key.body["id"].as_str().expect("id").to_owned();
    let connection = platform
        .get("/api/v1/users/me/connections", Some(&a.access))
        .await
        .body[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let b_agent = platform
        .post(
            "/api/v1/agents",
            Some(&b.access),
            json!({ "name": "B's agent" }),
        )
        .await;
    assert_eq!(b_agent.status, 201);
    let extra = platform
        .post(
            "/api/v1/agents",
            Some(&a.access),
            json!({ "name": "A's second" }),
        )
        .await;
    assert_eq!(extra.status, 201);
    // Usage is per user: A has two agents, B one.
    let a_usage = platform.get("/api/v1/usage", Some(&a.access)).await;
    let b_usage = platform.get("/api/v1/usage", Some(&b.access)).await;
    assert_eq!(a_usage.body["agents"]["used"], 2);
    assert_eq!(b_usage.body["agents"]["used"], 1);
    assert_eq!(b_usage.body["deployments"], 1, "{b_usage:?}");

    // Without an agent runtime the deployer fails A's deployment; then repair is allowed (and
    // redeploy, which is for running agents, is not).
    warren_testkit::wait_until(std::time::Duration::from_secs(20), || async {
        platform
            .get(&format!("/api/v1/agents/{agent_id}"), Some(&a.access))
            .await
            .body["status"]
            == "failed"
    })
    .await;
    // A talks to the failed agent once: the message is recorded, its run fails, and A has a
    // conversation.
    let posted = platform
        .http
        .post(format!("{}/api/v1/chat/{agent_id}", platform.base))
        .bearer_auth(&a.access)
        .json(&json!({ "message": "hello?" }))
        .send()
        .await
        .expect("chat");
    assert_eq!(posted.status(), 200);
    let stream = posted.text().await.expect("the run's stream ends");
    assert!(stream.contains(r#""code":"agent_unavailable""#), "{stream}");
    let conversation = platform
        .get("/api/v1/conversations", Some(&a.access))
        .await
        .body[0]["id"]
        .as_str()
        .expect("A's conversation")
        .to_owned();
    let rows = vec![
        row("GET", "/api/v1/health", None, [200, 200, 200, 200, 200]),
        row(
            "GET",
            "/api/v1/openapi.json",
            None,
            [200, 200, 200, 200, 200],
        ),
        row(
            "POST",
            "/api/v1/auth/login/email",
            Some(json!({ "email": "someone@example.com" })),
            [202, 202, 202, 202, 202],
        ),
        row(
            "POST",
            "/api/v1/auth/verify-magic-link",
            Some(json!({ "token": "bogus" })),
            [401, 401, 401, 401, 401],
        ),
        row(
            "GET",
            "/api/v1/auth/providers",
            None,
            [200, 200, 200, 200, 200],
        ),
        row(
            "POST",
            "/api/v1/auth/wallet/challenge",
            Some(json!({ "address": "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23" })),
            [200, 200, 200, 200, 200],
        ),
        row(
            "POST",
            "/api/v1/auth/wallet/verify",
            Some(json!({ "message": "bogus", "signature": "0x00" })),
            [422, 422, 422, 422, 422],
        ),
        row(
            "POST",
            "/api/v1/auth/refresh",
            Some(json!({ "refresh_token": "bogus" })),
            [401, 401, 401, 401, 401],
        ),
        row("GET", "/api/v1/users/me", None, [401, 200, 200, 200, 200]),
        row(
            "PATCH",
            "/api/v1/users/me",
            Some(json!({})),
            [401, 200, 200, 200, 200],
        ),
        row(
            "GET",
            "/api/v1/users/me/connections",
            None,
            [401, 200, 200, 200, 200],
        ),
        row(
            "POST",
            "/api/v1/users/me/connections/telegram",
            Some(json!({})),
            [401, 201, 201, 201, 201],
        ),
        row(
            "POST",
            "/api/v1/users/me/connections/wallet",
            Some(json!({ "message": "bogus", "signature": "0x00" })),
            [401, 422, 422, 422, 422],
        ),
        row(
            "POST",
            "/api/v1/auth/device",
            Some(json!({})),
            [201, 201, 201, 201, 201],
        ),
        row(
            "POST",
            "/api/v1/auth/device/approve",
            Some(json!({ "user_code": "BCDF-GHJK" })),
            [401, 404, 404, 404, 404],
        ),
        row(
            "POST",
            "/api/v1/auth/device/token",
            Some(json!({ "device_code": "bogus" })),
            [400, 400, 400, 400, 400],
        ),
        // No OAuth client configured: Google and GitHub are not offered to anyone.
        row(
            "GET",
            "/api/v1/auth/oauth/google",
            None,
            [404, 404, 404, 404, 404],
        ),
        row(
            "GET",
            "/api/v1/auth/oauth/github/callback?code=c&state=s",
            None,
            [404, 404, 404, 404, 404],
        ),
        row(
            "POST",
            "/api/v1/auth/oauth/exchange",
            Some(json!({ "handover": "bogus" })),
            [401, 401, 401, 401, 401],
        ),
        row(
            "POST",
            "/api/v1/users/me/connections/google",
            Some(json!({})),
            [401, 404, 404, 404, 404],
        ),
        row(
            "POST",
            "/api/v1/users/me/connections/github",
            Some(json!({})),
            [401, 404, 404, 404, 404],
        ),
        // No webhook secret configured: the route is not there for anyone.
        row(
            "POST",
            "/api/v1/telegram/webhook",
            Some(json!({ "update_id": 1 })),
            [404, 404, 404, 404, 404],
        ),
        row(
            "DELETE",
            "/api/v1/users/me/connections/{conn}",
            None,
            [401, 404, 409, 404, 404],
        ),
        row(
            "GET",
            "/api/v1/users/me/api-keys",
            None,
            [401, 200, 200, 200, 200],
        ),
        row(
            "POST",
            "/api/v1/users/me/api-keys",
            Some(json!({ "provider": "anthropic", "api_key": "sk-x-00000000000000000" })),
            [401, 403, 201, 201, 201],
        ),
        row("GET", "/api/v1/agents", None, [401, 403, 200, 200, 200]),
        row(
            "POST",
            "/api/v1/agents",
            Some(json!({ "name": "another" })),
            [401, 403, 201, 201, 201],
        ),
        row(
            "GET",
            "/api/v1/agents/{agent}",
            None,
            [401, 403, 200, 404, 404],
        ),
        row(
            "PATCH",
            "/api/v1/agents/{agent}",
            Some(json!({ "name": "renamed" })),
            [401, 403, 200, 404, 404],
        ),
        row(
            "GET",
            "/api/v1/agents/{agent}/status",
            None,
            [401, 403, 200, 404, 404],
        ),
        row(
            "GET",
            "/api/v1/agents/{agent}/health",
            None,
            [401, 403, 200, 404, 404],
        ),
        // A's agent failed: it cannot be restarted or started; it can be redeployed, stopped
        // (once failed again) and then repaired.
        row(
            "POST",
            "/api/v1/agents/{agent}/restart",
            None,
            [401, 403, 409, 404, 404],
        ),
        row(
            "POST",
            "/api/v1/agents/{agent}/start",
            None,
            [401, 403, 409, 404, 404],
        ),
        settled(
            "failed",
            row(
                "POST",
                "/api/v1/agents/{agent}/redeploy",
                None,
                [401, 403, 202, 404, 404],
            ),
        ),
        settled(
            "failed",
            row(
                "POST",
                "/api/v1/agents/{agent}/stop",
                None,
                [401, 403, 202, 404, 404],
            ),
        ),
        settled(
            "stopped",
            row(
                "POST",
                "/api/v1/agents/{agent}/repair",
                None,
                [401, 403, 202, 404, 404],
            ),
        ),
        row(
            "POST",
            "/api/v1/chat/{agent}",
            Some(json!({ "message": " " })),
            [401, 403, 422, 404, 404],
        ),
        row(
            "GET",
            "/api/v1/chat/{agent}/pending",
            None,
            [401, 403, 409, 404, 404],
        ),
        row(
            "GET",
            "/api/v1/files/{agent}/notes.txt",
            None,
            [401, 403, 409, 404, 404],
        ),
        row(
            "PUT",
            "/api/v1/files/{agent}/notes.txt",
            Some(json!({ "not": "JSON to the runtime, just bytes" })),
            [401, 403, 409, 404, 404],
        ),
        row(
            "POST",
            "/api/v1/agents/{agent}/exec",
            Some(json!({ "command": "ls" })),
            [401, 403, 409, 404, 404],
        ),
        row(
            "GET",
            "/api/v1/conversations",
            None,
            [401, 200, 200, 200, 200],
        ),
        row(
            "GET",
            "/api/v1/conversations/{conversation}/messages",
            None,
            [401, 404, 200, 404, 404],
        ),
        row(
            "GET",
            "/api/v1/conversations/{conversation}/events",
            None,
            [401, 404, 200, 404, 404],
        ),
        row("GET", "/api/v1/events", None, [401, 200, 200, 200, 200]),
        // The runtime API takes agent tokens only: no user's token opens it.
        row(
            "GET",
            "/api/v1/runtime/agents/{agent}/sessions",
            None,
            [401, 401, 401, 401, 401],
        ),
        row(
            "GET",
            "/api/v1/runtime/agents/{agent}/sessions/{conversation}",
            None,
            [401, 401, 401, 401, 401],
        ),
        // Nor the model proxy (ADR 23): a user's token never spends an agent's model calls.
        row(
            "POST",
            "/api/v1/runtime/agents/{agent}/model/openai/chat/completions",
            Some(json!({ "model": "m", "messages": [] })),
            [401, 401, 401, 401, 401],
        ),
        row(
            "POST",
            "/api/v1/runtime/agents/{agent}/model/anthropic/messages",
            Some(json!({ "model": "m", "max_tokens": 1, "messages": [] })),
            [401, 401, 401, 401, 401],
        ),
        row(
            "POST",
            "/api/v1/conversations/{conversation}/cancel",
            Some(json!({})),
            [401, 403, 409, 404, 404],
        ),
        row(
            "DELETE",
            "/api/v1/chat/{agent}",
            None,
            [401, 403, 200, 404, 404],
        ),
        row("GET", "/api/v1/usage", None, [401, 200, 200, 200, 200]),
        row(
            "GET",
            "/api/v1/usage/history",
            None,
            [401, 200, 200, 200, 200],
        ),
        row(
            "GET",
            "/api/v1/admin/users?status=all",
            None,
            [401, 403, 403, 403, 200],
        ),
        row(
            "PATCH",
            "/api/v1/admin/users/{pending}",
            Some(json!({ "tier": "pro" })),
            [401, 403, 403, 403, 200],
        ),
        row(
            "POST",
            "/api/v1/admin/users/{pending}/approve",
            None,
            [401, 403, 403, 403, 200],
        ),
        row(
            "POST",
            "/api/v1/admin/users/{pending}/revoke",
            Some(json!({})),
            [401, 403, 403, 403, 200],
        ),
        row(
            "POST",
            "/api/v1/admin/users/{guest}/reject",
            Some(json!({})),
            [401, 403, 403, 403, 200],
        ),
        row(
            "DELETE",
            "/api/v1/users/me/api-keys/{key}",
            None,
            [401, 404, 204, 404, 404],
        ),
        row(
            "DELETE",
            "/api/v1/agents/{agent}",
            None,
            [401, 403, 204, 404, 404],
        ),
        row(
            "POST",
            "/api/v1/auth/logout",
            None,
            [401, 204, 204, 204, 204],
        ),
        row(
            "POST",
            "/api/v1/auth/logout/all",
            None,
            [401, 401, 401, 401, 401],
        ),
    ];
    // A goes last, so a resource of A's is still there when the others try it.
    let callers: [(usize, &str, Option<&Session>); 5] = [
        (0, "anonymous", None),
        (1, "guest", Some(&guest)),
        (3, "B", Some(&b)),
        (4, "admin", Some(&admin)),
        (2, "A", Some(&a)),
    ];
    let mut failures = vec![];
    for row in &rows {
        if let Some(status) = row.settle {
            warren_testkit::wait_until(std::time::Duration::from_secs(20), || async {
                platform
                    .get(&format!("/api/v1/agents/{agent_id}"), Some(&a.access))
                    .await
                    .body["status"]
                    == status
            })
            .await;
        }
        let path = row
            .path
            .replace("{agent}", &agent_id)
            .replace("{key}", &key_id)
            .replace("{conn}", &connection)
            .replace("{pending}", &pending_id)
            .replace("{guest}", &guest_id)
            .replace("{conversation}", &conversation);
        for (column, who, session) in callers {
            if path.ends_with("/events") {
                // A stream that does not end: only its status counts.
                let mut request = platform.http.get(format!("{}{path}", platform.base));
                if let Some(session) = session {
                    request = request.bearer_auth(&session.access);
                }
                let status = request.send().await.expect("request").status().as_u16();
                if status != row.expect[column] {
                    failures.push(format!(
                        "{} {} as {who}: expected {}, got {status}",
                        row.method, row.path, row.expect[column]
                    ));
                }
                continue;
            }
            let answer = platform
                .call(
                    row.method,
                    &path,
                    session.map(|s| s.access.as_str()),
                    row.body.clone(),
                )
                .await;
            if answer.status != row.expect[column] {
                failures.push(format!(
                    "{} {} as {who}: expected {}, got {} {}",
                    row.method, row.path, row.expect[column], answer.status, answer.body
                ));
            }
            // B never sees A's things in B's own listings.
            if who == "B" && row.method == "GET" {
                let text = answer.body.to_string();
                assert!(
                    !text.contains(&agent_id)
                        && !text.contains(&key_id)
                        && !text.contains(&conversation),
                    "{} leaks A's data to B: {text}",
                    row.path
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "authorization matrix mismatches:\n{}",
        failures.join("\n")
    );
}
