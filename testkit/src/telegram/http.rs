//! The HTTP face: `/bot<TOKEN>/<method>` with parameters in the query string, a JSON or
//! url-encoded body, or `multipart/form-data`; `/file/bot<TOKEN>/<path>` downloads. Every call
//! is admitted (reachability, token, method, injected failure), answered and recorded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::state::Shared;
use super::{Call, Failure, methods, updates};

/// The largest request body read (uploads over the 50 MB limit are refused after reading).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// The methods served, spelled as the Bot API documents them (requests match any case).
const METHODS: &[&str] = &[
    "getMe",
    "getUpdates",
    "setWebhook",
    "deleteWebhook",
    "getWebhookInfo",
    "sendMessage",
    "editMessageText",
    "editMessageReplyMarkup",
    "sendMessageDraft",
    "deleteMessage",
    "answerCallbackQuery",
    "sendChatAction",
    "setMyCommands",
    "getMyCommands",
    "deleteMyCommands",
    "sendDocument",
    "getFile",
];

/// Parameters Telegram reads as JSON when they arrive as text (form fields, query string).
const JSON_FIELDS: &[&str] = &[
    "reply_markup",
    "reply_parameters",
    "link_preview_options",
    "allowed_updates",
    "commands",
    "entities",
    "caption_entities",
    "scope",
];
/// Integer parameters, stored as numbers when they arrive as text.
const INT_FIELDS: &[&str] = &[
    "chat_id",
    "message_id",
    "offset",
    "limit",
    "timeout",
    "draft_id",
    "message_thread_id",
    "max_connections",
    "cache_time",
];
/// Boolean parameters, stored as booleans when they arrive as text.
const BOOL_FIELDS: &[&str] = &[
    "disable_notification",
    "protect_content",
    "show_alert",
    "drop_pending_updates",
    "disable_content_type_detection",
];

/// A finished answer: HTTP status and the `{"ok": ...}` body.
pub(crate) struct Outcome {
    pub(crate) status: u16,
    pub(crate) body: Value,
}

/// A method's result, or the error answer.
pub(crate) type Answer = Result<Value, Outcome>;

impl Outcome {
    pub(crate) fn ok(result: Value) -> Self {
        Self {
            status: 200,
            body: json!({"ok": true, "result": result}),
        }
    }

    pub(crate) fn error(code: u16, description: impl Into<String>) -> Self {
        Self {
            status: code,
            body: json!({"ok": false, "error_code": code, "description": description.into()}),
        }
    }

    /// 400 `"Bad Request: <what>"`.
    pub(crate) fn bad_request(what: impl std::fmt::Display) -> Self {
        Self::error(400, format!("Bad Request: {what}"))
    }

    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.body)).into_response()
    }
}

impl Failure {
    fn outcome(&self) -> Outcome {
        match self {
            Failure::TooManyRequests { retry_after } => {
                let mut outcome =
                    Outcome::error(429, format!("Too Many Requests: retry after {retry_after}"));
                outcome.body["parameters"] = json!({"retry_after": retry_after});
                outcome
            }
            Failure::ServerError => Outcome::error(502, "Bad Gateway"),
            Failure::Error { code, description } => Outcome::error(*code, description.clone()),
        }
    }
}

/// An uploaded file part.
pub(crate) struct Upload {
    pub(crate) file_name: String,
    pub(crate) content_type: Option<String>,
    pub(crate) bytes: Vec<u8>,
}

/// A request's parameters, wherever they came from.
#[derive(Default)]
pub(crate) struct Params {
    pub(crate) map: Map<String, Value>,
    pub(crate) files: HashMap<String, Upload>,
}

