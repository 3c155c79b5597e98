//! End-to-end support for chat: the real `warren dev` running real `warren-agent` processes
//! against the scripted model server, a signed-in approved user with a running agent, and an SSE
//! reader for the streamed runs.

#![allow(dead_code)]

use crate::edge_support::{Platform, Session};
use futures::StreamExt;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;
use warren_testkit::model_server::ModelServer;
use warren_testkit::wait_for;

/// How long one SSE frame may take to arrive.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

pub use crate::common::agent_bin;

/// A platform with a model server, a user and one running agent.
pub struct Chat {
    pub platform: Platform,
    pub model: ModelServer,
    pub user: Session,
    pub agent_id: String,
}

impl Chat {
    /// Starts everything; `env` goes on top of the chat defaults.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_with(true, env, std::future::ready(())).await
    }

    /// Starts everything, but creates the agent only once `ready` is done (the platform is
    /// up and the user signed in by then).
    pub async fn start_after(env: &[(&str, &str)], ready: impl Future<Output = ()>) -> Self {
        Self::start_with(true, env, ready).await
    }

    /// Starts everything but the platform's model provider (no `WARREN_DEFAULT_*`, and the
    /// local model off): `warren dev` with nothing to answer.
    pub async fn start_without_model_provider(env: &[(&str, &str)]) -> Self {
        Self::start_with(false, env, std::future::ready(())).await
    }

    async fn start_with(
        model_provider: bool,
        env: &[(&str, &str)],
        ready: impl Future<Output = ()>,
    ) -> Self {
        let model = ModelServer::start().await;
        let model_url = model.url();
        let agent_bin = agent_bin().display().to_string();
        let mut vars: Vec<(&str, &str)> = vec![
            ("WARREN_APPROVAL", "open"),
            ("WARREN_AGENT_BIN", &agent_bin),
        ];
        if model_provider {
            vars.extend([
                ("WARREN_DEFAULT_PROVIDER", "openai"),
                ("WARREN_DEFAULT_BASE_URL", &model_url),
                ("WARREN_DEFAULT_API_KEY", "sk-platform"),
            ]);
        }
        vars.extend_from_slice(env);
        let platform = Platform::start(&vars).await;
        let user = platform.sign_in("chatter@example.com").await;
        ready.await;
        let created = platform
            .post(
                "/api/v1/agents",
                Some(&user.access),
                json!({"name": "Helper", "system_prompt": "Be brief."}),
            )
            .await;
        assert_eq!(created.status, 201, "{created:?}");
        let agent_id = created.body["id"].as_str().expect("agent id").to_owned();
        let chat = Self {
            platform,
            model,
            user,
            agent_id,
        };
        chat.wait_running().await;
        chat
    }

    /// Waits until the agent is deployed and running.
    pub async fn wait_running(&self) {
        let path = format!("/api/v1/agents/{}/status", self.agent_id);
        wait_for(Duration::from_secs(60), || async {
            let status = self.platform.get(&path, Some(&self.user.access)).await;
            assert_ne!(status.body["status"], "failed", "{:?}", status.body);
            (status.body["status"] == "running").then_some(())
        })
        .await;
    }

    /// The agent's workspace directory.
    pub fn workspace(&self) -> PathBuf {
        self.agent_dir().join("workspace")
    }

    /// The pid a tool wrote into `file` in the workspace (`echo $$ > file`), once it is there.
    pub async fn tool_pid(&self, file: &str) -> i32 {
        let path = self.workspace().join(file);
        wait_for(FRAME_TIMEOUT, || async {
            std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| text.trim().parse().ok())
        })
        .await
    }

    /// The agent's files under the deployer's data dir.
    pub fn agent_dir(&self) -> PathBuf {
        self.platform
            .dir
            .path()
            .join("data")
            .join("agents")
            .join(&self.agent_id)
    }

    /// The agent runtime's pid, from the deployer's record.
    pub fn agent_pid(&self) -> i32 {
        let text =
            std::fs::read_to_string(self.agent_dir().join("process.json")).expect("process.json");
        let record: Value = serde_json::from_str(&text).expect("process.json is JSON");
        i32::try_from(record["pid"].as_i64().expect("pid")).expect("pid fits")
    }

    /// The payloads of the agent's commits (`agent.<id>`), oldest first.
    pub async fn agent_commits(&self) -> Vec<String> {
        self.platform.agent_commits(&self.agent_id).await
    }

    /// Posts `message` to the agent and returns the run's stream (status 200 asserted).
    pub async fn send(&self, message: &str) -> RunStream {
        self.send_with(json!({"message": message})).await
    }

    /// Posts `body` to the agent's chat route and returns the run's stream.
    pub async fn send_with(&self, body: Value) -> RunStream {
        let response = self.post_chat(body).await;
        assert_eq!(response.status(), 200, "chat refused");
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        RunStream::new(response)
    }

    /// Follows the conversation's events (`GET /conversations/{id}/events`), resuming after
    /// `last_event_id` if given.
    pub async fn follow(&self, conversation_id: &str, last_event_id: Option<u64>) -> RunStream {
        let mut request = self
            .platform
            .http
            .get(format!(
                "{}/api/v1/conversations/{conversation_id}/events",
                self.platform.base
            ))
            .bearer_auth(&self.user.access);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.expect("events request");
        assert_eq!(response.status(), 200, "events refused");
        RunStream::new(response)
    }

    /// A chat with `agent` whose model calls the shell tool with `command` (then answers
    /// `then`, if given): the tool's result and the run's last frame.
    pub async fn run_shell(
        &self,
        agent: &str,
        command: &str,
        timeout_secs: u64,
        then: Option<&str>,
    ) -> (Value, Frame) {
        use warren_testkit::model_server::Reply;
        self.model.push(Reply::tool_call(
            "shell",
            json!({"command": command, "timeout_secs": timeout_secs}),
        ));
        if let Some(then) = then {
            self.model.push(Reply::text(then));
        }
        let response = self
            .platform
            .http
            .post(format!("{}/api/v1/chat/{agent}", self.platform.base))
            .bearer_auth(&self.user.access)
            .json(&json!({"message": "run it"}))
            .send()
            .await
            .expect("chat request");
        assert_eq!(response.status(), 200, "chat refused");
        let mut run = RunStream::new(response);
        let result = loop {
            let frame = run.next().await.expect("a frame");
            match frame.kind() {
                "tool_result" => break frame,
                "error" | "done" => panic!(
                    "the run ended before its tool result: {:?}\nplatform log:\n{}",
                    frame.data,
                    self.platform.warren.log_text()
                ),
                _ => {}
            }
        };
        (result.data, run.finish().await)
    }

    /// Posts to the chat route and returns the raw response.
    pub async fn post_chat(&self, body: Value) -> reqwest::Response {
        self.platform
            .http
            .post(format!(
                "{}/api/v1/chat/{}",
                self.platform.base, self.agent_id
            ))
            .bearer_auth(&self.user.access)
            .json(&body)
            .send()
            .await
            .expect("chat request")
    }
}

