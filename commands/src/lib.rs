//! Warren's write side: commands become events appended to JetStream.
//!
//! Layout:
//! - [`topology`] — streams, subjects and KV buckets, created or updated idempotently at start.
//! - [`codec`] — the stored form of a commit (a JSON array of envelopes) and the upcaster hook.
//! - [`store`] — [`Store`]: the `cqrs_es::EventStore` on JetStream, its aggregate cache, and the
//!   bounded-retry command loop.
//! - [`bounded`] — reading what an agent runtime sends within bounds (bodies, SSE events).
//! - [`aggregates`] — which stream and subject each domain aggregate lives on.
//! - [`error`] — [`StoreError`] (one conflict variant, mapped in one place) and [`CommandError`].
//! - [`service`] — [`CommandService`]: one store per aggregate type, the handle adapters call.
//! - [`history`] — a conversation's history read from the log, forks followed back to their
//!   origins (what a fork inherits and a runtime is handed).
//! - [`hosts`] — the registered SSH hosts, read from the log.
//! - [`proactive`] — an agent runtime's proactive messages (`/pending`), delivered into that
//!   agent's conversations only.
//! - [`secrets`] — the AES-256-GCM box of secrets kept outside the log: agents' tokens, users'
//!   provider keys, SSH hosts' private keys.
//! - [`metrics`] — the process's Prometheus series (every role records here; the ops listener
//!   serves them on `/metrics`).
//! - [`trace`] — the W3C trace context a request hands to its commits and they to the work
//!   they cause.
//! - [`sandboxes`] — what is known of agents' sandboxes outside the log: when each agent was
//!   last used (the idle pause's clock) and what each sandbox uses.

pub mod aggregates;
pub mod bounded;
pub mod codec;
pub mod error;
pub mod history;
pub mod hosts;
pub mod metrics;
pub mod proactive;
pub mod sandboxes;
pub mod secrets;
pub mod service;
pub mod store;
pub mod topology;
pub mod trace;

pub use error::{CommandError, StoreError};
pub use service::CommandService;
pub use store::{CommandMeta, Committed, Store, Stored};
