//! The HTTP handlers, one module per resource; [`crate::server::router`] merges them.
//!
//! - [`chat`] — `POST /chat` (SSE run), `DELETE /chat/{id}`, `POST /chat/{id}/cancel`,
//!   `GET /pending`.
//! - [`files`] — `GET` / `POST /files/{path}`.
//! - [`exec`] — `POST /exec` (SSE of a shell command's output).
//! - [`health`] — `GET /health`, the only route without a token.

pub mod chat;
pub mod exec;
pub mod files;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::server::AppState;

/// What this runtime supports beyond baal-agent, so a client can tell them apart.
pub const CAPABILITIES: &[&str] = &[
    "token_deltas",
    "tool_call_ids",
    "tool_results",
    "cancel",
    "exec",
    "file_upload",
    "event_ids",
];

/// `GET /health`: `{"status": "ok", "runtime", "version", "active_runs", "capabilities"}`.
pub async fn health(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "runtime": "warren-agent",
        "version": env!("CARGO_PKG_VERSION"),
        "active_runs": state.chats.active_runs(),
        "capabilities": CAPABILITIES,
    }))
}
