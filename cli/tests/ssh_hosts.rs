//! Agents on SSH hosts, end to end: "VM" hosts are containers running `sshd` on a private Docker
//! network of the test's own. An admin registers a host through the API (its private key sealed,
//! its host key pinned at first contact); an owner creates an agent with `"backend": "ssh"`; the
//! real deployer of `warren dev` places it on the host, uploads the runtime, starts it under its
//! own user and supervisor; the owner chats with it through a tool call that runs on the host;
//! stop, start, a host restart (reconciled) and delete act on the host; and a host that comes
//! back with another SSH key is refused. With `WARREN_WARM_POOL`, a host keeps a started,
//! waiting runtime that a new agent takes. A host registered as a Docker engine runs its agents
//! as the docker provisioner's containers there, reached through the SSH connection.

mod chat_support;
mod common;
mod edge_support;
mod sandbox_support;
mod ssh_support;

use chat_support::Chat;
use serde_json::{Value, json};
use ssh_support::{Lab, ensure_image, exec, key_pair};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

struct Remote {
    chat: Chat,
    admin: edge_support::Session,
    lab: Lab,
    private_key: String,
    _keys: tempfile::TempDir,
}

impl Remote {
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// With `extra` settings on top of the test's.
    async fn start_with(extra: &[(&str, &str)]) -> Self {
        ensure_image().await;
        let keys = tempfile::tempdir().expect("tempdir");
        let (private_key, public_key) = key_pair(keys.path());
        let lab = Lab::new(&public_key);
        // The edge listens on every address, so the hosts reach it on the network's gateway.
        let port = common::free_port();
        let addr = format!("0.0.0.0:{port}");
        let mut env = vec![
            ("WARREN_SANDBOX", "process"),
            ("WARREN_HTTP_ADDR", addr.as_str()),
            ("WARREN_DEPLOYER_RECONCILE_SECS", "2"),
            ("WARREN_TIER_FREE_MAX_AGENTS", "5"),
            ("WARREN_SANDBOX_PIDS", "100"),
            ("WARREN_SANDBOX_MEMORY_MB", "512"),
        ];
        env.extend_from_slice(extra);
        let chat = Chat::start(&env).await;
        let admin = chat.platform.sign_in("operator@admin.test").await;
        Self {
            chat,
            admin,
            lab,
            private_key,
            _keys: keys,
        }
    }

    fn platform_url(&self) -> String {
        let port = self
            .chat
            .platform
            .base
            .rsplit_once(':')
            .expect("a port")
            .1
            .to_owned();
        format!("http://{}:{port}", self.lab.gateway())
    }

    async fn register(&self, name: &str, address: &str, capacity: u32) -> Value {
        let answer = self
            .chat
            .platform
            .post(
                "/api/v1/admin/hosts",
                Some(&self.admin.access),
                json!({
                    "name": name,
                    "address": address,
                    "private_key": self.private_key,
                    "capacity": capacity,
                    "labels": ["test"],
                    "platform_url": self.platform_url(),
                }),
            )
            .await;
        assert_eq!(answer.status, 201, "{answer:?}");
        answer.body
    }

    async fn hosts(&self) -> Vec<Value> {
        let answer = self
            .chat
            .platform
            .get("/api/v1/admin/hosts", Some(&self.admin.access))
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.body.as_array().expect("a list").clone()
    }

    async fn create_ssh_agent(&self, name: &str) -> String {
        let created = self
            .chat
            .platform
            .post(
                "/api/v1/agents",
                Some(&self.chat.user.access),
                json!({"name": name, "system_prompt": "Be brief.", "backend": "ssh"}),
            )
            .await;
        assert_eq!(created.status, 201, "{created:?}");
        created.body["id"].as_str().expect("agent id").to_owned()
    }

