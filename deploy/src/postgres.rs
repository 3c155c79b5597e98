//! [`LocalPostgres`]: a PostgreSQL server in a given directory, `initdb`-ed on first use, plus
//! helpers to create and drop databases on any server.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};
use tokio::process::{Child, Command};

use crate::error::{Error, Result};
use crate::process::{self, POLL_INTERVAL, RunAs};

/// The environment variable naming the directory holding `initdb` and `postgres`.
pub const PG_BIN_DIR_ENV: &str = "WARREN_PG_BIN_DIR";

/// `sun_path` is 108 bytes on Linux, including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// How to configure a [`LocalPostgres`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// TCP port on 127.0.0.1; `None` picks a free one.
    pub port: Option<u16>,
    /// The `fsync` setting. Off is only for throwaway test clusters.
    pub fsync: bool,
    /// The `synchronous_commit` setting.
    pub synchronous_commit: bool,
    /// Pass `--no-sync` to `initdb` (faster, for test clusters).
    pub initdb_no_sync: bool,
    /// Extra `-c name=value` server settings, e.g. `("max_connections", "300")`.
    pub settings: Vec<(String, String)>,
    /// How long to wait until the server accepts connections.
    pub ready_timeout: Duration,
    /// Leave the server running when the [`LocalPostgres`] is dropped, in its own process group so
    /// that it outlives this process (a server shared by many test processes).
    pub keep_running: bool,
    /// Directory with `initdb` and `postgres`; `None` uses [`PG_BIN_DIR_ENV`], then the directory
    /// of `initdb` in `PATH`, then the newest `/usr/lib/postgresql/*/bin`.
    pub bin_dir: Option<PathBuf>,
    /// The superuser's password: every connection (TCP and socket) must then log in with a
    /// password (`scram-sha-256`). `None` trusts every local connection: throwaway test
    /// clusters only.
    pub superuser_password: Option<String>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            port: None,
            fsync: true,
            synchronous_commit: true,
            initdb_no_sync: false,
            settings: Vec::new(),
            ready_timeout: Duration::from_secs(60),
            keep_running: false,
            bin_dir: None,
            superuser_password: None,
        }
    }
}

/// A PostgreSQL server running as a child of this process; its superuser is `postgres`, with a
/// password when [`PostgresOptions::superuser_password`] is set (else local connections are
/// trusted).
///
/// The directory given to [`LocalPostgres::start`] holds `data/` (the cluster), `run/` (the Unix
/// socket) and `postgres.log`. When this process runs as root, the server runs as the `postgres`
/// user, which then owns the directory. Dropping the value shuts the server down (fast shutdown)
/// unless [`PostgresOptions::keep_running`] is set.
#[derive(Debug)]
pub struct LocalPostgres {
    dir: PathBuf,
    port: u16,
    bin_dir: PathBuf,
    options: PostgresOptions,
    run_as: Option<RunAs>,
    child: Option<Child>,
}

