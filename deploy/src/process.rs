//! Child-process plumbing shared by the NATS and PostgreSQL launchers: ports, binaries, users,
//! signals, logs and readiness polling.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use tokio::process::Child;

use crate::error::{Error, Result};

/// How often readiness conditions are re-checked while a server starts.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Reserves a free TCP port on 127.0.0.1 by binding port 0 and releasing it.
///
/// The port is free when this returns but nothing holds it afterwards: another process may take
/// it before the server binds it. The launchers retry on a fresh port when a server they gave a
/// chosen port exits during startup, which covers that race.
pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).map_err(Error::NoFreePort)?;
    let port = listener.local_addr().map_err(Error::NoFreePort)?.port();
    Ok(port)
}

/// Looks `program` up in `PATH`, as a shell would.
pub(crate) fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The last `lines` lines of a log file, or a note saying why there are none.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read log: {e})"),
    }
}

/// Opens (appending) the log file a server's stdout and stderr go to.
pub(crate) fn open_log(path: &Path) -> Result<(Stdio, Stdio)> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io("open log file", path, e))?;
    let err = file
        .try_clone()
        .map_err(|e| Error::io("open log file", path, e))?;
    Ok((Stdio::from(file), Stdio::from(err)))
}

/// Sends `signal` to `pid`; a process that is already gone is not an error.
pub(crate) fn send_signal(pid: u32, signal: Signal, what: &str) -> Result<()> {
    let Some(raw) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return Ok(());
    };
    match rustix::process::kill_process(raw, signal) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(Error::Signal {
            what: what.to_owned(),
            pid,
            source: e.into(),
        }),
    }
}

/// Kills `child` with SIGKILL, as a crash would, and reaps it. Does nothing if there is none.
pub(crate) async fn kill_child(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        // Already-exited children make start_kill fail; wait() below reaps either way.
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

/// Sends `signal` to `child` and waits up to `grace` for it to exit, then kills it.
pub(crate) async fn stop_child(
    child: &mut Option<Child>,
    signal: Signal,
    grace: Duration,
    what: &str,
) -> Result<()> {
    if let Some(running) = child.as_mut() {
        if let Some(pid) = running.id() {
            send_signal(pid, signal, what)?;
        }
        if tokio::time::timeout(grace, running.wait()).await.is_ok() {
            *child = None;
        }
    }
    kill_child(child).await;
    Ok(())
}

/// Whether this process runs with effective uid 0.
pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The uid and gid a child process is switched to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunAs {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl RunAs {
    /// The `postgres` system user, looked up with `id` so that NSS sources beyond
    /// `/etc/passwd` count too.
    pub(crate) async fn postgres() -> Result<Self> {
        let uid = id_of("-u").await?;
        let gid = id_of("-g").await?;
        Ok(Self { uid, gid })
    }

    /// Whether this user may search every directory from `/` down to `path` (the ones that exist;
    /// missing ones will be made by us, searchable). Supplementary groups are not considered.
    pub(crate) fn can_reach(&self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        path.ancestors()
            .filter_map(|dir| std::fs::metadata(dir).ok())
            .all(|meta| {
                let mode = meta.mode();
                (meta.uid() == self.uid && mode & 0o100 != 0)
                    || (meta.gid() == self.gid && mode & 0o010 != 0)
                    || mode & 0o001 != 0
            })
    }

    /// Gives `path` to this user (not recursively).
    pub(crate) fn chown(&self, path: &Path) -> Result<()> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .map_err(|e| Error::io("chown", path, e))
    }
}

async fn id_of(flag: &str) -> Result<u32> {
    let output = tokio::process::Command::new("id")
        .args([flag, "postgres"])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| Error::SpawnFailed {
            program: "id".into(),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::NoPostgresUser);
    }
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|_| Error::NoPostgresUser)
}

/// Whether something accepts TCP connections at `addr` within `timeout`.
pub(crate) async fn tcp_accepts(addr: SocketAddr, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// Fails with [`Error::Exited`] if `child` has exited.
pub(crate) fn check_alive(child: &mut Child, what: &str, log: &Path) -> Result<()> {
    match child.try_wait() {
        Ok(Some(status)) => Err(Error::Exited {
            what: what.to_owned(),
            status,
            log: log.to_owned(),
            log_tail: log_tail(log, 30),
        }),
        // An error here means the child was already reaped; readiness polling will tell.
        Ok(None) | Err(_) => Ok(()),
    }
}

/// Blocks (briefly, from `Drop`) until `child` has exited or `timeout` passed; returns whether it
/// exited. Used where there is no `.await`, to reap the process and let its files go.
pub(crate) fn wait_exit_blocking(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() >= deadline => return false,
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_returns_a_bindable_port() {
        let port = free_port().expect("free port");
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("port is bindable");
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("x.log");
        std::fs::write(&log, "a\nb\nc\nd\n").expect("write");
        assert_eq!(log_tail(&log, 2), "c\nd");
        assert!(log_tail(&dir.path().join("missing"), 2).starts_with("(cannot read log"));
    }

    #[test]
    fn find_on_path_finds_sh() {
        assert!(find_on_path("sh").is_some());
        assert!(find_on_path("warren-no-such-program").is_none());
    }
}
