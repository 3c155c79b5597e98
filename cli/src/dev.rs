//! `warren dev`: the whole platform in one process. Uses `WARREN_NATS_URL` / `WARREN_DATABASE_URL`
//! when set; otherwise starts a local nats-server (store in `<data_dir>/nats`) and a local
//! PostgreSQL cluster (`<data_dir>/pg`), both stopped when `warren dev` exits.
//!
//! Even in one process every role is itself: each connects to NATS with its own key and
//! permissions, the projector writes the read models as their owner and everyone else reads
//! them as a reader (ADR 13). The local servers admit nothing else: the nats-server only the
//! roles' keys (generated in `<data_dir>/credentials/nats`), PostgreSQL only password logins
//! (`<data_dir>/credentials/postgres`), all files owner-only.
//!
//! A local server that dies is started again on the same store and port ([`embedded`]); the
//! roles reconnect by themselves.
//!
//! With no platform model provider configured, it also serves the local model (ADR 31,
//! `WARREN_LOCAL_MODEL`) and makes it the platform default, so a first chat needs no key.

use crate::config::Config;
use crate::embedded;
use crate::roles::{self, Endpoints};
use anyhow::Context;
use std::path::Path;
use tokio_util::sync::CancellationToken;
use warren_deploy::postgres::{self as pg, Login};
use warren_deploy::{LocalNats, LocalPostgres, NatsKeys, NatsOptions, PostgresOptions, Role};
use warren_workers::projector::Projector;

/// The database `warren dev` uses on its local cluster.
const DEV_DATABASE: &str = "warren";
/// The login role that owns and writes the read models on the local cluster.
const DEV_WRITER: &str = "warren_writer";
/// The login role the edge and workers read with on the local cluster.
const DEV_READER: &str = "warren_reader";

