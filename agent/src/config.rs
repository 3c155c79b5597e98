//! The runtime's one typed configuration: [`Config`], built by the binary from flags and
//! `WARREN_AGENT_*` environment variables ([`Args`]), or directly by tests.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// A value that must never be printed (a bearer token or a provider key).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret value, for handing to a client library or comparing.
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

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// Which wire protocol the model provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI chat completions; also OpenRouter, LibertAI and any OpenAI-compatible endpoint.
    Openai,
    /// Anthropic Messages.
    Anthropic,
}

impl ProviderKind {
    /// The protocol's name, as in `WARREN_AGENT_PROVIDER`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
        }
    }

    /// The provider's public API base (including `/v1`), used when no base URL is given.
    pub fn default_base_url(self) -> &'static str {
        match self {
            ProviderKind::Openai => "https://api.openai.com/v1",
            ProviderKind::Anthropic => "https://api.anthropic.com/v1",
        }
    }
}

/// Where and how to call the model.
#[derive(Clone, Debug)]
pub struct ModelSettings {
    /// The wire protocol.
    pub provider: ProviderKind,
    /// The API base including `/v1` (e.g. `https://openrouter.ai/api/v1`); `None` = the
    /// provider's default.
    pub base_url: Option<String>,
    /// The provider key; `None` sends no credentials (local servers).
    pub api_key: Option<Secret>,
    /// The model name.
    pub model: String,
    /// The system prompt; empty = none.
    pub system_prompt: String,
    /// Anthropic's required `max_tokens` per model turn.
    pub max_tokens: u32,
    /// Reach the model only through the platform's model proxy (`WARREN_AGENT_MODEL_PROXY`):
    /// then `base_url` and `api_key` are unset, and no provider key is in the sandbox.
    pub proxy: Option<ModelProxy>,
}

/// The platform's model proxy (Warren's ADR 23): `{platform}/api/v1/runtime/agents/{id}/model`,
/// called with this runtime's own agent token; the platform adds the provider's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelProxy {
    /// `{platform}/api/v1/runtime/agents/{id}/model`; the protocol's name follows.
    pub base: String,
    /// The runtime's own token (`WARREN_AGENT_TOKEN`), presented as the key.
    pub token: Secret,
}

impl ModelProxy {
    /// The proxy of `platform`, called with `token`.
    pub fn new(platform: &Platform, token: &Secret) -> Self {
        Self {
            base: format!(
                "{}/api/v1/runtime/agents/{}/model",
                platform.url, platform.agent_id
            ),
            token: token.clone(),
        }
    }
}

impl ModelSettings {
    /// Whether a provider is configured at all: the platform's model proxy (which decides), a
    /// key (for the provider's public API) or a base URL (a local or keyless server). Without
    /// any, a model call cannot succeed.
    pub fn is_configured(&self) -> bool {
        self.proxy.is_some() || self.api_key.is_some() || self.base_url.is_some()
    }

    /// The base URL actually used, without a trailing slash: through the proxy,
    /// `{proxy}/{protocol}`.
    pub fn base_url(&self) -> String {
        if let Some(proxy) = &self.proxy {
            return format!("{}/{}", proxy.base, self.provider.as_str());
        }
        self.base_url
            .as_deref()
            .unwrap_or(self.provider.default_base_url())
            .trim_end_matches('/')
            .to_owned()
    }

    /// The key presented to the model endpoint: through the proxy, the runtime's own token.
    pub fn key(&self) -> Option<&Secret> {
        match &self.proxy {
            Some(proxy) => Some(&proxy.token),
            None => self.api_key.as_ref(),
        }
    }
}

/// Bounds on what one request or tool call may use.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Default timeout of a `shell` tool call and of `POST /exec`.
    pub shell_timeout: Duration,
    /// The longest timeout a caller or the model may ask for.
    pub max_shell_timeout: Duration,
    /// Bytes of tool output kept (and of `/exec` output streamed).
    pub output_cap: usize,
    /// Model turns per run before the run stops with `max_iterations`.
    pub max_iterations: u32,
    /// Idle time after which a `keepalive` event is sent on an SSE stream.
    pub keepalive: Duration,
    /// Largest `POST /files/{path}` body.
    pub max_upload_bytes: u64,
    /// Largest body `web_fetch` reads.
    pub fetch_max_bytes: usize,
    /// Longest silence from the model provider (between stream chunks) before the run fails.
    pub model_idle_timeout: Duration,
    /// The sandbox's out-of-memory kill counter: a run during which it rises ends with
    /// `sandbox_out_of_memory`. `None` outside a sandbox (the host's counter says nothing about
    /// this runtime).
    pub oom_counter: Option<crate::memory::OomCounter>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            shell_timeout: Duration::from_secs(120),
            max_shell_timeout: Duration::from_secs(600),
            output_cap: 64 * 1024,
            max_iterations: 25,
            keepalive: Duration::from_secs(15),
            max_upload_bytes: 50 * 1024 * 1024,
            fetch_max_bytes: 1024 * 1024,
            model_idle_timeout: Duration::from_secs(300),
            oom_counter: None,
        }
    }
}

