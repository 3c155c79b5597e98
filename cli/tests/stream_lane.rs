//! The stream lane, end to end against the real `warren dev` over raw TCP: follow streams are
//! written by the edge's own HTTP/1 writer (a plain head, frames as they come, the end of the
//! body marked by the end of the connection), refusals get a sized error envelope, and every
//! other connection reaches hyper with its bytes intact, however the client split them.

mod common;
mod edge_support;

use edge_support::Platform;
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A raw HTTP/1.1 client connection.
struct Raw {
    tcp: TcpStream,
    /// Read but not yet consumed.
    pending: Vec<u8>,
}

/// A response head: the status, and the header lines as written, lowercased.
struct Head {
    status: u16,
    lines: Vec<String>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        let prefix = format!("{name}: ");
        self.lines
            .iter()
            .find_map(|line| line.strip_prefix(&prefix))
    }
}

impl Raw {
    async fn connect(platform: &Platform) -> Self {
        let addr = platform.base.trim_start_matches("http://");
        let tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        Self {
            tcp,
            pending: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.expect("write");
    }

    /// Reads more; false at the end of the connection.
    async fn fill(&mut self) -> bool {
        let read = tokio::time::timeout(READ_TIMEOUT, self.tcp.read_buf(&mut self.pending))
            .await
            .expect("a read in time");
        matches!(read, Ok(n) if n > 0)
    }

    async fn head(&mut self) -> Head {
        loop {
            if let Some(end) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&self.pending[..end]).to_lowercase();
                self.pending.drain(..end + 4);
                let mut lines = text.split("\r\n").map(str::to_owned);
                let status_line = lines.next().unwrap_or_default();
                let status = status_line
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("status line {status_line:?}"));
                return Head {
                    status,
                    lines: lines.collect(),
                };
            }
            assert!(self.fill().await, "the connection ended before a head");
        }
    }

    /// Reads until `pending` holds `needle`; everything up to and including it is consumed.
    async fn until(&mut self, needle: &str) -> String {
        loop {
            if let Some(at) = self
                .pending
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
            {
                let upto: Vec<u8> = self.pending.drain(..at + needle.len()).collect();
                return String::from_utf8_lossy(&upto).into_owned();
            }
            assert!(
                self.fill().await,
                "the connection ended before {needle:?}; had {:?}",
                String::from_utf8_lossy(&self.pending)
            );
        }
    }

    /// Reads `n` body bytes.
    async fn body(&mut self, n: usize) -> Vec<u8> {
        while self.pending.len() < n {
            assert!(self.fill().await, "the connection ended inside a body");
        }
        self.pending.drain(..n).collect()
    }

    /// Reads to the end of the connection: everything not yet consumed.
    async fn rest(&mut self) -> String {
        while self.fill().await {}
        String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned()
    }
}

fn feed_request(token: Option<&str>) -> Vec<u8> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!(
        "GET /api/v1/events HTTP/1.1\r\nHost: warren.test\r\n{auth}Accept: text/event-stream\r\n\r\n"
    )
    .into_bytes()
}

async fn open_platform() -> Platform {
    Platform::start(&[("WARREN_APPROVAL", "open")]).await
}

