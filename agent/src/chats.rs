//! [`Chats`]: per chat id, its history, its running run (at most one) and its event counter;
//! histories optionally persisted as JSON (`<state_dir>/history/<hex chat id>.json`) so a
//! restart keeps them.
//!
//! The lock is a std mutex held only for map updates, never across an await.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::events::EventIds;
use crate::model::Message;

/// The chat registry.
pub struct Chats {
    inner: Mutex<HashMap<String, ChatState>>,
    store: Option<HistoryStore>,
    shutdown: CancellationToken,
}

#[derive(Default)]
struct ChatState {
    history: Vec<Message>,
    running: Option<CancellationToken>,
    ids: EventIds,
    /// Bumped by a clear, so a run that started before it does not write its turn back.
    generation: u64,
}

/// The right to run once on a chat, with what the run needs.
pub struct RunTicket {
    /// The chat.
    pub chat_id: String,
    /// The history when the run started.
    pub history: Vec<Message>,
    /// Fires on cancel, on clear, and on shutdown.
    pub cancel: CancellationToken,
    /// The chat's event numbering.
    pub ids: EventIds,
    generation: u64,
}

impl Chats {
    /// An empty registry, or one loaded from `state_dir` if given. Runs are cancelled when
    /// `shutdown` fires.
    pub async fn open(state_dir: Option<&Path>, shutdown: CancellationToken) -> io::Result<Self> {
        let mut chats = HashMap::new();
        let store = match state_dir {
            Some(dir) => {
                let store = HistoryStore::open(dir).await?;
                for (chat_id, history) in store.load_all().await? {
                    chats.insert(
                        chat_id,
                        ChatState {
                            history,
                            ..ChatState::default()
                        },
                    );
                }
                Some(store)
            }
            None => None,
        };
        Ok(Self {
            inner: Mutex::new(chats),
            store,
            shutdown,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, ChatState>> {
        // A panic while holding this lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a run, or `None` if one is already running for this chat.
    pub fn begin(&self, chat_id: &str) -> Option<RunTicket> {
        self.begin_from(chat_id, None)
    }

    /// Starts a run, the chat's history replaced by `history` first if given (the platform hands
    /// over the history of a conversation this runtime has never seen: a fork); `None` if a run
    /// is already running for this chat.
    pub fn begin_from(&self, chat_id: &str, history: Option<Vec<Message>>) -> Option<RunTicket> {
        let mut chats = self.lock();
        let chat = chats.entry(chat_id.to_owned()).or_default();
        if chat.running.is_some() {
            return None;
        }
        if let Some(history) = history {
            chat.history = history;
        }
        let cancel = self.shutdown.child_token();
        chat.running = Some(cancel.clone());
        Some(RunTicket {
            chat_id: chat_id.to_owned(),
            history: chat.history.clone(),
            cancel,
            ids: chat.ids.clone(),
            generation: chat.generation,
        })
    }

    /// Ends a run, appending its messages to the history unless the chat was cleared meanwhile.
    pub async fn finish(&self, ticket: RunTicket, appended: Vec<Message>) {
        let snapshot = {
            let mut chats = self.lock();
            let chat = chats.entry(ticket.chat_id.clone()).or_default();
            chat.running = None;
            if chat.generation != ticket.generation {
                return;
            }
            chat.history.extend(appended);
            chat.history.clone()
        };
        if let Some(store) = &self.store
            && let Err(err) = store.save(&ticket.chat_id, &snapshot).await
        {
            tracing::warn!(chat_id = %ticket.chat_id, error = %err, "could not persist history");
        }
    }

    /// Cancels the chat's running run; whether there was one.
    pub fn cancel(&self, chat_id: &str) -> bool {
        match self.lock().get(chat_id).and_then(|c| c.running.as_ref()) {
            Some(cancel) => {
                cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Clears the history (and cancels a running run); how many messages were dropped and
    /// whether a run was cancelled.
    pub async fn clear(&self, chat_id: &str) -> (usize, bool) {
        let (dropped, cancelled) = {
            let mut chats = self.lock();
            let Some(chat) = chats.get_mut(chat_id) else {
                return (0, false);
            };
            chat.generation += 1;
            let cancelled = chat.running.as_ref().inspect(|c| c.cancel()).is_some();
            (std::mem::take(&mut chat.history).len(), cancelled)
        };
        if let Some(store) = &self.store
            && let Err(err) = store.remove(chat_id).await
        {
            tracing::warn!(chat_id, error = %err, "could not remove persisted history");
        }
        (dropped, cancelled)
    }

    /// The chat's history (for tests and diagnostics).
    pub fn history(&self, chat_id: &str) -> Vec<Message> {
        self.lock()
            .get(chat_id)
            .map(|c| c.history.clone())
            .unwrap_or_default()
    }

    /// How many runs are going.
    pub fn active_runs(&self) -> usize {
        self.lock().values().filter(|c| c.running.is_some()).count()
    }
}

/// The persisted form of one chat.
#[derive(Serialize, Deserialize)]
struct StoredChat {
    chat_id: String,
    messages: Vec<Message>,
}

struct HistoryStore {
    dir: PathBuf,
}

impl HistoryStore {
    async fn open(state_dir: &Path) -> io::Result<Self> {
        let dir = state_dir.join("history");
        tokio::fs::create_dir_all(&dir).await?;
        Ok(Self { dir })
    }

    /// Chat ids are arbitrary strings (`user:agent`); hex makes them safe file names.
    fn path(&self, chat_id: &str) -> PathBuf {
        self.dir.join(format!("{}.json", hex::encode(chat_id)))
    }

    async fn load_all(&self) -> io::Result<Vec<(String, Vec<Message>)>> {
        let mut loaded = Vec::new();
        let mut entries = tokio::fs::read_dir(&self.dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let parsed = tokio::fs::read(&path)
                .await
                .ok()
                .and_then(|bytes| serde_json::from_slice::<StoredChat>(&bytes).ok());
            match parsed {
                Some(chat) => loaded.push((chat.chat_id, chat.messages)),
                None => tracing::warn!(path = %path.display(), "skipping unreadable history"),
            }
        }
        Ok(loaded)
    }

    async fn save(&self, chat_id: &str, messages: &[Message]) -> io::Result<()> {
        let stored = StoredChat {
            chat_id: chat_id.to_owned(),
            messages: messages.to_vec(),
        };
        let json = serde_json::to_vec(&stored).map_err(io::Error::other)?;
        crate::tools::fs::write_atomically(&self.path(chat_id), &json)
            .await
            .map(|_| ())
    }

    async fn remove(&self, chat_id: &str) -> io::Result<()> {
        match tokio::fs::remove_file(self.path(chat_id)).await {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> Message {
        Message::User {
            content: text.into(),
        }
    }

    #[tokio::test]
    async fn one_run_at_a_time_and_histories_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let chats = Chats::open(Some(dir.path()), CancellationToken::new())
            .await
            .expect("open");
        let ticket = chats.begin("u:a").expect("first run");
        assert!(chats.begin("u:a").is_none(), "second run refused");
        assert!(chats.begin("u:b").is_some(), "other chats are independent");
        chats.finish(ticket, vec![user("hi")]).await;
        assert!(chats.begin("u:a").is_some());

        let reopened = Chats::open(Some(dir.path()), CancellationToken::new())
            .await
            .expect("reopen");
        assert_eq!(reopened.history("u:a"), [user("hi")]);
        assert_eq!(reopened.clear("u:a").await, (1, false));
        let again = Chats::open(Some(dir.path()), CancellationToken::new())
            .await
            .expect("reopen");
        assert!(again.history("u:a").is_empty());
    }

    #[tokio::test]
    async fn a_handed_over_history_replaces_the_kept_one_and_the_run_goes_on_from_it() {
        let chats = Chats::open(None, CancellationToken::new())
            .await
            .expect("open");
        let ticket = chats.begin("c").expect("run");
        chats.finish(ticket, vec![user("kept")]).await;
        let ticket = chats
            .begin_from("c", Some(vec![user("handed over")]))
            .expect("run");
        assert_eq!(ticket.history, [user("handed over")]);
        chats.finish(ticket, vec![user("next")]).await;
        assert_eq!(chats.history("c"), [user("handed over"), user("next")]);
    }

    #[tokio::test]
    async fn a_clear_during_a_run_cancels_it_and_the_run_writes_nothing_back() {
        let chats = Chats::open(None, CancellationToken::new())
            .await
            .expect("open");
        let ticket = chats.begin("c").expect("run");
        let cancel = ticket.cancel.clone();
        assert_eq!(chats.clear("c").await, (0, true));
        assert!(cancel.is_cancelled());
        chats.finish(ticket, vec![user("late")]).await;
        assert!(chats.history("c").is_empty());
    }
}
