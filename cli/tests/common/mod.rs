//! Starting the real `warren` binary for end-to-end tests.

#![allow(dead_code)]

pub mod scenario;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// A running `warren` process in its own process group (so a crash test can kill it together
/// with the nats-server and PostgreSQL it started). Killed when dropped.
pub struct Warren {
    pub child: Child,
    pub log: std::path::PathBuf,
}

impl Warren {
    /// Starts `warren <args>` with `env`, logging to `<log_dir>/<name>.log`.
    pub fn spawn(args: &[&str], env: &[(&str, String)], log_dir: &Path, name: &str) -> Self {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_warren"));
        command
            .args(args)
            .env_remove("WARREN_NATS_URL")
            .env_remove("WARREN_DATABASE_URL")
            .env("WARREN_LOG", "info,sqlx=warn")
            .env("WARREN_CONFIG", log_dir.join("absent.toml"))
            // Agents run as processes unless a test asks for docker sandboxes.
            .env("WARREN_SANDBOX", "process")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .process_group(0)
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("spawn warren");
        Self { child, log }
    }

    /// SIGKILLs the whole process group: warren and every server it started.
    pub async fn kill_group(&mut self) {
        if let Some(pid) = self
            .child
            .id()
            .and_then(|pid| rustix::process::Pid::from_raw(pid as i32))
        {
            rustix::process::kill_process_group(pid, rustix::process::Signal::KILL)
                .expect("kill the process group");
        }
        let _ = self.child.wait().await;
    }

    /// Sends SIGTERM to `warren` alone (as Ctrl-C or a service manager would) and waits for it
    /// to exit; whether it exited successfully within `timeout`.
    pub async fn terminate(&mut self, timeout: Duration) -> bool {
        if let Some(pid) = self
            .child
            .id()
            .and_then(|pid| rustix::process::Pid::from_raw(pid as i32))
        {
            rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        }
        self.wait_success(timeout).await
    }

    /// Waits for the process to exit and returns whether it succeeded.
    pub async fn wait_success(&mut self, timeout: Duration) -> bool {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => status.success(),
            _ => false,
        }
    }

    /// The log so far (for assertion messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address this process logged as `what` (e.g. "edge listening"), the `skip` lines of
    /// that kind logged by earlier runs into the same log file passed over; the log when the
    /// process exits first; panics with the log when none comes within a minute.
    pub async fn listening(
        &mut self,
        what: &str,
        skip: usize,
    ) -> Result<std::net::SocketAddr, String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let text = strip_ansi(&self.log_text());
            let addr = text
                .lines()
                .filter(|line| line.contains(what))
                .nth(skip)
                // `addr=127.0.0.1:1234` in text, `"addr":"127.0.0.1:1234"` in JSON.
                .and_then(|line| line.split_once("addr").map(|(_, rest)| rest))
                .map(|rest| rest.trim_start_matches(['=', '"', ':']))
                .and_then(|rest| rest.split(['"', ' ', '\t']).next())
                .and_then(|addr| addr.parse().ok());
            if let Some(addr) = addr {
                return Ok(addr);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited ({status}); log:\n{text}"));
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what:?} line within a minute; log:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts `warren <args>` (a role serving the edge) and waits until the edge listens: the
    /// process and the address it listens on. Unless `env` sets `WARREN_HTTP_ADDR`, the edge is
    /// given a free port, and another when that one is taken before the edge binds it (another
    /// test's server may take it in between: a test asking that server would get its answers).
    pub async fn spawn_edge(
        args: &[&str],
        env: &[(&str, String)],
        log_dir: &Path,
        name: &str,
    ) -> (Self, std::net::SocketAddr) {
        let chosen = env.iter().any(|(key, _)| *key == "WARREN_HTTP_ADDR");
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut env = env.to_vec();
            if !chosen {
                env.push(("WARREN_HTTP_ADDR", format!("127.0.0.1:{}", free_port())));
            }
            // A restart appends to the log of the process that ran before.
            let skip = std::fs::read_to_string(log_dir.join(format!("{name}.log")))
                .unwrap_or_default()
                .matches("edge listening")
                .count();
            let mut warren = Self::spawn(args, &env, log_dir, name);
            match warren.listening("edge listening", skip).await {
                Ok(addr) => return (warren, addr),
                Err(log) if !chosen && attempts < 5 && log.contains("Address already in use") => {
                    continue;
                }
                Err(log) => panic!("warren {args:?} did not start: {log}"),
            }
        }
    }
}

/// `text` without ANSI colour sequences (`ESC [ … m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for Warren {
    /// Kills the whole process group, so the nats-server and PostgreSQL a `warren dev` started
    /// do not outlive a test that ends without stopping it.
    fn drop(&mut self) {
        if let Some(pid) = self
            .child
            .id()
            .and_then(|pid| rustix::process::Pid::from_raw(pid as i32))
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// `warren-agent`, built by the workspace next to the `warren` binary under test.
pub fn agent_bin() -> std::path::PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_warren"))
        .parent()
        .expect("target dir")
        .join("warren-agent");
    assert!(
        bin.is_file(),
        "{} is missing: build it first (cargo build -p warren-agent)",
        bin.display()
    );
    bin
}

/// SIGKILLs the process group of every agent runtime the deployer recorded under `agents`
/// (`<agent>/process.json`): agents outlive the deployer by design, not the test.
pub fn kill_agents(agents: &Path) {
    for agent in std::fs::read_dir(agents).into_iter().flatten().flatten() {
        let pid = std::fs::read_to_string(agent.path().join("process.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|record| record["pid"].as_i64())
            .and_then(|pid| i32::try_from(pid).ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    // Drawn outside the kernel's ephemeral range (32768–60999), which `bind(0)` and outgoing
    // connections take from: a port probed free there could be handed to another process
    // before the test's server binds it ("Address already in use").
    for _ in 0..500 {
        let bytes = uuid::Uuid::new_v4();
        let random = u16::from_le_bytes([bytes.as_bytes()[0], bytes.as_bytes()[1]]);
        let port = 15_000 + random % 17_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    warren_deploy::free_port().expect("free port")
}

/// GET a URL; the status and JSON body, or `None` if nothing answered.
pub async fn get_json(url: &str) -> Option<(u16, serde_json::Value)> {
    let response = reqwest::get(url).await.ok()?;
    let status = response.status().as_u16();
    let body = response.json().await.ok()?;
    Some((status, body))
}

/// Per-minute rate limits count in fixed windows aligned to the clock's minutes. A test that
/// must fill one window starts with at least `needed` left in the current minute, else at the
/// start of the next one (waiting on the clock is the point here, not a synchronisation).
#[allow(dead_code)]
pub async fn with_a_minute_window_left(needed: std::time::Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    let into = std::time::Duration::from_millis((now.as_millis() % 60_000) as u64);
    let left = std::time::Duration::from_secs(60) - into;
    if left < needed {
        tokio::time::sleep(left + std::time::Duration::from_millis(50)).await;
    }
}
