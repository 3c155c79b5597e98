//! Sign-In with Ethereum (EIP-4361): `POST /auth/wallet/challenge {address}` answers a SIWE
//! message for this platform with a single-use nonce; `POST /auth/wallet/verify {message,
//! signature}` checks the message (domain, URI, version, chain id, nonce, issue and expiry
//! times, the address it was issued to) and the `personal_sign` signature (EIP-191 over the
//! message, secp256k1, the signer recovered and compared with the message's address), then
//! signs the wallet's owner in (registering them at first) as any identity does.
//!
//! A nonce is kept as `siwe.<nonce>` in the auth bucket with its address and expiry, and is
//! consumed by a revision-checked delete before the signature is even checked, so a message
//! verifies at most once: a replay, or a race of two, is refused. Addresses are EIP-55
//! checksummed; a mixed-case address whose checksum is wrong is refused, as wallets do.

use crate::app::identity::{self, Identity};
use crate::app::limits;
use crate::auth::routes::SignedIn;
use crate::error::ApiError;
use crate::extract::{ApiJson, ClientIp};
use crate::openapi::resp;
use crate::routes::ApiRouter;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use chrono::{DateTime, SecondsFormat, Utc};
use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha3::{Digest, Keccak256};
use utoipa::ToSchema;
use warren_domain::user::AuthKind;

/// The wallet routes.
pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .post("/auth/wallet/challenge", challenge)
        .post("/auth/wallet/verify", verify)
}

/// How long a challenge may be answered.
pub const CHALLENGE_TTL_SECS: i64 = 300;

/// `POST /auth/wallet/challenge`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// The wallet's address (`0x` and 40 hex digits; checksummed if mixed case).
    #[schema(example = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")]
    pub address: String,
}

/// A message to sign with the wallet (`personal_sign`), then send to `/auth/wallet/verify`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Challenge {
    /// The EIP-4361 message, exactly as it must be signed.
    pub message: String,
    /// Its single-use nonce.
    pub nonce: String,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
}

/// `POST /auth/wallet/verify`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The signed message.
    pub message: String,
    /// The 65-byte signature, hex (`0x` optional), `v` as 27/28 or 0/1.
    pub signature: String,
}

impl crate::input::TextFields for ChallengeRequest {}
impl crate::input::TextFields for VerifyRequest {}

/// What a nonce was issued for.
#[derive(Serialize, Deserialize)]
struct Issued {
    address: String,
    expires_at: i64,
}

fn nonce_key(nonce: &str) -> String {
    format!("siwe.{nonce}")
}

/// The platform's SIWE domain (`host[:port]` of the console's URL) and URI.
fn domain_and_uri(state: &AppState) -> (String, String) {
    let uri = state.settings.frontend_url.trim_end_matches('/').to_owned();
    let domain = reqwest::Url::parse(&uri)
        .ok()
        .and_then(|url| {
            let host = url.host_str()?.to_owned();
            Some(match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        })
        .unwrap_or_else(|| uri.clone());
    (domain, uri)
}

/// A message for `address` to sign.
#[utoipa::path(post, path = "/api/v1/auth/wallet/challenge", operation_id = "post_auth_wallet_challenge", tag = "auth",
    request_body = ChallengeRequest,
    responses((status = 200, description = "The message to sign.", body = Challenge),
        resp::BadRequest, resp::Validation, resp::RateLimited))]
pub(crate) async fn challenge(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<ChallengeRequest>,
) -> Result<Json<Challenge>, ApiError> {
    limits::auth_request(&state, &ip).await?;
    let address = checksummed(&request.address)?;
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let issued_at = Utc::now();
    let expires_at = issued_at + chrono::Duration::seconds(CHALLENGE_TTL_SECS);
    state
        .auth_kv
        .put(
            &nonce_key(&nonce),
            &Issued {
                address: address.clone(),
                expires_at: expires_at.timestamp(),
            },
        )
        .await
        .map_err(ApiError::internal)?;
    let (domain, uri) = domain_and_uri(&state);
    let message = Siwe {
        domain,
        address,
        statement: Some("Sign in to Warren.".into()),
        uri,
        version: "1".into(),
        chain_id: state.settings.wallet_chain_id,
        nonce: nonce.clone(),
        issued_at: issued_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        expiration_time: Some(expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)),
    }
    .to_string();
    Ok(Json(Challenge {
        message,
        nonce,
        expires_at,
    }))
}

/// Sign in with a signed challenge; registers the wallet's owner on first sign-in.
#[utoipa::path(post, path = "/api/v1/auth/wallet/verify", operation_id = "post_auth_wallet_verify", tag = "auth",
    request_body = VerifyRequest,
    responses((status = 200, description = "Signed in.", body = SignedIn),
        resp::BadRequest, resp::Unauthorized, resp::Validation, resp::RateLimited))]
