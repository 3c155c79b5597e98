//! The tools the model may call: [`Toolbox::specs`] describes them, [`Toolbox::execute`] runs
//! one call. A failing tool is a result (`ok: false` with the reason), never a failed run.
//!
//! - `shell` — `bash -c` in the workspace, own process group, timeout, output cap.
//! - [`fs`] — `read_file`, `write_file`, `edit_file` (exact string replacement), `list_files`.
//! - [`web`] — `web_fetch`: GET a URL, bounded body.
//! - [`sessions`] — `sessions_search`, `sessions_get`: the user's sessions with this agent,
//!   from the platform (offered only when the runtime knows its platform).
//! - [`schedule`] — `schedule_message`: a message to the chat later (offered when the runtime
//!   has a proactive queue).

pub mod fs;
pub mod schedule;
pub mod sessions;
pub mod web;

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Limits, Platform, Secret};
use crate::model::{ToolCall, ToolSpec};
use crate::process::{self, CappedText, Chunk, Utf8Decoder};
use crate::workspace::Workspace;

/// What a tool call produced.
#[derive(Debug, Default)]
pub struct ToolOutcome {
    /// Whether it succeeded.
    pub ok: bool,
    /// Output for the model (bounded by the output cap).
    pub output: String,
    /// Whether the output was cut.
    pub truncated: bool,
    /// Workspace files written: relative path and size.
    pub files: Vec<(String, u64)>,
}

impl ToolOutcome {
    /// A success with bounded `output`.
    pub fn ok(output: impl Into<String>, cap: usize) -> Self {
        let mut text = CappedText::new(cap);
        text.push(&output.into());
        let (output, truncated) = text.finish();
        Self {
            ok: true,
            output,
            truncated,
            files: Vec::new(),
        }
    }

    /// A failure explained to the model.
    pub fn failed(reason: impl std::fmt::Display) -> Self {
        Self {
            ok: false,
            output: format!("error: {reason}"),
            ..Self::default()
        }
    }
}

/// Runs tool calls inside one workspace.
#[derive(Clone)]
pub struct Toolbox {
    workspace: Workspace,
    limits: Limits,
    http: reqwest::Client,
    sessions: Option<sessions::Sessions>,
    scheduler: Option<schedule::Scheduler>,
}

impl Toolbox {
    /// Tools confined to `workspace`, bounded by `limits`; `http` is used by `web_fetch`.
    pub fn new(workspace: Workspace, limits: Limits, http: reqwest::Client) -> Self {
        Self {
            workspace,
            limits,
            http,
            sessions: None,
            scheduler: None,
        }
    }

    /// Adds `schedule_message`, filling `scheduler`'s proactive queue.
    pub fn with_scheduler(mut self, scheduler: schedule::Scheduler) -> Self {
        self.scheduler = Some(scheduler);
        self
    }

    /// Adds the session tools, asking `platform` with the runtime's `token`.
    pub fn with_platform(mut self, platform: &Platform, token: Secret) -> Self {
        self.sessions = Some(sessions::Sessions::new(self.http.clone(), platform, token));
        self
    }

    /// What is offered to the model.
    pub fn specs(&self) -> Vec<ToolSpec> {
        let mut specs = Self::local_specs();
        if self.sessions.is_some() {
            specs.extend(sessions::Sessions::specs());
        }
        if self.scheduler.is_some() {
            specs.push(schedule::Scheduler::spec());
        }
        specs
    }

