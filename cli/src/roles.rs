//! Each role's `build → run(shutdown)`, shared by the standalone subcommands and `warren dev`.

use crate::config::{Config, SandboxChoice, Secret};
use anyhow::Context;
use async_nats::jetstream;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use warren_commands::CommandService;
use warren_deploy::nats_auth::{self, NatsKeys, Role};
use warren_deploy::postgres::{self as pg, Login};
use warren_edge::AppState;
use warren_edge::mail::Mailer;
use warren_edge::telegram::{Bridge, BridgeSettings};
use warren_projections::capacity::Capacity;
use warren_projections::schema::{self, LIVE_SCHEMA};
use warren_workers::chat::ChatWorker;
use warren_workers::deployer::Deployer;
use warren_workers::notifier::{Notifier, Outbox};
use warren_workers::projector::Projector;

/// Connections every role needs.
pub struct Platform {
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub db: PgPool,
    pub commands: CommandService,
}

/// Where this process finds the platform's services, and with which credentials.
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// The NATS server.
    pub nats_url: String,
    /// The roles' NATS keys (`<role>.nk`), if the server requires them.
    pub nats_keys: Option<NatsKeys>,
    /// The read-model writer's database URL.
    pub writer_url: String,
    /// The readers' database URL.
    pub reader_url: String,
}

impl Endpoints {
    /// From `WARREN_NATS_URL`, `WARREN_NATS_CREDENTIALS_DIR`, `WARREN_DATABASE_URL` and
    /// `WARREN_DATABASE_READER_URL` (a role run on its own; `reader` says whether it reads only).
    pub fn from_config(config: &Config, reader: bool) -> anyhow::Result<Self> {
        Ok(Self {
            nats_url: config.require_nats()?.to_owned(),
            nats_keys: config.nats_credentials_dir.as_ref().map(NatsKeys::open),
            writer_url: config.require_database()?.to_owned(),
            reader_url: if reader {
                config.require_reader_database()?.to_owned()
            } else {
                config.require_database()?.to_owned()
            },
        })
    }
}

/// Connects to NATS as `role`: with `WARREN_NATS_SEED`, else the role's key from the keys
/// directory, else (a server without authorization) with no key at all.
pub async fn connect_nats(
    config: &Config,
    endpoints: &Endpoints,
    role: Role,
) -> anyhow::Result<async_nats::Client> {
    let seed = match (&config.nats_seed, &endpoints.nats_keys) {
        (Some(seed), _) => Some(seed.expose().to_owned()),
        (None, Some(keys)) => Some(keys.seed(role).with_context(|| {
            format!("reading the NATS key of the {role} role (WARREN_NATS_CREDENTIALS_DIR)")
        })?),
        (None, None) => None,
    };
    if seed.is_none() {
        tracing::warn!(
            %role,
            "connecting to NATS without a key (set WARREN_NATS_CREDENTIALS_DIR or WARREN_NATS_SEED)"
        );
    }
    let url = &endpoints.nats_url;
    nats_auth::options(seed, role)
        .retry_on_initial_connect()
        .event_callback(move |event| async move {
            match event {
                // A refused subject is a bug in the role's permissions or an attack: say so.
                async_nats::Event::ServerError(err) => {
                    tracing::error!(%role, error = %err, "NATS server error");
                }
                other => tracing::debug!(%role, event = %other, "NATS connection event"),
            }
        })
        .connect(nats_auth::servers(url))
        .await
        .with_context(|| format!("connecting to NATS at {url} as {role}"))
}

/// Connects `role` to NATS and opens the log's stores (creating the topology first when the
/// role is the admin), on `db`.
pub async fn connect_with(
    config: &Config,
    endpoints: &Endpoints,
    role: Role,
    db: PgPool,
) -> anyhow::Result<Platform> {
    let nats = connect_nats(config, endpoints, role).await?;
    let js = jetstream::new(nats.clone());
    let commands = if role == Role::Admin {
        CommandService::start(js.clone(), &config.log_settings())
            .await
            .context("setting up the log")?
    } else {
        CommandService::open(js.clone())
            .await
            .context("opening the log")?
    };
    Ok(Platform {
        nats,
        js,
        db,
        commands,
    })
}

