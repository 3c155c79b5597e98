//! What the provider remembers: the signed-in user, issued codes and access tokens, signing
//! keys, armed faults and every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::keys::SigningKey;
use super::{OAuthUser, Recorded, Tamper};

/// How long an authorization code can be exchanged.
pub(crate) const CODE_LIFETIME: Duration = Duration::from_secs(60);

/// Which provider's endpoints issued a code or token (they do not accept each other's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Site {
    Google,
    Github,
}

/// An authorization code and what it was issued for.
#[derive(Clone)]
pub(crate) struct Grant {
    pub(crate) site: Site,
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) scope: String,
    pub(crate) code_challenge: Option<String>,
    pub(crate) nonce: Option<String>,
    pub(crate) user: OAuthUser,
    pub(crate) issued: Instant,
    /// Presented to the token endpoint already (a code is single-use).
    pub(crate) spent: bool,
    /// The access token it was exchanged for, revoked if the code is replayed.
    pub(crate) access_token: Option<String>,
}

/// An access token: whose, from which provider, with which scopes.
pub(crate) struct Token {
    pub(crate) site: Site,
    pub(crate) user: OAuthUser,
    pub(crate) scope: String,
}

impl Token {
    /// Whether the space- or comma-separated scope list holds `scope`.
    pub(crate) fn has_scope(&self, scope: &str) -> bool {
        has_scope(&self.scope, scope)
    }
}

/// Whether the space- or comma-separated `scopes` hold `scope`.
pub(crate) fn has_scope(scopes: &str, scope: &str) -> bool {
    scopes
        .split([' ', ','])
        .any(|s| !s.is_empty() && s == scope)
}

pub(crate) struct Shared {
    /// `http://127.0.0.1:PORT`: the base URL and the ID tokens' `iss`.
    pub(crate) issuer: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) state: Mutex<State>,
}

impl Shared {
    /// A test helper: a poisoned lock only means another test thread panicked already.
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub(crate) struct State {
    pub(crate) user: Option<OAuthUser>,
    pub(crate) deny_next: bool,
    pub(crate) tamper: Option<Tamper>,
    /// The published keys, oldest first; the last one signs.
    pub(crate) keys: Vec<Arc<SigningKey>>,
    pub(crate) codes: HashMap<String, Grant>,
    pub(crate) tokens: HashMap<String, Token>,
    pub(crate) requests: Vec<Recorded>,
    pub(crate) jwks_fetches: usize,
}

impl State {
    pub(crate) fn new(key: SigningKey) -> Self {
        Self {
            user: None,
            deny_next: false,
            tamper: None,
            keys: vec![Arc::new(key)],
            codes: HashMap::new(),
            tokens: HashMap::new(),
            requests: Vec::new(),
            jwks_fetches: 0,
        }
    }

    /// The key new ID tokens are signed with.
    pub(crate) fn current_key(&self) -> &Arc<SigningKey> {
        self.keys
            .last()
            .expect("test oauth: there is always a signing key")
    }
}

/// `n` random bytes.
pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes).expect("test oauth: random bytes");
    bytes
}

/// `n` random bytes in lowercase hex.
pub(crate) fn random_hex(n: usize) -> String {
    random_bytes(n).iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` random bytes, base64url without padding.
pub(crate) fn random_b64(n: usize) -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(n))
}

/// `len` random ASCII letters and digits.
pub(crate) fn random_alnum(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    random_bytes(len)
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("test oauth: clock after 1970");
    i64::try_from(since.as_secs()).expect("test oauth: time fits i64")
}
