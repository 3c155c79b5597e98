//! The owner's hands in a running agent, end to end: `POST /api/v1/agents/{id}/exec` streams a
//! real `warren-agent`'s shell output and `PUT /api/v1/files/{agent}/{path}` streams an upload
//! into its workspace; both are recorded in the agent's log (ADR 18), and both are refused
//! to anyone but the owner, for a stopped agent, and for bad input.

mod chat_support;
mod common;
mod edge_support;

use chat_support::{Chat, RunStream};
use serde_json::{Value, json};
use std::time::Duration;
use warren_testkit::{wait_for, wait_until};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Every event on the agent's subject, oldest first, as stored (envelopes with `type`,
/// `actor` and `data`).
async fn agent_log(chat: &Chat) -> Vec<Value> {
    let js = chat.platform.nats.jetstream().await;
    let mut stream = js.get_stream("AGENTS").await.expect("agents stream");
    let last = stream.info().await.expect("info").state.last_sequence;
    let subject = format!("agent.{}", chat.agent_id);
    let mut events = vec![];
    for seq in 1..=last {
        let Ok(message) = stream.get_raw_message(seq).await else {
            continue;
        };
        if message.subject.as_str() == subject {
            let commit: Value = serde_json::from_slice(&message.payload).expect("commit JSON");
            events.extend(commit.as_array().expect("a commit is an array").clone());
        }
    }
    events
}

/// The logged events of `kind`.
async fn logged(chat: &Chat, kind: &str) -> Vec<Value> {
    agent_log(chat)
        .await
        .into_iter()
        .filter(|event| event["type"] == kind)
        .collect()
}

/// `POST /agents/{id}/exec` with `body` as `token`, optionally with an idempotency key.
async fn post_exec(chat: &Chat, token: &str, body: Value, key: Option<&str>) -> reqwest::Response {
    let mut request = chat
        .platform
        .http
        .post(format!(
            "{}/api/v1/agents/{}/exec",
            chat.platform.base, chat.agent_id
        ))
        .bearer_auth(token)
        .json(&body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.expect("exec request")
}

/// `PUT /files/{agent}/{path}` of `body` as `token`.
async fn put_file(chat: &Chat, token: &str, path: &str, body: reqwest::Body) -> reqwest::Response {
    chat.platform
        .http
        .put(format!(
            "{}/api/v1/files/{}/{path}",
            chat.platform.base, chat.agent_id
        ))
        .bearer_auth(token)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .expect("upload request")
}

/// The status and error code of a refused request.
async fn refusal(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("an error envelope");
    (status, body["error"].clone())
}

#[tokio::test]
async fn an_exec_streams_stdout_stderr_and_its_exit_and_is_recorded_in_the_agents_log() {
    let chat = Chat::start(&[]).await;
    let command = "echo hi; echo err >&2; exit 3";
    let response = post_exec(
        &chat,
        &chat.user.access,
        json!({"command": command, "timeout_ms": 10_000}),
        Some("exec-1"),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let mut frames = RunStream::new(response);
    let exit = frames.until("exit").await;
    assert_eq!(exit.data["code"], 3, "{:?}", frames.frames);
    assert_eq!(exit.data["timed_out"], false);
    let output = |kind: &str| -> String {
        frames
            .frames
            .iter()
            .filter(|f| f.kind() == kind)
            .filter_map(|f| f.data["data"].as_str())
            .collect()
    };
    assert_eq!(output("stdout"), "hi\n");
    assert_eq!(output("stderr"), "err\n");
    assert!(frames.next().await.is_none(), "the stream ends after exit");

    // The log holds who asked to run what, then how it ended (recorded by the edge).
    let requested = logged(&chat, "ExecRequested").await;
    assert_eq!(requested.len(), 1, "{requested:?}");
    assert_eq!(requested[0]["data"]["command"], command);
    assert_eq!(requested[0]["data"]["timeout_ms"], 10_000);
    assert_eq!(requested[0]["actor"]["kind"], "user");
    let me = chat
        .platform
        .get("/api/v1/users/me", Some(&chat.user.access))
        .await;
    assert_eq!(requested[0]["data"]["user_id"], me.body["id"]);
    let exec_id = requested[0]["data"]["exec_id"].clone();
    let finished = wait_for(TIMEOUT, || async {
        logged(&chat, "ExecFinished").await.into_iter().next()
    })
    .await;
    assert_eq!(finished["data"]["exec_id"], exec_id);
    assert_eq!(finished["data"]["exit_code"], 3);
    assert_eq!(finished["data"]["failure"], Value::Null);
    assert_eq!(finished["actor"], json!({"kind": "system", "id": "edge"}));

    // The same idempotency key does not run the command again.
    let again = post_exec(
        &chat,
        &chat.user.access,
        json!({"command": command, "timeout_ms": 10_000}),
        Some("exec-1"),
    )
    .await;
    let (status, error) = refusal(again).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (409, Some("exec_already_ran"))
    );
    assert_eq!(logged(&chat, "ExecRequested").await.len(), 1);

    // A command the runtime cannot run in the named directory is refused before any stream,
    // and its end is recorded as refused.
    let response = post_exec(
        &chat,
        &chat.user.access,
        json!({"command": "pwd", "cwd": "no-such-dir"}),
        None,
    )
    .await;
    let (status, error) = refusal(response).await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["details"]["fields"][0]["field"], "cwd");
    wait_until(TIMEOUT, || async {
        logged(&chat, "ExecFinished")
            .await
            .iter()
            .any(|event| event["data"]["failure"] == "refused")
    })
    .await;

    // A client that hangs up ends the exec (the runtime kills the command) and the log says so,
    // long before the command would have finished.
    let response = post_exec(
        &chat,
        &chat.user.access,
        json!({"command": "echo started; sleep 120; touch late"}),
        None,
    )
    .await;
    let mut frames = RunStream::new(response);
    assert_eq!(frames.until("stdout").await.data["data"], "started\n");
    let workspace = chat.workspace().canonicalize().expect("workspace");
    wait_until(TIMEOUT, || async { sleeping(&workspace) }).await;
    drop(frames);
    wait_until(Duration::from_secs(40), || async {
        logged(&chat, "ExecFinished")
            .await
            .iter()
            .any(|event| event["data"]["failure"] == "client_gone")
    })
    .await;
    wait_until(TIMEOUT, || async { !sleeping(&workspace) }).await;
    assert!(!chat.workspace().join("late").exists());
}

