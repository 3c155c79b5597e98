//! Access and refresh tokens.
//!
//! - Access tokens are JWTs signed HS256 with `WARREN_JWT_SECRET`; verification pins HS256 (the
//!   token's own `alg` is never trusted) and requires `exp`. Claims: `sub` (user), `sid` (the
//!   session, i.e. the refresh family), `iat`, `exp`.
//! - A refresh token is `<user>.<family>.<secret>`. Its family lives in the `auth_tokens` bucket
//!   under `refresh.<user>.<family>` with the SHA-256 of the current secret. Refreshing swaps the
//!   secret with a revision-checked update (so two racing refreshes cannot both win); presenting
//!   any other secret of a known family is reuse, and revokes the family.
//! - `logout` revokes one family; `logout/all` stamps `epoch.<user>`: families created before it
//!   are dead. Access tokens die with their family (checked on every request).

use super::store::{AuthKv, KvError, now_ms, sha256_hex};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;
use uuid::Uuid;
use warren_domain::ids::UserId;

/// The answer of every sign-in and refresh.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenPair {
    /// JWT for `Authorization: Bearer …`.
    pub access_token: String,
    /// Opaque token for `POST /auth/refresh`; single use.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

/// Claims of an access token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: Uuid,
    /// The session (refresh family).
    pub sid: Uuid,
    /// Issued at (seconds).
    pub iat: i64,
    /// Expires at (seconds).
    pub exp: i64,
}

/// A refresh family as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Family {
    user_id: UserId,
    created_ms: i64,
    expires_ms: i64,
    secret_hash: String,
    revoked: bool,
}

/// Why a token was refused (all answered 401).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Malformed, badly signed or unknown.
    #[error("invalid token")]
    Invalid,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
    /// Its session was logged out or revoked.
    #[error("session revoked")]
    Revoked,
    /// A rotated refresh token was presented again; the family is now revoked.
    #[error("refresh token reused; session revoked")]
    Reused,
    /// The token store failed.
    #[error("token store failed")]
    Store(#[from] KvError),
}

/// Issues and checks tokens.
#[derive(Clone)]
pub struct Tokens {
    kv: AuthKv,
    encoding: EncodingKey,
    decoding: DecodingKey,
    access_ttl: Duration,
    refresh_ttl: Duration,
}

