//! Proactive messages: after each run the worker takes what the agent's runtime queued at
//! `/pending` and delivers it into the agent's conversations ([`warren_commands::proactive`]);
//! agents that ran here within [`WATCHED_FOR`] (longer than the longest reminder) are asked
//! again every `pending_every`, a few at a time, so a reminder the agent set during a run
//! reaches every client of the conversation when it fires. The watch list is this replica's
//! memory: after a restart an agent is watched again from its next run (its runtime keeps the
//! queue meanwhile, and `GET /chat/{id}/pending` takes it too).

use super::Shared;
use super::runtime::Runtime;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use warren_commands::proactive;
use warren_domain::agent::AgentStatus;
use warren_domain::ids::AgentId;

/// How long after its last run here an agent's runtime is still asked: the longest delay
/// `schedule_message` accepts (a day), and an hour more.
pub const WATCHED_FOR: Duration = Duration::from_secs(25 * 60 * 60);
/// Runtimes asked at once by a sweep (a slow one does not hold up the others).
const ASKED_AT_ONCE: usize = 8;

/// The agents this replica ran recently, and when.
#[derive(Default)]
pub struct Watched(Mutex<HashMap<AgentId, Instant>>);

impl Watched {
    /// Remembers that `agent` ran now.
    pub fn ran(&self, agent: AgentId) {
        self.lock().insert(agent, Instant::now());
    }

    /// The agents that ran within [`WATCHED_FOR`]; forgets the others.
    fn recent(&self) -> Vec<AgentId> {
        let mut watched = self.lock();
        watched.retain(|_, at| at.elapsed() < WATCHED_FOR);
        watched.keys().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AgentId, Instant>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Takes and delivers `agent`'s proactive messages (nothing if it is not running).
pub async fn collect(shared: &Shared, agent: AgentId) {
    let Ok((state, _)) = shared.commands.agents.load(&agent.to_string()).await else {
        return;
    };
    let (AgentStatus::Running, Some(endpoint)) = (&state.status, &state.endpoint_url) else {
        return;
    };
    let Ok(Some(token)) = shared.tokens.get(agent).await else {
        return;
    };
    let runtime = Runtime::new(shared.http.clone(), endpoint, token);
    match runtime.pending().await {
        Ok(list) if list.messages.is_empty() => {}
        Ok(list) => {
            let delivered =
                proactive::deliver(&shared.commands, agent, list.messages, &shared.worker_id).await;
            tracing::info!(agent_id = %agent, count = delivered.len(), "delivered proactive messages");
        }
        Err(err) => {
            tracing::debug!(agent_id = %agent, error = %err, "asking a runtime for pending messages failed");
        }
    }
}

/// Asks every recently run agent's runtime, a few at a time.
pub async fn sweep(shared: &Shared) {
    futures::stream::iter(shared.watched.recent())
        .for_each_concurrent(ASKED_AT_ONCE, |agent| collect(shared, agent))
        .await;
}