impl LocalPostgres {
    /// Creates `dir` if needed, runs `initdb` if the cluster does not exist yet, starts the
    /// server and waits until it accepts connections.
    pub async fn start(dir: impl AsRef<Path>, options: PostgresOptions) -> Result<Self> {
        let dir =
            std::path::absolute(dir.as_ref()).map_err(|e| Error::io("resolve", dir.as_ref(), e))?;
        let bin_dir = postgres_bin_dir(options.bin_dir.as_deref())?;
        let run_as = if process::is_root() {
            Some(RunAs::postgres().await?)
        } else {
            None
        };
        let dir = match run_as {
            Some(user) if !user.can_reach(&dir) => relocate(&dir)?,
            _ => dir,
        };
        for sub in [&dir, &dir.join("run")] {
            std::fs::create_dir_all(sub).map_err(|e| Error::io("create directory", sub, e))?;
            if let Some(user) = run_as {
                user.chown(sub)?;
            }
        }
        let mut pg = Self {
            port: 0,
            dir,
            bin_dir,
            options,
            run_as,
            child: None,
        };
        pg.initdb_if_needed().await?;

        // A fixed port is retried for a while: after a crash, the old server's backends may still
        // hold the port or the shared memory for a moment. A free port is retried on a new port.
        let mut attempts_left = if pg.options.port.is_some() { 40 } else { 3 };
        loop {
            attempts_left -= 1;
            pg.remove_stale_pid_file();
            pg.port = match pg.options.port {
                Some(port) => port,
                None => process::free_port()?,
            };
            match pg.launch().await {
                Ok(()) => {
                    pg.require_passwords().await?;
                    return Ok(pg);
                }
                Err(Error::Exited { .. }) if attempts_left > 0 => {
                    if pg.options.port.is_some() {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    tracing::debug!(
                        port = pg.port,
                        "postgres exited during startup, retrying on another port"
                    );
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The superuser's URL of database `dbname`: `postgres://postgres[:password]@127.0.0.1:PORT/dbname`.
    pub fn url(&self, dbname: &str) -> String {
        match &self.options.superuser_password {
            Some(password) => format!(
                "postgres://postgres:{}@127.0.0.1:{}/{dbname}",
                url_encode(password),
                self.port
            ),
            None => format!("postgres://postgres@127.0.0.1:{}/{dbname}", self.port),
        }
    }

    /// The URL of database `dbname` for the login role `user` with `password`.
    pub fn url_as(&self, user: &str, password: &str, dbname: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{dbname}",
            url_encode(user),
            url_encode(password),
            self.port
        )
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's (postmaster's) process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The directory holding `data/`, `run/` and the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cluster's data directory (`PGDATA`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server's log file (its stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// Creates database `name` unless it exists.
    pub async fn create_database(&self, name: &str) -> Result<()> {
        create_database(&self.url("postgres"), name).await
    }

    /// Waits until the server's process exits (it crashed or was killed); never returns while
    /// none was started. Cancel-safe.
    pub async fn exited(&mut self) -> Option<std::process::ExitStatus> {
        match self.child.as_mut() {
            Some(child) => child.wait().await.ok(),
            None => std::future::pending().await,
        }
    }

    /// Kills the server with SIGKILL, as a crash would, and waits for it to exit.
    pub async fn kill(&mut self) -> Result<()> {
        process::kill_child(&mut self.child).await;
        Ok(())
    }

    /// Shuts the server down (fast shutdown: SIGINT, which rolls back open transactions and
    /// disconnects clients) and waits for it, killing it if it takes over 30 s.
    pub async fn stop(&mut self) -> Result<()> {
        let what = self.what();
        process::stop_child(&mut self.child, Signal::INT, Duration::from_secs(30), &what).await
    }

    /// Starts the server again on the same directory and port (after [`Self::kill`] or
    /// [`Self::stop`]; it is killed first if it still runs). Committed data survives; crash
    /// recovery runs if the server was killed.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill().await?;
        let started = Instant::now();
        loop {
            match self.launch().await {
                // Backends of a killed server may hold its shared memory for a moment, which
                // makes the new postmaster refuse to start; they exit on noticing its death.
                Err(Error::Exited { .. }) if started.elapsed() < self.options.ready_timeout => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => return other,
            }
        }
    }

    fn what(&self) -> String {
        format!("postgres on 127.0.0.1:{}", self.port)
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(program));
        command.current_dir(&self.dir).stdin(Stdio::null());
        if let Some(user) = self.run_as {
            command.uid(user.uid).gid(user.gid);
        }
        command
    }

    async fn initdb_if_needed(&self) -> Result<()> {
        let data = self.data_dir();
        if data.join("PG_VERSION").exists() {
            return Ok(());
        }
        let started = Instant::now();
        let mut initdb = self.command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-E", "UTF8", "--locale=C"]);
        if self.options.initdb_no_sync {
            initdb.arg("--no-sync");
        }
        // initdb reads the superuser's password from a file (never the command line).
        let pwfile = self.dir.join("run").join("initdb-password");
        match &self.options.superuser_password {
            Some(password) => {
                let _ = std::fs::remove_file(&pwfile);
                crate::nats_auth::write_private(&pwfile, password.as_bytes())?;
                if let Some(user) = self.run_as {
                    user.chown(&pwfile)?;
                }
                initdb
                    .args(["-A", "scram-sha-256", "--pwfile"])
                    .arg(&pwfile);
            }
            None => {
                initdb.args(["-A", "trust"]);
            }
        }
        let output = initdb.output().await;
        let _ = std::fs::remove_file(&pwfile);
        let program = self.bin_dir.join("initdb");
        let output = output.map_err(|source| Error::SpawnFailed {
            program: program.clone(),
            source,
        })?;
        if !output.status.success() {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            return Err(Error::CommandFailed {
                program,
                status: output.status,
                output: text.trim().to_owned(),
            });
        }
        if self.options.superuser_password.is_some() {
            self.mark_passwords_required()?;
        }
        tracing::info!(
            data = %data.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "initdb done"
        );
        Ok(())
    }

    /// The file saying the superuser has its password and `pg_hba.conf` asks for one.
    fn passwords_marker(&self) -> PathBuf {
        self.dir.join("passwords-required")
    }

    fn mark_passwords_required(&self) -> Result<()> {
        let marker = self.passwords_marker();
        std::fs::write(&marker, "scram-sha-256\n").map_err(|e| Error::io("write", &marker, e))
    }

    /// `pg_hba.conf`: every connection logs in with a password, or (no superuser password set)
    /// every local one is trusted. Rewritten at each start so an edit cannot linger.
    fn write_hba(&self, passwords: bool) -> Result<()> {
        let method = if passwords { "scram-sha-256" } else { "trust" };
        let hba = self.data_dir().join("pg_hba.conf");
        let text = format!(
            "# Written by warren-deploy at each start.\n\
             # TYPE  DATABASE  USER  ADDRESS       METHOD\n\
             local   all       all                 {method}\n\
             host    all       all   127.0.0.1/32  {method}\n\
             host    all       all   ::1/128       {method}\n"
        );
        std::fs::write(&hba, text).map_err(|e| Error::io("write", &hba, e))?;
        if let Some(user) = self.run_as {
            user.chown(&hba)?;
        }
        Ok(())
    }

    /// A cluster made before passwords were required (trusting local connections): give the
    /// superuser its password, then require passwords from everyone.
    async fn require_passwords(&mut self) -> Result<()> {
        let Some(password) = self.options.superuser_password.clone() else {
            return Ok(());
        };
        if self.passwords_marker().exists() {
            return Ok(());
        }
        let url = self.url("postgres");
        let action = "set the superuser's password";
        let mut conn = connect(&url, action).await?;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "ALTER ROLE postgres PASSWORD {}",
            quote_literal(&password)
        )))
        .execute(&mut conn)
        .await
        .map_err(|source| sql_error(action, &url, source))?;
        self.write_hba(true)?;
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&mut conn)
            .await
            .map_err(|source| sql_error(action, &url, source))?;
        let _ = conn.close().await;
        self.mark_passwords_required()?;
        tracing::info!("the local PostgreSQL now requires passwords (scram-sha-256)");
        Ok(())
    }

    /// Removes `postmaster.pid` if the server it names is gone. After a SIGKILL the old postmaster
    /// may linger as a zombie (no reaper in some containers), which PostgreSQL takes for a live
    /// server and refuses to start.
    fn remove_stale_pid_file(&self) {
        let pid_file = self.data_dir().join("postmaster.pid");
        let Ok(contents) = std::fs::read_to_string(&pid_file) else {
            return;
        };
        let Some(pid) = contents
            .lines()
            .next()
            .and_then(|line| line.trim().parse::<u32>().ok())
        else {
            return;
        };
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                // The state letter follows the parenthesised command name.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned))
            });
        let alive = matches!(state.as_deref(), Some(s) if s != "Z" && s != "X");
        if !alive {
            tracing::info!(pid, "removing stale postmaster.pid");
            let _ = std::fs::remove_file(&pid_file);
        }
    }

    async fn launch(&mut self) -> Result<()> {
        // Until `require_passwords` has run on an old cluster, it trusts as it did before.
        let passwords =
            self.options.superuser_password.is_some() && self.passwords_marker().exists();
        if self.options.superuser_password.is_none() || passwords {
            self.write_hba(passwords)?;
        }
        let log = self.log_path();
        let (stdout, stderr) = process::open_log(&log)?;
        if let Some(user) = self.run_as {
            user.chown(&log)?;
        }
        // Long directories would overflow the socket path; TCP is all we use, so go without one.
        let socket_dir = self.dir.join("run");
        let socket_len = socket_dir.as_os_str().len() + format!("/.s.PGSQL.{}", self.port).len();
        let socket_dir = if socket_len <= MAX_SOCKET_PATH {
            socket_dir.into_os_string()
        } else {
            "".into()
        };
        let on_off = |b: bool| if b { "on" } else { "off" };
        let mut postgres = self.command("postgres");
        postgres
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(socket_dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("fsync={}", on_off(self.options.fsync)))
            .arg("-c")
            .arg(format!(
                "synchronous_commit={}",
                on_off(self.options.synchronous_commit)
            ));
        for (name, value) in &self.options.settings {
            postgres.arg("-c").arg(format!("{name}={value}"));
        }
        postgres.stdout(stdout).stderr(stderr);
        if self.options.keep_running {
            // Its own process group: a test runner that kills a test's group leaves it alone.
            postgres.process_group(0);
        }
        let started = Instant::now();
        let child = postgres.spawn().map_err(|source| Error::SpawnFailed {
            program: self.bin_dir.join("postgres"),
            source,
        })?;
        self.child = Some(child);
        if let Err(e) = self.wait_ready(started).await {
            self.kill().await?;
            return Err(e);
        }
        tracing::info!(
            // The superuser's password stays out of the log.
            url = %redact_url(&self.url("postgres")),
            pid = self.pid(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "postgres ready"
        );
        Ok(())
    }

    async fn wait_ready(&mut self, started: Instant) -> Result<()> {
        let what = self.what();
        let log = self.log_path();
        let mut options = PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username("postgres")
            .database("postgres");
        if let Some(password) = &self.options.superuser_password {
            options = options.password(password);
        }
        loop {
            if let Some(child) = self.child.as_mut() {
                process::check_alive(child, &what, &log)?;
            }
            // A real connection, not just an open port: postgres listens before it has finished
            // recovery and answers "the database system is starting up" until then.
            if let Ok(Ok(conn)) =
                tokio::time::timeout(Duration::from_secs(2), options.connect()).await
            {
                let _ = conn.close().await;
                return Ok(());
            }
            if started.elapsed() >= self.options.ready_timeout {
                return Err(Error::NotReady {
                    what,
                    waited: started.elapsed(),
                    log_tail: process::log_tail(&log, 30),
                    log,
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// Where a cluster lives when the `postgres` user cannot reach `dir` (run as root under a
/// parent only root may search, e.g. a clone in `/root` or a `mktemp -d`): a directory of its
/// own under [`RELOCATED_ROOT`], named after `dir` so each data dir keeps its cluster across
/// restarts, with a symlink at `dir` pointing to it when `dir` does not exist yet.
fn relocate(dir: &Path) -> Result<PathBuf> {
    // FNV-1a of the path: a stable name, not a secret.
    let hash = dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        });
    let root = Path::new(RELOCATED_ROOT);
    std::fs::create_dir_all(root).map_err(|e| Error::io("create directory", root, e))?;
    let relocated = root.join(format!("{hash:016x}"));
    std::fs::create_dir_all(&relocated)
        .map_err(|e| Error::io("create directory", &relocated, e))?;
    if std::fs::symlink_metadata(dir).is_err() {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io("create directory", parent, e))?;
        }
        std::os::unix::fs::symlink(&relocated, dir).map_err(|e| Error::io("symlink", dir, e))?;
    }
    tracing::warn!(
        wanted = %dir.display(),
        cluster = %relocated.display(),
        "PostgreSQL runs as the `postgres` user, which cannot reach the data dir (a parent \
         directory is not searchable by others); its cluster is kept in {} instead",
        relocated.display()
    );
    Ok(relocated)
}

/// Where clusters go that the `postgres` user could not reach where they were asked for.
pub const RELOCATED_ROOT: &str = "/var/lib/warren/postgres";

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        if self.options.keep_running {
            return;
        }
        let what = self.what();
        if let Some(child) = self.child.as_mut() {
            if let Some(pid) = child.id() {
                let _ = process::send_signal(pid, Signal::INT, &what);
            }
            if !process::wait_exit_blocking(child, Duration::from_secs(10)) {
                let _ = child.start_kill();
                process::wait_exit_blocking(child, Duration::from_secs(2));
            }
        }
    }
}

