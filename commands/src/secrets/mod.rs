//! Secrets outside the log (DESIGN §2), in the `secrets` KV bucket: never in the log in clear,
//! and destroyed by deleting their entry. Every one is sealed with the same AES-256-GCM box
//! ([`seal`]/[`open`]: `nonce (12 bytes) ‖ ciphertext+tag`, bound to associated data naming
//! what it is, so a ciphertext copied elsewhere does not open).
//!
//! Layout: `agent_tokens` ([`AgentTokens`]: runtimes' bearer tokens), `provider_keys`
//! ([`ProviderKeys`]: users' model API keys), `host_keys` ([`HostKeys`]: SSH hosts' private keys).

mod agent_tokens;
mod host_keys;
mod provider_keys;

pub use agent_tokens::{AgentTokens, TokenError, generate, token_entry};
pub use host_keys::{HostKeyError, HostKeys, host_key_entry};
pub use provider_keys::{ProviderKeys, SecretError, provider_key_entry};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

const NONCE_BYTES: usize = 12;

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
    use aes_gcm::aead::KeyInit;

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
}
