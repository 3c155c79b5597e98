//! The `warren-agent` binary: reads flags / `WARREN_AGENT_*`, binds, prints
//! `listening on <addr>` as the first stdout line (so a parent can read the port), serves until
//! SIGINT or SIGTERM. With `WARREN_AGENT_ASSIGNMENT_FILE` (a warm pool's runtime) it first
//! waits, bound to nothing, until it is assigned to an agent.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use warren_agent::config::{Args, Assignment};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WARREN_AGENT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let mut args = Args::parse();
    if let (Some(file), Some(token_file)) = (args.assignment_file.clone(), args.token_file.clone())
    {
        tracing::info!(file = %file.display(), "waiting for an assignment");
        let Some(assignment) = wait_for_assignment(&file, &token_file, &shutdown).await else {
            return Ok(());
        };
        tracing::info!(agent_id = assignment.agent_id, "assigned");
        args = args.assigned(assignment);
    }
    let (addr, config) = args.into_config()?;
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

/// Polls for a complete assignment until `shutdown`. A stat every 20 ms is the whole cost of a
/// waiting runtime, and bounds what waiting adds to an agent's start.
async fn wait_for_assignment(
    file: &Path,
    token_file: &Path,
    shutdown: &CancellationToken,
) -> Option<Assignment> {
    loop {
        if let Some(assignment) = Assignment::ready(file, token_file) {
            return Some(assignment);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
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
