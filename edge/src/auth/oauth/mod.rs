//! Sign-in with Google (OpenID Connect) and GitHub (OAuth app): authorization code with PKCE,
//! `state` bound to the browser that started the flow, and tokens handed to the console through
//! a one-time code in the URL fragment (never in a URL a server logs). ADR 35.
//!
//! - `GET /auth/oauth/{provider}` — sends the browser to the provider (302) with `state`, the
//!   PKCE challenge and (Google) a nonce, and sets the `warren_oauth` cookie that binds them.
//! - `GET /auth/oauth/{provider}/callback` — consumes `state`, exchanges the code with the PKCE
//!   verifier, learns who signed in ([`google`]: the ID token; [`github`]: its API), signs them
//!   in or links them ([`crate::app::identity::sign_in_by_provider`]), and sends the browser to
//!   the console: `/auth/oauth#handover=…` or `/settings#linked=…`. A refusal is the error
//!   envelope; a browser (asking for HTML) is sent to `/auth/oauth#error=…` instead.
//! - `POST /auth/oauth/exchange {handover}` — the console trades the handover code (once, within
//!   a minute, from the same browser) for the token pair.
//! - `POST /users/me/connections/{google,github}` ([`link`]) starts the same flow to link.
//!
//! A provider that is not configured is not offered and its routes answer 404.
//!
//! Layout: [`flow`] (pending records, cookie, PKCE, code exchange), [`google`], [`github`].

pub mod flow;
pub mod github;
pub mod google;

use crate::app::identity::{self, ProviderIdentity};
use crate::app::limits;
use crate::auth::routes::SignedIn;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, ClientIp};
use crate::openapi::resp;
use crate::routes::ApiRouter;
use crate::settings::OAuthProvider;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flow::{COOKIE, COOKIE_PATH, Intent, PENDING_TTL_SECS};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The OAuth routes.
pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .get("/auth/oauth/{provider}", start)
        .get("/auth/oauth/{provider}/callback", callback)
        .post("/auth/oauth/exchange", exchange)
}

/// An OAuth provider Warren knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Google, over OpenID Connect.
    Google,
    /// GitHub, as an OAuth app.
    Github,
}

impl Provider {
    /// Its name in paths and lists.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Google => "google",
            Provider::Github => "github",
        }
    }

    /// The provider a path names.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "google" => Some(Provider::Google),
            "github" => Some(Provider::Github),
            _ => None,
        }
    }

    /// What Warren asks to read.
    fn scopes(self) -> &'static [&'static str] {
        match self {
            Provider::Google => &["openid", "email", "profile"],
            Provider::Github => &["read:user", "user:email"],
        }
    }

    /// Its configuration, if this platform offers it.
    pub fn config(self, state: &AppState) -> Option<&OAuthProvider> {
        match self {
            Provider::Google => state.settings.oauth.google.as_ref(),
            Provider::Github => state.settings.oauth.github.as_ref(),
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Provider::Google => "Google",
            Provider::Github => "GitHub",
        })
    }
}

/// The configured provider a path names; 404 for any other.
fn configured(state: &AppState, name: &str) -> Result<(Provider, OAuthProvider), ApiError> {
    let provider = Provider::parse(name).ok_or(ApiError::NotFound)?;
    let config = provider.config(state).ok_or(ApiError::NotFound)?;
    Ok((provider, config.clone()))
}

/// The providers this platform offers, in the order buttons are shown.
pub fn offered(state: &AppState) -> Vec<&'static str> {
    [Provider::Google, Provider::Github]
        .into_iter()
        .filter(|provider| provider.config(state).is_some())
        .map(Provider::as_str)
        .collect()
}

fn set_cookie(state: &AppState, value: &str, max_age: i64) -> HeaderValue {
    let secure = if state.settings.frontend_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path={COOKIE_PATH}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("warren_oauth=; Max-Age=0"))
}

/// A `302 Found` to `location`, never cached.
fn found(location: &str) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, location);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn redirect(location: &str, cookie: HeaderValue) -> Response {
    let mut response = found(location);
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
}

/// Sign in with a provider: redirects to its consent page.
#[utoipa::path(get, path = "/api/v1/auth/oauth/{provider}", operation_id = "get_auth_oauth_by_provider", tag = "auth",
    params(("provider" = String, Path, description = "`google` or `github` (when configured)")),
    responses((status = 302, description = "To the provider, with the `warren_oauth` cookie set."),
        resp::NotFound, resp::RateLimited))]
pub(crate) async fn start(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    let (provider, config) = configured(&state, &name)?;
    limits::auth_request(&state, &ip).await?;
    let begun = flow::begin(&state, provider, &config, Intent::SignIn).await?;
    Ok(redirect(
        &begun.url,
        set_cookie(&state, &begun.binding, PENDING_TTL_SECS),
    ))
}

/// Where a linking flow goes: open it in the browser.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkStart {
    /// The provider's consent page; the browser returns to `/settings#linked=<provider>`.
    pub authorize_url: String,
}

