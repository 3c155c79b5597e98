//! The `warren-agent` binary: reads flags / `WARREN_AGENT_*`, binds, prints
//! `listening on <addr>` as the first stdout line (so a parent can read the port), serves until
//! SIGINT or SIGTERM.

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use warren_agent::config::Args;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WARREN_AGENT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let (addr, config) = Args::parse().into_config()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr()?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {bound}")?;
        stdout.flush()?;
    }
    tracing::info!(%bound, workspace = %config.workspace.display(), "warren-agent started");
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let outcome = warren_agent::serve(config, listener, shutdown)
        .await
        .map_err(anyhow::Error::from);
    if let Err(err) = &outcome {
        tracing::error!(
            error = format!("{err:#}"),
            "warren-agent stopped with an error"
        );
    }
    outcome
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