/// The read models as their writer (migrated to the latest schema) or as a reader.
pub async fn database(config: &Config, url: &str, writer: bool) -> anyhow::Result<PgPool> {
    if writer {
        schema::open(url, LIVE_SCHEMA, config.db_max_connections)
            .await
            .context("opening the read models")
    } else {
        schema::pool(url, LIVE_SCHEMA, config.db_max_connections)
            .await
            .context("connecting to the read models")
    }
}

/// Connects a role run on its own: NATS as itself, the database as writer (admin, projector)
/// or reader (everyone else).
pub async fn connect(config: &Config, role: Role) -> anyhow::Result<Platform> {
    let writer = matches!(role, Role::Admin | Role::Projector);
    let endpoints = Endpoints::from_config(config, !writer)?;
    let url = if writer {
        &endpoints.writer_url
    } else {
        &endpoints.reader_url
    };
    let db = database(config, url, writer).await?;
    connect_with(config, &endpoints, role, db).await
}

/// The edge's state (the application layer every channel calls) on `platform`. Secrets missing
/// from the config are generated once and kept in the data dir (only `warren dev` gets here
/// without them: `warren edge` and `warren worker telegram` require them).
pub async fn app_state(config: &Config, platform: &Platform) -> anyhow::Result<AppState> {
    let jwt_secret = match &config.jwt_secret {
        Some(secret) => secret.clone(),
        None => dev_secret(config, "jwt_secret")?,
    };
    let encryption_key = match &config.encryption_key {
        Some(key) => key.clone(),
        None => dev_secret(config, "encryption_key")?,
    };
    let settings = config.edge_settings(&jwt_secret, &encryption_key)?;
    AppState::build(
        platform.commands.clone(),
        platform.db.clone(),
        platform.nats.clone(),
        settings,
        mailer(config)?,
    )
    .await
    .context("setting up the application layer")
}

