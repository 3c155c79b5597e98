//! One operation per agent at a time: the consumer's handlers and the reconciler take the
//! agent's lock, so different agents deploy side by side and one agent's steps never interleave.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedMutexGuard;
use warren_domain::ids::AgentId;

/// A lock per agent, made on first use and dropped when nobody holds or waits for it.
#[derive(Default)]
pub struct AgentLocks {
    locks: Mutex<HashMap<AgentId, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds an agent's lock; releasing it forgets the lock if nobody else wants it.
pub struct AgentGuard<'a> {
    guard: Option<OwnedMutexGuard<()>>,
    agent_id: AgentId,
    locks: &'a AgentLocks,
}

impl AgentLocks {
    /// Waits for `agent_id`'s lock.
    pub async fn lock(&self, agent_id: AgentId) -> AgentGuard<'_> {
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            locks.entry(agent_id).or_default().clone()
        };
        AgentGuard {
            guard: Some(lock.lock_owned().await),
            agent_id,
            locks: self,
        }
    }

    /// How many agents have a lock in the table (held or waited for).
    pub fn len(&self) -> usize {
        self.locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    /// Whether no agent has a lock in the table.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for AgentGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self
            .locks
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Only the table holds it: nobody holds or waits for this agent.
        if locks
            .get(&self.agent_id)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(&self.agent_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_agent_waits_while_another_goes_ahead() {
        let locks = AgentLocks::default();
        let (a, b) = (AgentId::new(), AgentId::new());
        let held = locks.lock(a).await;
        // Another agent's lock is free at once.
        let other = tokio::time::timeout(Duration::from_secs(1), locks.lock(b)).await;
        assert!(other.is_ok(), "b is not blocked by a");
        drop(other);
        // The same agent's lock waits until it is released.
        let waiting = locks.lock(a);
        tokio::pin!(waiting);
        assert!(
            futures::poll!(waiting.as_mut()).is_pending(),
            "a second lock on a waits"
        );
        drop(held);
        let again = waiting.await;
        drop(again);
        assert!(locks.is_empty(), "released locks are forgotten");
    }
}
