//! The web console: plain HTML, CSS and JavaScript modules from `edge/console/`, embedded in the
//! binary and served at `/` (ADR 30).
//!
//! - Every page of the single-page app (`/`, `/auth/verify`, `/agents/…`, `/settings`, …) is
//!   answered with `index.html`, so a link from an email or a reload lands on the right view.
//! - Assets live under `/console/`. Their `ETag` is a hash of their bytes, and every answer says
//!   `no-cache`: a browser revalidates each load and gets `304` until the binary changes.
//! - Every answer carries a strict Content Security Policy (scripts, styles and connections from
//!   this origin only, no inline code, no framing) and `Referrer-Policy: no-referrer`, so the
//!   sign-in token in `/auth/verify?token=…` never leaks to another site.
//!
//! Nothing here touches `/api/…` or `/ws`: those routes keep their JSON answers.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

use crate::error::ApiError;

/// One embedded file: its name under `/console/`, content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!("../console/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("gateway.js", JS),
    asset!("ui.js", JS),
    asset!("signin.js", JS),
    asset!("agents.js", JS),
    asset!("chat.js", JS),
    asset!("settings.js", JS),
    asset!("usage.js", JS),
    asset!("admin.js", JS),
    asset!("device.js", JS),
];

/// Scripts, styles, images and connections (REST and the gateway's WebSocket) from this origin
/// only; no inline script or style, no plugins, no framing, forms post nowhere else.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// The console's pages (answered with `index.html`) and assets.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new().route("/console/{file}", get(asset));
    for page in [
        "/",
        "/auth/verify",
        "/auth/oauth",
        "/device",
        "/agents",
        "/agents/{id}",
        "/settings",
        "/usage",
        "/admin",
    ] {
        router = router.route(page, get(page_handler));
    }
    router
}

async fn page_handler(headers: HeaderMap) -> Response {
    serve(find("index.html"), &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS
        .iter()
        .find(|a| a.name == file && a.name != "index.html")
    {
        Some(found) => serve(found, &headers),
        None => ApiError::client(StatusCode::NOT_FOUND, "not_found", "no such console file")
            .into_response(),
    }
}

fn find(name: &str) -> &'static Asset {
    ASSETS.iter().find(|a| a.name == name).unwrap_or(&ASSETS[0])
}

/// The `ETag` of each asset, in [`ASSETS`]' order: the first 16 bytes of its SHA-256, in hex.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| format!("\"{}\"", hex::encode(&Sha256::digest(a.bytes)[..16])))
            .collect()
    })
}

fn serve(asset: &'static Asset, headers: &HeaderMap) -> Response {
    let index = ASSETS
        .iter()
        .position(|a| std::ptr::eq(a, asset))
        .unwrap_or(0);
    let etag = &etags()[index];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = asset.bytes.into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        response
    };
    let h = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, value);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_the_console_imports_is_embedded() {
        let names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(asset.bytes).expect("utf-8");
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let quoted = line.rsplit("from ").next().unwrap_or("").trim();
                let file = quoted.trim_matches(|c| c == '"' || c == '\'' || c == ';');
                let file = file.trim_start_matches("./");
                assert!(names.contains(&file), "{} imports {file}", asset.name);
            }
        }
    }
}
