//! The non-chat routes: auth, health, pending, files (with path confinement) and exec.

mod common;

use std::io::{Read, Write};

use common::{Agent, SseReader, TIMEOUT, TOKEN, alive, kinds, of_kind, read_pid};
use reqwest::Method;
use serde_json::{Value, json};
use warren_testkit::{ModelServer, wait_until};

#[tokio::test]
async fn a_missing_or_wrong_token_is_refused_with_401_and_health_needs_none() {
    let model = ModelServer::start().await;
    let agent = Agent::start(&model, |_| {}).await;
    let http = reqwest::Client::new();
    let routes = [
        (Method::POST, "/chat"),
        (Method::DELETE, "/chat/c"),
        (Method::POST, "/chat/c/cancel"),
        (Method::GET, "/pending"),
        (Method::GET, "/files/a.txt"),
        (Method::POST, "/files/a.txt"),
        (Method::POST, "/exec"),
    ];
    for (method, path) in routes {
        let url = format!("{}{path}", agent.url);
        let missing = http
            .request(method.clone(), &url)
            .send()
            .await
            .expect("send");
        assert_eq!(missing.status(), 401, "{method} {path} without a token");
        assert_eq!(missing.headers()["www-authenticate"], "Bearer");
        let body: Value = missing.json().await.expect("json");
        assert_eq!(body["error"]["code"], "unauthorized");
        let wrong = http
            .request(method.clone(), &url)
            .bearer_auth(format!("{TOKEN}x"))
            .send()
            .await
            .expect("send");
        assert_eq!(wrong.status(), 401, "{method} {path} with a wrong token");
    }

    let health: Value = http
        .get(format!("{}/health", agent.url))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["runtime"], "warren-agent");
    assert_eq!(model.request_count(), 0);
}

#[tokio::test]
async fn pending_returns_an_empty_message_list() {
    let model = ModelServer::start().await;
    let agent = Agent::start(&model, |_| {}).await;
    let body: Value = agent
        .request(Method::GET, "/pending")
        .send()
        .await
        .expect("pending")
        .json()
        .await
        .expect("json");
    assert_eq!(body, json!({"messages": []}));
}

#[tokio::test]
async fn an_uploaded_file_downloads_byte_for_byte() {
    let model = ModelServer::start().await;
    let agent = Agent::start(&model, |_| {}).await;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();

    let uploaded = agent
        .request(Method::POST, "/files/in/data.bin")
        .body(bytes.clone())
        .send()
        .await
        .expect("upload");
    assert_eq!(uploaded.status(), 201);
    let body: Value = uploaded.json().await.expect("json");
    assert_eq!(body, json!({"path": "in/data.bin", "size": 100_000}));

    let downloaded = agent
        .request(Method::GET, "/files/in/data.bin")
        .send()
        .await
        .expect("download");
    assert_eq!(downloaded.status(), 200);
    assert_eq!(
        downloaded.headers()["content-type"],
        "application/octet-stream"
    );
    assert_eq!(
        downloaded.bytes().await.expect("body").as_ref(),
        bytes.as_slice()
    );

    let missing = agent
        .request(Method::GET, "/files/nope.txt")
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
    let directory = agent
        .request(Method::GET, "/files/in")
        .send()
        .await
        .expect("get");
    assert_eq!(directory.status(), 400);
}

#[tokio::test]
async fn paths_leading_out_of_the_workspace_are_refused() {
    let model = ModelServer::start().await;
    let agent = Agent::start(&model, |_| {}).await;
    let outside = tempfile::tempdir().expect("outside dir");
    std::fs::write(outside.path().join("secret.txt"), "secret").expect("write");
    std::os::unix::fs::symlink(outside.path(), agent.workspace.path().join("link"))
        .expect("symlink");

    let encoded_outside = outside
        .path()
        .join("secret.txt")
        .to_string_lossy()
        .replace('/', "%2F");
    let refused = [
        "/files/..%2F..%2Fetc%2Fpasswd".to_owned(),
        "/files/a%2F..%2F..%2Fsecret.txt".to_owned(),
        format!("/files/{encoded_outside}"),
        "/files/link/secret.txt".to_owned(),
    ];
    for path in &refused {
        let response = agent.request(Method::GET, path).send().await.expect("get");
        assert_eq!(response.status(), 400, "GET {path}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "invalid_path", "GET {path}");
        let response = agent
            .request(Method::POST, path)
            .body("x")
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 400, "POST {path}");
    }
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret.txt")).expect("read"),
        "secret",
        "nothing outside was overwritten"
    );
    assert_eq!(raw_get(&agent, "/files/../../etc/passwd").await, 400);
}

