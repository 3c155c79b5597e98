//! Sandbox alerts (issue 12 §4, docs/adr/0026-sandbox-alerts.md): what goes wrong with a
//! sandbox is a fact on the agent and a mail to every admin. A failed deployment here; a
//! sandbox out of memory in `sandbox_escape.rs` (it needs a docker sandbox).

mod common;
mod edge_support;

use edge_support::Platform;
use serde_json::json;
use std::time::Duration;
use warren_testkit::wait_for;

#[tokio::test]
async fn a_failed_deployment_is_in_the_log_and_mailed_to_the_admins() {
    // The platform's agent binary is missing: every deployment fails at `installing`.
    let platform =
        Platform::start(&[("WARREN_APPROVAL", "open"), ("WARREN_SANDBOX", "process")]).await;
    let owner = platform.sign_in("owner@example.com").await;
    let created = platform
        .post(
            "/api/v1/agents",
            Some(&owner.access),
            json!({"name": "Doomed", "system_prompt": "Be brief."}),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let agent = created.body["id"].as_str().expect("agent id").to_owned();

    let failed = wait_for(Duration::from_secs(30), || async {
        platform
            .agent_events(&agent)
            .await
            .into_iter()
            .find(|event| event["type"] == "DeploymentFailed")
    })
    .await;
    assert_eq!(failed["data"]["step"], "installing", "{failed}");

    let mail = wait_for(Duration::from_secs(30), || async {
        platform
            .smtp
            .mails_to("operator@admin.test")
            .into_iter()
            .find(|mail| mail.text().contains(&agent))
    })
    .await;
    let subject = mail.header("Subject").expect("subject");
    assert!(
        subject.contains("deployment failed") && subject.contains("Doomed"),
        "{subject}"
    );
    let text = mail.text();
    for expected in ["owner@example.com", "installing", "not installed"] {
        assert!(
            text.contains(expected),
            "the mail says {expected:?}: {text}"
        );
    }
    // Alerts are for admins: the owner reads the failure on the agent, not in a mail.
    assert!(
        platform
            .smtp
            .mails_to("owner@example.com")
            .iter()
            .all(|mail| !mail.text().contains(&agent)),
        "the owner got an admin alert"
    );
}
