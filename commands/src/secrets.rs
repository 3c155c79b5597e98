//! Secrets outside the log (DESIGN §2): the AES-256-GCM box every stored secret uses
//! ([`seal`]/[`open`]: `nonce (12 bytes) ‖ ciphertext+tag`, bound to associated data), and
//! [`AgentTokens`], each agent's bearer token in the `secrets` KV bucket under
//! `agent-token.<agent_id>`, bound to that key name. The deployer writes tokens; the chat worker
//! and the edge read them to reach runtimes. (Provider keys are the edge's, in the same bucket.)

use crate::topology::KV_SECRETS;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_nats::jetstream::{self, kv};
use warren_domain::ids::AgentId;

const NONCE_BYTES: usize = 12;

/// Why a token could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The master key is not 32 bytes.
    #[error("the encryption key must be 32 bytes")]
    BadMasterKey,
    /// The bucket could not be opened.
    #[error("opening the secrets bucket failed")]
    Bucket(#[source] jetstream::context::KeyValueError),
    /// The KV store failed.
    #[error("secrets bucket: {0}")]
    Kv(String),
    /// The ciphertext does not open under this key.
    #[error("agent token {0} does not decrypt")]
    Crypto(String),
}

/// Seals and opens agent tokens. Cheap to clone.
#[derive(Clone)]
pub struct AgentTokens {
    cipher: Aes256Gcm,
    kv: kv::Store,
}

/// The KV key of an agent's token.
pub fn token_entry(agent_id: AgentId) -> String {
    format!("agent-token.{agent_id}")
}

impl AgentTokens {
    /// Opens the `secrets` bucket (created by the command service's topology).
    pub async fn open(js: &jetstream::Context, master_key: &[u8]) -> Result<Self, TokenError> {
        let cipher = Aes256Gcm::new_from_slice(master_key).map_err(|_| TokenError::BadMasterKey)?;
        let kv = js
            .get_key_value(KV_SECRETS)
            .await
            .map_err(TokenError::Bucket)?;
        Ok(Self { cipher, kv })
    }

    /// Stores `token` as the agent's token.
    pub async fn put(&self, agent_id: AgentId, token: &str) -> Result<(), TokenError> {
        let key = token_entry(agent_id);
        let sealed = seal(&self.cipher, key.as_bytes(), token.as_bytes())
            .ok_or_else(|| TokenError::Crypto(key.clone()))?;
        self.kv
            .put(&key, sealed.into())
            .await
            .map_err(|err| TokenError::Kv(err.to_string()))?;
        Ok(())
    }

    /// The agent's token, if one was stored.
    pub async fn get(&self, agent_id: AgentId) -> Result<Option<String>, TokenError> {
        let key = token_entry(agent_id);
        let Some(sealed) = self
            .kv
            .get(&key)
            .await
            .map_err(|err| TokenError::Kv(err.to_string()))?
        else {
            return Ok(None);
        };
        let plain =
            open(&self.cipher, key.as_bytes(), &sealed).ok_or(TokenError::Crypto(key.clone()))?;
        String::from_utf8(plain)
            .map(Some)
            .map_err(|_| TokenError::Crypto(key))
    }

    /// Forgets the agent's token (a deleted agent).
    pub async fn purge(&self, agent_id: AgentId) -> Result<(), TokenError> {
        self.kv
            .purge(token_entry(agent_id))
            .await
            .map_err(|err| TokenError::Kv(err.to_string()))
    }
}

/// A fresh random token: 32 bytes as 64 hex digits.
pub fn generate() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// `nonce ‖ ciphertext` of `plain`, bound to `aad`.
pub fn seal(cipher: &Aes256Gcm, aad: &[u8], plain: &[u8]) -> Option<Vec<u8>> {
    let nonce_bytes: [u8; NONCE_BYTES] = rand::random();
    let nonce = Nonce::from_slice(&nonce_bytes);
    let ciphertext = cipher.encrypt(nonce, Payload { msg: plain, aad }).ok()?;
    let mut out = Vec::with_capacity(NONCE_BYTES + ciphertext.len());
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(&ciphertext);
    Some(out)
}

/// Opens what [`seal`] produced; `None` if it was tampered with or bound to something else.
pub fn open(cipher: &Aes256Gcm, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_BYTES {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> Aes256Gcm {
        Aes256Gcm::new_from_slice(&[3u8; 32]).expect("32-byte key")
    }

    #[test]
    fn a_sealed_secret_opens_only_with_its_binding() {
        let sealed = seal(&cipher(), b"a", b"sk-secret").expect("seal");
        assert!(!sealed.windows(9).any(|w| w == b"sk-secret"));
        assert_eq!(
            open(&cipher(), b"a", &sealed).as_deref(),
            Some(&b"sk-secret"[..])
        );
        assert_eq!(open(&cipher(), b"b", &sealed), None);
    }

    #[test]
    fn a_tampered_ciphertext_does_not_open() {
        let mut sealed = seal(&cipher(), b"a", b"sk-secret").expect("seal");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(open(&cipher(), b"a", &sealed), None);
    }

    #[test]
    fn a_sealed_token_opens_only_under_its_own_key_name() {
        let cipher = Aes256Gcm::new_from_slice(&[7u8; 32]).expect("32-byte key");
        let sealed = seal(&cipher, b"agent-token.a", b"tok").expect("seal");
        assert_eq!(
            open(&cipher, b"agent-token.a", &sealed).as_deref(),
            Some(&b"tok"[..])
        );
        assert_eq!(open(&cipher, b"agent-token.b", &sealed), None);
    }
}