/// Serves the edge until shutdown.
pub async fn serve_edge(
    config: &Config,
    platform: &Platform,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let state = app_state(config, platform).await?;
    let listener =
        listen(config.http_addr).with_context(|| format!("binding {}", config.http_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "edge listening");
    warren_edge::serve(listener, state, shutdown)
        .await
        .context("serving http")
}

/// The Telegram bridge on `platform`, if `WARREN_TELEGRAM_TOKEN` is set.
pub async fn telegram(
    config: &Config,
    platform: &Platform,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<Bridge>> {
    let Some(token) = &config.telegram_token else {
        return Ok(None);
    };
    let state = app_state(config, platform).await?;
    let settings = BridgeSettings {
        token: token.expose().to_owned(),
        api_url: config.telegram_api_url.clone(),
        webhook_url: config.telegram_webhook_url.clone(),
        webhook_secret: config
            .telegram_webhook_secret
            .as_ref()
            .map(|secret| secret.expose().to_owned()),
        groups: config.telegram_groups,
    };
    Ok(Some(
        Bridge::build(state, settings, shutdown)
            .await
            .context("setting up the telegram bridge")?,
    ))
}

/// `warren worker telegram`.
pub async fn telegram_role(config: &Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.telegram_token.is_some(),
        "WARREN_TELEGRAM_TOKEN is not set"
    );
    anyhow::ensure!(config.jwt_secret.is_some(), "WARREN_JWT_SECRET is not set");
    anyhow::ensure!(
        config.encryption_key.is_some(),
        "WARREN_ENCRYPTION_KEY is not set"
    );
    let platform = connect(config, Role::Telegram).await?;
    let _ops = ops(config, &platform, None, shutdown.clone())?;
    if let Some(bridge) = telegram(config, &platform, shutdown).await? {
        bridge.run().await;
    }
    Ok(())
}

/// Serves the ops listener (`/metrics`, `/healthz`, `/readyz`) on `WARREN_METRICS_ADDR` until
/// shutdown, probing `platform`'s connections; nothing when the address is unset. `projector`
/// is set in the process that runs the projector: scrapes then report the projections' lag.
pub fn ops(
    config: &Config,
    platform: &Platform,
    projector: Option<&Platform>,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(addr) = config.metrics_addr else {
        return Ok(None);
    };
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|listener| {
            listener.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(listener)
        })
        .with_context(|| format!("binding WARREN_METRICS_ADDR {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "metrics and probes listening");
    let probes = warren_edge::ops::Probes {
        nats: platform.nats.clone(),
        db: platform.db.clone(),
        projections: projector.map(|p| (p.js.clone(), p.db.clone())),
    };
    Ok(Some(tokio::spawn(async move {
        if let Err(err) = warren_edge::ops::serve(listener, probes, shutdown).await {
            tracing::error!(error = %err, "the metrics listener failed");
        }
    })))
}

/// The edge's listening socket, with a deep accept queue: `TcpListener::bind` listens with 128,
/// and under a burst of connections a full queue drops SYNs, which the client retries only
/// after a second. The kernel caps the depth at `net.core.somaxconn`.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// The SMTP mailer, or the log when `WARREN_SMTP_URL` is unset.
pub fn mailer(config: &Config) -> anyhow::Result<Mailer> {
    match &config.smtp_url {
        // `log:` says it on purpose (a trial cluster): no warning that it is missing.
        Some(url) if url.expose() == "log:" => {
            tracing::info!(
                "WARREN_SMTP_URL=log: emails (sign-in links, codes) are written to this log"
            );
            Ok(Mailer::Log)
        }
        Some(url) => Mailer::smtp(url.expose(), &config.smtp_from).context("WARREN_SMTP_URL"),
        None => {
            tracing::warn!(
                "WARREN_SMTP_URL is not set: emails (sign-in links, codes) are written to this log"
            );
            Ok(Mailer::Log)
        }
    }
}

/// A development secret kept in `<data_dir>/<name>` (0600), generated on first use: 32 random
/// bytes as 64 hex digits, which suits both the JWT secret and the encryption key.
fn dev_secret(config: &Config, name: &str) -> anyhow::Result<Secret> {
    generated_secret(&config.data_dir.join(name))
}

/// The secret kept in `path` (0600), generated on first use as 64 hex digits; its directory is
/// created if missing.
pub fn generated_secret(path: &std::path::Path) -> anyhow::Result<Secret> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        return Ok(Secret::from(existing.trim().to_owned()));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let secret = hex::encode(rand::random::<[u8; 32]>());
    warren_deploy::nats_auth::write_private(path, secret.as_bytes())?;
    tracing::info!(path = %path.display(), "generated a development secret");
    Ok(Secret::from(secret))
}

/// `warren edge`.
pub async fn edge(config: &Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    anyhow::ensure!(config.jwt_secret.is_some(), "WARREN_JWT_SECRET is not set");
    anyhow::ensure!(
        config.encryption_key.is_some(),
        "WARREN_ENCRYPTION_KEY is not set"
    );
    anyhow::ensure!(config.smtp_url.is_some(), "WARREN_SMTP_URL is not set");
    // The edge's model proxy is what calls the platform's provider (ADR 23).
    config.warn_if_no_model_provider();
    let platform = connect(config, Role::Edge).await?;
    let _ops = ops(config, &platform, None, shutdown.clone())?;
    serve_edge(config, &platform, shutdown).await
}

/// The notifier, mailing through the configured SMTP server (or the log).
pub fn notifier(config: &Config, platform: &Platform) -> anyhow::Result<Notifier<MailOutbox>> {
    Ok(Notifier::build(
        platform.js.clone(),
        platform.db.clone(),
        MailOutbox(mailer(config)?),
        config.admin_email_list(),
        config.frontend_url(),
    ))
}

/// `warren worker notifier`.
pub async fn notifier_role(config: &Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    anyhow::ensure!(config.smtp_url.is_some(), "WARREN_SMTP_URL is not set");
    let platform = connect(config, Role::Notifier).await?;
    let _ops = ops(config, &platform, None, shutdown.clone())?;
    notifier(config, &platform)?.run(shutdown).await;
    Ok(())
}

/// The edge's mailer as the notifier's outbox.
pub struct MailOutbox(Mailer);

impl Outbox for MailOutbox {
    async fn send(
        &self,
        to: &str,
        subject: &str,
        body: &str,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.0.send(to, subject, body).await?)
    }
}

/// The 32-byte master key that seals agent tokens (generated in the data dir under
/// `warren dev`, required otherwise).
fn master_key(config: &Config, dev: bool) -> anyhow::Result<Vec<u8>> {
    let key = match &config.encryption_key {
        Some(key) => key.clone(),
        None if dev => dev_secret(config, "encryption_key")?,
        None => anyhow::bail!("WARREN_ENCRYPTION_KEY is not set"),
    };
    crate::config::decode_encryption_key(key.expose())
}

