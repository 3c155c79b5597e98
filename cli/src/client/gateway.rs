//! The gateway protocol v1 over WebSocket, client side: `connect` first, then `req` frames
//! answered by `res` frames with the same id, and `event` frames in between. Events that arrive
//! while a request waits for its answer are kept, in order, for [`Gateway::next_event`].

use super::events::Event;
use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::VecDeque;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A refused request: the gateway's stable `errorCode` and its sentence.
#[derive(Debug, thiserror::Error)]
#[error("{message} ({code})")]
pub struct GatewayRefused {
    /// `invalid_params`, `not_found`, `no_session`, …
    pub code: String,
    /// The gateway's sentence.
    pub message: String,
}

/// One frame from the gateway (an event kept whole, `type` included, for `--json`).
#[derive(Debug)]
enum Frame {
    Res(Res),
    Event(Value),
}

#[derive(Debug, Deserialize)]
struct Res {
    id: String,
    ok: bool,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, rename = "errorCode")]
    error_code: Option<String>,
}

/// An open, connected gateway socket.
pub struct Gateway {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    backlog: VecDeque<Event>,
}

/// The gateway's address for the edge at `base` (`http://…` → `ws://…/ws`).
pub fn ws_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    let rest = base
        .strip_prefix("https://")
        .map(|rest| format!("wss://{rest}"))
        .or_else(|| {
            base.strip_prefix("http://")
                .map(|rest| format!("ws://{rest}"))
        })
        .unwrap_or_else(|| base.to_owned());
    format!("{rest}/ws")
}

impl Gateway {
    /// Opens the socket and performs the `connect` handshake with `token`.
    pub async fn connect(base: &str, token: &str) -> anyhow::Result<Self> {
        let url = ws_url(base);
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .with_context(|| format!("cannot open the gateway at {url}"))?;
        let mut gateway = Self {
            socket,
            next_id: 0,
            backlog: VecDeque::new(),
        };
        gateway
            .call(
                "connect",
                json!({"version": "1", "clientType": "cli", "token": token}),
            )
            .await
            .context("the gateway refused the connection")?;
        Ok(gateway)
    }

    /// Sends `method` with `params` and waits for its answer's payload; a refusal is a
    /// [`GatewayRefused`].
    pub async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id.to_string();
        let request = json!({"type": "req", "id": id, "method": method, "params": params});
        self.socket
            .send(Message::text(request.to_string()))
            .await
            .context("the gateway connection is gone")?;
        loop {
            match self.read().await? {
                Some(Frame::Res(res)) if res.id == id => {
                    return if res.ok {
                        Ok(res.payload)
                    } else {
                        Err(GatewayRefused {
                            code: res.error_code.unwrap_or_else(|| "refused".into()),
                            message: res.error.unwrap_or_default(),
                        }
                        .into())
                    };
                }
                Some(Frame::Res(_)) => {}
                Some(Frame::Event(raw)) => self.backlog.push_back(Event::parse(raw)),
                None => bail!("the gateway closed the connection during {method}"),
            }
        }
    }

    /// The next event; `None` once the gateway closed the connection. Cancel-safe.
    pub async fn next_event(&mut self) -> anyhow::Result<Option<Event>> {
        if let Some(event) = self.backlog.pop_front() {
            return Ok(Some(event));
        }
        loop {
            match self.read().await? {
                Some(Frame::Event(raw)) => return Ok(Some(Event::parse(raw))),
                Some(Frame::Res(_)) => {}
                None => return Ok(None),
            }
        }
    }

    /// The next protocol frame; `None` when the connection closed.
    async fn read(&mut self) -> anyhow::Result<Option<Frame>> {
        while let Some(message) = self.socket.next().await {
            let text = match message.context("the gateway connection broke")? {
                Message::Text(text) => text,
                Message::Close(_) => return Ok(None),
                _ => continue,
            };
            let unexpected = || format!("unexpected frame from the gateway: {text}");
            let value: Value = serde_json::from_str(text.as_str()).with_context(unexpected)?;
            let frame = match value.get("type").and_then(Value::as_str) {
                Some("event") => Frame::Event(value),
                Some("res") => Frame::Res(serde_json::from_value(value).with_context(unexpected)?),
                _ => bail!(unexpected()),
            };
            return Ok(Some(frame));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_is_ws_on_the_edge_address() {
        assert_eq!(ws_url("http://127.0.0.1:8080/"), "ws://127.0.0.1:8080/ws");
        assert_eq!(ws_url("https://warren.example"), "wss://warren.example/ws");
    }
}
