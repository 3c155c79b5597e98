//! Test-side waiting: conditions re-checked on every change the server makes (no sleeps),
//! failing with the caller's location and what the chat got.

use std::future::Future;
use std::panic::Location;
use std::time::Duration;

use super::{BotMessage, Call, TestTelegram};

impl TestTelegram {
    /// Waits until a getUpdates long poll is waiting (the bot is listening); panics on timeout.
    #[track_caller]
    pub fn wait_for_poll(&self, timeout: Duration) -> impl Future<Output = ()> {
        let caller = Location::caller();
        async move {
            let polling = self.wait(timeout, || self.is_polling().then_some(())).await;
            if polling.is_none() {
                panic!(
                    "test telegram: wait_for_poll at {caller}: no getUpdates waiting after {timeout:?} ({} getUpdates answered)",
                    self.calls_of("getUpdates").len()
                );
            }
        }
    }

    /// Waits for the first bot message in `chat_id` that satisfies `matches` (checked on every
    /// change) and returns it; panics naming the caller, with what the chat got, on timeout.
    #[track_caller]
    pub fn wait_for_message<F>(
        &self,
        chat_id: i64,
        mut matches: F,
        timeout: Duration,
    ) -> impl Future<Output = BotMessage>
    where
        F: FnMut(&BotMessage) -> bool,
    {
        let caller = Location::caller();
        async move {
            let found = self
                .wait(timeout, || {
                    self.messages(chat_id).into_iter().find(|m| matches(m))
                })
                .await;
            found.unwrap_or_else(|| {
                panic!(
                    "test telegram: wait_for_message at {caller}: no matching message in chat \
                     {chat_id} after {timeout:?}\n{}",
                    self.dump(chat_id)
                )
            })
        }
    }

    /// Waits until `method` (any case) was answered at least `count` times and returns its
    /// calls; panics naming the caller, with the calls seen, on timeout.
    #[track_caller]
    pub fn wait_for_calls(
        &self,
        method: &str,
        count: usize,
        timeout: Duration,
    ) -> impl Future<Output = Vec<Call>> {
        let caller = Location::caller();
        let method = method.to_owned();
        async move {
            let found = self
                .wait(timeout, || {
                    let calls = self.calls_of(&method);
                    (calls.len() >= count).then_some(calls)
                })
                .await;
            found.unwrap_or_else(|| {
                let seen: Vec<String> = self
                    .calls()
                    .iter()
                    .map(|c| format!("  {} -> {}", c.method, c.status))
                    .collect();
                panic!(
                    "test telegram: wait_for_calls at {caller}: {method} answered {} times, \
                     wanted {count}, after {timeout:?}; calls:\n{}",
                    self.calls_of(&method).len(),
                    seen.join("\n")
                )
            })
        }
    }

    /// Waits until no update is pending (all confirmed or delivered); panics on timeout.
    #[track_caller]
    pub fn wait_until_no_pending(&self, timeout: Duration) -> impl Future<Output = ()> {
        let caller = Location::caller();
        async move {
            let done = self
                .wait(timeout, || (self.pending_updates() == 0).then_some(()))
                .await;
            if done.is_none() {
                panic!(
                    "test telegram: wait_until_no_pending at {caller}: {} updates still pending \
                     after {timeout:?}",
                    self.pending_updates()
                );
            }
        }
    }

    /// Checks `probe` now and on every change until it gives a value or `timeout` passes.
    async fn wait<T>(&self, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
        let mut changed = self.shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changed.borrow_and_update();
            if let Some(value) = probe() {
                return Some(value);
            }
            if !matches!(
                tokio::time::timeout_at(deadline, changed.changed()).await,
                Ok(Ok(()))
            ) {
                return probe();
            }
        }
    }

    /// What `chat_id` got, for failure messages: messages, drafts and refused calls.
    fn dump(&self, chat_id: i64) -> String {
        let mut lines = vec![format!("bot messages in chat {chat_id}:")];
        for m in self.messages(chat_id) {
            let deleted = if m.deleted { " (deleted)" } else { "" };
            lines.push(format!(
                "  #{}{deleted}: {:?} edits={:?} markup={} document={:?}",
                m.message_id,
                m.text,
                m.edits,
                m.reply_markup.map(|v| v.to_string()).unwrap_or_default(),
                m.document.as_ref().map(|(name, _)| name),
            ));
        }
        lines.push(format!("drafts: {:?}", self.drafts(chat_id)));
        lines.push("refused calls:".to_owned());
        for call in self.calls().iter().filter(|c| c.status != 200) {
            lines.push(format!(
                "  {} {} -> {} {}",
                call.method, call.params, call.status, call.response["description"]
            ));
        }
        lines.join("\n")
    }
}