/// Sends a GET with the path exactly as given (HTTP clients normalise `..` away).
async fn raw_get(agent: &Agent, path: &str) -> u16 {
    let address = agent.url.trim_start_matches("http://").to_owned();
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&address).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        response
            .split_whitespace()
            .nth(1)
            .and_then(|status| status.parse().ok())
            .expect("status line")
    })
    .await
    .expect("raw request")
}

#[tokio::test]
async fn an_upload_over_the_limit_is_refused_with_413() {
    let model = ModelServer::start().await;
    let agent = Agent::start(&model, |config| config.limits.max_upload_bytes = 10).await;
    let response = agent
        .request(Method::POST, "/files/big.bin")
        .body(vec![0u8; 11])
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "too_large");
    assert!(!agent.workspace.path().join("big.bin").exists());
}

#[tokio::test]
async fn exec_streams_stdout_stderr_and_the_exit_code() {
    let model = ModelServer::start().await;
    let agent = Agent::start(&model, |_| {}).await;
    let response = agent
        .request(Method::POST, "/exec")
        .json(&json!({"command": "echo out; echo err >&2; exit 7"}))
        .send()
        .await
        .expect("exec");
    assert_eq!(response.status(), 200);
    let events = SseReader::new(response).collect().await;

    let stdout: String = of_kind(&events, "stdout")
        .iter()
        .map(|e| e.data["data"].as_str().expect("data"))
        .collect();
    let stderr: String = of_kind(&events, "stderr")
        .iter()
        .map(|e| e.data["data"].as_str().expect("data"))
        .collect();
    assert_eq!(stdout, "out\n");
    assert_eq!(stderr, "err\n");
    assert_eq!(
        events.last().expect("exit").data,
        json!({"type": "exit", "code": 7, "signal": null, "timed_out": false, "truncated": false})
    );
    assert!(events.iter().all(|e| e.id.is_some()));
}

#[tokio::test]
async fn an_exec_timeout_kills_the_commands_process_group() {
    let model = ModelServer::start().await;
    let agent = Agent::start(&model, |_| {}).await;
    let response = agent
        .request(Method::POST, "/exec")
        .json(&json!({
            "command": "sleep 30 & echo $! > bg.pid; wait",
            "timeout_ms": 300,
        }))
        .send()
        .await
        .expect("exec");
    let events = SseReader::new(response).collect().await;
    let background = read_pid(agent.workspace.path(), "bg.pid").await;

    assert_eq!(kinds(&events), ["exit"]);
    let exit = &events[0].data;
    assert_eq!(exit["timed_out"], true);
    assert_eq!(exit["signal"], 9);
    wait_until(TIMEOUT, || async { !alive(background) }).await;
}

#[tokio::test]
async fn exec_output_beyond_the_cap_is_not_streamed() {
    let model = ModelServer::start().await;
    let agent = Agent::start(&model, |config| config.limits.output_cap = 100).await;
    let response = agent
        .request(Method::POST, "/exec")
        .json(&json!({"command": "head -c 5000 /dev/zero | tr '\\0' a"}))
        .send()
        .await
        .expect("exec");
    let events = SseReader::new(response).collect().await;
    let streamed: usize = of_kind(&events, "stdout")
        .iter()
        .map(|e| e.data["data"].as_str().expect("data").len())
        .sum();
    assert_eq!(streamed, 100);
    let exit = &events.last().expect("exit").data;
    assert_eq!(exit["code"], 0);
    assert_eq!(exit["truncated"], true);
}