/// The chat worker, opening agent tokens under the master key.
pub async fn chat(config: &Config, platform: &Platform, dev: bool) -> anyhow::Result<ChatWorker> {
    let key = master_key(config, dev)?;
    ChatWorker::build(
        platform.nats.clone(),
        platform.commands.clone(),
        &key,
        config.chat_settings(),
        Capacity::new(config.max_sandboxes, platform.db.clone()),
    )
    .await
    .context("setting up the chat worker")
}

/// `warren worker chat`.
pub async fn chat_role(config: &Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.warn_if_no_model_provider();
    let platform = connect(config, Role::Chat).await?;
    let _ops = ops(config, &platform, None, shutdown.clone())?;
    chat(config, &platform, false).await?.run(shutdown).await;
    Ok(())
}

/// The deployer, sealing agent tokens under the master key, with the sandbox `WARREN_SANDBOX`
/// chooses.
pub async fn deployer(config: &Config, platform: &Platform, dev: bool) -> anyhow::Result<Deployer> {
    use std::sync::Arc;
    use warren_workers::deployer::docker::DockerProvisioner;
    use warren_workers::deployer::process::ProcessProvisioner;
    use warren_workers::deployer::provisioner::Provisioner;
    // `warren dev` gets here too: one warning for the deployer and its chat worker.
    config.warn_if_no_model_provider();
    let key = master_key(config, dev)?;
    let settings = warren_workers::deployer::DeployerSettings {
        // Nothing `warren dev` started outlives it; a deployer of its own leaves them running.
        stop_agents_on_shutdown: dev,
        ..config.deployer_settings()
    };
    let process: Arc<dyn Provisioner> = Arc::new(ProcessProvisioner::new(
        &settings.data_dir,
        settings.agent_bin.clone(),
    ));
    let docker = match config.sandbox {
        SandboxChoice::Process => None,
        SandboxChoice::Auto => match docker_ready(config).await {
            Ok(()) => Some(
                DockerProvisioner::start(config.docker_settings(), &settings.platform_url)
                    .await
                    .map_err(|err| anyhow::anyhow!("{err}"))
                    .context("setting up the docker sandboxes (WARREN_SANDBOX=process runs agents as processes instead)")?,
            ),
            Err(why) => {
                tracing::warn!(why, "WARREN_SANDBOX=auto: no docker sandboxes");
                None
            }
        },
        SandboxChoice::Docker => Some(
            DockerProvisioner::start(config.docker_settings(), &settings.platform_url)
                .await
                .map_err(|err| anyhow::anyhow!("{err}"))
                .context("WARREN_SANDBOX=docker: setting up the docker sandboxes")?,
        ),
    }
    .map(|docker| Arc::new(docker) as Arc<dyn Provisioner>);
    let (sandbox, others) = match docker {
        Some(docker) => {
            if let Err(err) = docker.install().await {
                tracing::warn!(error = %err, "agents cannot be deployed until the image is built");
            }
            (docker, vec![process])
        }
        None => {
            tracing::warn!(
                "SANDBOX: process. Agents run unconfined, as this user, with this host's files and network: \
                 an agent's shell can read the platform's data directory and reach its services. \
                 For development only; use WARREN_SANDBOX=docker for anyone else"
            );
            if settings.warm_pool > 0 {
                tracing::warn!(
                    "WARREN_WARM_POOL is for docker sandboxes and SSH hosts: processes keep no warm pool"
                );
            }
            // Say at start, not at the first deployment's third step, that no agent can be
            // deployed.
            if let Err(err) = process.install().await {
                tracing::warn!(error = %err, "agents cannot be deployed until the runtime is found");
            }
            (process, Vec::new())
        }
    };
    let ssh = if config.ssh {
        ssh_fleet(
            platform,
            &key,
            &settings,
            config.ssh_redeploy,
            config.docker_settings(),
            (config.image_cache_dir(), config.image_mirror.clone()),
        )
        .await
    } else {
        None
    };
    let mut deployer = Deployer::build(platform.commands.clone(), &key, settings, sandbox, others)
        .await
        .context("setting up the deployer")?
        // The owners' tiers, for their sandboxes' limits (docs/adr/0032).
        .with_read_models(platform.db.clone());
    if let Some(ssh) = ssh {
        deployer = deployer.with_ssh(ssh);
    }
    Ok(deployer)
}

