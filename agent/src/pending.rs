//! [`Pending`]: proactive messages (heartbeats, background results) waiting for the platform to
//! collect them with `GET /pending`. In memory; `schedule_message` ([`crate::tools::schedule`])
//! fills it.

use std::sync::Mutex;

use serde::Serialize;

/// A message the agent wants delivered without being asked.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PendingMessage {
    /// The chat it belongs to.
    pub chat_id: String,
    /// The text.
    pub content: String,
}

/// The queue.
#[derive(Default)]
pub struct Pending(Mutex<Vec<PendingMessage>>);

impl Pending {
    /// Queues a message.
    pub fn push(&self, chat_id: impl Into<String>, content: impl Into<String>) {
        self.lock().push(PendingMessage {
            chat_id: chat_id.into(),
            content: content.into(),
        });
    }

    /// Removes and returns the queued messages, all or only one chat's.
    pub fn drain(&self, chat_id: Option<&str>) -> Vec<PendingMessage> {
        let mut queue = self.lock();
        match chat_id {
            None => std::mem::take(&mut *queue),
            Some(chat_id) => {
                let (taken, kept) = std::mem::take(&mut *queue)
                    .into_iter()
                    .partition(|m| m.chat_id == chat_id);
                *queue = kept;
                taken
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PendingMessage>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draining_one_chat_keeps_the_others() {
        let pending = Pending::default();
        pending.push("a", "1");
        pending.push("b", "2");
        assert_eq!(pending.drain(Some("a")).len(), 1);
        assert_eq!(pending.drain(None)[0].content, "2");
        assert!(pending.drain(None).is_empty());
    }
}
