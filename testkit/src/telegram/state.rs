//! What the fake Telegram remembers: chats and their messages, pending updates, files, callback
//! queries, the webhook, injected failures and every call.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{BotMessage, Call, Failure, Sent, TgUser};

/// The first update id handed out (real ids are large and arbitrary, never 0).
const FIRST_UPDATE_ID: i64 = 513_000_001;

pub(crate) struct Shared {
    pub(crate) token: String,
    pub(crate) bot_id: i64,
    pub(crate) bot_username: String,
    pub(crate) state: Mutex<State>,
    /// Bumped on every change: long polls, the webhook sender and test waiters watch it.
    pub(crate) changed: watch::Sender<u64>,
    pub(crate) stop: CancellationToken,
}

impl Shared {
    /// A test helper: a poisoned lock only means another test thread panicked already.
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wakes everyone watching for changes.
    pub(crate) fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The bot's `User` object.
    pub(crate) fn bot_user(&self) -> Value {
        json!({
            "id": self.bot_id,
            "is_bot": true,
            "first_name": "Warren Test Bot",
            "username": self.bot_username,
            "can_join_groups": true,
            "can_read_all_group_messages": false,
            "supports_inline_queries": false,
        })
    }
}

/// A pending update.
pub(crate) struct PendingUpdate {
    pub(crate) id: i64,
    /// `message`, `edited_message` or `callback_query`.
    pub(crate) kind: &'static str,
    pub(crate) json: Value,
}

pub(crate) struct Webhook {
    pub(crate) url: String,
    pub(crate) secret: Option<String>,
    pub(crate) last_error: Option<(i64, String)>,
}

pub(crate) struct ChatState {
    pub(crate) json: Value,
    pub(crate) private: bool,
    next_message_id: i64,
    pub(crate) messages: BTreeMap<i64, StoredMessage>,
    pub(crate) drafts: Vec<String>,
}

impl ChatState {
    pub(crate) fn next_message_id(&mut self) -> i64 {
        self.next_message_id += 1;
        self.next_message_id
    }
}

/// A message in a chat: its current Bot API JSON, and for the bot's own, the record tests read.
pub(crate) struct StoredMessage {
    pub(crate) json: Value,
    pub(crate) deleted: bool,
    pub(crate) bot: Option<BotMessage>,
}

pub(crate) struct StoredFile {
    pub(crate) file_id: String,
    pub(crate) file_unique_id: String,
    pub(crate) file_name: String,
    pub(crate) mime_type: String,
    pub(crate) bytes: Vec<u8>,
    pub(crate) path: Option<String>,
}

impl StoredFile {
    /// The `Document` object.
    pub(crate) fn document(&self) -> Value {
        json!({
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_name": self.file_name,
            "mime_type": self.mime_type,
            "file_size": self.bytes.len(),
        })
    }
}

#[derive(Default)]
pub(crate) struct State {
    next_update_id: i64,
    pub(crate) pending: VecDeque<PendingUpdate>,
    pub(crate) chats: BTreeMap<i64, ChatState>,
    pub(crate) files: HashMap<String, StoredFile>,
    file_count: u64,
    /// Callback query id → answered yet.
    pub(crate) queries: HashMap<String, bool>,
    query_count: u64,
    pub(crate) calls: Vec<Call>,
    pub(crate) failures: HashMap<String, VecDeque<Failure>>,
    pub(crate) unreachable: bool,
    pub(crate) webhook: Option<Webhook>,
    /// The update types last asked for (`None`: the default, everything simulated here).
    pub(crate) allowed_updates: Option<Vec<String>>,
    /// Bumped by each getUpdates: a waiting request that sees a newer one ends with 409.
    pub(crate) poll_seq: u64,
    /// The `poll_seq` of the getUpdates waiting for an update right now, if any.
    pub(crate) waiting_poll: Option<u64>,
    pub(crate) commands: Vec<(String, String)>,
    pub(crate) callback_answers: Vec<(String, Option<String>)>,
}

/// Unix seconds now.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

pub(crate) fn user_json(user: &TgUser) -> Value {
    let mut json = json!({"id": user.id, "is_bot": false, "first_name": user.first_name});
    if let Some(username) = &user.username {
        json["username"] = json!(username);
    }
    json["language_code"] = json!("en");
    json
}

/// A guess at a MIME type from a file name, as Telegram's clients send it.
pub(crate) fn mime_type(file_name: &str) -> &'static str {
    let extension = file_name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase());
    match extension.as_deref() {
        Some("txt" | "log") => "text/plain",
        Some("md") => "text/markdown",
        Some("csv") => "text/csv",
        Some("json") => "application/json",
        Some("pdf") => "application/pdf",
        Some("zip") => "application/zip",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("html" | "htm") => "text/html",
        _ => "application/octet-stream",
    }
}

impl State {
    pub(crate) fn new() -> Self {
        Self {
            next_update_id: FIRST_UPDATE_ID,
            ..Self::default()
        }
    }