/// Everything [`crate::serve`] needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The bearer token every route but `/health` requires.
    pub token: Secret,
    /// The directory tools and `/files` are confined to (created if missing).
    pub workspace: PathBuf,
    /// Where chat histories are kept as JSON across restarts; `None` = memory only.
    pub state_dir: Option<PathBuf>,
    /// The default model; a `POST /chat` may override provider, base URL, key and model (only
    /// the provider and model through the model proxy).
    pub model: ModelSettings,
    /// Bounds.
    pub limits: Limits,
    /// The platform this runtime works for, if it offers the session tools.
    pub platform: Option<Platform>,
}

/// Where the session tools (`sessions_search`, `sessions_get`) ask: the platform's runtime API,
/// called with this runtime's own token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// The platform's base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// The agent this runtime is.
    pub agent_id: String,
}

/// Config problems found before serving.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The token is empty: the runtime never serves unauthenticated.
    #[error("WARREN_AGENT_TOKEN must not be empty")]
    EmptyToken,
    /// `WARREN_AGENT_TOKEN_FILE` cannot be read.
    #[error("reading WARREN_AGENT_TOKEN_FILE {path}: {source}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A limit is zero where zero makes no sense.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The model proxy needs the platform and the agent id.
    #[error("WARREN_AGENT_MODEL_PROXY needs WARREN_AGENT_PLATFORM_URL and WARREN_AGENT_ID")]
    ProxyWithoutPlatform,
    /// A provider key or URL next to the model proxy: the proxy is there so the sandbox holds
    /// neither.
    #[error(
        "WARREN_AGENT_MODEL_PROXY cannot be combined with WARREN_AGENT_API_KEY or WARREN_AGENT_BASE_URL"
    )]
    ProxyWithProvider,
}

impl Config {
    /// A config with the defaults: OpenAI protocol, no key, memory-only history.
    pub fn new(workspace: impl Into<PathBuf>, token: impl Into<Secret>) -> Self {
        Self {
            token: token.into(),
            workspace: workspace.into(),
            state_dir: None,
            model: ModelSettings {
                provider: ProviderKind::Openai,
                base_url: None,
                api_key: None,
                model: "gpt-4o-mini".into(),
                system_prompt: DEFAULT_SYSTEM_PROMPT.into(),
                max_tokens: 4096,
                proxy: None,
            },
            limits: Limits::default(),
            platform: None,
        }
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.token.expose().is_empty() {
            return Err(ConfigError::EmptyToken);
        }
        if let Some(proxy) = &self.model.proxy {
            if self.model.api_key.is_some() || self.model.base_url.is_some() {
                return Err(ConfigError::ProxyWithProvider);
            }
            if proxy.base.is_empty() {
                return Err(ConfigError::ProxyWithoutPlatform);
            }
        }
        let limits = &self.limits;
        let nonzero = [
            ("shell timeout", limits.shell_timeout.is_zero()),
            ("keepalive interval", limits.keepalive.is_zero()),
            ("max tool iterations", limits.max_iterations == 0),
            ("output cap", limits.output_cap == 0),
        ];
        match nonzero.into_iter().find(|(_, zero)| *zero) {
            Some((name, _)) => Err(ConfigError::Zero(name)),
            None => Ok(()),
        }
    }
}

/// The prompt used when none is configured.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant running inside a sandbox. \
You can run shell commands and read, write, edit and list files in your workspace, and fetch web \
pages. Use the tools when they help; answer concisely.";

