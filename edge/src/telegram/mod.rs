//! The Telegram bridge (`warren worker telegram`, docs/adr/0033): a bot in front of the
//! platform, so a person talks to their agent from Telegram, and the same conversation is live
//! in Telegram, the web console and the CLI at once, with one log behind it.
//!
//! It is a channel like the REST routes and the gateway: every use case it offers (sign-in,
//! approval, chat, cancel, lifecycle, shell, files, keys, model, usage) is a call into
//! [`crate::app`], never a copy, so approval, revocation, quotas and rate limits hold here too.
//!
//! - [`intake`] — updates in: long polling (`getUpdates`, one replica at a time by a lease) or
//!   Telegram's webhook (the edge's `POST /api/v1/telegram/webhook`, secret checked). Either
//!   way each update is appended once to the `TELEGRAM` work queue (its id is the message id,
//!   so a repeat is dropped), which the replicas share: each update is handled once.
//! - [`handle`] — one update: `/start` (register or link), the commands, plain text to the
//!   current agent, documents into the workspace, Approve / Reject buttons.
//! - [`stream`] — a run asked from Telegram, streamed as a draft (`sendMessageDraft`; in chats
//!   without drafts, one message edited at most once a second).
//! - [`deliver`] — what must reach Telegram however long it is down, read from the log by
//!   durable consumers: final answers, failures, messages typed in other clients, admins'
//!   registration notices with their buttons, and approval decisions.
//! - [`api`] — the Bot API client (429 `retry_after` and 5xx honoured).
//! - [`format`] — answers as MarkdownV2 within 4096 characters.
//! - [`store`] — the bridge's records (current agent and conversation, runs, poller lease).
//! - [`types`] — the Bot API's objects.

pub mod api;
pub mod deliver;
pub mod format;
pub mod handle;
pub mod intake;
pub mod store;
pub mod stream;
pub mod types;

use crate::state::AppState;
use api::BotApi;
use std::sync::Arc;
use store::Store;
use tokio_util::sync::CancellationToken;

/// How the bridge is configured.
#[derive(Clone)]
pub struct BridgeSettings {
    /// The bot's token.
    pub token: String,
    /// The Bot API's base URL.
    pub api_url: String,
    /// The edge's public webhook URL (webhook mode); none: long polling.
    pub webhook_url: Option<String>,
    /// The secret Telegram sends back with webhook updates.
    pub webhook_secret: Option<String>,
    /// Answer in group chats too.
    pub groups: bool,
}

impl std::fmt::Debug for BridgeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeSettings")
            .field("api_url", &self.api_url)
            .field("webhook_url", &self.webhook_url)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

/// The bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The token is not `<bot id>:<secret>`.
    #[error("WARREN_TELEGRAM_TOKEN is not a bot token (<bot id>:<secret>)")]
    Token,
    /// A webhook URL without a usable secret.
    #[error(
        "WARREN_TELEGRAM_WEBHOOK_URL needs WARREN_TELEGRAM_WEBHOOK_SECRET: 1 to 256 of A-Z a-z 0-9 _ -"
    )]
    WebhookSecret,
    /// The HTTP client could not be built.
    #[error("building the HTTP client failed")]
    Http(#[source] reqwest::Error),
    /// The bridge's bucket could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// The bridge: cheap to clone.
#[derive(Clone)]
pub struct Bridge(Arc<Inner>);

/// The parts of [`Bridge`].
pub struct Inner {
    /// The platform, as every channel sees it.
    pub state: AppState,
    /// Telegram.
    pub api: BotApi,
    /// The bridge's records.
    pub store: Store,
    /// Configuration.
    pub settings: BridgeSettings,
    /// The bot's own id (the token's first part).
    pub bot_id: i64,
    /// This replica's name (for the poller lease).
    pub worker_id: String,
    /// One chat's updates are handled one at a time (striped by chat id).
    locks: Vec<tokio::sync::Mutex<()>>,
    /// Cancelled at shutdown.
    pub shutdown: CancellationToken,
}

impl std::ops::Deref for Bridge {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Stripes of the per-chat lock.
const LOCK_STRIPES: usize = 64;

impl Bridge {
    /// Sets the bridge up on the platform's `state`.
    pub async fn build(
        state: AppState,
        settings: BridgeSettings,
        shutdown: CancellationToken,
    ) -> Result<Self, BridgeError> {
        let bot_id = settings
            .token
            .split_once(':')
            .and_then(|(id, secret)| (!secret.is_empty()).then_some(id))
            .and_then(|id| id.parse::<i64>().ok())
            .ok_or(BridgeError::Token)?;
        let secret_ok = settings
            .webhook_secret
            .as_deref()
            .is_some_and(intake::valid_secret);
        if settings.webhook_url.is_some() && !secret_ok {
            return Err(BridgeError::WebhookSecret);
        }
        let api = BotApi::new(&settings.api_url, &settings.token, shutdown.clone())
            .map_err(BridgeError::Http)?;
        let store = Store::open(state.commands.jetstream()).await?;
        Ok(Self(Arc::new(Inner {
            state,
            api,
            store,
            settings,
            bot_id,
            worker_id: format!("telegram-{}", uuid::Uuid::new_v4().simple()),
            locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            shutdown,
        })))
    }

    /// Runs until shutdown: updates in, updates handled, deliveries from the log.
    pub async fn run(self) {
        tracing::info!(
            bot_id = self.bot_id,
            mode = if self.settings.webhook_url.is_some() {
                "webhook"
            } else {
                "long polling"
            },
            "telegram bridge starting"
        );
        tokio::join!(intake::run(&self), handle::run(&self), deliver::run(&self),);
    }

    /// The lock of `chat`'s stripe.
    pub(crate) fn chat_lock(&self, chat: i64) -> &tokio::sync::Mutex<()> {
        &self.locks[(chat.unsigned_abs() % LOCK_STRIPES as u64) as usize]
    }
}
