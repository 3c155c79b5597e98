//! Shared handles every handler gets.

use crate::auth::magic::MagicLinks;
use crate::auth::store::{AuthKv, KvError};
use crate::auth::tokens::Tokens;
use crate::mail::Mailer;
use crate::ratelimit::RateLimiter;
use crate::secrets::{SecretError, SecretStore};
use crate::settings::EdgeSettings;
use sqlx::PgPool;
use std::sync::Arc;
use warren_commands::CommandService;

/// Why the edge could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The auth bucket could not be opened.
    #[error("opening the auth store failed")]
    Auth(#[from] KvError),
    /// The secrets bucket or the master key is unusable.
    #[error("opening the secret store failed")]
    Secrets(#[from] SecretError),
}

/// What handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The write side.
    pub commands: CommandService,
    /// The read models (live schema).
    pub db: PgPool,
    /// The NATS connection (for health and live fan-out).
    pub nats: async_nats::Client,
    /// Validated configuration.
    pub settings: Arc<EdgeSettings>,
    /// Access and refresh tokens.
    pub tokens: Tokens,
    /// Magic links and codes.
    pub magic: MagicLinks,
    /// Auth records that are not tokens (identities).
    pub auth_kv: AuthKv,
    /// Encrypted provider keys.
    pub secrets: SecretStore,
    /// Outgoing mail.
    pub mailer: Mailer,
    /// Request rate limits.
    pub limiter: Arc<RateLimiter>,
    /// Outgoing HTTP (agent runtime health checks).
    pub http: reqwest::Client,
}

impl AppState {
    /// Opens the KV buckets the edge uses (the topology must exist: see `CommandService::start`).
    pub async fn build(
        commands: CommandService,
        db: PgPool,
        nats: async_nats::Client,
        settings: EdgeSettings,
        mailer: Mailer,
    ) -> Result<Self, StateError> {
        let js = commands.jetstream().clone();
        let auth_kv = AuthKv::open(&js).await?;
        let secrets = SecretStore::open(&js, &settings.encryption_key.0).await?;
        let tokens = Tokens::new(
            auth_kv.clone(),
            &settings.jwt_secret.0,
            settings.access_token_ttl,
            settings.refresh_token_ttl,
        );
        let magic = MagicLinks::new(
            auth_kv.clone(),
            &settings.jwt_secret.0,
            settings.magic_link_ttl,
        );
        Ok(Self {
            commands,
            db,
            nats,
            settings: Arc::new(settings),
            tokens,
            magic,
            auth_kv,
            secrets,
            mailer,
            limiter: Arc::default(),
            http: reqwest::Client::new(),
        })
    }
}
