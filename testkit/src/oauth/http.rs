//! The HTTP face: every request is read whole, recorded, and dispatched on method and path to
//! the Google or GitHub endpoint; plus the url-encoding both providers speak.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Recorded;
use super::state::{Shared, Site};
use super::{authorize, resources, token};

/// The largest request body read.
const MAX_BODY: usize = 1024 * 1024;

/// A request, read whole.
pub(crate) struct Req {
    pub(crate) query: Vec<(String, String)>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Req {
    /// The first query parameter `name`.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        first(&self.query, name)
    }

    /// The header `name`, if it is text.
    pub(crate) fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body's `application/x-www-form-urlencoded` fields.
    pub(crate) fn form(&self) -> Vec<(String, String)> {
        form_pairs(&String::from_utf8_lossy(&self.body))
    }
}

/// The first value of `name` in `pairs`.
pub(crate) fn first<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
    };
    let path = parts.uri.path().to_owned();
    let raw_query = parts.uri.query().unwrap_or_default().to_owned();
    shared.state().requests.push(Recorded {
        method: parts.method.to_string(),
        path: path.clone(),
        query: raw_query.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
        authorization: parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
    });
    let req = Req {
        query: form_pairs(&raw_query),
        headers: parts.headers,
        body,
    };
    let shared = &shared;
    match (parts.method, path.as_str()) {
        (Method::GET, "/o/oauth2/v2/auth") => authorize::authorize(shared, Site::Google, &req),
        (Method::GET, "/login/oauth/authorize") => authorize::authorize(shared, Site::Github, &req),
        (Method::POST, "/token") => token::google(shared, &req),
        (Method::POST, "/login/oauth/access_token") => token::github(shared, &req),
        (Method::GET, "/oauth2/v3/certs") => resources::jwks(shared),
        (Method::GET, "/.well-known/openid-configuration") => resources::discovery(shared),
        (Method::GET, "/v1/userinfo") => resources::userinfo(shared, &req),
        (Method::GET, "/api/user") => resources::github_user(shared, &req),
        (Method::GET, "/api/user/emails") => resources::github_emails(shared, &req),
        (_, path) if path.starts_with("/api/") => resources::github_not_found(),
        _ => text(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// A plain-text answer (the providers' error pages).
pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// A JSON answer.
pub(crate) fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// A `302 Found` to `location`.
pub(crate) fn found(location: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

/// A JSON error body `{"error", "error_description"}`.
pub(crate) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        json!({"error": error, "error_description": description}),
    )
}

/// `a=1&b=x+y` → pairs, percent-decoded (`+` is a space).
pub(crate) fn form_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

/// Pairs → `a=1&b=x+y`, form-urlencoded.
pub(crate) fn encode_form<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    pairs
        .into_iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Form-urlencoding (`application/x-www-form-urlencoded`) of one name or value.
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Form-urldecoding: `+` is a space, `%XX` a byte; malformed escapes are kept as they are.
pub(crate) fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
