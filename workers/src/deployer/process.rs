//! The `process` provisioner, for development only: each agent is a local `warren-agent` child
//! in its own process group, running as the platform's own user with the host's files and
//! network (no sandbox at all: the deployer says so in its log when it starts). Its files live
//! under `<data_dir>/agents/<agent_id>/` (`workspace/`, `state/`, `agent.log`, and
//! `process.json`, which records how it was started and where it listens). Agents outlive the
//! deployer: they are never killed on drop, and a restarted deployer finds them again through
//! `process.json` (`warren dev` stops them when it stops: see
//! [`super::DeployerSettings::stop_agents_on_shutdown`]).

use super::provisioner::{
    Actual, ActualState, ProvisionError, Provisioned, Provisioner, RuntimeSpec, Usage,
};
use super::usage;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use warren_domain::ids::AgentId;

/// How long the runtime may take to print its `listening on …` line.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a stopped group may take to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// What an agent process is started with (everything but the token, which is never written to
/// disk). No provider key or provider URL: the runtime calls its model through the platform's
/// model proxy with its own token (ADR 23).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProcessSettings {
    /// The agent's workspace directory.
    pub workspace: PathBuf,
    /// The runtime's state directory (conversation history).
    pub state_dir: PathBuf,
    /// The `warren-agent` binary.
    pub binary: PathBuf,
    /// System prompt.
    pub system_prompt: String,
    /// Model identifier.
    pub model: String,
    /// `openai` or `anthropic`, if the platform has a default provider: the protocol the
    /// runtime speaks to the model proxy unless a run names another.
    pub provider: Option<String>,
    /// The address to bind: `127.0.0.1:0` for a fresh deployment, the recorded address for a
    /// restart (so the endpoint in the log stays valid).
    pub addr: String,
    /// The edge URL the runtime's session tools call (absent in records written before them).
    #[serde(default)]
    pub platform_url: Option<String>,
    /// The agent, for the session tools.
    #[serde(default)]
    pub agent_id: Option<AgentId>,
    /// [`super::DeployerSettings::runtime_fingerprint`] of the platform settings it was started
    /// with (absent in records written before it, which count as changed).
    #[serde(default)]
    pub platform_fingerprint: Option<String>,
}

/// `process.json`: the settings plus the running process, if started.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProcessRecord {
    /// How to start it.
    pub settings: ProcessSettings,
    /// The process (and process group) id of the last start.
    pub pid: Option<i32>,
    /// `http://127.0.0.1:PORT` of the last start.
    pub endpoint: Option<String>,
}

/// Failures of the provisioner.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The runtime did not start as expected.
    #[error("{0}")]
    Start(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ProcessError + 'a {
    move |source| ProcessError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// The directory tree of all agents.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Agents live under `<data_dir>/agents`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("agents"),
        }
    }

    /// `<data_dir>/agents`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<data_dir>/agents/<agent_id>`.
    pub fn agent_dir(&self, agent_id: AgentId) -> PathBuf {
        self.root.join(agent_id.to_string())
    }

    /// `process.json` of an agent.
    pub fn record_path(&self, agent_id: AgentId) -> PathBuf {
        self.agent_dir(agent_id).join("process.json")
    }

    /// Creates the workspace and state directories; returns them.
    pub fn allocate(&self, agent_id: AgentId) -> Result<(PathBuf, PathBuf), ProcessError> {
        let dir = self.agent_dir(agent_id);
        let workspace = dir.join("workspace");
        let state = dir.join("state");
        for path in [&workspace, &state] {
            std::fs::create_dir_all(path).map_err(io("creating", path))?;
        }
        Ok((workspace, state))
    }

    /// The agent's `process.json`, if any (an unreadable one counts as none).
    pub fn read(&self, agent_id: AgentId) -> Option<ProcessRecord> {
        let text = std::fs::read_to_string(self.record_path(agent_id)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes `process.json` atomically.
    pub fn write(&self, agent_id: AgentId, record: &ProcessRecord) -> Result<(), ProcessError> {
        let path = self.record_path(agent_id);
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(record)
            .map_err(|err| ProcessError::Start(format!("encoding process.json failed: {err}")))?;
        std::fs::write(&tmp, json).map_err(io("writing", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("renaming", &path))
    }

    /// Removes everything of the agent (its workspace included).
    pub fn remove(&self, agent_id: AgentId) -> Result<(), ProcessError> {
        let dir = self.agent_dir(agent_id);
        match std::fs::remove_dir_all(&dir) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(io("removing", &dir)(err))
            }
            _ => Ok(()),
        }
    }

    /// Agent ids that have a directory here.
    pub fn agents(&self) -> Vec<AgentId> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    }
}