/// Finds the directory holding `initdb` and `postgres`: `explicit` if given, else
/// [`PG_BIN_DIR_ENV`], else the (symlink-resolved) directory of `initdb` in `PATH`, else the
/// newest `/usr/lib/postgresql/*/bin`.
pub fn postgres_bin_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_owned());
    }
    if let Some(dir) = std::env::var_os(PG_BIN_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(dir.into());
    }
    if let Some(initdb) = process::find_on_path("initdb") {
        let resolved = std::fs::canonicalize(&initdb).unwrap_or(initdb);
        if let Some(dir) = resolved
            .parent()
            .filter(|d| process::is_executable(&d.join("postgres")))
        {
            return Ok(dir.to_owned());
        }
    }
    newest_debian_bin_dir(Path::new("/usr/lib/postgresql")).ok_or(Error::BinaryNotFound {
        program: "initdb",
        hint: format!(
            "not in PATH, not under /usr/lib/postgresql/*/bin and {PG_BIN_DIR_ENV} is not set \
             (install PostgreSQL with `apt-get install -y postgresql`)"
        ),
    })
}

/// The `bin` directory of the highest major version under `root` (Debian's layout).
fn newest_debian_bin_dir(root: &Path) -> Option<PathBuf> {
    std::fs::read_dir(root)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: f64 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            process::is_executable(&bin.join("initdb")).then_some((version, bin))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, bin)| bin)
}