/// The `ssh` provisioner (docs/adr/0039-ssh-hosts.md), or `None` with a warning when it cannot
/// work here (no runtime binary to upload).
async fn ssh_fleet(
    platform: &Platform,
    key: &[u8],
    settings: &warren_workers::deployer::DeployerSettings,
    redeploy_lost: bool,
    sandboxes: warren_workers::deployer::docker::DockerSettings,
    (image_cache, image_mirror): (std::path::PathBuf, String),
) -> Option<std::sync::Arc<dyn warren_workers::deployer::provisioner::Provisioner>> {
    use warren_workers::deployer::docker::image::ImageRecipe;
    use warren_workers::deployer::ssh::{SshFleet, engine::EngineSettings};
    let made = async {
        let binary =
            warren_workers::deployer::process::locate_binary(settings.agent_bin.as_deref())
                .map_err(|err| err.to_string())?;
        let keys = warren_commands::secrets::HostKeys::open(platform.commands.jetstream(), key)
            .await
            .map_err(|err| err.to_string())?;
        let leases = platform
            .commands
            .jetstream()
            .get_key_value(warren_commands::topology::KV_LEASES)
            .await
            .map_err(|err| err.to_string())?;
        let fleet = SshFleet::new(
            platform.commands.clone(),
            keys,
            &settings.data_dir.join("ssh"),
            &binary,
        )
        .map_err(|err| err.to_string())?;
        Ok::<_, String>(
            fleet
                .with_leases(
                    leases,
                    warren_commands::secrets::generate()[..16].to_owned(),
                )
                .redeploying_lost(redeploy_lost)
                .with_limits(sandboxes.limits.clone(), sandboxes.tier_limits.clone())
                // Hosts registered as Docker engines (docs/adr/0041-docker-hosts.md).
                .with_docker_hosts(EngineSettings {
                    recipe: Some(ImageRecipe {
                        tag: sandboxes.image.clone(),
                        agent_bin: binary,
                        cache_dir: image_cache,
                        mirror: image_mirror,
                    }),
                    sandboxes,
                    platform_url: settings.platform_url.clone(),
                }),
        )
    }
    .await;
    match made {
        Ok(fleet) => Some(std::sync::Arc::new(fleet)),
        Err(err) => {
            tracing::warn!(
                error = err,
                "no ssh provisioner: agents asking for ssh hosts fail to deploy"
            );
            None
        }
    }
}

/// Whether `WARREN_SANDBOX=auto` may use docker: the engine answers and the agent image is
/// there (`deploy/dev.sh` builds it); else why not.
async fn docker_ready(config: &Config) -> Result<(), String> {
    use warren_workers::deployer::docker;
    let settings = config.docker_settings();
    let engine = docker::connect(&settings.host)
        .await
        .map_err(|err| err.to_string())?;
    match engine.inspect_image(&settings.image).await {
        Ok(_) => Ok(()),
        Err(err) => Err(format!(
            "the Docker engine answers but the agent image {} is not there ({err}): build it with `warren image build`",
            settings.image
        )),
    }
}

