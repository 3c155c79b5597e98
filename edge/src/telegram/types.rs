//! The Bot API's objects, as far as the bridge reads them (unknown fields are ignored, as the
//! API adds fields without notice).

use serde::{Deserialize, Serialize};

/// An incoming update.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Update {
    /// Its id; ids increase, and the poller confirms them by the next `offset`.
    pub update_id: i64,
    /// A new message.
    #[serde(default)]
    pub message: Option<Message>,
    /// A button press on one of the bot's messages.
    #[serde(default)]
    pub callback_query: Option<CallbackQuery>,
}

/// A message.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Message {
    /// Its id in its chat.
    pub message_id: i64,
    /// Who sent it (absent in channels).
    #[serde(default)]
    pub from: Option<User>,
    /// Where.
    pub chat: Chat,
    /// Its text.
    #[serde(default)]
    pub text: Option<String>,
    /// A file sent as a document.
    #[serde(default)]
    pub document: Option<Document>,
    /// The caption of a document.
    #[serde(default)]
    pub caption: Option<String>,
}

/// A Telegram user or bot.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct User {
    /// Their id.
    pub id: i64,
    /// A bot?
    #[serde(default)]
    pub is_bot: bool,
    /// First name.
    #[serde(default)]
    pub first_name: String,
    /// Last name.
    #[serde(default)]
    pub last_name: Option<String>,
    /// `@username`, without the `@`.
    #[serde(default)]
    pub username: Option<String>,
}

impl User {
    /// The name to show.
    pub fn display_name(&self) -> String {
        match &self.last_name {
            Some(last) if !last.is_empty() => format!("{} {last}", self.first_name),
            _ => self.first_name.clone(),
        }
    }
}

/// A chat.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Chat {
    /// Its id (a private chat's is the user's).
    pub id: i64,
    /// `private`, `group`, `supergroup` or `channel`.
    #[serde(rename = "type")]
    pub kind: String,
}

impl Chat {
    /// A one-to-one chat with a user.
    pub fn is_private(&self) -> bool {
        self.kind == "private"
    }
}

/// A file sent as a document.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Document {
    /// Its id, for `getFile`.
    pub file_id: String,
    /// Its name as the sender gave it.
    #[serde(default)]
    pub file_name: Option<String>,
    /// Its size in bytes.
    #[serde(default)]
    pub file_size: Option<u64>,
}

/// A button press.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct CallbackQuery {
    /// Its id, for `answerCallbackQuery`.
    pub id: String,
    /// Who pressed.
    pub from: User,
    /// The message the button was on.
    #[serde(default)]
    pub message: Option<Message>,
    /// The button's data.
    #[serde(default)]
    pub data: Option<String>,
}

/// A file ready to download.
#[derive(Clone, Debug, Deserialize)]
pub struct File {
    /// Where to download it from (`/file/bot<token>/<file_path>`).
    #[serde(default)]
    pub file_path: Option<String>,
    /// Its size in bytes.
    #[serde(default)]
    pub file_size: Option<u64>,
}
