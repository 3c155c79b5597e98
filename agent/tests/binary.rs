//! The real `warren-agent` binary: configured by environment, it prints where it listens, answers
//! like the library does, and stops cleanly on SIGTERM.

mod common;

use std::process::Stdio;

use common::{SseReader, TIMEOUT, kinds};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use warren_testkit::{ModelServer, Reply};

#[tokio::test]
async fn the_binary_prints_its_address_serves_a_chat_and_stops_on_sigterm() {
    let model = ModelServer::start_with_key("sk-env").await;
    model.push(Reply::text("from the binary"));
    let workspace = tempfile::tempdir().expect("workspace");
    let state = tempfile::tempdir().expect("state dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_warren-agent"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WARREN_AGENT_TOKEN", "bin-token")
        .env("WARREN_AGENT_WORKSPACE", workspace.path())
        .env("WARREN_AGENT_STATE_DIR", state.path())
        .env("WARREN_AGENT_BASE_URL", model.url())
        .env("WARREN_AGENT_API_KEY", "sk-env")
        .env("WARREN_AGENT_MODEL", "env-model")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn warren-agent");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(TIMEOUT, lines.next_line())
        .await
        .expect("a first line in time")
        .expect("read")
        .expect("a line");
    let address = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    let url = format!("http://{address}");
    assert!(address.starts_with("127.0.0.1:") && !address.ends_with(":0"));

    let http = reqwest::Client::new();
    let health: Value = http
        .get(format!("{url}/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "ok");

    let response = http
        .post(format!("{url}/chat"))
        .bearer_auth("bin-token")
        .json(&json!({"message": "hi", "chat_id": "u:a"}))
        .send()
        .await
        .expect("chat");
    let events = SseReader::new(response).collect().await;
    assert_eq!(kinds(&events).last(), Some(&"done"));
    assert_eq!(model.requests()[0]["model"], "env-model");
    let persisted = std::fs::read_dir(state.path().join("history"))
        .expect("history dir")
        .count();
    assert_eq!(persisted, 1, "the chat's history is kept in the state dir");

    let pid = child.id().expect("pid");
    let pid =
        rustix::process::Pid::from_raw(i32::try_from(pid).expect("pid fits")).expect("nonzero pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("exits in time")
        .expect("wait");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn the_binary_refuses_to_start_without_a_token() {
    let output = Command::new(env!("CARGO_BIN_EXE_warren-agent"))
        .env_clear()
        .env("WARREN_AGENT_TOKEN", "")
        .output()
        .await
        .expect("run");
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "never claims to be listening");
}
