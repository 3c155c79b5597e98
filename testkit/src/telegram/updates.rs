//! Getting updates out: `getUpdates` long polling (with Telegram's 409 conflicts) or a webhook
//! the server POSTs each update to, retrying until the receiver answers 2xx.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::http::{Answer, Outcome, Params};
use super::state::{Shared, Webhook, now};

const TERMINATED: &str = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running";
const WEBHOOK_ACTIVE: &str = "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first";

/// The first pause before redelivering to a failing webhook; it doubles up to the second.
const FIRST_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_secs(1);

/// `getUpdates`: confirms below `offset`, then returns what is pending or waits up to
/// `timeout` seconds for something; a newer getUpdates ends a waiting one with 409.
pub(crate) async fn get_updates(shared: &Shared, p: &Params) -> Answer {
    let limit = p.int("limit").unwrap_or(100).clamp(1, 100) as usize;
    let timeout = Duration::from_secs(p.int("timeout").unwrap_or(0).max(0) as u64);
    let mine = {
        let mut state = shared.state();
        if state.webhook.is_some() {
            return Err(Outcome::error(409, WEBHOOK_ACTIVE));
        }
        if let Some(allowed) = p.get("allowed_updates") {
            state.allowed_updates = allowed_list(allowed)?;
        }
        if let Some(offset) = p.int("offset") {
            state.confirm(offset);
        }
        state.poll_seq += 1;
        state.poll_seq
    };
    // Wake an earlier request that is still waiting: it now ends with 409.
    shared.bump();
    let mut changed = shared.changed.subscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    // Marks this request as the one waiting until it returns (or the client goes away).
    let _waiting = Waiting { shared, mine };
    loop {
        changed.borrow_and_update();
        {
            let mut state = shared.state();
            if state.poll_seq != mine {
                return Err(Outcome::error(409, TERMINATED));
            }
            if state.webhook.is_some() {
                return Err(Outcome::error(409, WEBHOOK_ACTIVE));
            }
            state.drop_unwanted();
            if !state.pending.is_empty() {
                let batch = state.pending.iter().take(limit).map(|u| u.json.clone());
                return Ok(Value::Array(batch.collect()));
            }
            if timeout.is_zero() {
                return Ok(json!([]));
            }
            if state.waiting_poll != Some(mine) {
                state.waiting_poll = Some(mine);
                drop(state);
                shared.bump();
            }
        }
        tokio::select! {
            woke = tokio::time::timeout_at(deadline, changed.changed()) => {
                if !matches!(woke, Ok(Ok(()))) {
                    return Ok(json!([]));
                }
            }
            _ = shared.stop.cancelled() => return Ok(json!([])),
        }
    }
}

/// Clears `State::waiting_poll` when its getUpdates ends.
struct Waiting<'a> {
    shared: &'a Shared,
    mine: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut state = self.shared.state();
        if state.waiting_poll == Some(self.mine) {
            state.waiting_poll = None;
            drop(state);
            self.shared.bump();
        }
    }
}

/// `allowed_updates` as stored: an empty list means the default (everything).
fn allowed_list(value: &Value) -> Result<Option<Vec<String>>, Outcome> {
    let Some(list) = value.as_array() else {
        return Err(Outcome::bad_request("can't parse allowed updates list"));
    };
    let kinds: Vec<String> = list
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    Ok((!kinds.is_empty()).then_some(kinds))
}

/// `setWebhook`: an empty url removes the webhook.
pub(crate) fn set_webhook(shared: &Shared, p: &Params) -> Answer {
    let url = p.string("url").unwrap_or_default();
    if url.is_empty() {
        return delete_webhook(shared, p);
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Outcome::bad_request(
            "bad webhook: An HTTPS URL must be provided for webhook",
        ));
    }
    let secret = p.string("secret_token").filter(|s| !s.is_empty());
    if let Some(secret) = &secret {
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if secret.len() > 256 || !secret.chars().all(allowed) {
            return Err(Outcome::bad_request(
                "secret token contains unallowed characters",
            ));
        }
    }
    let allowed = p.get("allowed_updates").map(allowed_list).transpose()?;
    let mut state = shared.state();
    if let Some(allowed) = allowed {
        state.allowed_updates = allowed;
    }
    if p.flag("drop_pending_updates") {
        state.pending.clear();
    }
    state.webhook = Some(Webhook {
        url,
        secret,
        last_error: None,
    });
    drop(state);
    shared.bump();
    Ok(json!(true))
}

/// `deleteWebhook`: back to getUpdates.
pub(crate) fn delete_webhook(shared: &Shared, p: &Params) -> Answer {
    let mut state = shared.state();
    state.webhook = None;
    if p.flag("drop_pending_updates") {
        state.pending.clear();
    }
    drop(state);
    shared.bump();
    Ok(json!(true))
}

/// `getWebhookInfo`.
pub(crate) fn webhook_info(shared: &Shared) -> Value {
    let state = shared.state();
    let mut info = json!({
        "url": state.webhook.as_ref().map(|w| w.url.as_str()).unwrap_or_default(),
        "has_custom_certificate": false,
        "pending_update_count": state.pending.len(),
    });
    if let Some(webhook) = &state.webhook {
        info["max_connections"] = json!(40);
        if let Some((date, message)) = &webhook.last_error {
            info["last_error_date"] = json!(date);
            info["last_error_message"] = json!(message);
        }
    }
    if let Some(allowed) = &state.allowed_updates {
        info["allowed_updates"] = json!(allowed);
    }
    info
}

/// Runs until the server stops: while a webhook is set (and the server is reachable), POSTs
/// the oldest pending update to it; 2xx forgets it, anything else retries it after a backoff.
pub(crate) async fn deliver(shared: Arc<Shared>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("test telegram: webhook HTTP client");
    let mut changed = shared.changed.subscribe();
    let mut backoff = FIRST_RETRY;
    loop {
        changed.borrow_and_update();
        let job = {
            let mut state = shared.state();
            state.drop_unwanted();
            match (&state.webhook, state.pending.front(), state.unreachable) {
                (Some(hook), Some(update), false) => Some((
                    hook.url.clone(),
                    hook.secret.clone(),
                    update.id,
                    update.json.clone(),
                )),
                _ => None,
            }
        };
        let Some((url, secret, update_id, body)) = job else {
            tokio::select! {
                _ = changed.changed() => continue,
                _ = shared.stop.cancelled() => return,
            }
        };
        let mut request = client.post(&url).json(&body);
        if let Some(secret) = &secret {
            request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
        }
        let result = tokio::select! {
            result = request.send() => result,
            _ = shared.stop.cancelled() => return,
        };
        let error = match result {
            Ok(response) if response.status().is_success() => None,
            Ok(response) => Some(format!(
                "Wrong response from the webhook: {}",
                response.status()
            )),
            Err(e) if e.is_timeout() => Some("Read timeout expired".to_owned()),
            Err(_) => Some("Connection refused".to_owned()),
        };
        {
            let mut state = shared.state();
            match &error {
                None => state.pending.retain(|u| u.id != update_id),
                Some(message) => {
                    if let Some(hook) = state.webhook.as_mut().filter(|h| h.url == url) {
                        hook.last_error = Some((now(), message.clone()));
                    }
                }
            }
        }
        shared.bump();
        if error.is_none() {
            backoff = FIRST_RETRY;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shared.stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_RETRY);
    }
}
