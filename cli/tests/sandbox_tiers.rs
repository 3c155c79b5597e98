//! Sandbox limits per tier (docs/adr/0032-sandbox-limits-per-tier.md), on the real Docker
//! engine: an admin moves a user to `pro` through the admin API, and that user's agent's
//! container gets the pro tier's memory, CPU and PID limits (also when it is recreated, and when
//! it was a warm pool's container started with the global ones), while a free user's agent gets
//! the global ones, which the free tier does not override here.

mod common;
mod edge_support;
mod sandbox_support;

use edge_support::{Platform, Session};
use sandbox_support::{SandboxNet, container, docker, ensure_image, inspect};
use serde_json::{Value, json};
use std::time::Duration;
use warren_testkit::{wait_for, wait_until};

const TIMEOUT: Duration = Duration::from_secs(90);

/// The global limits (the free tier has none of its own here) and the pro tier's.
const GLOBAL: Limits = Limits {
    memory_mb: 384,
    nano_cpus: 1_000_000_000,
    pids: 200,
};
const PRO: Limits = Limits {
    memory_mb: 768,
    nano_cpus: 1_500_000_000,
    pids: 512,
};

#[derive(Debug, PartialEq)]
struct Limits {
    memory_mb: i64,
    nano_cpus: i64,
    pids: i64,
}

/// The limits `docker inspect` shows for a container.
fn limits_of(info: &Value) -> Limits {
    let host = &info["HostConfig"];
    Limits {
        memory_mb: host["Memory"].as_i64().expect("memory") >> 20,
        nano_cpus: host["NanoCpus"].as_i64().expect("cpus"),
        pids: host["PidsLimit"].as_i64().expect("pids"),
    }
}

