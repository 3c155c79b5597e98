//! [`TestOAuth`]: a local OAuth 2.0 / OpenID Connect provider speaking the real wire protocols
//! of Google (OpenID Connect) and GitHub (OAuth apps), so a sign-in is tested end to end
//! without either.
//!
//! One server on `127.0.0.1:<free port>` with one registered client ([`TestOAuth::client_id`],
//! [`TestOAuth::client_secret`]) serves both providers' endpoints:
//!
//! - Google: authorize `GET /o/oauth2/v2/auth`, token `POST /token` (RS256 ID tokens issued by
//!   [`TestOAuth::url`]), JWKS `GET /oauth2/v3/certs`, userinfo `GET /v1/userinfo`, discovery
//!   `GET /.well-known/openid-configuration`.
//! - GitHub: authorize `GET /login/oauth/authorize`, token `POST /login/oauth/access_token`
//!   (errors as HTTP 200, JSON or form-encoded per `Accept`), REST API `GET /api/user` and
//!   `GET /api/user/emails` (a `User-Agent` is required, as GitHub requires one).
//!
//! The authorize pages consent at once as the user the test signed in
//! ([`TestOAuth::sign_in_as`]). Codes are single-use, expire after 60 s and are bound to the
//! `redirect_uri` and PKCE `S256` challenge given with them. Faults on demand:
//! [`TestOAuth::deny_next`], [`TestOAuth::tamper_next_id_token`], key rotation. Every request is
//! recorded ([`TestOAuth::requests`]).
//!
//! ```no_run
//! use warren_testkit::oauth::{OAuthUser, TestOAuth};
//!
//! # async fn example() {
//! let oauth = TestOAuth::start().await;
//! // configure the app with oauth.client_id(), oauth.client_secret(),
//! // oauth.google_authorize_url(), oauth.google_token_url(), oauth.google_jwks_url(), ...
//! oauth.sign_in_as(OAuthUser::new("alice", "alice@example.com"));
//! // drive the browser: app → authorize (302 back with code and state) → app callback
//! assert!(oauth.requests().iter().any(|r| r.path == "/token"));
//! # }
//! ```
//!
//! # Layout
//!
//! - `http` — the router: records each request, dispatches it, form and query encoding.
//! - `authorize` — both authorize pages: validation, consent, denial.
//! - `token` — both token endpoints: client authentication, code, `redirect_uri` and PKCE checks.
//! - `id_token` — the ID token's claims and signature, with the tampering.
//! - `keys` — RSA signing keys and the JWK set.
//! - `resources` — JWKS, discovery, Google userinfo and the GitHub REST API.
//! - `state` — what the provider remembers: codes, access tokens, keys, faults, requests.

mod authorize;
mod http;
mod id_token;
mod keys;
mod resources;
mod state;
mod token;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;
use tokio_util::sync::CancellationToken;

use keys::SigningKey;
use state::{Shared, State};

/// A local Google- and GitHub-like OAuth provider on `127.0.0.1:<free port>`; stops when
/// dropped.
pub struct TestOAuth {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

/// A person with an account at the provider.
#[derive(Clone, Debug)]
pub struct OAuthUser {
    /// The Google subject id (21 digits, like `"1099…"`): the ID token's and userinfo's `sub`.
    pub sub: String,
    /// The GitHub numeric user id.
    pub github_id: i64,
    /// The GitHub login.
    pub login: String,
    /// The display name.
    pub name: String,
    /// The primary email address.
    pub email: String,
    /// Whether the provider verified `email`.
    pub email_verified: bool,
}

impl OAuthUser {
    /// A user with a verified `email`; `sub_or_login` is the GitHub login and the name, and
    /// `sub` and `github_id` derive from it (the same name gives the same ids).
    pub fn new(sub_or_login: &str, email: &str) -> Self {
        let hash = digest::digest(&digest::SHA256, sub_or_login.as_bytes());
        let bytes = hash.as_ref();
        let word = |at: usize| {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(eight)
        };
        Self {
            // Google subjects are 21 decimal digits starting with 1.
            sub: format!("10{:019}", word(0) % 10_000_000_000_000_000_000),
            github_id: i64::try_from(word(8) % 200_000_000).expect("fits") + 1_000,
            login: sub_or_login.to_owned(),
            name: sub_or_login.to_owned(),
            email: email.to_owned(),
            email_verified: true,
        }
    }
}

/// A defect to give the next ID token ([`TestOAuth::tamper_next_id_token`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tamper {
    /// `aud` is another client's (`"another-client.apps.example"`).
    WrongAudience,
    /// Issued two hours ago, expired an hour ago.
    Expired,
    /// Signed by a key whose `kid` the JWKS never publishes.
    UnknownKey,
    /// `alg` `HS256`: HMAC-SHA256 keyed with the current public key's DER bytes (algorithm
    /// confusion).
    AlgHs256,
    /// `alg` `none` and an empty signature (the token ends with `.`).
    AlgNone,
    /// `iss` is `"https://evil.example"`.
    WrongIssuer,
    /// `nonce` is `"not-the-nonce"`.
    WrongNonce,
}

