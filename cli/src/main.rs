//! The `warren` binary: every platform role as a subcommand, so each can run and scale alone,
//! and the client (`login`, `agents`, `chat`) beside them. Each role's `--help` lists the
//! options and `WARREN_*` variables it reads, with defaults.

mod client;
mod config;
mod dev;
mod embedded;
mod export;
mod fds;
mod roles;

use clap::{FromArgMatches, Parser, Subcommand};
use config::Config;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "warren",
    version,
    about = "Warren: deploy your own AI agent, talk to it from anywhere"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole platform in one process, with a local nats-server and PostgreSQL under ./.warren/.
    Dev(Config),
    /// The HTTP edge only.
    Edge(Config),
    /// One worker role.
    Worker {
        #[command(subcommand)]
        role: WorkerRole,
    },
    /// Rebuild every read model from sequence 1 into a fresh schema, then swap it in (or only
    /// the usage read model: --projection usage, optionally --from-time).
    Replay(ReplayArgs),
    /// Create or update streams, buckets and the read-model schema, then exit.
    Migrate(Config),
    /// The agent sandbox image.
    Image {
        #[command(subcommand)]
        action: ImageAction,
    },
    /// Client: sign in to a platform (email, then the emailed code).
    Login(client::login::LoginArgs),
    /// Client: list, create, delete your agents, or show an agent's deployment log.
    Agents(client::agents::AgentsArgs),
    /// Client: talk to an agent, streaming its answer (Ctrl-C cancels the run).
    Chat(client::chat::ChatArgs),
    /// Client: link another sign-in method, e.g. `warren connect telegram` (a code for the bot).
    Connect(client::connect::ConnectArgs),
    /// Write the roles' NATS keys (DIR/credentials/<role>.nk, generated once) and the
    /// authorization files a nats-server of deploy/nats/ includes (DIR/auth.conf,
    /// DIR/cluster-auth.conf), then exit.
    NatsAuth {
        /// Where to write them, e.g. deploy/nats or deploy/nats/cluster.
        dir: std::path::PathBuf,
        /// The cluster's node hostnames, for the routes (port 6222).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "warren-nats-1,warren-nats-2,warren-nats-3"
        )]
        routes: Vec<String>,
    },
    /// Create the database of WARREN_DATABASE_URL unless it exists, and create (or update) its
    /// writer and reader login roles with the passwords in WARREN_DATABASE_URL and
    /// WARREN_DATABASE_READER_URL (ADR 13), as WARREN_DATABASE_SUPERUSER_URL; then exit.
    DbRoles(DbRolesArgs),
    /// Write the log's usage facts (csv, jsonl, parquet) or a stream's raw events (jsonl) to a
    /// file, read from the log itself: `warren export usage --help`.
    Export(export::ExportArgs),
}

/// Where `warren db-roles` sets up the database and its two login roles.
#[derive(clap::Args)]
struct DbRolesArgs {
    /// A superuser's (or a `CREATEROLE` role's) URL of the server, e.g.
    /// postgres://postgres@db/postgres.
    #[arg(long, env = "WARREN_DATABASE_SUPERUSER_URL")]
    superuser_url: String,
    /// The writer's URL (user, password and database are taken from it).
    #[arg(long, env = "WARREN_DATABASE_URL")]
    writer_url: String,
    /// The reader's URL (same server and database, another user).
    #[arg(long, env = "WARREN_DATABASE_READER_URL")]
    reader_url: String,
}

/// What `warren replay` rebuilds.
#[derive(clap::Args)]
struct ReplayArgs {
    /// `all` (every read model, from sequence 1) or `usage` (only the usage read model; the
    /// others are left as they are).
    #[arg(long, default_value = "all", value_parser = ["all", "usage"])]
    projection: String,
    /// With `--projection usage`: keep the usage facts before this time (RFC 3339, or a UTC day
    /// `YYYY-MM-DD`) and rebuild from it on.
    #[arg(long)]
    from_time: Option<String>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum ImageAction {
    /// Build `warren-agent:<version>` (or WARREN_AGENT_IMAGE) locally from a Debian root
    /// filesystem (debootstrap, as root) and the `warren-agent` binary; nothing happens when
    /// the image already has this content.
    Build(Config),
}

#[derive(Subcommand)]
enum WorkerRole {
    /// Keeps the Postgres read models up to date.
    Projector(Config),
    /// Emails admins about new registrations.
    Notifier(Config),
    /// Runs agents as the log asks (the `process` provisioner) and reconciles them.
    Deployer(Config),
    /// Runs conversations' queued messages against their agents, streaming live deltas.
    Chat(Config),
    /// The Telegram bot (WARREN_TELEGRAM_TOKEN): chat, commands and files from Telegram.
    Telegram(Config),
}

/// What to run, with its configuration.
#[derive(Clone, Copy)]
enum Role {
    Dev,
    Edge,
    Projector,
    Notifier,
    Deployer,
    Chat,
    Telegram,
    Replay(roles::ReplayScope),
    Migrate,
    ImageBuild,
}

impl Role {
    /// The `service.name` of this process's exported spans (unless `OTEL_SERVICE_NAME` says).
    fn service_name(self) -> &'static str {
        match self {
            Role::Dev => "warren-dev",
            Role::Edge => "warren-edge",
            Role::Projector => "warren-projector",
            Role::Notifier => "warren-notifier",
            Role::Deployer => "warren-deployer",
            Role::Chat => "warren-chat",
            Role::Telegram => "warren-telegram",
            Role::Replay(_) => "warren-replay",
            Role::Migrate => "warren-migrate",
            Role::ImageBuild => "warren-image",
        }
    }
}