    /// Queues an update and returns its id.
    pub(crate) fn push_update(&mut self, kind: &'static str, payload: Value) -> i64 {
        let id = self.next_update_id;
        self.next_update_id += 1;
        self.pending.push_back(PendingUpdate {
            id,
            kind,
            json: json!({"update_id": id, kind: payload}),
        });
        id
    }

    /// Forgets updates the client confirmed: below `offset`, or all but the last `-offset`.
    pub(crate) fn confirm(&mut self, offset: i64) {
        if offset > 0 {
            self.pending.retain(|u| u.id >= offset);
        } else if offset < 0 {
            let keep = offset.unsigned_abs() as usize;
            while self.pending.len() > keep {
                self.pending.pop_front();
            }
        }
    }

    /// Drops pending updates of a type the client did not ask for (Telegram never sends them).
    pub(crate) fn drop_unwanted(&mut self) {
        if let Some(allowed) = &self.allowed_updates {
            self.pending
                .retain(|u| allowed.iter().any(|kind| kind == u.kind));
        }
    }

    /// The private chat with `user`, created on first contact.
    pub(crate) fn private_chat(&mut self, user: &TgUser) -> &mut ChatState {
        self.chats.entry(user.id).or_insert_with(|| {
            let mut json = json!({"id": user.id, "type": "private", "first_name": user.first_name});
            if let Some(username) = &user.username {
                json["username"] = json!(username);
            }
            new_chat(json, true)
        })
    }

    /// A group chat (a supergroup for `-100…` ids), created on first contact.
    pub(crate) fn group_chat(&mut self, chat_id: i64) -> &mut ChatState {
        assert!(
            chat_id < 0,
            "test telegram: group chat ids are negative, got {chat_id}"
        );
        self.chats.entry(chat_id).or_insert_with(|| {
            let kind = if chat_id <= -1_000_000_000_000 {
                "supergroup"
            } else {
                "group"
            };
            let title = format!("Test group {}", chat_id.unsigned_abs());
            new_chat(json!({"id": chat_id, "type": kind, "title": title}), false)
        })
    }

    /// Stores a user's message in `chat_id` (which must exist) and queues its update.
    pub(crate) fn user_message(&mut self, chat_id: i64, from: &TgUser, fields: Value) -> Sent {
        let chat = self
            .chats
            .get_mut(&chat_id)
            .expect("test telegram: chat exists");
        let message_id = chat.next_message_id();
        let mut json = json!({
            "message_id": message_id,
            "from": user_json(from),
            "chat": chat.json,
            "date": now(),
        });
        merge(&mut json, fields);
        chat.messages.insert(
            message_id,
            StoredMessage {
                json: json.clone(),
                deleted: false,
                bot: None,
            },
        );
        let update_id = self.push_update("message", json);
        Sent {
            update_id,
            message_id,
            chat_id,
        }
    }

    /// Stores bytes as a new file and returns its file id.
    pub(crate) fn store_file(
        &mut self,
        file_name: &str,
        mime: Option<&str>,
        bytes: Vec<u8>,
    ) -> String {
        self.file_count += 1;
        let n = self.file_count;
        let file_id = format!("BQACAgIAAxkBAAI{n:04}{}", uuid::Uuid::new_v4().simple());
        let file_unique_id = format!(
            "AgAD{n:04}{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let file = StoredFile {
            file_id: file_id.clone(),
            file_unique_id,
            file_name: file_name.to_owned(),
            mime_type: mime.unwrap_or_else(|| mime_type(file_name)).to_owned(),
            bytes,
            path: None,
        };
        self.files.insert(file_id.clone(), file);
        file_id
    }

    /// The download path of a file, assigned on its first getFile (`documents/file_<n>.<ext>`).
    pub(crate) fn file_path(&mut self, file_id: &str) -> Option<String> {
        let count = self.files.values().filter(|f| f.path.is_some()).count();
        let file = self.files.get_mut(file_id)?;
        let path = file
            .path
            .get_or_insert_with(|| match file.file_name.rsplit_once('.') {
                Some((_, extension)) => format!("documents/file_{count}.{extension}"),
                None => format!("documents/file_{count}"),
            });
        Some(path.clone())
    }

    /// A fresh callback query id (numeric, like Telegram's).
    pub(crate) fn new_query_id(&mut self) -> String {
        self.query_count += 1;
        let id = (4_611_686_018_427_387_904u64 + self.query_count * 7919).to_string();
        self.queries.insert(id.clone(), false);
        id
    }

    /// The failure injected for the next call of `method` (lowercase), if any.
    pub(crate) fn take_failure(&mut self, method: &str) -> Option<Failure> {
        let queue = self.failures.get_mut(method)?;
        let failure = queue.pop_front();
        if queue.is_empty() {
            self.failures.remove(method);
        }
        failure
    }
}

fn new_chat(json: Value, private: bool) -> ChatState {
    ChatState {
        json,
        private,
        next_message_id: 0,
        messages: BTreeMap::new(),
        drafts: Vec::new(),
    }
}

/// Copies `fields`' keys into `target` (both objects).
pub(crate) fn merge(target: &mut Value, fields: Value) {
    if let (Some(target), Value::Object(fields)) = (target.as_object_mut(), fields) {
        target.extend(fields);
    }
}
