//! The bench's clients: WebSocket clients of the gateway protocol v1 and SSE readers of
//! `GET /api/v1/conversations/{id}/events`, each following one conversation and recording, for
//! every stamped token it receives, the time from its publication to its arrival.
//!
//! Kept small on purpose (a 4 KiB WebSocket read buffer, a raw TCP SSE reader that only splits
//! lines) so that 10,000 of them and the server under test share 2 cores without the clients
//! being what is measured.

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Handshakes in flight while clients connect.
const OPEN_CONCURRENCY: usize = 64;
/// How long one handshake step (upgrade, `connect`, `sessions.switch`, SSE head) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Latency buckets grow by this factor (2% resolution).
const GROWTH: f64 = 1.02;
/// Enough buckets for 1 µs to over 100 s.
const BUCKETS: usize = 1000;

/// Wall-clock nanoseconds: the publisher and the clients share the clock (one machine).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The publication time a frame carries: the digits after the first `@` (the token text is
/// `@<ns>`; nothing else in a token frame has an `@`).
fn stamp(frame: &[u8]) -> Option<u64> {
    let at = frame.iter().position(|&b| b == b'@')?;
    let digits = frame[at + 1..].iter().take_while(|b| b.is_ascii_digit());
    let mut value = 0u64;
    let mut any = false;
    for digit in digits {
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
        any = true;
    }
    any.then_some(value)
}

/// What the clients of one transport received: deliveries, lost clients and a log-bucketed
/// latency histogram, all lock-free (10,000 clients record into it).
pub struct Recorder {
    /// Frames stamped before this are left over from an earlier phase and ignored.
    since_ns: AtomicU64,
    deliveries: AtomicU64,
    dropped: AtomicU64,
    buckets: Box<[AtomicU64]>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            since_ns: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// Starts a phase: latencies from now on only.
    pub fn start_phase(&self) {
        for bucket in &*self.buckets {
            bucket.store(0, Ordering::Relaxed);
        }
        self.since_ns.store(now_ns(), Ordering::Relaxed);
    }

    /// Deliveries so far (all phases).
    pub fn deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::Relaxed)
    }

    /// Clients whose connection ended before the bench stopped them.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The latencies of this phase.
    pub fn latencies(&self) -> Latencies {
        Latencies(
            self.buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        )
    }

    fn receive(&self, frame: &[u8]) {
        let received = now_ns();
        let Some(stamp) = stamp(frame) else { return };
        if stamp < self.since_ns.load(Ordering::Relaxed) {
            return;
        }
        let micros = received.saturating_sub(stamp) as f64 / 1e3;
        let bucket = if micros <= 1.0 {
            0
        } else {
            ((micros.ln() / GROWTH.ln()) as usize + 1).min(BUCKETS - 1)
        };
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.deliveries.fetch_add(1, Ordering::Relaxed);
    }
}

/// A latency histogram (copied out of a [`Recorder`]).
#[derive(Clone)]
pub struct Latencies(Vec<u64>);

impl Latencies {
    /// Adds another histogram's counts.
    pub fn merge(mut self, other: &Latencies) -> Self {
        for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
            *mine += theirs;
        }
        self
    }

    /// The `p` quantile in ms (the upper edge of its bucket); NaN when empty.
    pub fn quantile_ms(&self, p: f64) -> f64 {
        let total: u64 = self.0.iter().sum();
        if total == 0 {
            return f64::NAN;
        }
        let rank = ((total as f64 * p).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, count) in self.0.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return GROWTH.powi(bucket as i32) / 1e3;
            }
        }
        f64::INFINITY
    }
}

/// A server the clients talk to.
#[derive(Clone)]
pub struct Target {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The access token (the bare server ignores it).
    pub token: Arc<str>,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket client that has connected and switched to its conversation.
pub struct Ws(Socket);

impl Ws {
    /// Upgrades `/ws`, sends `connect` with the token, then `sessions.switch` to `conversation`
    /// after `after` (so it starts live, with nothing to replay).
    pub async fn open(target: &Target, conversation: Uuid, after: u64) -> Result<Self, String> {
        let config = WebSocketConfig::default().read_buffer_size(4096);
        let url = format!("ws://{}/ws", target.addr);
        let upgrade = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
        let (socket, _) = tokio::time::timeout(SETUP_TIMEOUT, upgrade)
            .await
            .map_err(|_| "websocket upgrade timed out".to_owned())?
            .map_err(|err| format!("websocket upgrade: {err}"))?;
        let mut ws = Self(socket);
        let token: &str = &target.token;
        ws.call(
            "connect",
            json!({"version": "1", "clientType": "bench", "token": token}),
        )
        .await?;
        ws.call(
            "sessions.switch",
            json!({"sessionId": conversation, "after": after}),
        )
        .await?;
        Ok(ws)
    }

