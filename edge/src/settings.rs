//! [`EdgeSettings`]: what the edge needs from the binary's one typed config, already validated
//! and decoded (the edge never reads the environment).

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;
use warren_domain::user::{ApprovalMode, Provider, Tier};

/// Key material that must never be printed.
#[derive(Clone)]
pub struct KeyBytes(pub Vec<u8>);

impl fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One tier's quotas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Messages a user may send per UTC day.
    pub messages_per_day: u64,
    /// Agents a user may have at once (deleted ones do not count).
    pub max_agents: u64,
    /// Model tokens (read and written, as the providers count them through the model proxy)
    /// a user's agents may use per UTC day.
    pub tokens_per_day: u64,
}

/// Quotas per tier.
#[derive(Clone, Copy, Debug)]
pub struct TierLimits {
    /// `free`.
    pub free: Limits,
    /// `pro`.
    pub pro: Limits,
    /// `enterprise`.
    pub enterprise: Limits,
}

impl TierLimits {
    /// The quotas of `tier`.
    pub fn of(&self, tier: Tier) -> Limits {
        match tier {
            Tier::Free => self.free,
            Tier::Pro => self.pro,
            Tier::Enterprise => self.enterprise,
        }
    }
}

/// Request rate limits (fixed windows shared by every edge process; see ADR 17).
#[derive(Clone, Copy, Debug)]
pub struct RateLimits {
    /// Auth requests (login, verify, refresh) per client IP per minute.
    pub auth_per_ip_per_minute: u32,
    /// Magic-link emails per address per requesting IP per hour.
    pub login_per_email_per_hour: u32,
    /// Magic-link emails per address per hour, whoever asks (stops mail bombing).
    pub login_per_email_all_ips_per_hour: u32,
    /// Sign-in code attempts per client IP per hour.
    pub code_attempts_per_ip_per_hour: u32,
    /// WebSocket connection attempts per client IP per minute.
    pub ws_connects_per_ip_per_minute: u32,
    /// Writes (POST, PATCH, DELETE) per signed-in user per minute.
    pub write_per_user_per_minute: u32,
    /// Writes per client IP per minute.
    pub write_per_ip_per_minute: u32,
}

/// The platform's model defaults for users without a key of their own (the model proxy's
/// upstream for them, ADR 23).
#[derive(Clone)]
pub struct PlatformDefaults {
    /// Provider of the shared key.
    pub provider: Option<Provider>,
    /// Endpoint override of the shared key.
    pub base_url: Option<String>,
    /// The shared key itself.
    pub api_key: Option<KeyBytes>,
    /// Model for new agents when none is given.
    pub model: String,
}

impl fmt::Debug for PlatformDefaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlatformDefaults")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("model", &self.model)
            .finish()
    }
}

/// Everything the edge is configured with.
#[derive(Clone, Debug)]
pub struct EdgeSettings {
    /// Base URL of the web console; magic links point at `{frontend_url}/auth/verify`.
    pub frontend_url: String,
    /// HS256 key for access tokens (and the pepper of magic codes).
    pub jwt_secret: KeyBytes,
    /// AES-256-GCM master key for provider API keys (32 bytes).
    pub encryption_key: KeyBytes,
    /// Whether new users wait for an admin.
    pub approval: ApprovalMode,
    /// Lowercased addresses that become admins on first sign-in.
    pub admin_emails: HashSet<String>,
    /// Allowed browser origins (`*` for any); empty means no CORS headers.
    pub cors_origins: Vec<String>,
    /// How long a magic link and its code stay valid.
    pub magic_link_ttl: Duration,
    /// Access token lifetime.
    pub access_token_ttl: Duration,
    /// Refresh token lifetime.
    pub refresh_token_ttl: Duration,
    /// Quotas per tier.
    pub tiers: TierLimits,
    /// Request rate limits.
    pub rate: RateLimits,
    /// Shared model defaults.
    pub defaults: PlatformDefaults,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest file `PUT /files/{agent}/{path}` accepts, in bytes (streamed, never buffered).
    pub upload_max_bytes: u64,
    /// Largest model request a runtime may send through the model proxy, in bytes.
    pub model_proxy_max_body_bytes: usize,
    /// Pending commits beyond which `GET /api/v1/health` reports a projection as lagging.
    pub health_max_lag: u64,
    /// Connection caps and timeouts.
    pub http: crate::conns::HttpLimits,
    /// Sandboxes awake at once (deploying or running) past which creating, starting, repairing
    /// or redeploying an agent is refused with 503 `at_capacity`; 0: no cap.
    pub max_sandboxes: u32,
    /// The Telegram bridge's part of the edge.
    pub telegram: TelegramSettings,
    /// The chain id wallet sign-in messages name (`WARREN_WALLET_CHAIN_ID`).
    pub wallet_chain_id: u64,
    /// The OAuth providers people may sign in with (none configured: neither is offered).
    pub oauth: OAuthSettings,
    /// What model calls cost, by provider, model and day (`[[prices]]` in the config file): the
    /// usage API prices metered tokens with it when it answers.
    pub prices: warren_domain::usage::PriceTable,
}