/// Runs every role until shutdown.
pub async fn run(mut config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    // Serves until `warren dev` ends.
    let _local_model = local_model(&mut config).await?;
    let credentials = config.data_dir.join("credentials");
    warren_deploy::nats_auth::create_private_dir(&credentials.join("postgres"))?;
    // The local servers are kept running (started again if one dies) until the roles have
    // stopped; then they are stopped too (also when this returns early with an error).
    let servers = CancellationToken::new();
    let _stop_servers = servers.clone().drop_guard();
    let mut kept = Vec::new();
    let (nats_url, nats_keys) = match &config.nats_url {
        Some(url) => (
            url.clone(),
            config.nats_credentials_dir.as_ref().map(NatsKeys::open),
        ),
        None => {
            let options = NatsOptions {
                port: config.dev_nats_port,
                sync_interval: config.nats_sync_interval.clone(),
                binary: config.nats_server_bin.clone(),
                keys: Some(
                    config
                        .nats_credentials_dir
                        .clone()
                        .unwrap_or_else(|| credentials.join("nats")),
                ),
                ..Default::default()
            };
            let nats = LocalNats::start(config.data_dir.join("nats"), options)
                .await
                .context("starting nats-server")?;
            tracing::info!(url = nats.url(), "local nats-server started");
            let found = (nats.url(), nats.keys().cloned());
            kept.push(embedded::keep(nats, servers.clone()));
            found
        }
    };
    let (writer_url, reader_url) = match &config.database_url {
        Some(url) => (
            url.expose().to_owned(),
            config.require_reader_database()?.to_owned(),
        ),
        None => {
            let (pg, writer, reader) =
                local_postgres(&config, &credentials.join("postgres")).await?;
            let urls = (
                pg.url_as(&writer.user, &writer.password, DEV_DATABASE),
                pg.url_as(&reader.user, &reader.password, DEV_DATABASE),
            );
            kept.push(embedded::keep(pg, servers.clone()));
            urls
        }
    };
    let endpoints = Endpoints {
        nats_url,
        nats_keys,
        writer_url,
        reader_url,
    };

    let writer_db = roles::database(&config, &endpoints.writer_url, true).await?;
    let reader_db = roles::database(&config, &endpoints.reader_url, false).await?;
    // The admin sets up the log's streams and buckets, then leaves.
    let admin = roles::connect_with(&config, &endpoints, Role::Admin, writer_db.clone()).await?;
    admin
        .nats
        .drain()
        .await
        .context("closing the admin connection")?;
    let connect = |role, db| roles::connect_with(&config, &endpoints, role, db);
    let projector = connect(Role::Projector, writer_db).await?;
    let notifier = connect(Role::Notifier, reader_db.clone()).await?;
    let deployer = connect(Role::Deployer, reader_db.clone()).await?;
    let chat = connect(Role::Chat, reader_db.clone()).await?;
    let telegram = match config.telegram_token {
        Some(_) => Some(connect(Role::Telegram, reader_db.clone()).await?),
        None => None,
    };
    let edge = connect(Role::Edge, reader_db).await?;
    // One ops listener for every role of the process.
    let _ops = roles::ops(&config, &edge, Some(&projector), shutdown.clone())?;

    let projector = tokio::spawn(
        Projector::build(projector.js.clone(), projector.db.clone()).run(shutdown.clone()),
    );
    let notifier = tokio::spawn(roles::notifier(&config, &notifier)?.run(shutdown.clone()));
    let deployer = tokio::spawn(
        roles::deployer(&config, &deployer, true)
            .await?
            .run(shutdown.clone()),
    );
    let chat = tokio::spawn(
        roles::chat(&config, &chat, true)
            .await?
            .run(shutdown.clone()),
    );
    let telegram = match &telegram {
        Some(platform) => roles::telegram(&config, platform, shutdown.clone())
            .await?
            .map(|bridge| tokio::spawn(bridge.run())),
        None => None,
    };
    let served = roles::serve_edge(&config, &edge, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(telegram) = telegram {
        telegram.await.context("telegram task")?;
    }
    projector.await.context("projector task")?;
    notifier.await.context("notifier task")?;
    deployer.await.context("deployer task")?;
    chat.await.context("chat task")?;
    servers.cancel();
    for server in kept {
        server.await.context("stopping a local server")?;
    }
    served
}

/// The local model, when no provider is configured and `WARREN_LOCAL_MODEL` finds one: it
/// becomes the platform default (a `custom` provider on loopback with a key made for this run),
/// and the default model of new agents unless one was chosen.
#[cfg(feature = "local-model")]
async fn local_model(config: &mut Config) -> anyhow::Result<Option<warren_localmodel::LocalModel>> {
    use warren_localmodel::{LocalModel, Located, MODEL_ID, Options};
    if config.model_provider_configured() {
        return Ok(None);
    }
    let gguf = match warren_localmodel::locate(&config.local_model) {
        Located::Off => return Ok(None),
        Located::Missing(why) => {
            tracing::warn!("no local model: {why}");
            return Ok(None);
        }
        Located::Invalid(why) => anyhow::bail!(why),
        Located::Found(gguf) => gguf,
    };
    let key = hex::encode(rand::random::<[u8; 32]>());
    let mut options = Options::new(&gguf);
    options.api_key = Some(key.clone());
    let model = LocalModel::start(options).await?;
    config.default_provider = Some(warren_domain::user::Provider::Custom);
    config.default_base_url = Some(model.base_url());
    config.default_api_key = Some(key.into());
    if config.default_model == crate::config::DEFAULT_MODEL {
        config.default_model = MODEL_ID.to_owned();
    }
    tracing::warn!(
        url = model.base_url(),
        gguf = %gguf.display(),
        "no model provider is configured: agents talk to the local model {MODEL_ID}, a small \
         demonstration model, not a provider (set WARREN_DEFAULT_PROVIDER, \
         WARREN_DEFAULT_BASE_URL and WARREN_DEFAULT_API_KEY, or add your own key)"
    );
    Ok(Some(model))
}

/// This `warren` was built without the local model (`--no-default-features`).
#[cfg(not(feature = "local-model"))]
async fn local_model(config: &mut Config) -> anyhow::Result<Option<()>> {
    if !config.model_provider_configured() && config.local_model != "off" {
        tracing::warn!(
            "this warren was built without the local model (feature local-model): with no \
             model provider configured, runs fail with model_not_configured"
        );
    }
    Ok(None)
}

/// Starts the local PostgreSQL (passwords required, the superuser's generated) with the
/// `warren` database, its writer and its reader.
async fn local_postgres(
    config: &Config,
    credentials: &Path,
) -> anyhow::Result<(LocalPostgres, Login, Login)> {
    let password = |name: &str| -> anyhow::Result<String> {
        Ok(
            roles::generated_secret(&credentials.join(format!("{name}.password")))?
                .expose()
                .to_owned(),
        )
    };
    let pg = LocalPostgres::start(
        config.data_dir.join("pg"),
        PostgresOptions {
            port: config.dev_postgres_port,
            superuser_password: Some(password("postgres")?),
            bin_dir: config.pg_bin_dir.clone(),
            ..Default::default()
        },
    )
    .await
    .context("starting PostgreSQL")?;
    pg.create_database(DEV_DATABASE)
        .await
        .context("creating the dev database")?;
    let writer = Login {
        user: DEV_WRITER.into(),
        password: password(DEV_WRITER)?,
    };
    let reader = Login {
        user: DEV_READER.into(),
        password: password(DEV_READER)?,
    };
    pg::provision_roles(&pg.url("postgres"), DEV_DATABASE, &writer, &reader)
        .await
        .context("setting up the dev database's roles")?;
    tracing::info!(port = pg.port(), "local PostgreSQL started");
    Ok((pg, writer, reader))
}
