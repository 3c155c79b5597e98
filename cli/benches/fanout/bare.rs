//! The ceiling: a bare broadcast server on the same HTTP/WebSocket stack as the edge (axum,
//! hyper, tungstenite) and nothing else. One core NATS subscription to `conv.*.live`; each
//! message is framed once (the raw payload as a WebSocket text frame, `data: <payload>\n\n` for
//! SSE) and handed to its conversation's clients through a `tokio::sync::broadcast`. No auth, no
//! log reads, no JSON re-encoding; a client that lags skips what it missed; a 4 KiB WebSocket
//! read buffer instead of tungstenite's 128 KiB default.
//!
//! It runs as a child process (this bench binary re-executed with [`NATS_URL_ENV`] set) so its
//! resident memory is its own; it prints its address on the first line of stdout.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::sync::{Arc, RwLock};
use tokio::sync::broadcast;

/// Set (to the NATS URL) when this binary is to be the bare server.
pub const NATS_URL_ENV: &str = "WARREN_FANOUT_BARE_NATS_URL";
/// The nkey seed it subscribes with (the test server admits keys only).
pub const NATS_SEED_ENV: &str = "WARREN_FANOUT_BARE_NATS_SEED";
/// Frames buffered per conversation, as many as the edge buffers per client.
const ROOM_BUFFER: usize = 256;
/// A WebSocket connection's read buffer.
const READ_BUFFER: usize = 4 * 1024;

/// One message, framed once for every client.
#[derive(Clone)]
struct Frame {
    ws: Utf8Bytes,
    sse: Bytes,
}

/// Each conversation's broadcast channel, created by its first client.
#[derive(Default)]
struct Hub {
    rooms: RwLock<HashMap<String, broadcast::Sender<Frame>>>,
}

impl Hub {
    fn join(&self, conversation: &str) -> broadcast::Receiver<Frame> {
        let mut rooms = self.rooms.write().expect("rooms lock");
        rooms
            .entry(conversation.to_owned())
            .or_insert_with(|| broadcast::channel(ROOM_BUFFER).0)
            .subscribe()
    }

    fn room(&self, conversation: &str) -> Option<broadcast::Sender<Frame>> {
        self.rooms
            .read()
            .expect("rooms lock")
            .get(conversation)
            .cloned()
    }
}

/// Serves until killed.
pub async fn serve(nats_url: &str) {
    let seed = std::env::var(NATS_SEED_ENV).expect("bare: the NATS seed");
    let nats = async_nats::ConnectOptions::with_nkey(seed)
        .connect(nats_url)
        .await
        .expect("bare: nats");
    let subscription = nats
        .subscribe("conv.*.live")
        .await
        .expect("bare: subscribe");
    let hub = Arc::new(Hub::default());
    tokio::spawn(pump(subscription, hub.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bare: bind");
    let addr = listener.local_addr().expect("bare: addr");
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{addr}").expect("bare: stdout");
    stdout.flush().expect("bare: stdout");
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = Router::new()
        .route("/ws", get(ws))
        .route("/api/v1/conversations/{id}/events", get(sse))
        .with_state(hub);
    axum::serve(listener, app).await.expect("bare: serve");
}

/// Frames each message once and broadcasts it to its conversation.
async fn pump(mut subscription: async_nats::Subscriber, hub: Arc<Hub>) {
    while let Some(message) = subscription.next().await {
        let Some(conversation) = message.subject.split('.').nth(1) else {
            continue;
        };
        let Some(room) = hub.room(conversation) else {
            continue;
        };
        let Ok(ws) = Utf8Bytes::try_from(message.payload.clone()) else {
            continue;
        };
        let mut sse = Vec::with_capacity(message.payload.len() + 8);
        sse.extend_from_slice(b"data: ");
        sse.extend_from_slice(&message.payload);
        sse.extend_from_slice(b"\n\n");
        let _ = room.send(Frame {
            ws,
            sse: sse.into(),
        });
    }
}

async fn ws(State(hub): State<Arc<Hub>>, upgrade: WebSocketUpgrade) -> Response {
    // tungstenite zero-fills its whole read buffer before each read, so all of it is resident:
    // the default 128 KiB would be most of an idle connection. Larger frames still fit (the
    // buffer grows for them); clients here only send small requests.
    upgrade
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| ws_client(hub, socket))
}

/// Answers every request `ok` (joining the room `sessions.switch` names) and forwards the room.
async fn ws_client(hub: Arc<Hub>, mut socket: WebSocket) {
    let mut room: Option<broadcast::Receiver<Frame>> = None;
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return,
                };
                let Ok(req) = serde_json::from_str::<Value>(&text) else { return };
                if req["method"] == "sessions.switch"
                    && let Some(id) = req["params"]["sessionId"].as_str()
                {
                    room = Some(hub.join(id));
                }
                let answer = json!({"type": "res", "id": req["id"], "ok": true, "payload": {}});
                if socket.send(Message::Text(answer.to_string().into())).await.is_err() {
                    return;
                }
            }
            frame = next(&mut room) => {
                let Some(frame) = frame else { return };
                if socket.send(Message::Text(frame.ws)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The room's next frame (skipping past a lag); `None` when it closes; never without a room.
async fn next(room: &mut Option<broadcast::Receiver<Frame>>) -> Option<Frame> {
    let Some(room) = room else {
        return std::future::pending().await;
    };
    loop {
        match room.recv().await {
            Ok(frame) => return Some(frame),
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

async fn sse(State(hub): State<Arc<Hub>>, Path(id): Path<String>) -> Response {
    let room = Some(hub.join(&id));
    let frames = futures::stream::unfold(room, |mut room| async move {
        let frame = next(&mut room).await?;
        Some((Ok::<_, Infallible>(frame.sse), room))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(frames),
    )
        .into_response()
}
