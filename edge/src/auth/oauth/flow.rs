//! One authorization-code flow, from the redirect to the provider to the tokens: the pending
//! record a `state` names, the browser binding cookie, PKCE, and the code exchange (the `oauth2`
//! crate builds the requests; they travel through the edge's own HTTP client, which follows no
//! redirect).

use super::Provider;
use crate::auth::store::sha256_hex;
use crate::error::ApiError;
use crate::settings::OAuthProvider;
use crate::state::AppState;
use axum::http::HeaderMap;
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, StandardRevocableToken,
    StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use subtle::ConstantTimeEq;
use warren_domain::ids::UserId;

/// How long a started flow may come back (the person is on the provider's consent page).
pub const PENDING_TTL_SECS: i64 = 600;

/// How long the console has to redeem a finished sign-in.
pub const HANDOVER_TTL_SECS: i64 = 60;

/// The cookie that ties a flow to the browser that started it (so a callback URL sent to
/// someone else signs nobody in, as them or as the sender).
pub const COOKIE: &str = "warren_oauth";

/// The path the cookie is scoped to: the callback and the handover exchange.
pub const COOKIE_PATH: &str = "/api/v1/auth/oauth";

/// What a finished flow does.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub enum Intent {
    /// Sign in (registering at first).
    SignIn,
    /// Link the identity to this signed-in user.
    Link(UserId),
}

/// A started flow, kept under the digest of its `state` until the callback consumes it.
#[derive(Serialize, Deserialize)]
pub struct Pending {
    /// The provider it was started for.
    pub provider: Provider,
    /// The PKCE verifier (the provider saw only its challenge).
    pub verifier: String,
    /// The OpenID Connect nonce the ID token must carry.
    pub nonce: String,
    /// Digest of the browser binding cookie's value.
    pub binding: String,
    /// What to do once the provider vouches for someone.
    pub intent: Intent,
    /// Unix seconds after which the callback is refused.
    pub expires_at: i64,
}

/// A finished sign-in, waiting for the console to take its tokens.
#[derive(Serialize, Deserialize)]
pub struct Handover {
    /// Who signed in.
    pub user_id: UserId,
    /// Whether the sign-in made them an admin.
    pub became_admin: bool,
    /// Digest of the browser binding cookie's value.
    pub binding: String,
    /// Unix seconds after which it is refused.
    pub expires_at: i64,
}

/// A flow's start: where to send the browser, and the cookie value binding it.
pub struct Begun {
    /// The provider's authorize URL, with `state`, PKCE challenge and nonce.
    pub url: String,
    /// The value of the [`COOKIE`] to set.
    pub binding: String,
}

/// The token endpoint's answer: standard fields plus OpenID Connect's `id_token`.
pub type Tokens = StandardTokenResponse<IdTokenField, BasicTokenType>;

/// The `id_token` of an OpenID Connect token response (absent from GitHub's).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IdTokenField {
    /// The signed ID token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

impl oauth2::ExtraTokenFields for IdTokenField {}

type Client = oauth2::Client<
    BasicErrorResponse,
    Tokens,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// A provider call's time limit.
pub const PROVIDER_TIMEOUT: Duration = Duration::from_secs(15);

fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn pending_key(state: &str) -> String {
    format!("oauth.{}", sha256_hex(state.as_bytes()))
}

fn handover_key(code: &str) -> String {
    format!("handover.{}", sha256_hex(code.as_bytes()))
}

/// Where the provider sends the browser back: the edge's callback under the console's URL
/// (the console is served by the edge, so they share an origin).
pub fn redirect_uri(state: &AppState, provider: Provider) -> String {
    format!(
        "{}/api/v1/auth/oauth/{}/callback",
        state.settings.frontend_url.trim_end_matches('/'),
        provider.as_str()
    )
}

fn client(
    state: &AppState,
    provider: Provider,
    config: &OAuthProvider,
) -> Result<Client, ApiError> {
    let url = |what: &str, value: &str| {
        ApiError::internal(std::io::Error::other(format!(
            "the {provider} OAuth {what} {value:?} is not a URL"
        )))
    };
    Ok(oauth2::Client::new(ClientId::new(config.client_id.clone()))
        .set_client_secret(ClientSecret::new(config.client_secret.clone()))
        .set_auth_uri(
            AuthUrl::new(config.authorize_url.clone())
                .map_err(|_| url("authorize URL", &config.authorize_url))?,
        )
        .set_token_uri(
            TokenUrl::new(config.token_url.clone())
                .map_err(|_| url("token URL", &config.token_url))?,
        )
        .set_redirect_uri(
            RedirectUrl::new(redirect_uri(state, provider))
                .map_err(|_| url("redirect URL", &state.settings.frontend_url))?,
        ))
}

/// Starts a flow: a pending record under a fresh `state`, and the provider's URL.
pub async fn begin(
    state: &AppState,
    provider: Provider,
    config: &OAuthProvider,
    intent: Intent,
) -> Result<Begun, ApiError> {
    let client = client(state, provider, config)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let nonce = random_token();
    let binding = random_token();
    let mut request = client
        .authorize_url(CsrfToken::new_random)
        .set_pkce_challenge(challenge);
    for scope in provider.scopes() {
        request = request.add_scope(Scope::new((*scope).to_owned()));
    }
    if provider == Provider::Google {
        request = request.add_extra_param("nonce", nonce.clone());
    }
    let (url, csrf) = request.url();
    let pending = Pending {
        provider,
        verifier: verifier.secret().clone(),
        nonce,
        binding: sha256_hex(binding.as_bytes()),
        intent,
        expires_at: chrono::Utc::now().timestamp() + PENDING_TTL_SECS,
    };
    state
        .auth_kv
        .put(&pending_key(csrf.secret()), &pending)
        .await
        .map_err(ApiError::internal)?;
    Ok(Begun {
        url: url.to_string(),
        binding,
    })
}

