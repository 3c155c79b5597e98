//! Restarting worker loops with capped exponential backoff.

use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Runs `make()` until it returns `Ok` or `shutdown` fires; on error, logs the cause chain and
/// restarts after a backoff (100 ms doubling to 10 s).
pub async fn supervise<F, Fut, E>(name: &'static str, shutdown: CancellationToken, mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = make() => outcome,
        };
        match outcome {
            Ok(()) => return,
            Err(err) => {
                let chain = cause_chain(&err);
                tracing::error!(worker = name, error = %chain, ?backoff, "worker failed, restarting");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// `err: cause: cause…`, for the log (never for a client: causes may name internal addresses).
pub fn cause_chain(err: &dyn std::error::Error) -> String {
    let mut chain = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}
