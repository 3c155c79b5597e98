//! Escape tests, driven through the agent's own shell tool as a user would: a chat message makes
//! the test model call `shell`, and the command tries to get out. In a docker sandbox every
//! attempt fails (with `WARREN_SANDBOX_INTERNET` on, all but reaching a public address); the same attempts against the `process` backend succeed (that test shows the
//! checks can fail), except the fork bomb and the memory hog, which are not let loose on the host:
//! there the check is that the process has no limit at all.

mod chat_support;
mod common;
mod edge_support;
mod sandbox_support;

use chat_support::Chat;
use sandbox_support::{FakeInternet, SandboxNet, ensure_image, inspect};
use serde_json::{Value, json};
use std::time::Duration;

/// The agents a test talks to: the first of `chat`, and a second one of the same user.
struct Escape {
    chat: Chat,
    other: String,
    net: Option<SandboxNet>,
}

#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Docker,
    Process,
}

impl Escape {
    async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[]).await
    }

    /// [`Self::start`] with `extra` settings.
    async fn start_with(backend: Backend, extra: &[(&'static str, &str)]) -> Self {
        let net = match backend {
            Backend::Docker => {
                ensure_image().await;
                Some(SandboxNet::new(common::free_port()))
            }
            Backend::Process => None,
        };
        let mut env: Vec<(&str, String)> = vec![
            ("WARREN_TIER_FREE_MAX_AGENTS", "3".into()),
            ("WARREN_SANDBOX_MEMORY_MB", "256".into()),
        ];
        match &net {
            Some(net) => env.extend(net.env()),
            None => env.push(("WARREN_SANDBOX", "process".into())),
        }
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let chat = Chat::start(&env).await;
        let created = chat
            .platform
            .post(
                "/api/v1/agents",
                Some(&chat.user.access),
                json!({"name": "Other", "system_prompt": "Be brief."}),
            )
            .await;
        assert_eq!(created.status, 201, "{created:?}");
        let other = created.body["id"].as_str().expect("agent id").to_owned();
        let escape = Self { chat, other, net };
        escape.wait_running(&escape.other).await;
        escape
    }

    async fn wait_running(&self, agent: &str) {
        let path = format!("/api/v1/agents/{agent}/status");
        warren_testkit::wait_for(Duration::from_secs(60), || async {
            let status = self
                .chat
                .platform
                .get(&path, Some(&self.chat.user.access))
                .await;
            assert_ne!(status.body["status"], "failed", "{:?}", status.body);
            (status.body["status"] == "running").then_some(())
        })
        .await;
    }

    /// Runs `command` with the shell tool of `agent` (as its model asks; then, if asked again,
    /// the model says `then`, if given) and returns the tool's result frame and the run's last
    /// frame (`done` or `error`).
    async fn run_shell(
        &self,
        agent: &str,
        command: &str,
        timeout_secs: u64,
        then: Option<&str>,
    ) -> (Value, chat_support::Frame) {
        self.chat
            .run_shell(agent, command, timeout_secs, then)
            .await
    }

    /// [`Self::run_shell`], for a run that must end `done`; the tool's result frame.
    async fn shell_in(&self, agent: &str, command: &str, timeout_secs: u64) -> Value {
        let (result, end) = self
            .run_shell(agent, command, timeout_secs, Some("done"))
            .await;
        assert_eq!(end.kind(), "done", "the run ends: {:?}", end.data);
        result
    }

    /// [`Self::shell_in`] the first agent; the output text.
    async fn shell(&self, command: &str) -> String {
        let result = self.shell_in(&self.chat.agent_id, command, 20).await;
        result["output"].as_str().unwrap_or_default().to_owned()
    }

    /// The platform's data directory on the host.
    fn data_dir(&self) -> String {
        self.chat
            .platform
            .dir
            .path()
            .join("data")
            .display()
            .to_string()
    }

    /// Where, seen from the agent, the host is: its loopback for a process, the sandbox
    /// network's gateway for a container.
    fn host_addresses(&self) -> Vec<String> {
        let mut hosts = vec!["127.0.0.1".to_owned()];
        if let Some(net) = &self.net {
            let gateway = net.subnet.trim_end_matches("0/24").to_owned() + "1";
            hosts.push(gateway);
        }
        hosts
    }

    /// The other agent's runtime address (`host:port`).
    fn other_runtime(&self) -> String {
        match &self.net {
            Some(_) => {
                let info = inspect(&format!("warren-agent-{}", self.other)).expect("container");
                format!(
                    "{}:8080",
                    info["Config"]["Labels"]["org.warren.address"]
                        .as_str()
                        .expect("address label")
                )
            }
            None => {
                let record = std::fs::read_to_string(
                    self.chat
                        .platform
                        .dir
                        .path()
                        .join("data/agents")
                        .join(&self.other)
                        .join("process.json"),
                )
                .expect("process.json");
                let record: Value = serde_json::from_str(&record).expect("json");
                record["endpoint"]
                    .as_str()
                    .expect("endpoint")
                    .trim_start_matches("http://")
                    .to_owned()
            }
        }
    }
}

/// A bash line that prints `OPEN host:port` for each address it can connect to.
fn probe(targets: &[String]) -> String {
    targets
        .iter()
        .map(|target| {
            let (host, port) = target.rsplit_once(':').expect("host:port");
            format!(
                "(timeout 3 bash -c 'echo > /dev/tcp/{host}/{port}' 2>/dev/null && echo OPEN {target} || echo closed {target})"
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn port_of(url: &str) -> String {
    url.rsplit(':')
        .next()
        .and_then(|rest| rest.split(['/', '?']).next())
        .expect("port")
        .to_owned()
}

/// Whether this host has an IPv6 address but loopback's (a process agent then has one too).
fn host_has_ipv6() -> bool {
    std::fs::read_to_string("/proc/net/if_inet6")
        .unwrap_or_default()
        .lines()
        .any(|line| line.split_whitespace().last() != Some("lo"))
}

/// What got out, by name: every check the sandbox must make fail.
async fn escapes(escape: &Escape) -> Vec<&'static str> {
    let mut out = Vec::new();

    // The platform's data directory (dev secrets, agents' files).
    let listing = escape
        .shell(&format!("ls -la {} && echo LISTED", escape.data_dir()))
        .await;
    if listing.contains("LISTED") {
        out.push("read the platform's data directory");
    }

    // Another agent's workspace: it writes a secret, this one looks for it everywhere.
    let secret = uuid::Uuid::new_v4().to_string();
    escape
        .shell_in(
            &escape.other,
            &format!("echo {secret} > secret.txt && echo written"),
            20,
        )
        .await;
    let looked = escape
        .shell(&format!(
            "cat {data}/agents/{other}/workspace/secret.txt /var/lib/docker/volumes/warren-ws-{other}/_data/workspace/secret.txt 2>&1; \
             grep -rs {secret} / --include=secret.txt -l 2>/dev/null | head -n 3",
            data = escape.data_dir(),
            other = escape.other,
        ))
        .await;
    if looked.contains(&secret) {
        out.push("read another agent's workspace");
    }

    // NATS, PostgreSQL, a host service on every address, and the other sandbox.
    let platform = &escape.chat.platform;
    let nats_port = port_of(
        &platform
            .nats
            .warren_env()
            .into_iter()
            .find(|(k, _)| *k == "WARREN_NATS_URL")
            .expect("nats url")
            .1,
    );
    let pg_port = port_of(platform.db.server_url());
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("a host service");
    let any_port = listener.local_addr().expect("addr").port().to_string();
    for (what, port) in [
        ("connect to NATS", nats_port),
        ("connect to PostgreSQL", pg_port),
        ("connect to a host service on all addresses", any_port),
    ] {
        let targets: Vec<String> = escape
            .host_addresses()
            .into_iter()
            .map(|host| format!("{host}:{port}"))
            .collect();
        if escape.shell(&probe(&targets)).await.contains("OPEN") {
            out.push(what);
        }
    }
    if escape
        .shell(&probe(&[escape.other_runtime()]))
        .await
        .contains("OPEN")
    {
        out.push("connect to another sandbox");
    }
    // Off the host: a "public" address, and a private network's.
    let internet = FakeInternet::start();
    for (what, address) in [
        ("connect to the internet", &internet.public),
        (
            "connect to a private network off the host",
            &internet.private,
        ),
    ] {
        let read = escape
            .shell(&format!(
                "timeout 3 bash -c 'exec 3<>/dev/tcp/{address}/{port} && head -n 1 <&3' 2>&1; echo tried",
                port = internet.port
            ))
            .await;
        if read.contains(&internet.token) {
            out.push(what);
        }
    }
    // IPv6: the firewall is IPv4's, so the sandbox has no IPv6 address but loopback's.
    let inet6 = escape
        .shell("while read -r _ _ _ _ _ dev; do [ \"$dev\" != lo ] && echo \"V6 $dev\"; done < /proc/net/if_inet6; echo checked")
        .await;
    if inet6.contains("V6 ") {
        out.push("use IPv6 past the IPv4 firewall");
    }
    let socket = escape
        .shell("curl -s --max-time 3 --unix-socket /var/run/docker.sock http://docker/_ping; echo")
        .await;
    if socket.contains("OK") {
        out.push("reach the Docker API");
    }

    // Writing outside the workspace and /tmp.
    let marker = format!("escape-{}", uuid::Uuid::new_v4().simple());
    let wrote = escape
        .shell(&format!(
            "for dir in / /etc /usr/local/bin /var {data}; do echo x > $dir/{marker} 2>/dev/null && echo WROTE $dir && rm -f $dir/{marker}; done; \
             echo x > /tmp/{marker} && echo TMP-OK; echo x > {marker} && echo WS-OK",
            data = escape.data_dir(),
        ))
        .await;
    assert!(
        wrote.contains("TMP-OK") && wrote.contains("WS-OK"),
        "the workspace and /tmp stay writable: {wrote}"
    );
    if wrote.contains("WROTE") {
        out.push("write outside the workspace and /tmp");
    }

    // Limits: a PID limit and a memory limit apply to the agent's processes.
    let limits = escape
        .shell("cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null")
        .await;
    if !limits.lines().any(|line| line.trim() == "256") {
        out.push("run without a PID limit");
    }
    if !limits
        .lines()
        .any(|line| line.trim() == (256u64 << 20).to_string())
    {
        out.push("run without a memory limit");
    }
    drop(listener);
    out
}

#[tokio::test]
async fn nothing_gets_out_of_a_docker_sandbox() {
    let escape = Escape::start(Backend::Docker).await;
    let got_out = escapes(&escape).await;
    assert!(got_out.is_empty(), "the agent could {got_out:?}");
}

#[tokio::test]
async fn with_the_internet_switch_on_a_docker_sandbox_reaches_the_internet_and_nothing_else() {
    let escape = Escape::start_with(Backend::Docker, &[("WARREN_SANDBOX_INTERNET", "true")]).await;
    let got_out = escapes(&escape).await;
    assert_eq!(
        got_out,
        ["connect to the internet"],
        "the agent could {got_out:?}"
    );
}

#[tokio::test]
async fn the_same_attempts_get_out_of_a_process_agent() {
    let escape = Escape::start(Backend::Process).await;
    let got_out = escapes(&escape).await;
    for expected in [
        "read the platform's data directory",
        "read another agent's workspace",
        "connect to NATS",
        "connect to PostgreSQL",
        "connect to a host service on all addresses",
        "connect to another sandbox",
        "connect to the internet",
        "connect to a private network off the host",
        "write outside the workspace and /tmp",
        "run without a PID limit",
        "run without a memory limit",
    ]
    .into_iter()
    .chain(host_has_ipv6().then_some("use IPv6 past the IPv4 firewall"))
    {
        assert!(
            got_out.contains(&expected),
            "the check \"{expected}\" can fail: {got_out:?}"
        );
    }
}

#[tokio::test]
async fn a_fork_bomb_and_a_memory_hog_are_stopped_inside_their_sandbox() {
    let escape = Escape::start(Backend::Docker).await;
    let health = format!("{}/api/v1/health", escape.chat.platform.base);

    // A fork bomb runs into the PID limit; the platform keeps answering meanwhile.
    let bomb = escape.shell_in(
        &escape.chat.agent_id,
        "bomb() { bomb | bomb & }; bomb; while :; do wait; done",
        10,
    );
    let watch = async {
        let mut slowest = Duration::ZERO;
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(8) {
            let asked = std::time::Instant::now();
            let answered = tokio::time::timeout(Duration::from_secs(5), reqwest::get(&health))
                .await
                .is_ok_and(|r| r.is_ok_and(|r| r.status().is_success()));
            assert!(
                answered,
                "the platform stopped answering during the fork bomb"
            );
            slowest = slowest.max(asked.elapsed());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        slowest
    };
    let (result, slowest) = tokio::join!(bomb, watch);
    let output = result["output"].as_str().unwrap_or_default();
    assert!(
        output.contains("Resource temporarily unavailable") || output.contains("retry"),
        "the bomb ran into the PID limit: {result}"
    );
    assert!(
        slowest < Duration::from_secs(5),
        "health answered within {slowest:?}"
    );
    // The tool's timeout killed the bomb's process group: the agent works again.
    let after = escape.shell("echo alive").await;
    assert!(
        after.contains("alive"),
        "the agent answers after the bomb: {after:?}"
    );

    // A memory hog is killed inside its sandbox: its run ends with an error frame that says
    // so, the model is not asked to carry on, and both agents answer their next message.
    let (hog, end) = escape
        .run_shell(
            &escape.other,
            "python3 -c 'b = bytearray(1024 * 1024 * 1024); print(len(b))'; echo exit=$?",
            60,
            None,
        )
        .await;
    let output = hog["output"].as_str().unwrap_or_default();
    assert!(
        output.contains("exit=137") || output.contains("Killed"),
        "the hog was OOM-killed: {hog}"
    );
    assert_eq!(
        end.kind(),
        "error",
        "the hog's run ends with an error: {end:?}"
    );
    assert_eq!(end.data["code"], "sandbox_out_of_memory", "{end:?}");
    let message = end.data["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("memory limit") && message.contains("next message"),
        "the user reads what happened: {message}"
    );
    assert_eq!(end.data["retryable"], false, "{end:?}");
    // Nothing was queued for a second model turn: had the run carried on, the model server's
    // refusal would have ended it with another code.

    // The operator hears of it: a fact on the agent, and a mail to the admins.
    let platform = &escape.chat.platform;
    let alerted = warren_testkit::wait_for(Duration::from_secs(30), || async {
        platform
            .agent_events(&escape.other)
            .await
            .into_iter()
            .find(|event| event["type"] == "SandboxAlerted")
    })
    .await;
    assert_eq!(alerted["data"]["alert"], "out_of_memory", "{alerted}");
    let mail = warren_testkit::wait_for(Duration::from_secs(30), || async {
        platform
            .smtp
            .mails_to("operator@admin.test")
            .into_iter()
            .find(|mail| mail.text().contains(&escape.other))
    })
    .await;
    let subject = mail.header("Subject").expect("subject");
    assert!(subject.contains("out of memory"), "{subject}");
    assert!(mail.text().contains("memory limit"), "{}", mail.text());
    let other = escape.shell_in(&escape.other, "echo other-alive", 10).await;
    assert!(
        other["output"]
            .as_str()
            .unwrap_or_default()
            .contains("other-alive"),
        "the hog's agent answers: {other}"
    );
    assert!(escape.shell("echo alive").await.contains("alive"));
}
