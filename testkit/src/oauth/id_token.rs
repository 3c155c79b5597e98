//! Google's ID token: an RS256 JWT (compact serialization) with the OIDC claims for a code's
//! user, or the defect a test asked for ([`Tamper`]).

use aws_lc_rs::{digest, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::Tamper;
use super::keys::SigningKey;
use super::state::{Grant, has_scope, now};

/// How long an ID token is valid, as Google's.
const LIFETIME: i64 = 3600;

/// The ID token for `grant`, exchanged for `access_token`, signed by `key` unless `tamper`
/// says otherwise.
pub(crate) fn issue(
    issuer: &str,
    grant: &Grant,
    access_token: &str,
    key: &SigningKey,
    tamper: Option<Tamper>,
) -> String {
    let mut claims = claims(issuer, grant, access_token);
    match tamper {
        Some(Tamper::WrongAudience) => claims["aud"] = json!("another-client.apps.example"),
        Some(Tamper::Expired) => {
            claims["iat"] = json!(now() - 2 * LIFETIME);
            claims["exp"] = json!(now() - LIFETIME);
        }
        Some(Tamper::WrongIssuer) => claims["iss"] = json!("https://evil.example"),
        Some(Tamper::WrongNonce) => claims["nonce"] = json!("not-the-nonce"),
        _ => {}
    }
    match tamper {
        Some(Tamper::UnknownKey) => rs256(&claims, &SigningKey::generate()),
        Some(Tamper::AlgHs256) => {
            let header = json!({"alg": "HS256", "kid": key.kid, "typ": "JWT"});
            let input = signing_input(&header, &claims);
            let secret = hmac::Key::new(hmac::HMAC_SHA256, key.public_der());
            let tag = hmac::sign(&secret, input.as_bytes());
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
        }
        Some(Tamper::AlgNone) => {
            format!(
                "{}.",
                signing_input(&json!({"alg": "none", "typ": "JWT"}), &claims)
            )
        }
        _ => rs256(&claims, key),
    }
}

/// The claims Google puts in: identity claims per granted scope (`email`, `profile`).
fn claims(issuer: &str, grant: &Grant, access_token: &str) -> Value {
    let iat = now();
    let mut claims = json!({
        "iss": issuer,
        "azp": grant.client_id,
        "aud": grant.client_id,
        "sub": grant.user.sub,
        "at_hash": at_hash(access_token),
        "iat": iat,
        "exp": iat + LIFETIME,
    });
    if has_scope(&grant.scope, "email") {
        claims["email"] = json!(grant.user.email);
        claims["email_verified"] = json!(grant.user.email_verified);
    }
    if has_scope(&grant.scope, "profile") {
        claims["name"] = json!(grant.user.name);
    }
    if let Some(nonce) = &grant.nonce {
        claims["nonce"] = json!(nonce);
    }
    claims
}

/// OIDC Core 3.1.3.6: the left half of SHA-256 of the access token, base64url.
fn at_hash(access_token: &str) -> String {
    let hash = digest::digest(&digest::SHA256, access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&hash.as_ref()[..16])
}

fn rs256(claims: &Value, key: &SigningKey) -> String {
    let header = json!({"alg": "RS256", "kid": key.kid, "typ": "JWT"});
    let input = signing_input(&header, claims);
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// `base64url(header).base64url(claims)`.
fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}