async fn platform(net: &SandboxNet, extra: &[(&'static str, &str)]) -> Platform {
    let mut env = net.env();
    env.extend([
        ("WARREN_APPROVAL", "open".to_owned()),
        ("WARREN_TIER_FREE_MAX_AGENTS", "3".to_owned()),
        ("WARREN_TIER_PRO_MAX_AGENTS", "3".to_owned()),
        ("WARREN_DEPLOYER_RECONCILE_SECS", "1".to_owned()),
        ("WARREN_SANDBOX_MEMORY_MB", GLOBAL.memory_mb.to_string()),
        ("WARREN_SANDBOX_PIDS", GLOBAL.pids.to_string()),
        ("WARREN_TIER_PRO_MEMORY_MB", PRO.memory_mb.to_string()),
        ("WARREN_TIER_PRO_CPUS", "1.5".to_owned()),
        ("WARREN_TIER_PRO_PIDS", PRO.pids.to_string()),
    ]);
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Platform::start(&env).await
}

/// Signs `email` in and has the admin put them on the pro tier, as the read model then says.
async fn pro_user(platform: &Platform, email: &str) -> Session {
    let admin = platform.sign_in("operator@admin.test").await;
    let user = platform.sign_in(email).await;
    let me = platform.get("/api/v1/users/me", Some(&user.access)).await;
    let id = me.body["id"].as_str().expect("id").to_owned();
    let changed = platform
        .patch(
            &format!("/api/v1/admin/users/{id}"),
            Some(&admin.access),
            json!({ "tier": "pro" }),
        )
        .await;
    assert_eq!(changed.status, 200, "{changed:?}");
    wait_until(TIMEOUT, || async {
        platform
            .get("/api/v1/users/me", Some(&user.access))
            .await
            .body["tier"]
            == "pro"
    })
    .await;
    user
}

/// Creates an agent for `user` and waits until it is running; its id.
async fn running_agent(platform: &Platform, user: &Session) -> String {
    let created = platform
        .post(
            "/api/v1/agents",
            Some(&user.access),
            json!({"name": "Sized", "system_prompt": "Be brief."}),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let agent = created.body["id"].as_str().expect("agent id").to_owned();
    let path = format!("/api/v1/agents/{agent}/status");
    wait_for(TIMEOUT, || async {
        let status = platform.get(&path, Some(&user.access)).await;
        assert_ne!(status.body["status"], "failed", "{:?}", status.body);
        (status.body["status"] == "running").then_some(())
    })
    .await;
    agent
}

/// What the kernel enforces inside the container: its cgroup's PID limit.
fn cgroup_pids_max(name: &str) -> String {
    docker(&[
        "exec",
        name,
        "sh",
        "-c",
        "cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max 2>/dev/null; true",
    ])
    .trim()
    .to_owned()
}

#[tokio::test]
async fn a_pro_users_agent_gets_the_pro_tier_limits_and_keeps_them_when_recreated() {
    ensure_image().await;
    let net = SandboxNet::new(common::free_port());
    let platform = platform(&net, &[]).await;
    let pro = pro_user(&platform, "pro@example.com").await;
    let free = platform.sign_in("free@example.com").await;

    let pro_agent = running_agent(&platform, &pro).await;
    let free_agent = running_agent(&platform, &free).await;
    let pro_info = inspect(&container(&pro_agent)).expect("the pro agent's container");
    assert_eq!(limits_of(&pro_info), PRO, "the pro agent's container");
    assert_eq!(cgroup_pids_max(&container(&pro_agent)), "512");
    let free_info = inspect(&container(&free_agent)).expect("the free agent's container");
    assert_eq!(limits_of(&free_info), GLOBAL, "the free agent's container");

    // Removed behind the platform's back, the container is recreated with the pro limits.
    let old_id = pro_info["Id"].as_str().expect("id").to_owned();
    docker(&["rm", "-f", &container(&pro_agent)]);
    let recreated = wait_for(TIMEOUT, || async {
        inspect(&container(&pro_agent)).filter(|info| {
            info["Id"].as_str() != Some(old_id.as_str()) && info["State"]["Running"] == true
        })
    })
    .await;
    assert_eq!(limits_of(&recreated), PRO, "the recreated container");
}

#[tokio::test]
async fn a_warm_pool_container_taken_by_a_pro_users_agent_gets_the_pro_tier_limits() {
    ensure_image().await;
    let net = SandboxNet::new(common::free_port());
    let platform = platform(&net, &[("WARREN_WARM_POOL", "1")]).await;
    let warm_ready = || async {
        let ready = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=org.warren.network={}", net.name),
            "--filter",
            "name=^/warren-pool-",
            "--filter",
            "status=running",
        ]);
        let id = ready.split_whitespace().next()?.to_owned();
        Some(id)
    };
    let pro = pro_user(&platform, "pro@example.com").await;
    let pooled = wait_for(TIMEOUT, warm_ready).await;
    assert_eq!(
        limits_of(&inspect(&pooled).expect("the pool's container")),
        GLOBAL,
        "a pool container has no owner yet: the global limits"
    );

    let agent = running_agent(&platform, &pro).await;
    let info = inspect(&container(&agent)).expect("the agent's container");
    assert!(
        info["Id"]
            .as_str()
            .is_some_and(|id| id.starts_with(&pooled)),
        "the agent took the warm container {pooled}: {}",
        info["Id"]
    );
    assert_eq!(limits_of(&info), PRO, "the taken container");
    assert_eq!(cgroup_pids_max(&container(&agent)), "512");

    // A free user's agent takes the refilled pool's next one as it is.
    let free = platform.sign_in("free@example.com").await;
    let pooled = wait_for(TIMEOUT, warm_ready).await;
    let agent = running_agent(&platform, &free).await;
    let info = inspect(&container(&agent)).expect("the free agent's container");
    assert!(
        info["Id"]
            .as_str()
            .is_some_and(|id| id.starts_with(&pooled)),
        "the free agent took the warm container {pooled}"
    );
    assert_eq!(limits_of(&info), GLOBAL, "the free agent's container");
}
