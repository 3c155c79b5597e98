//! The authorize pages (`GET /o/oauth2/v2/auth`, `GET /login/oauth/authorize`): a request
//! the provider cannot send back (unknown client, no `redirect_uri`) gets an error page;
//! otherwise the browser is redirected to `redirect_uri` with a `code` (the signed-in user
//! consents at once) or an `error`, and `state` echoed exactly.

use std::time::Instant;

use axum::http::StatusCode;
use axum::response::Response;

use super::http::{Req, encode_form, found, text};
use super::state::{Grant, Shared, Site, random_b64, random_hex};

/// GitHub's documentation of its authorize errors.
const GITHUB_ERRORS_URI: &str = "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/#access-denied";

pub(crate) fn authorize(shared: &Shared, site: Site, req: &Req) -> Response {
    if req.param("client_id") != Some(shared.client_id.as_str()) {
        let page = match site {
            Site::Google => {
                "Access blocked: Authorization Error\n\nError 401: invalid_client\nThe OAuth client was not found."
            }
            Site::Github => "The client_id passed is not a registered OAuth application.",
        };
        return text(StatusCode::BAD_REQUEST, page);
    }
    let Some(redirect_uri) = req.param("redirect_uri").filter(|uri| !uri.is_empty()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "Error 400: invalid_request\nMissing required parameter: redirect_uri",
        );
    };
    let absolute = redirect_uri.starts_with("http://") || redirect_uri.starts_with("https://");
    if !absolute || redirect_uri.contains('#') {
        return text(
            StatusCode::BAD_REQUEST,
            format!("Error 400: redirect_uri_mismatch\nInvalid redirect_uri: {redirect_uri}"),
        );
    }
    let state = req.param("state");
    let back = |pairs: &[(&str, &str)]| {
        let mut pairs = pairs.to_vec();
        if let Some(state) = state {
            pairs.push(("state", state));
        }
        let separator = if redirect_uri.contains('?') { '&' } else { '?' };
        found(&format!("{redirect_uri}{separator}{}", encode_form(pairs)))
    };
    let invalid = |description: &str| {
        back(&[
            ("error", "invalid_request"),
            ("error_description", description),
        ])
    };

    let scope = req.param("scope").unwrap_or_default();
    if site == Site::Google {
        match req.param("response_type") {
            Some("code") => {}
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "Error 400: invalid_request\nRequired parameter is missing: response_type",
                );
            }
            Some(_) => return back(&[("error", "unsupported_response_type")]),
        }
        if scope.trim().is_empty() {
            return text(
                StatusCode::BAD_REQUEST,
                "Error 400: invalid_request\nMissing required parameter: scope",
            );
        }
    }
    let code_challenge = req.param("code_challenge");
    if let Some(challenge) = code_challenge {
        if req.param("code_challenge_method").unwrap_or("plain") != "S256" {
            return invalid("Invalid code_challenge_method: only S256 is supported.");
        }
        let well_formed = challenge.len() == 43
            && challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !well_formed {
            return invalid("Invalid code_challenge: expected BASE64URL(SHA256(verifier)).");
        }
    } else if req.param("code_challenge_method").is_some() {
        return invalid("Missing code_challenge.");
    }

    let mut state_ = shared.state();
    if std::mem::take(&mut state_.deny_next) {
        return match site {
            Site::Google => back(&[("error", "access_denied")]),
            Site::Github => back(&[
                ("error", "access_denied"),
                (
                    "error_description",
                    "The user has denied your application access.",
                ),
                ("error_uri", GITHUB_ERRORS_URI),
            ]),
        };
    }
    let Some(user) = state_.user.clone() else {
        return text(StatusCode::BAD_REQUEST, "no user signed in at the provider");
    };
    let code = match site {
        Site::Google => format!("4/0A{}", random_b64(48)),
        Site::Github => random_hex(10),
    };
    state_.codes.insert(
        code.clone(),
        Grant {
            site,
            client_id: shared.client_id.clone(),
            redirect_uri: redirect_uri.to_owned(),
            scope: scope.to_owned(),
            code_challenge: code_challenge.map(str::to_owned),
            nonce: req.param("nonce").map(str::to_owned),
            user,
            issued: Instant::now(),
            spent: false,
            access_token: None,
        },
    );
    drop(state_);
    match site {
        // Google also reports the granted scopes and the account index.
        Site::Google => back(&[
            ("code", &code),
            ("scope", scope),
            ("authuser", "0"),
            ("prompt", "consent"),
        ]),
        Site::Github => back(&[("code", &code)]),
    }
}
