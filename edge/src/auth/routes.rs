//! `/api/v1/auth/*`: magic-link sign-in, refresh rotation, logout.

use super::magic::{MAX_CODE_ATTEMPTS, MagicError};
use super::tokens::TokenPair;
use crate::app::limits;
use crate::error::ApiError;
use crate::extract::{ApiJson, AuthUser, ClientIp, token_error};
use crate::openapi::resp;
use crate::routes::ApiRouter;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The auth routes.
pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .post("/auth/login/email", login_email)
        .post("/auth/verify-magic-link", verify_magic_link)
        .post("/auth/refresh", refresh)
        .post("/auth/logout", logout)
        .post("/auth/logout/all", logout_all)
        .get("/auth/providers", providers)
}

/// The ways to sign in this platform offers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Providers {
    /// `email` (magic link or code), `wallet` (Sign-In with Ethereum), and `google` and
    /// `github` when configured.
    pub providers: Vec<String>,
}

/// The sign-in methods this platform offers (a client shows a button for each).
#[utoipa::path(get, path = "/api/v1/auth/providers", operation_id = "get_auth_providers", tag = "auth",
    responses((status = 200, description = "The methods.", body = Providers)))]
pub(crate) async fn providers(State(state): State<AppState>) -> Json<Providers> {
    let mut providers = vec!["email".to_owned(), "wallet".to_owned()];
    providers.extend(super::oauth::offered(&state).into_iter().map(str::to_owned));
    Json(Providers { providers })
}

/// `POST /auth/login/email`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginEmailRequest {
    /// Where to send the link.
    #[schema(example = "ada@example.com")]
    pub email: String,
}

/// The answer to a login request (the same whether or not the address is known).
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginSent {
    /// Always `sent`.
    pub status: String,
    /// Seconds the link and code stay valid.
    pub expires_in: u64,
}

/// `POST /auth/verify-magic-link`: either the link's token, or the address and its code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The `token` query parameter of the emailed link.
    pub token: Option<String>,
    /// The address the code was sent to (with `code`).
    pub email: Option<String>,
    /// The 6-digit code from the email (with `email`).
    #[schema(example = "123456")]
    pub code: Option<String>,
}

/// The answer to a sign-in: the token pair, and whether this sign-in made the user an admin
/// (the platform's first, or listed in `WARREN_ADMIN_EMAILS`).
#[derive(Debug, Serialize, ToSchema)]
pub struct SignedIn {
    /// The tokens.
    #[serde(flatten)]
    pub pair: TokenPair,
    /// True when this sign-in made the user an admin.
    pub became_admin: bool,
}

/// `POST /auth/refresh`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The current refresh token; it is rotated (single use).
    pub refresh_token: String,
}

// Sign-in input becomes no command field as sent (addresses are canonicalized first); every
// string is still checked for control characters.
impl crate::input::TextFields for LoginEmailRequest {}
impl crate::input::TextFields for VerifyRequest {}
impl crate::input::TextFields for RefreshRequest {}

/// Validates and canonicalizes an address (trimmed, lowercased).
pub fn canonical_email(email: &str) -> Result<String, ApiError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if valid {
        Ok(email)
    } else {
        Err(ApiError::invalid_field("email", "must be an email address"))
    }
}

/// Send a sign-in email holding a link and a 6-digit code.
#[utoipa::path(post, path = "/api/v1/auth/login/email", operation_id = "post_auth_login_email", tag = "auth",
    request_body = LoginEmailRequest,
    responses(
        (status = 202, description = "The email was sent (whether or not the address has an account).", body = LoginSent),
        resp::BadRequest, resp::Validation, resp::RateLimited, resp::Unavailable,
    ))]
pub(crate) async fn login_email(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<LoginEmailRequest>,
) -> Result<(StatusCode, Json<LoginSent>), ApiError> {
    let email = canonical_email(&request.email)?;
    limits::auth_request(&state, &ip).await?;
    // Per address *and* requesting IP: a stranger asking for someone's address exhausts their
    // own allowance, not the owner's. The looser per-address cap only stops mail bombing.
    limits::sign_in_email(&state, &email, &ip).await?;
    let issued = state.magic.issue(&email).await.map_err(magic_error)?;
    let ttl = state.settings.magic_link_ttl;
    let link = format!(
        "{}/auth/verify?token={}",
        state.settings.frontend_url.trim_end_matches('/'),
        issued.token
    );
    let body = format!(
        "Sign in to Warren\n\nOpen this link:\n{link}\n\nor enter this code: {code}\n\n\
         The link and the code work once, for {minutes} minutes. If you did not ask to sign in, \
         ignore this email.\n",
        code = issued.code,
        minutes = ttl.as_secs().div_ceil(60),
    );
    state
        .mailer
        .send(&email, "Your Warren sign-in link", &body)
        .await
        .map_err(|err| {
            tracing::error!(error = %err, "sending the sign-in email failed");
            ApiError::Unavailable("email delivery")
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(LoginSent {
            status: "sent".into(),
            expires_in: ttl.as_secs(),
        }),
    ))
}