pub(crate) async fn verify(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(request): ApiJson<VerifyRequest>,
) -> Result<Json<SignedIn>, ApiError> {
    limits::auth_request(&state, &ip).await?;
    let signer = verified_signer(&state, &request).await?;
    let signed_in = identity::sign_in(
        &state,
        Identity {
            kind: AuthKind::Wallet,
            external_id: signer,
            email: None,
            display_name: None,
            listed_admin: false,
        },
    )
    .await?;
    Ok(Json(crate::auth::routes::session(&state, signed_in).await?))
}

/// The address that signed `request`'s message, once the message is checked against this
/// platform and its nonce is spent.
pub async fn verified_signer(
    state: &AppState,
    request: &VerifyRequest,
) -> Result<String, ApiError> {
    let message = Siwe::parse(&request.message)
        .ok_or_else(|| ApiError::invalid_field("message", "is not an EIP-4361 message"))?;
    let refused = |code: &'static str, why: &str| ApiError::unauthorized(code, why.to_owned());
    let (domain, uri) = domain_and_uri(state);
    if message.domain != domain || message.uri != uri {
        return Err(refused("siwe_domain", "the message is for another site"));
    }
    if message.version != "1" || message.chain_id != state.settings.wallet_chain_id {
        return Err(refused(
            "siwe_chain",
            "the message is for another chain or version",
        ));
    }
    let now = Utc::now();
    let time = |text: &str| DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc));
    let issued = time(&message.issued_at)
        .map_err(|_| ApiError::invalid_field("message", "Issued At is not an RFC 3339 time"))?;
    if issued > now + chrono::Duration::seconds(60) {
        return Err(refused(
            "siwe_expired",
            "the message is issued in the future",
        ));
    }
    if let Some(expiry) = &message.expiration_time {
        let expiry = time(expiry).map_err(|_| {
            ApiError::invalid_field("message", "Expiration Time is not an RFC 3339 time")
        })?;
        if expiry <= now {
            return Err(refused("siwe_expired", "the message has expired"));
        }
    }
    // The nonce is spent now, whatever follows: a message verifies at most once.
    let key = nonce_key(&message.nonce);
    let record = state
        .auth_kv
        .get::<Issued>(&key)
        .await
        .map_err(ApiError::internal)?;
    let Some((record, revision)) = record else {
        return Err(refused(
            "siwe_nonce",
            "the nonce is unknown or already used",
        ));
    };
    if !state
        .auth_kv
        .remove_at(&key, revision)
        .await
        .map_err(ApiError::internal)?
    {
        return Err(refused(
            "siwe_nonce",
            "the nonce is unknown or already used",
        ));
    }
    if record.expires_at <= now.timestamp() {
        return Err(refused("siwe_expired", "the challenge has expired"));
    }
    if record.address != message.address {
        return Err(refused(
            "siwe_address",
            "the nonce was issued to another address",
        ));
    }
    let signer = recover(&request.message, &request.signature)?;
    if signer != message.address {
        return Err(refused(
            "invalid_signature",
            "the signature is not the address's",
        ));
    }
    Ok(signer)
}

/// The EIP-55 form of `address`: refused if it is not `0x` + 40 hex digits, or if it is mixed
/// case with a wrong checksum.
pub fn checksummed(address: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::invalid_field("address", "must be 0x and 40 hex digits (EIP-55)");
    let hex_part = address.strip_prefix("0x").ok_or_else(invalid)?;
    if hex_part.len() != 40 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    let lower = hex_part.to_ascii_lowercase();
    let hash = Keccak256::digest(lower.as_bytes());
    let mut out = String::from("0x");
    for (i, c) in lower.chars().enumerate() {
        let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
        out.push(if c.is_ascii_alphabetic() && nibble >= 8 {
            c.to_ascii_uppercase()
        } else {
            c
        });
    }
    let mixed = hex_part.bytes().any(|b| b.is_ascii_lowercase())
        && hex_part.bytes().any(|b| b.is_ascii_uppercase());
    if mixed && out[2..] != *hex_part {
        return Err(ApiError::invalid_field(
            "address",
            "has a wrong EIP-55 checksum (a mistyped address?)",
        ));
    }
    Ok(out)
}

/// The address that signed `message` (EIP-191 `personal_sign`), checksummed.
pub fn recover(message: &str, signature: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::invalid_field("signature", "must be 65 bytes of hex");
    let bytes = hex::decode(signature.trim().trim_start_matches("0x")).map_err(|_| invalid())?;
    if bytes.len() != 65 {
        return Err(invalid());
    }
    let bad = || ApiError::unauthorized("invalid_signature", "the signature does not verify");
    let v = match bytes[64] {
        27 | 28 => bytes[64] - 27,
        0 | 1 => bytes[64],
        _ => return Err(bad()),
    };
    let signature = Signature::from_slice(&bytes[..64]).map_err(|_| bad())?;
    let recovery = RecoveryId::from_byte(v).ok_or_else(bad)?;
    let prefixed = format!("\x19Ethereum Signed Message:\n{}{message}", message.len());
    let digest = Keccak256::digest(prefixed.as_bytes());
    let key =
        VerifyingKey::recover_from_prehash(&digest, &signature, recovery).map_err(|_| bad())?;
    Ok(address_of(&key))
}

