//! How many model calls each agent has in flight through this edge. The daily token quota is
//! counted from finished calls, so without a cap an agent could start thousands at once and
//! all of them would pass the quota check; a call past [`MAX_PER_AGENT`] is refused instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use warren_domain::ids::AgentId;

/// Model calls one agent may have in flight at once, per edge process.
pub const MAX_PER_AGENT: usize = 4;

/// The calls in flight, per agent.
#[derive(Clone, Default)]
pub struct InFlight(Arc<Mutex<HashMap<AgentId, usize>>>);

/// One call in flight; dropping it ends the call.
pub struct Slot {
    calls: InFlight,
    agent: AgentId,
}

impl InFlight {
    /// A slot for one more call of `agent`'s, or `None` when it already has
    /// [`MAX_PER_AGENT`] calls in flight.
    pub fn take(&self, agent: AgentId) -> Option<Slot> {
        let mut calls = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = calls.entry(agent).or_default();
        if *count >= MAX_PER_AGENT {
            return None;
        }
        *count += 1;
        Some(Slot {
            calls: self.clone(),
            agent,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut calls = self.calls.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = calls.get_mut(&self.agent) {
            *count -= 1;
            if *count == 0 {
                calls.remove(&self.agent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_gets_at_most_its_share_of_slots_and_gets_them_back() {
        let calls = InFlight::default();
        let agent = AgentId::new();
        let other = AgentId::new();
        let slots: Vec<Slot> = (0..MAX_PER_AGENT)
            .map(|_| calls.take(agent).expect("a slot"))
            .collect();
        assert!(calls.take(agent).is_none(), "one past the cap is refused");
        assert!(calls.take(other).is_some(), "another agent is not held up");
        drop(slots);
        assert!(
            calls.take(agent).is_some(),
            "ended calls give their slots back"
        );
    }
}
