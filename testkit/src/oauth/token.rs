//! The token endpoints (`POST /token`, `POST /login/oauth/access_token`): the
//! authorization-code grant with client authentication (HTTP Basic per RFC 6749 §2.3.1, or
//! `client_id` and `client_secret` in the body), single-use codes bound to their
//! `redirect_uri`, and PKCE `S256`. Google answers errors as 4xx JSON; GitHub as HTTP 200, JSON
//! or form-encoded per `Accept`.

use std::sync::Arc;

use aws_lc_rs::digest;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use super::Tamper;
use super::http::{Req, decode, encode_form, first, json_response, oauth_error};
use super::id_token;
use super::keys::SigningKey;
use super::state::{
    CODE_LIFETIME, Grant, Shared, Site, Token, has_scope, random_alnum, random_b64,
};

/// Why an exchange failed.
enum Refusal {
    InvalidClient,
    UnsupportedGrantType(String),
    MissingParameter(&'static str),
    BadCode(&'static str),
    RedirectMismatch,
    BadVerifier(&'static str),
}

/// A successful exchange.
struct Issued {
    access_token: String,
    grant: Grant,
    /// What the ID token needs, if one is due (`openid` at Google).
    id_token: Option<(Arc<SigningKey>, Option<Tamper>)>,
}

/// Google's token endpoint.
pub(crate) fn google(shared: &Shared, req: &Req) -> Response {
    let params = req.form();
    let issued = match exchange(shared, Site::Google, req, &params) {
        Ok(issued) => issued,
        Err(refusal) => {
            let (status, error, description) = match refusal {
                Refusal::InvalidClient => (
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "Unauthorized".to_owned(),
                ),
                Refusal::UnsupportedGrantType(given) => (
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    format!("Invalid grant_type: {given}"),
                ),
                Refusal::MissingParameter(name) => (
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    format!("Missing required parameter: {name}"),
                ),
                Refusal::BadCode(why) => (StatusCode::BAD_REQUEST, "invalid_grant", why.to_owned()),
                Refusal::RedirectMismatch => (
                    StatusCode::BAD_REQUEST,
                    "redirect_uri_mismatch",
                    "Bad Request".to_owned(),
                ),
                Refusal::BadVerifier(why) => {
                    (StatusCode::BAD_REQUEST, "invalid_grant", why.to_owned())
                }
            };
            return no_store(oauth_error(status, error, &description));
        }
    };
    let mut body = json!({
        "access_token": issued.access_token,
        "expires_in": 3599,
        "token_type": "Bearer",
        "scope": issued.grant.scope,
    });
    if let Some((key, tamper)) = &issued.id_token {
        body["id_token"] = json!(id_token::issue(
            &shared.issuer,
            &issued.grant,
            &issued.access_token,
            key,
            *tamper,
        ));
    }
    no_store(json_response(StatusCode::OK, body))
}

/// GitHub's token endpoint.
pub(crate) fn github(shared: &Shared, req: &Req) -> Response {
    let json_body = req
        .header(header::CONTENT_TYPE)
        .is_some_and(|t| t.contains("json"));
    let params = if json_body {
        json_pairs(&req.body)
    } else {
        req.form()
    };
    let wants_json = req
        .header(header::ACCEPT)
        .is_some_and(|a| a.contains("json"));
    let fields: Vec<(&str, String)> = match exchange(shared, Site::Github, req, &params) {
        Ok(issued) => {
            // GitHub lists the granted scopes comma-separated.
            let scope = issued
                .grant
                .scope
                .split([' ', ','])
                .filter(|s| !s.is_empty());
            let scope = scope.collect::<Vec<_>>().join(",");
            vec![
                ("access_token", issued.access_token),
                ("token_type", "bearer".to_owned()),
                ("scope", scope),
            ]
        }
        Err(refusal) => {
            let (error, description, anchor) = match refusal {
                Refusal::InvalidClient => (
                    "incorrect_client_credentials",
                    "The client_id and/or client_secret passed are incorrect.",
                    "incorrect-client-credentials",
                ),
                Refusal::RedirectMismatch => (
                    "redirect_uri_mismatch",
                    "The redirect_uri MUST match the registered callback URL for this application.",
                    "redirect-uri-mismatch2",
                ),
                Refusal::UnsupportedGrantType(_) => (
                    "unsupported_grant_type",
                    "The grant type is not supported.",
                    "unsupported-grant-type",
                ),
                Refusal::MissingParameter(_) | Refusal::BadCode(_) | Refusal::BadVerifier(_) => (
                    "bad_verification_code",
                    "The code passed is incorrect or expired.",
                    "bad-verification-code",
                ),
            };
            vec![
                ("error", error.to_owned()),
                ("error_description", description.to_owned()),
                (
                    "error_uri",
                    format!(
                        "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#{anchor}"
                    ),
                ),
            ]
        }
    };
    if wants_json {
        let body: serde_json::Map<String, Value> = fields
            .into_iter()
            .map(|(k, v)| (k.to_owned(), json!(v)))
            .collect();
        return json_response(StatusCode::OK, Value::Object(body));
    }
    let body = encode_form(fields.iter().map(|(k, v)| (*k, v.as_str())));
    (
        [(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Checks the client, the code, `redirect_uri` and the PKCE verifier; spends the code and
/// issues an access token.
fn exchange(
    shared: &Shared,
    site: Site,
    req: &Req,
    params: &[(String, String)],
) -> Result<Issued, Refusal> {
    let (client_id, client_secret) = client_credentials(req, params);
    if client_id.as_deref() != Some(shared.client_id.as_str())
        || client_secret.as_deref() != Some(shared.client_secret.as_str())
    {
        return Err(Refusal::InvalidClient);
    }
    match (site, first(params, "grant_type")) {
        (_, Some("authorization_code")) | (Site::Github, None) => {}
        (_, given) => {
            return Err(Refusal::UnsupportedGrantType(
                given.unwrap_or_default().to_owned(),
            ));
        }
    }
    let code = first(params, "code").ok_or(Refusal::MissingParameter("code"))?;
    let redirect_uri = first(params, "redirect_uri");
    let verifier = first(params, "code_verifier");

    let mut state = shared.state();
    let state = &mut *state;
    let grant = state
        .codes
        .get_mut(code)
        .filter(|g| g.site == site && g.client_id == shared.client_id)
        .ok_or(Refusal::BadCode("Malformed auth code."))?;
    if std::mem::replace(&mut grant.spent, true) {
        // RFC 6749 §4.1.2: a replayed code revokes what it was exchanged for.
        if let Some(token) = grant.access_token.take() {
            state.tokens.remove(&token);
        }
        return Err(Refusal::BadCode("Bad Request"));
    }
    if grant.issued.elapsed() > CODE_LIFETIME {
        return Err(Refusal::BadCode("Bad Request"));
    }
    match (site, redirect_uri) {
        (Site::Google, None) => return Err(Refusal::MissingParameter("redirect_uri")),
        (_, Some(given)) if given != grant.redirect_uri => return Err(Refusal::RedirectMismatch),
        _ => {}
    }
    match (&grant.code_challenge, verifier) {
        (None, None) => {}
        (Some(_), None) => return Err(Refusal::BadVerifier("Missing code verifier.")),
        (None, Some(_)) => {
            return Err(Refusal::BadVerifier(
                "code_verifier sent, but the authorization request had no code_challenge.",
            ));
        }
        (Some(challenge), Some(verifier)) => {
            if !valid_verifier(verifier) || s256(verifier) != *challenge {
                return Err(Refusal::BadVerifier("Invalid code verifier."));
            }
        }
    }
    let access_token = match site {
        Site::Google => format!("ya29.{}", random_b64(96)),
        Site::Github => format!("gho_{}", random_alnum(36)),
    };
    grant.access_token = Some(access_token.clone());
    let grant = grant.clone();
    let id_token = (site == Site::Google && has_scope(&grant.scope, "openid"))
        .then(|| (state.current_key().clone(), state.tamper.take()));
    state.tokens.insert(
        access_token.clone(),
        Token {
            site,
            user: grant.user.clone(),
            scope: grant.scope.clone(),
        },
    );
    Ok(Issued {
        access_token,
        grant,
        id_token,
    })
}

/// The client's id and secret: from HTTP Basic (each form-urlencoded, RFC 6749 §2.3.1) or
/// else from the body.
fn client_credentials(req: &Req, params: &[(String, String)]) -> (Option<String>, Option<String>) {
    let basic = req.header(header::AUTHORIZATION).and_then(|value| {
        let (scheme, credentials) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("basic").then_some(())?;
        let decoded = STANDARD.decode(credentials.trim()).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        Some((Some(decode(id)), Some(decode(secret))))
    });
    basic.unwrap_or_else(|| {
        (
            first(params, "client_id").map(str::to_owned),
            first(params, "client_secret").map(str::to_owned),
        )
    })
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters.
fn valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// `BASE64URL-NOPAD(SHA256(verifier))`.
fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()))
}

/// A JSON object body's string (and number) fields as pairs.
fn json_pairs(body: &[u8]) -> Vec<(String, String)> {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    fields
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect()
}

/// Token responses must not be cached (RFC 6749 §5.1).
fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}