    async fn call(&mut self, method: &str, params: Value) -> Result<(), String> {
        let frame = json!({"type": "req", "id": method, "method": method, "params": params});
        self.0
            .send(Message::Text(frame.to_string().into()))
            .await
            .map_err(|err| format!("{method}: {err}"))?;
        loop {
            let next = tokio::time::timeout(SETUP_TIMEOUT, self.0.next())
                .await
                .map_err(|_| format!("{method}: no answer in time"))?;
            match next {
                Some(Ok(Message::Text(text))) => {
                    let answer: Value = serde_json::from_str(&text)
                        .map_err(|err| format!("{method}: not JSON: {err}"))?;
                    if answer["type"] == "res" && answer["id"] == method {
                        return match answer["ok"].as_bool() {
                            Some(true) => Ok(()),
                            _ => Err(format!("{method} refused: {answer}")),
                        };
                    }
                }
                Some(Ok(Message::Close(close))) => {
                    return Err(format!("{method}: closed: {close:?}"));
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(format!("{method}: {err}")),
                None => return Err(format!("{method}: connection ended")),
            }
        }
    }

    /// Reads until `stop` (or the server ends the connection, which counts as dropped).
    pub async fn read(mut self, recorder: Arc<Recorder>, stop: CancellationToken) {
        loop {
            let message = tokio::select! {
                _ = stop.cancelled() => return,
                message = self.0.next() => message,
            };
            match message {
                Some(Ok(Message::Text(text))) => recorder.receive(text.as_bytes()),
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    recorder.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                // Pings are answered by tungstenite while reading.
                Some(Ok(_)) => {}
            }
        }
    }
}

/// An SSE client whose response head said 200.
pub struct Sse {
    tcp: TcpStream,
    /// Bytes read but not yet split into lines.
    pending: Vec<u8>,
}

impl Sse {
    /// `GET /api/v1/conversations/{conversation}/events?after={after}` with the token.
    pub async fn open(target: &Target, conversation: Uuid, after: u64) -> Result<Self, String> {
        let mut tcp = tokio::time::timeout(SETUP_TIMEOUT, TcpStream::connect(target.addr))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|err| format!("connect: {err}"))?;
        tcp.set_nodelay(true)
            .map_err(|err| format!("nodelay: {err}"))?;
        let request = format!(
            "GET /api/v1/conversations/{conversation}/events?after={after} HTTP/1.1\r\n\
             Host: {}\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\n\r\n",
            target.addr, target.token
        );
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|err| format!("request: {err}"))?;
        let mut pending = Vec::with_capacity(1024);
        loop {
            let read = tokio::time::timeout(SETUP_TIMEOUT, tcp.read_buf(&mut pending))
                .await
                .map_err(|_| "no response head in time".to_owned())?
                .map_err(|err| format!("response: {err}"))?;
            if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                if !pending.starts_with(b"HTTP/1.1 200") {
                    let head = String::from_utf8_lossy(&pending[..end]).into_owned();
                    return Err(format!("refused: {head}"));
                }
                pending.drain(..end + 4);
                return Ok(Self { tcp, pending });
            }
            if read == 0 || pending.len() > 16 * 1024 {
                return Err("no response head".to_owned());
            }
        }
    }

    /// Reads until `stop` (or the server ends the stream, which counts as dropped). Chunked
    /// encoding is not decoded: each event is one chunk, so its `data:` line arrives whole
    /// between the chunk-size lines, which are skipped like every other non-`data:` line.
    pub async fn read(mut self, recorder: Arc<Recorder>, stop: CancellationToken) {
        loop {
            let mut start = 0;
            while let Some(len) = self.pending[start..].iter().position(|&b| b == b'\n') {
                let line = &self.pending[start..start + len];
                if line.starts_with(b"data:") {
                    recorder.receive(line);
                }
                start += len + 1;
            }
            self.pending.drain(..start);
            let read = tokio::select! {
                _ = stop.cancelled() => return,
                read = self.tcp.read_buf(&mut self.pending) => read,
            };
            if !matches!(read, Ok(n) if n > 0) {
                recorder.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// Which kind of client.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Transport {
    /// The gateway protocol v1 over `/ws`.
    Ws,
    /// `GET /api/v1/conversations/{id}/events`.
    Sse,
}

/// The clients of one server and what they received.
pub struct Clients {
    target: Target,
    /// What the WebSocket clients received.
    pub ws: Arc<Recorder>,
    /// What the SSE clients received.
    pub sse: Arc<Recorder>,
    /// Cancelling it ends every client.
    pub stop: CancellationToken,
    /// Clients opened so far.
    pub connected: usize,
}

impl Clients {
    /// No clients yet, for `target`.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            ws: Recorder::new(),
            sse: Recorder::new(),
            stop: CancellationToken::new(),
            connected: 0,
        }
    }

    /// Opens `per_conversation` clients of `transport` on each conversation (spread evenly),
    /// each starting live after `after`; panics, with the first error, unless all connect.
    pub async fn open(
        &mut self,
        transport: Transport,
        conversations: &[Uuid],
        per_conversation: usize,
        after: u64,
    ) {
        let jobs: Vec<Uuid> = (0..per_conversation)
            .flat_map(|_| conversations.iter().copied())
            .collect();
        let wanted = jobs.len();
        let errors: Vec<String> = futures::stream::iter(jobs)
            .map(|conversation| {
                let target = self.target.clone();
                let stop = self.stop.clone();
                let (ws, sse) = (self.ws.clone(), self.sse.clone());
                async move {
                    match transport {
                        Transport::Ws => {
                            let client = Ws::open(&target, conversation, after).await?;
                            tokio::spawn(client.read(ws, stop));
                        }
                        Transport::Sse => {
                            let client = Sse::open(&target, conversation, after).await?;
                            tokio::spawn(client.read(sse, stop));
                        }
                    }
                    Ok::<_, String>(())
                }
            })
            .buffer_unordered(OPEN_CONCURRENCY)
            .filter_map(|result| async move { result.err() })
            .collect()
            .await;
        assert!(
            errors.is_empty(),
            "{} of {wanted} {transport:?} clients failed to connect; first: {}",
            errors.len(),
            errors[0]
        );
        self.connected += wanted;
    }

    /// Deliveries to all of them.
    pub fn deliveries(&self) -> u64 {
        self.ws.deliveries() + self.sse.deliveries()
    }

    /// Clients of either kind the server dropped.
    pub fn dropped(&self) -> u64 {
        self.ws.dropped() + self.sse.dropped()
    }
}
