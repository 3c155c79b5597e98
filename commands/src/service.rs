//! [`CommandService`]: the one handle every adapter (edge, workers, bot) uses to change anything.

use crate::store::Store;
use crate::topology::{self, LogSettings, TopologyError};
use async_nats::jetstream;
use warren_domain::agent::Agent;
use warren_domain::conversation::Conversation;
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
    js: jetstream::Context,
}

impl CommandService {
    /// Ensures the log's topology and opens the three stores.
    pub async fn start(js: jetstream::Context, settings: &LogSettings) -> Result<Self, StartError> {
        topology::ensure(&js, settings).await?;
        Ok(Self {
            users: Store::open(js.clone()).await?,
            agents: Store::open(js.clone()).await?,
            conversations: Store::open(js.clone()).await?,
            js,
        })
    }

    /// The JetStream context (for publishing live deltas and reading KV).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }
}
