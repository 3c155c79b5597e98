//! Where each domain aggregate lives in the log.

use crate::store::Stored;
use crate::topology;
use warren_domain::agent::Agent;
use warren_domain::conversation::Conversation;
use warren_domain::host::Host;
use warren_domain::user::User;

impl Stored for User {
    const STREAM: &'static str = topology::USERS;
    fn subject(aggregate_id: &str) -> String {
        topology::user_subject(aggregate_id)
    }
}

impl Stored for Agent {
    const STREAM: &'static str = topology::AGENTS;
    fn subject(aggregate_id: &str) -> String {
        topology::agent_subject(aggregate_id)
    }
}

impl Stored for Conversation {
    const STREAM: &'static str = topology::CONVERSATIONS;
    fn subject(aggregate_id: &str) -> String {
        topology::conversation_subject(aggregate_id)
    }
}

impl Stored for Host {
    const STREAM: &'static str = topology::HOSTS;
    fn subject(aggregate_id: &str) -> String {
        topology::host_subject(aggregate_id)
    }
}
