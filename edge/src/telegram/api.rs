//! A small typed client of the Telegram Bot API over HTTPS: `POST {api}/bot<token>/<method>`
//! with JSON parameters (multipart for `sendDocument`), answers `{"ok": …, "result": …}`.
//!
//! [`BotApi::call`] tries once; [`BotApi::call_retrying`] honours `429` (`retry_after`) and
//! waits out 5xx answers and network failures with a growing backoff (1 s doubling to 30 s)
//! until Telegram answers or the bridge shuts down. Telegram's refusals (4xx) are returned at
//! once. The token is part of every URL, so no URL is ever logged (`without_url`).

use super::types::{File, Message};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The longest a single call may take (a long poll adds its own timeout to this).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum TgError {
    /// 429: Telegram asks to wait.
    #[error("telegram asks to retry after {0:?}")]
    RetryAfter(Duration),
    /// Telegram is unreachable or failing (5xx, network, an unreadable answer).
    #[error("telegram is unavailable: {0}")]
    Unavailable(String),
    /// Telegram refused the call (4xx other than 429).
    #[error("telegram refused {method}: {code} {description}")]
    Refused {
        /// The method.
        method: String,
        /// Its `error_code`.
        code: i64,
        /// Its `description`.
        description: String,
    },
    /// The bridge is shutting down.
    #[error("shutting down")]
    Closing,
}

impl TgError {
    /// Telegram's description contains `text` (for refusals that need telling apart).
    pub fn says(&self, text: &str) -> bool {
        matches!(self, TgError::Refused { description, .. } if description.contains(text))
    }
}

/// The Bot API, for one bot.
#[derive(Clone)]
pub struct BotApi {
    http: reqwest::Client,
    /// `{api}/bot<token>`.
    base: String,
    /// `{api}/file/bot<token>`.
    files: String,
    closing: CancellationToken,
}

impl std::fmt::Debug for BotApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BotApi(..)")
    }
}

