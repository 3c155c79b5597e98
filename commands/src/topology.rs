//! The log's layout: streams per aggregate type, their subjects, and the KV buckets kept beside
//! them. [`ensure`] creates or updates all of it idempotently at start, so every role can call it.

use async_nats::jetstream::{self, kv, stream};
use std::time::Duration;

/// Stream holding `user.<id>` commits.
pub const USERS: &str = "USERS";
/// Stream holding `agent.<id>` commits.
pub const AGENTS: &str = "AGENTS";
/// Stream holding `host.<name>` commits: the machines the `ssh` provisioner places agents on.
pub const HOSTS: &str = "HOSTS";
/// Stream holding `conv.<id>.ev` commits and `conv.<id>.live` deltas, so one conversation reads as
/// one ordered sequence with one cursor.
pub const CONVERSATIONS: &str = "CONVERSATIONS";

/// Stream of Telegram updates waiting to be handled (`telegram.updates`): the poller or the
/// webhook appends each update once (its id is the message id, so a repeat within the dedupe
/// window is dropped) and the telegram workers share them as a work queue.
pub const TELEGRAM: &str = "TELEGRAM";
/// The subject of Telegram updates.
pub const TELEGRAM_UPDATES: &str = "telegram.updates";

/// KV bucket for encrypted secrets (provider keys, agent tokens); deleting a key destroys it.
pub const KV_SECRETS: &str = "secrets";
/// KV bucket for auth tokens (magic links, refresh token families).
pub const KV_AUTH: &str = "auth_tokens";
/// KV bucket for worker leases (who runs what).
pub const KV_LEASES: &str = "leases";
/// KV bucket for request rate-limit windows, shared by every edge process; keys expire after
/// the longest window (an hour).
pub const KV_RATE_LIMITS: &str = "rate_limits";
/// KV bucket for idempotency keys: the first answer to a write, replayed to its retries; kept
/// for a day.
pub const KV_IDEMPOTENCY: &str = "idempotency";
/// KV bucket of when each agent was last used: the chat worker stamps it, the deployer's idle
/// pause reads it (docs/adr/0024-idle-pause-and-capacity.md).
pub const KV_ACTIVITY: &str = "agent_activity";
/// KV bucket of what each sandbox uses (uptime, CPU, memory, disk), written by the deployer at
/// each reconciliation and read by the edge; a sample not rewritten for a day expires.
pub const KV_SANDBOX_STATS: &str = "sandbox_stats";

/// KV bucket of the Telegram bridge: each user's current agent and conversation there, the runs
/// it streams, which replica polls Telegram, and update ids already handled.
pub const KV_TELEGRAM: &str = "telegram";

/// The subject of a user's commits.
pub fn user_subject(id: &str) -> String {
    format!("user.{id}")
}
/// The subject of an agent's commits.
pub fn agent_subject(id: &str) -> String {
    format!("agent.{id}")
}
/// The subject of a host's commits.
pub fn host_subject(name: &str) -> String {
    format!("host.{name}")
}
/// The subject of a conversation's durable facts.
pub fn conversation_subject(id: &str) -> String {
    format!("conv.{id}.ev")
}
/// The subject of a conversation's live deltas (tokens, tool progress).
pub fn conversation_live_subject(id: &str) -> String {
    format!("conv.{id}.live")
}

/// How the streams are configured; loaded from the platform config.
#[derive(Clone, Debug)]
pub struct LogSettings {
    /// Replicas per stream and bucket: 1 for a single server, 3 in a cluster.
    pub replicas: usize,
    /// Dedupe window; must be at least the longest client retry of a command.
    pub duplicate_window: Duration,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

/// Why the topology could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// A stream could not be created or updated.
    #[error("setting up stream {name} failed")]
    Stream {
        /// Stream name.
        name: &'static str,
        /// Cause.
        #[source]
        source: jetstream::context::CreateStreamError,
    },
    /// A KV bucket could not be created or updated.
    #[error("setting up bucket {name} failed")]
    Bucket {
        /// Bucket name.
        name: &'static str,
        /// Cause.
        #[source]
        source: jetstream::context::CreateKeyValueError,
    },
}

/// The configuration of each stream.
pub fn stream_configs(settings: &LogSettings) -> Vec<stream::Config> {
    let base = |name: &str, subjects: Vec<String>| stream::Config {
        name: name.to_owned(),
        subjects,
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        duplicate_window: settings.duplicate_window,
        // Direct gets let the store catch an aggregate up from any replica without a consumer.
        allow_direct: true,
        // Durable facts live forever: no limits, no discard.
        ..Default::default()
    };
    vec![
        base(USERS, vec!["user.*".into()]),
        base(AGENTS, vec!["agent.*".into()]),
        base(HOSTS, vec!["host.*".into()]),
        stream::Config {
            // Token deltas carry a per-message TTL; the final text lives in a durable event.
            allow_message_ttl: true,
            ..base(
                CONVERSATIONS,
                vec!["conv.*.ev".into(), "conv.*.live".into()],
            )
        },
        stream::Config {
            name: TELEGRAM.to_owned(),
            subjects: vec![TELEGRAM_UPDATES.into()],
            storage: stream::StorageType::File,
            num_replicas: settings.replicas,
            // An update polled twice (two replicas, a retried webhook) is stored once.
            duplicate_window: settings.duplicate_window.max(Duration::from_secs(600)),
            retention: stream::RetentionPolicy::WorkQueue,
            // Telegram itself keeps an update for a day; so does the queue.
            max_age: Duration::from_secs(24 * 3600),
            ..Default::default()
        },
    ]
}

/// Creates or updates every stream and bucket. Safe to call from every process at every start.
pub async fn ensure(js: &jetstream::Context, settings: &LogSettings) -> Result<(), TopologyError> {
    for config in stream_configs(settings) {
        let name = match config.name.as_str() {
            USERS => USERS,
            AGENTS => AGENTS,
            HOSTS => HOSTS,
            TELEGRAM => TELEGRAM,
            _ => CONVERSATIONS,
        };
        js.create_or_update_stream(config)
            .await
            .map_err(|source| TopologyError::Stream { name, source })?;
    }
    let hour = Duration::from_secs(3600);
    for (name, max_age) in [
        (KV_SECRETS, Duration::ZERO),
        (KV_AUTH, Duration::ZERO),
        (KV_LEASES, Duration::ZERO),
        (KV_RATE_LIMITS, hour),
        (KV_IDEMPOTENCY, 24 * hour),
        (KV_ACTIVITY, Duration::ZERO),
        (KV_SANDBOX_STATS, 24 * hour),
        (KV_TELEGRAM, Duration::ZERO),
    ] {
        js.create_or_update_key_value(kv::Config {
            bucket: name.to_owned(),
            history: 1,
            max_age,
            storage: stream::StorageType::File,
            num_replicas: settings.replicas,
            ..Default::default()
        })
        .await
        .map_err(|source| TopologyError::Bucket { name, source })?;
    }
    Ok(())
}