    /// Step (2b) of the lifecycle test, with one agent already on the host (capacity 2).
    async fn admin_chooses_hosts(&self) {
        let platform = &self.chat.platform;
        let create = |token: &str, body: Value| {
            let token = token.to_owned();
            async move { platform.post("/api/v1/agents", Some(&token), body).await }
        };
        let refused = create(
            &self.chat.user.access,
            json!({"name": "Mine", "host": "vm-0"}),
        )
        .await;
        assert_eq!(refused.status, 403, "{refused:?}");
        let invalid = create(
            &self.admin.access,
            json!({"name": "Boxed", "backend": "docker", "host": "vm-0"}),
        )
        .await;
        assert_eq!(invalid.status, 422, "{invalid:?}");
        assert!(invalid.body.to_string().contains("host"), "{invalid:?}");

        let admin_status = |agent: String| async move {
            platform
                .get(
                    &format!("/api/v1/agents/{agent}/status"),
                    Some(&self.admin.access),
                )
                .await
                .body
        };
        let pinned = create(
            &self.admin.access,
            json!({"name": "Pinned", "host": "test"}),
        )
        .await;
        assert_eq!(pinned.status, 201, "{pinned:?}");
        let pinned = pinned.body["id"].as_str().expect("agent id").to_owned();
        warren_testkit::wait_for(WAIT, || async {
            let status = admin_status(pinned.clone()).await;
            assert_ne!(status["status"], "failed", "{status}");
            (status["status"] == "running").then_some(())
        })
        .await;
        assert_eq!(self.hosts().await[0]["agents"], 2);

        let nowhere = create(
            &self.admin.access,
            json!({"name": "Nowhere", "host": "gpu"}),
        )
        .await;
        assert_eq!(nowhere.status, 201, "{nowhere:?}");
        let nowhere = nowhere.body["id"].as_str().expect("agent id").to_owned();
        let failed = warren_testkit::wait_for(WAIT, || async {
            let status = admin_status(nowhere.clone()).await;
            (status["status"] == "failed").then_some(status)
        })
        .await;
        // Owners read a plain sentence; the deployer's log says which host was asked for.
        assert_eq!(failed["current_step"], "allocating", "{failed}");
        assert!(
            platform
                .warren
                .log_text()
                .contains("no SSH host named or labelled gpu has room"),
            "the deployer says why"
        );

        for agent in [pinned, nowhere] {
            let deleted = platform
                .delete(&format!("/api/v1/agents/{agent}"), Some(&self.admin.access))
                .await;
            assert!(deleted.status < 300, "{deleted:?}");
        }
        warren_testkit::wait_for(WAIT, || async {
            (self.hosts().await[0]["agents"] == 1).then_some(())
        })
        .await;
    }

    async fn status(&self, agent: &str) -> Value {
        self.chat
            .platform
            .get(
                &format!("/api/v1/agents/{agent}/status"),
                Some(&self.chat.user.access),
            )
            .await
            .body
    }

    /// Waits for `want` through whatever the agent passes on the way (a failure included).
    async fn wait_settled(&self, agent: &str, want: &str) -> Value {
        let deadline = std::time::Instant::now() + WAIT;
        let last = std::cell::RefCell::new(Value::Null);
        let settled = tokio::time::timeout_at(
            deadline.into(),
            warren_testkit::wait_for(WAIT * 2, || async {
                let status = self.status(agent).await;
                last.replace(status.clone());
                (status["status"] == want).then_some(status)
            }),
        )
        .await;
        settled.unwrap_or_else(|_| {
            panic!(
                "the agent is not {want}: {}\n{}",
                last.borrow(),
                self.chat.platform.warren.log_text()
            )
        })
    }

    async fn wait_status(&self, agent: &str, want: &str) -> Value {
        warren_testkit::wait_for(WAIT, || async {
            let status = self.status(agent).await;
            if want != "failed" {
                assert_ne!(
                    status["status"],
                    "failed",
                    "{status:?}\n{}",
                    self.chat.platform.warren.log_text()
                );
            }
            (status["status"] == want).then_some(status)
        })
        .await
    }

    async fn lifecycle(&self, agent: &str, action: &str) {
        let answer = self
            .chat
            .platform
            .post(
                &format!("/api/v1/agents/{agent}/{action}"),
                Some(&self.chat.user.access),
                json!({}),
            )
            .await;
        assert!(answer.status < 300, "{action}: {answer:?}");
    }

    /// Runs `command` through the agent's shell tool; the tool's output.
    async fn shell(&self, agent: &str, command: &str) -> String {
        let (result, end) = self.chat.run_shell(agent, command, 20, Some("done")).await;
        assert_eq!(end.kind(), "done", "{:?}", end.data);
        result.to_string()
    }
}