impl BotApi {
    /// The API at `api_url` for the bot with `token`.
    pub fn new(
        api_url: &str,
        token: &str,
        closing: CancellationToken,
    ) -> Result<Self, reqwest::Error> {
        let api = api_url.trim_end_matches('/');
        Ok(Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()?,
            base: format!("{api}/bot{token}"),
            files: format!("{api}/file/bot{token}"),
            closing,
        })
    }

    /// Calls `method` once.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        params: &Value,
    ) -> Result<T, TgError> {
        self.call_within(method, params, CALL_TIMEOUT).await
    }

    /// Calls `method` once, waiting at most `timeout`.
    pub async fn call_within<T: DeserializeOwned>(
        &self,
        method: &str,
        params: &Value,
        timeout: Duration,
    ) -> Result<T, TgError> {
        let request = self
            .http
            .post(format!("{}/{method}", self.base))
            .timeout(timeout)
            .json(params);
        self.answer(method, request).await
    }

    /// Calls `method` until Telegram answers it (or refuses it), honouring `retry_after` and
    /// backing off while it is unavailable.
    pub async fn call_retrying<T: DeserializeOwned>(
        &self,
        method: &str,
        params: &Value,
    ) -> Result<T, TgError> {
        self.retrying(method, || self.call(method, params)).await
    }

    /// Makes `attempt` until it is not a 429 or an outage: `retry_after` waited out, outages
    /// backed off (1 s doubling to 30 s), shutdown ending the wait.
    async fn retrying<T, F, Fut>(&self, method: &str, mut attempt: F) -> Result<T, TgError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, TgError>>,
    {
        let mut backoff = Duration::from_secs(1);
        loop {
            match attempt().await {
                Err(TgError::RetryAfter(wait)) => {
                    tracing::info!(
                        method,
                        wait_secs = wait.as_secs(),
                        "telegram rate limit: waiting"
                    );
                    self.pause(wait).await?;
                }
                Err(TgError::Unavailable(why)) => {
                    tracing::warn!(method, error = why, retry_in = ?backoff, "telegram unavailable");
                    self.pause(backoff).await?;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                other => return other,
            }
        }
    }

    /// Waits `wait`, or fails at shutdown.
    pub async fn pause(&self, wait: Duration) -> Result<(), TgError> {
        tokio::select! {
            _ = tokio::time::sleep(wait) => Ok(()),
            _ = self.closing.cancelled() => Err(TgError::Closing),
        }
    }

    /// Sends `bytes` as a document named `file_name`, retrying like [`Self::call_retrying`].
    pub async fn send_document(
        &self,
        chat_id: i64,
        file_name: &str,
        bytes: Vec<u8>,
        caption: Option<&str>,
    ) -> Result<Message, TgError> {
        self.retrying("sendDocument", || {
            let mut form = reqwest::multipart::Form::new()
                .text("chat_id", chat_id.to_string())
                .part(
                    "document",
                    reqwest::multipart::Part::bytes(bytes.clone()).file_name(file_name.to_owned()),
                );
            if let Some(caption) = caption {
                form = form.text("caption", caption.to_owned());
            }
            let request = self
                .http
                .post(format!("{}/sendDocument", self.base))
                .timeout(Duration::from_secs(300))
                .multipart(form);
            self.answer("sendDocument", request)
        })
        .await
    }

    /// The file `file_id`, if it is at most `max_bytes` long (else 413-like refusal).
    pub async fn download(&self, file_id: &str, max_bytes: u64) -> Result<Vec<u8>, TgError> {
        let file: File = self
            .call_retrying("getFile", &json!({ "file_id": file_id }))
            .await?;
        let too_big = || TgError::Refused {
            method: "getFile".into(),
            code: 413,
            description: format!("the file is larger than {max_bytes} bytes"),
        };
        if file.file_size.is_some_and(|size| size > max_bytes) {
            return Err(too_big());
        }
        let Some(path) = file.file_path else {
            return Err(TgError::Unavailable("getFile gave no file_path".into()));
        };
        let response = self
            .http
            .get(format!("{}/{path}", self.files))
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .map_err(|err| TgError::Unavailable(err.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(TgError::Unavailable(format!(
                "file download answered {}",
                response.status()
            )));
        }
        let body = warren_commands::bounded::read(response.bytes_stream(), max_bytes as usize)
            .await
            .map_err(|err| match err {
                warren_commands::bounded::Bounded::TooLarge(_) => too_big(),
                warren_commands::bounded::Bounded::Source(err) => {
                    TgError::Unavailable(err.without_url().to_string())
                }
            })?;
        Ok(body)
    }

    async fn answer<T: DeserializeOwned>(
        &self,
        method: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, TgError> {
        let response = request
            .send()
            .await
            .map_err(|err| TgError::Unavailable(err.without_url().to_string()))?;
        let status = response.status();
        let body: Value = match response.json().await {
            Ok(body) => body,
            Err(_) if status.is_server_error() => {
                return Err(TgError::Unavailable(format!("{method} answered {status}")));
            }
            Err(err) => return Err(TgError::Unavailable(err.without_url().to_string())),
        };
        if body["ok"].as_bool() == Some(true) {
            return serde_json::from_value(body["result"].clone()).map_err(|err| {
                TgError::Unavailable(format!("{method}: unreadable result: {err}"))
            });
        }
        let code = body["error_code"]
            .as_i64()
            .unwrap_or(i64::from(status.as_u16()));
        let description = body["description"].as_str().unwrap_or_default().to_owned();
        if code == 429 {
            let wait = body["parameters"]["retry_after"].as_u64().unwrap_or(1);
            return Err(TgError::RetryAfter(Duration::from_secs(wait.max(1))));
        }
        if code >= 500 || status.is_server_error() {
            return Err(TgError::Unavailable(format!(
                "{method}: {code} {description}"
            )));
        }
        Err(TgError::Refused {
            method: method.to_owned(),
            code,
            description,
        })
    }
}