impl Tokens {
    /// Tokens signed with `secret`, kept in `kv`.
    pub fn new(kv: AuthKv, secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Self {
        Self {
            kv,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            access_ttl,
            refresh_ttl,
        }
    }

    /// Opens a new session for `user` and returns its first pair.
    pub async fn issue(&self, user: UserId) -> Result<TokenPair, TokenError> {
        let family = Uuid::new_v4();
        let secret = random_secret();
        let now = now_ms();
        let record = Family {
            user_id: user,
            created_ms: now,
            expires_ms: now + self.refresh_ttl.as_millis() as i64,
            secret_hash: sha256_hex(secret.as_bytes()),
            revoked: false,
        };
        self.kv.create(&family_key(user, family), &record).await?;
        self.pair(user, family, &secret)
    }

    /// Rotates `refresh_token`: a new pair in the same session, or an error (reuse revokes).
    pub async fn refresh(&self, refresh_token: &str) -> Result<(UserId, TokenPair), TokenError> {
        let (user, family, secret) = parse_refresh(refresh_token).ok_or(TokenError::Invalid)?;
        let key = family_key(user, family);
        let Some((record, revision)) = self.kv.get::<Family>(&key).await? else {
            return Err(TokenError::Invalid);
        };
        self.check_family(user, &record).await?;
        if sha256_hex(secret.as_bytes()) != record.secret_hash {
            self.revoke_family(&key).await?;
            tracing::warn!(user_id = %user, session = %family, "refresh token reused, session revoked");
            return Err(TokenError::Reused);
        }
        let next = random_secret();
        let rotated = Family {
            secret_hash: sha256_hex(next.as_bytes()),
            ..record
        };
        if !self.kv.update(&key, &rotated, revision).await? {
            // Someone rotated it between our read and write: this token is now a rotated one.
            self.revoke_family(&key).await?;
            return Err(TokenError::Reused);
        }
        Ok((user, self.pair(user, family, &next)?))
    }

    /// Checks an access token and that its session is alive; returns its claims.
    pub async fn verify_access(&self, token: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|err| match err.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?
            .claims;
        let user = UserId(claims.sub);
        let Some((record, _)) = self.kv.get::<Family>(&family_key(user, claims.sid)).await? else {
            return Err(TokenError::Revoked);
        };
        self.check_family(user, &record).await?;
        Ok(claims)
    }

    /// Whether `user`'s session `sid` is still alive (not signed out, revoked or expired): what
    /// an open connection re-checks when its access may have changed.
    pub async fn session_alive(&self, user: UserId, sid: Uuid) -> Result<(), TokenError> {
        let Some((record, _)) = self.kv.get::<Family>(&family_key(user, sid)).await? else {
            return Err(TokenError::Revoked);
        };
        self.check_family(user, &record).await
    }

    /// Ends one session.
    pub async fn logout(&self, user: UserId, session: Uuid) -> Result<(), TokenError> {
        self.revoke_family(&family_key(user, session)).await
    }

    /// Ends every session of `user` opened until now.
    pub async fn logout_all(&self, user: UserId) -> Result<(), TokenError> {
        self.kv.put(&epoch_key(user), &(now_ms() + 1)).await?;
        Ok(())
    }

    async fn check_family(&self, user: UserId, record: &Family) -> Result<(), TokenError> {
        if record.revoked || record.user_id != user {
            return Err(TokenError::Revoked);
        }
        if record.expires_ms <= now_ms() {
            return Err(TokenError::Expired);
        }
        let epoch = self.kv.get::<i64>(&epoch_key(user)).await?;
        if epoch.is_some_and(|(epoch, _)| record.created_ms < epoch) {
            return Err(TokenError::Revoked);
        }
        Ok(())
    }

    async fn revoke_family(&self, key: &str) -> Result<(), TokenError> {
        // Retry on a racing update: revocation must win.
        for _ in 0..5 {
            let Some((record, revision)) = self.kv.get::<Family>(key).await? else {
                return Ok(());
            };
            if record.revoked {
                return Ok(());
            }
            let revoked = Family {
                revoked: true,
                ..record
            };
            if self.kv.update(key, &revoked, revision).await? {
                return Ok(());
            }
        }
        Err(TokenError::Store(KvError::Contended(key.to_owned())))
    }

    fn pair(&self, user: UserId, family: Uuid, secret: &str) -> Result<TokenPair, TokenError> {
        let now = now_ms() / 1000;
        let claims = Claims {
            sub: user.0,
            sid: family,
            iat: now,
            exp: now + self.access_ttl.as_secs() as i64,
        };
        let access_token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
                .map_err(|_| TokenError::Invalid)?;
        Ok(TokenPair {
            access_token,
            refresh_token: format!("{}.{}.{secret}", user.0.simple(), family.simple()),
            token_type: "Bearer".into(),
            expires_in: self.access_ttl.as_secs(),
        })
    }
}

/// The user a session record's key (`refresh.<user>.<family>`, `epoch.<user>`) belongs to.
pub fn user_of_key(key: &str) -> Option<UserId> {
    let rest = key
        .strip_prefix("refresh.")
        .or_else(|| key.strip_prefix("epoch."))?;
    let user = rest.split('.').next()?;
    Uuid::try_parse(user).ok().map(UserId)
}

fn family_key(user: UserId, family: Uuid) -> String {
    format!("refresh.{}.{}", user.0.simple(), family.simple())
}

fn epoch_key(user: UserId) -> String {
    format!("epoch.{}", user.0.simple())
}

fn parse_refresh(token: &str) -> Option<(UserId, Uuid, &str)> {
    let mut parts = token.splitn(3, '.');
    let user = Uuid::try_parse(parts.next()?).ok()?;
    let family = Uuid::try_parse(parts.next()?).ok()?;
    let secret = parts.next().filter(|s| !s.is_empty())?;
    Some((UserId(user), family, secret))
}

/// 256 random bits, URL-safe.
pub fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_parse_into_user_family_and_secret() {
        let user = UserId::new();
        let family = Uuid::new_v4();
        let token = format!("{}.{}.abc", user.0.simple(), family.simple());
        assert_eq!(parse_refresh(&token), Some((user, family, "abc")));
        assert_eq!(parse_refresh("nope"), None);
        assert_eq!(
            parse_refresh(&format!("{}.{}.", user.0.simple(), family.simple())),
            None
        );
    }
}
