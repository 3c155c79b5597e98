//! The one error type of the launcher.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Why starting, probing or stopping a local server failed.
///
/// Variants carry the program, path or address involved so that a failing test says *which*
/// server did not come up and where its log is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A server binary could not be located.
    #[error("cannot find `{program}`: {hint}")]
    BinaryNotFound {
        /// The program looked for (`nats-server`, `initdb`, `postgres`).
        program: &'static str,
        /// Where it was looked for and how to point at it.
        hint: String,
    },

    /// A program could not be started at all.
    #[error("failed to spawn `{program}`")]
    SpawnFailed {
        /// The program's path.
        program: PathBuf,
        /// The error from `exec`.
        #[source]
        source: std::io::Error,
    },

    /// A short-lived helper program (`initdb`, `id`) ran but failed.
    #[error("`{program}` failed ({status}):\n{output}")]
    CommandFailed {
        /// The program's path.
        program: PathBuf,
        /// How it exited.
        status: ExitStatus,
        /// Its combined stdout and stderr, trimmed.
        output: String,
    },

    /// A server process exited while we waited for it to become ready.
    #[error("{what} exited during startup ({status}); last lines of {log}:\n{log_tail}")]
    Exited {
        /// Which server (`nats-server on 127.0.0.1:4222`).
        what: String,
        /// How it exited.
        status: ExitStatus,
        /// Its log file.
        log: PathBuf,
        /// The end of its log file.
        log_tail: String,
    },

    /// A server did not become ready in time.
    #[error("{what} not ready after {waited:?}; last lines of {log}:\n{log_tail}")]
    NotReady {
        /// Which server and which check (`nats-server on 127.0.0.1:4222 (healthz)`).
        what: String,
        /// How long we waited.
        waited: Duration,
        /// Its log file.
        log: PathBuf,
        /// The end of its log file.
        log_tail: String,
    },

    /// A file or directory operation failed.
    #[error("{action} {path}")]
    Io {
        /// What we tried (`create directory`, `write config`, `chown`).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// No free TCP port could be reserved on 127.0.0.1.
    #[error("cannot reserve a free port on 127.0.0.1")]
    NoFreePort(#[source] std::io::Error),

    /// Sending a signal to a server process failed.
    #[error("cannot signal {what} (pid {pid})")]
    Signal {
        /// Which server.
        what: String,
        /// Its process id.
        pid: u32,
        /// The error from `kill(2)`.
        #[source]
        source: std::io::Error,
    },

    /// The system has no `postgres` user to run PostgreSQL as (PostgreSQL refuses to run as root).
    #[error("running as root but there is no `postgres` user to run PostgreSQL as")]
    NoPostgresUser,

    /// A database name that we refuse to put into `CREATE DATABASE`.
    #[error("invalid database name {0:?}: use ASCII letters, digits and `_`, at most 63 bytes")]
    InvalidDatabaseName(String),

    /// A NATS client could not connect.
    #[error("connecting to NATS at {url} as {role}")]
    NatsConnect {
        /// The server.
        url: String,
        /// The role connecting.
        role: &'static str,
        /// Cause.
        #[source]
        source: async_nats::ConnectError,
    },

    /// A SQL statement against a local server failed.
    #[error("{action} on {url}")]
    Sql {
        /// What we tried (`create database warren`).
        action: String,
        /// The server (without password).
        url: String,
        /// The error from sqlx.
        #[source]
        source: sqlx::Error,
    },
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// The launcher's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