    /// The tools that need nothing but the workspace and the network.
    fn local_specs() -> Vec<ToolSpec> {
        vec![
            ToolSpec {
                name: "shell",
                description: "Run a bash command in the workspace directory. Returns stdout and \
                    stderr (interleaved, truncated if long) and the exit code.",
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "command": {"type": "string", "description": "The bash command"},
                        "timeout_secs": {"type": "integer", "description": "Timeout in seconds"}
                    },
                    "required": ["command"]
                }),
            },
            ToolSpec {
                name: "read_file",
                description: "Read a text file from the workspace.",
                parameters: json!({
                    "type": "object",
                    "properties": {"path": {"type": "string", "description": "Workspace-relative path"}},
                    "required": ["path"]
                }),
            },
            ToolSpec {
                name: "write_file",
                description: "Create or overwrite a file in the workspace (parent directories \
                    are created).",
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "path": {"type": "string"},
                        "content": {"type": "string"}
                    },
                    "required": ["path", "content"]
                }),
            },
            ToolSpec {
                name: "edit_file",
                description: "Replace an exact string in a workspace file. old_string must \
                    occur exactly once unless replace_all is true.",
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "path": {"type": "string"},
                        "old_string": {"type": "string"},
                        "new_string": {"type": "string"},
                        "replace_all": {"type": "boolean"}
                    },
                    "required": ["path", "old_string", "new_string"]
                }),
            },
            ToolSpec {
                name: "list_files",
                description: "List a workspace directory (directories end with /).",
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "path": {"type": "string", "description": "Directory, default ."},
                        "recursive": {"type": "boolean"}
                    }
                }),
            },
            ToolSpec {
                name: "web_fetch",
                description: "GET an http(s) URL and return the status and body (truncated).",
                parameters: json!({
                    "type": "object",
                    "properties": {"url": {"type": "string"}},
                    "required": ["url"]
                }),
            },
        ]
    }

    /// Runs one call of chat `chat_id`; `cancel` kills a running shell's process group and
    /// abandons the rest.
    pub async fn execute(
        &self,
        call: &ToolCall,
        chat_id: &str,
        cancel: &CancellationToken,
    ) -> ToolOutcome {
        let input = &call.input;
        if !input.is_object() {
            return ToolOutcome::failed(format!(
                "arguments must be a JSON object, got: {}",
                crate::process::prefix_within(&input.to_string(), 200)
            ));
        }
        let cap = self.limits.output_cap;
        let work = async {
            match call.name.as_str() {
                "shell" => self.shell(input, cancel).await,
                "read_file" => fs::read_file(&self.workspace, input, cap).await,
                "write_file" => fs::write_file(&self.workspace, input).await,
                "edit_file" => fs::edit_file(&self.workspace, input).await,
                "list_files" => fs::list_files(&self.workspace, input, cap).await,
                "web_fetch" => {
                    web::fetch(&self.http, input, self.limits.fetch_max_bytes, cap).await
                }
                "sessions_search" | "sessions_get" => match &self.sessions {
                    Some(tools) if call.name == "sessions_search" => tools.search(input, cap).await,
                    Some(tools) => tools.get(input, cap).await,
                    None => ToolOutcome::failed(format!("unknown tool {:?}", call.name)),
                },
                "schedule_message" => match &self.scheduler {
                    Some(scheduler) => scheduler.schedule(input, chat_id),
                    None => ToolOutcome::failed("unknown tool \"schedule_message\""),
                },
                other => ToolOutcome::failed(format!("unknown tool {other:?}")),
            }
        };
        tokio::select! {
            outcome = work => outcome,
            // The shell notices cancellation itself (and kills its group); this covers the rest.
            _ = cancel.cancelled(), if call.name != "shell" => ToolOutcome::failed("cancelled"),
        }
    }

    async fn shell(&self, input: &Value, cancel: &CancellationToken) -> ToolOutcome {
        let Some(command) = input["command"].as_str() else {
            return ToolOutcome::failed("missing string field \"command\"");
        };
        let timeout = input["timeout_secs"]
            .as_u64()
            .map(Duration::from_secs)
            .unwrap_or(self.limits.shell_timeout)
            .min(self.limits.max_shell_timeout);
        let (tx, mut rx) = mpsc::channel(64);
        let run = process::run_shell(command, self.workspace.root(), timeout, cancel, tx);
        let collect = async {
            // One decoder per stream: a character split across chunks stays whole.
            let (mut out, mut err) = (Utf8Decoder::default(), Utf8Decoder::default());
            let mut text = CappedText::new(self.limits.output_cap);
            while let Some(chunk) = rx.recv().await {
                match chunk {
                    Chunk::Stdout(bytes) => text.push(&out.push(&bytes)),
                    Chunk::Stderr(bytes) => text.push(&err.push(&bytes)),
                }
            }
            text.push(&out.finish());
            text.push(&err.finish());
            text
        };
        let (exit, text) = tokio::join!(run, collect);
        let exit = match exit {
            Ok(exit) => exit,
            Err(err) => return ToolOutcome::failed(format!("could not start bash: {err}")),
        };
        let (mut output, truncated) = text.finish();
        let status = if exit.cancelled {
            "[cancelled]".to_owned()
        } else if exit.timed_out {
            format!("[timed out after {}s]", timeout.as_secs())
        } else if let Some(code) = exit.code {
            format!("[exit code {code}]")
        } else {
            format!("[killed by signal {}]", exit.signal.unwrap_or(0))
        };
        if exit.code != Some(0) {
            if !output.is_empty() && !output.ends_with('\n') {
                output.push('\n');
            }
            output.push_str(&status);
        }
        ToolOutcome {
            ok: exit.code == Some(0),
            output,
            truncated,
            files: Vec::new(),
        }
    }
}