/// Whether a `sleep 120` started in `workspace` still runs.
fn sleeping(workspace: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cwd = std::fs::read_link(entry.path().join("cwd")).ok();
        cmdline == b"sleep\x00120\x00" && cwd.is_some_and(|cwd| cwd.starts_with(workspace))
    })
}

#[tokio::test]
async fn an_exec_is_refused_to_others_for_bad_bodies_and_on_a_stopped_agent_and_nothing_runs() {
    let chat = Chat::start(&[]).await;
    let other = chat.platform.sign_in("other@example.com").await;
    let marker = chat.workspace().join("ran");
    let touch = json!({"command": "touch ran"});

    let (status, error) = refusal(post_exec(&chat, &other.access, touch.clone(), None).await).await;
    assert_eq!((status, error["code"].as_str()), (404, Some("not_found")));

    for (body, field) in [
        (json!({"command": "touch ran", "shell": "zsh"}), "shell"),
        (json!({"command": 5}), "command"),
        (
            json!({"command": "touch ran", "timeout_ms": "soon"}),
            "timeout_ms",
        ),
        (json!({"cwd": "."}), "command"),
        (json!({"command": "touch ran", "cwd": "../outside"}), "cwd"),
        (json!({"command": "touch ran\u{0}"}), "command"),
        (json!({"command": "   "}), "command"),
    ] {
        let response = post_exec(&chat, &chat.user.access, body.clone(), None).await;
        let (status, error) = refusal(response).await;
        assert_eq!(status, 422, "{body}: {error}");
        assert_eq!(error["code"], "validation_failed", "{body}");
        assert_eq!(
            error["details"]["fields"][0]["field"], field,
            "{body}: {error}"
        );
    }

    let stopped = chat
        .platform
        .post(
            &format!("/api/v1/agents/{}/stop", chat.agent_id),
            Some(&chat.user.access),
            json!({}),
        )
        .await;
    assert_eq!(stopped.status, 202, "{stopped:?}");
    let (status, error) =
        refusal(post_exec(&chat, &chat.user.access, touch.clone(), None).await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (409, Some("agent_not_running"))
    );
    let (status, error) =
        refusal(put_file(&chat, &chat.user.access, "notes.txt", "x".into()).await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (409, Some("agent_not_running"))
    );

    assert!(!marker.exists(), "no refused exec ran");
    assert!(logged(&chat, "ExecRequested").await.is_empty());
    assert!(logged(&chat, "FileUploaded").await.is_empty());
}

