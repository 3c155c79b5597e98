//! [`TestTelegram`]: a fake Telegram Bot API server speaking the real HTTP wire protocol, so a
//! bot is tested end to end without Telegram.
//!
//! - Bot methods at `POST`/`GET` `/bot<TOKEN>/<method>` (method names in any case), parameters
//!   as JSON, url-encoded form, query string or `multipart/form-data`; answers
//!   `{"ok":true,"result":...}` or `{"ok":false,"error_code":N,"description":...}` with the
//!   matching HTTP status and Telegram's own error descriptions. Files download from
//!   `GET /file/bot<TOKEN>/<file_path>`.
//! - Users are simulated from the test ([`TestTelegram::send_text`], [`send_document`],
//!   [`press_button`], ...): each action makes an update, delivered by `getUpdates` (long poll,
//!   offsets, 409 on a competing poll) or POSTed to a webhook (secret header, retried until the
//!   receiver answers 2xx).
//! - Text is parsed as Telegram does: `MarkdownV2` strictly (an unescaped reserved character is
//!   a 400), `HTML`, legacy `Markdown`. Tests read what a user would see
//!   ([`BotMessage::text`]), the edit history, drafts, callback answers and every call.
//! - Failures on demand: [`TestTelegram::fail_next`] (429 with `retry_after`, 502, any error)
//!   and [`TestTelegram::set_unreachable`].
//!
//! ```no_run
//! use std::time::Duration;
//! use warren_testkit::telegram::{TestTelegram, TgUser};
//!
//! # async fn example() {
//! let telegram = TestTelegram::start().await;
//! // point the bot at telegram.api_url() with telegram.token(), start it, then:
//! let alice = TgUser::new(1001, "Alice");
//! telegram.send_text(&alice, "/start");
//! let reply = telegram
//!     .wait_for_message(alice.id, |m| m.text.contains("Welcome"), Duration::from_secs(5))
//!     .await;
//! assert!(reply.reply_markup.is_none());
//! # }
//! ```
//!
//! [`send_document`]: TestTelegram::send_document
//! [`press_button`]: TestTelegram::press_button

mod http;
mod markup;
mod methods;
mod state;
mod updates;
mod waiting;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use markup::utf16_len;
use state::{Shared, State, user_json};

/// A fake Telegram Bot API on `127.0.0.1:<free port>`; stops when dropped.
pub struct TestTelegram {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

/// A simulated Telegram user.
#[derive(Clone, Debug, PartialEq)]
pub struct TgUser {
    /// The user id (also the id of their private chat with the bot).
    pub id: i64,
    /// The first name shown in the chat.
    pub first_name: String,
    /// The `@username`, without the `@`.
    pub username: Option<String>,
}

impl TgUser {
    /// A user without a username.
    pub fn new(id: i64, first_name: &str) -> Self {
        Self {
            id,
            first_name: first_name.to_owned(),
            username: None,
        }
    }

    /// The same user with a `@username` (given without the `@`).
    pub fn with_username(mut self, username: &str) -> Self {
        self.username = Some(username.to_owned());
        self
    }
}

/// What a simulated user action created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    /// The update that carries it.
    pub update_id: i64,
    /// The message's id in its chat.
    pub message_id: i64,
    /// The chat it is in.
    pub chat_id: i64,
}

/// A failure to answer with instead of handling a call ([`TestTelegram::fail_next`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// 429 `"Too Many Requests: retry after N"` with `parameters.retry_after`.
    TooManyRequests {
        /// Seconds the client must wait.
        retry_after: u64,
    },
    /// 502 `"Bad Gateway"`.
    ServerError,
    /// Any error: `error_code` and `description` as given (e.g. 403
    /// `"Forbidden: bot was blocked by the user"`).
    Error {
        /// The HTTP status and `error_code`.
        code: u16,
        /// The `description`.
        description: String,
    },
}

/// A request the server answered.
#[derive(Clone, Debug)]
pub struct Call {
    /// The method as the Bot API spells it (`sendMessage`, whatever case the client used);
    /// unknown methods as requested; `"file"` for a file download.
    pub method: String,
    /// All parameters, typed (numbers, booleans, JSON fields parsed when sent as text); an
    /// uploaded file is `{"file_name", "size"}`. A download has `{"file_path"}`.
    pub params: Value,
    /// The HTTP status answered.
    pub status: u16,
    /// The JSON body answered (`{"size"}` for a successful download).
    pub response: Value,
    /// When the request arrived.
    pub at: Instant,
}