/// The checksummed address of a public key.
pub fn address_of(key: &VerifyingKey) -> String {
    let point = key.to_encoded_point(false);
    let hash = Keccak256::digest(&point.as_bytes()[1..]);
    let address = format!("0x{}", hex::encode(&hash[12..]));
    checksummed(&address).unwrap_or(address)
}

/// An EIP-4361 message, as far as sign-in reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct Siwe {
    /// Who asks (`host[:port]`).
    pub domain: String,
    /// The signing address (checksummed).
    pub address: String,
    /// What the user agrees to.
    pub statement: Option<String>,
    /// The site's URI.
    pub uri: String,
    /// `1`.
    pub version: String,
    /// The chain.
    pub chain_id: u64,
    /// The single-use nonce.
    pub nonce: String,
    /// When it was issued (RFC 3339).
    pub issued_at: String,
    /// When it expires (RFC 3339).
    pub expiration_time: Option<String>,
}

impl std::fmt::Display for Siwe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} wants you to sign in with your Ethereum account:\n{}\n\n",
            self.domain, self.address
        )?;
        if let Some(statement) = &self.statement {
            write!(f, "{statement}\n\n")?;
        }
        write!(
            f,
            "URI: {}\nVersion: {}\nChain ID: {}\nNonce: {}\nIssued At: {}",
            self.uri, self.version, self.chain_id, self.nonce, self.issued_at
        )?;
        if let Some(expiry) = &self.expiration_time {
            write!(f, "\nExpiration Time: {expiry}")?;
        }
        Ok(())
    }
}

impl Siwe {
    /// Parses the message's fixed layout; `None` if it is not one (or an address is not
    /// EIP-55).
    pub fn parse(text: &str) -> Option<Self> {
        let mut lines = text.split('\n');
        let domain = lines
            .next()?
            .strip_suffix(" wants you to sign in with your Ethereum account:")?
            .to_owned();
        let address = checksummed(lines.next()?).ok()?;
        if !lines.next()?.is_empty() {
            return None;
        }
        let mut line = lines.next()?;
        let mut statement = None;
        if !line.starts_with("URI: ") {
            statement = Some(line.to_owned());
            if !lines.next()?.is_empty() {
                return None;
            }
            line = lines.next()?;
        }
        let uri = line.strip_prefix("URI: ")?.to_owned();
        let version = lines.next()?.strip_prefix("Version: ")?.to_owned();
        let chain_id = lines.next()?.strip_prefix("Chain ID: ")?.parse().ok()?;
        let nonce = lines.next()?.strip_prefix("Nonce: ")?.to_owned();
        if nonce.len() < 8 || !nonce.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        let issued_at = lines.next()?.strip_prefix("Issued At: ")?.to_owned();
        let mut expiration_time = None;
        for rest in lines {
            match rest.strip_prefix("Expiration Time: ") {
                Some(expiry) if expiration_time.is_none() => {
                    expiration_time = Some(expiry.to_owned())
                }
                // Optional fields sign-in does not use.
                _ if rest.starts_with("Not Before: ")
                    || rest.starts_with("Request ID: ")
                    || rest.starts_with("Resources:")
                    || rest.starts_with("- ") => {}
                _ => return None,
            }
        }
        Some(Self {
            domain,
            address,
            statement,
            uri,
            version,
            chain_id,
            nonce,
            issued_at,
            expiration_time,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eip55_checksums_match_the_eips_examples_and_bad_ones_are_refused() {
        for good in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            assert_eq!(checksummed(good).expect(good), good);
            assert_eq!(checksummed(&good.to_ascii_lowercase()).expect(good), good);
        }
        assert!(checksummed("0x5aaeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_err());
        assert!(checksummed("5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_err());
        assert!(checksummed("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe").is_err());
        assert!(checksummed("0xZaAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_err());
    }

    #[test]
    fn a_message_reads_back_as_it_was_written() {
        let message = Siwe {
            domain: "console.test".into(),
            address: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".into(),
            statement: Some("Sign in to Warren.".into()),
            uri: "http://console.test".into(),
            version: "1".into(),
            chain_id: 1,
            nonce: "0123456789abcdef".into(),
            issued_at: "2026-12-04T10:00:00Z".into(),
            expiration_time: Some("2026-12-04T10:05:00Z".into()),
        };
        assert_eq!(Siwe::parse(&message.to_string()), Some(message.clone()));
        let no_statement = Siwe {
            statement: None,
            expiration_time: None,
            ..message
        };
        assert_eq!(Siwe::parse(&no_statement.to_string()), Some(no_statement));
        assert_eq!(Siwe::parse("hello"), None);
    }
}
