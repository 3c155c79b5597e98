//! The one typed configuration of the `warren` binary, loaded once at start from an optional TOML
//! file (`WARREN_CONFIG`, default `warren.toml` if present) and then `WARREN_*` environment
//! variables, which win. Every variable is documented in the README.

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use std::collections::HashSet;
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
#[derive(Clone, Deserialize)]
#[serde(transparent)]
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

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

/// Platform configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `WARREN_NATS_URL`: the NATS server. Unset under `warren dev`: a local one is started.
    pub nats_url: Option<String>,
    /// `WARREN_NATS_CREDENTIALS_DIR`: a directory of role keys (`<role>.nk` nkey seeds: admin,
    /// edge, projector, deployer, chat, notifier); each role connects with its own. `warren dev`
    /// with its own nats-server generates them in `<data_dir>/credentials/nats`.
    pub nats_credentials_dir: Option<PathBuf>,
    /// `WARREN_NATS_SEED`: the nkey seed this (single-role) process connects with; wins over
    /// the directory.
    pub nats_seed: Option<Secret>,
    /// `WARREN_DATABASE_URL`: the read-model PostgreSQL database, as the role that owns the
    /// read-model schema and writes it (projector, `warren replay`, `warren migrate`). Unset
    /// under `warren dev`: a local cluster is started.
    pub database_url: Option<Secret>,
    /// `WARREN_DATABASE_READER_URL`: the same database as a role that may only read it (the
    /// edge and the workers). Unset: they use `WARREN_DATABASE_URL` (with a warning).
    pub database_reader_url: Option<Secret>,
    /// `WARREN_HTTP_ADDR`: where the edge listens.
    pub http_addr: SocketAddr,
    /// `WARREN_DATA_DIR`: where `warren dev` keeps its NATS store and Postgres cluster.
    pub data_dir: PathBuf,
    /// `WARREN_NATS_REPLICAS`: replicas per stream (1 single server, 3 in a cluster).
    pub nats_replicas: usize,
    /// `WARREN_NATS_DUPLICATE_WINDOW_SECS`: the streams' dedupe window, ≥ the longest client retry.
    pub nats_duplicate_window_secs: u64,
    /// `WARREN_NATS_SYNC_INTERVAL`: fsync interval of the nats-server `warren dev` starts
    /// (`2m`, the server default, or `always`).
    pub nats_sync_interval: String,
    /// `WARREN_DB_MAX_CONNECTIONS`: pool size per process.
    pub db_max_connections: u32,
    /// `WARREN_DEV_NATS_PORT`: client port of the nats-server `warren dev` starts (free port if unset).
    pub dev_nats_port: Option<u16>,
    /// `WARREN_DEV_POSTGRES_PORT`: port of the PostgreSQL `warren dev` starts (free port if unset).
    pub dev_postgres_port: Option<u16>,

    /// `WARREN_SMTP_URL`: the mail server for sign-in links and admin notifications, e.g.
    /// `smtp://127.0.0.1:2525` (plain), `smtp://user:pass@host:587?tls=required` (STARTTLS) or
    /// `smtps://user:pass@host` (TLS). Required outside `warren dev`, which logs mail instead.
    pub smtp_url: Option<Secret>,
    /// `WARREN_SMTP_FROM`: the sender of every email.
    pub smtp_from: String,
    /// `WARREN_FRONTEND_URL`: the web console's base URL; links point at
    /// `{frontend_url}/auth/verify?token=…`. Unset: the address the edge listens on.
    pub frontend_url: Option<String>,
    /// `WARREN_JWT_SECRET`: HS256 key of access tokens (≥ 32 bytes). Required outside
    /// `warren dev`, which generates one and keeps it in `<data_dir>/jwt_secret`.
    pub jwt_secret: Option<Secret>,
    /// `WARREN_ENCRYPTION_KEY`: AES-256-GCM master key of provider API keys, 32 bytes as 64 hex
    /// digits. Required outside `warren dev`, which generates one in `<data_dir>/encryption_key`.
    pub encryption_key: Option<Secret>,
    /// `WARREN_APPROVAL`: `required` (new users wait for an admin) or `open` (approved at once).
    pub approval: ApprovalMode,
    /// `WARREN_ADMIN_EMAILS`: comma-separated addresses that become admins on first sign-in.
    pub admin_emails: String,
    /// `WARREN_CORS_ORIGINS`: comma-separated browser origins allowed to call the API (`*` for
    /// any); empty sends no CORS headers.
    pub cors_origins: String,
    /// `WARREN_MAGIC_LINK_TTL_SECS`: how long a sign-in link and its code stay valid.
    pub magic_link_ttl_secs: u64,
    /// `WARREN_ACCESS_TOKEN_TTL_SECS`: access token lifetime.
    pub access_token_ttl_secs: u64,
    /// `WARREN_REFRESH_TOKEN_TTL_SECS`: refresh token lifetime.
    pub refresh_token_ttl_secs: u64,
    /// `WARREN_TIER_FREE_MESSAGES_PER_DAY`: messages per UTC day on the free tier.
    pub tier_free_messages_per_day: u64,
    /// `WARREN_TIER_FREE_MAX_AGENTS`: agents at once on the free tier.
    pub tier_free_max_agents: u64,
    /// `WARREN_TIER_PRO_MESSAGES_PER_DAY`: messages per UTC day on the pro tier.
    pub tier_pro_messages_per_day: u64,
    /// `WARREN_TIER_PRO_MAX_AGENTS`: agents at once on the pro tier.
    pub tier_pro_max_agents: u64,
    /// `WARREN_TIER_ENTERPRISE_MESSAGES_PER_DAY`: messages per UTC day on the enterprise tier.
    pub tier_enterprise_messages_per_day: u64,
    /// `WARREN_TIER_ENTERPRISE_MAX_AGENTS`: agents at once on the enterprise tier.
    pub tier_enterprise_max_agents: u64,
    /// `WARREN_RATE_AUTH_PER_IP_PER_MINUTE`: sign-in, verify and refresh requests per client IP.
    pub rate_auth_per_ip_per_minute: u32,
    /// `WARREN_RATE_LOGIN_PER_EMAIL_PER_HOUR`: sign-in emails per address per requesting IP.
    pub rate_login_per_email_per_hour: u32,
    /// `WARREN_RATE_LOGIN_PER_EMAIL_ALL_IPS_PER_HOUR`: sign-in emails per address, whoever asks.
    pub rate_login_per_email_all_ips_per_hour: u32,
    /// `WARREN_RATE_CODE_ATTEMPTS_PER_IP_PER_HOUR`: sign-in code attempts per client IP.
    pub rate_code_attempts_per_ip_per_hour: u32,
    /// `WARREN_RATE_WS_CONNECTS_PER_IP_PER_MINUTE`: WebSocket connection attempts per client IP.
    pub rate_ws_connects_per_ip_per_minute: u32,
    /// `WARREN_RATE_WRITES_PER_USER_PER_MINUTE`: POST/PUT/PATCH/DELETE requests per signed-in
    /// user.
    pub rate_writes_per_user_per_minute: u32,
    /// `WARREN_RATE_WRITES_PER_IP_PER_MINUTE`: POST/PUT/PATCH/DELETE requests per client IP.
    pub rate_writes_per_ip_per_minute: u32,
    /// `WARREN_HTTP_MAX_BODY_BYTES`: the largest request body accepted (413 beyond).
    pub http_max_body_bytes: usize,
    /// `WARREN_UPLOAD_MAX_BYTES`: the largest file `PUT /api/v1/files/{agent}/{path}` accepts
    /// (413 beyond); uploads are streamed to the runtime, not held by the edge.
    pub upload_max_bytes: u64,
    /// `WARREN_HTTP_IDLE_TIMEOUT_SECS`: a connection that sends no byte this long after it was
    /// accepted is closed.
    pub http_idle_timeout_secs: u64,
    /// `WARREN_HTTP_HEADER_TIMEOUT_SECS`: a request head not complete this long after the edge
    /// started waiting for it (at accept, or after the previous response) closes the connection.
    pub http_header_timeout_secs: u64,
    /// `WARREN_HTTP_MAX_CONNECTIONS`: connections at once in all; 0 = the file-descriptor limit
    /// minus 1,024 kept for NATS, PostgreSQL, agent processes and files.
    pub http_max_connections: usize,
    /// `WARREN_HTTP_MAX_CONNECTIONS_PER_IP`: connections at once from one client address.
    pub http_max_connections_per_ip: usize,
    /// `WARREN_HTTP_UNCAPPED_IPS`: comma-separated addresses the per-IP cap does not apply to (a
    /// reverse proxy in front of the edge).
    pub http_uncapped_ips: String,
    /// `WARREN_HEALTH_MAX_LAG`: pending commits beyond which `/api/v1/health` reports a
    /// projection as lagging (`degraded`).
    pub health_max_lag: u64,
    /// `WARREN_DEFAULT_PROVIDER`: provider of the platform key for users without their own
    /// (`anthropic | openai | openrouter | libertai | custom`).
    pub default_provider: Option<Provider>,
    /// `WARREN_DEFAULT_BASE_URL`: endpoint of the platform key (required for `custom`).
    pub default_base_url: Option<String>,
    /// `WARREN_DEFAULT_API_KEY`: the platform key used for users without their own.
    pub default_api_key: Option<Secret>,
    /// `WARREN_DEFAULT_MODEL`: model of new agents when the request names none.
    pub default_model: String,
    /// `WARREN_AGENT_BIN`: the `warren-agent` runtime binary the deployer's `process`
    /// provisioner starts. Unset: the one next to the `warren` executable, else on `PATH`.
    pub agent_bin: Option<PathBuf>,
    /// `WARREN_DEPLOYER_RECONCILE_SECS`: how often the deployer compares the agents the log wants
    /// running with the processes that are (it also does at start).
    pub deployer_reconcile_secs: u64,
    /// `WARREN_DEPLOYER_HEALTH_TIMEOUT_SECS`: how long a started agent runtime may take to answer
    /// `GET /health` before its deployment fails at the health check.
    pub deployer_health_timeout_secs: u64,
    /// `WARREN_CHAT_LEASE_BEAT_SECS`: how often a chat worker rewrites the lease of each run it
    /// is running.
    pub chat_lease_beat_secs: u64,
    /// `WARREN_CHAT_LEASE_STALE_SECS`: a run whose lease is older than this belongs to a dead
    /// worker, and another replica fails it as `worker_lost` (at least twice the beat).
    pub chat_lease_stale_secs: u64,
    /// `WARREN_CHAT_SWEEP_SECS`: how often each chat worker looks for stale leases.
    pub chat_sweep_secs: u64,
    /// `WARREN_CHAT_LIVE_TTL_SECS`: how long a run's live deltas (tokens, tool calls) stay in the
    /// log for replay; the run's facts are kept regardless.
    pub chat_live_ttl_secs: u64,
    /// `WARREN_RUNTIME_PLATFORM_URL`: the edge URL the deployer gives each runtime for its
    /// session tools. Unset: `http://` + `WARREN_HTTP_ADDR`, an unspecified address as loopback.
    pub runtime_platform_url: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats_url: None,
            nats_credentials_dir: None,
            nats_seed: None,
            database_url: None,
            database_reader_url: None,
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from(".warren"),
            nats_replicas: 1,
            nats_duplicate_window_secs: 120,
            nats_sync_interval: "2m".into(),
            db_max_connections: 10,
            dev_nats_port: None,
            dev_postgres_port: None,
            smtp_url: None,
            smtp_from: "Warren <warren@localhost>".into(),
            frontend_url: None,
            jwt_secret: None,
            encryption_key: None,
            approval: ApprovalMode::Required,
            admin_emails: String::new(),
            cors_origins: String::new(),
            magic_link_ttl_secs: 900,
            access_token_ttl_secs: 900,
            refresh_token_ttl_secs: 30 * 86_400,
            tier_free_messages_per_day: 50,
            tier_free_max_agents: 1,
            tier_pro_messages_per_day: 1_000,
            tier_pro_max_agents: 5,
            tier_enterprise_messages_per_day: 10_000,
            tier_enterprise_max_agents: 50,
            rate_auth_per_ip_per_minute: 30,
            rate_login_per_email_per_hour: 5,
            rate_login_per_email_all_ips_per_hour: 20,
            rate_code_attempts_per_ip_per_hour: 30,
            rate_ws_connects_per_ip_per_minute: 60,
            rate_writes_per_user_per_minute: 60,
            rate_writes_per_ip_per_minute: 300,
            http_max_body_bytes: 256 * 1024,
            upload_max_bytes: 25 * 1024 * 1024,
            health_max_lag: 1_000,
            http_idle_timeout_secs: 10,
            http_header_timeout_secs: 10,
            http_max_connections: 0,
            http_max_connections_per_ip: 256,
            http_uncapped_ips: String::new(),
            default_provider: None,
            default_base_url: None,
            default_api_key: None,
            default_model: "qwen3-coder-next".into(),
            agent_bin: None,
            deployer_reconcile_secs: 30,
            deployer_health_timeout_secs: 30,
            chat_lease_beat_secs: 3,
            chat_lease_stale_secs: 15,
            chat_sweep_secs: 5,
            chat_live_ttl_secs: 86_400,
            runtime_platform_url: None,
        }
    }
}

