//! `warren dev`: the whole platform in one process. Uses `WARREN_NATS_URL` / `WARREN_DATABASE_URL`
//! when set; otherwise starts a local nats-server (store in `<data_dir>/nats`) and a local
//! PostgreSQL cluster (`<data_dir>/pg`), both stopped when `warren dev` exits.

use crate::config::Config;
use crate::roles;
use anyhow::Context;
use tokio_util::sync::CancellationToken;
use warren_deploy::{LocalNats, LocalPostgres, NatsOptions, PostgresOptions};
use warren_workers::projector::Projector;

/// The database `warren dev` uses on its local cluster.
const DEV_DATABASE: &str = "warren";

/// Runs every role until shutdown.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    // Keep the local servers alive for the whole run; dropping them stops them.
    let mut _local_nats = None;
    let nats_url = match &config.nats_url {
        Some(url) => url.clone(),
        None => {
            let options = NatsOptions {
                port: config.dev_nats_port,
                sync_interval: config.nats_sync_interval.clone(),
                ..Default::default()
            };
            let nats = LocalNats::start(config.data_dir.join("nats"), options)
                .await
                .context("starting nats-server")?;
            tracing::info!(url = nats.url(), "local nats-server started");
            let url = nats.url();
            _local_nats = Some(nats);
            url
        }
    };
    let mut _local_pg = None;
    let database_url = match &config.database_url {
        Some(url) => url.expose().to_owned(),
        None => {
            let pg = LocalPostgres::start(
                config.data_dir.join("pg"),
                PostgresOptions {
                    port: config.dev_postgres_port,
                    ..Default::default()
                },
            )
            .await
            .context("starting PostgreSQL")?;
            pg.create_database(DEV_DATABASE)
                .await
                .context("creating the dev database")?;
            tracing::info!(port = pg.port(), "local PostgreSQL started");
            let url = pg.url(DEV_DATABASE);
            _local_pg = Some(pg);
            url
        }
    };

    let platform = roles::connect(&config, &nats_url, &database_url).await?;
    let projector = tokio::spawn(
        Projector::build(platform.js.clone(), platform.db.clone()).run(shutdown.clone()),
    );
    let notifier = tokio::spawn(roles::notifier(&config, &platform)?.run(shutdown.clone()));
    let deployer = tokio::spawn(
        roles::deployer(&config, &platform, true)
            .await?
            .run(shutdown.clone()),
    );
    let chat = tokio::spawn(
        roles::chat(&config, &platform, true)
            .await?
            .run(shutdown.clone()),
    );
    let served = roles::serve_edge(&config, &platform, shutdown.clone()).await;
    shutdown.cancel();
    projector.await.context("projector task")?;
    notifier.await.context("notifier task")?;
    deployer.await.context("deployer task")?;
    chat.await.context("chat task")?;
    served
}
