//! The user-wide feed's frames, versioned on their own: a change to one of the user's agents or
//! conversations, made from the committed domain event by an exhaustive match (a new event
//! without a feed change does not compile). Internal facts (endpoints, worker ids, system
//! prompts) stay out. Serialized as
//! `{"type": "agent" | "conversation", "v": 1, "id", "seq", "change": {"type": "<change>", …}}`.

use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;
use warren_domain::agent::{
    AgentEvent, DeploymentStep, ExecFailure, RedeployReason, RuntimeKind, SandboxAlert,
};
use warren_domain::conversation::{CancelReason, ConversationEvent, TokenUsage};
use warren_domain::ids::{AgentId, ConversationId, ExecId, MessageId, RunId};
use warren_domain::user::Provider;

/// The version of the feed's frames.
pub const VERSION: u32 = 1;

/// One change on the feed.
#[derive(Debug)]
pub struct FeedFrame {
    /// The agent or conversation.
    pub id: Uuid,
    /// Its position in its log (per kind).
    pub seq: u64,
    /// What changed.
    pub change: Change,
}

/// What changed.
#[derive(Debug)]
pub enum Change {
    /// An agent change.
    Agent(AgentChange),
    /// A conversation change.
    Conversation(ConversationChange),
}

/// A change to an agent.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentChange {
    /// Created (its first deployment follows).
    Created {
        /// Its name.
        name: String,
        /// Its model.
        model: String,
        /// Its runtime.
        runtime: RuntimeKind,
    },
    /// Renamed or given another model or prompt.
    Configured {
        /// Its name.
        name: String,
        /// Its model.
        model: String,
    },
    /// A first deployment was requested.
    DeploymentRequested {
        /// The attempt.
        deployment_id: Uuid,
    },
    /// A repair (a deployment of a failed agent) was requested.
    RepairRequested {
        /// The attempt.
        deployment_id: Uuid,
    },
    /// A redeploy was requested.
    RedeployRequested {
        /// The attempt.
        deployment_id: Uuid,
        /// Why.
        reason: RedeployReason,
    },
    /// A deployment step completed.
    DeploymentStep {
        /// The attempt.
        deployment_id: Uuid,
        /// The step.
        step: DeploymentStep,
    },
    /// The agent runs.
    Deployed {
        /// The attempt.
        deployment_id: Uuid,
    },
    /// A deployment failed at a step.
    DeploymentFailed {
        /// The attempt.
        deployment_id: Uuid,
        /// Where it failed.
        step: DeploymentStep,
        /// What went wrong (public).
        message: String,
    },
    /// Stopped by its owner.
    Stopped,
    /// Started again.
    Started,
    /// Restarted.
    Restarted,
    /// Paused while idle.
    Paused,
    /// Resumed.
    Resumed,
    /// It stopped working.
    Failed {
        /// What went wrong (public).
        message: String,
    },
    /// Deleted (its sandbox is being destroyed).
    Deleted,
    /// Its sandbox is gone.
    Destroyed,
    /// Its owner ran a shell command in it.
    ExecRequested {
        /// The exec.
        exec_id: ExecId,
        /// The command.
        command: String,
    },
    /// That command ended.
    ExecFinished {
        /// The exec.
        exec_id: ExecId,
        /// Its exit code, if it exited.
        exit_code: Option<i32>,
        /// Why it ended without one, if it did.
        failure: Option<ExecFailure>,
    },
    /// Its owner uploaded a file into its workspace.
    FileUploaded {
        /// Workspace-relative path.
        path: String,
        /// Bytes written.
        size: u64,
    },
    /// Its owner downloaded a file out of its workspace.
    FileDownloaded {
        /// Workspace-relative path.
        path: String,
        /// Bytes read.
        size: u64,
    },
    /// Its runtime called its model through the platform; the provider's token counts.
    ModelUsed {
        /// The provider called.
        provider: Provider,
        /// The model asked for.
        model: String,
        /// Whether the owner's own key paid for it.
        own_key: bool,
        /// Tokens the provider read.
        input_tokens: u64,
        /// Tokens the provider wrote.
        output_tokens: u64,
    },
    /// The platform saw something wrong with its sandbox (its admins were told too).
    SandboxAlerted {
        /// What.
        alert: SandboxAlert,
        /// The platform's sentence.
        detail: String,
    },
}

