//! A newcomer's first hour: who administers a fresh platform, and a configuration changed
//! later (an admin address, open approval) reaching users who signed up before it.

mod common;
mod edge_support;

use edge_support::Platform;
use serde_json::json;

async fn verify(platform: &Platform, base: &str, email: &str) -> serde_json::Value {
    let mail = platform.request_link(email).await;
    let answer = platform
        .http
        .post(format!("{base}/api/v1/auth/verify-magic-link"))
        .json(&json!({ "token": edge_support::link_token(&mail) }))
        .send()
        .await
        .expect("verify");
    assert_eq!(answer.status().as_u16(), 200);
    answer.json().await.expect("json")
}

async fn me(platform: &Platform, base: &str, access: &str) -> serde_json::Value {
    platform
        .http
        .get(format!("{base}/api/v1/users/me"))
        .bearer_auth(access)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn the_first_person_to_sign_in_on_a_platform_without_admins_becomes_its_admin() {
    let platform = Platform::start(&[("WARREN_ADMIN_EMAILS", "")]).await;
    let first = verify(&platform, &platform.base, "founder@example.com").await;
    assert_eq!(first["became_admin"], true, "{first}");
    let access = first["access_token"].as_str().expect("token");
    let founder = me(&platform, &platform.base, access).await;
    assert_eq!(
        (founder["role"].as_str(), founder["status"].as_str()),
        (Some("admin"), Some("approved"))
    );

    let second = verify(&platform, &platform.base, "visitor@example.com").await;
    assert_eq!(second["became_admin"], false, "{second}");
    let token = second["access_token"].as_str().expect("token");
    let visitor = me(&platform, &platform.base, token).await;
    assert_eq!(visitor["status"], "pending");
    // Told who can let them in.
    let waiting = platform.get("/api/v1/agents", Some(token)).await;
    assert_eq!(waiting.status, 403);
    assert_eq!(waiting.body["error"]["details"]["admins"], 1, "{waiting:?}");
    // And the first admin approves them.
    let visitor_id = visitor["id"].as_str().expect("id");
    let approved = platform
        .post(
            &format!("/api/v1/admin/users/{visitor_id}/approve"),
            Some(access),
            json!({}),
        )
        .await;
    assert_eq!(approved.status, 200, "{approved:?}");
}

#[tokio::test]
async fn a_pending_user_on_a_platform_with_no_admin_is_told_how_one_is_made() {
    // An admin address is configured, but its owner never signed in: nobody can approve yet.
    let platform = Platform::start(&[]).await;
    let early = platform.sign_in("early@example.com").await;
    let waiting = platform.get("/api/v1/agents", Some(&early.access)).await;
    assert_eq!(waiting.status, 403);
    assert_eq!(waiting.body["error"]["details"]["admins"], 0);
    let message = waiting.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("no admin yet") && message.contains("WARREN_ADMIN_EMAILS"),
        "{message}"
    );
}

#[tokio::test]
async fn an_address_added_to_admin_emails_later_makes_its_user_admin_at_the_next_sign_in() {
    let platform = Platform::start(&[]).await;
    let before = platform.sign_in("late@example.com").await;
    assert_eq!(
        platform
            .get("/api/v1/users/me", Some(&before.access))
            .await
            .body["status"],
        "pending"
    );
    // The operator lists the address and restarts (here: another edge with the new setting).
    let (base, _edge) = platform
        .second_edge(&[("WARREN_ADMIN_EMAILS", "late@example.com")])
        .await;
    let again = verify(&platform, &base, "late@example.com").await;
    assert_eq!(again["became_admin"], true, "{again}");
    let after = me(
        &platform,
        &base,
        again["access_token"].as_str().expect("token"),
    )
    .await;
    assert_eq!(
        (after["role"].as_str(), after["status"].as_str()),
        (Some("admin"), Some("approved"))
    );
}

#[tokio::test]
async fn switching_approval_to_open_lets_a_pending_user_in_at_their_next_request() {
    let platform = Platform::start(&[]).await;
    let waiting = platform.sign_in("patient@example.com").await;
    assert_eq!(
        platform
            .get("/api/v1/agents", Some(&waiting.access))
            .await
            .status,
        403
    );
    let (base, _edge) = platform.second_edge(&[("WARREN_APPROVAL", "open")]).await;
    let listed = platform
        .http
        .get(format!("{base}/api/v1/agents"))
        .bearer_auth(&waiting.access)
        .send()
        .await
        .expect("agents");
    assert_eq!(listed.status().as_u16(), 200);
    assert_eq!(
        me(&platform, &base, &waiting.access).await["status"],
        "approved"
    );
}
