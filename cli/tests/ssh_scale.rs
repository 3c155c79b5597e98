//! Deployers sharing SSH hosts: two `warren worker deployer` replicas place ten agents over two
//! "VM" hosts (containers running `sshd` on a private Docker network) within their capacity;
//! killing the deployer that holds a host's lease hands the host to the other within 30 s,
//! which reconciles it without restarting a healthy agent; a host that stops answering is
//! marked down, its agents reported failed and, with `WARREN_SSH_REDEPLOY`, deployed again on
//! the other host.

mod common;
mod deployer_support;
mod ssh_support;

use deployer_support::Platform;
use ssh_support::{Lab, ensure_image, exec, key_pair};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use warren_commands::CommandMeta;
use warren_commands::secrets::HostKeys;
use warren_domain::Actor;
use warren_domain::agent::{AgentCommand, AgentStatus, Backend};
use warren_domain::host::{Host, HostCommand, HostSpec};
use warren_domain::ids::{AgentId, UserId};

const WAIT: Duration = Duration::from_secs(120);

async fn host(platform: &Platform, name: &str) -> Host {
    platform
        .commands
        .hosts
        .load(name)
        .await
        .expect("load host")
        .0
}

async fn register(platform: &Platform, name: &str, address: &str, capacity: u32, key: &str) {
    let keys = HostKeys::open(&platform.js, &[0xab; 32])
        .await
        .expect("keys");
    keys.put(name, key).await.expect("store the key");
    platform
        .commands
        .hosts
        .execute(
            name,
            HostCommand::RegisterHost {
                name: name.into(),
                spec: HostSpec {
                    address: address.into(),
                    port: 22,
                    user: "root".into(),
                    capacity,
                    labels: BTreeSet::new(),
                    platform_url: Some("http://127.0.0.1:9".into()),
                    engine: Default::default(),
                },
                host_key: None,
            },
            &CommandMeta::new(Actor::System("test".into())),
        )
        .await
        .expect("register");
}

/// Supervisor pids of every agent on container `vm`, by agent.
fn supervisors(vm: &str) -> BTreeMap<String, String> {
    exec(
        vm,
        "for f in /var/lib/warren/agents/*/supervisor.pid; do [ -f \"$f\" ] && echo \"$(basename $(dirname $f)) $(cat $f)\"; done",
    )
    .lines()
    .filter_map(|line| line.split_once(' '))
    .map(|(agent, pid)| (agent.to_owned(), pid.to_owned()))
    .collect()
}

/// Which deployer holds host `name`'s lease.
async fn lease_holder(platform: &Platform, name: &str) -> Option<String> {
    let kv = platform.js.get_key_value("leases").await.expect("leases");
    let entry = kv.get(format!("host.{name}")).await.ok()??;
    let lease: serde_json::Value = serde_json::from_slice(&entry).ok()?;
    let stale_ms = warren_workers::deployer::ssh::lease::STALE.as_millis() as i64;
    let fresh = chrono::Utc::now().timestamp_millis() - lease["beat_ms"].as_i64()? < stale_ms;
    fresh.then(|| lease["deployer"].as_str().map(str::to_owned))?
}

