//! Updates in. Each update is appended once to the `TELEGRAM` work queue
//! (`telegram.updates`, message id `tg-<update_id>`: an update polled twice, or posted twice by
//! a retried webhook, is stored once within the stream's dedupe window), whence
//! [`super::handle`] takes it.
//!
//! - Long polling (no `WARREN_TELEGRAM_WEBHOOK_URL`): one replica polls at a time, the holder of
//!   the `poller` lease ([`super::store::Store::lead`]), taken over by another replica within
//!   [`POLLER_STALE`] when it dies (at once when it shuts down). An update is confirmed to Telegram (the next `offset`) only
//!   after it is in the queue, so a crash loses nothing.
//! - Webhook: the bridge registers the URL and secret with `setWebhook`; the edge's
//!   `POST /api/v1/telegram/webhook` checks `X-Telegram-Bot-Api-Secret-Token` (constant time;
//!   401 otherwise, 404 when no secret is configured) and appends the update; Telegram retries
//!   whatever was not answered 200.

use super::Bridge;
use super::api::TgError;
use crate::error::ApiError;
use crate::openapi::resp;
use crate::routes::ApiRouter;
use crate::state::AppState;
use async_nats::HeaderMap;
use async_nats::jetstream;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap as HttpHeaders, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use subtle::ConstantTimeEq;
use warren_commands::topology::TELEGRAM_UPDATES;

/// How long a long poll waits for an update.
const POLL_TIMEOUT_SECS: u64 = 20;
/// A poller lease not renewed for this long is taken over.
pub const POLLER_STALE: Duration = Duration::from_secs(45);
/// What the bridge asks Telegram for.
const ALLOWED_UPDATES: [&str; 2] = ["message", "callback_query"];

/// Appends `update` (raw JSON, with its `update_id`) to the queue, once.
pub async fn enqueue(js: &jetstream::Context, update_id: i64, update: Bytes) -> Result<(), String> {
    let mut headers = HeaderMap::new();
    headers.insert(
        warren_commands::codec::HEADER_MSG_ID,
        format!("tg-{update_id}").as_str(),
    );
    js.publish_with_headers(TELEGRAM_UPDATES, headers, update)
        .await
        .map_err(|err| err.to_string())?
        .await
        .map_err(|err| err.to_string())?;
    Ok(())
}

/// Runs the intake until shutdown: registers the webhook, or polls.
pub async fn run(bridge: &Bridge) {
    let commands: Vec<Value> = super::handle::MENU
        .iter()
        .map(|(command, description)| json!({ "command": command, "description": description }))
        .collect();
    match bridge
        .api
        .call_retrying::<bool>("setMyCommands", &json!({ "commands": commands }))
        .await
    {
        Ok(_) => {}
        Err(TgError::Closing) => return,
        Err(err) => tracing::warn!(error = %err, "telegram refused the command menu"),
    }
    match &bridge.settings.webhook_url {
        Some(url) => register_webhook(bridge, url).await,
        None => poll(bridge).await,
    }
}

async fn register_webhook(bridge: &Bridge, url: &str) {
    let params = json!({
        "url": url,
        "secret_token": bridge.settings.webhook_secret,
        "allowed_updates": ALLOWED_UPDATES,
    });
    match bridge
        .api
        .call_retrying::<bool>("setWebhook", &params)
        .await
    {
        Ok(_) => tracing::info!("telegram webhook registered"),
        Err(TgError::Closing) => {}
        Err(err) => tracing::error!(error = %err, "telegram refused the webhook"),
    }
}

async fn poll(bridge: &Bridge) {
    poll_until_shutdown(bridge).await;
    if let Err(err) = bridge.store.release(&bridge.worker_id).await {
        tracing::warn!(error = %err, "giving the poller lease up failed");
    }
}

