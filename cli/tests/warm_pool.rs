//! The warm pool on the real Docker engine (docs/adr/0028-warm-pool.md): `warren dev` with
//! `WARREN_WARM_POOL=2` keeps two started, unassigned, locked-down containers; a new agent is
//! deployed into one of them (the same container, renamed), chats through it, and the pool
//! refills behind it. Removed, the agent's container is recreated on the same volume and
//! address; deleted, the agent takes its container and volume with it. A restarted deployer
//! hands out the pool it finds, or replaces it when the platform's settings changed.

mod chat_support;
mod common;
mod deployer_support;
mod edge_support;
mod sandbox_support;

use chat_support::Chat;
use deployer_support::healthy;
use sandbox_support::{SandboxNet, container, docker, ensure_image, inspect, volume_exists};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;
use warren_commands::codec;
use warren_domain::agent::AgentEvent;
use warren_testkit::model_server::Reply;
use warren_testkit::{wait_for, wait_until};

const TIMEOUT: Duration = Duration::from_secs(60);
const POOL: usize = 2;

/// Ids of the network's running, unassigned pool containers.
fn warm(net: &SandboxNet) -> BTreeSet<String> {
    docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=org.warren.network={}", net.name),
        "--filter",
        "label=org.warren.pool",
        "--filter",
        "name=^/warren-pool-",
        "--filter",
        "status=running",
    ])
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

async fn full_pool(net: &SandboxNet) -> BTreeSet<String> {
    wait_for(TIMEOUT, || async {
        let warm = warm(net);
        (warm.len() == POOL).then_some(warm)
    })
    .await
}

/// The workspace the log recorded when the agent was deployed.
async fn recorded_workspace(chat: &Chat) -> Option<String> {
    let js = chat.platform.nats.jetstream().await;
    let stream = js.get_stream("AGENTS").await.expect("agents stream");
    let subject = format!("agent.{}", chat.agent_id);
    let mut workspace = None;
    let mut seq = 1;
    while let Ok(message) = stream.get_raw_message(seq).await {
        if message.subject.as_str() == subject {
            for envelope in codec::decode::<AgentEvent>(&message.payload).expect("decode") {
                if let AgentEvent::AgentDeployed { workspace: w, .. } = envelope.event {
                    workspace = w;
                }
            }
        }
        seq += 1;
    }
    workspace
}

