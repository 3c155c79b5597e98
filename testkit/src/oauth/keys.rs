//! RSA signing keys (2048 bit, RS256) and their JWK form.

use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use aws_lc_rs::{digest, rand::SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// A signing key and its key id.
pub(crate) struct SigningKey {
    /// 40 hex digits, like Google's: derived from the modulus.
    pub(crate) kid: String,
    pair: KeyPair,
}

impl SigningKey {
    /// A fresh 2048-bit key.
    pub(crate) fn generate() -> Self {
        let pair = KeyPair::generate(KeySize::Rsa2048).expect("test oauth: generate an RSA key");
        let modulus = pair.public_key().modulus();
        let hash = digest::digest(&digest::SHA256, modulus.big_endian_without_leading_zero());
        let kid = hash.as_ref()[..20]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self { kid, pair }
    }

    /// The public key as a JWK (`n` and `e` big-endian, base64url without padding).
    pub(crate) fn jwk(&self) -> Value {
        let public = self.pair.public_key();
        json!({
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        })
    }

    /// The public key, DER-encoded (`RSAPublicKey`, RFC 8017).
    pub(crate) fn public_der(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// An RSASSA-PKCS1-v1_5 SHA-256 signature of `message`.
    pub(crate) fn sign(&self, message: &[u8]) -> Vec<u8> {
        let mut signature = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .expect("test oauth: RSA signature");
        signature
    }
}
