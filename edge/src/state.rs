//! Shared handles every handler gets.

use crate::app::revocation::Revocations;
use crate::auth::magic::MagicLinks;
use crate::auth::store::{AuthKv, KvError};
use crate::auth::tokens::Tokens;
use crate::feed::Feed;
use crate::follow::hub::Hub;
use crate::idempotency::Ledger;
use crate::mail::Mailer;
use crate::ratelimit::RateLimiter;
use crate::settings::EdgeSettings;
use sqlx::PgPool;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use warren_commands::CommandService;
use warren_commands::sandboxes::{SandboxKvError, SandboxStatsStore};
use warren_commands::secrets::{AgentTokens, HostKeys, ProviderKeys, SecretError, TokenError};
use warren_projections::capacity::Capacity;

/// How long connecting to a model provider may take.
const MODEL_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the edge could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The auth bucket could not be opened.
    #[error("opening the auth store failed")]
    Auth(#[from] KvError),
    /// The secrets bucket or the master key is unusable.
    #[error("opening the secret store failed")]
    Secrets(#[from] SecretError),
    /// The agent token store is unusable.
    #[error("opening the agent token store failed")]
    AgentTokens(#[from] TokenError),
    /// The HTTP client could not be built.
    #[error("building the HTTP client failed")]
    Http(#[source] reqwest::Error),
    /// The sandbox usage bucket could not be opened.
    #[error(transparent)]
    Sandboxes(#[from] SandboxKvError),
    /// A KV bucket of the edge's (rate limits, idempotency keys) could not be opened.
    #[error("opening bucket {bucket} failed")]
    Bucket {
        /// The bucket.
        bucket: &'static str,
        /// Cause.
        #[source]
        source: async_nats::jetstream::context::KeyValueError,
    },
}

/// What handlers share: one [`Shared`] behind an `Arc`, so a clone is one counter increment.
/// Every live connection holds one, and the KV stores and streams inside carry their cached
/// stream info (kilobytes each), so a field-by-field clone would cost that per connection.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
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
    pub secrets: ProviderKeys,
    /// Outgoing mail.
    pub mailer: Mailer,
    /// Request rate limits, shared by every edge process.
    pub limiter: RateLimiter,
    /// Who must re-check their open connections (logouts, revocations, role changes).
    pub revocations: Revocations,
    /// First answers of idempotent writes, shared by every edge process.
    pub idempotency: Ledger,
    /// Outgoing HTTP (agent runtime health checks and proxies, OAuth providers); follows no
    /// redirect.
    pub http: reqwest::Client,
    /// Google's ID-token signing keys, cached.
    pub oauth_keys: crate::auth::oauth::google::Jwks,
    /// Outgoing HTTP to model providers (the model proxy): a connect timeout, no redirects.
    pub model_http: reqwest::Client,
    /// The model calls each agent has in flight through this edge (capped).
    pub model_calls: crate::app::model::in_flight::InFlight,
    /// Agents' runtime tokens (for the proxies to runtimes).
    pub agent_tokens: AgentTokens,
    /// SSH hosts' private keys (admins register them).
    pub host_keys: HostKeys,
    /// The cap on awake sandboxes (`WARREN_MAX_SANDBOXES`).
    pub capacity: Capacity,
    /// What each sandbox uses, as the deployer last recorded it.
    pub sandbox_stats: SandboxStatsStore,
    /// Cancelled when the server shuts down, so long-lived streams end and let it drain.
    pub closing: CancellationToken,
    /// Live conversations: one shared read of each per process.
    pub hub: Hub,
    /// The user-wide feeds: one read of the agents' and conversations' logs per process.
    pub feed: Feed,
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
        let secrets = ProviderKeys::open(&js, &settings.encryption_key.0).await?;
        let agent_tokens = AgentTokens::open(&js, &settings.encryption_key.0).await?;
        let host_keys = HostKeys::open(&js, &settings.encryption_key.0).await?;
        let sandbox_stats = SandboxStatsStore::open(&js).await?;
        let capacity = Capacity::new(settings.max_sandboxes, db.clone());
        let tokens = Tokens::new(
            auth_kv.clone(),
            &settings.jwt_secret.0,
            settings.access_token_ttl,
            settings.refresh_token_ttl,
        );
        let closing = CancellationToken::new();
        let model_http = reqwest::Client::builder()
            .connect_timeout(MODEL_CONNECT_TIMEOUT)
            // A provider's answer is passed back, never followed elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(StateError::Http)?;
        // The client for agent runtimes: a runtime is hostile (ADR 25), so its redirects are
        // never followed (one could point the edge at an internal address and have the answer
        // streamed back to its user).
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(StateError::Http)?;
        let limiter = RateLimiter::open(&js)
            .await
            .map_err(|source| StateError::Bucket {
                bucket: warren_commands::topology::KV_RATE_LIMITS,
                source,
            })?;
        let idempotency = Ledger::open(&js)
            .await
            .map_err(|source| StateError::Bucket {
                bucket: warren_commands::topology::KV_IDEMPOTENCY,
                source,
            })?;
        let magic = MagicLinks::new(
            auth_kv.clone(),
            &settings.jwt_secret.0,
            settings.magic_link_ttl,
        );
        Ok(Self(Arc::new(Shared {
            commands,
            nats,
            settings: Arc::new(settings),
            tokens,
            magic,
            auth_kv,
            secrets,
            mailer,
            limiter,
            idempotency,
            revocations: Revocations::start(js.clone(), closing.clone()),
            http,
            oauth_keys: Default::default(),
            model_http,
            model_calls: Default::default(),
            agent_tokens,
            host_keys,
            capacity,
            sandbox_stats,
            hub: Hub::new(js.clone(), closing.clone()),
            feed: Feed::new(js, db.clone(), closing.clone()),
            db,
            closing,
        })))
    }
}
