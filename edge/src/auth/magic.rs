//! Magic links: one email holds a link token and a 6-digit code; either signs the address in,
//! once, within the TTL.
//!
//! Stored in the `auth_tokens` bucket, hashed, never in clear:
//! - `magic_link.<sha256(token)>` → the address and the expiry: the link. Every email's link
//!   stays valid until it is used or expires; a later request does not revoke it, so a stranger
//!   who asks for sign-in emails for someone's address cannot void the owner's link.
//! - `magic.<sha256(email)>` → SHA-256 of the newest link's token, a peppered SHA-256 of its
//!   code, the expiry and the count of wrong codes: the code of the newest email. A new request
//!   replaces it with a fresh code and a fresh count.
//!
//! Redeeming purges the record with a revision check, so a link or code works exactly once even
//! when two requests race; using a code also removes its link and vice versa. After
//! [`MAX_CODE_ATTEMPTS`] wrong codes that *code* is locked (even the right code fails) — the link
//! in the same email still works, and a new email brings a new code. Who may ask how often is
//! the routes' business (per IP, per address and IP, per address: see ADR 12).

use super::store::{AuthKv, KvError, now_ms, sha256_hex};
use super::tokens::random_secret;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Wrong codes tolerated per emailed code; the next attempt fails whatever the code.
pub const MAX_CODE_ATTEMPTS: u32 = 5;

/// One emailed link.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LinkRecord {
    email: String,
    expires_ms: i64,
}

/// The newest emailed code of an address.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CodeRecord {
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
    /// Too many wrong codes for this code (`too_many_attempts`).
    #[error("too many wrong codes; use the link in the email, or request a new sign-in email")]
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

    /// A new link and code for `email` (canonical, lowercased). Earlier links stay valid; the
    /// new code replaces the earlier one.
    pub async fn issue(&self, email: &str) -> Result<Issued, MagicError> {
        let token = random_secret();
        let code = format!("{:06}", rand::random_range(0..1_000_000u32));
        let token_hash = sha256_hex(token.as_bytes());
        let expires_ms = now_ms() + self.ttl.as_millis() as i64;
        let link = LinkRecord {
            email: email.to_owned(),
            expires_ms,
        };
        let record = CodeRecord {
            email: email.to_owned(),
            token_hash: token_hash.clone(),
            code_hash: self.code_hash(email, &code),
            expires_ms,
            attempts: 0,
        };
        self.kv.put(&link_key(&token_hash), &link).await?;
        self.kv
            .put(&code_key(&sha256_hex(email.as_bytes())), &record)
            .await?;
        Ok(Issued { token, code })
    }

    /// Redeems a link token; the signed-in address.
    pub async fn redeem_token(&self, token: &str) -> Result<String, MagicError> {
        let token_hash = sha256_hex(token.as_bytes());
        let key = link_key(&token_hash);
        let Some((link, revision)) = self.kv.get::<LinkRecord>(&key).await? else {
            return Err(MagicError::Invalid);
        };
        if link.expires_ms <= now_ms() {
            return Err(MagicError::Expired);
        }
        if !self.kv.remove_at(&key, revision).await? {
            return Err(MagicError::Invalid); // someone else used it first
        }
        // The code of the same email goes with it.
        let code_key = code_key(&sha256_hex(link.email.as_bytes()));
        if let Some((record, revision)) = self.kv.get::<CodeRecord>(&code_key).await?
            && record.token_hash == token_hash
        {
            self.kv.remove_at(&code_key, revision).await?;
        }
        Ok(link.email)
    }

    /// Redeems the code of the newest email sent to `email`; the signed-in address.
    pub async fn redeem_code(&self, email: &str, code: &str) -> Result<String, MagicError> {
        let key = code_key(&sha256_hex(email.as_bytes()));
        for _ in 0..5 {
            let Some((record, revision)) = self.kv.get::<CodeRecord>(&key).await? else {
                return Err(MagicError::Invalid);
            };
            if record.expires_ms <= now_ms() {
                return Err(MagicError::Expired);
            }
            if record.attempts >= MAX_CODE_ATTEMPTS {
                return Err(MagicError::Locked);
            }
            if self.code_hash(email, code) == record.code_hash {
                if !self.kv.remove_at(&key, revision).await? {
                    continue; // a wrong guess or a new email came in between: look again
                }
                // The link of the same email goes with it.
                self.kv.remove(&link_key(&record.token_hash)).await?;
                return Ok(record.email);
            }
            let counted = CodeRecord {
                attempts: record.attempts + 1,
                ..record
            };
            if self.kv.update(&key, &counted, revision).await? {
                return Err(MagicError::WrongCode);
            }
        }
        Err(MagicError::Store(KvError::Contended(key)))
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

fn code_key(email_hash: &str) -> String {
    format!("magic.{email_hash}")
}

fn link_key(token_hash: &str) -> String {
    format!("magic_link.{token_hash}")
}
