//! Warren's local launcher: the `nats-server` and PostgreSQL that `warren dev` and the tests run
//! as child processes of their own, on loopback ports, with their files in a directory the
//! caller chooses.
//!
//! Both launchers wait on real readiness conditions (a TCP accept plus a JetStream answer to the
//! admin role; a real PostgreSQL login) with a timeout, never on a fixed sleep, and report failures with the
//! tail of the server's log.
//!
//! # Layout
//!
//! - [`nats`] — [`LocalNats`]: config file, start, kill (crash), restart on the same store and
//!   port; [`find_running`] to reuse a server that already listens.
//! - [`nats_auth`] — the platform roles' NATS keys and permissions (least privilege per role),
//!   the server's `authorization` block, connecting as a role.
//! - [`postgres`] — [`LocalPostgres`]: `initdb` on first use (as the `postgres` user when run as
//!   root), start, fast shutdown on drop; database create/drop helpers for any server.
//! - `process` — what both share: [`free_port`], binary lookup, signals, logs, polling.
//! - [`error`] — [`Error`], the one error type.
//!
//! The NATS configs for real deployments (single node and a three-node R3 cluster) live beside
//! this crate in `deploy/nats/`; the whole test suite runs with `deploy/test.sh`.

pub mod error;
pub mod nats;
pub mod nats_auth;
pub mod postgres;
mod process;

pub use error::{Error, Result};
pub use nats::{LocalNats, NatsOptions, find_running};
pub use nats_auth::{NatsKeys, Role};
pub use postgres::{LocalPostgres, PostgresOptions};
pub use process::free_port;