/// The OAuth / OpenID Connect providers, each present only when its client is configured.
#[derive(Clone, Debug, Default)]
pub struct OAuthSettings {
    /// Google (OpenID Connect: the ID token is checked against the provider's JWKS).
    pub google: Option<OAuthProvider>,
    /// GitHub (OAuth app: the verified primary address is read from its API).
    pub github: Option<OAuthProvider>,
}

/// One OAuth client's registration and its provider's endpoints.
#[derive(Clone)]
pub struct OAuthProvider {
    /// The client id the provider issued.
    pub client_id: String,
    /// The client secret the provider issued.
    pub client_secret: String,
    /// Where the browser is sent to consent.
    pub authorize_url: String,
    /// Where a code is exchanged for tokens.
    pub token_url: String,
    /// Google: the JWKS holding the ID-token signing keys. GitHub: the REST API's base URL.
    pub keys_or_api_url: String,
    /// Google: the accepted `iss` of ID tokens. GitHub: unused.
    pub issuer: String,
}

impl std::fmt::Debug for OAuthProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthProvider")
            .field("client_id", &self.client_id)
            .field("client_secret", &"…")
            .field("authorize_url", &self.authorize_url)
            .field("token_url", &self.token_url)
            .field("keys_or_api_url", &self.keys_or_api_url)
            .field("issuer", &self.issuer)
            .finish()
    }
}

/// What the edge knows of the Telegram bridge.
#[derive(Clone, Default)]
pub struct TelegramSettings {
    /// Telegram user ids that are admins at their first `/start` (`WARREN_TELEGRAM_ADMINS`).
    pub admins: HashSet<i64>,
    /// The secret Telegram sends with each webhook update (`WARREN_TELEGRAM_WEBHOOK_SECRET`);
    /// with none, the webhook route answers 404.
    pub webhook_secret: Option<String>,
}

impl std::fmt::Debug for TelegramSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramSettings")
            .field("admins", &self.admins)
            .field("webhook_secret", &self.webhook_secret.as_ref().map(|_| "…"))
            .finish()
    }
}

impl EdgeSettings {
    /// Settings for tests: fixed keys, approval required, generous limits.
    pub fn for_tests() -> Self {
        let limits = Limits {
            messages_per_day: 100,
            max_agents: 3,
            tokens_per_day: 1_000_000,
        };
        Self {
            frontend_url: "http://localhost:3000".into(),
            jwt_secret: KeyBytes(vec![7; 32]),
            encryption_key: KeyBytes(vec![9; 32]),
            approval: ApprovalMode::Required,
            admin_emails: HashSet::new(),
            telegram: TelegramSettings::default(),
            wallet_chain_id: 1,
            oauth: OAuthSettings::default(),
            prices: warren_domain::usage::PriceTable::default(),
            cors_origins: vec![],
            magic_link_ttl: Duration::from_secs(900),
            access_token_ttl: Duration::from_secs(900),
            refresh_token_ttl: Duration::from_secs(30 * 86_400),
            tiers: TierLimits {
                free: limits,
                pro: limits,
                enterprise: limits,
            },
            rate: RateLimits {
                auth_per_ip_per_minute: 10_000,
                login_per_email_per_hour: 10_000,
                login_per_email_all_ips_per_hour: 10_000,
                code_attempts_per_ip_per_hour: 10_000,
                ws_connects_per_ip_per_minute: 10_000,
                write_per_user_per_minute: 10_000,
                write_per_ip_per_minute: 10_000,
            },
            defaults: PlatformDefaults {
                provider: None,
                base_url: None,
                api_key: None,
                model: "test-model".into(),
            },
            max_body_bytes: 64 * 1024,
            upload_max_bytes: 1024 * 1024,
            model_proxy_max_body_bytes: 8 * 1024 * 1024,
            health_max_lag: 1_000,
            http: crate::conns::HttpLimits::default(),
            max_sandboxes: 0,
        }
    }
}