/// A message the bot sent, as it stands now.
#[derive(Clone, Debug, PartialEq)]
pub struct BotMessage {
    /// The chat it is in.
    pub chat_id: i64,
    /// Its id in the chat.
    pub message_id: i64,
    /// The text a user sees (markup and escapes removed), after the latest edit; empty for a
    /// document (see `caption`).
    pub text: String,
    /// The text exactly as the bot sent it (latest edit).
    pub raw_text: String,
    /// The `parse_mode` it was sent with (latest edit).
    pub parse_mode: Option<String>,
    /// The formatting entities of `text` (Bot API `MessageEntity` objects).
    pub entities: Vec<Value>,
    /// The rendered texts of earlier versions, oldest first (one per `editMessageText`).
    pub edits: Vec<String>,
    /// The current `reply_markup` (an empty inline keyboard counts as none).
    pub reply_markup: Option<Value>,
    /// Whether it was deleted.
    pub deleted: bool,
    /// A document: its file name and exact bytes.
    pub document: Option<(String, Vec<u8>)>,
    /// A document's rendered caption.
    pub caption: Option<String>,
}

impl BotMessage {
    /// The `callback_data` of every inline keyboard button, row by row.
    pub fn button_data(&self) -> Vec<String> {
        let rows = self
            .reply_markup
            .as_ref()
            .and_then(|m| m.get("inline_keyboard"))
            .and_then(Value::as_array);
        rows.into_iter()
            .flatten()
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(|b| b.get("callback_data").and_then(Value::as_str))
            .map(str::to_owned)
            .collect()
    }
}