#[tokio::test]
async fn a_new_agent_runs_in_a_warm_container_and_the_pool_refills() {
    ensure_image().await;
    let net = SandboxNet::new(common::free_port());
    let mut env = net.env();
    env.extend([
        ("WARREN_WARM_POOL", POOL.to_string()),
        ("WARREN_DEPLOYER_RECONCILE_SECS", "1".to_owned()),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // (1) Before any agent exists, the pool holds two started containers, locked down like
    // any agent's, holding no token and naming no agent.
    let mut pool = BTreeSet::new();
    let chat = Chat::start_after(&env, async { pool = full_pool(&net).await }).await;
    for id in &pool {
        let info = inspect(id).expect("a pool container");
        let host = &info["HostConfig"];
        assert_eq!(info["Config"]["User"], "10001:10001");
        assert_eq!(host["CapDrop"], json!(["ALL"]));
        assert_eq!(host["ReadonlyRootfs"], true);
        assert_eq!(host["PidsLimit"], 256);
        assert!(info["Config"]["Labels"]["org.warren.agent"].is_null());
        let env = info["Config"]["Env"].to_string();
        assert!(!env.contains("WARREN_AGENT_ID="), "{env}");
    }

    // (2) The new agent runs in one of them: the same container, now its own.
    let name = container(&chat.agent_id);
    let info = inspect(&name).expect("the agent's container");
    let id = info["Id"].as_str().expect("id").to_owned();
    assert!(pool.contains(&id), "{id} is not one of the pool's {pool:?}");
    let workspace = info["Mounts"][0]["Name"]
        .as_str()
        .expect("volume")
        .to_owned();
    assert!(workspace.starts_with("warren-ws-pool-"), "{workspace}");
    assert_eq!(
        recorded_workspace(&chat).await.as_deref(),
        Some(workspace.as_str()),
        "the log records the workspace it came with"
    );
    let address = info["Config"]["Labels"]["org.warren.address"]
        .as_str()
        .expect("address")
        .to_owned();
    let endpoint = format!("http://{address}:8080");

    // (3) It chats, with its tools, in that container.
    chat.model.push(Reply::tool_call(
        "shell",
        json!({"command": "echo kept > note.txt && echo written"}),
    ));
    chat.model.push(Reply::text("Noted."));
    let mut run = chat.send("write a note").await;
    let done = run.finish().await;
    assert_eq!(done.data["text"], "Noted.", "{:?}", run.frames);
    assert!(
        run.frames
            .iter()
            .any(|f| f.kind() == "tool_result" && f.data.to_string().contains("written")),
        "{:?}",
        run.frames
    );
    let note = docker(&["exec", &name, "cat", "/data/workspace/note.txt"]);
    assert_eq!(note.trim(), "kept");

    // (4) The pool refills with new containers.
    let refilled = full_pool(&net).await;
    assert!(!refilled.contains(&id), "the taken one left the pool");
    assert_eq!(
        refilled.intersection(&pool).count(),
        POOL - 1,
        "one new container"
    );

    // (5) Removed behind the platform's back, its container is recreated on the same volume
    // and address.
    docker(&["rm", "-f", &name]);
    wait_until(TIMEOUT, || async {
        inspect(&name).is_some_and(|info| info["Id"] != id.as_str()) && healthy(&endpoint).await
    })
    .await;
    let info = inspect(&name).expect("the recreated container");
    assert_eq!(info["Mounts"][0]["Name"], workspace.as_str());
    assert_eq!(
        info["Config"]["Labels"]["org.warren.address"],
        address.as_str()
    );
    let note = docker(&["exec", &name, "cat", "/data/workspace/note.txt"]);
    assert_eq!(note.trim(), "kept", "the workspace survived");

    // (6) Deleting the agent removes its container and its volume; the pool stays.
    let deleted = chat
        .platform
        .delete(
            &format!("/api/v1/agents/{}", chat.agent_id),
            Some(&chat.user.access),
        )
        .await;
    assert!(deleted.status < 300, "{deleted:?}");
    wait_until(TIMEOUT, || async {
        inspect(&name).is_none() && !volume_exists(&workspace)
    })
    .await;
    assert_eq!(warm(&net).len(), POOL);
}

#[tokio::test]
async fn a_restarted_deployer_adopts_its_pool_and_replaces_it_when_the_platform_changed() {
    ensure_image().await;
    let mut platform = deployer_support::Platform::start().await;
    let net = SandboxNet::new(common::free_port());
    platform.env.extend(net.env());
    platform.env.push(("WARREN_WARM_POOL", POOL.to_string()));
    let mut first = platform.deployer("deployer-1");
    let pool = full_pool(&net).await;
    first.kill_group().await;

    // (1) Same settings: the next deployer hands out the pool it found.
    let mut second = platform.deployer("deployer-2");
    let (agent, _) = platform.create_agent().await;
    let endpoint = platform.endpoint(agent, &second).await;
    let name = container(agent);
    let info = inspect(&name).expect("the agent's container");
    let id = info["Id"].as_str().expect("id").to_owned();
    assert!(
        pool.contains(&id),
        "{id} is not one of the pool's {pool:?}: {}",
        second.log_text()
    );
    let workspace = info["Mounts"][0]["Name"]
        .as_str()
        .expect("volume")
        .to_owned();
    let refilled = full_pool(&net).await;
    assert_eq!(refilled.intersection(&pool).count(), POOL - 1);
    second.kill_group().await;

    // (2) Other platform settings: the pool is replaced, and the agent is redeployed into a
    // container of its own on the same volume and address.
    platform
        .env
        .push(("WARREN_DEFAULT_PROVIDER", "anthropic".to_owned()));
    let third = platform.deployer("deployer-3");
    wait_until(TIMEOUT, || async {
        let warm = warm(&net);
        warm.len() == POOL && warm.is_disjoint(&refilled)
    })
    .await;
    wait_until(TIMEOUT, || async {
        inspect(&name).is_some_and(|info| info["Id"] != id.as_str()) && healthy(&endpoint).await
    })
    .await;
    let info = inspect(&name).expect("the redeployed container");
    assert_eq!(
        info["Mounts"][0]["Name"],
        workspace.as_str(),
        "{}",
        third.log_text()
    );
    assert_eq!(
        info["Config"]["Labels"]["org.warren.agent"],
        agent.to_string()
    );
}
