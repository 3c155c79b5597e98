//! `web_fetch {url}`: GET an http(s) URL; the status line and at most `max_bytes` of the body,
//! within 60 seconds. The sandbox's network policy decides what is reachable.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use super::ToolOutcome;

/// The longest a fetch (headers and body) may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Fetches the URL in `input`, reading no more than `max_bytes` of the body.
pub async fn fetch(
    http: &reqwest::Client,
    input: &Value,
    max_bytes: usize,
    cap: usize,
) -> ToolOutcome {
    let Some(raw) = input["url"].as_str() else {
        return ToolOutcome::failed("missing string field \"url\"");
    };
    let url = match reqwest::Url::parse(raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => url,
        Ok(_) => return ToolOutcome::failed("only http and https URLs can be fetched"),
        Err(err) => return ToolOutcome::failed(format!("invalid URL: {err}")),
    };
    let response = match http.get(url).timeout(FETCH_TIMEOUT).send().await {
        Ok(response) => response,
        Err(err) => return ToolOutcome::failed(format!("fetch failed: {err}")),
    };
    let status = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
        .to_owned();
    let mut body = Vec::new();
    let mut cut = false;
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(bytes) => {
                let room = max_bytes.saturating_sub(body.len());
                body.extend_from_slice(&bytes[..bytes.len().min(room)]);
                if bytes.len() > room {
                    cut = true;
                    break;
                }
            }
            Err(err) => return ToolOutcome::failed(format!("reading the body failed: {err}")),
        }
    }
    let mut text = format!(
        "HTTP {status} ({content_type})\n\n{}",
        String::from_utf8_lossy(&body)
    );
    if cut {
        text.push_str(&format!("\n[body cut at {max_bytes} bytes]"));
    }
    let mut outcome = ToolOutcome::ok(text, cap);
    outcome.ok = status.is_success();
    outcome
}
