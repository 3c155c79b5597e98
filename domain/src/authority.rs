//! Who may cause each event: the rule readers check every stored commit against, so a commit
//! whose actor could not have issued its command is never applied (even if it reached the log).
//!
//! The write side already enforces these rules (the edge checks the caller, workers act as
//! `system:<role>`); this table is the same rule stated once more for readers, as defence in
//! depth against a forged or buggy commit.
//!
//! A `system:<role>` actor may cause anything: platform roles hold the log's credentials. A
//! `user:<id>` actor may cause an event only as its [`Authority`] allows.

use crate::agent::AgentEvent;
use crate::conversation::ConversationEvent;
use crate::ids::UserId;
use crate::user::UserEvent;

/// Which signed-in users may cause an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authority {
    /// The user the event is about: the user themself, or the owner of the agent or
    /// conversation.
    Subject,
    /// An approved admin.
    Admin,
    /// No user: only a platform role (deployer, chat worker, lifecycle) causes it.
    Platform,
}

impl UserEvent {
    /// Who may cause this event.
    pub fn authority(&self) -> Authority {
        use UserEvent as E;
        match self {
            E::UserRegistered { .. }
            | E::AuthMethodLinked { .. }
            | E::AuthMethodUnlinked { .. }
            | E::ProfileUpdated { .. }
            | E::ProviderKeySet { .. }
            | E::ProviderKeyRemoved { .. } => Authority::Subject,
            E::UserApproved { .. }
            | E::UserRejected { .. }
            | E::UserAccessRevoked { .. }
            | E::RoleChanged { .. }
            | E::TierChanged { .. } => Authority::Admin,
        }
    }

    /// The user this event is about.
    pub fn subject(&self) -> UserId {
        use UserEvent as E;
        match self {
            E::UserRegistered { user_id, .. }
            | E::UserApproved { user_id, .. }
            | E::UserRejected { user_id, .. }
            | E::UserAccessRevoked { user_id, .. }
            | E::RoleChanged { user_id, .. }
            | E::AuthMethodLinked { user_id, .. }
            | E::AuthMethodUnlinked { user_id, .. }
            | E::ProfileUpdated { user_id, .. }
            | E::ProviderKeySet { user_id, .. }
            | E::ProviderKeyRemoved { user_id, .. }
            | E::TierChanged { user_id, .. } => *user_id,
        }
    }
}

impl AgentEvent {
    /// Who may cause this event: the owner configures, drives the lifecycle, runs commands and
    /// uploads files; deployment progress, outcomes, idle pauses, destruction, exec outcomes
    /// and metered model usage come from the platform.
    pub fn authority(&self) -> Authority {
        use AgentEvent as E;
        match self {
            E::AgentCreated { .. }
            | E::AgentConfigUpdated { .. }
            | E::DeploymentRequested { .. }
            | E::AgentStopped { .. }
            | E::AgentStarted { .. }
            | E::AgentRestarted { .. }
            | E::RepairRequested { .. }
            | E::RedeployRequested { .. }
            | E::AgentDeleted { .. }
            | E::ExecRequested { .. }
            | E::FileUploaded { .. }
            | E::FileDownloaded { .. } => Authority::Subject,
            // The edge records how an exec ended, so an owner cannot write its outcome; and
            // what its model proxy metered, so nobody can write their own usage.
            E::ExecFinished { .. }
            | E::ModelUsageMetered { .. }
            | E::SandboxAlerted { .. }
            | E::DeploymentStepCompleted { .. }
            | E::AgentDeployed { .. }
            | E::DeploymentFailed { .. }
            | E::AgentPaused { .. }
            | E::AgentResumed { .. }
            | E::AgentFailed { .. }
            | E::AgentDestroyed { .. } => Authority::Platform,
        }
    }

    /// The owner, when the event itself names it (only creation does).
    pub fn owner(&self) -> Option<UserId> {
        match self {
            AgentEvent::AgentCreated { owner_id, .. } => Some(*owner_id),
            _ => None,
        }
    }
}

impl ConversationEvent {
    /// Who may cause this event: the conversation's user starts, forks, renames, posts, cancels and
    /// clears; runs are started and finished, and the agent's own messages delivered, by the
    /// chat worker.
    pub fn authority(&self) -> Authority {
        use ConversationEvent as E;
        match self {
            E::ConversationStarted { .. }
            | E::ConversationForked { .. }
            | E::ConversationRenamed { .. }
            | E::MessagePosted { .. }
            | E::RunQueued { .. }
            | E::CancelRequested { .. }
            // A queued run cancelled by its user, or the running one interrupted by a post.
            | E::RunCancelled { .. }
            | E::HistoryCleared { .. } => Authority::Subject,
            E::RunStarted { .. }
            | E::RunCompleted { .. }
            | E::RunFailed { .. }
            | E::AgentMessagePosted { .. } => Authority::Platform,
        }
    }

    /// The conversation's user, when the event itself names it.
    pub fn owner(&self) -> Option<UserId> {
        match self {
            ConversationEvent::ConversationStarted { user_id, .. }
            | ConversationEvent::ConversationForked { user_id, .. }
            | ConversationEvent::MessagePosted { user_id, .. }
            | ConversationEvent::RunCompleted { user_id, .. }
            | ConversationEvent::AgentMessagePosted { user_id, .. } => Some(*user_id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AgentId, ConversationId, RunId};

    #[test]
    fn approving_is_for_admins_and_a_profile_for_its_user() {
        let user_id = UserId::new();
        let approved = UserEvent::UserApproved {
            user_id,
            role: crate::user::Role::User,
        };
        assert_eq!(approved.authority(), Authority::Admin);
        assert_eq!(approved.subject(), user_id);
        let profile = UserEvent::ProfileUpdated {
            user_id,
            display_name: None,
            avatar_url: None,
            show_tool_calls: true,
        };
        assert_eq!(profile.authority(), Authority::Subject);
    }

    #[test]
    fn deployment_outcomes_and_run_outcomes_come_from_the_platform() {
        let agent_id = AgentId::new();
        assert_eq!(
            AgentEvent::AgentDestroyed { agent_id }.authority(),
            Authority::Platform
        );
        assert_eq!(
            AgentEvent::AgentDeleted { agent_id }.authority(),
            Authority::Subject
        );
        let started = ConversationEvent::RunStarted {
            conversation_id: ConversationId::new(),
            run_id: RunId::new(),
            worker_id: "chat-1".into(),
        };
        assert_eq!(started.authority(), Authority::Platform);
        assert_eq!(started.owner(), None);
    }
}