/// `warren image build`.
pub async fn image_build(config: &Config) -> anyhow::Result<()> {
    use warren_workers::deployer::docker::{self, image};
    let agent_bin = warren_workers::deployer::process::locate_binary(config.agent_bin.as_deref())
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    let settings = config.docker_settings();
    let engine = docker::connect(&settings.host)
        .await
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    let recipe = image::ImageRecipe {
        tag: settings.image,
        agent_bin,
        cache_dir: config.image_cache_dir(),
        mirror: config.image_mirror.clone(),
    };
    let started = std::time::Instant::now();
    let built = image::build(&engine, &recipe)
        .await
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    if built.unchanged {
        println!("{} is up to date (content {})", built.tag, built.content);
    } else {
        println!(
            "built {} (content {}) in {:.1} s",
            built.tag,
            built.content,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// `warren worker deployer`.
pub async fn deployer_role(config: &Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let platform = connect(config, Role::Deployer).await?;
    let _ops = ops(config, &platform, None, shutdown.clone())?;
    deployer(config, &platform, false)
        .await?
        .run(shutdown)
        .await;
    Ok(())
}

/// `warren worker projector`.
pub async fn projector(config: &Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let platform = connect(config, Role::Projector).await?;
    let _ops = ops(config, &platform, Some(&platform), shutdown.clone())?;
    Projector::build(platform.js, platform.db)
        .run(shutdown)
        .await;
    Ok(())
}

/// `warren replay`.
pub async fn replay(config: &Config, scope: ReplayScope) -> anyhow::Result<()> {
    let database_url = config.require_database()?;
    let platform = connect(config, Role::Projector).await?;
    let progress = |p: &warren_projections::replay::Progress| {
        tracing::info!(
            projection = p.projection,
            applied = p.applied,
            pending = p.pending,
            "replaying"
        );
    };
    let report = match scope {
        ReplayScope::All => {
            warren_projections::replay::replay(&platform.js, database_url, &progress).await
        }
        ReplayScope::Usage { from } => {
            warren_projections::replay::replay_usage(&platform.js, database_url, from, &progress)
                .await
        }
    }
    .context("replay failed")?;
    for (projection, applied) in &report.applied {
        tracing::info!(projection, applied, "rebuilt");
    }
    tracing::info!(schema = report.built, "rebuilt read models swapped in");
    Ok(())
}

/// What `warren replay` rebuilds.
#[derive(Clone, Copy, Debug)]
pub enum ReplayScope {
    /// Every read model, from sequence 1.
    All,
    /// Only the usage read model, from `from` on (the facts before it kept) or from the start.
    Usage {
        /// Where the rebuild starts.
        from: Option<chrono::DateTime<chrono::Utc>>,
    },
}

impl ReplayScope {
    /// `--projection` and `--from-time` as given.
    pub fn parse(projection: &str, from_time: Option<&str>) -> anyhow::Result<Self> {
        let from = from_time
            .map(|text| {
                warren_domain::usage::parse_instant(text).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--from-time {text:?} is neither an RFC 3339 time nor a day (YYYY-MM-DD)"
                    )
                })
            })
            .transpose()?;
        match (projection, from) {
            ("usage", from) => Ok(ReplayScope::Usage { from }),
            (_, Some(_)) => anyhow::bail!("--from-time needs --projection usage"),
            _ => Ok(ReplayScope::All),
        }
    }
}

/// `warren migrate`: the log's streams and buckets (as the admin) and the read-model schema (as
/// its writer).
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    connect(config, Role::Admin).await?;
    tracing::info!("log topology and read-model schema are up to date");
    Ok(())
}

/// `warren db-roles`: the database of `writer_url` and its two login roles, made (or updated)
/// as the superuser of `superuser_url`.
pub async fn db_roles(
    superuser_url: &str,
    writer_url: &str,
    reader_url: &str,
) -> anyhow::Result<()> {
    let login = |url: &str, name: &str| -> anyhow::Result<(Login, String)> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|err| anyhow::anyhow!("{name} is not a URL: {err}"))?;
        let decode = |text: &str| -> anyhow::Result<String> {
            percent_decode(text).ok_or_else(|| anyhow::anyhow!("{name}: a malformed %-escape"))
        };
        let user = decode(parsed.username())?;
        let password = decode(parsed.password().unwrap_or_default())?;
        let database = parsed.path().trim_start_matches('/').to_owned();
        anyhow::ensure!(
            !user.is_empty() && !password.is_empty() && !database.is_empty(),
            "{name} must name a user, a password and a database"
        );
        Ok((Login { user, password }, database))
    };
    let (writer, database) = login(writer_url, "WARREN_DATABASE_URL")?;
    let (reader, reader_database) = login(reader_url, "WARREN_DATABASE_READER_URL")?;
    anyhow::ensure!(
        database == reader_database,
        "the writer's and the reader's URLs name different databases ({database}, {reader_database})"
    );
    anyhow::ensure!(
        writer.user != reader.user,
        "the writer and the reader must be different users"
    );
    pg::create_database(superuser_url, &database).await?;
    pg::provision_roles(superuser_url, &database, &writer, &reader).await?;
    tracing::info!(
        database,
        writer = writer.user,
        reader = reader.user,
        "database and login roles are set up"
    );
    Ok(())
}

/// `%XX` escapes decoded (URL user names and passwords), or `None` when one is malformed.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
