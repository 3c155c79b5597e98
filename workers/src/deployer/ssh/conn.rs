//! One host's SSH connection, through the system `ssh` client: the host's private key and its
//! pinned public key written owner-only under the deployer's data directory, one multiplexed
//! master connection per host (`ControlMaster`, kept 60 s after its last use), batch mode (no
//! prompt ever), and the pinned key checked on every connection (`StrictHostKeyChecking=yes`
//! against a known-hosts file holding that key alone, under an alias, so an address reused by
//! another machine is refused too).
//!
//! An SSH server takes only so many sessions on one connection (`MaxSessions`, 10 by default)
//! and drops new connections when too many are still logging in (`MaxStartups`, from 10): a
//! burst of commands to one host (ten agents deployed at once) would be refused and read as a
//! host that is down. So the commands through one master run at most [`SESSIONS`] at a time,
//! and while no master is up, one command at a time opens it.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

/// How long a connection may take to open.
const CONNECT_TIMEOUT_SECS: u32 = 5;
/// The longest one remote command may run (an upload of the runtime binary included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Commands at once through one master connection: under sshd's default `MaxSessions` (10),
/// with room for an operator's own sessions.
pub const SESSIONS: usize = 6;

/// What paces the commands through one master connection.
struct Gate {
    /// One permit per session at once.
    sessions: Semaphore,
    /// Held by the command that opens the master, so a burst opens one connection, not many.
    opening: tokio::sync::Mutex<()>,
}

/// Each master connection's gate, by control socket (shared by every `Session` value made for
/// one host, key and address in this process).
static GATES: LazyLock<Mutex<HashMap<PathBuf, Arc<Gate>>>> = LazyLock::new(Mutex::default);

/// Why a remote command failed.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The host presented another key than the pinned one.
    #[error("host {0} presented another SSH key than the one pinned: refusing to connect")]
    HostKeyMismatch(String),
    /// The host could not be reached or refused the login.
    #[error("host {host} cannot be reached over SSH: {detail}")]
    Unreachable {
        /// The host.
        host: String,
        /// What ssh said.
        detail: String,
    },
    /// The command ran and failed.
    #[error("on host {host}, {what} failed (exit {code}): {detail}")]
    Failed {
        /// The host.
        host: String,
        /// What was being done.
        what: String,
        /// Its exit status.
        code: i32,
        /// Its standard error, cut short.
        detail: String,
    },
    /// Local files or the ssh client itself.
    #[error("ssh client: {0}")]
    Local(String),
}

impl SshError {
    /// Whether the host did not answer at all (as opposed to a command failing on it).
    pub fn unreachable(&self) -> bool {
        matches!(self, SshError::Unreachable { .. })
    }
}

/// Where and how to reach one host.
#[derive(Clone, Debug)]
pub struct Session {
    /// The host's name.
    pub name: String,
    /// Its address.
    pub address: String,
    /// SSH port.
    pub port: u16,
    /// SSH user.
    pub user: String,
    /// The directory with `id` and `known_hosts`.
    dir: PathBuf,
    /// The control socket (short: socket paths are limited to about 100 bytes).
    control: PathBuf,
    /// Paces the commands through that socket's master.
    gate: Arc<Gate>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("free", &self.sessions.available_permits())
            .finish()
    }
}

/// `text` in single quotes for a POSIX shell.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Writes `content` to `path` (mode 0600) unless it already holds it; atomically.
fn write_private(path: &Path, content: &[u8]) -> Result<(), SshError> {
    use std::os::unix::fs::OpenOptionsExt;
    if std::fs::read(path).is_ok_and(|old| old == content) {
        return Ok(());
    }
    let local = |err: std::io::Error| SshError::Local(format!("writing {}: {err}", path.display()));
    // A name of its own per write: two connections preparing at once never write one file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(local)?;
    std::io::Write::write_all(&mut file, content).map_err(local)?;
    std::fs::rename(&tmp, path).map_err(local)
}

