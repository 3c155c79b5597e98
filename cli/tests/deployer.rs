//! The deployer worker with the `process` provisioner, end to end: the real `warren worker
//! deployer` runs real `warren-agent` processes as the log asks, records the six steps, stops,
//! starts and destroys them, and a restarted deployer brings back only the agents that died.

mod common;
mod deployer_support;

use common::Warren;
use deployer_support::{Platform, healthy, wait_for};
use std::path::{Path, PathBuf};
use warren_domain::agent::{AgentCommand, AgentEvent, DeploymentStep};
use warren_domain::ids::AgentId;

/// Kills every agent process recorded under the data dir when the test ends (agents outlive
/// the deployer by design).
struct AgentReaper(PathBuf);

impl Drop for AgentReaper {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.0.join("agents")) else {
            return;
        };
        for entry in entries.flatten() {
            if let Some(pid) = read_pid(&entry.path().join("process.json"))
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["pid"].as_i64().and_then(|pid| i32::try_from(pid).ok())
}

fn alive(pid: i32) -> bool {
    rustix::process::Pid::from_raw(pid)
        .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok())
}

/// Process-provisioner views of the platform.
trait ProcessPlatform {
    async fn deployed(&self, agent: AgentId, deployer: &Warren) -> (String, i32);
    fn process_json(&self, agent: AgentId) -> PathBuf;
}

impl ProcessPlatform for Platform {
    /// Waits until the agent is deployed and answers; its endpoint and pid.
    async fn deployed(&self, agent: AgentId, deployer: &Warren) -> (String, i32) {
        let endpoint = self.endpoint(agent, deployer).await;
        assert!(
            healthy(&endpoint).await,
            "the deployed endpoint answers /health: {}",
            deployer.log_text()
        );
        let pid = read_pid(&self.process_json(agent)).expect("pid in process.json");
        assert!(alive(pid));
        (endpoint, pid)
    }

    fn process_json(&self, agent: AgentId) -> PathBuf {
        self.data()
            .join("agents")
            .join(agent.to_string())
            .join("process.json")
    }
}

#[tokio::test]
async fn deployer_deploys_stops_starts_and_destroys_agent_processes() {
    let platform = Platform::start().await;
    let _reaper = AgentReaper(platform.data());
    let deployer = platform.deployer("deployer");

    // (1) Creating an agent deploys it through the six steps, in order.
    let (agent, owner) = platform.create_agent().await;
    let (endpoint, pid) = platform.deployed(agent, &deployer).await;
    let events = platform.events(agent).await;
    let steps = platform.steps(agent).await;
    assert_eq!(
        steps,
        DeploymentStep::ALL.to_vec(),
        "{}",
        deployer.log_text()
    );
    assert!(
        matches!(events.last(), Some(AgentEvent::AgentDeployed { endpoint_url, .. }) if *endpoint_url == endpoint)
    );
    let workspace = platform
        .data()
        .join("agents")
        .join(agent.to_string())
        .join("workspace");
    assert!(workspace.is_dir());

    // (2) Stop kills the process; start brings it back, healthy.
    platform
        .command(agent, owner, AgentCommand::StopAgent)
        .await;
    wait_for("the stopped agent's process is gone", || async {
        (!alive(pid)).then_some(())
    })
    .await;
    platform
        .command(agent, owner, AgentCommand::StartAgent)
        .await;
    let started = wait_for("the started agent answers", || async {
        let pid = read_pid(&platform.process_json(agent))?;
        (alive(pid) && healthy(&endpoint).await).then_some(pid)
    })
    .await;
    assert_ne!(started, pid, "a new process");

    // (3) Delete kills it, removes the workspace and destroys the agent.
    platform
        .command(agent, owner, AgentCommand::DeleteAgent)
        .await;
    wait_for("the deleted agent is destroyed", || async {
        platform.agent(agent).await.destroyed.then_some(())
    })
    .await;
    assert!(!alive(started), "the deleted agent's process is gone");
    assert!(!workspace.exists(), "the workspace is removed");
    assert!(
        platform
            .events(agent)
            .await
            .iter()
            .any(|event| matches!(event, AgentEvent::AgentDestroyed { .. }))
    );
}

#[tokio::test]
async fn restarted_deployer_reconciles_agent_processes_that_died() {
    let platform = Platform::start().await;
    let _reaper = AgentReaper(platform.data());
    let mut deployer = platform.deployer("deployer-1");
    let (dead, _) = platform.create_agent().await;
    let (kept, _) = platform.create_agent().await;
    let (dead_endpoint, dead_pid) = platform.deployed(dead, &deployer).await;
    let (kept_endpoint, kept_pid) = platform.deployed(kept, &deployer).await;

    deployer.kill_group().await;
    assert!(alive(kept_pid), "agents outlive the deployer");
    rustix::process::kill_process_group(
        rustix::process::Pid::from_raw(dead_pid).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill an agent by hand");
    wait_for("the killed agent stops answering", || async {
        (!healthy(&dead_endpoint).await).then_some(())
    })
    .await;

    let deployer = platform.deployer("deployer-2");
    let restarted = wait_for("the reconciler restarts the dead agent", || async {
        let pid = read_pid(&platform.process_json(dead))?;
        (pid != dead_pid && healthy(&dead_endpoint).await).then_some(pid)
    })
    .await;
    assert!(alive(restarted));
    assert_eq!(
        read_pid(&platform.process_json(kept)),
        Some(kept_pid),
        "the running agent is left alone: {}",
        deployer.log_text()
    );
    assert!(alive(kept_pid) && healthy(&kept_endpoint).await);
    assert_eq!(
        platform.agent(dead).await.endpoint_url.as_deref(),
        Some(dead_endpoint.as_str()),
        "restarted on its recorded address"
    );
}

#[tokio::test]
async fn a_failed_deployment_tells_the_owner_a_fixed_sentence_and_keeps_the_cause_in_the_log() {
    let mut platform = Platform::start().await;
    let missing = platform.dir.path().join("no-such-dir/warren-agent");
    for (key, value) in platform.env.iter_mut() {
        if *key == "WARREN_AGENT_BIN" {
            *value = missing.display().to_string();
        }
    }
    let deployer = platform.deployer("deployer-missing-runtime");
    let (agent, _) = platform.create_agent().await;
    let failure = wait_for("the deployment to fail", || async {
        platform
            .events(agent)
            .await
            .into_iter()
            .find_map(|event| match event {
                AgentEvent::DeploymentFailed { step, error, .. } => Some((step, error)),
                _ => None,
            })
    })
    .await;
    assert_eq!(failure.0, DeploymentStep::Installing);
    assert_eq!(
        failure.1,
        "the agent runtime is not installed on this platform"
    );
    // The host's path is the operator's business: in the log, not in the event.
    assert!(!failure.1.contains("no-such-dir"), "{failure:?}");
    let log = wait_for("the cause in the log", || async {
        let log = deployer.log_text();
        log.contains("no-such-dir").then_some(log)
    })
    .await;
    assert!(log.contains("deployment failed"), "{log}");
}