/// Agents outlive the deployer by design: kill the test's agent processes when it ends.
impl Drop for Chat {
    fn drop(&mut self) {
        crate::common::kill_agents(&self.agent_dir().join(".."));
    }
}

/// One SSE frame: its `id:` and the JSON of its `data:`.
#[derive(Clone, Debug)]
pub struct Frame {
    pub id: Option<u64>,
    pub data: Value,
}

impl Frame {
    pub fn kind(&self) -> &str {
        self.data["type"].as_str().unwrap_or("")
    }
}

/// A streamed run as its client reads it.
pub struct RunStream {
    body: Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
    pub frames: Vec<Frame>,
}

impl RunStream {
    /// Reads any SSE response of the edge.
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
            frames: Vec::new(),
        }
    }

    /// The next frame other than keepalives; `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Frame> {
        // One deadline for the frame, however many keepalives arrive meanwhile.
        let deadline = tokio::time::Instant::now() + FRAME_TIMEOUT;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut frame = Frame {
                    id: None,
                    data: Value::Null,
                };
                for line in block.lines() {
                    if let Some(id) = line.strip_prefix("id:") {
                        frame.id = Some(id.trim().parse().expect("numeric id"));
                    } else if let Some(data) = line.strip_prefix("data:") {
                        frame.data = serde_json::from_str(data.trim()).expect("JSON data");
                    }
                }
                if frame.kind() == "keepalive" || frame.data.is_null() {
                    continue;
                }
                self.frames.push(frame.clone());
                return Some(frame);
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .expect("an SSE frame in time")?;
            self.buffer
                .push_str(&String::from_utf8_lossy(&chunk.expect("SSE body")));
        }
    }

    /// Reads until a frame of `kind` arrives and returns it.
    pub async fn until(&mut self, kind: &str) -> Frame {
        loop {
            let frame = self
                .next()
                .await
                .unwrap_or_else(|| panic!("stream ended before `{kind}`: {:?}", self.frames));
            if frame.kind() == kind {
                return frame;
            }
        }
    }

    /// Reads to the terminal frame (`done` or `error`) and returns it.
    pub async fn finish(&mut self) -> Frame {
        loop {
            let frame = self
                .next()
                .await
                .unwrap_or_else(|| panic!("stream ended without done/error: {:?}", self.frames));
            if matches!(frame.kind(), "done" | "error") {
                return frame;
            }
        }
    }

    /// The concatenated `text` frames so far.
    pub fn text(&self) -> String {
        self.frames
            .iter()
            .filter(|f| f.kind() == "text")
            .filter_map(|f| f.data["content"].as_str())
            .collect()
    }
}

/// One of the runtime's environment variables, read from `/proc` (what the deployer gave it).
pub fn runtime_env(pid: i32, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("the runtime's environ");
    environ.split(|&b| b == 0).find_map(|entry| {
        let entry = std::str::from_utf8(entry).ok()?;
        entry
            .strip_prefix(name)?
            .strip_prefix('=')
            .map(str::to_owned)
    })
}

/// Whether a process is alive.
pub fn alive(pid: i32) -> bool {
    rustix::process::Pid::from_raw(pid)
        .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok())
}