impl Config {
    /// Loads the file (if any) then the environment, and validates.
    pub fn load() -> anyhow::Result<Self> {
        let file = std::env::var("WARREN_CONFIG").unwrap_or_else(|_| "warren.toml".into());
        let config: Config = Figment::new()
            .merge(Toml::file(file))
            .merge(Env::prefixed("WARREN_").ignore(&["CONFIG"]))
            .extract()?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
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
            self.deployer_reconcile_secs >= 1 && self.deployer_health_timeout_secs >= 1,
            "WARREN_DEPLOYER_RECONCILE_SECS and WARREN_DEPLOYER_HEALTH_TIMEOUT_SECS must be ≥ 1"
        );
        anyhow::ensure!(
            self.chat_lease_beat_secs >= 1
                && self.chat_sweep_secs >= 1
                && self.chat_live_ttl_secs >= 1,
            "WARREN_CHAT_LEASE_BEAT_SECS, WARREN_CHAT_SWEEP_SECS and WARREN_CHAT_LIVE_TTL_SECS must be ≥ 1"
        );
        anyhow::ensure!(
            self.chat_lease_stale_secs >= 2 * self.chat_lease_beat_secs,
            "WARREN_CHAT_LEASE_STALE_SECS must be at least twice WARREN_CHAT_LEASE_BEAT_SECS"
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

    /// The chat worker's settings.
    pub fn chat_settings(&self) -> ChatSettings {
        ChatSettings {
            lease_beat: Duration::from_secs(self.chat_lease_beat_secs),
            lease_stale: Duration::from_secs(self.chat_lease_stale_secs),
            sweep_every: Duration::from_secs(self.chat_sweep_secs),
            live_ttl_header: format!("{}s", self.chat_live_ttl_secs),
        }
    }

    /// The edge's settings, given the resolved JWT secret and encryption key.
    pub fn edge_settings(
        &self,
        jwt_secret: &Secret,
        encryption_key: &Secret,
    ) -> anyhow::Result<EdgeSettings> {
        let limits = |messages_per_day, max_agents| Limits {
            messages_per_day,
            max_agents,
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
                free: limits(self.tier_free_messages_per_day, self.tier_free_max_agents),
                pro: limits(self.tier_pro_messages_per_day, self.tier_pro_max_agents),
                enterprise: limits(
                    self.tier_enterprise_messages_per_day,
                    self.tier_enterprise_max_agents,
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
            health_max_lag: self.health_max_lag,
            http: self.http_limits()?,
        })
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

    /// The deployer's settings.
    pub fn deployer_settings(&self) -> warren_workers::deployer::DeployerSettings {
        use warren_domain::user::Provider;
        warren_workers::deployer::DeployerSettings {
            data_dir: self.data_dir.clone(),
            agent_bin: self.agent_bin.clone(),
            reconcile_every: std::time::Duration::from_secs(self.deployer_reconcile_secs),
            health_timeout: std::time::Duration::from_secs(self.deployer_health_timeout_secs),
            // The runtime speaks two protocols: Anthropic's, and OpenAI's for everything else.
            default_provider: self.default_provider.map(|provider| match provider {
                Provider::Anthropic => "anthropic".to_owned(),
                _ => "openai".to_owned(),
            }),
            default_base_url: self.default_base_url.clone(),
            default_api_key: self
                .default_api_key
                .as_ref()
                .map(|key| key.expose().to_owned()),
            platform_url: self.runtime_platform_url(),
        }
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
