//! `schedule_message {message, delay_seconds}`: the agent sends the chat a message later (a
//! reminder, a follow-up) without being asked. When the delay is over the message joins the
//! proactive queue ([`crate::pending`]) that the platform collects from `GET /pending` and
//! delivers to every client of the conversation. Timers live in memory: a restart forgets them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::ToolOutcome;
use crate::model::ToolSpec;
use crate::pending::Pending;

/// The longest delay.
pub const MAX_DELAY_SECS: u64 = 24 * 60 * 60;
/// The longest message, in characters.
pub const MAX_CHARS: usize = 4_000;
/// Scheduled messages waiting at once, over all chats.
pub const MAX_WAITING: usize = 100;

/// The scheduler: the queue it fills, the timers waiting.
#[derive(Clone)]
pub struct Scheduler {
    pending: Arc<Pending>,
    waiting: Arc<AtomicUsize>,
    shutdown: CancellationToken,
}

impl Scheduler {
    /// Schedules into `pending`; timers end with `shutdown`.
    pub fn new(pending: Arc<Pending>, shutdown: CancellationToken) -> Self {
        Self {
            pending,
            waiting: Arc::new(AtomicUsize::new(0)),
            shutdown,
        }
    }

    /// The tool's description.
    pub fn spec() -> ToolSpec {
        ToolSpec {
            name: "schedule_message",
            description: "Send the user a message in this chat later, without being asked (a \
                reminder or a follow-up). delay_seconds from 0 to 86400.",
            parameters: json!({
                "type": "object",
                "properties": {
                    "message": {"type": "string", "description": "What to send"},
                    "delay_seconds": {"type": "integer", "description": "When, from now"}
                },
                "required": ["message", "delay_seconds"]
            }),
        }
    }

    /// Runs one call for `chat_id`.
    pub fn schedule(&self, input: &Value, chat_id: &str) -> ToolOutcome {
        let Some(message) = input["message"].as_str().filter(|m| !m.trim().is_empty()) else {
            return ToolOutcome::failed("missing non-empty string field \"message\"");
        };
        if message.chars().count() > MAX_CHARS {
            return ToolOutcome::failed(format!("message is longer than {MAX_CHARS} characters"));
        }
        let Some(delay) = input["delay_seconds"]
            .as_u64()
            .filter(|d| *d <= MAX_DELAY_SECS)
        else {
            return ToolOutcome::failed(format!(
                "delay_seconds must be an integer from 0 to {MAX_DELAY_SECS}"
            ));
        };
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return ToolOutcome::failed(format!(
                "{MAX_WAITING} messages are already scheduled; try later"
            ));
        }
        let (pending, waiting, shutdown) = (
            self.pending.clone(),
            self.waiting.clone(),
            self.shutdown.clone(),
        );
        let (chat_id, message) = (chat_id.to_owned(), message.to_owned());
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(delay)) => {
                    pending.push(chat_id, message);
                }
                _ = shutdown.cancelled() => {}
            }
            waiting.fetch_sub(1, Ordering::SeqCst);
        });
        ToolOutcome::ok(format!("scheduled: sent in {delay} s"), 200)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scheduled_message_joins_the_queue_when_due_and_bad_calls_are_explained() {
        let pending = Arc::new(Pending::default());
        let scheduler = Scheduler::new(pending.clone(), CancellationToken::new());
        let outcome = scheduler.schedule(&json!({"message": "stand up", "delay_seconds": 0}), "c1");
        assert!(outcome.ok, "{}", outcome.output);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let taken = loop {
            let taken = pending.drain(Some("c1"));
            if !taken.is_empty() || tokio::time::Instant::now() > deadline {
                break taken;
            }
            tokio::task::yield_now().await;
        };
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].content, "stand up");
        for bad in [
            json!({"message": "", "delay_seconds": 1}),
            json!({"message": "x", "delay_seconds": -1}),
            json!({"message": "x", "delay_seconds": MAX_DELAY_SECS + 1}),
            json!({"message": "x".repeat(MAX_CHARS + 1), "delay_seconds": 1}),
        ] {
            assert!(!scheduler.schedule(&bad, "c1").ok, "{bad}");
        }
    }
}
