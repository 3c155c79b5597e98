//! The README's first command, run as written: `deploy/dev.sh` from a fresh clone, with no
//! `WARREN_*` variable but a free port. It builds what the platform starts (the `warren-agent` it
//! needs is deleted first, as the build cache is shared), and a newcomer signs in with the code
//! from its log as the first user (and so its admin), creates an agent that reaches `running`,
//! and chats: with no model provider configured, the local model (ADR 31) answers, streamed.
//! SIGTERM stops it with every process it started.

mod common;

use common::{free_port, get_json};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use warren_testkit::{wait_for, wait_until};

/// A release build from an empty cache (llama.cpp included) takes a while on two cores.
const BUILD_AND_START: Duration = Duration::from_secs(40 * 60);

/// The build directory this test binary came from (`<target>/debug/deps/…`): the script builds
/// into it too, so a warm cache stays warm.
fn target_dir() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_warren"));
    exe.ancestors()
        .nth(2)
        .expect("the target directory")
        .to_path_buf()
}

fn git(args: &[&str], cwd: &Path) {
    let status = std::process::Command::new("git")
        .args(args)
        .current_dir(cwd)
        .status()
        .expect("git");
    assert!(status.success(), "git {args:?}");
}

/// On the way out (a failed assertion too), SIGTERM to the script's process group: `warren dev`
/// then stops the agent runtimes it started, which a SIGKILL would leave behind.
struct Stop(u32);

