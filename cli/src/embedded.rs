//! Keeps `warren dev`'s embedded nats-server and PostgreSQL running: a server that dies (a crash,
//! an out-of-memory kill, an operator's `kill`) is started again on the same store and port, and
//! the roles, which reconnect by themselves, carry on. When `warren dev` ends, each server is
//! stopped gracefully.

use std::future::Future;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use warren_deploy::{LocalNats, LocalPostgres};

/// A server `warren dev` started and keeps.
pub trait Embedded: Send + 'static {
    /// What it is, for the log.
    const NAME: &'static str;
    /// Resolves when its process exits.
    fn exited(&mut self) -> impl Future<Output = Option<ExitStatus>> + Send;
    /// Starts it again on the same store and port.
    fn restart(&mut self) -> impl Future<Output = warren_deploy::Result<()>> + Send;
    /// Stops it gracefully.
    fn stop(&mut self) -> impl Future<Output = warren_deploy::Result<()>> + Send;
}

impl Embedded for LocalNats {
    const NAME: &'static str = "nats-server";
    fn exited(&mut self) -> impl Future<Output = Option<ExitStatus>> + Send {
        LocalNats::exited(self)
    }
    fn restart(&mut self) -> impl Future<Output = warren_deploy::Result<()>> + Send {
        LocalNats::restart(self)
    }
    fn stop(&mut self) -> impl Future<Output = warren_deploy::Result<()>> + Send {
        LocalNats::stop(self)
    }
}

impl Embedded for LocalPostgres {
    const NAME: &'static str = "PostgreSQL";
    fn exited(&mut self) -> impl Future<Output = Option<ExitStatus>> + Send {
        LocalPostgres::exited(self)
    }
    fn restart(&mut self) -> impl Future<Output = warren_deploy::Result<()>> + Send {
        LocalPostgres::restart(self)
    }
    fn stop(&mut self) -> impl Future<Output = warren_deploy::Result<()>> + Send {
        LocalPostgres::stop(self)
    }
}

/// The longest wait between two attempts to start a dead server again.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Keeps `server` running until `stop`, then stops it; the task ends once it is stopped.
pub fn keep<S: Embedded>(mut server: S, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let died = tokio::select! {
                _ = stop.cancelled() => None,
                status = server.exited() => Some(status),
            };
            let Some(status) = died else { break };
            tracing::error!(
                server = S::NAME,
                ?status,
                "the embedded server exited; starting it again"
            );
            let mut backoff = Duration::from_millis(200);
            loop {
                let restarted = tokio::select! {
                    _ = stop.cancelled() => None,
                    restarted = server.restart() => Some(restarted),
                };
                match restarted {
                    None => break,
                    Some(Ok(())) => {
                        tracing::warn!(server = S::NAME, "the embedded server is running again");
                        break;
                    }
                    Some(Err(err)) => {
                        tracing::error!(server = S::NAME, error = %err, ?backoff, "starting the embedded server again failed");
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
        if let Err(err) = server.stop().await {
            tracing::warn!(server = S::NAME, error = %err, "stopping the embedded server failed");
        }
    })
}
