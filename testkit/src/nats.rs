//! [`TestNats`]: one JetStream server per test.

use std::ops::{Deref, DerefMut};

use tempfile::TempDir;
use warren_deploy::{LocalNats, NatsKeys, NatsOptions, Role};

/// A fresh `nats-server` with JetStream (file storage) in its own temporary directory, on a
/// free port, for one test. Like every server Warren runs, it admits only the platform roles'
/// keys (generated in its directory), each with its role's permissions; [`TestNats::client`]
/// is the admin.
///
/// Dereferences to [`LocalNats`], so `url()`, `kill()` and `restart()` are at hand. Dropping it
/// kills the server and removes its directory.
#[derive(Debug)]
pub struct TestNats {
    // Declared before `dir` so that the server is killed before its directory is removed.
    nats: LocalNats,
    dir: TempDir,
}

impl TestNats {
    /// Starts a server with the default options (`sync_interval` 2m). Panics if it cannot.
    pub async fn start() -> Self {
        Self::start_with_options(NatsOptions::default()).await
    }

    /// Starts a server with the given JetStream `sync_interval` (`"always"`, `"2m"`, …).
    pub async fn start_with(sync_interval: &str) -> Self {
        Self::start_with_options(NatsOptions {
            sync_interval: sync_interval.to_owned(),
            ..NatsOptions::default()
        })
        .await
    }

    /// Starts a server with the given options. Panics if it cannot.
    pub async fn start_with_options(options: NatsOptions) -> Self {
        match Self::try_start(options).await {
            Ok(nats) => nats,
            Err(e) => panic!("TestNats: {e:#}"),
        }
    }

    /// Starts a server with the given options.
    pub async fn try_start(options: NatsOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("warren-nats-").tempdir()?;
        let options = NatsOptions {
            keys: Some(options.keys.unwrap_or_else(|| dir.path().join("keys"))),
            ..options
        };
        let nats = LocalNats::start(dir.path(), options).await?;
        Ok(Self { nats, dir })
    }

    /// The temporary directory holding the server's config, log and store.
    pub fn temp_dir(&self) -> &TempDir {
        &self.dir
    }

    /// A client connected as the admin role. Panics if it cannot connect.
    pub async fn client(&self) -> async_nats::Client {
        self.client_as(Role::Admin).await
    }

    /// A client connected as `role`, with that role's key and permissions. Panics if it cannot
    /// connect.
    pub async fn client_as(&self, role: Role) -> async_nats::Client {
        match self.nats.connect(role).await {
            Ok(client) => client,
            Err(e) => panic!("TestNats: cannot connect as {role}: {}", report(&e)),
        }
    }

    /// The roles' keys (`<role>.nk` seed files).
    pub fn keys(&self) -> &NatsKeys {
        self.nats.keys().expect("TestNats always starts with keys")
    }

    /// What a `warren` process needs to reach this server: `WARREN_NATS_URL` and
    /// `WARREN_NATS_CREDENTIALS_DIR`.
    pub fn warren_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("WARREN_NATS_URL", self.nats.url()),
            (
                "WARREN_NATS_CREDENTIALS_DIR",
                self.keys().dir().display().to_string(),
            ),
        ]
    }

    /// A JetStream context on a new client of this server.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.client().await)
    }
}

impl Deref for TestNats {
    type Target = LocalNats;

    fn deref(&self) -> &LocalNats {
        &self.nats
    }
}

impl DerefMut for TestNats {
    fn deref_mut(&mut self) -> &mut LocalNats {
        &mut self.nats
    }
}

/// An error and its sources on one line, the way a test failure should show it.
pub(crate) fn report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
