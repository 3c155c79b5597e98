//! Run a shell command in the owner's running agent and stream its output (ADR 18).
//!
//! The exec is recorded first (`ExecRequested`, with the command), then the runtime's
//! `POST /exec` is called and its SSE read by a task of its own, which hands typed
//! [`ExecFrame`]s to the caller and, once the exec ends, records how (`ExecFinished`, as
//! `system:edge`). A client that goes away drops the frames; the task then hangs up on the
//! runtime, which kills the command's process group, and records `client_gone`.
//!
//! Nothing the runtime says reaches the client but the command's output (escaped like all
//! runtime text, `warren_domain::text`) and its exit: failures are fixed public messages.

use super::access::ApprovedUser;
use super::{agents, runtime};
use crate::error::ApiError;
use crate::state::AppState;
use axum::http::StatusCode;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;
use warren_commands::CommandMeta;
use warren_domain::Actor;
use warren_domain::agent::{AgentCommand, ExecFailure};
use warren_domain::ids::{AgentId, CommandId, ExecId};
use warren_domain::text::{self, Lines};

/// How long the runtime may take to answer `POST /exec` (the command's output may then take
/// as long as the runtime's own timeout allows).
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames waiting for a slow client; past this the runtime's stream waits too.
const FRAME_QUEUE: usize = 64;

/// What the owner asks to run.
#[derive(Clone, Debug)]
pub struct ExecRequest {
    /// The command, run with `bash -c`.
    pub command: String,
    /// Timeout in milliseconds (the runtime's default, and its cap, apply).
    pub timeout_ms: Option<u64>,
    /// Workspace-relative working directory; the workspace root if `None`.
    pub cwd: Option<String>,
}

/// One frame of an exec's stream, as every channel sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecFrame {
    /// A piece of the command's standard output.
    Stdout {
        /// The text.
        data: String,
    },
    /// A piece of its standard error.
    Stderr {
        /// The text.
        data: String,
    },
    /// The command ended; the last frame.
    Exit {
        /// Its exit code (`None` if a signal killed it).
        code: Option<i32>,
        /// The signal that killed it, if one did.
        signal: Option<i32>,
        /// The runtime's timeout killed it.
        timed_out: bool,
        /// Output past the runtime's cap was not streamed.
        truncated: bool,
    },
    /// The exec failed without an exit; the last frame.
    Error {
        /// Stable code: `exec_failed`, `runtime_unavailable`, `shutting_down`.
        code: &'static str,
        /// A fixed public message.
        message: &'static str,
    },
    /// Nothing else for a while (the runtime's keepalive, passed on).
    Keepalive,
}

/// A started exec: its id and its frames, which end after an `exit` or `error` frame.
#[derive(Debug)]
pub struct Exec {
    /// The exec, as its events name it.
    pub exec_id: ExecId,
    /// The frames; dropping this hangs up on the runtime (and kills the command).
    pub frames: mpsc::Receiver<ExecFrame>,
}

/// Runs `request` in the caller's running agent. A retried request (same idempotency key,
/// hence `command_id`) does not run the command again: 409 `exec_already_ran`.
pub async fn exec(
    state: &AppState,
    caller: &ApprovedUser,
    agent: AgentId,
    request: ExecRequest,
    command_id: CommandId,
) -> Result<Exec, ApiError> {
    let (agent_id, found) = agents::owned_agent(state, caller.id, agent).await?;
    let (url, token) = runtime::endpoint(state, agent_id, &found).await?;
    if let Some(cwd) = &request.cwd {
        runtime::safe_path(cwd).map_err(|_| {
            ApiError::invalid_field("cwd", "must be a path inside the agent's workspace")
        })?;
    }
    let exec_id = ExecId(Uuid::new_v5(&command_id.0, b"warren/exec"));
    let meta = CommandMeta {
        command_id,
        ..CommandMeta::new(Actor::User(caller.id))
    };
    let requested = AgentCommand::RequestExec {
        exec_id,
        user_id: caller.id,
        command: request.command.clone(),
        cwd: request.cwd.clone(),
        timeout_ms: request.timeout_ms,
    };
    let committed = state
        .commands
        .agents
        .execute(&agent_id.to_string(), requested, &meta)
        .await?;
    if committed.duplicate {
        return Err(ApiError::conflict(
            "exec_already_ran",
            "this Idempotency-Key already ran its command, whose output is not kept; \
             send another key to run it again",
        ));
    }
    tracing::info!(agent_id = %agent_id, exec_id = %exec_id.0, "exec requested");
    let audit = Audit {
        state: state.clone(),
        agent_id,
        exec_id,
    };
    // From here on the exec is in the log: its start and its outcome run in a task of their
    // own, so a request that goes away (a client hanging up while the runtime starts) still
    // ends in `ExecFinished`.
    let (frames, receiver) = mpsc::channel(FRAME_QUEUE);
    let (started, start_answer) = oneshot::channel();
    tokio::spawn(async move {
        match start_on_runtime(&audit, url, &token, &request).await {
            Ok(response) => {
                let _ = started.send(Ok(()));
                pump(response, frames, audit).await;
            }
            Err(err) => {
                let _ = started.send(Err(err));
            }
        }
    });
    start_answer
        .await
        .map_err(|_| ApiError::Unavailable("the agent runtime"))??;
    Ok(Exec {
        exec_id,
        frames: receiver,
    })
}

