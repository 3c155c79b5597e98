//! Starting the runtime in-process on port 0 and reading its SSE like a client would.

#![allow(dead_code)]

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use warren_agent::Config;
use warren_testkit::ModelServer;

/// Long enough for any condition these tests wait on.
pub const TIMEOUT: Duration = Duration::from_secs(20);
/// The bearer token the test runtime requires.
pub const TOKEN: &str = "test-agent-token";

/// A runtime serving on 127.0.0.1:<free port> with its own workspace; stopped when dropped.
pub struct Agent {
    pub url: String,
    pub workspace: tempfile::TempDir,
    shutdown: CancellationToken,
    http: reqwest::Client,
}

impl Agent {
    /// Starts a runtime whose model is `model` (OpenAI protocol), adjusted by `configure`.
    pub async fn start(model: &ModelServer, configure: impl FnOnce(&mut Config)) -> Self {
        let workspace = tempfile::tempdir().expect("workspace");
        let mut config = Config::new(workspace.path(), TOKEN);
        config.model.base_url = Some(model.url());
        config.model.model = "test-model".into();
        configure(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            warren_agent::serve(config, listener, stop)
                .await
                .expect("agent serves");
        });
        Self {
            url,
            workspace,
            shutdown,
            http: reqwest::Client::new(),
        }
    }

    /// A request to `path` with the right token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
    }

    /// Fires the runtime's shutdown.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    /// `POST /chat` with `body`.
    pub async fn post_chat(&self, body: Value) -> reqwest::Response {
        self.request(reqwest::Method::POST, "/chat")
            .json(&body)
            .send()
            .await
            .expect("POST /chat")
    }

    /// `POST /chat` and every event until the stream ends.
    pub async fn chat(&self, body: Value) -> Vec<SseEvent> {
        let response = self.post_chat(body).await;
        assert_eq!(response.status(), 200, "POST /chat status");
        SseReader::new(response).collect().await
    }

    /// `POST /chat/{chat_id}/cancel`'s `cancelled` flag.
    pub async fn cancel(&self, chat_id: &str) -> bool {
        let body: Value = self
            .request(reqwest::Method::POST, &format!("/chat/{chat_id}/cancel"))
            .send()
            .await
            .expect("cancel")
            .json()
            .await
            .expect("json");
        body["cancelled"].as_bool().expect("cancelled flag")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// One SSE event: its id and its JSON data.
#[derive(Clone, Debug)]
pub struct SseEvent {
    pub id: Option<u64>,
    pub data: Value,
}

impl SseEvent {
    pub fn kind(&self) -> &str {
        self.data["type"].as_str().unwrap_or("")
    }
}

/// Reads `data:` / `id:` frames from a response body (written independently of the runtime's
/// own parser, so a bug there cannot hide here).
pub struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "an SSE response"
        );
        Self {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next event, or `None` when the stream ends; panics after [`TIMEOUT`] of silence.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id:") {
                        id = Some(value.trim().parse().expect("numeric id"));
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.strip_prefix(' ').unwrap_or(value));
                    }
                }
                if data.is_empty() {
                    continue;
                }
                let data = serde_json::from_str(&data).expect("event data is JSON");
                return Some(SseEvent { id, data });
            }
            let chunk = tokio::time::timeout(TIMEOUT, self.body.next())
                .await
                .expect("an event within the timeout");
            match chunk {
                Some(Ok(bytes)) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Some(Err(err)) => panic!("SSE body failed: {err}"),
                None => return None,
            }
        }
    }

    /// Reads until an event of `kind`, returning it and everything before it.
    pub async fn until(&mut self, kind: &str) -> Vec<SseEvent> {
        let mut seen = Vec::new();
        loop {
            let event = self
                .next()
                .await
                .unwrap_or_else(|| panic!("stream ended before {kind}: {seen:#?}"));
            let found = event.kind() == kind;
            seen.push(event);
            if found {
                return seen;
            }
        }
    }

    /// Every remaining event.
    pub async fn collect(mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

/// The events of `kind`.
pub fn of_kind<'a>(events: &'a [SseEvent], kind: &str) -> Vec<&'a SseEvent> {
    events.iter().filter(|e| e.kind() == kind).collect()
}

/// The event kinds in order, keepalives left out.
pub fn kinds(events: &[SseEvent]) -> Vec<&str> {
    events
        .iter()
        .map(SseEvent::kind)
        .filter(|k| *k != "keepalive")
        .collect()
}

/// Whether `pid` is a live process (a zombie counts as dead).
pub fn alive(pid: i32) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return false;
    };
    if rustix::process::test_kill_process(pid).is_err() {
        return false;
    }
    let stat =
        std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero())).unwrap_or_default();
    // The state follows the parenthesised command name: "pid (comm) S ...".
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
    !matches!(state.and_then(|s| s.chars().next()), Some('Z') | None)
}

/// Waits for `file` (in `dir`) to hold a pid and returns it.
pub async fn read_pid(dir: &std::path::Path, file: &str) -> i32 {
    let path = dir.join(file);
    warren_testkit::wait_for(TIMEOUT, || {
        let path = path.clone();
        async move {
            let text = tokio::fs::read_to_string(&path).await.ok()?;
            text.trim().parse().ok()
        }
    })
    .await
}
