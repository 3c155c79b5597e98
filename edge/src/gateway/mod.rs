//! `GET /ws`: the gateway protocol v1 over WebSocket (Agent Blob, `specs/002`), the same
//! conversations every other client sees.
//!
//! A connection must open with `connect` (version `1`, a `clientType`, and the access token as
//! `params.token` unless the upgrade carried `Authorization`); malformed JSON or a bad handshake
//! closes it with a reason. After that, `req` frames get `res` frames with the same id — an
//! unknown method or bad params (a control character in any string included: `invalid_params`
//! naming the field) is an error response and the connection stays open — and the
//! current session's log arrives as `event` frames whose `seq` is the log cursor (`message` with
//! `fromSelf`, `queued`, `token`, `tool_call`, `tool_result`, `status`, `final`, `cancelled`,
//! `error`). `sessions.switch` takes `after` to resume exactly after a cursor; `sessions.fork`
//! takes `after` to continue a session after one of its messages in a new one (ADR 27).
//!
//! Every request is authorised as of now ([`crate::app::access`]), and so is the connection
//! itself: a logout, a revoked session or family, an admin's revoke or reject and a role change
//! end it within a moment ([`crate::app::revocation`]), as does the access token's expiry unless
//! the client renewed it with `auth.refresh {token}` — each time an `error` event with the code
//! (`session_revoked`, `access_revoked`, `role_changed`, `token_expired`), then a close with
//! 1008. Writes (`agent`, `agent.cancel`, `sessions.new`, `sessions.fork`) count against the caller's write limit
//! with REST's (an error with `retryAfter`); `idempotencyKey` makes a write answer once. Messages that are
//! gateway slash commands (`/new`, `/sessions`, …) are answered by the gateway. A frame that
//! breaks the WebSocket protocol closes with its RFC 6455 code: 1007 for invalid UTF-8 in a text
//! frame, 1009 for one over the size limit, 1002 for any other violation.
//!
//! Layout: `protocol` (request and response frames; `event` frames are
//! [`crate::frame::gateway`]'s), `params` (each method's params as a type: unknown, missing or
//! mistyped params are refused by name), `methods` (what each method and slash command does);
//! this file runs the connection.

mod methods;
mod params;
pub mod protocol;

use crate::app::revocation::AccessWatch;
use crate::extract::{AuthUser, ClientIp, bearer_token};
use crate::feed::FeedFollower;
use crate::follow::Follower;
use crate::input::check_json;
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use protocol::Req;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use warren_commands::metrics;
use warren_domain::ids::{AgentId, CommandId, ConversationId};

/// The most bytes a close frame's reason may hold (RFC 6455 §5.5: 125 with the code).
const MAX_CLOSE_REASON_BYTES: usize = 123;
/// The largest frame a client may send; larger ones close the connection (1009).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// What a connection's read buffer starts with (it grows for larger frames, up to the limit).
/// Client frames are small, and tungstenite zero-fills the whole buffer before each read, so
/// every byte of it is resident for the life of the connection.
const READ_BUFFER_BYTES: usize = 1024;
/// How long a client has to send `connect`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A ping goes out this often; a client silent for three of them is gone.
const PING_EVERY: Duration = Duration::from_secs(20);
/// A client that takes no bytes for this long is dropped (its buffers are the kernel's).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Open connections in this process (for `status`).
static CONNECTIONS: AtomicUsize = AtomicUsize::new(0);
/// When this process's gateway started serving (for `status`).
static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// The `/ws` route (outside `/api/v1`: it is not REST and not in the OpenAPI document).
pub fn routes() -> Router<AppState> {
    Router::new().route("/ws", get(upgrade))
}

async fn upgrade(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    STARTED.get_or_init(Instant::now);
    if let Err(limited) = crate::app::limits::gateway_connect(&state, &ip).await {
        return limited.into_response();
    }
    let header_token = bearer_token(&headers).map(str::to_owned);
    // Small buffers: most connections sit idle, and frames are written (and flushed) one by one.
    ws.max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            CONNECTIONS.fetch_add(1, Ordering::Relaxed);
            let _live = metrics::global().live("ws");
            run(state, socket, header_token).await;
            CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
        })
}

/// The session a connection is in.
#[derive(Clone, Debug)]
struct Session {
    id: ConversationId,
    agent_id: AgentId,
}

/// One connection's state.
struct Conn {
    state: AppState,
    user: AuthUser,
    client_id: String,
    client_type: String,
    session: Option<Session>,
    /// The current session's log, as frames.
    follower: Option<Follower>,
    /// The user-wide feed, once subscribed.
    feed: Option<FeedFollower>,
    /// The last `sessions.list` answer, for `/session <n>`.
    listed: Vec<ConversationId>,
    /// The command id of the write being answered (decided by its `idempotencyKey`).
    command_id: CommandId,
    /// Why the connection must end (set when the caller is no longer allowed).
    ending: Option<(String, String)>,
    /// Tells the connection when the caller's access may have changed.
    watch: AccessWatch,
}

/// How a connection ends.
struct Close {
    code: u16,
    reason: String,
}

