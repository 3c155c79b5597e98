//! [`TestDb`]: one fresh database per test on a shared PostgreSQL server.
//!
//! The server is, in order of preference:
//! 1. the one at `WARREN_TEST_DATABASE_URL` (a URL of any database on it, e.g.
//!    `postgres://postgres@127.0.0.1:55432/postgres`; `deploy/test.sh` sets it);
//! 2. a cluster the kit starts itself in `<temp dir>/warren-testkit-pg/cluster` (fsync off) and
//!    leaves running for later tests and runs. Test runners like cargo-nextest run every test in
//!    its own process, so the first process to get the file lock `warren-testkit-pg/lock` starts
//!    it detached (in its own process group) and every other one finds it running. Stop it with
//!    `pg_ctl -D <temp dir>/warren-testkit-pg/cluster/data stop` (as `postgres` when root).

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::sync::OnceCell;
use warren_deploy::postgres::{self as pg, LocalPostgres, PostgresOptions};

/// The environment variable with the URL of a server to create test databases on.
pub const TEST_DATABASE_URL_ENV: &str = "WARREN_TEST_DATABASE_URL";

/// The server URL, found once per test process.
static SERVER_URL: OnceCell<String> = OnceCell::const_new();

/// A fresh, uniquely named database (`warren_test_<uuid>`) for one test, with a pool on it, and
/// its own writer and reader login roles set up as `warren dev` sets up its database (ADR 13):
/// [`TestDb::warren_env`] is what a `warren` process gets, so tests run every role as the role it
/// is in production. [`TestDb::url`] and [`TestDb::pool`] are the superuser's, for checks.
///
/// Dropping it drops the database (best effort, `WITH (FORCE)`, so open connections are cut),
/// including when the test panics. A database left behind by a killed test process is harmless:
/// names never repeat.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: String,
    server_url: String,
    writer: pg::Login,
    reader: pg::Login,
    pool: PgPool,
}

impl TestDb {
    /// Creates the database and connects a pool (at most 5 connections). Panics if it cannot.
    pub async fn create() -> Self {
        match Self::try_create().await {
            Ok(db) => db,
            Err(e) => panic!("TestDb: {e:#}"),
        }
    }

    /// Creates the database and connects a pool.
    pub async fn try_create() -> anyhow::Result<Self> {
        let server_url = SERVER_URL
            .get_or_try_init(find_server)
            .await
            .context("no PostgreSQL server for tests")?
            .clone();
        let name = format!("warren_test_{}", uuid::Uuid::new_v4().simple());
        pg::create_database(&server_url, &name).await?;
        let login = |suffix: &str| pg::Login {
            user: format!("{name}_{suffix}"),
            password: uuid::Uuid::new_v4().simple().to_string(),
        };
        let (writer, reader) = (login("w"), login("r"));
        pg::provision_roles(&server_url, &name, &writer, &reader).await?;
        let url = pg::database_url(&server_url, &name);
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .connect(&url)
            .await
            .with_context(|| format!("connect to {}", pg::redact_url(&url)))?;
        Ok(Self {
            name,
            url,
            server_url,
            writer,
            reader,
            pool,
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database's URL (what a binary under test gets as its database URL).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A pool on the database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The URL of the read-model writer's login (projector, replay, migrate).
    pub fn writer_url(&self) -> String {
        pg::login_url(&self.server_url, &self.writer, &self.name)
    }

    /// The URL of the readers' login (edge and workers).
    pub fn reader_url(&self) -> String {
        pg::login_url(&self.server_url, &self.reader, &self.name)
    }

    /// What a `warren` process needs to use this database as production does:
    /// `WARREN_DATABASE_URL` (the writer) and `WARREN_DATABASE_READER_URL`.
    pub fn warren_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("WARREN_DATABASE_URL", self.writer_url()),
            ("WARREN_DATABASE_READER_URL", self.reader_url()),
        ]
    }

    /// The URL of the server's `postgres` database, for checks across databases.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let server_url = self.server_url.clone();
        let name = self.name.clone();
        let roles = [self.writer.user.clone(), self.reader.user.clone()];
        // Drop has no `.await` and may run inside a current-thread runtime, which cannot be
        // blocked on; a short-lived thread with its own runtime can.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), async {
                    pg::drop_database(&server_url, &name).await?;
                    pg::drop_roles(&server_url, &[&roles[0], &roles[1]]).await
                })
                .await
                .ok()?
                .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("TestDb: could not drop database {}", self.name);
        }
    }
}

async fn find_server() -> anyhow::Result<String> {
    if let Some(url) = std::env::var(TEST_DATABASE_URL_ENV)
        .ok()
        .filter(|u| !u.is_empty())
    {
        return Ok(url);
    }
    shared_local_server(&std::env::temp_dir().join("warren-testkit-pg")).await
}

/// Finds the kit's own cluster under `root` running, or starts it; one process at a time.
async fn shared_local_server(root: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(root).with_context(|| format!("create {}", root.display()))?;
    let lock_path = root.join("lock");
    // Blocking lock, so off the async threads; released when `_lock` is dropped.
    let _lock = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        file.lock()?;
        Ok(file)
    })
    .await?
    .with_context(|| format!("lock {}", root.join("lock").display()))?;

    let cluster = root.join("cluster");
    if let Some(port) = running_port(&cluster.join("data")) {
        let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        if accepts_login(&url).await {
            return Ok(url);
        }
    }
    let server = LocalPostgres::start(
        &cluster,
        PostgresOptions {
            fsync: false,
            synchronous_commit: false,
            initdb_no_sync: true,
            keep_running: true,
            settings: vec![
                ("full_page_writes".into(), "off".into()),
                ("max_connections".into(), "300".into()),
            ],
            ..PostgresOptions::default()
        },
    )
    .await
    .with_context(|| format!("start the shared test cluster in {}", cluster.display()))?;
    Ok(server.url("postgres"))
}

/// The port in a cluster's `postmaster.pid` (its fourth line), if there is one.
fn running_port(data: &Path) -> Option<u16> {
    let pid_file = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    pid_file.lines().nth(3)?.trim().parse().ok()
}

async fn accepts_login(url: &str) -> bool {
    let Ok(options) = url.parse::<sqlx::postgres::PgConnectOptions>() else {
        return false;
    };
    let connect = async {
        let conn: PgConnection = options.connect().await.ok()?;
        conn.close().await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), connect).await,
        Ok(Some(()))
    )
}
