//! What access tokens and clients read: Google's JWK set, discovery document and userinfo,
//! and GitHub's REST API (`/api/user`, `/api/user/emails`) with GitHub's own refusals.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::OAuthUser;
use super::http::{Req, json_response};
use super::state::{Shared, Site, Token};

/// The JWK set's cache lifetime, like Google's (seconds).
const JWKS_MAX_AGE: u32 = 21_600;

/// `GET /oauth2/v3/certs`: the published keys, counted.
pub(crate) fn jwks(shared: &Shared) -> Response {
    let keys: Vec<Value> = {
        let mut state = shared.state();
        state.jwks_fetches += 1;
        state.keys.iter().rev().map(|key| key.jwk()).collect()
    };
    let mut response = json_response(StatusCode::OK, json!({"keys": keys}));
    let cache = format!("public, max-age={JWKS_MAX_AGE}, must-revalidate, no-transform");
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&cache).expect("test oauth: cache-control header"),
    );
    response
}

/// `GET /.well-known/openid-configuration`: where the Google-like endpoints are.
pub(crate) fn discovery(shared: &Shared) -> Response {
    let base = &shared.issuer;
    json_response(
        StatusCode::OK,
        json!({
            "issuer": base,
            "authorization_endpoint": format!("{base}/o/oauth2/v2/auth"),
            "token_endpoint": format!("{base}/token"),
            "userinfo_endpoint": format!("{base}/v1/userinfo"),
            "jwks_uri": format!("{base}/oauth2/v3/certs"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "claims_supported": ["aud", "email", "email_verified", "exp", "iat", "iss", "name", "sub"],
            "code_challenge_methods_supported": ["S256"],
            "grant_types_supported": ["authorization_code"],
        }),
    )
}

/// `GET /v1/userinfo` with `Authorization: Bearer <Google access token>`.
pub(crate) fn userinfo(shared: &Shared, req: &Req) -> Response {
    let token = bearer(req).and_then(|token| {
        let state = shared.state();
        state
            .tokens
            .get(token)
            .filter(|t| t.site == Site::Google)
            .map(|t| (t.user.clone(), t.has_scope("email"), t.has_scope("profile")))
    });
    let Some((user, email, profile)) = token else {
        let mut response = json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_request", "error_description": "Invalid Credentials"}),
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(
                "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"",
            ),
        );
        return response;
    };
    let mut body = json!({"sub": user.sub});
    if email {
        body["email"] = json!(user.email);
        body["email_verified"] = json!(user.email_verified);
    }
    if profile {
        body["name"] = json!(user.name);
    }
    json_response(StatusCode::OK, body)
}

/// `GET /api/user`: the authenticated GitHub user.
pub(crate) fn github_user(shared: &Shared, req: &Req) -> Response {
    let (user, _) = match github_token(shared, req) {
        Ok(token) => token,
        Err(refusal) => return refusal.response(),
    };
    json_response(
        StatusCode::OK,
        json!({
            "login": user.login,
            "id": user.github_id,
            "avatar_url": format!("https://avatars.githubusercontent.com/u/{}?v=4", user.github_id),
            "html_url": format!("https://github.com/{}", user.login),
            "type": "User",
            "site_admin": false,
            "name": user.name,
            "email": null,
        }),
    )
}

/// `GET /api/user/emails` (needs the `user:email` or `user` scope): the primary address and the
/// no-reply one.
pub(crate) fn github_emails(shared: &Shared, req: &Req) -> Response {
    let (user, scope_ok) = match github_token(shared, req) {
        Ok(token) => token,
        Err(refusal) => return refusal.response(),
    };
    if !scope_ok {
        return github_not_found();
    }
    json_response(
        StatusCode::OK,
        json!([
            {
                "email": user.email,
                "primary": true,
                "verified": user.email_verified,
                "visibility": "private",
            },
            {
                "email": format!("{}+{}@users.noreply.github.com", user.github_id, user.login),
                "primary": false,
                "verified": true,
                "visibility": null,
            },
        ]),
    )
}

/// GitHub's 404 for an API path it does not serve (or a scope the token lacks).
pub(crate) fn github_not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest", "status": "404"}),
    )
}

/// A GitHub API refusal: the status and `message`.
struct ApiRefusal(StatusCode, &'static str);

impl ApiRefusal {
    fn response(self) -> Response {
        let ApiRefusal(status, message) = self;
        let mut body = json!({"message": message});
        if status == StatusCode::UNAUTHORIZED {
            body["documentation_url"] = json!("https://docs.github.com/rest");
            body["status"] = json!("401");
        }
        json_response(status, body)
    }
}

/// The GitHub API's admission: a `User-Agent` first, then a known GitHub token (`Bearer` or
/// `token` scheme). The user and whether it may read email addresses.
fn github_token(shared: &Shared, req: &Req) -> Result<(OAuthUser, bool), ApiRefusal> {
    if req.header(header::USER_AGENT).is_none_or(str::is_empty) {
        return Err(ApiRefusal(
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). Check https://developer.github.com for other possible causes.",
        ));
    }
    let Some(authorization) = req.header(header::AUTHORIZATION) else {
        return Err(ApiRefusal(
            StatusCode::UNAUTHORIZED,
            "Requires authentication",
        ));
    };
    let token = authorization
        .split_once(' ')
        .filter(|(scheme, _)| {
            scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token")
        })
        .map(|(_, token)| token.trim());
    let state = shared.state();
    let found = token
        .and_then(|token| state.tokens.get(token))
        .filter(|t| t.site == Site::Github);
    match found {
        Some(t) => Ok((t.user.clone(), may_read_emails(t))),
        None => Err(ApiRefusal(StatusCode::UNAUTHORIZED, "Bad credentials")),
    }
}

fn may_read_emails(token: &Token) -> bool {
    token.has_scope("user:email") || token.has_scope("user")
}

/// The token in `Authorization: Bearer <token>`.
fn bearer(req: &Req) -> Option<&str> {
    let (scheme, token) = req.header(header::AUTHORIZATION)?.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}
