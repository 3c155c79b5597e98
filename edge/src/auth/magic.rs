//! Magic links: one email holds a link token and a 6-digit code; either signs the address in,
//! once, within the TTL.
//!
//! Stored in the `auth_tokens` bucket, hashed, never in clear:
//! - `magic.<sha256(email)>` → the address, SHA-256 of the token, a peppered SHA-256 of the code,
//!   the expiry and the count of wrong codes. A new request for the address replaces it (and so
//!   invalidates the previous link and code).
//! - `magic_token.<sha256(token)>` → the address hash, to find the record from a link.
//!
//! Redeeming purges the record with a revision check, so a link or code works exactly once even
//! when two requests race. After [`MAX_CODE_ATTEMPTS`] wrong codes the record is locked: even the
//! right code fails until a new link is requested.

use super::store::{AuthKv, KvError, now_ms, sha256_hex};
use super::tokens::random_secret;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Wrong codes tolerated per link; the next attempt fails whatever the code.
pub const MAX_CODE_ATTEMPTS: u32 = 5;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct MagicRecord {
    email: String,
    token_hash: String,
    code_hash: String,
    expires_ms: i64,
    attempts: u32,
}

/// A freshly issued link: what goes into the email.
pub struct Issued {
    /// The link token.
    pub token: String,
    /// The 6-digit code.
    pub code: String,
}

/// Why a link or code was refused (answered 401 with the code in parentheses).
#[derive(Debug, thiserror::Error)]
pub enum MagicError {
    /// Unknown, replaced or already used (`invalid_link`).
    #[error("this sign-in link or code is invalid or was already used")]
    Invalid,
    /// Past its TTL (`link_expired`).
    #[error("this sign-in link or code has expired")]
    Expired,
    /// The code was wrong (`invalid_code`).
    #[error("wrong code")]
    WrongCode,
    /// Too many wrong codes; request a new link (`too_many_attempts`).
    #[error("too many wrong codes; request a new sign-in email")]
    Locked,
    /// The store failed.
    #[error("magic link store failed")]
    Store(#[from] KvError),
}

/// Issues and redeems magic links.
#[derive(Clone)]
pub struct MagicLinks {
    kv: AuthKv,
    pepper: Vec<u8>,
    ttl: Duration,
}

impl MagicLinks {
    /// Links valid for `ttl`; codes hashed with `pepper`.
    pub fn new(kv: AuthKv, pepper: &[u8], ttl: Duration) -> Self {
        Self {
            kv,
            pepper: pepper.to_vec(),
            ttl,
        }
    }

    /// A new link and code for `email` (canonical, lowercased), replacing any earlier one.
    pub async fn issue(&self, email: &str) -> Result<Issued, MagicError> {
        let token = random_secret();
        let code = format!("{:06}", rand::random_range(0..1_000_000u32));
        let email_hash = sha256_hex(email.as_bytes());
        let token_hash = sha256_hex(token.as_bytes());
        let record = MagicRecord {
            email: email.to_owned(),
            token_hash: token_hash.clone(),
            code_hash: self.code_hash(email, &code),
            expires_ms: now_ms() + self.ttl.as_millis() as i64,
            attempts: 0,
        };
        self.kv
            .put(&format!("magic_token.{token_hash}"), &email_hash)
            .await?;
        self.kv.put(&record_key(&email_hash), &record).await?;
        Ok(Issued { token, code })
    }

    /// Redeems a link token; the signed-in address.
    pub async fn redeem_token(&self, token: &str) -> Result<String, MagicError> {
        let token_hash = sha256_hex(token.as_bytes());
        let index = format!("magic_token.{token_hash}");
        let Some((email_hash, _)) = self.kv.get::<String>(&index).await? else {
            return Err(MagicError::Invalid);
        };
        let key = record_key(&email_hash);
        let Some((record, revision)) = self.kv.get::<MagicRecord>(&key).await? else {
            return Err(MagicError::Invalid);
        };
        if record.token_hash != token_hash {
            return Err(MagicError::Invalid);
        }
        let email = record.email.clone();
        self.consume(&key, record, revision).await?;
        self.kv.remove(&index).await?;
        Ok(email)
    }

    /// Redeems a code sent to `email`; the signed-in address.
    pub async fn redeem_code(&self, email: &str, code: &str) -> Result<String, MagicError> {
        let key = record_key(&sha256_hex(email.as_bytes()));
        for _ in 0..5 {
            let Some((record, revision)) = self.kv.get::<MagicRecord>(&key).await? else {
                return Err(MagicError::Invalid);
            };
            if record.expires_ms <= now_ms() {
                return Err(MagicError::Expired);
            }
            if record.attempts >= MAX_CODE_ATTEMPTS {
                return Err(MagicError::Locked);
            }
            if self.code_hash(email, code) == record.code_hash {
                let email = record.email.clone();
                let index = format!("magic_token.{}", record.token_hash);
                self.consume(&key, record, revision).await?;
                self.kv.remove(&index).await?;
                return Ok(email);
            }
            let counted = MagicRecord {
                attempts: record.attempts + 1,
                ..record
            };
            if self.kv.update(&key, &counted, revision).await? {
                return Err(MagicError::WrongCode);
            }
        }
        Err(MagicError::Store(KvError::Contended(key)))
    }

    /// Checks expiry, then purges the record at its revision: whoever purges first signs in.
    async fn consume(
        &self,
        key: &str,
        record: MagicRecord,
        revision: u64,
    ) -> Result<(), MagicError> {
        if record.expires_ms <= now_ms() {
            return Err(MagicError::Expired);
        }
        if record.attempts >= MAX_CODE_ATTEMPTS {
            return Err(MagicError::Locked);
        }
        if self.kv.remove_at(key, revision).await? {
            Ok(())
        } else {
            Err(MagicError::Invalid)
        }
    }

    fn code_hash(&self, email: &str, code: &str) -> String {
        let mut data = self.pepper.clone();
        data.extend_from_slice(b"/magic-code/");
        data.extend_from_slice(email.as_bytes());
        data.push(b'/');
        data.extend_from_slice(code.trim().as_bytes());
        sha256_hex(&data)
    }
}

fn record_key(email_hash: &str) -> String {
    format!("magic.{email_hash}")
}