/// The binary's flags; each also reads its `WARREN_AGENT_*` variable.
#[derive(Debug, clap::Parser)]
#[command(
    name = "warren-agent",
    version,
    about = "Warren's agent runtime: a model loop with tools behind a baal-agent compatible HTTP API"
)]
pub struct Args {
    /// Listen address; port 0 picks a free port. The bound address is printed on stdout first.
    #[arg(long, env = "WARREN_AGENT_ADDR", default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
    /// Bearer token required on every route but /health.
    #[arg(
        long,
        env = "WARREN_AGENT_TOKEN",
        hide_env_values = true,
        required_unless_present = "token_file",
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// A file holding the token instead (a sandbox's token stays out of its environment and
    /// out of `docker inspect`); surrounding whitespace is ignored.
    #[arg(long, env = "WARREN_AGENT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Workspace directory (created if missing).
    #[arg(long, env = "WARREN_AGENT_WORKSPACE", default_value = ".")]
    pub workspace: PathBuf,
    /// Directory for persisted chat histories; unset = memory only.
    #[arg(long, env = "WARREN_AGENT_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Model provider protocol.
    #[arg(
        long,
        env = "WARREN_AGENT_PROVIDER",
        value_enum,
        default_value = "openai"
    )]
    pub provider: ProviderKind,
    /// API base including /v1 (default: the provider's public API).
    #[arg(long, env = "WARREN_AGENT_BASE_URL")]
    pub base_url: Option<String>,
    /// Provider API key.
    #[arg(long, env = "WARREN_AGENT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Model name.
    #[arg(long, env = "WARREN_AGENT_MODEL", default_value = "gpt-4o-mini")]
    pub model: String,
    /// System prompt (default: a short sandbox-assistant prompt).
    #[arg(long, env = "WARREN_AGENT_SYSTEM_PROMPT")]
    pub system_prompt: Option<String>,
    /// Anthropic max_tokens per model turn.
    #[arg(long, env = "WARREN_AGENT_MAX_TOKENS", default_value_t = 4096)]
    pub max_tokens: u32,
    /// Default shell/exec timeout, seconds.
    #[arg(long, env = "WARREN_AGENT_SHELL_TIMEOUT_SECS", default_value_t = 120)]
    pub shell_timeout_secs: u64,
    /// Longest shell/exec timeout a request may ask for, seconds.
    #[arg(
        long,
        env = "WARREN_AGENT_MAX_SHELL_TIMEOUT_SECS",
        default_value_t = 600
    )]
    pub max_shell_timeout_secs: u64,
    /// Bytes of tool output kept (and of /exec output streamed).
    #[arg(long, env = "WARREN_AGENT_OUTPUT_CAP_BYTES", default_value_t = 64 * 1024)]
    pub output_cap_bytes: usize,
    /// Model turns per run.
    #[arg(long, env = "WARREN_AGENT_MAX_TOOL_ITERATIONS", default_value_t = 25)]
    pub max_tool_iterations: u32,
    /// Idle seconds before a keepalive event.
    #[arg(long, env = "WARREN_AGENT_KEEPALIVE_SECS", default_value_t = 15)]
    pub keepalive_secs: u64,
    /// Largest file upload, bytes.
    #[arg(long, env = "WARREN_AGENT_MAX_UPLOAD_BYTES", default_value_t = 50 * 1024 * 1024)]
    pub max_upload_bytes: u64,
    /// Largest body web_fetch reads, bytes.
    #[arg(long, env = "WARREN_AGENT_FETCH_MAX_BYTES", default_value_t = 1024 * 1024)]
    pub fetch_max_bytes: usize,
    /// Longest model silence between stream chunks, seconds.
    #[arg(
        long,
        env = "WARREN_AGENT_MODEL_IDLE_TIMEOUT_SECS",
        default_value_t = 300
    )]
    pub model_idle_timeout_secs: u64,
    /// The platform's base URL for the session tools (set by the deployer, with the agent id).
    #[arg(long, env = "WARREN_AGENT_PLATFORM_URL", requires = "agent_id")]
    pub platform_url: Option<String>,
    /// The agent this runtime is, for the session tools and the model proxy.
    #[arg(long, env = "WARREN_AGENT_ID")]
    pub agent_id: Option<String>,
    /// Call the model only through the platform's model proxy
    /// (`{platform}/api/v1/runtime/agents/{id}/model/{provider}`, with this runtime's token as
    /// the key); needs the platform URL and agent id, and refuses a key or base URL.
    #[arg(long, env = "WARREN_AGENT_MODEL_PROXY")]
    pub model_proxy: bool,
    /// Wait, serving nothing (not even `/health`), until this file assigns the runtime to an
    /// agent ([`Assignment`]) and the token file is there: how a warm pool's runtime is started
    /// before anyone's agent exists. An assigned runtime that restarts reads it at once.
    #[arg(long, env = "WARREN_AGENT_ASSIGNMENT_FILE", requires = "token_file")]
    pub assignment_file: Option<PathBuf>,
    /// Watch the own cgroup's out-of-memory kills and end a run whose tool was killed for
    /// memory with `sandbox_out_of_memory` (set by the docker provisioner; meaningless outside
    /// a container).
    #[arg(long, env = "WARREN_AGENT_WATCH_OOM")]
    pub watch_oom: bool,
}