/// Asks the runtime to run the command; a refusal or no answer is recorded as the outcome.
async fn start_on_runtime(
    audit: &Audit,
    url: reqwest::Url,
    token: &str,
    request: &ExecRequest,
) -> Result<reqwest::Response, ApiError> {
    let agent_id = audit.agent_id;
    let started = tokio::time::timeout(
        START_TIMEOUT,
        audit
            .state
            .http
            .post(runtime::with_path(url, "exec", &[]))
            .bearer_auth(token)
            .json(&RuntimeRequest {
                command: &request.command,
                timeout_ms: request.timeout_ms,
                cwd: request.cwd.as_deref(),
            })
            .send(),
    )
    .await;
    match started {
        Ok(Ok(response)) if response.status().is_success() => Ok(response),
        Ok(Ok(response)) => {
            let status = response.status();
            tracing::warn!(agent_id = %agent_id, %status, "the runtime refused an exec");
            audit.failed(ExecFailure::Refused).await;
            Err(match status {
                StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => ApiError::invalid_field(
                    "cwd",
                    "must be an existing directory inside the agent's workspace",
                ),
                _ => ApiError::Unavailable("the agent runtime"),
            })
        }
        Ok(Err(err)) => {
            tracing::warn!(agent_id = %agent_id, error = %err, "the runtime did not answer an exec");
            audit.failed(ExecFailure::RuntimeUnavailable).await;
            Err(ApiError::Unavailable("the agent runtime"))
        }
        Err(_) => {
            tracing::warn!(agent_id = %agent_id, "the runtime did not answer an exec in time");
            audit.failed(ExecFailure::RuntimeUnavailable).await;
            Err(ApiError::Unavailable("the agent runtime"))
        }
    }
}

/// The runtime's `POST /exec` body.
#[derive(Serialize)]
struct RuntimeRequest<'a> {
    command: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cwd: Option<&'a str>,
}

/// The runtime's exec events (agent/PROTOCOL.md, "Exec SSE"); anything else is skipped.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum RuntimeEvent {
    Stdout {
        data: String,
    },
    Stderr {
        data: String,
    },
    Exit {
        code: Option<i32>,
        signal: Option<i32>,
        #[serde(default)]
        timed_out: bool,
        #[serde(default)]
        truncated: bool,
    },
    Error {
        #[serde(default)]
        code: String,
    },
    Keepalive,
    #[serde(other)]
    Other,
}

/// How an exec ended, for its `ExecFinished`.
struct Outcome {
    exit_code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    failure: Option<ExecFailure>,
}

impl Outcome {
    fn failed(failure: ExecFailure) -> Self {
        Self {
            exit_code: None,
            signal: None,
            timed_out: false,
            failure: Some(failure),
        }
    }
}

const UNAVAILABLE: ExecFrame = ExecFrame::Error {
    code: "runtime_unavailable",
    message: "the agent runtime stopped answering before the command ended",
};
const NOT_STARTED: ExecFrame = ExecFrame::Error {
    code: "exec_failed",
    message: "the agent runtime could not start the command",
};
const SHUTTING_DOWN: ExecFrame = ExecFrame::Error {
    code: "shutting_down",
    message: "the platform is restarting; the command was stopped",
};

/// The largest SSE event read from a runtime's exec stream (its output arrives in many).
const MAX_EVENT: usize = 1024 * 1024;