fn close(code: u16, reason: impl Into<String>) -> Close {
    Close {
        code,
        reason: reason.into(),
    }
}

async fn send(socket: &mut WebSocket, frame: &Value) -> bool {
    write(socket, Message::Text(Utf8Bytes::from(frame.to_string()))).await
}

/// Writes one message; false if the client is gone or has not taken it for [`WRITE_TIMEOUT`].
async fn write(socket: &mut WebSocket, message: Message) -> bool {
    let sent = matches!(
        tokio::time::timeout(WRITE_TIMEOUT, socket.send(message)).await,
        Ok(Ok(()))
    );
    if sent {
        metrics::global().frame_sent("ws");
    }
    sent
}

async fn run(state: AppState, mut socket: WebSocket, header_token: Option<String>) {
    // Both phases are boxed: inline, the task would be sized for the larger of them plus
    // whatever the compiler cannot overlap (measured: 3.5 KB per idle connection, against
    // 1.7 KB for `serve` alone), and every idle connection would carry it.
    let outcome = match Box::pin(handshake(&state, &mut socket, header_token)).await {
        Ok(conn) => Box::pin(serve(conn, &mut socket)).await,
        Err(end) => Err(end),
    };
    if let Err(mut end) = outcome {
        if end.reason.len() > MAX_CLOSE_REASON_BYTES {
            let mut cut = MAX_CLOSE_REASON_BYTES;
            while !end.reason.is_char_boundary(cut) {
                cut -= 1;
            }
            end.reason.truncate(cut);
        }
        let frame = CloseFrame {
            code: end.code,
            reason: Utf8Bytes::from(end.reason),
        };
        write(&mut socket, Message::Close(Some(frame))).await;
    }
}

/// Reads the first frame, which must be a valid `connect`.
async fn handshake(
    state: &AppState,
    socket: &mut WebSocket,
    header_token: Option<String>,
) -> Result<Conn, Close> {
    let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, next_text(socket))
        .await
        .map_err(|_| close(close_code::POLICY, "no connect frame within 10 s"))??;
    let req: Req = serde_json::from_str(&first).map_err(|_| {
        close(
            close_code::INVALID,
            "malformed JSON: the first frame must be connect",
        )
    })?;
    if req.kind != "req" || req.method != "connect" {
        return Err(close(
            close_code::POLICY,
            "the first frame must be a connect request",
        ));
    }
    if let Err(refused) = check_json(&req.params, protocol::text_params("connect")) {
        // Answered like any bad params, then closed: a client that is not connected cannot stay.
        let answer = protocol::invalid_field(&req.id, &refused.field, refused.reason);
        send(socket, &answer).await;
        return Err(close(
            close_code::POLICY,
            format!("invalid params.{}: {}", refused.field, refused.reason),
        ));
    }
    let params = match params::parse::<params::Connect>(&req.params) {
        Ok(params) => params,
        Err(refusal) => {
            let reason = refusal.1.clone();
            send(socket, &methods::refused(&req.id, refusal)).await;
            return Err(close(close_code::POLICY, reason));
        }
    };
    if params.version.as_deref() != Some(protocol::VERSION) {
        return Err(close(
            close_code::PROTOCOL,
            "unsupported protocol version (this gateway speaks 1)",
        ));
    }
    let token = params.token.or(header_token).ok_or_else(|| {
        close(
            close_code::POLICY,
            "connect needs params.token or an Authorization header",
        )
    })?;
    let user = crate::app::access::authenticate(state, &token)
        .await
        .map_err(|err| {
            close(
                close_code::POLICY,
                format!("not signed in: {}", err.body().message),
            )
        })?;
    let client_type = params.client_type.unwrap_or_else(|| "web".to_owned());
    let conn = Conn {
        state: state.clone(),
        watch: state.revocations.watch(user.id),
        user,
        client_id: format!("ws-{}", uuid::Uuid::now_v7().simple()),
        client_type,
        session: None,
        follower: None,
        feed: None,
        listed: Vec::new(),
        command_id: CommandId::new(),
        ending: None,
    };
    let answer = protocol::ok(
        &req.id,
        serde_json::json!({
            "gatewayVersion": protocol::GATEWAY_VERSION,
            "protocolVersion": protocol::VERSION,
            "supportedMethods": protocol::METHODS,
            "clientId": conn.client_id,
        }),
    );
    if !send(socket, &answer).await {
        return Err(close(close_code::AWAY, "gone"));
    }
    Ok(conn)
}

/// The next text frame; pings and pongs are skipped, anything else ends the connection.
async fn next_text(socket: &mut WebSocket) -> Result<String, Close> {
    loop {
        match socket.recv().await {
            Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Binary(_))) => {
                return Err(close(
                    close_code::UNSUPPORTED,
                    "binary frames are not supported",
                ));
            }
            Some(Ok(Message::Close(_))) | None => return Err(close(close_code::NORMAL, "bye")),
            Some(Err(err)) => return Err(read_failed(err)),
        }
    }
}

