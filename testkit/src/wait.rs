//! Waiting on conditions: tests poll for the state they expect, with a deadline, instead of
//! sleeping for a guessed time.

use std::future::Future;
use std::panic::Location;
use std::time::{Duration, Instant};

/// The first pause between checks; it doubles up to [`MAX_INTERVAL`].
const FIRST_INTERVAL: Duration = Duration::from_millis(5);
/// The longest pause between checks.
const MAX_INTERVAL: Duration = Duration::from_millis(100);

/// Polls `condition` until it returns `true`; panics, naming the caller's file and line, if it
/// has not within `timeout` (a check that itself hangs counts against the timeout).
///
/// ```no_run
/// # async fn example(client: async_nats::Client) {
/// use std::time::Duration;
/// warren_testkit::wait_until(Duration::from_secs(5), || async {
///     client.connection_state() == async_nats::connection::State::Connected
/// })
/// .await;
/// # }
/// ```
#[track_caller]
pub fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> impl Future<Output = ()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let caller = Location::caller();
    async move {
        poll(timeout, caller, "condition still false", move || {
            let check = condition();
            async move { check.await.then_some(()) }
        })
        .await
    }
}

/// Polls `probe` until it returns `Some(value)` and returns the value; panics, naming the
/// caller's file and line, if it has not within `timeout`.
#[track_caller]
pub fn wait_for<T, F, Fut>(timeout: Duration, probe: F) -> impl Future<Output = T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let caller = Location::caller();
    poll(timeout, caller, "still nothing", probe)
}

async fn poll<T, F, Fut>(timeout: Duration, caller: &Location<'_>, failure: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    let mut interval = FIRST_INTERVAL;
    let mut checks = 0u32;
    loop {
        checks += 1;
        let remaining = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(remaining, probe()).await {
            Ok(Some(value)) => return value,
            Ok(None) if !remaining.is_zero() => {}
            _ => panic!(
                "wait at {caller}: {failure} after {:?} ({checks} checks, timeout {timeout:?})",
                started.elapsed()
            ),
        }
        tokio::time::sleep(interval.min(timeout.saturating_sub(started.elapsed()))).await;
        interval = (interval * 2).min(MAX_INTERVAL);
    }
}
