//! A conversation's history read from the log, forks followed back to their origins
//! (docs/adr/0027-fork.md): what a fork inherits, what the edge checks a fork point against,
//! and what the chat worker hands a runtime that has never seen a fork.
//!
//! A fork's first commit (`ConversationForked`) names its origin and the message it continues
//! after; its inheritance is the origin's history *as of that commit* (every origin commit
//! before it, a clear included), cut after that message. That is exactly what the messages read
//! model copied when it applied the same commit, so clients and the runtime see one history.

use crate::error::StoreError;
use crate::store::Store;
use warren_domain::conversation::history::{Entry, History};
use warren_domain::conversation::{Conversation, ConversationEvent};
use warren_domain::ids::{ConversationId, MessageId};

/// How much of a conversation to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// All of it.
    End,
    /// Up to (not including) the post of this message: what the run answering it is given.
    Message(MessageId),
}

/// One conversation's part of a chain of forks: its commits and where its inheritor cuts it.
struct Segment {
    commits: Vec<(u64, Vec<ConversationEvent>)>,
    through: Option<u64>,
}

/// The history of `conversation` as far as `until` says, its inherited part (if it is a fork)
/// included.
pub async fn read(
    store: &Store<Conversation>,
    conversation: ConversationId,
    until: Until,
) -> Result<History, StoreError> {
    // Walk back along the forks first (iteratively: a chain may be long), then fold forwards.
    let mut segments = Vec::new();
    let (mut id, mut below, mut through) = (conversation, None, None);
    loop {
        let commits = store.commits(&id.to_string(), below).await?;
        let origin = commits.first().and_then(|(seq, events)| {
            events.iter().find_map(|event| match event {
                ConversationEvent::ConversationForked {
                    origin_id, after, ..
                } => Some((*origin_id, *seq, *after)),
                _ => None,
            })
        });
        segments.push(Segment { commits, through });
        match origin {
            Some((origin_id, forked_at, after)) => {
                (id, below, through) = (origin_id, Some(forked_at), Some(after));
            }
            None => break,
        }
    }
    let mut inherited: Vec<Entry> = Vec::new();
    for segment in segments.into_iter().rev() {
        let history = fold(inherited, &segment.commits, until);
        match segment.through {
            Some(after) => inherited = history.through(after),
            // The conversation asked about: the last segment, the only one not cut.
            None => return Ok(history),
        }
    }
    Ok(History::seeded(inherited))
}

/// `commits` folded onto `inherited`, stopping where `until` says.
fn fold(inherited: Vec<Entry>, commits: &[(u64, Vec<ConversationEvent>)], until: Until) -> History {
    let mut history = History::seeded(inherited);
    for (seq, events) in commits {
        for event in events {
            if let (Until::Message(stop), ConversationEvent::MessagePosted { message_id, .. }) =
                (until, event)
                && *message_id == stop
            {
                return history;
            }
            history.apply(*seq, event);
        }
    }
    history
}
