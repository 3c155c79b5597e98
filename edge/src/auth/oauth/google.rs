//! Google's OpenID Connect ID token: verified against the provider's JWKS (RS256 only, so a
//! token claiming `HS256` or `none` is refused before any key is looked at), then its issuer,
//! audience (this client), expiry and nonce (the one this flow sent).
//!
//! The JWKS is cached for an hour. A `kid` the cache does not hold makes it fetch again (the
//! provider rotated its keys), at most once per unknown `kid` every five minutes and ten times a
//! minute in all, so forged `kid`s cannot make the edge hammer the provider.

use super::ProviderIdentity;
use super::flow::PROVIDER_TIMEOUT;
use crate::error::ApiError;
use crate::settings::OAuthProvider;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use warren_domain::user::AuthKind;

/// How long fetched keys are trusted before they are fetched again.
const KEYS_MAX_AGE: Duration = Duration::from_secs(3600);
/// An unknown `kid` triggers at most one fetch in this window.
const UNKNOWN_KID_WINDOW: Duration = Duration::from_secs(300);
/// Fetches triggered by unknown `kid`s, per minute, at most.
const REFETCHES_PER_MINUTE: usize = 10;

/// The provider's signing keys, cached.
#[derive(Default)]
pub struct Jwks {
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    keys: Option<(JwkSet, Instant)>,
    tried: HashMap<String, Instant>,
    refetches: VecDeque<Instant>,
}

impl Cache {
    fn find(&self, kid: &str) -> Option<DecodingKey> {
        let (set, _) = self.keys.as_ref()?;
        set.find(kid)
            .and_then(|jwk| DecodingKey::from_jwk(jwk).ok())
    }

    /// Whether an unknown `kid` may trigger a fetch now (and counts it).
    fn may_refetch(&mut self, kid: &str, now: Instant) -> bool {
        self.tried
            .retain(|_, at| now.duration_since(*at) < UNKNOWN_KID_WINDOW);
        while self
            .refetches
            .front()
            .is_some_and(|at| now.duration_since(*at) >= Duration::from_secs(60))
        {
            self.refetches.pop_front();
        }
        if self.tried.contains_key(kid) || self.refetches.len() >= REFETCHES_PER_MINUTE {
            return false;
        }
        self.tried.insert(kid.to_owned(), now);
        self.refetches.push_back(now);
        true
    }
}

impl Jwks {
    /// The key `kid` names, fetching the set when it is stale or lacks it.
    async fn key(
        &self,
        http: &reqwest::Client,
        url: &str,
        kid: &str,
    ) -> Result<Option<DecodingKey>, ApiError> {
        let mut cache = self.cache.lock().await;
        let now = Instant::now();
        let stale = cache
            .keys
            .as_ref()
            .is_none_or(|(_, at)| now.duration_since(*at) > KEYS_MAX_AGE);
        if stale {
            cache.keys = Some((fetch(http, url).await?, now));
        }
        if let Some(key) = cache.find(kid) {
            return Ok(Some(key));
        }
        if !stale && cache.may_refetch(kid, now) {
            cache.keys = Some((fetch(http, url).await?, now));
            return Ok(cache.find(kid));
        }
        Ok(None)
    }
}

async fn fetch(http: &reqwest::Client, url: &str) -> Result<JwkSet, ApiError> {
    let unavailable = |err: reqwest::Error| {
        tracing::warn!(error = %err, url, "fetching the OAuth provider's keys failed");
        ApiError::Unavailable("the sign-in provider's keys")
    };
    http.get(url)
        .timeout(PROVIDER_TIMEOUT)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(unavailable)?
        .json::<JwkSet>()
        .await
        .map_err(unavailable)
}

/// The claims Warren reads from an ID token.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

fn refused(why: impl Into<String>) -> ApiError {
    ApiError::unauthorized("invalid_id_token", why.into())
}

/// The issuers an ID token may name: the configured one, and Google's scheme-less form of it.
fn issuers(issuer: &str) -> Vec<String> {
    let mut accepted = vec![issuer.to_owned()];
    if let Some(host) = issuer.strip_prefix("https://") {
        accepted.push(host.to_owned());
    }
    accepted
}

/// Who `id_token` says signed in, once it is verified for this client and `nonce`.
pub async fn identify(
    jwks: &Jwks,
    http: &reqwest::Client,
    config: &OAuthProvider,
    id_token: &str,
    nonce: &str,
) -> Result<ProviderIdentity, ApiError> {
    let header = jsonwebtoken::decode_header(id_token)
        .map_err(|_| refused("the ID token is malformed or names an unsupported algorithm"))?;
    if header.alg != Algorithm::RS256 {
        return Err(refused(format!(
            "the ID token is signed with {:?}; only RS256 is accepted",
            header.alg
        )));
    }
    let kid = header
        .kid
        .ok_or_else(|| refused("the ID token names no key"))?;
    let key = jwks
        .key(http, &config.keys_or_api_url, &kid)
        .await?
        .ok_or_else(|| refused("the ID token is signed by a key the provider does not publish"))?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[config.client_id.as_str()]);
    validation.set_issuer(&issuers(&config.issuer));
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = 60;
    let claims = jsonwebtoken::decode::<Claims>(id_token, &key, &validation)
        .map_err(|err| {
            refused(match err.kind() {
                ErrorKind::ExpiredSignature => "the ID token has expired",
                ErrorKind::InvalidAudience => "the ID token is for another client",
                ErrorKind::InvalidIssuer => "the ID token is from another issuer",
                ErrorKind::InvalidSignature => "the ID token's signature is wrong",
                ErrorKind::InvalidAlgorithm => "the ID token's algorithm is not RS256",
                _ => "the ID token is invalid",
            })
        })?
        .claims;
    let nonce_matches = claims.nonce.as_deref().is_some_and(|sent| {
        bool::from(subtle::ConstantTimeEq::ct_eq(
            sent.as_bytes(),
            nonce.as_bytes(),
        ))
    });
    if !nonce_matches {
        return Err(refused("the ID token was not issued for this sign-in"));
    }
    let verified = matches!(&claims.email_verified, Some(serde_json::Value::Bool(true)))
        || matches!(&claims.email_verified, Some(serde_json::Value::String(s)) if s == "true");
    Ok(ProviderIdentity {
        kind: AuthKind::Google,
        subject: claims.sub,
        verified_email: claims.email.filter(|_| verified),
        display_name: claims.name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_kid_refetches_once_per_window_and_ten_times_a_minute() {
        let mut cache = Cache::default();
        let now = Instant::now();
        assert!(cache.may_refetch("a", now));
        assert!(!cache.may_refetch("a", now), "the same kid twice");
        for kid in 0..9 {
            assert!(cache.may_refetch(&kid.to_string(), now));
        }
        assert!(!cache.may_refetch("fresh", now), "the eleventh in a minute");
        let later = now + Duration::from_secs(61);
        assert!(cache.may_refetch("fresh", later));
        assert!(!cache.may_refetch("a", later), "still within five minutes");
    }

    #[test]
    fn the_scheme_less_issuer_is_accepted_too() {
        assert_eq!(
            issuers("https://accounts.google.com"),
            ["https://accounts.google.com", "accounts.google.com"]
        );
        assert_eq!(issuers("http://127.0.0.1:9"), ["http://127.0.0.1:9"]);
    }
}
