//! The bot methods that act on chats, messages, callback queries, commands and files, with the
//! errors Telegram answers when a call is wrong.

use serde_json::{Value, json};

use super::BotMessage;
use super::http::{Answer, Outcome, Params};
use super::markup::{ParseMode, Rendered, render, utf16_len};
use super::state::{ChatState, Shared, State, StoredMessage, now};

/// Message text limit, in UTF-16 code units after entity parsing.
const MAX_TEXT: usize = 4096;
/// Caption limit, likewise.
const MAX_CAPTION: usize = 1024;
/// Upload limit for bots.
const MAX_UPLOAD: usize = 50 * 1024 * 1024;
/// Download limit for bots (getFile refuses bigger files).
const MAX_DOWNLOAD: usize = 20 * 1024 * 1024;

const NOT_MODIFIED: &str = "message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message";

const CHAT_ACTIONS: &[&str] = &[
    "typing",
    "upload_photo",
    "record_video",
    "upload_video",
    "record_voice",
    "upload_voice",
    "upload_document",
    "choose_sticker",
    "find_location",
    "record_video_note",
    "upload_video_note",
];

fn bad(what: impl std::fmt::Display) -> Outcome {
    Outcome::bad_request(what)
}

fn chat_id(p: &Params) -> Result<i64, Outcome> {
    if p.get("chat_id").is_none() {
        return Err(bad("chat_id is empty"));
    }
    p.int("chat_id").ok_or_else(|| bad("chat not found"))
}

fn message_id(p: &Params) -> Result<i64, Outcome> {
    p.int("message_id")
        .ok_or_else(|| bad("message identifier is not specified"))
}

fn chat(state: &mut State, chat_id: i64) -> Result<&mut ChatState, Outcome> {
    state
        .chats
        .get_mut(&chat_id)
        .ok_or_else(|| bad("chat not found"))
}

/// A text (or caption) parsed in the request's `parse_mode`: (raw, rendered, parse mode).
fn formatted(
    p: &Params,
    field: &str,
    limit: usize,
    empty_allowed: bool,
) -> Result<(String, Rendered, Option<String>), Outcome> {
    let raw = p.string(field).unwrap_or_default();
    let mode_name = p.string("parse_mode").filter(|m| !m.is_empty());
    let mode =
        ParseMode::parse(mode_name.as_deref()).map_err(|()| bad("unsupported parse_mode"))?;
    let rendered = render(&raw, mode).map_err(|e| bad(format!("can't parse entities: {e}")))?;
    if !empty_allowed && rendered.text.trim().is_empty() {
        return Err(bad("message text is empty"));
    }
    if utf16_len(&rendered.text) > limit {
        return Err(bad(if limit == MAX_CAPTION {
            "message caption is too long"
        } else {
            "message is too long"
        }));
    }
    Ok((raw, rendered, mode_name))
}

/// The `reply_markup` parameter, checked as Telegram does; an empty inline keyboard is none.
fn reply_markup(p: &Params) -> Result<Option<Value>, Outcome> {
    let Some(markup) = p.get("reply_markup") else {
        return Ok(None);
    };
    if !markup.is_object() {
        return Err(bad("can't parse reply keyboard markup JSON object"));
    }
    let Some(keyboard) = markup.get("inline_keyboard") else {
        return Ok(Some(markup.clone()));
    };
    let Some(rows) = keyboard.as_array() else {
        return Err(bad(
            "field \"inline_keyboard\" of the InlineKeyboardMarkup must be an Array",
        ));
    };
    let mut buttons = 0;
    for row in rows {
        let Some(row) = row.as_array() else {
            return Err(bad(
                "field \"inline_keyboard\" of the InlineKeyboardMarkup must be an Array of Arrays",
            ));
        };
        for button in row {
            buttons += 1;
            if !button.get("text").is_some_and(Value::is_string) {
                return Err(bad(
                    "can't parse inline keyboard button: Field \"text\" must be of type String",
                ));
            }
            if let Some(data) = button.get("callback_data") {
                let size = data.as_str().map_or(0, str::len);
                if !(1..=64).contains(&size) {
                    return Err(bad("BUTTON_DATA_INVALID"));
                }
            } else if button.as_object().is_some_and(|b| b.len() < 2) {
                return Err(bad(
                    "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard",
                ));
            }
        }
    }
    Ok((buttons > 0).then(|| markup.clone()))
}