/// A request the provider received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, as sent (still percent-encoded).
    pub path: String,
    /// The raw query string, without the `?` (empty if none).
    pub query: String,
    /// The body (lossy UTF-8).
    pub body: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

impl TestOAuth {
    /// Starts the provider on a free port with a fresh client and signing key.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test oauth: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("test oauth: local addr");
        let shared = Arc::new(Shared {
            issuer: format!("http://{addr}"),
            client_id: format!("warren-test-{}", state::random_hex(8)),
            client_secret: format!("secret-{}", state::random_hex(16)),
            state: Mutex::new(State::new(SigningKey::generate())),
        });
        let stop = CancellationToken::new();
        let app = http::router(shared.clone());
        let until = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = axum::serve(listener, app) => {}
                _ = until.cancelled() => {}
            }
        });
        Self { addr, shared, stop }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash); also the ID tokens' issuer (`iss`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The one registered client's id (`warren-test-<hex>`); any other is unknown.
    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    /// The registered client's secret.
    pub fn client_secret(&self) -> &str {
        &self.shared.client_secret
    }

    /// Google's authorize page: `{url}/o/oauth2/v2/auth`.
    pub fn google_authorize_url(&self) -> String {
        format!("{}/o/oauth2/v2/auth", self.url())
    }

    /// Google's token endpoint: `{url}/token`.
    pub fn google_token_url(&self) -> String {
        format!("{}/token", self.url())
    }

    /// Google's JWK set: `{url}/oauth2/v3/certs`.
    pub fn google_jwks_url(&self) -> String {
        format!("{}/oauth2/v3/certs", self.url())
    }

    /// Google's userinfo endpoint: `{url}/v1/userinfo`.
    pub fn google_userinfo_url(&self) -> String {
        format!("{}/v1/userinfo", self.url())
    }

    /// GitHub's authorize page: `{url}/login/oauth/authorize`.
    pub fn github_authorize_url(&self) -> String {
        format!("{}/login/oauth/authorize", self.url())
    }

    /// GitHub's token endpoint: `{url}/login/oauth/access_token`.
    pub fn github_token_url(&self) -> String {
        format!("{}/login/oauth/access_token", self.url())
    }

    /// GitHub's REST API base: `{url}/api` (`/api/user`, `/api/user/emails`).
    pub fn github_api_url(&self) -> String {
        format!("{}/api", self.url())
    }

    /// The user the authorize pages sign in (and consent as) from now on. Until the first
    /// call they answer 400 "no user signed in at the provider".
    pub fn sign_in_as(&self, user: OAuthUser) {
        self.shared.state().user = Some(user);
    }

    /// The next authorize request is declined: redirected back with `error=access_denied`.
    pub fn deny_next(&self) {
        self.shared.state().deny_next = true;
    }

    /// The next ID token issued gets `how` wrong (later ones are sound again).
    pub fn tamper_next_id_token(&self, how: Tamper) {
        self.shared.state().tamper = Some(how);
    }

    /// Signs new ID tokens with a new key and returns its `kid`; the JWKS serves it and the
    /// key before it (as Google publishes the current and the previous key).
    pub fn rotate_key(&self) -> String {
        let key = Arc::new(SigningKey::generate());
        let kid = key.kid.clone();
        let mut state = self.shared.state();
        state.keys.push(key);
        let older = state.keys.len().saturating_sub(2);
        state.keys.drain(..older);
        kid
    }

    /// The JWKS serves only the current key.
    pub fn retire_old_keys(&self) {
        let mut state = self.shared.state();
        let older = state.keys.len().saturating_sub(1);
        state.keys.drain(..older);
    }

    /// The current signing key's `kid`.
    pub fn current_kid(&self) -> String {
        self.shared.state().current_key().kid.clone()
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.state().jwks_fetches
    }

    /// Every request received, in order of arrival.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.state().requests.clone()
    }
}

impl Drop for TestOAuth {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