/// Where `warren-agent` is: `configured`, else next to the current executable, else `PATH`.
pub fn locate_binary(configured: Option<&Path>) -> Result<PathBuf, ProcessError> {
    if let Some(path) = configured {
        return if path.is_file() {
            Ok(path.to_owned())
        } else {
            Err(ProcessError::Start(format!(
                "WARREN_AGENT_BIN {} is not a file",
                path.display()
            )))
        };
    }
    let name = "warren-agent";
    if let Some(sibling) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .filter(|path| path.is_file())
    {
        return Ok(sibling);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            ProcessError::Start(
                "warren-agent not found next to warren or on PATH: build it \
                 (`cargo build --release --bin warren-agent`; deploy/dev.sh does) or set WARREN_AGENT_BIN"
                    .into(),
            )
        })
}

/// Starts the runtime in its own process group; returns its pid and endpoint. The child is not
/// killed on drop; a background task reaps it when it exits.
pub async fn start(
    settings: &ProcessSettings,
    token: &str,
    log: &Path,
) -> Result<(i32, String), ProcessError> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io("opening", log))?;
    let mut command = Command::new(&settings.binary);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("WARREN_AGENT_ADDR", &settings.addr)
        .env("WARREN_AGENT_TOKEN", token)
        .env("WARREN_AGENT_WORKSPACE", &settings.workspace)
        .env("WARREN_AGENT_STATE_DIR", &settings.state_dir)
        .env("WARREN_AGENT_MODEL", &settings.model)
        .env("WARREN_AGENT_SYSTEM_PROMPT", &settings.system_prompt)
        // No provider key in the sandbox: the model is reached through the platform (ADR 23).
        .env("WARREN_AGENT_MODEL_PROXY", "true")
        .current_dir(&settings.workspace)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .process_group(0)
        .kill_on_drop(false);
    if let Some(home) = std::env::var_os("HOME") {
        command.env("HOME", home);
    }
    if let Some(provider) = &settings.provider {
        command.env("WARREN_AGENT_PROVIDER", provider);
    }
    if let (Some(url), Some(agent_id)) = (&settings.platform_url, settings.agent_id) {
        command
            .env("WARREN_AGENT_PLATFORM_URL", url)
            .env("WARREN_AGENT_ID", agent_id.to_string());
    }
    let mut child = command.spawn().map_err(|err| {
        ProcessError::Start(format!(
            "spawning {} failed: {err}",
            settings.binary.display()
        ))
    })?;
    let pid = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .ok_or_else(|| ProcessError::Start("the runtime exited at once".into()))?;
    let Some(stdout) = child.stdout.take() else {
        kill_group(pid).await;
        return Err(ProcessError::Start("no stdout pipe".into()));
    };
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(LISTEN_TIMEOUT, lines.next_line()).await;
    // Reap the child whenever it exits, and keep draining its stdout.
    tokio::spawn(async move {
        while let Ok(Some(_)) = lines.next_line().await {}
        let _ = child.wait().await;
    });
    let line = match first {
        Ok(Ok(Some(line))) => line,
        Ok(Ok(None)) | Ok(Err(_)) => {
            kill_group(pid).await;
            return Err(ProcessError::Start(format!(
                "the runtime exited before listening (see {})",
                log.display()
            )));
        }
        Err(_) => {
            kill_group(pid).await;
            return Err(ProcessError::Start(
                "the runtime did not report its address in time".into(),
            ));
        }
    };
    match line.trim().strip_prefix("listening on ") {
        Some(addr) => Ok((pid, format!("http://{addr}"))),
        None => {
            kill_group(pid).await;
            Err(ProcessError::Start(format!(
                "unexpected first line from the runtime: {line:?}"
            )))
        }
    }
}

