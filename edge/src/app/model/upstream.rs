//! Whose model an agent's runtime reaches through the proxy: the one rule, written once. The
//! agent owner's most recently added provider key (OpenRouter, LibertAI and custom endpoints
//! speak the OpenAI protocol; a key's own base URL wins over its provider's public one), else
//! the platform's default (`WARREN_DEFAULT_PROVIDER`, `WARREN_DEFAULT_BASE_URL`,
//! `WARREN_DEFAULT_API_KEY`), else none.

use crate::error::ApiError;
use crate::settings::PlatformDefaults;
use crate::state::AppState;
use std::fmt;
use warren_domain::ids::UserId;
use warren_domain::user::{ModelProtocol, Provider, ProviderKey, User};

/// Where a model call goes, and with which key.
#[derive(Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The provider.
    pub provider: Provider,
    /// Its API base, including `/v1`, without a trailing slash.
    pub base_url: String,
    /// The key, if the endpoint takes one (a local server may not).
    api_key: Option<String>,
    /// Whether the key is the owner's own (else the platform's).
    pub own_key: bool,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("own_key", &self.own_key)
            .finish()
    }
}

impl Upstream {
    /// The protocol the provider speaks.
    pub fn protocol(&self) -> ModelProtocol {
        self.provider.protocol()
    }

    /// The key to present, in the provider's header style.
    pub fn api_key(&self) -> Option<&str> {
        self.api_key.as_deref()
    }

    /// The URL of `protocol`'s one route under the base.
    pub fn url(&self) -> String {
        match self.protocol() {
            ModelProtocol::Openai => format!("{}/chat/completions", self.base_url),
            ModelProtocol::Anthropic => format!("{}/messages", self.base_url),
        }
    }
}

/// A provider's public API base, if it has one (`custom` has none: its key names its URL).
pub fn public_base_url(provider: Provider) -> Option<&'static str> {
    match provider {
        Provider::Anthropic => Some("https://api.anthropic.com/v1"),
        Provider::Openai => Some("https://api.openai.com/v1"),
        Provider::Openrouter => Some("https://openrouter.ai/api/v1"),
        Provider::Libertai => Some("https://api.libertai.io/v1"),
        Provider::Custom => None,
    }
}

fn base(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

/// The upstream of a user's own key (`secret` is the key itself).
pub fn own(key: &ProviderKey, secret: String) -> Option<Upstream> {
    let base_url = key
        .base_url
        .as_deref()
        .filter(|url| !url.is_empty())
        .or_else(|| public_base_url(key.provider))?;
    Some(Upstream {
        provider: key.provider,
        base_url: base(base_url),
        api_key: Some(secret).filter(|secret| !secret.is_empty()),
        own_key: true,
    })
}

/// The platform's default upstream, if one is configured: a key (for a provider's public API)
/// or a base URL (a local or keyless server). Without a provider named, a base URL alone is a
/// `custom` (OpenAI-compatible) endpoint and a key alone is OpenAI's.
pub fn platform(defaults: &PlatformDefaults) -> Option<Upstream> {
    let api_key = defaults
        .api_key
        .as_ref()
        .map(|key| String::from_utf8_lossy(&key.0).into_owned())
        .filter(|key| !key.is_empty());
    let base_url = defaults.base_url.as_deref().filter(|url| !url.is_empty());
    if api_key.is_none() && base_url.is_none() {
        return None;
    }
    let provider = defaults.provider.unwrap_or(if base_url.is_some() {
        Provider::Custom
    } else {
        Provider::Openai
    });
    Some(Upstream {
        provider,
        base_url: base(base_url.or_else(|| public_base_url(provider))?),
        api_key,
        own_key: false,
    })
}

/// The upstream of `owner`'s agents: their most recently added key whose secret can be read,
/// else the platform's default; `None` when neither is configured.
pub async fn resolve(
    state: &AppState,
    owner_id: UserId,
    owner: &User,
) -> Result<Option<Upstream>, ApiError> {
    if let Some(key) = owner.provider_keys.last()
        && let Some(secret) = state
            .secrets
            .get(owner_id, key.key_id)
            .await
            .map_err(ApiError::internal)?
    {
        return Ok(own(key, secret));
    }
    Ok(platform(&state.settings.defaults))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::KeyBytes;
    use warren_domain::ids::KeyId;

    fn defaults(
        provider: Option<Provider>,
        base_url: Option<&str>,
        key: Option<&str>,
    ) -> PlatformDefaults {
        PlatformDefaults {
            provider,
            base_url: base_url.map(str::to_owned),
            api_key: key.map(|key| KeyBytes(key.as_bytes().to_vec())),
            model: "m".into(),
        }
    }

    fn key(provider: Provider, base_url: Option<&str>) -> ProviderKey {
        ProviderKey {
            key_id: KeyId::new(),
            provider,
            base_url: base_url.map(str::to_owned),
            label: "default".into(),
            fingerprint: "…".into(),
        }
    }

    #[test]
    fn a_users_key_goes_to_its_own_url_else_its_providers_public_one() {
        let openrouter = own(&key(Provider::Openrouter, None), "sk-or".into()).expect("upstream");
        assert_eq!(openrouter.base_url, "https://openrouter.ai/api/v1");
        assert_eq!(openrouter.protocol(), ModelProtocol::Openai);
        assert_eq!(
            openrouter.url(),
            "https://openrouter.ai/api/v1/chat/completions"
        );
        assert!(openrouter.own_key);
        let libertai = own(&key(Provider::Libertai, None), "k".into()).expect("upstream");
        assert_eq!(libertai.base_url, "https://api.libertai.io/v1");
        let custom = own(
            &key(Provider::Custom, Some("http://10.0.0.9:8000/v1/")),
            "k".into(),
        )
        .expect("upstream");
        assert_eq!(custom.url(), "http://10.0.0.9:8000/v1/chat/completions");
        let anthropic = own(&key(Provider::Anthropic, None), "k".into()).expect("upstream");
        assert_eq!(anthropic.url(), "https://api.anthropic.com/v1/messages");
        assert_eq!(anthropic.protocol(), ModelProtocol::Anthropic);
        assert!(!format!("{anthropic:?}").contains("\"k\""));
    }

    #[test]
    fn the_platform_default_needs_a_key_or_a_base_url() {
        assert_eq!(
            platform(&defaults(Some(Provider::Openai), None, None)),
            None
        );
        let local = platform(&defaults(None, Some("http://127.0.0.1:9/v1"), None)).expect("url");
        assert_eq!(local.provider, Provider::Custom);
        assert_eq!(local.api_key(), None);
        assert!(!local.own_key);
        let openai = platform(&defaults(None, None, Some("sk-p"))).expect("key");
        assert_eq!(openai.url(), "https://api.openai.com/v1/chat/completions");
        assert_eq!(openai.api_key(), Some("sk-p"));
        let anthropic =
            platform(&defaults(Some(Provider::Anthropic), None, Some("sk-a"))).expect("key");
        assert_eq!(anthropic.url(), "https://api.anthropic.com/v1/messages");
    }
}