/// What makes a waiting runtime one agent's (`WARREN_AGENT_ASSIGNMENT_FILE`, JSON): everything
/// agent-specific the deployer would otherwise put in the environment. It names, but grants
/// nothing: the platform checks every call against the token.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Assignment {
    /// The agent (`WARREN_AGENT_ID`).
    pub agent_id: String,
    /// The platform's URL (`WARREN_AGENT_PLATFORM_URL`), if it offers one.
    #[serde(default)]
    pub platform_url: Option<String>,
    /// The model (`WARREN_AGENT_MODEL`).
    pub model: String,
    /// The system prompt (`WARREN_AGENT_SYSTEM_PROMPT`).
    pub system_prompt: String,
}

impl Assignment {
    /// The assignment in `path` once it is complete: the file parses and the token file
    /// (written before it) holds a token; `None` while either is missing or half-written.
    pub fn ready(path: &std::path::Path, token_file: &std::path::Path) -> Option<Self> {
        let assignment = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        let token = std::fs::read_to_string(token_file).ok()?;
        (!token.trim().is_empty()).then_some(assignment)
    }
}

impl Args {
    /// These flags with `assignment`'s agent-specific values in place of their own.
    pub fn assigned(self, assignment: Assignment) -> Self {
        Self {
            agent_id: Some(assignment.agent_id),
            platform_url: assignment.platform_url.or(self.platform_url),
            model: assignment.model,
            system_prompt: Some(assignment.system_prompt),
            assignment_file: None,
            ..self
        }
    }

