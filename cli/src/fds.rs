//! The process's file-descriptor limit: raised to the hard limit at start, since every client
//! connection, NATS and PostgreSQL connection and agent process holds descriptors, and the soft
//! limit distributions ship (often 1,024) is far below what the edge serves.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept for everything but client connections (NATS, PostgreSQL, files, agents).
pub const RESERVED: usize = 1024;

/// Raises the soft limit to the hard one; returns the soft limit now in force.
pub fn raise_limit() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    if limit.current != limit.maximum
        && let Err(err) = setrlimit(Resource::Nofile, raised)
    {
        tracing::warn!(%err, "could not raise the file-descriptor limit");
    }
    getrlimit(Resource::Nofile).current
}

/// How many client connections the descriptors left after [`RESERVED`] allow (unlimited: a
/// large number).
pub fn connection_budget() -> usize {
    match getrlimit(Resource::Nofile).current {
        Some(limit) => (limit as usize).saturating_sub(RESERVED).max(64),
        None => 1_000_000,
    }
}

/// Warns when the limit leaves fewer descriptors than `max_connections` needs.
pub fn warn_if_low(limit: Option<u64>, max_connections: usize) {
    if let Some(limit) = limit
        && (limit as usize) < max_connections + RESERVED
    {
        tracing::warn!(
            limit,
            max_connections,
            "the file-descriptor limit is low for WARREN_HTTP_MAX_CONNECTIONS: raise `ulimit -n` \
             (hard limit) or lower the cap; past the limit, new connections fail"
        );
    }
}
