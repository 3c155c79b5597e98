//! Warren's long-running workers. Each is `build(config) → run(shutdown)`, reads a durable JetStream
//! consumer, acks only after its side effect commits, and can run as its own process.
//!
//! Layout:
//! - [`supervise`] — restart a worker loop with backoff until shutdown; a failure is logged with
//!   its whole cause chain, never a panic.
//! - [`consume`] — the durable-consumer loop the log-driven workers share (handle, then ack).
//! - [`projector`] — hosts the read-model projections.
//! - [`deployer`] — runs agents in their sandboxes (the `process` and `docker` provisioners) as
//!   the log asks, reconciles, pauses idle agents and measures what each sandbox uses.
//! - [`notifier`] — emails admins about new registrations.
//! - [`chat`] — runs conversations' queued runs against agent runtimes, publishing live deltas;
//!   wakes a paused agent before its run.

pub mod chat;
pub mod consume;
pub mod deployer;
pub mod notifier;
pub mod projector;
pub mod supervise;

/// The HTTP client for talking to agent runtimes. A runtime is hostile (ADR 25): its redirects
/// are never followed, so it cannot point a worker at an internal address.
pub fn runtime_http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        // Fails only when the TLS backend cannot initialise, where `Client::new` panics too.
        .expect("the HTTP client's TLS backend initialises")
}