#[tokio::test]
async fn an_upload_writes_the_bytes_the_download_returns_within_the_limit_and_is_recorded() {
    let chat = Chat::start(&[("WARREN_UPLOAD_MAX_BYTES", "4096")]).await;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let response = put_file(
        &chat,
        &chat.user.access,
        "in/data.bin",
        bytes.clone().into(),
    )
    .await;
    assert_eq!(response.status(), 201);
    let answer: Value = response.json().await.expect("JSON");
    assert_eq!(answer, json!({"path": "in/data.bin", "size": 3000}));
    let download = chat
        .platform
        .http
        .get(format!(
            "{}/api/v1/files/{}/in/data.bin",
            chat.platform.base, chat.agent_id
        ))
        .bearer_auth(&chat.user.access)
        .send()
        .await
        .expect("download");
    assert_eq!(download.status(), 200);
    assert_eq!(
        download.bytes().await.expect("bytes").as_ref(),
        bytes.as_slice()
    );
    let uploaded = logged(&chat, "FileUploaded").await;
    assert_eq!(uploaded.len(), 1, "{uploaded:?}");
    assert_eq!(uploaded[0]["data"]["path"], "in/data.bin");
    assert_eq!(uploaded[0]["data"]["size"], 3000);
    assert_eq!(uploaded[0]["actor"]["kind"], "user");

    // Exactly the limit is fine; one byte more is 413, declared or streamed, and nothing is
    // written (the runtime drops what it received).
    let full = put_file(&chat, &chat.user.access, "full.bin", vec![7u8; 4096].into()).await;
    assert_eq!(full.status(), 201);
    let (status, error) =
        refusal(put_file(&chat, &chat.user.access, "big.bin", vec![7u8; 4097].into()).await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    assert_eq!(error["details"]["limit"], 4096);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..5).map(|_| Ok(vec![1u8; 1000])).collect();
    let streamed = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let (status, error) =
        refusal(put_file(&chat, &chat.user.access, "streamed.bin", streamed).await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    let workspace = chat.workspace();
    wait_until(TIMEOUT, || async {
        std::fs::read_dir(&workspace)
            .expect("workspace")
            .flatten()
            .all(|entry| !entry.file_name().to_string_lossy().contains("upload-tmp"))
    })
    .await;
    assert!(!workspace.join("big.bin").exists());
    assert!(!workspace.join("streamed.bin").exists());
    assert_eq!(
        logged(&chat, "FileUploaded").await.len(),
        2,
        "the two written"
    );

    // A path out of the workspace is refused; so is another user.
    for bad in ["..%2Fx", "in/..%2F..%2Fx", "%2Fetc%2Fpasswd"] {
        let (status, error) =
            refusal(put_file(&chat, &chat.user.access, bad, "x".into()).await).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (400, Some("invalid_path")),
            "{bad}"
        );
    }
    assert!(!chat.agent_dir().join("x").exists());
    let other = chat.platform.sign_in("other@example.com").await;
    let (status, _) = refusal(put_file(&chat, &other.access, "mine.txt", "x".into()).await).await;
    assert_eq!(status, 404);
    assert!(!workspace.join("mine.txt").exists());
    assert_eq!(logged(&chat, "FileUploaded").await.len(), 2);

    // One Idempotency-Key: a retry of the same upload is recorded once, but the key reused for
    // another file is recorded again — nothing is written unaudited.
    let keyed = |path: &'static str, body: &'static str| {
        chat.platform
            .http
            .put(format!(
                "{}/api/v1/files/{}/{path}",
                chat.platform.base, chat.agent_id
            ))
            .bearer_auth(&chat.user.access)
            .header("idempotency-key", "upload-1")
            .body(body)
            .send()
    };
    for (path, body) in [
        ("k.txt", "one"),
        ("k.txt", "one"),
        ("k.txt", "two"),
        ("l.txt", "one"),
    ] {
        let answer = keyed(path, body).await.expect("upload");
        assert_eq!(answer.status(), 201, "{path} {body}");
    }
    wait_until(TIMEOUT, || async {
        logged(&chat, "FileUploaded").await.len() == 5
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(workspace.join("k.txt")).expect("k"),
        "two"
    );
}