/// The id a deployer's log gives itself ("took over host … as deployer <id>").
fn deployer_id(log: &str) -> Option<String> {
    log.lines()
        .find_map(|line| line.split("as deployer ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
}

#[tokio::test]
async fn two_deployers_share_two_hosts_hand_them_over_and_move_a_down_hosts_agents() {
    ensure_image().await;
    let mut platform = Platform::start().await;
    let keys = tempfile::tempdir().expect("tempdir");
    let (private_key, public_key) = key_pair(keys.path());
    let lab = Lab::new(&public_key);
    let (vm0, address0) = lab.start_vm(0);
    let (vm1, address1) = lab.start_vm(1);
    lab.host_key(&vm0).await;
    lab.host_key(&vm1).await;
    register(&platform, "vm-0", &address0, 6, &private_key).await;
    register(&platform, "vm-1", &address1, 4, &private_key).await;
    platform.env.extend([
        ("WARREN_SSH_REDEPLOY", "true".to_owned()),
        ("WARREN_DEPLOYER_RECONCILE_SECS", "2".to_owned()),
    ]);
    let mut first = platform.deployer("deployer-1");
    let mut second = platform.deployer("deployer-2");
    let logs = |first: &common::Warren, second: &common::Warren| {
        let runtimes = |vm: &str| {
            exec(
                vm,
                "tail -n 5 /var/lib/warren/agents/*/agent.log 2>&1 | tail -n 60",
            )
        };
        format!(
            "--- deployer-1\n{}\n--- deployer-2\n{}\n--- runtimes on vm-0\n{}\n--- on vm-1\n{}",
            first.log_text(),
            second.log_text(),
            runtimes(&vm0),
            runtimes(&vm1)
        )
    };

    // (1) Ten agents over capacities 6 and 4: each host exactly full, all running.
    let owner = UserId::new();
    let mut agents = Vec::new();
    for _ in 0..10 {
        agents.push(platform.create_agent_for(owner, Backend::Ssh).await);
    }
    warren_testkit::wait_for(WAIT, || async {
        for agent in &agents {
            let status = platform.agent(*agent).await.status;
            assert_ne!(
                status,
                AgentStatus::Failed,
                "{agent}: {}",
                logs(&first, &second)
            );
            if status != AgentStatus::Running {
                return None;
            }
        }
        Some(())
    })
    .await;
    let (h0, h1) = (host(&platform, "vm-0").await, host(&platform, "vm-1").await);
    assert_eq!(
        (h0.agents.len(), h1.agents.len()),
        (6, 4),
        "placed within capacity"
    );
    // Every runtime is up on its host. (Waited for, not read once: a runtime the reconciler
    // is restarting has no supervisor for a moment; the deployers' logs say why.)
    let started = Instant::now();
    let settled = tokio::time::timeout(WAIT, async {
        loop {
            let counts = (supervisors(&vm0).len(), supervisors(&vm1).len());
            if counts == (6, 4) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "supervisors: {:?} {:?}\n{}",
        supervisors(&vm0),
        supervisors(&vm1),
        logs(&first, &second)
    );
    if started.elapsed() > Duration::from_millis(500) {
        eprintln!(
            "a runtime was being restarted after all agents ran:\n{}",
            logs(&first, &second)
        );
    }

    // (2) The deployers share the hosts: one lease each.
    let holders = warren_testkit::wait_for(WAIT, || async {
        let a = lease_holder(&platform, "vm-0").await?;
        let b = lease_holder(&platform, "vm-1").await?;
        (a != b).then_some((a, b))
    })
    .await;
    let first_id = deployer_id(&first.log_text()).expect("deployer-1 took a host");
    let (lost_host, lost_vm, kept_host) = if holders.0 == first_id {
        ("vm-0", &vm0, "vm-1")
    } else {
        ("vm-1", &vm1, "vm-0")
    };
    let before = supervisors(lost_vm);

    // (3) Kill deployer-1: deployer-2 holds its host within 30 s and reconciles it, and no
    // healthy agent is restarted.
    first.kill_group().await;
    let killed = Instant::now();
    let second_id = warren_testkit::wait_for(Duration::from_secs(40), || async {
        let holder = lease_holder(&platform, lost_host).await?;
        (holder != first_id).then_some(holder)
    })
    .await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(30), "taken over in {took:?}");
    assert_eq!(
        lease_holder(&platform, kept_host).await.as_deref(),
        Some(second_id.as_str())
    );
    warren_testkit::wait_for(WAIT, || async {
        second
            .log_text()
            .contains("reconciled the work taken over")
            .then_some(())
    })
    .await;
    assert_eq!(
        supervisors(lost_vm),
        before,
        "no agent was restarted\n{}",
        logs(&first, &second)
    );
    eprintln!("host {lost_host} taken over in {took:?}");

    // (4) Free room on vm-0, then stop vm-1: it is marked down, its agents fail and are
    // deployed again on vm-0.
    let on_vm0: Vec<AgentId> = host(&platform, "vm-0").await.agents.into_iter().collect();
    for agent in on_vm0.iter().take(4) {
        platform
            .command(*agent, owner, AgentCommand::DeleteAgent)
            .await;
    }
    warren_testkit::wait_for(WAIT, || async {
        (host(&platform, "vm-0").await.agents.len() == 2).then_some(())
    })
    .await;
    let moved: Vec<AgentId> = host(&platform, "vm-1").await.agents.into_iter().collect();
    ssh_support::docker(&["stop", &vm1]);
    warren_testkit::wait_for(WAIT, || async {
        host(&platform, "vm-1").await.down.then_some(())
    })
    .await;
    let redeployed = tokio::time::timeout(WAIT, async {
        loop {
            let h0 = host(&platform, "vm-0").await;
            let mut all = true;
            for agent in &moved {
                all &= h0.agents.contains(agent)
                    && platform.agent(*agent).await.status == AgentStatus::Running;
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    if redeployed.is_err() {
        let mut states = String::new();
        for agent in &moved {
            let view = platform.agent(*agent).await;
            states.push_str(&format!("{agent}: {:?}\n", view.status));
        }
        panic!(
            "the down host's agents were not redeployed on vm-0 within {WAIT:?}\n{states}vm-0 holds {:?}\n{}",
            host(&platform, "vm-0").await.agents,
            logs(&first, &second)
        );
    }
    for agent in &moved {
        let events = platform.events(*agent).await;
        assert!(
            events
                .iter()
                .any(|e| matches!(e, warren_domain::agent::AgentEvent::AgentFailed { .. })),
            "{agent} was reported failed first: {events:?}"
        );
    }
    assert_eq!(
        host(&platform, "vm-0").await.agents.len(),
        6,
        "within capacity"
    );
    assert!(
        host(&platform, "vm-1").await.agents.is_empty(),
        "released from the down host"
    );
    assert_eq!(supervisors(&vm0).len(), 6, "{}", logs(&first, &second));
    second.kill_group().await;
}
