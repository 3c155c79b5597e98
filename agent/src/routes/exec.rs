//! `POST /exec {command, timeout_ms?, cwd?}` → SSE: `stdout` / `stderr` events as output
//! arrives (at most the output cap in total), then `exit` (or `error` if bash could not start).
//! The command runs in its own process group, killed on timeout, when the client disconnects,
//! and at shutdown.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::events::{AgentEvent, EventIds, sse_response};
use crate::process::{self, Chunk, Utf8Decoder, prefix_within};
use crate::server::AppState;

/// `POST /exec` body.
#[derive(Deserialize)]
pub struct ExecRequest {
    /// Run with `bash -c`.
    command: String,
    /// Timeout in milliseconds (default: the shell timeout; capped at the maximum).
    timeout_ms: Option<u64>,
    /// Working directory, workspace-relative (default: the workspace root).
    cwd: Option<String>,
}

/// Starts the command and streams its output.
pub async fn start(
    State(state): State<AppState>,
    body: Result<Json<ExecRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(ApiError::from_json)?;
    if request.command.trim().is_empty() {
        return Err(ApiError::invalid("command must not be empty"));
    }
    let cwd = match &request.cwd {
        Some(raw) => state.workspace.existing(raw)?,
        None => state.workspace.root().to_owned(),
    };
    if !cwd.is_dir() {
        return Err(ApiError::invalid("cwd is not a directory"));
    }
    let limits = &state.config.limits;
    let timeout = request
        .timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(limits.shell_timeout)
        .min(limits.max_shell_timeout);
    let (events, receiver) = mpsc::channel(256);
    let job = Job {
        command: request.command,
        cwd,
        timeout,
        cap: limits.output_cap,
    };
    tokio::spawn(job.run(state.shutdown.child_token(), events));
    Ok(sse_response(receiver, EventIds::default(), limits.keepalive).into_response())
}

struct Job {
    command: String,
    cwd: std::path::PathBuf,
    timeout: Duration,
    cap: usize,
}

impl Job {
    async fn run(
        self,
        cancel: tokio_util::sync::CancellationToken,
        events: mpsc::Sender<AgentEvent>,
    ) {
        let (chunks, mut received) = mpsc::channel(64);
        let shell = process::run_shell(&self.command, &self.cwd, self.timeout, &cancel, chunks);
        tokio::pin!(shell);
        let supervised = async {
            tokio::select! {
                exit = &mut shell => exit,
                _ = events.closed() => {
                    cancel.cancel();
                    shell.await
                }
            }
        };
        let forward = async {
            let mut sent = 0usize;
            let mut truncated = false;
            let (mut out, mut err) = (Utf8Decoder::default(), Utf8Decoder::default());
            let mut send = async |text: String, is_stdout: bool| {
                let room = self.cap.saturating_sub(sent);
                let piece = prefix_within(&text, room);
                truncated |= piece.len() < text.len();
                if piece.is_empty() {
                    return;
                }
                sent += piece.len();
                let data = piece.to_owned();
                let event = if is_stdout {
                    AgentEvent::Stdout { data }
                } else {
                    AgentEvent::Stderr { data }
                };
                let _ = events.send(event).await;
            };
            while let Some(chunk) = received.recv().await {
                match chunk {
                    Chunk::Stdout(bytes) => send(out.push(&bytes), true).await,
                    Chunk::Stderr(bytes) => send(err.push(&bytes), false).await,
                }
            }
            send(out.finish(), true).await;
            send(err.finish(), false).await;
            truncated
        };
        let (exit, truncated) = tokio::join!(supervised, forward);
        let last = match exit {
            Ok(exit) => AgentEvent::Exit {
                code: exit.code,
                signal: exit.signal,
                timed_out: exit.timed_out,
                truncated,
            },
            Err(err) => {
                AgentEvent::error("exec_failed", format!("could not start bash: {err}"), false)
            }
        };
        let _ = events.send(last).await;
    }
}