/// Redeem a magic link (`token`) or a code (`email` + `code`) for a token pair. Registers the
/// user on first sign-in.
#[utoipa::path(post, path = "/api/v1/auth/verify-magic-link", operation_id = "post_auth_verify_magic_link", tag = "auth",
    request_body = VerifyRequest,
    responses(
        (status = 200, description = "Signed in.", body = SignedIn),
        resp::BadRequest, resp::Unauthorized, resp::Validation, resp::RateLimited,
    ))]
pub(crate) async fn verify_magic_link(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<VerifyRequest>,
) -> Result<Json<SignedIn>, ApiError> {
    limits::auth_request(&state, &ip).await?;
    let email = match (&request.token, &request.email, &request.code) {
        (Some(token), None, None) => state.magic.redeem_token(token.trim()).await,
        (None, Some(email), Some(code)) => {
            let email = canonical_email(email)?;
            // Guessing codes costs the guesser's IP, whatever the address.
            limits::code_attempt(&state, &ip).await?;
            state.magic.redeem_code(&email, code).await
        }
        _ => {
            return Err(ApiError::invalid_field(
                "token",
                "send either `token`, or `email` and `code`",
            ));
        }
    }
    .map_err(magic_error)?;
    let signed_in = crate::app::identity::sign_in_by_email(&state, &email).await?;
    Ok(Json(session(&state, signed_in).await?))
}

/// A new session (token pair) for whom a sign-in names, as answered.
pub async fn session(
    state: &AppState,
    signed_in: crate::app::identity::SignedIn,
) -> Result<SignedIn, ApiError> {
    let pair = state
        .tokens
        .issue(signed_in.user_id)
        .await
        .map_err(token_error)?;
    Ok(SignedIn {
        pair,
        became_admin: signed_in.became_admin,
    })
}

/// Rotate a refresh token. Presenting an already-rotated token revokes its whole session.
#[utoipa::path(post, path = "/api/v1/auth/refresh", operation_id = "post_auth_refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new pair; the presented refresh token is now spent.", body = TokenPair),
        resp::BadRequest, resp::Unauthorized, resp::Validation, resp::RateLimited,
    ))]
pub(crate) async fn refresh(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<RefreshRequest>,
) -> Result<Json<TokenPair>, ApiError> {
    limits::auth_request(&state, &ip).await?;
    let (_, pair) = state
        .tokens
        .refresh(request.refresh_token.trim())
        .await
        .map_err(token_error)?;
    Ok(Json(pair))
}

/// Sign out this session: its refresh token and access tokens stop working.
#[utoipa::path(post, path = "/api/v1/auth/logout", operation_id = "post_auth_logout", tag = "auth",
    security(("bearer" = [])),
    responses((status = 204, description = "Signed out."), resp::Unauthorized, resp::RateLimited))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<StatusCode, ApiError> {
    state
        .tokens
        .logout(caller.id, caller.session)
        .await
        .map_err(token_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sign out every session of the caller.
#[utoipa::path(post, path = "/api/v1/auth/logout/all", operation_id = "post_auth_logout_all", tag = "auth",
    security(("bearer" = [])),
    responses((status = 204, description = "Every session signed out."), resp::Unauthorized, resp::RateLimited))]
pub(crate) async fn logout_all(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<StatusCode, ApiError> {
    state
        .tokens
        .logout_all(caller.id)
        .await
        .map_err(token_error)?;
    Ok(StatusCode::NO_CONTENT)
}

fn magic_error(err: MagicError) -> ApiError {
    let code = match &err {
        MagicError::Invalid => "invalid_link",
        MagicError::Expired => "link_expired",
        MagicError::WrongCode => "invalid_code",
        MagicError::Locked => "too_many_attempts",
        MagicError::Store(_) => return ApiError::internal(err),
    };
    let message = match &err {
        MagicError::WrongCode => {
            format!("wrong code (at most {MAX_CODE_ATTEMPTS} attempts per emailed code)")
        }
        other => other.to_string(),
    };
    ApiError::unauthorized(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_trimmed_and_lowercased_and_junk_is_refused() {
        assert_eq!(
            canonical_email("  Ada@Example.COM ").expect("valid"),
            "ada@example.com"
        );
        for junk in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "a b@example.com",
            "a@b@c.d",
        ] {
            assert!(canonical_email(junk).is_err(), "{junk:?} accepted");
        }
    }
}