fn init_logging(filter: &str, format: config::LogFormat) {
    let builder = tracing_subscriber::fmt().with_env_filter(
        tracing_subscriber::EnvFilter::try_new(filter)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
    );
    match format {
        config::LogFormat::Text => builder.init(),
        config::LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let (command, unknown) = config::with_file::<Cli>()?;
    let cli = Cli::from_arg_matches(&command.get_matches())?;
    let (role, config) = match cli.command {
        Command::NatsAuth { dir, routes } => {
            init_logging("info", config::LogFormat::Text);
            let routes: Vec<&str> = routes.iter().map(String::as_str).collect();
            let keys = warren_deploy::nats_auth::write_server_files(&dir, &routes)?;
            println!(
                "wrote {0}/auth.conf, {0}/cluster-auth.conf and the roles' keys in {1}",
                dir.display(),
                keys.dir().display()
            );
            return Ok(std::process::ExitCode::SUCCESS);
        }
        Command::DbRoles(args) => {
            init_logging("info", config::LogFormat::Text);
            roles::db_roles(&args.superuser_url, &args.writer_url, &args.reader_url).await?;
            return Ok(std::process::ExitCode::SUCCESS);
        }
        Command::Export(args) => return Ok(client_exit(export::run(args).await)),
        Command::Dev(config) => (Role::Dev, config),
        Command::Edge(config) => (Role::Edge, config),
        Command::Worker { role } => match role {
            WorkerRole::Projector(config) => (Role::Projector, config),
            WorkerRole::Notifier(config) => (Role::Notifier, config),
            WorkerRole::Deployer(config) => (Role::Deployer, config),
            WorkerRole::Chat(config) => (Role::Chat, config),
            WorkerRole::Telegram(config) => (Role::Telegram, config),
        },
        Command::Replay(args) => (
            Role::Replay(roles::ReplayScope::parse(
                &args.projection,
                args.from_time.as_deref(),
            )?),
            args.config,
        ),
        Command::Migrate(config) => (Role::Migrate, config),
        Command::Image {
            action: ImageAction::Build(config),
        } => (Role::ImageBuild, config),
        Command::Login(args) => return Ok(client_exit(client::login::run(args).await)),
        Command::Agents(args) => return Ok(client_exit(client::agents::run(args).await)),
        Command::Chat(args) => return Ok(client_exit(client::chat::run(args).await)),
        Command::Connect(args) => return Ok(client_exit(client::connect::run(args).await)),
    };
    init_logging(&config.log, config.log_format);
    // Spans go out by OTLP when the standard OTEL_* variables ask for it; the last ones are
    // sent when this guard drops, as warren stops.
    let _spans = warren_commands::trace::export::from_env(role.service_name())?;
    for key in unknown {
        tracing::warn!(key, "the config file sets an option that does not exist");
    }
    let fd_limit = fds::raise_limit();
    let config = config.validated()?;
    fds::warn_if_low(fd_limit, config.http_limits()?.max_connections);
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let outcome = match role {
        Role::Dev => dev::run(config, shutdown).await,
        Role::Edge => roles::edge(&config, shutdown).await,
        Role::Projector => roles::projector(&config, shutdown).await,
        Role::Notifier => roles::notifier_role(&config, shutdown).await,
        Role::Deployer => roles::deployer_role(&config, shutdown).await,
        Role::Chat => roles::chat_role(&config, shutdown).await,
        Role::Telegram => roles::telegram_role(&config, shutdown).await,
        Role::Replay(scope) => roles::replay(&config, scope).await,
        Role::Migrate => roles::migrate(&config).await,
        Role::ImageBuild => roles::image_build(&config).await,
    };
    if let Err(err) = &outcome {
        tracing::error!(error = format!("{err:#}"), "warren stopped with an error");
    }
    outcome.map(|()| std::process::ExitCode::SUCCESS)
}

/// A client command's outcome as the exit code; its error is for the person at the terminal:
/// one line on stderr, no log record.
fn client_exit(outcome: anyhow::Result<std::process::ExitCode>) -> std::process::ExitCode {
    outcome.unwrap_or_else(|err| {
        eprintln!("error: {err:#}");
        std::process::ExitCode::FAILURE
    })
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
    shutdown.cancel();
}