async fn poll_until_shutdown(bridge: &Bridge) {
    // Telegram refuses getUpdates while a webhook is set (one left from webhook mode).
    if let Err(err) = bridge
        .api
        .call_retrying::<bool>("deleteWebhook", &json!({}))
        .await
    {
        if matches!(err, TgError::Closing) {
            return;
        }
        tracing::warn!(error = %err, "deleting a webhook left from before failed");
    }
    let js = bridge.state.commands.jetstream();
    let mut offset: i64 = 0;
    let mut backoff = Duration::from_secs(1);
    let stale_ms = POLLER_STALE.as_millis() as i64;
    while !bridge.shutdown.is_cancelled() {
        match bridge.store.lead(&bridge.worker_id, stale_ms).await {
            Ok(true) => {}
            Ok(false) => {
                // Another replica polls; check again later.
                if bridge.api.pause(Duration::from_secs(5)).await.is_err() {
                    return;
                }
                continue;
            }
            Err(err) => {
                tracing::warn!(error = %err, "the poller lease is unreadable");
                if bridge.api.pause(Duration::from_secs(5)).await.is_err() {
                    return;
                }
                continue;
            }
        }
        let params = json!({
            "offset": offset,
            "timeout": POLL_TIMEOUT_SECS,
            "allowed_updates": ALLOWED_UPDATES,
        });
        let polled = tokio::select! {
            polled = bridge.api.call_within::<Vec<Value>>(
                "getUpdates",
                &params,
                Duration::from_secs(POLL_TIMEOUT_SECS + 10),
            ) => polled,
            _ = bridge.shutdown.cancelled() => return,
        };
        let wait = match polled {
            Ok(updates) => {
                backoff = Duration::from_secs(1);
                for update in updates {
                    let Some(id) = update["update_id"].as_i64() else {
                        continue;
                    };
                    let body = Bytes::from(update.to_string());
                    if let Err(err) = enqueue(js, id, body).await {
                        // Not confirmed: Telegram hands it out again at the next poll.
                        tracing::warn!(update_id = id, error = err, "queueing an update failed");
                        break;
                    }
                    offset = offset.max(id + 1);
                }
                continue;
            }
            Err(TgError::RetryAfter(wait)) => wait,
            Err(TgError::Closing) => return,
            Err(err @ TgError::Refused { code: 409, .. }) => {
                tracing::warn!(error = %err, "another getUpdates or a webhook is active");
                Duration::from_secs(2)
            }
            Err(
                err @ TgError::Refused {
                    code: 401 | 404, ..
                },
            ) => {
                tracing::error!(error = %err, "telegram refuses the bot token (WARREN_TELEGRAM_TOKEN)");
                Duration::from_secs(30)
            }
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?backoff, "polling telegram failed");
                let wait = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                wait
            }
        };
        if bridge.api.pause(wait).await.is_err() {
            return;
        }
    }
}

/// The webhook's path.
pub const WEBHOOK_PATH: &str = "/api/v1/telegram/webhook";

/// Whether `secret` is one Telegram accepts for a webhook: 1 to 256 of `A-Z a-z 0-9 _ -`.
pub fn valid_secret(secret: &str) -> bool {
    (1..=256).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The webhook route.
pub fn routes() -> ApiRouter {
    ApiRouter::new().post("/telegram/webhook", webhook)
}

/// The header Telegram sends the webhook's secret in.
const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// Telegram's webhook: one update, queued for the telegram workers. Authenticated by the secret
/// registered with the webhook (`X-Telegram-Bot-Api-Secret-Token`), not a bearer token.
#[utoipa::path(post, path = "/api/v1/telegram/webhook", operation_id = "post_telegram_webhook", tag = "telegram",
    request_body(content = Object, description = "A Telegram `Update`."),
    params(("X-Telegram-Bot-Api-Secret-Token" = String, Header, description = "The webhook's secret (`WARREN_TELEGRAM_WEBHOOK_SECRET`).")),
    responses((status = 200, description = "Queued (or a repeat of a queued update)."),
        resp::BadRequest, resp::Unauthorized, resp::NotFound, resp::Unavailable))]
pub(crate) async fn webhook(
    State(state): State<AppState>,
    headers: HttpHeaders,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let Some(secret) = state
        .settings
        .telegram
        .webhook_secret
        .as_ref()
        .filter(|secret| valid_secret(secret))
    else {
        return Err(ApiError::NotFound);
    };
    let given = headers
        .get(SECRET_HEADER)
        .map(|value| value.as_bytes())
        .unwrap_or_default();
    if !bool::from(given.ct_eq(secret.as_bytes())) {
        return Err(ApiError::unauthorized(
            "invalid_secret",
            "the webhook secret token is missing or wrong",
        ));
    }
    let update: Value = serde_json::from_slice(&body).map_err(|_| {
        ApiError::client(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body must be a Telegram Update (JSON)",
        )
    })?;
    let Some(id) = update["update_id"].as_i64() else {
        return Err(ApiError::invalid_field("update_id", "must be an integer"));
    };
    enqueue(state.commands.jetstream(), id, body)
        .await
        .map_err(|err| {
            tracing::warn!(
                update_id = id,
                error = err,
                "queueing a webhook update failed"
            );
            ApiError::Unavailable("the log")
        })?;
    Ok(StatusCode::OK)
}
