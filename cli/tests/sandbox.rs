//! Docker sandboxes, end to end on the real engine: the real `warren worker deployer` with
//! `WARREN_SANDBOX=docker` deploys each agent into its own locked-down container through the
//! six steps, acts on the container when the agent is stopped, started and deleted, and a
//! restarted deployer leaves healthy containers alone, recreates a removed one and restarts a
//! killed one. An idle agent's container is paused (and kept paused) and unpaused when the agent
//! resumes; what it uses is recorded for the agent's status.

mod common;
mod deployer_support;
mod sandbox_support;

use deployer_support::{Platform, healthy, wait_for};
use sandbox_support::{
    SandboxNet, container, docker, ensure_image, inspect, volume, volume_exists,
};
use warren_commands::CommandMeta;
use warren_commands::sandboxes::{SandboxState, SandboxStatsStore};
use warren_domain::Actor;
use warren_domain::agent::{AgentCommand, AgentEvent, AgentStatus, DeploymentStep};

async fn platform() -> (Platform, SandboxNet) {
    ensure_image().await;
    let mut platform = Platform::start().await;
    let net = SandboxNet::new(common::free_port());
    platform.env.extend(net.env());
    (platform, net)
}

fn state(name: &str) -> Option<String> {
    inspect(name).and_then(|info| info["State"]["Status"].as_str().map(str::to_owned))
}

fn paused(name: &str) -> Option<bool> {
    inspect(name).and_then(|info| info["State"]["Paused"].as_bool())
}