/// How a failed read closes the connection (RFC 6455 §7.4.1): invalid UTF-8 in a text message
/// is 1007, a message over the limit 1009, any other protocol violation (an unknown opcode, an
/// unmasked or fragmented control frame, reserved bits, a stray continuation) 1002.
fn read_failed(err: axum::Error) -> Close {
    use tokio_tungstenite::tungstenite::Error;
    match err.into_inner().downcast_ref::<Error>() {
        Some(Error::Utf8(_)) => close(close_code::INVALID, "invalid UTF-8 in a text frame"),
        Some(Error::Capacity(err)) => close(close_code::SIZE, format!("frame too large: {err}")),
        Some(Error::Protocol(err)) => {
            close(close_code::PROTOCOL, format!("protocol violation: {err}"))
        }
        Some(Error::AttackAttempt) => close(close_code::POLICY, "attack attempt"),
        // The connection itself failed (reset, I/O): there is likely nobody left to tell.
        _ => close(close_code::ERROR, "the connection failed"),
    }
}

/// Sleeps until an access token expiring at `expires_at` (seconds since the epoch) has expired.
async fn expiry(expires_at: i64) {
    let left = expires_at
        .saturating_sub(chrono::Utc::now().timestamp())
        .max(0) as u64;
    // One second past the stamp: the check that follows must see it expired.
    tokio::time::sleep(Duration::from_secs(left + 1)).await;
}

/// Tells the client why its connection ends (an `error` event with the refusal's code), and
/// closes it with 1008 (policy violation) and that code as the reason.
async fn ended(socket: &mut WebSocket, code: &str, message: &str) -> Close {
    let frame = crate::frame::gateway::event(
        "error",
        serde_json::json!({"errorCode": code, "message": message, "retryable": false}),
        None,
    );
    send(socket, &frame).await;
    close(close_code::POLICY, code.to_owned())
}

async fn next_item(follower: &mut Option<Follower>) -> Option<crate::follow::Item> {
    match follower {
        Some(follower) => follower.next().await,
        None => std::future::pending().await,
    }
}

async fn next_feed(feed: &mut Option<FeedFollower>) -> Option<crate::follow::Item> {
    match feed {
        Some(feed) => feed.next().await,
        None => std::future::pending().await,
    }
}

/// Answers requests and forwards the session's events until the client goes.
async fn serve(mut conn: Conn, socket: &mut WebSocket) -> Result<(), Close> {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                last_heard = Instant::now();
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text.to_string(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(_))) => {
                        return Err(close(close_code::UNSUPPORTED, "binary frames are not supported"));
                    }
                    Some(Ok(Message::Close(_))) | None => return Ok(()),
                    Some(Err(err)) => return Err(read_failed(err)),
                };
                let value: Value = serde_json::from_str(&text)
                    .map_err(|_| close(close_code::INVALID, "malformed JSON"))?;
                let answer = match serde_json::from_value::<Req>(value.clone()) {
                    // Boxed: a request's future (queries, commands) is large and short-lived;
                    // inline, every idle connection would carry its size.
                    Ok(req) if req.kind == "req" => Box::pin(conn.handle(req)).await,
                    _ => protocol::fail(
                        value["id"].as_str().unwrap_or(""),
                        "invalid_frame",
                        "expected {\"type\": \"req\", \"id\", \"method\", \"params\"}",
                    ),
                };
                if !send(socket, &answer).await {
                    return Ok(());
                }
                if let Some((code, message)) = conn.ending.take() {
                    return Err(ended(socket, &code, &message).await);
                }
            }
            _ = conn.watch.changed() => {
                if conn.still_allowed().await.is_err()
                    && let Some((code, message)) = conn.ending.take()
                {
                    return Err(ended(socket, &code, &message).await);
                }
            }
            _ = expiry(conn.user.expires_at) => {
                if conn.still_allowed().await.is_err()
                    && let Some((code, message)) = conn.ending.take()
                {
                    return Err(ended(socket, &code, &message).await);
                }
            }
            item = next_item(&mut conn.follower) => {
                let Some(item) = item else {
                    conn.follower = None;
                    continue;
                };
                let Some(session) = &conn.session else { continue };
                let session_id = session.id.to_string();
                if let Some(event) = protocol::encode(&item, &session_id, &conn.client_id)
                    && !write(socket, Message::Text(event)).await
                {
                    return Ok(());
                }
                if item.frame().end_code() == Some("slow_consumer") {
                    metrics::global().slow_client_dropped("ws");
                    return Err(close(close_code::AGAIN, "too slow: reconnect and resume with sessions.switch after your last seq"));
                }
            }
            item = next_feed(&mut conn.feed) => {
                let Some(item) = item else {
                    conn.feed = None;
                    continue;
                };
                let Some(frame) = crate::frame::gateway::feed_event(item.frame()) else {
                    continue;
                };
                if !send(socket, &frame).await {
                    return Ok(());
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > PING_EVERY * 3 {
                    return Err(close(close_code::AWAY, "no answer to pings"));
                }
                if !write(socket, Message::Ping(Default::default())).await {
                    return Ok(());
                }
            }
        }
    }
}