/// Whether a process with this pid exists.
pub fn alive(pid: i32) -> bool {
    rustix::process::Pid::from_raw(pid)
        .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok())
}

/// SIGTERM to the group, then SIGKILL if it is still there after a grace period.
pub async fn kill_group(pid: i32) {
    let Some(group) = rustix::process::Pid::from_raw(pid) else {
        return;
    };
    if rustix::process::kill_process_group(group, rustix::process::Signal::TERM).is_err() {
        return;
    }
    let deadline = tokio::time::Instant::now() + TERM_GRACE;
    while alive(pid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
}

/// Whether `GET {endpoint}/health` answers 2xx.
pub async fn healthy(http: &reqwest::Client, endpoint: &str) -> bool {
    http.get(format!("{endpoint}/health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|response| response.status().is_success())
}

/// Polls `/health` until it answers or `timeout` passes.
pub async fn wait_healthy(http: &reqwest::Client, endpoint: &str, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if healthy(http, endpoint).await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the process is stopped by a signal (`T` in `/proc/<pid>/stat`): a paused agent.
fn frozen(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the command name, which is in parentheses.
            let after = stat.rsplit_once(')')?.1;
            after.split_whitespace().next().map(|state| state == "T")
        })
        .unwrap_or(false)
}

fn signal_group(pid: i32, signal: rustix::process::Signal) -> Provisioned<()> {
    let group = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| ProvisionError(format!("invalid pid {pid}")))?;
    rustix::process::kill_process_group(group, signal)
        .map_err(|err| ProvisionError(format!("signalling process group {pid}: {err}")))
}

impl From<ProcessError> for ProvisionError {
    fn from(err: ProcessError) -> Self {
        Self(err.to_string())
    }
}

/// The `process` provisioner over a [`Layout`].
pub struct ProcessProvisioner {
    layout: Layout,
    agent_bin: Option<PathBuf>,
    http: reqwest::Client,
}

impl ProcessProvisioner {
    /// Agents under `<data_dir>/agents`, started from `agent_bin` (else next to `warren`, else
    /// `PATH`).
    pub fn new(data_dir: &Path, agent_bin: Option<PathBuf>) -> Self {
        Self {
            layout: Layout::new(data_dir),
            agent_bin,
            http: crate::runtime_http(),
        }
    }

    /// Kills the agent's process group, if one is recorded and alive, and forgets the pid.
    async fn kill(&self, agent_id: AgentId) {
        let Some(mut record) = self.layout.read(agent_id) else {
            return;
        };
        if let Some(pid) = record.pid.take() {
            if alive(pid) {
                // A frozen group must be thawed to act on SIGTERM.
                let _ = signal_group(pid, rustix::process::Signal::CONT);
                kill_group(pid).await;
                tracing::info!(%agent_id, pid, "agent process stopped");
            }
            if let Err(err) = self.layout.write(agent_id, &record) {
                tracing::warn!(%agent_id, error = %err, "updating process.json failed");
            }
        }
    }

    /// The recorded pid, if that process is alive.
    fn live_pid(&self, agent_id: AgentId) -> Provisioned<i32> {
        self.record(agent_id)?
            .pid
            .filter(|pid| alive(*pid))
            .ok_or_else(|| ProvisionError(format!("agent {agent_id} has no live process")))
    }

    fn record(&self, agent_id: AgentId) -> Provisioned<ProcessRecord> {
        self.layout
            .read(agent_id)
            .ok_or_else(|| ProvisionError(format!("no process.json for agent {agent_id}")))
    }
}

#[async_trait]
impl Provisioner for ProcessProvisioner {
    fn kind(&self) -> &'static str {
        "process"
    }

    async fn allocate(&self, agent_id: AgentId) -> Provisioned<()> {
        self.layout.allocate(agent_id)?;
        Ok(())
    }

    async fn install(&self) -> Provisioned<()> {
        locate_binary(self.agent_bin.as_deref())?;
        Ok(())
    }

    async fn configure(&self, spec: &RuntimeSpec) -> Provisioned<()> {
        self.kill(spec.agent_id).await;
        let (workspace, state_dir) = self.layout.allocate(spec.agent_id)?;
        let addr = spec
            .endpoint
            .as_deref()
            .map(|url| url.trim_start_matches("http://").to_owned())
            .unwrap_or_else(|| "127.0.0.1:0".into());
        let record = ProcessRecord {
            settings: ProcessSettings {
                workspace,
                state_dir,
                binary: locate_binary(self.agent_bin.as_deref())?,
                system_prompt: spec.system_prompt.clone(),
                model: spec.model.clone(),
                provider: spec.provider.clone(),
                addr,
                platform_url: Some(spec.platform_url.clone()),
                agent_id: Some(spec.agent_id),
                platform_fingerprint: Some(spec.fingerprint.clone()),
            },
            pid: None,
            endpoint: None,
        };
        self.layout.write(spec.agent_id, &record)?;
        Ok(())
    }

    async fn start(&self, agent_id: AgentId, token: &str) -> Provisioned<String> {
        self.kill(agent_id).await;
        let mut record = self.record(agent_id)?;
        let log = self.layout.agent_dir(agent_id).join("agent.log");
        let (pid, url) = start(&record.settings, token, &log).await?;
        record.pid = Some(pid);
        record.endpoint = Some(url.clone());
        // Later starts keep this address, so the endpoint in the log stays valid.
        record.settings.addr = url.trim_start_matches("http://").to_owned();
        self.layout.write(agent_id, &record)?;
        Ok(url)
    }

    async fn healthy(&self, agent_id: AgentId) -> bool {
        match self
            .layout
            .read(agent_id)
            .and_then(|record| record.pid.zip(record.endpoint))
        {
            Some((pid, endpoint)) => alive(pid) && healthy(&self.http, &endpoint).await,
            None => false,
        }
    }

    async fn stop(&self, agent_id: AgentId) {
        self.kill(agent_id).await;
    }

    async fn pause(&self, agent_id: AgentId) -> Provisioned<()> {
        signal_group(self.live_pid(agent_id)?, rustix::process::Signal::STOP)
    }

    async fn resume(&self, agent_id: AgentId) -> Provisioned<()> {
        signal_group(self.live_pid(agent_id)?, rustix::process::Signal::CONT)
    }

    async fn destroy(&self, agent_id: AgentId, _workspace: Option<&str>) -> Provisioned<()> {
        self.kill(agent_id).await;
        self.layout.remove(agent_id)?;
        Ok(())
    }

    async fn actual(&self) -> Provisioned<Vec<Actual>> {
        Ok(self
            .layout
            .agents()
            .into_iter()
            .filter_map(|agent_id| {
                let record = self.layout.read(agent_id)?;
                let state = match record.pid.filter(|pid| alive(*pid)) {
                    Some(pid) if frozen(pid) => ActualState::Paused,
                    Some(_) => ActualState::Running,
                    None => ActualState::Stopped,
                };
                Some(Actual {
                    agent_id,
                    state,
                    fingerprint: record.settings.platform_fingerprint,
                    oom_killed: false,
                })
            })
            .collect())
    }

    async fn usage(&self) -> Provisioned<HashMap<AgentId, Usage>> {
        let layout = self.layout.clone();
        // Reading /proc and walking workspaces blocks.
        tokio::task::spawn_blocking(move || {
            let runtimes: Vec<(AgentId, Option<i32>)> = layout
                .agents()
                .into_iter()
                .map(|agent_id| {
                    let pid = layout
                        .read(agent_id)
                        .and_then(|record| record.pid)
                        .filter(|pid| alive(*pid));
                    (agent_id, pid)
                })
                .collect();
            let groups = runtimes.iter().filter_map(|(_, pid)| *pid).collect();
            let measured = usage::process_groups(&groups);
            runtimes
                .into_iter()
                .map(|(agent_id, pid)| {
                    let mut found: Usage = pid
                        .and_then(|pid| measured.get(&pid).copied())
                        .map(Usage::from)
                        .unwrap_or_default();
                    found.disk_bytes = usage::disk_bytes(&layout.agent_dir(agent_id));
                    (agent_id, found)
                })
                .collect()
        })
        .await
        .map_err(|err| ProvisionError(format!("measuring the agents' processes: {err}")))
    }
}
