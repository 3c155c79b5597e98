//! Agents over HTTP against the real binary: create, list, patch (a prompt change redeploys),
//! delete, deployment status, repair, redeploy and health, with the deployer of `warren dev`
//! failing each deployment at `installing` (the tests give it no agent runtime), and the
//! per-tier agent quota.

mod common;
mod edge_support;

use edge_support::{Answer, Platform};
use serde_json::{Value, json};
use std::time::Duration;
use warren_testkit::wait_for;

#[tokio::test]
async fn an_approved_user_creates_lists_patches_repairs_and_deletes_an_agent() {
    let platform = Platform::start(&[
        ("WARREN_APPROVAL", "open"),
        ("WARREN_DEFAULT_MODEL", "house-model"),
        ("WARREN_TIER_FREE_MAX_AGENTS", "5"),
    ])
    .await;
    let me = platform.sign_in("maker@example.com").await;
    let token = Some(me.access.as_str());

    let created = platform
        .post(
            "/api/v1/agents",
            token,
            json!({ "name": "Helper", "system_prompt": "Be brief." }),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let agent = created.body;
    let id = agent["id"].as_str().expect("id").to_owned();
    assert_eq!(agent["model"], "house-model");
    assert_eq!(agent["runtime"], "warren");
    assert_eq!(agent["system_prompt"], "Be brief.");
    assert!(agent["deployment_id"].is_string());
    let listed = platform.get("/api/v1/agents", token).await;
    assert_eq!(listed.body.as_array().expect("list").len(), 1);
    assert_eq!(
        platform
            .get(&format!("/api/v1/agents/{id}"), token)
            .await
            .body["name"],
        "Helper"
    );

    let blank = platform
        .post("/api/v1/agents", token, json!({ "name": "  " }))
        .await;
    assert_eq!(blank.status, 422);
    assert_eq!(blank.body["error"]["details"]["fields"][0]["field"], "name");

    // The deployer in `warren dev` works through the steps and, with no runtime to install,
    // fails at `installing`: the status shows the progress and the error.
    let progress = failed(&platform, token, &id, 1).await;
    assert_eq!(progress.body["current_step"], "installing");
    assert_eq!(progress.body["step_number"], 3);
    assert_eq!(progress.body["total_steps"], 6);
    assert!(progress.body["last_error"].is_string(), "{progress:?}");
    assert_eq!(
        history(&progress.body),
        ["requested", "step_completed", "step_completed", "failed"]
    );
    let health = platform
        .get(&format!("/api/v1/agents/{id}/health"), token)
        .await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body["healthy"], false);
    assert_eq!(health.body["runtime_status"], Value::Null);

    // A failed agent may be redeployed, or repaired: each is a new attempt.
    let redeploy = platform
        .call(
            "POST",
            &format!("/api/v1/agents/{id}/redeploy"),
            token,
            None,
        )
        .await;
    assert_eq!(redeploy.status, 202, "{redeploy:?}");
    assert_ne!(
        redeploy.body["deployment_id"], agent["deployment_id"],
        "a new attempt"
    );
    failed(&platform, token, &id, 2).await;
    let repaired = platform
        .call("POST", &format!("/api/v1/agents/{id}/repair"), token, None)
        .await;
    assert_eq!(repaired.status, 202, "{repaired:?}");
    assert_ne!(
        repaired.body["deployment_id"], redeploy.body["deployment_id"],
        "a new attempt"
    );
    let progress = failed(&platform, token, &id, 3).await;
    assert!(history(&progress.body).contains(&"repair_requested".to_owned()));

    // A name change alone does not redeploy; a prompt change does.
    let renamed = platform
        .patch(
            &format!("/api/v1/agents/{id}"),
            token,
            json!({ "name": "Helper 2" }),
        )
        .await;
    assert_eq!(renamed.status, 200, "{renamed:?}");
    assert_eq!(renamed.body["name"], "Helper 2");
    let before = history(
        &platform
            .get(&format!("/api/v1/agents/{id}/status"), token)
            .await
            .body,
    );
    // The one manual redeploy above, no more.
    let redeploys = |history: &[String]| {
        history
            .iter()
            .filter(|fact| *fact == "redeploy_requested")
            .count()
    };
    assert_eq!(redeploys(&before), 1, "{before:?}");
    let reprompted = platform
        .patch(
            &format!("/api/v1/agents/{id}"),
            token,
            json!({ "system_prompt": "Be thorough." }),
        )
        .await;
    assert_eq!(reprompted.status, 200);
    assert_eq!(reprompted.body["system_prompt"], "Be thorough.");
    let after = history(
        &platform
            .get(&format!("/api/v1/agents/{id}/status"), token)
            .await
            .body,
    );
    assert_eq!(redeploys(&after), 2, "{after:?}");
    let too_long = platform
        .patch(
            &format!("/api/v1/agents/{id}"),
            token,
            json!({ "name": "x".repeat(65) }),
        )
        .await;
    assert_eq!(too_long.status, 422);

    let deleted = platform
        .delete(&format!("/api/v1/agents/{id}"), token)
        .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(
        platform
            .get(&format!("/api/v1/agents/{id}"), token)
            .await
            .status,
        404
    );
    assert_eq!(
        platform
            .get(&format!("/api/v1/agents/{id}/status"), token)
            .await
            .status,
        404
    );
    assert_eq!(
        platform
            .delete(&format!("/api/v1/agents/{id}"), token)
            .await
            .status,
        404
    );
    assert_eq!(platform.get("/api/v1/agents", token).await.body, json!([]));
    assert_eq!(
        platform
            .get("/api/v1/agents/not-a-uuid", token)
            .await
            .status,
        404
    );
}