/// A change to a conversation.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ConversationChange {
    /// Started with an agent.
    Started {
        /// The agent.
        agent_id: AgentId,
        /// Its title, if given.
        title: Option<String>,
    },
    /// Started as a fork of another conversation, with its history up to `after`.
    Forked {
        /// The agent.
        agent_id: AgentId,
        /// Its title, if given.
        title: Option<String>,
        /// The conversation it continues.
        origin_id: ConversationId,
        /// The origin's log sequence of the last message it keeps.
        after: u64,
    },
    /// Renamed.
    Renamed {
        /// The new title.
        title: String,
    },
    /// A user message was posted.
    MessagePosted {
        /// The message.
        message_id: MessageId,
        /// The run answering it.
        run_id: RunId,
        /// Its text.
        text: String,
        /// The posting client's kind.
        client_kind: Option<String>,
    },
    /// A run waits behind others.
    RunQueued {
        /// The run.
        run_id: RunId,
        /// Its place in the queue.
        position: u32,
    },
    /// A run started.
    RunStarted {
        /// The run.
        run_id: RunId,
    },
    /// A run ended with a reply.
    RunCompleted {
        /// The run.
        run_id: RunId,
        /// The reply.
        message_id: MessageId,
        /// The reply's text.
        text: String,
        /// Tokens used.
        usage: TokenUsage,
        /// How long it took.
        duration_ms: u64,
    },
    /// A run failed.
    RunFailed {
        /// The run.
        run_id: RunId,
        /// A stable code.
        code: String,
        /// A public message.
        message: String,
        /// Whether sending again may work.
        retryable: bool,
    },
    /// Somebody asked to cancel a run.
    CancelRequested {
        /// The run.
        run_id: RunId,
    },
    /// A run was cancelled.
    RunCancelled {
        /// The run.
        run_id: RunId,
        /// Why.
        reason: CancelReason,
    },
    /// The history was cleared.
    HistoryCleared,
    /// The agent sent a message of its own accord.
    AgentMessagePosted {
        /// The message.
        message_id: MessageId,
        /// Its text.
        text: String,
    },
}

impl FeedFrame {
    /// The frame's JSON object.
    pub fn to_json(&self) -> Value {
        let (kind, change) = match &self.change {
            Change::Agent(change) => ("agent", serde_json::to_value(change)),
            Change::Conversation(change) => ("conversation", serde_json::to_value(change)),
        };
        json!({
            "type": kind, "v": VERSION, "id": self.id, "seq": self.seq,
            "change": change.unwrap_or(Value::Null),
        })
    }
}

