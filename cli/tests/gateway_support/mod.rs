//! A WebSocket client of the gateway protocol v1 for the end-to-end tests.

#![allow(dead_code)]

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;

const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One connection, with every event it has received.
pub struct Ws {
    socket: Socket,
    next_id: u64,
    pub events: Vec<Value>,
}

impl Ws {
    /// Opens `/ws` without a handshake.
    pub async fn open(base: &str) -> Self {
        let url = format!("{}/ws", base.replacen("http://", "ws://", 1));
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket upgrade");
        Self {
            socket,
            next_id: 0,
            events: Vec::new(),
        }
    }

    /// Opens `/ws` over a socket with a tiny receive buffer, so that a client which stops
    /// reading soon stops the server's writes to it too, and connects with `token`.
    pub async fn connect_small_window(base: &str, token: &str) -> Self {
        let url = format!("{}/ws", base.replacen("http://", "ws://", 1));
        let address = base
            .trim_start_matches("http://")
            .parse()
            .expect("host:port");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("receive buffer");
        let stream = socket.connect(address).await.expect("tcp connect");
        let (socket, _) =
            tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
                .await
                .expect("websocket upgrade");
        let mut ws = Self {
            socket,
            next_id: 0,
            events: Vec::new(),
        };
        ws.handshake(token).await;
        ws
    }

    /// Sends `connect` with `token`; its answer's payload.
    async fn handshake(&mut self, token: &str) -> Value {
        let answer = self
            .call(
                "connect",
                json!({"version": "1", "clientType": "cli", "token": token}),
            )
            .await;
        assert_eq!(answer["ok"], true, "{answer}");
        answer["payload"].clone()
    }

    /// Opens a new session with `agent`; its id.
    pub async fn new_session(&mut self, agent: &str) -> String {
        let created = self.call("sessions.new", json!({"agentId": agent})).await;
        assert_eq!(created["ok"], true, "{created}");
        created["payload"]["sessionId"]
            .as_str()
            .expect("session id")
            .to_owned()
    }

    /// Switches to `session`.
    pub async fn switch(&mut self, session: &str) {
        let switched = self
            .call("sessions.switch", json!({"sessionId": session}))
            .await;
        assert_eq!(switched["ok"], true, "{switched}");
    }

    /// Opens `/ws` and connects with `token`; returns the connect answer's payload too.
    pub async fn connect(base: &str, token: &str) -> (Self, Value) {
        let mut ws = Self::open(base).await;
        let hello = ws.handshake(token).await;
        (ws, hello)
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: &str) {
        self.socket
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// Sends one raw frame as it is (for frames that break the protocol).
    pub async fn send_frame(&mut self, frame: Frame) {
        self.socket.send(Message::Frame(frame)).await.expect("send");
    }

    /// Sends a request and returns its response (events meanwhile are kept in `events`).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = format!("req-{}", self.next_id);
        let frame = json!({"type": "req", "id": id, "method": method, "params": params});
        self.send_text(&frame.to_string()).await;
        loop {
            let frame = self
                .frame()
                .await
                .unwrap_or_else(|close| panic!("closed while waiting for {method}: {close:?}"));
            if frame["type"] == "res" && frame["id"] == id.as_str() {
                return frame;
            }
        }
    }

    /// The next frame (events are also kept); `Err` with the close frame when it closes.
    pub async fn frame(&mut self) -> Result<Value, Option<CloseFrame>> {
        // One deadline for the frame, however many pings arrive meanwhile.
        let deadline = tokio::time::Instant::now() + FRAME_TIMEOUT;
        loop {
            let message = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .expect("a frame in time");
            match message {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text).expect("JSON frame");
                    if frame["type"] == "event" {
                        self.events.push(frame.clone());
                    }
                    return Ok(frame);
                }
                Some(Ok(Message::Close(close))) => return Err(close),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(None),
            }
        }
    }

    /// Reads until an event named `name` arrives (or was already received after `from`).
    pub async fn until(&mut self, name: &str) -> Value {
        loop {
            let frame = self
                .frame()
                .await
                .unwrap_or_else(|close| panic!("closed before {name}: {close:?}"));
            if frame["type"] == "event" && frame["event"] == name {
                return frame;
            }
        }
    }

    /// Waits for the server to close the connection; its close frame.
    pub async fn closed(&mut self) -> Option<CloseFrame> {
        loop {
            match self.frame().await {
                Ok(_) => continue,
                Err(close) => return close,
            }
        }
    }
}
