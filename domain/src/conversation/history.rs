//! A conversation's history as a model reads it: the user's messages and the agent's replies,
//! in log order, folded from the conversation's events. It is what a fork inherits and what the
//! chat worker hands a runtime that has never seen the conversation (docs/adr/0027-fork.md).
//!
//! The fold mirrors the messages read model: one entry per user message, completed reply, agent
//! message, and run that ended without a reply (an entry with no text, which a model is not
//! shown); a clear forgets everything before it. A fork's first event names its origin: the
//! reader of the log seeds the fold with the origin's entries (see
//! `warren_commands::history`), which keep the origin's log sequences.

use super::ConversationEvent;
use serde::{Deserialize, Serialize};

/// Who said it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The user.
    User,
    /// The agent.
    Assistant,
}

/// One entry of a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The log sequence of the commit that recorded it (in the conversation it was first said
    /// in, for an inherited entry): the `seq` clients see on messages.
    pub seq: u64,
    /// Who said it.
    pub role: Role,
    /// What was said; `None` for a run that failed or was cancelled.
    pub text: Option<String>,
}

/// A conversation's history, folded event by event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    entries: Vec<Entry>,
}

impl History {
    /// A history that starts with `entries` (a fork's inheritance).
    pub fn seeded(entries: Vec<Entry>) -> Self {
        Self { entries }
    }

    /// Folds one event recorded at log sequence `seq`.
    pub fn apply(&mut self, seq: u64, event: &ConversationEvent) {
        use ConversationEvent as E;
        let (role, text) = match event {
            E::MessagePosted { text, .. } => (Role::User, Some(text.clone())),
            E::RunCompleted { text, .. } | E::AgentMessagePosted { text, .. } => {
                (Role::Assistant, Some(text.clone()))
            }
            E::RunFailed { .. } | E::RunCancelled { .. } => (Role::Assistant, None),
            E::HistoryCleared { .. } => {
                self.entries.clear();
                return;
            }
            E::ConversationStarted { .. }
            | E::ConversationForked { .. }
            | E::ConversationRenamed { .. }
            | E::RunQueued { .. }
            | E::RunStarted { .. }
            | E::CancelRequested { .. } => return,
        };
        self.entries.push(Entry { seq, role, text });
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Whether some entry was recorded at `seq` (a fork may continue after it).
    pub fn has_entry_at(&self, seq: u64) -> bool {
        self.entries.iter().any(|entry| entry.seq == seq)
    }

    /// The entries up to and including log sequence `after`.
    pub fn through(mut self, after: u64) -> Vec<Entry> {
        self.entries.retain(|entry| entry.seq <= after);
        self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::{CancelReason, TokenUsage};
    use crate::ids::{AgentId, ConversationId, MessageId, RunId, UserId};

    fn posted(text: &str) -> ConversationEvent {
        ConversationEvent::MessagePosted {
            conversation_id: ConversationId::default(),
            message_id: MessageId::new(),
            agent_id: AgentId::default(),
            user_id: UserId::default(),
            text: text.into(),
            client_id: None,
            client_kind: None,
            run_id: RunId::new(),
            position: 0,
        }
    }

    fn replied(text: &str) -> ConversationEvent {
        ConversationEvent::RunCompleted {
            conversation_id: ConversationId::default(),
            run_id: RunId::new(),
            reply_id: MessageId::new(),
            user_id: UserId::default(),
            agent_id: AgentId::default(),
            text: text.into(),
            tool_calls: vec![],
            usage: TokenUsage::default(),
            duration_ms: 1,
            model: None,
            provider: None,
        }
    }

    fn said(seq: u64, role: Role, text: Option<&str>) -> Entry {
        Entry {
            seq,
            role,
            text: text.map(str::to_owned),
        }
    }

    #[test]
    fn messages_replies_and_runs_without_a_reply_are_entries_and_a_clear_forgets_them() {
        let mut history = History::default();
        history.apply(1, &posted("forgotten"));
        history.apply(
            2,
            &ConversationEvent::HistoryCleared {
                conversation_id: ConversationId::default(),
            },
        );
        history.apply(3, &posted("one"));
        history.apply(4, &replied("two"));
        history.apply(5, &posted("three"));
        history.apply(
            6,
            &ConversationEvent::RunCancelled {
                conversation_id: ConversationId::default(),
                run_id: RunId::new(),
                reason: CancelReason::Requested,
            },
        );
        assert_eq!(
            history.entries(),
            [
                said(3, Role::User, Some("one")),
                said(4, Role::Assistant, Some("two")),
                said(5, Role::User, Some("three")),
                said(6, Role::Assistant, None),
            ]
        );
        assert!(history.has_entry_at(4));
        assert!(!history.has_entry_at(2), "a clear is not a message");
        assert_eq!(history.through(4).len(), 2);
    }

    #[test]
    fn a_seeded_history_goes_on_after_its_inheritance() {
        let mut history = History::seeded(vec![said(3, Role::User, Some("one"))]);
        history.apply(9, &replied("two"));
        assert_eq!(
            history.entries(),
            [
                said(3, Role::User, Some("one")),
                said(9, Role::Assistant, Some("two"))
            ]
        );
    }
}