#[tokio::test]
async fn a_follow_stream_is_written_plainly_and_the_server_closing_ends_it_with_a_last_frame() {
    let mut platform = open_platform().await;
    let user = platform.sign_in("lane@example.com").await;
    let mut raw = Raw::connect(&platform).await;
    raw.send(&feed_request(Some(&user.access))).await;
    let head = raw.head().await;
    assert_eq!(head.status, 200, "{:?}", head.lines);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert_eq!(head.header("cache-control"), Some("no-cache"));
    assert_eq!(head.header("connection"), Some("close"));
    assert!(head.header("date").is_some(), "{:?}", head.lines);
    assert_eq!(head.header("transfer-encoding"), None, "{:?}", head.lines);
    assert_eq!(head.header("content-length"), None, "{:?}", head.lines);
    // No chunk framing: the first bytes of the body are the first frame.
    let ready = raw.until("\n\n").await;
    assert_eq!(ready, "data: {\"type\":\"ready\"}\n\n");

    // SIGTERM: the stream gets its last frame, the connection ends, the server exits cleanly.
    let pid = platform
        .warren
        .child
        .id()
        .and_then(|pid| rustix::process::Pid::from_raw(pid as i32))
        .expect("warren's pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let rest = raw.rest().await;
    let last = rest
        .split("\n\n")
        .filter(|frame| !frame.is_empty())
        .last()
        .unwrap_or_default();
    let last: Value = serde_json::from_str(last.trim_start_matches("data: ")).expect("json frame");
    assert_eq!(last["type"], "error", "{rest}");
    assert!(
        platform.warren.wait_success(Duration::from_secs(30)).await,
        "warren did not exit cleanly; log:\n{}",
        platform.warren.log_text()
    );
}

#[tokio::test]
async fn a_refused_follow_gets_a_sized_error_envelope_and_the_connection_closes() {
    let platform = open_platform().await;
    let mut raw = Raw::connect(&platform).await;
    raw.send(&feed_request(None)).await;
    let head = raw.head().await;
    assert_eq!(head.status, 401, "{:?}", head.lines);
    assert_eq!(head.header("connection"), Some("close"));
    let length: usize = head
        .header("content-length")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no content-length: {:?}", head.lines));
    let body: Value = serde_json::from_slice(&raw.body(length).await).expect("json envelope");
    assert!(body["error"]["code"].is_string(), "{body}");
    assert_eq!(raw.rest().await, "", "nothing after the body");

    // Someone else's (or no such) conversation is a 404, as from hyper.
    let user = platform.sign_in("lane@example.com").await;
    let mut raw = Raw::connect(&platform).await;
    let request = format!(
        "GET /api/v1/conversations/{}/events HTTP/1.1\r\nHost: warren.test\r\nAuthorization: Bearer {}\r\n\r\n",
        uuid::Uuid::new_v4(),
        user.access
    );
    raw.send(request.as_bytes()).await;
    assert_eq!(raw.head().await.status, 404);
}

#[tokio::test]
async fn heads_split_byte_by_byte_reach_the_lane_and_hyper_intact() {
    let platform = open_platform().await;
    let user = platform.sign_in("lane@example.com").await;

    // A follow head, one byte per write.
    let mut raw = Raw::connect(&platform).await;
    for byte in feed_request(Some(&user.access)) {
        raw.send(&[byte]).await;
    }
    let head = raw.head().await;
    assert_eq!(head.status, 200, "{:?}", head.lines);
    assert_eq!(raw.until("\n\n").await, "data: {\"type\":\"ready\"}\n\n");

    // Any other request, one byte per write: hyper gets every byte the sniffer read.
    let mut raw = Raw::connect(&platform).await;
    let request = b"GET /api/v1/users/me HTTP/1.1\r\nHost: warren.test\r\n\r\n";
    for byte in request {
        raw.send(&[*byte]).await;
    }
    let head = raw.head().await;
    assert_eq!(head.status, 401, "{:?}", head.lines);
    assert_ne!(head.header("connection"), Some("close"), "{:?}", head.lines);
}

#[tokio::test]
async fn a_connection_that_begins_with_another_request_keeps_alive_for_a_follow_stream() {
    let platform = open_platform().await;
    let user = platform.sign_in("lane@example.com").await;
    let mut raw = Raw::connect(&platform).await;
    raw.send(b"GET /api/v1/health HTTP/1.1\r\nHost: warren.test\r\n\r\n")
        .await;
    let head = raw.head().await;
    assert_eq!(head.status, 200, "{:?}", head.lines);
    let length: usize = head
        .header("content-length")
        .and_then(|n| n.parse().ok())
        .expect("health has a length");
    let health: Value = serde_json::from_slice(&raw.body(length).await).expect("health json");
    assert!(health.is_object(), "{health}");

    // The same connection, now a follow stream: still answered.
    raw.send(&feed_request(Some(&user.access))).await;
    let head = raw.head().await;
    assert_eq!(head.status, 200, "{:?}", head.lines);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    raw.until("{\"type\":\"ready\"}").await;
}
