//! Why a conversation command was refused.

use crate::ids::{ConversationId, RunId};
use crate::text::InvalidText;
use thiserror::Error;

/// A refused conversation command. [`ConversationError::code`] is the stable machine code the
/// edge maps.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ConversationError {
    /// The command needs an existing conversation and there is none.
    #[error("conversation not found ({command})")]
    NotFound {
        /// The refused command's name.
        command: &'static str,
    },
    /// `StartConversation` for a conversation that already exists.
    #[error("conversation {conversation_id} already exists")]
    AlreadyExists {
        /// The existing conversation.
        conversation_id: ConversationId,
    },
    /// A command field is malformed.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A run is running (or, for `ClearHistory`, running or waiting).
    #[error("run {run_id} is in progress")]
    RunInProgress {
        /// The run in the way.
        run_id: RunId,
    },
    /// The run is not running (for complete/fail) or not in the queue at all (for the others):
    /// unknown, finished, cancelled, or still waiting.
    #[error("run {run_id} is not active")]
    RunNotActive {
        /// The run.
        run_id: RunId,
    },
    /// `StartRun` for a waiting run that is not at the head of the queue.
    #[error("run {run_id} is not next (run {next} is)")]
    RunNotNext {
        /// The run.
        run_id: RunId,
        /// The run that is next up.
        next: RunId,
    },
    /// A run id already running or waiting in this conversation.
    #[error("run {run_id} is already queued")]
    DuplicateRun {
        /// The run.
        run_id: RunId,
    },
    /// The conversation already holds the most runs it may.
    #[error("the queue is full ({limit} runs)")]
    QueueFull {
        /// The limit.
        limit: usize,
    },
}

impl ConversationError {
    /// A stable snake_case code for clients and the HTTP mapping, e.g. `run_not_active`.
    pub fn code(&self) -> &'static str {
        match self {
            ConversationError::NotFound { .. } => "not_found",
            ConversationError::AlreadyExists { .. } => "already_exists",
            ConversationError::InvalidInput { .. } => "invalid_input",
            ConversationError::RunInProgress { .. } => "run_in_progress",
            ConversationError::RunNotActive { .. } => "run_not_active",
            ConversationError::RunNotNext { .. } => "run_not_next",
            ConversationError::DuplicateRun { .. } => "duplicate_run",
            ConversationError::QueueFull { .. } => "queue_full",
        }
    }
}

impl From<InvalidText> for ConversationError {
    fn from(InvalidText { field, reason }: InvalidText) -> Self {
        ConversationError::InvalidInput { field, reason }
    }
}