fn invalid_state(why: &str) -> ApiError {
    ApiError::unauthorized("invalid_state", why.to_owned())
}

/// The value of the binding cookie the browser sent, if any.
pub fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

fn bound(binding_digest: &str, cookie: Option<&str>) -> bool {
    cookie.is_some_and(|cookie| {
        bool::from(
            sha256_hex(cookie.as_bytes())
                .as_bytes()
                .ct_eq(binding_digest.as_bytes()),
        )
    })
}

/// Consumes the flow `state` names: it must exist, be for `provider`, be unexpired, and have
/// been started by this browser. A `state` is spent by its first callback, whatever follows.
pub async fn take(
    app: &AppState,
    provider: Provider,
    state: Option<&str>,
    cookie: Option<&str>,
) -> Result<Pending, ApiError> {
    let state = state
        .filter(|state| !state.is_empty())
        .ok_or_else(|| invalid_state("the callback has no `state`"))?;
    let key = pending_key(state);
    let unknown = || invalid_state("this sign-in is unknown, expired or already used: start again");
    let (pending, revision) = app
        .auth_kv
        .get::<Pending>(&key)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(unknown)?;
    // Of two callbacks racing with one `state`, only the one that removes it goes on.
    if !app
        .auth_kv
        .remove_at(&key, revision)
        .await
        .map_err(ApiError::internal)?
    {
        return Err(unknown());
    }
    if pending.provider != provider || pending.expires_at < chrono::Utc::now().timestamp() {
        return Err(unknown());
    }
    if !bound(&pending.binding, cookie) {
        return Err(invalid_state(
            "this sign-in was started in another browser: start again here",
        ));
    }
    Ok(pending)
}

/// Exchanges `code` (with the flow's PKCE verifier) for the provider's tokens.
pub async fn exchange(
    state: &AppState,
    provider: Provider,
    config: &OAuthProvider,
    code: &str,
    pending: &Pending,
) -> Result<Tokens, ApiError> {
    let client = client(state, provider, config)?;
    let http = state.http.clone();
    let send = move |request: oauth2::HttpRequest| {
        let http = http.clone();
        async move { forward(&http, request).await }
    };
    let tokens = client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()))
        .request_async(&send)
        .await
        .map_err(|err| {
            tracing::info!(provider = %provider, error = %err, "OAuth code exchange refused");
            ApiError::unauthorized(
                "oauth_exchange_failed",
                format!("{provider} did not accept the sign-in code: start again"),
            )
        })?;
    tracing::debug!(provider = %provider, scopes = ?tokens.scopes(), "OAuth code exchanged");
    Ok(tokens)
}

/// Sends an `oauth2` request through reqwest and hands the answer back whatever its status.
async fn forward(
    http: &reqwest::Client,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, reqwest::Error> {
    let mut request = reqwest::Request::try_from(request)?;
    *request.timeout_mut() = Some(PROVIDER_TIMEOUT);
    let response = http.execute(request).await?;
    let mut answer = axum::http::Response::builder().status(response.status());
    if let Some(headers) = answer.headers_mut() {
        *headers = response.headers().clone();
    }
    let body = response.bytes().await?.to_vec();
    Ok(answer
        .body(body)
        .unwrap_or_else(|_| oauth2::HttpResponse::new(Vec::new())))
}

/// Keeps a finished sign-in for the console to redeem with [`redeem`]; the code to give it.
pub async fn hand_over(
    state: &AppState,
    signed_in: crate::app::identity::SignedIn,
    binding_digest: &str,
) -> Result<String, ApiError> {
    let code = random_token();
    let handover = Handover {
        user_id: signed_in.user_id,
        became_admin: signed_in.became_admin,
        binding: binding_digest.to_owned(),
        expires_at: chrono::Utc::now().timestamp() + HANDOVER_TTL_SECS,
    };
    state
        .auth_kv
        .put(&handover_key(&code), &handover)
        .await
        .map_err(ApiError::internal)?;
    Ok(code)
}

/// The sign-in a handover code names, consumed: once, within [`HANDOVER_TTL_SECS`], by the
/// browser that went through the flow.
pub async fn redeem(
    state: &AppState,
    code: &str,
    cookie: Option<&str>,
) -> Result<Handover, ApiError> {
    let refused = || {
        ApiError::unauthorized(
            "invalid_handover",
            "this sign-in is unknown, expired or already used: start again",
        )
    };
    let key = handover_key(code.trim());
    let (handover, revision) = state
        .auth_kv
        .get::<Handover>(&key)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(refused)?;
    if !state
        .auth_kv
        .remove_at(&key, revision)
        .await
        .map_err(ApiError::internal)?
    {
        return Err(refused());
    }
    if handover.expires_at < chrono::Utc::now().timestamp() || !bound(&handover.binding, cookie) {
        return Err(refused());
    }
    Ok(handover)
}