async fn answers(endpoint: &str) -> bool {
    reqwest::Client::new()
        .get(format!("{endpoint}/health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

#[tokio::test]
async fn an_agent_on_an_ssh_host_deploys_chats_and_follows_its_lifecycle() {
    let remote = Remote::start().await;
    let (vm, address) = remote.lab.start_vm(0);
    let presented = remote.lab.host_key(&vm).await;

    // (1) An admin registers the host; nothing is pinned before the first contact.
    let host = remote.register("vm-0", &address, 2).await;
    assert_eq!(host["agents"], 0);
    assert_eq!(host["state"], "up");
    assert!(host["host_key"].is_null(), "{host}");
    assert!(
        !host.to_string().contains("PRIVATE KEY"),
        "the private key is never shown: {host}"
    );

    // (2) An agent asking for SSH hosts is placed there and runs.
    let agent = remote.create_ssh_agent("Remote").await;
    let status = remote.wait_status(&agent, "running").await;
    let endpoint = status["endpoint"].as_str().expect("an endpoint").to_owned();
    assert!(
        endpoint.starts_with(&format!("http://{address}:")),
        "the runtime answers on the host: {endpoint}"
    );
    let hosts = remote.hosts().await;
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0]["agents"], 1);
    assert_eq!(
        hosts[0]["host_key"], presented,
        "the key the host presented is pinned"
    );

    // (2b) Choosing the host is an admin's: a user's choice is refused and a sandbox agent
    // cannot have one; an admin's agent goes where its label says, and a label no host has
    // fails the deployment, saying so.
    remote.admin_chooses_hosts().await;

    // (3) A chat whose tool call runs on the host, as the agent's own user, not root, and
    // with no provider key in its environment.
    let user = warren_workers::deployer::ssh::scripts::user_of(agent.parse().expect("agent id"));
    let output = remote
        .shell(&agent, "echo user=$(id -un) host=$(hostname); env | grep -c API_KEY; cat /root/.ssh/authorized_keys || echo denied")
        .await;
    assert!(output.contains(&format!("user={user}")), "{output}");
    assert!(output.contains("host=vm0"), "{output}");
    assert!(
        output.contains("denied"),
        "root's files are not readable: {output}"
    );
    assert!(!output.contains("ssh-ed25519"), "{output}");
    // Its processes run under the sandbox limits (WARREN_SANDBOX_PIDS, _MEMORY_MB): processes
    // and threads of its user, and each process's data memory.
    let limits = remote
        .shell(
            &agent,
            "grep -E 'Max (processes|data size)' /proc/self/limits",
        )
        .await
        .replace("\\n", " ");
    let limits = limits.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(limits.contains("Max processes 100 100"), "{limits}");
    assert!(
        limits.contains("Max data size 536870912 536870912"),
        "{limits}"
    );

    // (3b) Its status shows what it uses on the host: memory, CPU, uptime, workspace size.
    let measured = warren_testkit::wait_for(WAIT, || async {
        let status = remote.status(&agent).await;
        (status["memory_bytes"]
            .as_u64()
            .is_some_and(|bytes| bytes > 1 << 20)
            && status["disk_bytes"].as_u64().is_some_and(|bytes| bytes > 0)
            && status["uptime_secs"].is_u64())
        .then_some(status)
    })
    .await;
    assert!(measured["uptime_secs"].as_u64() < Some(3600), "{measured}");

    // (4) Stop and start act on the host.
    remote.lifecycle(&agent, "stop").await;
    remote.wait_status(&agent, "stopped").await;
    warren_testkit::wait_for(WAIT, || async { (!answers(&endpoint).await).then_some(()) }).await;
    remote.lifecycle(&agent, "start").await;
    remote.wait_status(&agent, "running").await;
    warren_testkit::wait_for(WAIT, || async { answers(&endpoint).await.then_some(()) }).await;

    // (5) The host restarts (its processes gone): the reconciler starts the agent again, on
    // the endpoint the log knows.
    ssh_support::docker(&["restart", &vm]);
    warren_testkit::wait_for(WAIT, || async { answers(&endpoint).await.then_some(()) }).await;
    remote.wait_settled(&agent, "running").await;
    let output = remote.shell(&agent, "echo back").await;
    assert!(output.contains("back"), "{output}");

    // (5b) A host that is away long enough to be seen: it is marked down and its agent
    // failed; when it answers again the agent is deployed there again, on the same endpoint.
    ssh_support::docker(&["stop", &vm]);
    let failed = remote.wait_status(&agent, "failed").await;
    assert!(!failed.to_string().contains("PRIVATE"), "{failed}");
    warren_testkit::wait_for(WAIT, || async {
        (remote.hosts().await[0]["state"] == "down").then_some(())
    })
    .await;
    ssh_support::docker(&["start", &vm]);
    warren_testkit::wait_for(WAIT, || async {
        (remote.hosts().await[0]["state"] == "up").then_some(())
    })
    .await;
    remote.wait_settled(&agent, "running").await;
    warren_testkit::wait_for(WAIT, || async { answers(&endpoint).await.then_some(()) }).await;
    let output = remote.shell(&agent, "echo again").await;
    assert!(output.contains("again"), "{output}");

    // (6) Deleting the agent removes its user and files from the host and frees its place.
    let deleted = remote
        .chat
        .platform
        .delete(
            &format!("/api/v1/agents/{agent}"),
            Some(&remote.chat.user.access),
        )
        .await;
    assert!(deleted.status < 300, "{deleted:?}");
    warren_testkit::wait_for(WAIT, || async {
        let gone = exec(
            &vm,
            &format!("test -e /var/lib/warren/agents/{agent} || id -u {user} || echo gone"),
        );
        (gone == "gone").then_some(())
    })
    .await;
    warren_testkit::wait_for(WAIT, || async {
        (remote.hosts().await[0]["agents"] == 0).then_some(())
    })
    .await;

    // (7) A host removed with no agents is gone from the list.
    let removed = remote
        .chat
        .platform
        .delete("/api/v1/admin/hosts/vm-0", Some(&remote.admin.access))
        .await;
    assert_eq!(removed.status, 204, "{removed:?}");
    assert!(remote.hosts().await.is_empty());
    // Its lease goes with it: the deployer that held it removes it at its next tend.
    let leases = remote
        .chat
        .platform
        .nats
        .jetstream()
        .await
        .get_key_value("leases")
        .await
        .expect("the leases bucket");
    warren_testkit::wait_for(WAIT, || async {
        leases
            .get("host.vm-0")
            .await
            .expect("reading the leases")
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_host_that_presents_another_key_is_refused() {
    let remote = Remote::start().await;
    let (vm, address) = remote.lab.start_vm(1);
    let first_key = remote.lab.host_key(&vm).await;
    remote.register("vm-1", &address, 3).await;
    let agent = remote.create_ssh_agent("First").await;
    remote.wait_status(&agent, "running").await;

    // Another machine (a new container, new host keys) takes the host's address.
    let (vm, _) = remote.lab.start_vm(1);
    let second_key = remote.lab.host_key(&vm).await;
    assert_ne!(first_key, second_key);
    // The reconciler meets it: the host is down, saying why, and takes no new agent.
    let host = warren_testkit::wait_for(WAIT, || async {
        let hosts = remote.hosts().await;
        let reason = hosts[0]["down_reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        reason
            .contains("presented another SSH key than the one pinned")
            .then(|| hosts[0].clone())
    })
    .await;
    assert_eq!(host["state"], "down", "{host}");
    assert_eq!(host["host_key"], first_key, "the pin is kept");
    // Its agent is reported failed (at the next pass after the host is marked down).
    remote.wait_status(&agent, "failed").await;
    let refused = remote.create_ssh_agent("Second").await;
    let status = remote.wait_status(&refused, "failed").await;
    assert!(status["last_error"].is_string(), "{status}");
    assert!(
        exec(&vm, "ls /var/lib/warren/agents 2>/dev/null").is_empty(),
        "nothing was done on the impostor: not even the first agent restarted"
    );

    // Registration refuses what it cannot use, and non-admins.
    let bad = remote
        .chat
        .platform
        .post(
            "/api/v1/admin/hosts",
            Some(&remote.admin.access),
            json!({"name": "Bad Name", "address": address, "private_key": remote.private_key, "capacity": 1}),
        )
        .await;
    assert_eq!(bad.status, 422, "{bad:?}");
    let not_a_key = remote
        .chat
        .platform
        .post(
            "/api/v1/admin/hosts",
            Some(&remote.admin.access),
            json!({"name": "vm-x", "address": address, "private_key": "hunter2", "capacity": 1}),
        )
        .await;
    assert_eq!(not_a_key.status, 422, "{not_a_key:?}");
    let taken = remote
        .chat
        .platform
        .post(
            "/api/v1/admin/hosts",
            Some(&remote.admin.access),
            json!({"name": "vm-1", "address": address, "private_key": remote.private_key, "capacity": 1}),
        )
        .await;
    assert_eq!(taken.status, 409, "{taken:?}");
    let user = remote
        .chat
        .platform
        .get("/api/v1/admin/hosts", Some(&remote.chat.user.access))
        .await;
    assert_eq!(user.status, 403, "{user:?}");

    // The change was legitimate (a reinstall): an admin forgets the pin, the next contact
    // pins the new key, the host is up again and the agent it failed with runs on it again.
    // A user may not, a non-key is invalid, an unknown host is not found.
    let platform = &remote.chat.platform;
    let repin = "/api/v1/admin/hosts/vm-1/host-key";
    let by_user = platform
        .put(
            repin,
            Some(&remote.chat.user.access),
            json!({"host_key": null}),
        )
        .await;
    assert_eq!(by_user.status, 403, "{by_user:?}");
    let not_a_key = platform
        .put(
            repin,
            Some(&remote.admin.access),
            json!({"host_key": "hunter2"}),
        )
        .await;
    assert_eq!(not_a_key.status, 422, "{not_a_key:?}");
    let unknown = platform
        .put(
            "/api/v1/admin/hosts/vm-9/host-key",
            Some(&remote.admin.access),
            json!({"host_key": null}),
        )
        .await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    let forgotten = platform
        .put(repin, Some(&remote.admin.access), json!({"host_key": null}))
        .await;
    assert_eq!(forgotten.status, 200, "{forgotten:?}");
    assert!(forgotten.body["host_key"].is_null(), "{forgotten:?}");
    warren_testkit::wait_for(WAIT, || async {
        let hosts = remote.hosts().await;
        (hosts[0]["state"] == "up" && hosts[0]["host_key"] == second_key).then_some(())
    })
    .await;
    remote.wait_settled(&agent, "running").await;
    let output = remote.shell(&agent, "echo reinstalled").await;
    assert!(output.contains("reinstalled"), "{output}");
}

/// The free warm pool slots on host container `vm`.
fn free_slots(vm: &str) -> Vec<String> {
    exec(vm, "ls /var/lib/warren/pool/*/free 2>/dev/null")
        .lines()
        .filter_map(|path| path.split('/').nth(5).map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_hosts_warm_pool_hands_a_new_agent_a_started_runtime() {
    let remote = Remote::start_with(&[("WARREN_WARM_POOL", "1")]).await;
    let (vm, address) = remote.lab.start_vm(2);
    remote.lab.host_key(&vm).await;
    remote.register("vm-2", &address, 3).await;

    // (1) The host keeps one slot: a runtime started under a user of its own, waiting, serving
    // nothing (not even /health) while no agent has it.
    let slot = warren_testkit::wait_for(WAIT, || async {
        let slots = free_slots(&vm);
        (slots.len() == 1).then(|| slots[0].clone())
    })
    .await;
    let port = exec(&vm, &format!("cat /var/lib/warren/pool/{slot}/port"));
    let waiting = format!("http://{address}:{}", port.trim());
    let runs_as_slot_user = || {
        exec(
            &vm,
            "for p in /proc/[0-9]*; do stat -c %U $p 2>/dev/null; done | sort -u",
        )
        .lines()
        .any(|user| user == format!("wp{slot}"))
    };
    let started = tokio::time::timeout(Duration::from_secs(30), async {
        while !runs_as_slot_user() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        started.is_ok(),
        "the slot's runtime runs as its own user: {}",
        exec(&vm, "cat /var/lib/warren/pool/*/agent.log")
    );
    assert!(
        !answers(&waiting).await,
        "an unassigned runtime serves nothing"
    );

    // (2) A new agent takes it: its directory is the slot's, its endpoint the slot's port, and
    // its shell runs as the slot's user, with the agent's token (the chat goes through).
    let agent = remote.create_ssh_agent("Warm").await;
    let status = remote.wait_status(&agent, "running").await;
    assert_eq!(status["endpoint"], waiting.as_str(), "{status}");
    assert_eq!(
        exec(&vm, &format!("readlink /var/lib/warren/agents/{agent}")).trim(),
        format!("/var/lib/warren/pool/{slot}")
    );
    assert!(
        remote
            .chat
            .platform
            .warren
            .log_text()
            .contains("agent took a warm pool slot"),
        "the deployer says so"
    );
    let output = remote.shell(&agent, "echo user=$(id -un)").await;
    assert!(output.contains(&format!("user=wp{slot}")), "{output}");

    // (3) The pool refills behind it, with another slot.
    let refilled = warren_testkit::wait_for(WAIT, || async {
        let slots = free_slots(&vm);
        (slots.len() == 1 && slots[0] != slot).then(|| slots[0].clone())
    })
    .await;

    // (4) Stopped and started, the agent's runtime starts as the agent's (no longer waiting
    // for an assignment), on the same port.
    remote.lifecycle(&agent, "stop").await;
    remote.wait_status(&agent, "stopped").await;
    warren_testkit::wait_for(WAIT, || async { (!answers(&waiting).await).then_some(()) }).await;
    remote.lifecycle(&agent, "start").await;
    remote.wait_settled(&agent, "running").await;
    warren_testkit::wait_for(WAIT, || async { answers(&waiting).await.then_some(()) }).await;
    let output = remote.shell(&agent, "echo again=$(id -un)").await;
    assert!(output.contains(&format!("again=wp{slot}")), "{output}");

    // (5) Deleted, the agent takes its slot with it: directory, user and all; the fresh slot
    // stays.
    let deleted = remote
        .chat
        .platform
        .delete(
            &format!("/api/v1/agents/{agent}"),
            Some(&remote.chat.user.access),
        )
        .await;
    assert!(deleted.status < 300, "{deleted:?}");
    warren_testkit::wait_for(WAIT, || async {
        exec(
            &vm,
            &format!("ls -d /var/lib/warren/pool/{slot} /var/lib/warren/agents/{agent} 2>/dev/null; id -u wp{slot} 2>/dev/null"),
        )
        .trim()
        .is_empty()
        .then_some(())
    })
    .await;
    assert_eq!(free_slots(&vm), vec![refilled]);
}

/// A host registered with `"engine": "docker"`: the deployer drives its Docker engine through
/// the SSH connection (a forwarded socket), so the agent is a locked-down container there; the
/// relay and the firewall are the engine host's; chat workers reach the runtime on a port the
/// host publishes; stop, start and delete act on the container.
#[tokio::test]
async fn an_agent_on_a_docker_host_runs_in_a_container_of_its_engine() {
    sandbox_support::ensure_image().await;
    let net = sandbox_support::SandboxNet::new(common::free_port());
    let mut extra: Vec<(&str, String)> = net
        .env()
        .into_iter()
        .filter(|(key, _)| *key != "WARREN_SANDBOX")
        .collect();
    extra.push(("WARREN_SANDBOX_MEMORY_MB", "300".to_owned()));
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let remote = Remote::start_with(&extra).await;
    let ssh_port = common::free_port();
    let engine = remote.lab.start_docker_host(ssh_port);
    warren_testkit::wait_for(WAIT, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", ssh_port))
            .await
            .ok()
            .map(drop)
    })
    .await;
    let edge_port = remote
        .chat
        .platform
        .base
        .rsplit_once(':')
        .expect("a port")
        .1
        .to_owned();

    // (1) The admin registers it as a Docker engine.
    let registered = remote
        .chat
        .platform
        .post(
            "/api/v1/admin/hosts",
            Some(&remote.admin.access),
            json!({
                "name": "engine-0",
                "address": "127.0.0.1",
                "port": ssh_port,
                "private_key": remote.private_key,
                "capacity": 2,
                "engine": "docker",
                "platform_url": format!("http://127.0.0.1:{edge_port}"),
            }),
        )
        .await;
    assert_eq!(registered.status, 201, "{registered:?}");
    assert_eq!(registered.body["engine"], "docker", "{registered:?}");
    let unknown = remote
        .chat
        .platform
        .post(
            "/api/v1/admin/hosts",
            Some(&remote.admin.access),
            json!({"name": "engine-1", "address": "127.0.0.1", "private_key": remote.private_key,
                   "capacity": 1, "engine": "vm"}),
        )
        .await;
    assert!(
        (400..500).contains(&unknown.status),
        "an unknown engine is refused: {unknown:?}"
    );

    // (2) An agent placed there runs in a container of that engine, locked down, on the
    // sandbox network; its endpoint is a port the host publishes.
    let agent = remote.create_ssh_agent("Boxed").await;
    let status = remote.wait_settled(&agent, "running").await;
    let endpoint = status["endpoint"].as_str().expect("an endpoint").to_owned();
    assert!(
        endpoint.starts_with("http://127.0.0.1:200"),
        "published on the host: {endpoint}"
    );
    let container = format!("warren-agent-{agent}");
    let inspect = ssh_support::docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.Config.User}} {{.HostConfig.Memory}} {{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}",
        &container,
    ]);
    assert_eq!(
        inspect,
        format!("true [ALL] 10001:10001 314572800 {}", net.name),
        "the docker provisioner's lockdown, the owner's limits"
    );
    let relay = ssh_support::docker(&[
        "inspect",
        "-f",
        "{{.State.Running}} {{.HostConfig.NetworkMode}}",
        &format!("warren-relay-{}", net.name),
    ]);
    assert_eq!(relay, "true host", "the relay runs on the engine's host");
    assert_eq!(remote.hosts().await[0]["agents"], 1);

    // (3) A chat with a tool call that runs in the container: the model is reached through
    // the host's relay, and the host's other ports are closed to the sandbox.
    // The network's gateway is the engine host's address on it (Docker's first address).
    let gateway = format!("{}.1", net.subnet.trim_end_matches(".0/24"));
    let output = remote
        .shell(
            &agent,
            &format!(
                "echo uid=$(id -u) host=$(hostname); env | grep -c API_KEY; \
                 curl -s -m 3 -o /dev/null http://{gateway}:{relay}/health && echo relay=open || echo relay=closed; \
                 curl -s -m 3 -o /dev/null http://{gateway}:{edge_port}/health && echo edge=open || echo edge=closed",
                relay = net.relay_port,
            ),
        )
        .await;
    assert!(output.contains("uid=10001"), "{output}");
    assert!(
        output.contains("host=") && output.contains("\\n0\\n"),
        "no provider key in the sandbox: {output}"
    );
    assert!(
        output.contains("relay=open"),
        "the relay on the gateway is the sandbox's way out: {output}"
    );
    let chain = warren_workers::deployer::docker::network::chain_name(&net.name);
    let rules = exec(&engine, &format!("iptables -w 5 -S {chain}"));
    assert!(
        output.contains("edge=closed"),
        "the engine host's firewall keeps the sandbox off its other ports: {output}\n\
         its chain: {rules}\nINPUT: {}",
        exec(&engine, "iptables -w 5 -S INPUT")
    );
    assert!(rules.contains("-j DROP"), "installed over SSH: {rules}");

    // (4) Stop and start act on the container.
    remote.lifecycle(&agent, "stop").await;
    remote.wait_status(&agent, "stopped").await;
    warren_testkit::wait_for(WAIT, || async { (!answers(&endpoint).await).then_some(()) }).await;
    remote.lifecycle(&agent, "start").await;
    remote.wait_status(&agent, "running").await;
    warren_testkit::wait_for(WAIT, || async { answers(&endpoint).await.then_some(()) }).await;
    let output = remote.shell(&agent, "echo again").await;
    assert!(output.contains("again"), "{output}");

    // (5) Deleting the agent removes its container and volume, and frees its place.
    let deleted = remote
        .chat
        .platform
        .delete(
            &format!("/api/v1/agents/{agent}"),
            Some(&remote.chat.user.access),
        )
        .await;
    assert!(deleted.status < 300, "{deleted:?}");
    warren_testkit::wait_for(WAIT, || async {
        (remote.hosts().await[0]["agents"] == 0).then_some(())
    })
    .await;
    let left = ssh_support::docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=org.warren.network={}", net.name),
    ]);
    assert!(left.is_empty(), "the container is gone: {left}");
    let volumes = ssh_support::docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("name=warren-ws-{agent}"),
    ]);
    assert!(volumes.is_empty(), "its volume is gone: {volumes}");
}