fn started_at(name: &str) -> Option<String> {
    inspect(name).and_then(|info| info["State"]["StartedAt"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn an_agent_deploys_into_a_locked_down_container_that_follows_its_lifecycle() {
    let (platform, _net) = platform().await;
    let deployer = platform.deployer("deployer");

    // (1) The six steps, in order, end in a container that answers on its endpoint.
    let (agent, owner) = platform.create_agent().await;
    let endpoint = platform.endpoint(agent, &deployer).await;
    let steps = platform.steps(agent).await;
    assert_eq!(
        steps,
        DeploymentStep::ALL.to_vec(),
        "{}",
        deployer.log_text()
    );
    assert!(healthy(&endpoint).await, "the container's runtime answers");
    let name = container(agent);
    let info = inspect(&name).expect("the agent's container exists");
    assert_eq!(info["State"]["Status"], "running");
    assert_eq!(
        info["Config"]["Labels"]["org.warren.agent"],
        agent.to_string()
    );

    // (2) Locked down: not root, no capabilities, no new privileges, read-only root, limits,
    // no host mount but its volume, and no token in its environment.
    let host = &info["HostConfig"];
    assert_eq!(info["Config"]["User"], "10001:10001");
    assert_eq!(host["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(
        host["SecurityOpt"],
        serde_json::json!(["no-new-privileges"])
    );
    assert_eq!(host["ReadonlyRootfs"], true);
    assert_eq!(host["Memory"], 2i64 << 30);
    assert_eq!(host["NanoCpus"], 1_000_000_000i64);
    assert_eq!(host["PidsLimit"], 256);
    assert!(host["Binds"].is_null(), "no bind mounts: {host}");
    let mounts = info["Mounts"].as_array().expect("mounts");
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0]["Type"], "volume");
    assert_eq!(mounts[0]["Name"], volume(agent));
    let env = info["Config"]["Env"].to_string();
    assert!(
        !env.contains("WARREN_AGENT_TOKEN="),
        "the token is not in the environment: {env}"
    );
    assert!(!env.contains("API_KEY"), "no provider key: {env}");
    let id = docker(&["exec", &name, "id", "-u"]);
    assert_eq!(id.trim(), "10001");

    // (3) Stop stops the container; start brings it back on the same endpoint.
    platform
        .command(agent, owner, AgentCommand::StopAgent)
        .await;
    wait_for("the stopped agent's container stops", || async {
        (state(&name).as_deref() == Some("exited")).then_some(())
    })
    .await;
    platform
        .command(agent, owner, AgentCommand::StartAgent)
        .await;
    wait_for("the started agent answers again", || async {
        (state(&name).as_deref() == Some("running") && healthy(&endpoint).await).then_some(())
    })
    .await;

    // (4) Restart restarts it.
    let before = started_at(&name);
    platform
        .command(agent, owner, AgentCommand::RestartAgent)
        .await;
    wait_for("the restarted agent answers", || async {
        (started_at(&name) != before && healthy(&endpoint).await).then_some(())
    })
    .await;

    // (5) Delete removes the container and its volume, then destroys the agent.
    platform
        .command(agent, owner, AgentCommand::DeleteAgent)
        .await;
    wait_for("the deleted agent is destroyed", || async {
        platform.agent(agent).await.destroyed.then_some(())
    })
    .await;
    assert!(inspect(&name).is_none(), "the container is removed");
    assert!(!volume_exists(&volume(agent)), "the volume is removed");
}

#[tokio::test]
async fn a_restarted_deployer_keeps_healthy_containers_and_repairs_the_others() {
    let (platform, _net) = platform().await;
    let mut deployer = platform.deployer("deployer-1");
    let (kept, _) = platform.create_agent().await;
    let (removed, _) = platform.create_agent().await;
    let (killed, _) = platform.create_agent().await;
    let mut endpoints = Vec::new();
    for agent in [kept, removed, killed] {
        endpoints.push(platform.endpoint(agent, &deployer).await);
    }
    // A file in the removed agent's workspace survives its container's removal.
    docker(&[
        "exec",
        &container(removed),
        "sh",
        "-c",
        "echo kept > /data/workspace/note.txt",
    ]);
    let kept_started = started_at(&container(kept));

    deployer.kill_group().await;
    docker(&["rm", "-f", &container(removed)]);
    docker(&["kill", &container(killed)]);

    let deployer = platform.deployer("deployer-2");
    wait_for("the removed container is recreated and answers", || async {
        (state(&container(removed)).as_deref() == Some("running") && healthy(&endpoints[1]).await)
            .then_some(())
    })
    .await;
    wait_for("the killed container is restarted and answers", || async {
        (state(&container(killed)).as_deref() == Some("running") && healthy(&endpoints[2]).await)
            .then_some(())
    })
    .await;
    assert_eq!(
        started_at(&container(kept)),
        kept_started,
        "the healthy container is left alone: {}",
        deployer.log_text()
    );
    assert!(healthy(&endpoints[0]).await);
    let note = docker(&[
        "exec",
        &container(removed),
        "cat",
        "/data/workspace/note.txt",
    ]);
    assert_eq!(note.trim(), "kept", "the workspace volume survived");

    // A container killed while the deployer runs is noticed and restarted.
    let before = started_at(&container(kept));
    docker(&["kill", &container(kept)]);
    wait_for("the killed container comes back", || async {
        (started_at(&container(kept)) != before && healthy(&endpoints[0]).await).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_idle_agent_s_container_is_paused_kept_paused_and_unpaused_when_it_resumes() {
    let (mut platform, _net) = platform().await;
    platform.env.extend([
        ("WARREN_AGENT_IDLE_PAUSE_SECS", "3".to_owned()),
        ("WARREN_CHAT_LEASE_BEAT_SECS", "1".to_owned()),
    ]);
    let deployer = platform.deployer("deployer");
    let (agent, _) = platform.create_agent().await;
    let endpoint = platform.endpoint(agent, &deployer).await;
    let name = container(agent);

    // (1) Nobody uses it for 3 s: the log says paused and the container is frozen.
    wait_for("the idle agent's container is paused", || async {
        (paused(&name) == Some(true)).then_some(())
    })
    .await;
    assert_eq!(platform.agent(agent).await.status, AgentStatus::Paused);
    assert!(
        platform
            .events(agent)
            .await
            .iter()
            .any(|event| matches!(event, AgentEvent::AgentPaused { .. })),
        "{}",
        deployer.log_text()
    );

    // (2) What the frozen sandbox uses is recorded for its status.
    let stats = SandboxStatsStore::open(&platform.js)
        .await
        .expect("the stats bucket");
    let used = wait_for("the paused sandbox's use is recorded", || async {
        stats
            .get(agent)
            .await
            .ok()
            .flatten()
            .filter(|used| used.state == SandboxState::Paused)
    })
    .await;
    assert!(used.started_at.is_some(), "{used:?}");
    assert!(used.memory_bytes.is_some_and(|m| m > 0), "{used:?}");
    assert!(used.disk_bytes.is_some(), "{used:?}");

    // (3) Thawed behind the platform's back, a paused agent's container is frozen again.
    docker(&["unpause", &name]);
    wait_for("the reconciler pauses it again", || async {
        (paused(&name) == Some(true)).then_some(())
    })
    .await;

    // (4) Resumed (as the chat worker does for a message), it is thawed and answers on the
    // endpoint the log knows.
    platform
        .commands
        .agents
        .execute(
            &agent.to_string(),
            AgentCommand::ResumeAgent,
            &CommandMeta::new(Actor::System("chat-test".into())),
        )
        .await
        .expect("resume");
    wait_for("the resumed agent's container runs and answers", || async {
        (paused(&name) == Some(false) && healthy(&endpoint).await).then_some(())
    })
    .await;
    assert_eq!(platform.agent(agent).await.status, AgentStatus::Running);
}
