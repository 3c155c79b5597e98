//! The write side's errors. A stale expected sequence becomes [`StoreError::Conflict`] in exactly one
//! place (the `From<PublishError>` below); everything above matches on that variant.

use async_nats::jetstream::context::{PublishError, PublishErrorKind};

/// Failures of the JetStream event store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended to the subject since we loaded it.
    #[error("append conflict: the subject moved past the expected sequence")]
    Conflict,
    /// The publish may or may not have been stored (no ack in time, connection lost).
    #[error("append outcome unknown")]
    Ambiguous(#[source] PublishError),
    /// The append was refused for another reason.
    #[error("append failed")]
    AppendFailed(#[source] PublishError),
    /// Reading the subject's events failed.
    #[error("reading subject {subject} failed")]
    ReadFailed {
        /// The aggregate subject being read.
        subject: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored message could not be decoded.
    #[error("stored message {sequence} on {subject} is unreadable")]
    Decode {
        /// The subject of the message.
        subject: String,
        /// Its stream sequence.
        sequence: u64,
        /// Why.
        #[source]
        source: crate::codec::DecodeError,
    },
    /// Encoding events failed (a bug: events are plain data).
    #[error("encoding events failed")]
    Encode(#[source] serde_json::Error),
    /// The command metadata was incomplete (a bug in the caller).
    #[error("command metadata is missing {0}")]
    MissingMetadata(&'static str),
}

impl From<PublishError> for StoreError {
    fn from(err: PublishError) -> Self {
        match err.kind() {
            PublishErrorKind::WrongLastSequence => StoreError::Conflict,
            PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => StoreError::Ambiguous(err),
            _ if is_constant_wrong_last_sequence(&err) => StoreError::Conflict,
            _ => StoreError::AppendFailed(err),
        }
    }
}

/// Whether the server refused the append for its expected last sequence without naming the
/// actual one (10164): a clustered stream's leader answers so while an earlier append to the
/// subject is still being replicated. It is a conflict like any other (async-nats files it under
/// `Other`).
fn is_constant_wrong_last_sequence(err: &PublishError) -> bool {
    std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<async_nats::jetstream::Error>())
        .is_some_and(|source| {
            source.error_code()
                == async_nats::jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
        })
}

/// What a command can end in.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error + 'static> {
    /// The aggregate refused the command (a domain rule).
    #[error(transparent)]
    Rejected(E),
    /// The aggregate kept moving under us for every allowed attempt.
    #[error("conflict on {aggregate_id} after {attempts} attempts")]
    Conflict {
        /// The aggregate id.
        aggregate_id: String,
        /// How many times we tried.
        attempts: u32,
    },
    /// The store failed.
    #[error("event store failure")]
    Store(#[from] StoreError),
}