/// Reads the runtime's stream into `frames` until the exec ends or nobody listens, then
/// records the outcome.
async fn pump(response: reqwest::Response, frames: mpsc::Sender<ExecFrame>, audit: Audit) {
    let mut events =
        warren_commands::bounded::events(response.bytes_stream(), MAX_EVENT).eventsource();
    let closing = audit.state.closing.clone();
    let outcome = loop {
        let next = tokio::select! {
            next = events.next() => next,
            () = frames.closed() => break Outcome::failed(ExecFailure::ClientGone),
            () = closing.cancelled() => {
                let _ = frames.send(SHUTTING_DOWN).await;
                break Outcome::failed(ExecFailure::EdgeShutdown);
            }
        };
        let event = match next {
            Some(Ok(event)) => event,
            Some(Err(err)) => {
                tracing::warn!(agent_id = %audit.agent_id, error = %err, "an exec stream broke");
                let _ = frames.send(UNAVAILABLE).await;
                break Outcome::failed(ExecFailure::RuntimeUnavailable);
            }
            None => {
                tracing::warn!(agent_id = %audit.agent_id, "an exec stream ended without an exit");
                let _ = frames.send(UNAVAILABLE).await;
                break Outcome::failed(ExecFailure::RuntimeUnavailable);
            }
        };
        let (frame, outcome) = match serde_json::from_str::<RuntimeEvent>(&event.data) {
            Ok(RuntimeEvent::Stdout { data }) => (
                ExecFrame::Stdout {
                    data: escaped(data),
                },
                None,
            ),
            Ok(RuntimeEvent::Stderr { data }) => (
                ExecFrame::Stderr {
                    data: escaped(data),
                },
                None,
            ),
            Ok(RuntimeEvent::Keepalive) => (ExecFrame::Keepalive, None),
            Ok(RuntimeEvent::Exit {
                code,
                signal,
                timed_out,
                truncated,
            }) => (
                ExecFrame::Exit {
                    code,
                    signal,
                    timed_out,
                    truncated,
                },
                Some(Outcome {
                    exit_code: code,
                    signal,
                    timed_out,
                    failure: None,
                }),
            ),
            Ok(RuntimeEvent::Error { code }) => {
                tracing::warn!(agent_id = %audit.agent_id, code = %text::escape(&code, Lines::Single), "the runtime could not run an exec");
                (NOT_STARTED, Some(Outcome::failed(ExecFailure::ExecFailed)))
            }
            Ok(RuntimeEvent::Other) | Err(_) => {
                tracing::debug!(agent_id = %audit.agent_id, "unknown exec event skipped");
                continue;
            }
        };
        if frames.send(frame).await.is_err() {
            break outcome.unwrap_or(Outcome::failed(ExecFailure::ClientGone));
        }
        if let Some(outcome) = outcome {
            break outcome;
        }
    };
    // Hang up on the runtime first: a command still running is killed now, not after the
    // outcome is recorded.
    drop(events);
    audit.finished(outcome).await;
}

/// Runtime text as the client may see it: control characters but tab and line breaks escaped.
fn escaped(data: String) -> String {
    match text::escape(&data, Lines::Multi) {
        std::borrow::Cow::Borrowed(_) => data,
        std::borrow::Cow::Owned(escaped) => escaped,
    }
}

/// Records an exec's outcome, once (its command id follows from the exec's).
struct Audit {
    state: AppState,
    agent_id: AgentId,
    exec_id: ExecId,
}

impl Audit {
    async fn failed(&self, failure: ExecFailure) {
        self.finished(Outcome::failed(failure)).await;
    }

    async fn finished(&self, outcome: Outcome) {
        let meta = CommandMeta {
            command_id: CommandId(Uuid::new_v5(&self.exec_id.0, b"warren/exec-outcome")),
            ..CommandMeta::new(Actor::System("edge".into()))
        };
        let command = AgentCommand::RecordExecOutcome {
            exec_id: self.exec_id,
            exit_code: outcome.exit_code,
            signal: outcome.signal,
            timed_out: outcome.timed_out,
            failure: outcome.failure,
        };
        if let Err(err) = self
            .state
            .commands
            .agents
            .execute(&self.agent_id.to_string(), command, &meta)
            .await
        {
            tracing::warn!(
                agent_id = %self.agent_id,
                exec_id = %self.exec_id.0,
                error = %err,
                "recording an exec's outcome failed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_are_typed_on_the_wire() {
        let exit = ExecFrame::Exit {
            code: Some(3),
            signal: None,
            timed_out: false,
            truncated: false,
        };
        assert_eq!(
            serde_json::to_value(exit).expect("json"),
            json!({"type": "exit", "code": 3, "signal": null, "timed_out": false, "truncated": false})
        );
        assert_eq!(
            serde_json::to_value(NOT_STARTED).expect("json"),
            json!({"type": "error", "code": "exec_failed", "message": "the agent runtime could not start the command"})
        );
    }

    #[test]
    fn the_runtimes_events_are_read_and_unknown_ones_skipped() {
        let read = |data: &str| serde_json::from_str::<RuntimeEvent>(data).ok();
        assert!(matches!(
            read(r#"{"type":"stdout","data":"hi\n"}"#),
            Some(RuntimeEvent::Stdout { data }) if data == "hi\n"
        ));
        assert!(matches!(
            read(r#"{"type":"exit","code":null,"signal":9,"timed_out":true,"truncated":false}"#),
            Some(RuntimeEvent::Exit {
                code: None,
                signal: Some(9),
                timed_out: true,
                ..
            })
        ));
        assert!(matches!(
            read(r#"{"type":"error","code":"exec_failed","message":"bash: secret detail"}"#),
            Some(RuntimeEvent::Error { .. })
        ));
        assert!(matches!(
            read(r#"{"type":"progress"}"#),
            Some(RuntimeEvent::Other)
        ));
    }

    #[test]
    fn runtime_output_is_escaped_but_keeps_its_lines() {
        assert_eq!(escaped("a\tb\nc".into()), "a\tb\nc");
        assert_eq!(escaped("\u{1b}[2J".into()), "\u{241b}[2J");
    }
}
