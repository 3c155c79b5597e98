//! [`CommandService`]: the one handle every adapter (edge, workers, bot) uses to change anything.

use crate::store::Store;
use crate::topology::{self, LogSettings, TopologyError};
use async_nats::jetstream;
use warren_domain::agent::Agent;
use warren_domain::conversation::Conversation;
use warren_domain::host::Host;
use warren_domain::user::User;

/// Why the command service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Streams or buckets could not be set up.
    #[error("setting up the log failed")]
    Topology(#[from] TopologyError),
    /// A stream could not be opened.
    #[error("opening a stream failed")]
    Open(#[from] jetstream::context::GetStreamError),
    /// A stream or bucket of the log is not there (or this role may not see it).
    #[error(
        "the log's {name} is missing or not visible to this role: run `warren migrate` (with the admin credentials) first"
    )]
    Missing {
        /// The stream or bucket.
        name: String,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// One store per aggregate type, sharing one JetStream connection. Cheap to clone.
#[derive(Clone)]
pub struct CommandService {
    /// `user.<id>`.
    pub users: Store<User>,
    /// `agent.<id>`.
    pub agents: Store<Agent>,
    /// `conv.<id>.ev`.
    pub conversations: Store<Conversation>,
    /// `host.<name>`.
    pub hosts: Store<Host>,
    js: jetstream::Context,
}

impl CommandService {
    /// Ensures the log's topology, then opens the stores. Creating streams takes the
    /// admin role's rights: `warren migrate`, `warren dev`'s setup and tests.
    pub async fn start(js: jetstream::Context, settings: &LogSettings) -> Result<Self, StartError> {
        topology::ensure(&js, settings).await?;
        Self::open(js).await
    }

    /// Opens the stores of a log whose topology exists, as any role does at start; says
    /// clearly when it does not. (Only `USERS` is checked: every role may see it, while a role
    /// may see only some of the others.)
    pub async fn open(js: jetstream::Context) -> Result<Self, StartError> {
        for stream in [topology::USERS] {
            js.get_stream(stream)
                .await
                .map_err(|source| StartError::Missing {
                    name: format!("stream {stream}"),
                    source: Box::new(source),
                })?;
        }
        Ok(Self {
            users: Store::open(js.clone()).await?,
            agents: Store::open(js.clone()).await?,
            conversations: Store::open(js.clone()).await?,
            hosts: Store::open(js.clone()).await?,
            js,
        })
    }

    /// The JetStream context (for publishing live deltas and reading KV).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }
}