impl Drop for Stop {
    fn drop(&mut self) {
        let Some(pid) = rustix::process::Pid::from_raw(self.0 as i32) else {
            return;
        };
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::TERM);
        // Give it the time a graceful stop takes, then make sure.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline
            && rustix::process::test_kill_process_group(pid).is_ok()
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// `pid` and every process under it (from /proc), with their names.
fn tree(pid: u32) -> Vec<(u32, String)> {
    let mut all = Vec::new();
    let mut next = vec![pid];
    while let Some(pid) = next.pop() {
        if let Some(name) = running(pid) {
            all.push((pid, name));
        }
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            next.extend(
                children
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    all
}

/// The program name of a running process, if it still runs (zombies count as gone).
fn running(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (name, rest) = stat.split_once(") ")?;
    let state = rest.split_whitespace().next()?;
    (state != "Z" && state != "X").then(|| name.rsplit_once('(').map_or("", |n| n.1).to_owned())
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn dev_sh_from_a_fresh_clone_reaches_a_first_chat() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root");
    let dir = tempfile::tempdir().expect("tempdir");
    let clone = dir.path().join("warren");
    git(
        &[
            "clone",
            "--quiet",
            &repo.display().to_string(),
            &clone.display().to_string(),
        ],
        dir.path(),
    );
    let target = target_dir();
    let _ = std::fs::remove_file(target.join("release/warren-agent"));

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = dir.path().join("dev.log");
    let file = std::fs::File::create(&log).expect("log");
    let mut command = tokio::process::Command::new("bash");
    command
        .arg("deploy/dev.sh")
        .current_dir(&clone)
        .env_clear()
        .env("WARREN_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("CARGO_TARGET_DIR", &target)
        // The same build, optimised less and without debug info: from an empty cache it is
        // most of CI's time on two cores, and what the test checks does not depend on it.
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .process_group(0);
    // What any shell has: where programs and the toolchain are.
    for name in [
        "PATH",
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "USER",
        "LANG",
        "WARREN_IMAGE_CACHE_DIR",
    ] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    let mut dev = command.spawn().expect("spawn deploy/dev.sh");
    let _stop = Stop(dev.id().expect("pid"));
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    let health = format!("{base}/api/v1/health");
    let up = tokio::time::timeout(BUILD_AND_START, async {
        while !matches!(get_json(&health).await, Some((200, _))) {
            if let Ok(Some(status)) = dev.try_wait() {
                return Err(status);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    })
    .await;
    assert!(
        matches!(up, Ok(Ok(()))),
        "deploy/dev.sh never served health ({up:?}); log:\n{}",
        log_text()
    );
    assert!(
        target.join("release/warren-agent").is_file(),
        "dev.sh builds the agent runtime"
    );

    // Sign in with the code from the log: the first person becomes the admin.
    let http = reqwest::Client::new();
    let email = "newcomer@example.com";
    let (status, _) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/api/v1/auth/login/email"),
        None,
        Some(json!({"email": email})),
    )
    .await;
    assert_eq!(status, 202);
    let code = wait_for(Duration::from_secs(20), || async {
        let log = log_text();
        let at = log.rfind("code: ")? + "code: ".len();
        let code: String = log[at..].chars().take(6).collect();
        code.chars().all(|c| c.is_ascii_digit()).then_some(code)
    })
    .await;
    let (status, pair) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/api/v1/auth/verify-magic-link"),
        None,
        Some(json!({"email": email, "code": code})),
    )
    .await;
    assert_eq!(status, 200, "{pair}");
    let token = pair["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();
    let (_, me) = call(
        &http,
        reqwest::Method::GET,
        format!("{base}/api/v1/users/me"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(me["role"], "admin", "the first user is the admin: {me}");

    // An agent that reaches running.
    let (status, agent) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/api/v1/agents"),
        Some(&token),
        Some(json!({"name": "First", "system_prompt": "Be brief."})),
    )
    .await;
    assert_eq!(status, 201, "{agent}");
    let id = agent["id"].as_str().expect("agent id").to_owned();
    let _container = RemoveContainer(format!("warren-agent-{id}"), format!("warren-ws-{id}"));
    wait_until(Duration::from_secs(120), || async {
        let (_, agent) = call(
            &http,
            reqwest::Method::GET,
            format!("{base}/api/v1/agents/{id}"),
            Some(&token),
            None,
        )
        .await;
        assert_ne!(agent["status"], "failed", "{agent}\n{}", log_text());
        agent["status"] == "running"
    })
    .await;

    // A chat: no provider is configured, so `warren dev` serves the local model and the
    // answer is a real one, streamed in pieces through the model proxy.
    assert_eq!(
        agent["model"], "smollm2-135m-instruct",
        "new agents use the local model: {agent}"
    );
    let response = http
        .post(format!("{base}/api/v1/chat/{id}"))
        .bearer_auth(&token)
        .json(&json!({"message": "What is a rabbit warren? One sentence."}))
        .send()
        .await
        .expect("chat");
    assert_eq!(response.status().as_u16(), 200);
    let body = tokio::time::timeout(Duration::from_secs(180), response.text())
        .await
        .expect("the run ends")
        .expect("body");
    let frames: Vec<Value> = body
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .collect();
    assert!(
        !frames.iter().any(|frame| frame["type"] == "error"),
        "no error: {body}\nlog:\n{}",
        log_text()
    );
    let pieces: Vec<&str> = frames
        .iter()
        .filter(|frame| frame["type"] == "text")
        .filter_map(|frame| frame["content"].as_str())
        .collect();
    assert!(
        pieces.len() > 1 && !pieces.concat().trim().is_empty(),
        "a streamed answer: {body}"
    );
    assert!(
        frames.iter().any(|frame| frame["type"] == "done"),
        "the run completes: {body}"
    );
    assert!(
        log_text().contains("agents talk to the local model"),
        "warren dev says the local model answers; log:\n{}",
        log_text()
    );

    // On this machine (Docker, root) the agent runs in its sandbox container.
    let container = format!("warren-agent-{id}");
    assert_eq!(
        container_status(&container).as_deref(),
        Some("running"),
        "dev.sh built the image and the agent runs in a container; log:\n{}",
        log_text()
    );

    // SIGTERM to the script's process group: everything it started stops, the agent's container
    // and the servers included.
    let started = tree(dev.id().expect("pid"));
    for expected in ["warren", "nats-server", "postgres"] {
        assert!(
            started.iter().any(|(_, name)| name == expected),
            "{expected} among {started:?}"
        );
    }
    let pid = rustix::process::Pid::from_raw(dev.id().expect("pid") as i32).expect("pid");
    rustix::process::kill_process_group(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let stopped = tokio::time::timeout(Duration::from_secs(60), dev.wait()).await;
    assert!(
        stopped.is_ok(),
        "deploy/dev.sh did not stop; log:\n{}",
        log_text()
    );
    wait_until(Duration::from_secs(20), || async {
        started.iter().all(|(pid, _)| running(*pid).is_none())
    })
    .await;
    assert_eq!(
        container_status(&container).as_deref(),
        Some("exited"),
        "the agent's container stopped with warren dev"
    );
    assert!(
        log_text().contains("agent runtimes stopped with the deployer"),
        "the runtimes were stopped by warren dev, not left to die; log:\n{}",
        log_text()
    );
}

/// `docker inspect`'s status of a container, if it exists.
fn container_status(name: &str) -> Option<String> {
    let out = std::process::Command::new("docker")
        .args(["inspect", "--format", "{{.State.Status}}", name])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Removes the agent's container and volume when the test ends.
struct RemoveContainer(String, String);

impl Drop for RemoveContainer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
        let _ = std::process::Command::new("docker")
            .args(["volume", "rm", "-f", &self.1])
            .output();
    }
}
