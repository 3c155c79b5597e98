//! Sandbox alerts (issue 12 §4, docs/adr/0026-sandbox-alerts.md): what goes wrong with a
//! sandbox is a fact on the agent and a mail to every admin. A failed deployment and a docker
//! sandbox failing its health checks here; a sandbox out of memory in `sandbox_escape.rs`.

mod common;
mod edge_support;
mod sandbox_support;

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

    let mail = admin_mail_about(&platform, &agent, Duration::from_secs(30)).await;
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

/// A docker sandbox whose runtime stops answering, and keeps not answering when restarted,
/// raises one `health_failing` alert that the admins are mailed; the deployer restarts it at
/// each failed check, and once the cause is gone the agent runs again.
#[tokio::test]
async fn a_sandbox_failing_its_health_checks_is_alerted_to_the_admins_and_restarted() {
    use sandbox_support::{SandboxNet, container, docker, ensure_image, inspect};
    ensure_image().await;
    let net = SandboxNet::new(common::free_port());
    let mut env = net.env();
    env.extend([
        ("WARREN_APPROVAL", "open".to_owned()),
        ("WARREN_DEPLOYER_RECONCILE_SECS", "1".to_owned()),
        ("WARREN_DEPLOYER_HEALTH_TIMEOUT_SECS", "2".to_owned()),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let platform = Platform::start(&env).await;
    let owner = platform.sign_in("owner@example.com").await;
    let created = platform
        .post(
            "/api/v1/agents",
            Some(&owner.access),
            json!({"name": "Stuck", "system_prompt": "Be brief."}),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let agent = created.body["id"].as_str().expect("agent id").to_owned();
    let status_path = format!("/api/v1/agents/{agent}/status");
    let running = || async {
        platform.get(&status_path, Some(&owner.access)).await.body["status"] == "running"
    };
    warren_testkit::wait_until(Duration::from_secs(90), running).await;
    let name = container(&agent);
    let started_at = |name: &str| {
        inspect(name).and_then(|info| info["State"]["StartedAt"].as_str().map(str::to_owned))
    };
    let first_start = started_at(&name);

    // The runtime's state holds a chat history it blocks on when it starts (a FIFO where a
    // file should be: what a careless or hostile command in the sandbox can leave), and the
    // running runtime hangs (stopped): it answers no health check, and a restarted one hangs
    // on its history before it listens.
    docker(&[
        "exec",
        &name,
        "sh",
        "-c",
        "mkfifo /data/state/history/stuck.json && \
         for p in /proc/[0-9]*; do [ \"$(cat $p/comm 2>/dev/null)\" = warren-agent ] && kill -STOP ${p#/proc/}; done; true",
    ]);

    let alerted = wait_for(Duration::from_secs(120), || async {
        platform
            .agent_events(&agent)
            .await
            .into_iter()
            .find(|event| event["type"] == "SandboxAlerted")
    })
    .await;
    assert_eq!(alerted["data"]["alert"], "health_failing", "{alerted}");
    assert!(
        started_at(&name) != first_start,
        "the deployer restarted the unhealthy container"
    );
    let mail = admin_mail_about(&platform, &agent, Duration::from_secs(60)).await;
    let subject = mail.header("Subject").expect("subject");
    assert!(
        subject.contains("health check failing") && subject.contains("Stuck"),
        "{subject}"
    );
    let text = mail.text();
    for expected in ["owner@example.com", "health check"] {
        assert!(
            text.contains(expected),
            "the mail says {expected:?}: {text}"
        );
    }

    // The cause removed, the next restart brings the runtime back: it answers the platform
    // again, and the streak (one alert) is over.
    docker(&["exec", &name, "rm", "-f", "/data/state/history/stuck.json"]);
    let endpoint = |info: serde_json::Value| {
        format!(
            "http://{}:8080/health",
            info["Config"]["Labels"]["org.warren.address"]
                .as_str()
                .unwrap_or_default()
        )
    };
    warren_testkit::wait_until(Duration::from_secs(90), || async {
        let Some(info) = inspect(&name) else {
            return false;
        };
        reqwest::Client::new()
            .get(endpoint(info))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
    })
    .await;
    assert!(running().await, "the agent is still running");
    let alerts = platform
        .agent_events(&agent)
        .await
        .into_iter()
        .filter(|event| event["type"] == "SandboxAlerted")
        .count();
    assert_eq!(alerts, 1, "one alert per streak");
}

/// The first mail to the platform's admin that names `agent`, once it has come.
async fn admin_mail_about(
    platform: &Platform,
    agent: &str,
    timeout: Duration,
) -> warren_testkit::smtp::Mail {
    wait_for(timeout, || async {
        platform
            .smtp
            .mails_to("operator@admin.test")
            .into_iter()
            .find(|mail| mail.text().contains(agent))
    })
    .await
}