impl TestTelegram {
    /// Starts the server on a free port with a fresh token.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test telegram: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("test telegram: local addr");
        let stop = CancellationToken::new();
        let bot_id = 7_000_000_000 + i64::from(addr.port());
        let secret = uuid::Uuid::new_v4().simple().to_string();
        let shared = Arc::new(Shared {
            token: format!("{bot_id}:TEST-{secret}"),
            bot_id,
            bot_username: "warren_test_bot".to_owned(),
            state: Mutex::new(State::new()),
            changed: watch::channel(0).0,
            stop: stop.clone(),
        });
        let app = http::router(shared.clone());
        let until = stop.clone();
        tokio::spawn(async move {
            // Not graceful: a waiting long poll must not keep the server alive past the test.
            tokio::select! {
                _ = axum::serve(listener, app) => {}
                _ = until.cancelled() => {}
            }
        });
        tokio::spawn(updates::deliver(shared.clone()));
        Self { addr, shared, stop }
    }

    /// The API base: `http://127.0.0.1:PORT` (methods at `{api_url}/bot{token}/{method}`).
    pub fn api_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The one bot token accepted (`<bot_id>:TEST-<random>`); any other gets 401.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// The bot's user id (`getMe`).
    pub fn bot_id(&self) -> i64 {
        self.shared.bot_id
    }

    /// The bot's username, without the `@` (`getMe`).
    pub fn bot_username(&self) -> &str {
        &self.shared.bot_username
    }

    // ---- simulated users ----------------------------------------------------------------

    /// `from` writes `text` to the bot in their private chat; a leading `/command` gets a
    /// `bot_command` entity, as Telegram adds.
    pub fn send_text(&self, from: &TgUser, text: &str) -> Sent {
        self.user_text(from, None, text)
    }

    /// `from` writes `text` in the group `group_chat_id` (negative; `-100…` ids are
    /// supergroups), which the bot sees.
    pub fn send_text_in_group(&self, from: &TgUser, group_chat_id: i64, text: &str) -> Sent {
        self.user_text(from, Some(group_chat_id), text)
    }

    fn user_text(&self, from: &TgUser, group: Option<i64>, text: &str) -> Sent {
        let mut fields = json!({"text": text});
        if text.starts_with('/') {
            let command = text.split_whitespace().next().unwrap_or(text);
            fields["entities"] =
                json!([{"type": "bot_command", "offset": 0, "length": utf16_len(command)}]);
        }
        let sent = {
            let mut state = self.shared.state();
            let chat_id = match group {
                Some(id) => state.group_chat(id).json["id"].as_i64(),
                None => state.private_chat(from).json["id"].as_i64(),
            };
            let chat_id = chat_id.expect("test telegram: chat id");
            state.user_message(chat_id, from, fields)
        };
        self.shared.bump();
        sent
    }

    /// `from` sends the bot a file in their private chat; `getFile` and the download then
    /// return exactly `bytes`.
    pub fn send_document(
        &self,
        from: &TgUser,
        file_name: &str,
        bytes: Vec<u8>,
        caption: Option<&str>,
    ) -> Sent {
        let sent = {
            let mut state = self.shared.state();
            let file_id = state.store_file(file_name, None, bytes);
            let document = state.files[&file_id].document();
            let mut fields = json!({"document": document});
            if let Some(caption) = caption {
                fields["caption"] = json!(caption);
            }
            state.private_chat(from);
            state.user_message(from.id, from, fields)
        };
        self.shared.bump();
        sent
    }

    /// `from` edits their earlier text message: an `edited_message` update.
    pub fn edit_text(&self, from: &TgUser, chat_id: i64, message_id: i64, text: &str) -> Sent {
        let update_id = {
            let mut state = self.shared.state();
            let message = state
                .chats
                .get_mut(&chat_id)
                .and_then(|c| c.messages.get_mut(&message_id))
                .filter(|m| !m.deleted && m.json["from"]["id"].as_i64() == Some(from.id))
                .unwrap_or_else(|| {
                    panic!(
                        "test telegram: {} wrote no live message {message_id} in chat {chat_id}",
                        from.first_name
                    )
                });
            message.json["text"] = json!(text);
            message.json["edit_date"] = json!(state::now());
            let json = message.json.clone();
            state.push_update("edited_message", json)
        };
        self.shared.bump();
        Sent {
            update_id,
            message_id,
            chat_id,
        }
    }

    /// `from` presses an inline button with `data` under the bot's message `message_id` in
    /// `chat_id`: a `callback_query` update carrying that message. Returns the query id.
    pub fn press_button(&self, from: &TgUser, chat_id: i64, message_id: i64, data: &str) -> String {
        let query_id = {
            let mut state = self.shared.state();
            let message = state
                .chats
                .get(&chat_id)
                .and_then(|c| c.messages.get(&message_id))
                .filter(|m| m.bot.is_some() && !m.deleted)
                .map(|m| m.json.clone())
                .unwrap_or_else(|| {
                    panic!(
                        "test telegram: the bot has no live message {message_id} in chat {chat_id}"
                    )
                });
            let query_id = state.new_query_id();
            let query = json!({
                "id": query_id,
                "from": user_json(from),
                "message": message,
                "chat_instance": format!("{}", chat_id.wrapping_mul(7_919).unsigned_abs()),
                "data": data,
            });
            state.push_update("callback_query", query);
            query_id
        };
        self.shared.bump();
        query_id
    }

    /// Updates not yet confirmed by a getUpdates offset or delivered to the webhook.
    pub fn pending_updates(&self) -> usize {
        self.shared.state().pending.len()
    }

    /// Whether a getUpdates long poll is waiting for an update right now.
    pub fn is_polling(&self) -> bool {
        self.shared.state().waiting_poll.is_some()
    }

    // ---- faults -------------------------------------------------------------------------

    /// The next `times` calls of `method` (any case) answer `failure` instead of being handled.
    pub fn fail_next(&self, method: &str, times: usize, failure: Failure) {
        let mut state = self.shared.state();
        let queue = state
            .failures
            .entry(method.to_ascii_lowercase())
            .or_default();
        queue.extend(std::iter::repeat_n(failure, times));
    }

    /// While set, every request answers 502 `"Bad Gateway"` and the webhook gets nothing:
    /// Telegram is down.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.shared.state().unreachable = unreachable;
        self.shared.bump();
    }

    // ---- inspection ---------------------------------------------------------------------

    /// Every request answered, in the order answered (a long poll counts when it returns).
    pub fn calls(&self) -> Vec<Call> {
        self.shared.state().calls.clone()
    }

    /// The calls of `method` (any case).
    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        let state = self.shared.state();
        let calls = state.calls.iter();
        calls
            .filter(|c| c.method.eq_ignore_ascii_case(method))
            .cloned()
            .collect()
    }

    /// The messages the bot sent in `chat_id`, oldest first (deleted ones too, marked).
    pub fn messages(&self, chat_id: i64) -> Vec<BotMessage> {
        let state = self.shared.state();
        let Some(chat) = state.chats.get(&chat_id) else {
            return Vec::new();
        };
        chat.messages
            .values()
            .filter_map(|m| m.bot.clone())
            .collect()
    }

    /// The rendered texts of the drafts streamed to `chat_id`, in order.
    pub fn drafts(&self, chat_id: i64) -> Vec<String> {
        let state = self.shared.state();
        state
            .chats
            .get(&chat_id)
            .map(|c| c.drafts.clone())
            .unwrap_or_default()
    }

    /// Every `answerCallbackQuery` accepted: (query id, text).
    pub fn callback_answers(&self) -> Vec<(String, Option<String>)> {
        self.shared.state().callback_answers.clone()
    }

    /// The bot's command list (`setMyCommands`): (command, description).
    pub fn commands(&self) -> Vec<(String, String)> {
        self.shared.state().commands.clone()
    }

    /// Whether message `message_id` in `chat_id` (the bot's or a user's) was deleted.
    pub fn is_deleted(&self, chat_id: i64, message_id: i64) -> bool {
        let state = self.shared.state();
        state
            .chats
            .get(&chat_id)
            .and_then(|c| c.messages.get(&message_id))
            .is_some_and(|m| m.deleted)
    }

    /// The webhook url set, if any.
    pub fn webhook_url(&self) -> Option<String> {
        let state = self.shared.state();
        state.webhook.as_ref().map(|w| w.url.clone())
    }
}

impl Drop for TestTelegram {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