impl From<AgentEvent> for AgentChange {
    fn from(event: AgentEvent) -> Self {
        use AgentEvent as E;
        match event {
            E::AgentCreated {
                name,
                model,
                runtime,
                ..
            } => AgentChange::Created {
                name,
                model,
                runtime,
            },
            E::AgentConfigUpdated { name, model, .. } => AgentChange::Configured { name, model },
            E::DeploymentRequested { deployment_id, .. } => {
                AgentChange::DeploymentRequested { deployment_id }
            }
            E::RepairRequested { deployment_id, .. } => {
                AgentChange::RepairRequested { deployment_id }
            }
            E::RedeployRequested {
                deployment_id,
                reason,
                ..
            } => AgentChange::RedeployRequested {
                deployment_id,
                reason,
            },
            E::DeploymentStepCompleted {
                deployment_id,
                step,
                ..
            } => AgentChange::DeploymentStep {
                deployment_id,
                step,
            },
            E::AgentDeployed { deployment_id, .. } => AgentChange::Deployed { deployment_id },
            E::DeploymentFailed {
                deployment_id,
                step,
                error,
                ..
            } => AgentChange::DeploymentFailed {
                deployment_id,
                step,
                message: error,
            },
            E::AgentStopped { .. } => AgentChange::Stopped,
            E::AgentStarted { .. } => AgentChange::Started,
            E::AgentRestarted { .. } => AgentChange::Restarted,
            E::AgentPaused { .. } => AgentChange::Paused,
            E::AgentResumed { .. } => AgentChange::Resumed,
            E::AgentFailed { error, .. } => AgentChange::Failed { message: error },
            E::AgentDeleted { .. } => AgentChange::Deleted,
            E::AgentDestroyed { .. } => AgentChange::Destroyed,
            E::ExecRequested {
                exec_id, command, ..
            } => AgentChange::ExecRequested { exec_id, command },
            E::ExecFinished {
                exec_id,
                exit_code,
                failure,
                ..
            } => AgentChange::ExecFinished {
                exec_id,
                exit_code,
                failure,
            },
            E::FileUploaded { path, size, .. } => AgentChange::FileUploaded { path, size },
            E::FileDownloaded { path, size, .. } => AgentChange::FileDownloaded { path, size },
            E::ModelUsageMetered {
                provider,
                model,
                own_key,
                input_tokens,
                output_tokens,
                ..
            } => AgentChange::ModelUsed {
                provider,
                model,
                own_key,
                input_tokens,
                output_tokens,
            },
            E::SandboxAlerted { alert, detail, .. } => {
                AgentChange::SandboxAlerted { alert, detail }
            }
        }
    }
}

impl From<ConversationEvent> for ConversationChange {
    fn from(event: ConversationEvent) -> Self {
        use ConversationEvent as E;
        match event {
            E::ConversationStarted {
                agent_id, title, ..
            } => ConversationChange::Started { agent_id, title },
            E::ConversationForked {
                agent_id,
                title,
                origin_id,
                after,
                ..
            } => ConversationChange::Forked {
                agent_id,
                title,
                origin_id,
                after,
            },
            E::ConversationRenamed { title, .. } => ConversationChange::Renamed { title },
            E::MessagePosted {
                message_id,
                run_id,
                text,
                client_kind,
                ..
            } => ConversationChange::MessagePosted {
                message_id,
                run_id,
                text,
                client_kind,
            },
            E::RunQueued {
                run_id, position, ..
            } => ConversationChange::RunQueued { run_id, position },
            E::RunStarted { run_id, .. } => ConversationChange::RunStarted { run_id },
            E::RunCompleted {
                run_id,
                reply_id,
                text,
                usage,
                duration_ms,
                ..
            } => ConversationChange::RunCompleted {
                run_id,
                message_id: reply_id,
                text,
                usage,
                duration_ms,
            },
            E::RunFailed {
                run_id,
                code,
                message,
                retryable,
                ..
            } => ConversationChange::RunFailed {
                run_id,
                code,
                message,
                retryable,
            },
            E::CancelRequested { run_id, .. } => ConversationChange::CancelRequested { run_id },
            E::RunCancelled { run_id, reason, .. } => {
                ConversationChange::RunCancelled { run_id, reason }
            }
            E::HistoryCleared { .. } => ConversationChange::HistoryCleared,
            E::AgentMessagePosted {
                message_id, text, ..
            } => ConversationChange::AgentMessagePosted { message_id, text },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployed_agent_is_shown_without_its_endpoint_or_workspace() {
        let frame = FeedFrame {
            id: Uuid::from_u128(1),
            seq: 4,
            change: Change::Agent(
                AgentEvent::AgentDeployed {
                    agent_id: AgentId(Uuid::from_u128(1)),
                    deployment_id: Uuid::from_u128(2),
                    endpoint_url: "http://127.0.0.1:4242".into(),
                    workspace: Some("warren-ws-pool-1".into()),
                }
                .into(),
            ),
        };
        let json = frame.to_json();
        assert_eq!(json["type"], "agent");
        assert_eq!(json["v"], 1);
        assert_eq!(json["seq"], 4);
        assert_eq!(json["change"]["type"], "deployed");
        assert!(!json.to_string().contains("4242"), "{json}");
        assert!(!json.to_string().contains("warren-ws"), "{json}");
    }
}