/// Starts linking `name`'s identity to `user`; the URL to open (the cookie binds this browser).
pub async fn link(
    state: &AppState,
    user: warren_domain::ids::UserId,
    name: &str,
) -> Result<Response, ApiError> {
    let (provider, config) = configured(state, name)?;
    limits::user_write(state, user).await?;
    let begun = flow::begin(state, provider, &config, Intent::Link(user)).await?;
    let mut response = (
        StatusCode::CREATED,
        Json(LinkStart {
            authorize_url: begun.url,
        }),
    )
        .into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(state, &begun.binding, PENDING_TTL_SECS),
    );
    Ok(response)
}

/// What the provider sends back.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    /// The authorization code.
    pub code: Option<String>,
    /// The `state` Warren sent.
    pub state: Option<String>,
    /// Set when the person declined (`access_denied`) or the provider refused.
    pub error: Option<String>,
}

impl crate::input::TextFields for CallbackQuery {}

/// The provider's redirect back: signs the person in (or links the identity) and sends the
/// browser to the console.
#[utoipa::path(get, path = "/api/v1/auth/oauth/{provider}/callback", operation_id = "get_auth_oauth_by_provider_callback", tag = "auth",
    params(("provider" = String, Path, description = "`google` or `github`"), CallbackQuery),
    responses((status = 302, description = "To the console: `/auth/oauth#handover=…` (sign-in) or `/settings#linked=…` (link)."),
        resp::Unauthorized, resp::NotFound, resp::Conflict, resp::Validation, resp::RateLimited, resp::Unavailable))]
pub(crate) async fn callback(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<CallbackQuery>,
) -> Response {
    match finish(&state, &ip, &name, &headers, query).await {
        // The cookie stays: the console's exchange needs it, and clears it.
        Ok(location) => found(&location),
        Err(err) if wants_html(&headers) && err.status().is_client_error() => found(&format!(
            "{}/auth/oauth#error={}",
            state.settings.frontend_url.trim_end_matches('/'),
            err.body().code
        )),
        Err(err) => err.into_response(),
    }
}

/// A browser navigation (it asks for HTML), as opposed to an API client.
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

async fn finish(
    state: &AppState,
    ip: &str,
    name: &str,
    headers: &HeaderMap,
    query: CallbackQuery,
) -> Result<String, ApiError> {
    let (provider, config) = configured(state, name)?;
    limits::auth_request(state, ip).await?;
    let cookie = flow::cookie(headers);
    let pending = flow::take(state, provider, query.state.as_deref(), cookie.as_deref()).await?;
    if let Some(error) = query.error {
        return Err(ApiError::unauthorized(
            "oauth_denied",
            format!("{provider} did not sign you in ({error})"),
        ));
    }
    let code = query
        .code
        .filter(|code| !code.is_empty())
        .ok_or_else(|| ApiError::invalid_field("code", "the callback has no code"))?;
    let tokens = flow::exchange(state, provider, &config, &code, &pending).await?;
    let who = match provider {
        Provider::Google => {
            let id_token = tokens.extra_fields().id_token.as_deref().ok_or_else(|| {
                ApiError::unauthorized("invalid_id_token", "Google sent no ID token")
            })?;
            google::identify(
                &state.oauth_keys,
                &state.http,
                &config,
                id_token,
                &pending.nonce,
            )
            .await?
        }
        Provider::Github => {
            use oauth2::TokenResponse;
            github::identify(&state.http, &config, tokens.access_token().secret()).await?
        }
    };
    let frontend = state.settings.frontend_url.trim_end_matches('/');
    match pending.intent {
        Intent::SignIn => {
            let signed_in = identity::sign_in_by_provider(state, who).await?;
            let handover = flow::hand_over(state, signed_in, &pending.binding).await?;
            Ok(format!("{frontend}/auth/oauth#handover={handover}"))
        }
        Intent::Link(user) => {
            identity::link(state, user, who.into_identity()).await?;
            Ok(format!("{frontend}/settings#linked={}", provider.as_str()))
        }
    }
}

/// `POST /auth/oauth/exchange`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRequest {
    /// The `handover` of the console URL's fragment.
    pub handover: String,
}

impl crate::input::TextFields for ExchangeRequest {}

/// Trade a finished OAuth sign-in's handover code for the token pair (once, within a minute,
/// from the browser that signed in: the `warren_oauth` cookie must come along).
#[utoipa::path(post, path = "/api/v1/auth/oauth/exchange", operation_id = "post_auth_oauth_exchange", tag = "auth",
    request_body = ExchangeRequest,
    responses((status = 200, description = "Signed in.", body = SignedIn),
        resp::BadRequest, resp::Unauthorized, resp::Validation, resp::RateLimited))]
pub(crate) async fn exchange(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ExchangeRequest>,
) -> Result<Response, ApiError> {
    limits::auth_request(&state, &ip).await?;
    let cookie = flow::cookie(&headers);
    let handover = flow::redeem(&state, &request.handover, cookie.as_deref()).await?;
    let signed_in = identity::SignedIn {
        user_id: handover.user_id,
        became_admin: handover.became_admin,
    };
    let mut response = Json(crate::auth::routes::session(&state, signed_in).await?).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&state, "", 0));
    Ok(response)
}