/// The URL of database `dbname` on the server of `server_url` (same credentials and
/// parameters, another path).
pub fn database_url(server_url: &str, dbname: &str) -> String {
    let (base, query) = match server_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server_url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut url = format!("{}/{dbname}", &base[..path_start]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// `url` with its password, if any, replaced by `***` (for errors and logs).
pub fn redact_url(url: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[authority_start..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!(
                "{}{user}:***@{host}{}",
                &url[..authority_start],
                &rest[authority_end..]
            ),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Creates database `name` on the server of `server_url` (any database URL on it) unless it
/// exists. Safe to race with another creator of the same name.
pub async fn create_database(server_url: &str, name: &str) -> Result<()> {
    validate_database_name(name)?;
    let action = format!("create database {name}");
    let mut conn = connect(server_url, &action).await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut conn)
        .await
        .map_err(|source| sql_error(&action, server_url, source))?;
    if exists.is_none() {
        let result = sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await;
        match result {
            // 42P04 duplicate_database; 23505 when two CREATE DATABASE race in the catalog.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04") | Some("23505")) => {}
            Err(source) => return Err(sql_error(&action, server_url, source)),
            Ok(_) => {}
        }
    }
    let _ = conn.close().await;
    Ok(())
}

/// Drops database `name` on the server of `server_url`, disconnecting its sessions first
/// (`WITH (FORCE)`, PostgreSQL 13+). A missing database is not an error.
pub async fn drop_database(server_url: &str, name: &str) -> Result<()> {
    validate_database_name(name)?;
    let action = format!("drop database {name}");
    let mut conn = connect(server_url, &action).await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await
    .map_err(|source| sql_error(&action, server_url, source))?;
    let _ = conn.close().await;
    Ok(())
}

async fn connect(server_url: &str, action: &str) -> Result<PgConnection> {
    let options = PgConnectOptions::from_str(server_url)
        .map_err(|source| sql_error(action, server_url, source))?;
    options
        .connect()
        .await
        .map_err(|source| sql_error(action, server_url, source))
}

/// A login role Warren's processes use: its name and password.
#[derive(Clone)]
pub struct Login {
    /// The role's name (a plain identifier).
    pub user: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// Sets up database `database` on the server of `server_url` (a superuser's, or one with
/// `CREATEROLE`) for Warren's two kinds of connection (ADR 13):
/// - `writer` (the projector, `warren replay`, `warren migrate`) owns the read-model schemas:
///   it may create schemas in the database and owns every table of `warren`;
/// - `reader` (the edge and the workers) may connect and read every table the writer makes,
///   now and after a rebuild, and nothing else.
///
/// Neither is a superuser, nor may create databases or roles; nobody else may connect to the
/// database. Idempotent: passwords are (re)set, an existing `warren` schema is handed to the
/// writer.
pub async fn provision_roles(
    server_url: &str,
    database: &str,
    writer: &Login,
    reader: &Login,
) -> Result<()> {
    validate_database_name(database)?;
    for login in [writer, reader] {
        validate_database_name(&login.user)?;
    }
    let action = format!("set up roles of database {database}");
    let mut conn = connect(server_url, &action).await?;
    let (w, r) = (&writer.user, &reader.user);
    let mut statements = Vec::new();
    for login in [writer, reader] {
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_roles WHERE rolname = $1")
            .bind(&login.user)
            .fetch_optional(&mut conn)
            .await
            .map_err(|source| sql_error(&action, server_url, source))?;
        let verb = if exists.is_some() { "ALTER" } else { "CREATE" };
        statements.push(format!(
            "{verb} ROLE \"{}\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS \
             PASSWORD {}",
            login.user,
            quote_literal(&login.password)
        ));
    }
    statements.extend([
        format!("REVOKE ALL ON DATABASE \"{database}\" FROM PUBLIC"),
        format!("GRANT CONNECT, CREATE, TEMPORARY ON DATABASE \"{database}\" TO \"{w}\""),
        format!("GRANT CONNECT ON DATABASE \"{database}\" TO \"{r}\""),
    ]);
    run_all(&mut conn, &statements, &action, server_url).await?;
    let _ = conn.close().await;

    let database_url = database_url(server_url, database);
    let mut conn = connect(&database_url, &action).await?;
    let mut statements = vec![
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC".to_owned(),
        format!("ALTER DEFAULT PRIVILEGES FOR ROLE \"{w}\" GRANT USAGE ON SCHEMAS TO \"{r}\""),
        format!("ALTER DEFAULT PRIVILEGES FOR ROLE \"{w}\" GRANT SELECT ON TABLES TO \"{r}\""),
    ];
    // A schema made before the roles existed (by a superuser) goes to the writer.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables \
         WHERE schemaname = 'warren'",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(|source| sql_error(&action, &database_url, source))?;
    let schema: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM pg_namespace WHERE nspname = 'warren'")
            .fetch_optional(&mut conn)
            .await
            .map_err(|source| sql_error(&action, &database_url, source))?;
    if schema.is_some() {
        statements.push(format!("ALTER SCHEMA warren OWNER TO \"{w}\""));
        statements.extend(
            tables
                .iter()
                .map(|table| format!("ALTER TABLE {table} OWNER TO \"{w}\"")),
        );
        statements.extend([
            format!("GRANT USAGE ON SCHEMA warren TO \"{r}\""),
            format!("GRANT SELECT ON ALL TABLES IN SCHEMA warren TO \"{r}\""),
        ]);
    }
    run_all(&mut conn, &statements, &action, &database_url).await?;
    let _ = conn.close().await;
    Ok(())
}

/// The URL of database `dbname` on the server of `server_url`, logging in as `login`.
pub fn login_url(server_url: &str, login: &Login, dbname: &str) -> String {
    let url = database_url(server_url, dbname);
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[authority_start..];
    let host_start = rest.find(['/', '?']).map_or(rest.len(), |end| {
        rest[..end].rfind('@').map_or(0, |at| at + 1)
    });
    format!(
        "{}{}:{}@{}",
        &url[..authority_start],
        url_encode(&login.user),
        url_encode(&login.password),
        &rest[host_start..]
    )
}

/// Drops the login roles of [`provision_roles`] (after their database is gone).
pub async fn drop_roles(server_url: &str, users: &[&str]) -> Result<()> {
    let action = "drop roles";
    let mut conn = connect(server_url, action).await?;
    for user in users {
        validate_database_name(user)?;
        sqlx::raw_sql(AssertSqlSafe(format!("DROP ROLE IF EXISTS \"{user}\"")))
            .execute(&mut conn)
            .await
            .map_err(|source| sql_error(action, server_url, source))?;
    }
    let _ = conn.close().await;
    Ok(())
}

async fn run_all(
    conn: &mut PgConnection,
    statements: &[String],
    action: &str,
    url: &str,
) -> Result<()> {
    for statement in statements {
        sqlx::raw_sql(AssertSqlSafe(statement.clone()))
            .execute(&mut *conn)
            .await
            .map_err(|source| sql_error(action, url, source))?;
    }
    Ok(())
}

/// A SQL string literal (standard-conforming strings: only `'` needs doubling).
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Percent-encodes everything but unreserved characters, for a URL's user info.
fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn sql_error(action: &str, url: &str, source: sqlx::Error) -> Error {
    Error::Sql {
        action: action.to_owned(),
        url: redact_url(url),
        source,
    }
}

/// Database names go into SQL unescaped, so only plain identifiers pass.
fn validate_database_name(name: &str) -> Result<()> {
    let plain = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plain {
        Ok(())
    } else {
        Err(Error::InvalidDatabaseName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_replaces_only_the_path() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            database_url("postgres://u:p@h:1/db?sslmode=disable", "t1"),
            "postgres://u:p@h:1/t1?sslmode=disable"
        );
        assert_eq!(database_url("postgres://h:1", "t1"), "postgres://h:1/t1");
    }

    #[test]
    fn login_url_swaps_the_user_info_and_the_database() {
        let login = Login {
            user: "w".into(),
            password: "p@ss".into(),
        };
        assert_eq!(
            login_url("postgres://postgres@127.0.0.1:5432/postgres", &login, "db"),
            "postgres://w:p%40ss@127.0.0.1:5432/db"
        );
        assert_eq!(
            login_url("postgres://a:b@h:1/x?sslmode=disable", &login, "db"),
            "postgres://w:p%40ss@h:1/db?sslmode=disable"
        );
        assert_eq!(
            login_url("postgres://h:1", &login, "db"),
            "postgres://w:p%40ss@h:1/db"
        );
    }

    #[test]
    fn redact_url_hides_the_password_only() {
        assert_eq!(
            redact_url("postgres://u:secret@h:1/db"),
            "postgres://u:***@h:1/db"
        );
        assert_eq!(redact_url("postgres://u@h:1/db"), "postgres://u@h:1/db");
        assert_eq!(redact_url("postgres://h:1/db"), "postgres://h:1/db");
    }

    #[test]
    fn database_names_must_be_plain_identifiers() {
        assert!(validate_database_name("warren_test_0af3").is_ok());
        for bad in ["", "a\"b", "a b", "a;drop", &"x".repeat(64)] {
            assert!(validate_database_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn newest_debian_bin_dir_picks_the_highest_version() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().expect("tempdir");
        for version in ["9.6", "15", "13", "notaversion"] {
            let bin = root.path().join(version).join("bin");
            std::fs::create_dir_all(&bin).expect("mkdir");
            let initdb = bin.join("initdb");
            std::fs::write(&initdb, "#!/bin/sh\n").expect("write");
            std::fs::set_permissions(&initdb, std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
        assert_eq!(
            newest_debian_bin_dir(root.path()),
            Some(root.path().join("15").join("bin"))
        );
    }
}
