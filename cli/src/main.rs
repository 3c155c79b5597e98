//! The `warren` binary: every platform role as a subcommand, so each can run and scale alone.

mod config;
mod dev;
mod fds;
mod roles;

use clap::{Parser, Subcommand};
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
    Dev,
    /// The HTTP edge only.
    Edge,
    /// One worker role.
    Worker {
        #[command(subcommand)]
        role: WorkerRole,
    },
    /// Rebuild every read model from sequence 1 into a fresh schema, then swap it in.
    Replay,
    /// Create or update streams, buckets and the read-model schema, then exit.
    Migrate,
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
}

#[derive(Subcommand)]
enum WorkerRole {
    /// Keeps the Postgres read models up to date.
    Projector,
    /// Emails admins about new registrations.
    Notifier,
    /// Runs agents as the log asks (the `process` provisioner) and reconciles them.
    Deployer,
    /// Runs conversations' queued messages against their agents, streaming live deltas.
    Chat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WARREN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .init();
    let cli = Cli::parse();
    if let Command::NatsAuth { dir, routes } = &cli.command {
        let routes: Vec<&str> = routes.iter().map(String::as_str).collect();
        let keys = warren_deploy::nats_auth::write_server_files(dir, &routes)?;
        println!(
            "wrote {0}/auth.conf, {0}/cluster-auth.conf and the roles' keys in {1}",
            dir.display(),
            keys.dir().display()
        );
        return Ok(());
    }
    let fd_limit = fds::raise_limit();
    let config = Config::load()?;
    fds::warn_if_low(fd_limit, config.http_limits()?.max_connections);
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let outcome = match cli.command {
        Command::Dev => dev::run(config, shutdown).await,
        Command::Edge => roles::edge(&config, shutdown).await,
        Command::Worker {
            role: WorkerRole::Projector,
        } => roles::projector(&config, shutdown).await,
        Command::Worker {
            role: WorkerRole::Notifier,
        } => roles::notifier_role(&config, shutdown).await,
        Command::Worker {
            role: WorkerRole::Deployer,
        } => roles::deployer_role(&config, shutdown).await,
        Command::Worker {
            role: WorkerRole::Chat,
        } => roles::chat_role(&config, shutdown).await,
        Command::Replay => roles::replay(&config).await,
        Command::Migrate => roles::migrate(&config).await,
        Command::NatsAuth { .. } => Ok(()),
    };
    if let Err(err) = &outcome {
        tracing::error!(error = format!("{err:#}"), "warren stopped with an error");
    }
    outcome
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