impl Params {
    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    /// A text parameter (numbers and booleans given for it read as their text).
    pub(crate) fn string(&self, name: &str) -> Option<String> {
        match self.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    pub(crate) fn int(&self, name: &str) -> Option<i64> {
        match self.get(name)? {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    pub(crate) fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some(Value::Bool(true)))
    }

    /// The parameters as recorded: files replaced by `{"file_name", "size"}`.
    fn recorded(&self) -> Value {
        let mut map = self.map.clone();
        for (name, upload) in &self.files {
            map.insert(
                name.clone(),
                json!({"file_name": upload.file_name, "size": upload.bytes.len()}),
            );
        }
        Value::Object(map)
    }

    /// Text values of typed parameters become JSON, numbers and booleans.
    fn normalize(&mut self) {
        for (name, value) in self.map.iter_mut() {
            let Value::String(text) = value else { continue };
            let typed = if JSON_FIELDS.contains(&name.as_str()) {
                serde_json::from_str(text).ok()
            } else if INT_FIELDS.contains(&name.as_str()) {
                text.trim().parse::<i64>().ok().map(Value::from)
            } else if BOOL_FIELDS.contains(&name.as_str()) {
                match text.as_str() {
                    "true" | "True" | "1" => Some(Value::Bool(true)),
                    "false" | "False" | "0" => Some(Value::Bool(false)),
                    _ => None,
                }
            } else {
                None
            };
            if let Some(typed) = typed {
                *value = typed;
            }
        }
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .fallback(handle)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let at = Instant::now();
    let path = request.uri().path().to_owned();
    if let Some(rest) = path.strip_prefix("/file/bot") {
        return download(&shared, rest, at);
    }
    let Some((token, method)) = path.strip_prefix("/bot").and_then(|r| r.split_once('/')) else {
        return Outcome::error(404, "Not Found").into_response();
    };
    let token = percent_decode(token);
    let canonical = METHODS
        .iter()
        .find(|m| m.eq_ignore_ascii_case(method))
        .copied();
    let (params, outcome) = match read_params(request).await {
        Ok(params) => {
            let outcome = answer(&shared, &token, canonical, &params).await;
            (params.recorded(), outcome)
        }
        Err(outcome) => (Value::Null, outcome),
    };
    shared.state().calls.push(Call {
        method: canonical.unwrap_or(method).to_owned(),
        params,
        status: outcome.status,
        response: outcome.body.clone(),
        at,
    });
    shared.bump();
    outcome.into_response()
}

async fn answer(shared: &Shared, token: &str, method: Option<&'static str>, p: &Params) -> Outcome {
    let (method, failure) = {
        let mut state = shared.state();
        if state.unreachable {
            return Outcome::error(502, "Bad Gateway");
        }
        if token != shared.token {
            return Outcome::error(401, "Unauthorized");
        }
        let Some(method) = method else {
            return Outcome::error(404, "Not Found");
        };
        (method, state.take_failure(&method.to_ascii_lowercase()))
    };
    if let Some(failure) = failure {
        return failure.outcome();
    }
    let result = match method {
        "getMe" => Ok(shared.bot_user()),
        "getUpdates" => updates::get_updates(shared, p).await,
        "setWebhook" => updates::set_webhook(shared, p),
        "deleteWebhook" => updates::delete_webhook(shared, p),
        "getWebhookInfo" => Ok(updates::webhook_info(shared)),
        "sendMessage" => methods::send_message(shared, p),
        "editMessageText" => methods::edit_message_text(shared, p),
        "editMessageReplyMarkup" => methods::edit_message_reply_markup(shared, p),
        "sendMessageDraft" => methods::send_message_draft(shared, p),
        "deleteMessage" => methods::delete_message(shared, p),
        "answerCallbackQuery" => methods::answer_callback_query(shared, p),
        "sendChatAction" => methods::send_chat_action(shared, p),
        "setMyCommands" => methods::set_my_commands(shared, p),
        "getMyCommands" => Ok(methods::get_my_commands(shared)),
        "deleteMyCommands" => {
            shared.state().commands.clear();
            Ok(json!(true))
        }
        "sendDocument" => methods::send_document(shared, p),
        "getFile" => methods::get_file(shared, p),
        other => unreachable!("test telegram: {other} is listed but not dispatched"),
    };
    result.map_or_else(|error| error, Outcome::ok)
}

/// `GET /file/bot<TOKEN>/<file_path>`: the stored bytes. Recorded as method `"file"`.
fn download(shared: &Shared, rest: &str, at: Instant) -> Response {
    let (token, file_path) = rest.split_once('/').unwrap_or((rest, ""));
    let token = percent_decode(token);
    let file_path = percent_decode(file_path);
    let found = {
        let state = shared.state();
        if state.unreachable {
            Err(Outcome::error(502, "Bad Gateway"))
        } else if token != shared.token {
            Err(Outcome::error(401, "Unauthorized"))
        } else {
            state
                .files
                .values()
                .find(|f| f.path.as_deref() == Some(file_path.as_str()))
                .map(|f| (f.bytes.clone(), f.mime_type.clone()))
                .ok_or_else(|| Outcome::error(404, "Not Found"))
        }
    };
    let (status, response_body) = match &found {
        Ok((bytes, _)) => (200, json!({"size": bytes.len()})),
        Err(outcome) => (outcome.status, outcome.body.clone()),
    };
    shared.state().calls.push(Call {
        method: "file".to_owned(),
        params: json!({"file_path": file_path}),
        status,
        response: response_body,
        at,
    });
    shared.bump();
    match found {
        Ok((bytes, mime)) => {
            let mut response = Bytes::from(bytes).into_response();
            if let Ok(value) = HeaderValue::from_str(&mime) {
                response.headers_mut().insert(header::CONTENT_TYPE, value);
            }
            response
        }
        Err(outcome) => outcome.into_response(),
    }
}

async fn read_params(request: Request) -> Result<Params, Outcome> {
    let mut params = Params::default();
    if let Some(query) = request.uri().query() {
        for (name, value) in form_pairs(query) {
            params.map.insert(name, Value::String(value));
        }
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(request, &()).await.map_err(|e| {
            Outcome::bad_request(format!("can't parse multipart: {}", e.body_text()))
        })?;
        loop {
            let field = match multipart.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    return Err(Outcome::error(413, "Request Entity Too Large"));
                }
                Err(e) => {
                    return Err(Outcome::bad_request(format!(
                        "can't parse multipart: {}",
                        e.body_text()
                    )));
                }
            };
            let name = field.name().unwrap_or_default().to_owned();
            let file_name = field.file_name().map(str::to_owned);
            let content_type = field.content_type().map(str::to_owned);
            let bytes = field.bytes().await.map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Outcome::error(413, "Request Entity Too Large")
                } else {
                    Outcome::bad_request(format!("can't parse multipart: {}", e.body_text()))
                }
            })?;
            match file_name {
                Some(file_name) => {
                    let upload = Upload {
                        file_name,
                        content_type,
                        bytes: bytes.to_vec(),
                    };
                    params.files.insert(name, upload);
                }
                None => {
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    params.map.insert(name, Value::String(text));
                }
            }
        }
    } else {
        let body = Bytes::from_request(request, &())
            .await
            .map_err(|_| Outcome::error(413, "Request Entity Too Large"))?;
        let looks_json = content_type.starts_with("application/json")
            || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        if body.iter().all(u8::is_ascii_whitespace) {
            // No body: the query string (if any) carries everything.
        } else if looks_json {
            match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Object(map)) => params.map.extend(map),
                _ => return Err(Outcome::bad_request("can't parse JSON object")),
            }
        } else {
            for (name, value) in form_pairs(&String::from_utf8_lossy(&body)) {
                params.map.insert(name, Value::String(value));
            }
        }
    }
    params.normalize();
    Ok(params)
}

/// `a=1&b=x+y` → pairs, percent-decoded (`+` is a space).
fn form_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(&name.replace('+', " ")),
                percent_decode(&value.replace('+', " ")),
            )
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