    /// The listen address and the validated config.
    pub fn into_config(self) -> Result<(SocketAddr, Config), ConfigError> {
        let token = match (self.token, &self.token_file) {
            (Some(token), _) => token,
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|source| ConfigError::TokenFile {
                    path: path.clone(),
                    source,
                })?
                .trim()
                .to_owned(),
            (None, None) => String::new(),
        };
        let token = Secret(token);
        let platform = match (self.platform_url, self.agent_id) {
            (Some(url), Some(agent_id)) if !url.is_empty() && !agent_id.is_empty() => {
                Some(Platform {
                    url: url.trim_end_matches('/').to_owned(),
                    agent_id,
                })
            }
            _ => None,
        };
        let proxy = match (self.model_proxy, &platform) {
            (false, _) => None,
            (true, Some(platform)) => Some(ModelProxy::new(platform, &token)),
            (true, None) => return Err(ConfigError::ProxyWithoutPlatform),
        };
        let config = Config {
            token,
            workspace: self.workspace,
            state_dir: self.state_dir,
            model: ModelSettings {
                provider: self.provider,
                base_url: self.base_url.filter(|url| !url.is_empty()),
                api_key: self.api_key.filter(|key| !key.is_empty()).map(Secret),
                model: self.model,
                system_prompt: self
                    .system_prompt
                    .unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.into()),
                max_tokens: self.max_tokens,
                proxy,
            },
            limits: Limits {
                shell_timeout: Duration::from_secs(self.shell_timeout_secs),
                max_shell_timeout: Duration::from_secs(self.max_shell_timeout_secs),
                output_cap: self.output_cap_bytes,
                max_iterations: self.max_tool_iterations,
                keepalive: Duration::from_secs(self.keepalive_secs),
                max_upload_bytes: self.max_upload_bytes,
                fetch_max_bytes: self.fetch_max_bytes,
                model_idle_timeout: Duration::from_secs(self.model_idle_timeout_secs),
                oom_counter: if self.watch_oom {
                    crate::memory::OomCounter::own_cgroup()
                } else {
                    None
                },
            },
            platform,
        };
        config.validate()?;
        Ok((self.addr, config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn flags_build_a_config_and_secrets_never_print() {
        let args = Args::try_parse_from([
            "warren-agent",
            "--token",
            "tok",
            "--provider",
            "anthropic",
            "--api-key",
            "sk-secret",
            "--keepalive-secs",
            "3",
        ])
        .expect("parse");
        let (addr, config) = args.into_config().expect("valid");
        assert_eq!(addr.port(), 0);
        assert_eq!(config.model.provider, ProviderKind::Anthropic);
        assert_eq!(config.model.base_url(), "https://api.anthropic.com/v1");
        assert_eq!(config.limits.keepalive, Duration::from_secs(3));
        let printed = format!("{config:?}");
        assert!(!printed.contains("sk-secret") && !printed.contains("\"tok\""));
    }

    #[test]
    fn the_token_can_come_from_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").expect("write");
        let args = Args::try_parse_from([
            "warren-agent",
            "--token-file",
            path.to_str().expect("utf-8"),
        ])
        .expect("parse");
        let (_, config) = args.into_config().expect("valid");
        assert_eq!(config.token.expose(), "from-file");
        let missing = Args::try_parse_from(["warren-agent", "--token-file", "/no/such/token"])
            .expect("parse")
            .into_config();
        assert!(matches!(missing, Err(ConfigError::TokenFile { .. })));
        assert!(
            Args::try_parse_from(["warren-agent"]).is_err(),
            "a token is required"
        );
    }

    #[test]
    fn through_the_model_proxy_the_key_is_the_runtimes_own_token() {
        let args = Args::try_parse_from([
            "warren-agent",
            "--token",
            "agent-tok",
            "--platform-url",
            "http://127.0.0.1:8080/",
            "--agent-id",
            "a1",
            "--model-proxy",
        ])
        .expect("parse");
        let (_, config) = args.into_config().expect("valid");
        let mut model = config.model.clone();
        assert!(model.is_configured());
        assert_eq!(
            model.base_url(),
            "http://127.0.0.1:8080/api/v1/runtime/agents/a1/model/openai"
        );
        assert_eq!(model.key().map(Secret::expose), Some("agent-tok"));
        model.provider = ProviderKind::Anthropic;
        assert_eq!(
            model.base_url(),
            "http://127.0.0.1:8080/api/v1/runtime/agents/a1/model/anthropic"
        );
        assert!(!format!("{config:?}").contains("agent-tok"));
    }

    #[test]
    fn the_model_proxy_refuses_a_provider_key_and_needs_its_platform() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["warren-agent", "--token", "t", "--model-proxy"];
            args.extend_from_slice(extra);
            Args::try_parse_from(args).expect("parse").into_config()
        };
        assert!(matches!(parse(&[]), Err(ConfigError::ProxyWithoutPlatform)));
        let platform = ["--platform-url", "http://p", "--agent-id", "a"];
        for provider in [["--api-key", "sk-x"], ["--base-url", "http://m/v1"]] {
            let mut extra = platform.to_vec();
            extra.extend_from_slice(&provider);
            assert!(matches!(parse(&extra), Err(ConfigError::ProxyWithProvider)));
        }
    }

    #[test]
    fn an_assignment_makes_a_waiting_runtime_one_agent_s() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (file, token) = (dir.path().join("assignment.json"), dir.path().join("token"));
        let args = Args::try_parse_from([
            "warren-agent",
            "--token-file",
            token.to_str().expect("utf-8"),
            "--assignment-file",
            file.to_str().expect("utf-8"),
            "--model-proxy",
        ])
        .expect("parse");
        assert_eq!(Assignment::ready(&file, &token), None, "nothing yet");
        std::fs::write(&token, "agent-tok\n").expect("write");
        std::fs::write(&file, r#"{"agent_id": "a1", "platform_url": "http://p"#).expect("write");
        assert_eq!(Assignment::ready(&file, &token), None, "half-written");
        std::fs::write(
            &file,
            r#"{"agent_id": "a1", "platform_url": "http://p", "model": "m", "system_prompt": "Be brief."}"#,
        )
        .expect("write");
        let assignment = Assignment::ready(&file, &token).expect("complete");
        let (_, config) = args.assigned(assignment).into_config().expect("valid");
        assert_eq!(config.token.expose(), "agent-tok");
        assert_eq!(config.model.model, "m");
        assert_eq!(config.model.system_prompt, "Be brief.");
        assert_eq!(
            config.model.base_url(),
            "http://p/api/v1/runtime/agents/a1/model/openai"
        );
    }

    #[test]
    fn an_empty_token_is_refused() {
        let config = Config::new("/tmp", "");
        assert!(matches!(config.validate(), Err(ConfigError::EmptyToken)));
    }
}