/// The deployment-status answer once the agent's `attempts`th deployment attempt has failed.
async fn failed(platform: &Platform, token: Option<&str>, id: &str, attempts: usize) -> Answer {
    wait_for(Duration::from_secs(20), || async {
        let answer = platform
            .get(&format!("/api/v1/agents/{id}/status"), token)
            .await;
        let failures = history(&answer.body)
            .iter()
            .filter(|s| *s == "failed")
            .count();
        (answer.body["status"] == "failed" && failures == attempts).then_some(answer)
    })
    .await
}

/// The kinds of deployment facts in a status answer, oldest first.
fn history(status: &Value) -> Vec<String> {
    status["history"]
        .as_array()
        .map(|facts| {
            facts
                .iter()
                .filter_map(|f| f["status"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn the_agent_past_the_tier_limit_is_refused_with_429_and_retry_after() {
    let platform = Platform::start(&[
        ("WARREN_APPROVAL", "open"),
        ("WARREN_TIER_FREE_MAX_AGENTS", "2"),
    ])
    .await;
    let me = platform.sign_in("quota@example.com").await;
    let token = Some(me.access.as_str());
    let mut ids = vec![];
    for n in 0..2 {
        let created = platform
            .post("/api/v1/agents", token, json!({ "name": format!("a{n}") }))
            .await;
        assert_eq!(created.status, 201, "{created:?}");
        ids.push(created.body["id"].as_str().expect("id").to_owned());
    }
    let third = platform
        .post("/api/v1/agents", token, json!({ "name": "a2" }))
        .await;
    assert_eq!(third.status, 429);
    assert_eq!(third.body["error"]["code"], "quota_exceeded");
    assert_eq!(third.body["error"]["details"]["limit"], 2);
    assert!(third.retry_after.is_some_and(|secs| secs > 0), "{third:?}");
    let usage = platform.get("/api/v1/usage", token).await;
    assert_eq!(usage.status, 200);
    assert_eq!(usage.body["agents"], json!({ "used": 2, "limit": 2 }));
    assert_eq!(usage.body["tier"], "free");
    assert_eq!(usage.body["deployments"], 2, "{usage:?}");
    let history = platform.get("/api/v1/usage/history?days=7", token).await;
    assert_eq!(history.body.as_array().expect("days").len(), 1);
    assert_eq!(
        platform
            .get("/api/v1/usage/history?days=0", token)
            .await
            .status,
        422
    );

    assert_eq!(
        platform
            .delete(&format!("/api/v1/agents/{}", ids[0]), token)
            .await
            .status,
        204
    );
    let again = platform
        .post("/api/v1/agents", token, json!({ "name": "a3" }))
        .await;
    assert_eq!(
        again.status, 201,
        "a deleted agent frees its slot: {again:?}"
    );
}