impl Session {
    /// Prepares the files to reach host `name`: its private key and its pinned public key.
    pub fn prepare(
        root: &Path,
        name: &str,
        spec: &warren_domain::host::HostSpec,
        private_key: &str,
        host_key: &str,
    ) -> Result<Self, SshError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = root.join(name);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|err| SshError::Local(format!("creating {}: {err}", dir.display())))?;
        write_private(&dir.join("id"), private_key.as_bytes())?;
        write_private(
            &dir.join("known_hosts"),
            format!("{} {host_key}\n", alias(name)).as_bytes(),
        )?;
        let sockets =
            std::env::temp_dir().join(format!("warren-ssh-{}", rustix::process::getuid().as_raw()));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&sockets)
            .map_err(|err| SshError::Local(format!("creating {}: {err}", sockets.display())))?;
        // In a shared /tmp, someone else may have made it first, to put sockets of theirs in
        // our path (the Docker engine's among them): it must be ours alone, and no link.
        {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::symlink_metadata(&sockets)
                .map_err(|err| SshError::Local(format!("reading {}: {err}", sockets.display())))?;
            if !meta.is_dir()
                || meta.uid() != rustix::process::getuid().as_raw()
                || meta.mode() & 0o077 != 0
            {
                return Err(SshError::Local(format!(
                    "{} is not a directory of this user's alone (mode 0700): remove it",
                    sockets.display()
                )));
            }
        }
        // One master per host, key and address: a changed key or address gets a new one.
        let mut hash = Sha256::new();
        for part in [
            dir.to_string_lossy().as_bytes(),
            spec.address.as_bytes(),
            &spec.port.to_be_bytes(),
            spec.user.as_bytes(),
            host_key.as_bytes(),
            private_key.as_bytes(),
        ] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        let control = sockets.join(hex::encode(&hash.finalize()[..8]));
        let gate = GATES
            .lock()
            .expect("gates lock")
            .entry(control.clone())
            .or_insert_with(|| {
                Arc::new(Gate {
                    sessions: Semaphore::new(SESSIONS),
                    opening: tokio::sync::Mutex::new(()),
                })
            })
            .clone();
        Ok(Self {
            name: name.to_owned(),
            address: spec.address.clone(),
            port: spec.port,
            user: spec.user.clone(),
            dir,
            control,
            gate,
        })
    }

    /// A connection of its own (no master: it lives as long as the returned child) forwarding
    /// the local socket `local` to the host's socket `remote`, once the local socket is there.
    pub async fn forward_socket(
        &self,
        local: &Path,
        remote: &str,
    ) -> Result<tokio::process::Child, SshError> {
        let _ = std::fs::remove_file(local);
        let mut command = self.base_command();
        command
            .args(["-o", "ControlMaster=no", "-o", "ControlPath=none"])
            .args([
                "-o",
                "ExitOnForwardFailure=yes",
                "-o",
                "StreamLocalBindMask=0177",
            ])
            .arg("-N")
            .arg("-L")
            .arg(format!("{}:{remote}", local.display()))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-l")
            .arg(&self.user)
            .arg(&self.address)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|err| SshError::Local(format!("running ssh: {err}")))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !local.exists() {
            if let Some(status) = child
                .try_wait()
                .map_err(|err| SshError::Local(err.to_string()))?
            {
                let mut detail = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    let _ = stderr.read_to_string(&mut detail).await;
                }
                let detail: String = detail.trim().chars().take(500).collect();
                return Err(
                    if detail.contains("Host key verification failed")
                        || detail.contains("host key for")
                    {
                        SshError::HostKeyMismatch(self.name.clone())
                    } else {
                        SshError::Unreachable {
                            host: self.name.clone(),
                            detail: format!("forwarding {remote} ended ({status}): {detail}"),
                        }
                    },
                );
            }
            if tokio::time::Instant::now() > deadline {
                return Err(SshError::Unreachable {
                    host: self.name.clone(),
                    detail: format!("forwarding {remote} did not start within 15 s"),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(child)
    }

    /// `ssh` with the key, the pinned host key and the timeouts, for this host.
    fn base_command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("ssh");
        command
            .arg("-F")
            .arg("/dev/null")
            .arg("-i")
            .arg(self.dir.join("id"));
        for o in [
            "IdentitiesOnly=yes".to_owned(),
            "BatchMode=yes".to_owned(),
            "StrictHostKeyChecking=yes".to_owned(),
            format!(
                "UserKnownHostsFile={}",
                self.dir.join("known_hosts").display()
            ),
            "GlobalKnownHostsFile=/dev/null".to_owned(),
            format!("HostKeyAlias={}", alias(&self.name)),
            "UpdateHostKeys=no".to_owned(),
            format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}"),
            "ServerAliveInterval=5".to_owned(),
            "ServerAliveCountMax=2".to_owned(),
            "LogLevel=ERROR".to_owned(),
        ] {
            command.arg("-o").arg(o);
        }
        command
    }

    /// Where this host's Docker engine socket is forwarded to (beside the control socket: a
    /// socket's path is limited to about 100 bytes).
    pub fn engine_socket(&self) -> PathBuf {
        self.control.with_extension("docker")
    }

    fn command(&self, remote: &str) -> tokio::process::Command {
        let mut command = self.base_command();
        for o in [
            "ControlMaster=auto".to_owned(),
            format!("ControlPath={}", self.control.display()),
            "ControlPersist=60".to_owned(),
        ] {
            command.arg("-o").arg(o);
        }
        command
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-l")
            .arg(&self.user)
            .arg(&self.address)
            .arg("--")
            .arg(remote)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs `script` as root on the host (through `sudo -n` for another user), `input` on its
    /// standard input; returns its standard output.
    pub async fn run(&self, what: &str, script: &str, input: &[u8]) -> Result<String, SshError> {
        let shell = format!("sh -c {}", quote(script));
        let remote = if self.user == "root" {
            shell
        } else {
            format!("sudo -n {shell}")
        };
        let _session = self.gate.sessions.acquire().await.expect("never closed");
        // No master yet: one command opens it (a bare `true`) while the others wait, then
        // they all go through it. (A socket left by a killed master is replaced by the next
        // command, the few at once being under the gate.)
        if !self.control.exists() {
            let _opening = self.gate.opening.lock().await;
            if !self.control.exists() {
                self.execute("connecting", "true", b"").await?;
            }
        }
        self.execute(what, &remote, input).await
    }

    /// Runs `remote` over the connection; its standard output, or why it failed.
    async fn execute(&self, what: &str, remote: &str, input: &[u8]) -> Result<String, SshError> {
        let mut child = self
            .command(remote)
            .spawn()
            .map_err(|err| SshError::Local(format!("running ssh: {err}")))?;
        let mut stdin = child.stdin.take().expect("piped");
        let input = input.to_vec();
        let feed = tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
            let _ = stdin.shutdown().await;
        });
        let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| SshError::Unreachable {
                host: self.name.clone(),
                detail: format!("{what} took longer than {COMMAND_TIMEOUT:?}"),
            })?
            .map_err(|err| SshError::Local(format!("waiting for ssh: {err}")))?;
        let _ = feed.await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let detail: String = stderr.trim().chars().take(500).collect();
        match output.status.code() {
            Some(0) => Ok(String::from_utf8_lossy(&output.stdout).into_owned()),
            // ssh's own failures: the connection, the login, the host key.
            Some(255) | None => {
                if stderr.contains("Host key verification failed")
                    || stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
                    || stderr.contains("host key for")
                {
                    tracing::warn!(host = self.name, detail, "ssh refused the host key");
                    Err(SshError::HostKeyMismatch(self.name.clone()))
                } else {
                    Err(SshError::Unreachable {
                        host: self.name.clone(),
                        detail,
                    })
                }
            }
            Some(code) => Err(SshError::Failed {
                host: self.name.clone(),
                what: what.to_owned(),
                code,
                detail,
            }),
        }
    }

    /// Closes the master connection (a host removed, a key changed).
    pub async fn close(&self) {
        let _ = tokio::process::Command::new("ssh")
            .arg("-o")
            .arg(format!("ControlPath={}", self.control.display()))
            .args(["-O", "exit", "warren"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
}

/// The name the pinned key is filed under.
fn alias(name: &str) -> String {
    format!("warren-host-{name}")
}

/// The host's SSH public key as it presents it now, `<type> <base64>` (`ssh-keyscan`, its
/// Ed25519 key when it has one, else ECDSA or RSA): what is pinned on first contact.
pub async fn scan_host_key(address: &str, port: u16) -> Result<String, SshError> {
    match scan(address, port, "ed25519").await {
        Ok(key) => Ok(key),
        Err(_) => scan(address, port, "ecdsa,rsa").await,
    }
}

async fn scan(address: &str, port: u16, types: &str) -> Result<String, SshError> {
    let output = tokio::time::timeout(
        Duration::from_secs(15),
        tokio::process::Command::new("ssh-keyscan")
            .args(["-T", "5", "-t", types, "-p"])
            .arg(port.to_string())
            .arg(address)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| SshError::Local("ssh-keyscan took too long".into()))?
    .map_err(|err| SshError::Local(format!("running ssh-keyscan: {err}")))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut keys: Vec<String> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let (_host, kind, body) = (parts.next()?, parts.next()?, parts.next()?);
            Some(format!("{kind} {body}"))
        })
        .collect();
    keys.sort_by_key(|key| !key.starts_with("ssh-ed25519"));
    keys.into_iter()
        .next()
        .ok_or_else(|| SshError::Unreachable {
            host: address.to_owned(),
            detail: "ssh-keyscan saw no host key".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }
}