/// Sets or removes `key` in a message object.
fn set_field(json: &mut Value, key: &str, value: Option<Value>) {
    if let Some(object) = json.as_object_mut() {
        match value {
            Some(value) => object.insert(key.to_owned(), value),
            None => object.remove(key),
        };
    }
}

fn entities(rendered: &Rendered) -> Option<Value> {
    (!rendered.entities.is_empty()).then(|| json!(rendered.entities))
}

/// `sendMessage`.
pub(crate) fn send_message(shared: &Shared, p: &Params) -> Answer {
    let chat_id = chat_id(p)?;
    let (raw, rendered, parse_mode) = formatted(p, "text", MAX_TEXT, false)?;
    let markup = reply_markup(p)?;
    let reply_to = p
        .get("reply_parameters")
        .and_then(|r| r.get("message_id"))
        .and_then(Value::as_i64)
        .or_else(|| p.int("reply_to_message_id"));
    let may_lose_reply = p
        .get("reply_parameters")
        .and_then(|r| r.get("allow_sending_without_reply"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let bot_user = shared.bot_user();
    let mut state = shared.state();
    let chat = chat(&mut state, chat_id)?;
    let replied = match reply_to {
        None => None,
        Some(id) => match chat.messages.get(&id).filter(|m| !m.deleted) {
            Some(message) => Some(message.json.clone()),
            None if may_lose_reply => None,
            None => return Err(bad("message to be replied not found")),
        },
    };
    let message_id = chat.next_message_id();
    let mut json = json!({
        "message_id": message_id,
        "from": bot_user,
        "chat": chat.json,
        "date": now(),
        "text": rendered.text,
    });
    set_field(&mut json, "entities", entities(&rendered));
    set_field(&mut json, "reply_markup", markup.clone());
    set_field(&mut json, "reply_to_message", replied);
    let record = BotMessage {
        chat_id,
        message_id,
        text: rendered.text,
        raw_text: raw,
        parse_mode,
        entities: rendered.entities,
        edits: Vec::new(),
        reply_markup: markup,
        deleted: false,
        document: None,
        caption: None,
    };
    chat.messages.insert(
        message_id,
        StoredMessage {
            json: json.clone(),
            deleted: false,
            bot: Some(record),
        },
    );
    Ok(json)
}

/// The bot's own live message `message_id` in `chat_id`, for editing.
fn editable(
    state: &mut State,
    chat_id: i64,
    message_id: i64,
) -> Result<&mut StoredMessage, Outcome> {
    let stored = chat(state, chat_id)?
        .messages
        .get_mut(&message_id)
        .filter(|m| !m.deleted)
        .ok_or_else(|| bad("message to edit not found"))?;
    if stored.bot.is_none() {
        return Err(bad("message can't be edited"));
    }
    Ok(stored)
}

/// `editMessageText`: without `reply_markup` the inline keyboard goes away, as in Telegram.
pub(crate) fn edit_message_text(shared: &Shared, p: &Params) -> Answer {
    let chat_id = chat_id(p)?;
    let message_id = message_id(p)?;
    let (raw, rendered, parse_mode) = formatted(p, "text", MAX_TEXT, false)?;
    let markup = reply_markup(p)?;
    let mut state = shared.state();
    let stored = editable(&mut state, chat_id, message_id)?;
    let bot = stored.bot.as_mut().expect("editable: the bot's message");
    if bot.document.is_some() {
        return Err(bad("there is no text in the message to edit"));
    }
    if bot.text == rendered.text && bot.entities == rendered.entities && bot.reply_markup == markup
    {
        return Err(bad(NOT_MODIFIED));
    }
    let previous = std::mem::replace(&mut bot.text, rendered.text.clone());
    bot.edits.push(previous);
    bot.raw_text = raw;
    bot.parse_mode = parse_mode;
    bot.entities = rendered.entities.clone();
    bot.reply_markup = markup.clone();
    set_field(&mut stored.json, "text", Some(json!(rendered.text)));
    set_field(&mut stored.json, "entities", entities(&rendered));
    set_field(&mut stored.json, "reply_markup", markup);
    set_field(&mut stored.json, "edit_date", Some(json!(now())));
    Ok(stored.json.clone())
}

/// `editMessageReplyMarkup`.
pub(crate) fn edit_message_reply_markup(shared: &Shared, p: &Params) -> Answer {
    let chat_id = chat_id(p)?;
    let message_id = message_id(p)?;
    let markup = reply_markup(p)?;
    let mut state = shared.state();
    let stored = editable(&mut state, chat_id, message_id)?;
    let bot = stored.bot.as_mut().expect("editable: the bot's message");
    if bot.reply_markup == markup {
        return Err(bad(NOT_MODIFIED));
    }
    bot.reply_markup = markup.clone();
    set_field(&mut stored.json, "reply_markup", markup);
    set_field(&mut stored.json, "edit_date", Some(json!(now())));
    Ok(stored.json.clone())
}

/// `sendMessageDraft` (Bot API 9.3): private chats only; an empty text is a placeholder.
pub(crate) fn send_message_draft(shared: &Shared, p: &Params) -> Answer {
    let chat_id = chat_id(p)?;
    {
        let mut state = shared.state();
        if !chat(&mut state, chat_id)?.private {
            return Err(bad("method is available only for private chats"));
        }
    }
    if p.int("draft_id").unwrap_or(0) == 0 {
        return Err(bad("draft_id must be non-zero"));
    }
    let (_, rendered, _) = formatted(p, "text", MAX_TEXT, true)?;
    chat(&mut shared.state(), chat_id)?
        .drafts
        .push(rendered.text);
    Ok(json!(true))
}

/// `deleteMessage`: the bot's messages and users' alike.
pub(crate) fn delete_message(shared: &Shared, p: &Params) -> Answer {
    let chat_id = chat_id(p)?;
    let message_id = message_id(p)?;
    let mut state = shared.state();
    let stored = chat(&mut state, chat_id)?
        .messages
        .get_mut(&message_id)
        .filter(|m| !m.deleted)
        .ok_or_else(|| bad("message to delete not found"))?;
    stored.deleted = true;
    if let Some(bot) = stored.bot.as_mut() {
        bot.deleted = true;
    }
    Ok(json!(true))
}

/// `answerCallbackQuery`: once per query.
pub(crate) fn answer_callback_query(shared: &Shared, p: &Params) -> Answer {
    let id = p.string("callback_query_id").unwrap_or_default();
    let mut state = shared.state();
    match state.queries.get_mut(&id) {
        Some(answered) if !*answered => *answered = true,
        _ => {
            return Err(bad(
                "query is too old and response timeout expired or query ID is invalid",
            ));
        }
    }
    state.callback_answers.push((id, p.string("text")));
    Ok(json!(true))
}

/// `sendChatAction`.
pub(crate) fn send_chat_action(shared: &Shared, p: &Params) -> Answer {
    let chat_id = chat_id(p)?;
    chat(&mut shared.state(), chat_id)?;
    let action = p.string("action").unwrap_or_default();
    if !CHAT_ACTIONS.contains(&action.as_str()) {
        return Err(bad("wrong parameter action in request"));
    }
    Ok(json!(true))
}

/// `setMyCommands`: replaces the list (scopes and languages are not kept apart).
pub(crate) fn set_my_commands(shared: &Shared, p: &Params) -> Answer {
    let Some(list) = p.get("commands").and_then(Value::as_array) else {
        return Err(bad("can't parse commands JSON object"));
    };
    let mut commands = Vec::new();
    for entry in list {
        let command = entry
            .get("command")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let description = entry
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let valid_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
        if command.is_empty() || command.len() > 32 || !command.chars().all(valid_char) {
            return Err(bad("BOT_COMMAND_INVALID"));
        }
        if description.trim().is_empty() || description.chars().count() > 256 {
            return Err(bad("BOT_COMMAND_DESCRIPTION_INVALID"));
        }
        commands.push((command.to_owned(), description.to_owned()));
    }
    shared.state().commands = commands;
    Ok(json!(true))
}

/// `getMyCommands`.
pub(crate) fn get_my_commands(shared: &Shared) -> Value {
    let state = shared.state();
    let list: Vec<Value> = state
        .commands
        .iter()
        .map(|(command, description)| json!({"command": command, "description": description}))
        .collect();
    json!(list)
}

/// `sendDocument`: an uploaded `document` part, a known file_id, or `attach://<part>`.
pub(crate) fn send_document(shared: &Shared, p: &Params) -> Answer {
    let chat_id = chat_id(p)?;
    let caption = match p.get("caption") {
        Some(_) => Some(formatted(p, "caption", MAX_CAPTION, true)?),
        None => None,
    };
    let markup = reply_markup(p)?;
    let bot_user = shared.bot_user();
    let mut state = shared.state();
    chat(&mut state, chat_id)?;
    let upload = match p.string("document") {
        Some(reference) => match reference.strip_prefix("attach://") {
            Some(part) => p.files.get(part),
            None => {
                if !state.files.contains_key(&reference) {
                    return Err(bad("wrong file identifier/HTTP URL specified"));
                }
                let message =
                    document_message(&mut state, chat_id, bot_user, &reference, caption, markup);
                return Ok(message);
            }
        },
        None => p.files.get("document"),
    };
    let Some(upload) = upload else {
        return Err(bad("there is no document in the request"));
    };
    if upload.bytes.len() > MAX_UPLOAD {
        return Err(Outcome::error(413, "Request Entity Too Large"));
    }
    if upload.bytes.is_empty() {
        return Err(bad("file must be non-empty"));
    }
    let mime = upload
        .content_type
        .as_deref()
        .filter(|m| *m != "application/octet-stream");
    let file_id = state.store_file(&upload.file_name, mime, upload.bytes.clone());
    Ok(document_message(
        &mut state, chat_id, bot_user, &file_id, caption, markup,
    ))
}

/// Stores the bot's message carrying the stored file `file_id` and returns its JSON.
fn document_message(
    state: &mut State,
    chat_id: i64,
    bot_user: Value,
    file_id: &str,
    caption: Option<(String, Rendered, Option<String>)>,
    markup: Option<Value>,
) -> Value {
    let file = state
        .files
        .get(file_id)
        .expect("document_message: a stored file");
    let document = file.document();
    let (file_name, bytes) = (file.file_name.clone(), file.bytes.clone());
    let chat = state
        .chats
        .get_mut(&chat_id)
        .expect("document_message: chat");
    let message_id = chat.next_message_id();
    let mut json = json!({
        "message_id": message_id,
        "from": bot_user,
        "chat": chat.json,
        "date": now(),
        "document": document,
    });
    let (parse_mode, caption_text) = match &caption {
        Some((_, rendered, parse_mode)) => {
            set_field(&mut json, "caption", Some(json!(rendered.text)));
            set_field(&mut json, "caption_entities", entities(rendered));
            (parse_mode.clone(), Some(rendered.text.clone()))
        }
        None => (None, None),
    };
    set_field(&mut json, "reply_markup", markup.clone());
    let record = BotMessage {
        chat_id,
        message_id,
        text: String::new(),
        raw_text: String::new(),
        parse_mode,
        entities: Vec::new(),
        edits: Vec::new(),
        reply_markup: markup,
        deleted: false,
        document: Some((file_name, bytes)),
        caption: caption_text,
    };
    chat.messages.insert(
        message_id,
        StoredMessage {
            json: json.clone(),
            deleted: false,
            bot: Some(record),
        },
    );
    json
}

/// `getFile`: assigns the download path.
pub(crate) fn get_file(shared: &Shared, p: &Params) -> Answer {
    let file_id = p.string("file_id").unwrap_or_default();
    let mut state = shared.state();
    let Some(file) = state.files.get(&file_id) else {
        return Err(bad("invalid file_id"));
    };
    if file.bytes.len() > MAX_DOWNLOAD {
        return Err(bad("file is too big"));
    }
    let (unique, size) = (file.file_unique_id.clone(), file.bytes.len());
    let path = state
        .file_path(&file_id)
        .expect("get_file: the file exists");
    Ok(json!({
        "file_id": file_id,
        "file_unique_id": unique,
        "file_size": size,
        "file_path": path,
    }))
}
