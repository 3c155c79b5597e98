//! The bridge's own records, in the `telegram` KV bucket (what the log does not say because it
//! is about Telegram, not the platform):
//! - `current.<user>` — the chat a user talks from, and their current agent and conversation
//!   there (what plain text goes to, and which conversation's messages from other clients are
//!   shown in Telegram);
//! - `run.<run>` — a run asked from Telegram: the chat its answer goes to, and the message that
//!   shows its draft in a chat without drafts (edited into the final answer);
//! - `poller` — which replica long-polls Telegram, and when it last said so.

use async_nats::jetstream::{self, kv};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use warren_commands::topology::KV_TELEGRAM;
use warren_domain::ids::{AgentId, ConversationId, RunId, UserId};

/// The bucket failed.
#[derive(Debug, thiserror::Error)]
#[error("telegram bucket: {0}")]
pub struct StoreError(String);

fn fail(err: impl std::fmt::Display) -> StoreError {
    StoreError(err.to_string())
}

/// Where a user is in Telegram.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Current {
    /// The chat they talk from.
    pub chat_id: i64,
    /// Their current agent.
    pub agent_id: Option<AgentId>,
    /// Their current conversation with it (none: the next message starts or resumes one).
    pub conversation_id: Option<ConversationId>,
}

/// A run asked from Telegram.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The chat its answer goes to.
    pub chat_id: i64,
    /// The message showing its draft, to edit into the answer (chats without drafts).
    pub placeholder: Option<i64>,
}

/// Who polls Telegram.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Poller {
    holder: String,
    beat_ms: i64,
}

/// The bucket.
#[derive(Clone)]
pub struct Store {
    kv: kv::Store,
}

impl Store {
    /// Opens the bucket (created by the log topology).
    pub async fn open(js: &jetstream::Context) -> Result<Self, StoreError> {
        Ok(Self {
            kv: js.get_key_value(KV_TELEGRAM).await.map_err(fail)?,
        })
    }

    async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        match self.kv.get(key).await.map_err(fail)? {
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(fail),
            None => Ok(None),
        }
    }

    async fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(fail)?;
        self.kv.put(key, bytes.into()).await.map_err(fail)?;
        Ok(())
    }

    /// Where `user` is in Telegram, if they ever wrote there.
    pub async fn current(&self, user: UserId) -> Result<Option<Current>, StoreError> {
        self.get(&format!("current.{user}")).await
    }

    /// Records where `user` is.
    pub async fn set_current(&self, user: UserId, current: &Current) -> Result<(), StoreError> {
        self.put(&format!("current.{user}"), current).await
    }

    /// The record of a run asked from Telegram.
    pub async fn run(&self, run: RunId) -> Result<Option<RunRecord>, StoreError> {
        self.get(&format!("run.{run}")).await
    }

    /// Records a run asked from Telegram.
    pub async fn put_run(&self, run: RunId, record: &RunRecord) -> Result<(), StoreError> {
        self.put(&format!("run.{run}"), record).await
    }

    /// Rewrites a run's record if it is still there (its answer not delivered yet): whether it
    /// was.
    pub async fn update_run(&self, run: RunId, record: &RunRecord) -> Result<bool, StoreError> {
        let key = format!("run.{run}");
        let Some(entry) = self.kv.entry(&key).await.map_err(fail)? else {
            return Ok(false);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(false);
        }
        let bytes = serde_json::to_vec(record).map_err(fail)?;
        Ok(self
            .kv
            .update(&key, bytes.into(), entry.revision)
            .await
            .is_ok())
    }

    /// Forgets a run whose answer was delivered.
    pub async fn remove_run(&self, run: RunId) -> Result<(), StoreError> {
        self.kv.purge(format!("run.{run}")).await.map_err(fail)
    }

    /// Gives the poller lease up if `holder` has it (at shutdown: another replica takes over at
    /// once instead of after the lease goes stale).
    pub async fn release(&self, holder: &str) -> Result<(), StoreError> {
        let Some(entry) = self.kv.entry("poller").await.map_err(fail)? else {
            return Ok(());
        };
        let ours = serde_json::from_slice::<Poller>(&entry.value)
            .is_ok_and(|poller| poller.holder == holder);
        if ours && entry.operation == kv::Operation::Put {
            self.kv
                .purge_expect_revision("poller", Some(entry.revision))
                .await
                .map_err(fail)?;
        }
        Ok(())
    }

    /// Whether `holder` polls Telegram now: it did and says so again, or nobody said so for
    /// `stale_ms` and it takes over.
    pub async fn lead(&self, holder: &str, stale_ms: i64) -> Result<bool, StoreError> {
        let now = chrono::Utc::now().timestamp_millis();
        let body = serde_json::to_vec(&Poller {
            holder: holder.to_owned(),
            beat_ms: now,
        })
        .map_err(fail)?;
        let Some(entry) = self.kv.entry("poller").await.map_err(fail)? else {
            return Ok(self.kv.create("poller", body.into()).await.is_ok());
        };
        let current = serde_json::from_slice::<Poller>(&entry.value).ok();
        let ours = current.as_ref().is_some_and(|p| p.holder == holder);
        let stale = current.is_none_or(|p| now - p.beat_ms > stale_ms)
            || entry.operation != kv::Operation::Put;
        if !ours && !stale {
            return Ok(false);
        }
        Ok(self
            .kv
            .update("poller", body.into(), entry.revision)
            .await
            .is_ok())
    }
}
