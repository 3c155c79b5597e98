//! Sign-in and sessions: magic links, wallets (EIP-4361), Google and GitHub, JWT access tokens, rotating refresh
//! tokens.
//!
//! Layout:
//! - [`store`] — [`store::AuthKv`]: JSON records in the `auth_tokens` KV bucket, revision-checked.
//! - [`tokens`] — access JWTs (HS256 pinned) and refresh families with reuse detection.
//! - [`magic`] — magic links and 6-digit codes: hashed, single use, TTL, attempt lock.
//! - [`routes`] — `POST /auth/login/email`, `/auth/verify-magic-link`, `/auth/refresh`,
//!   `/auth/logout`, `/auth/logout/all`, `GET /auth/providers`.
//! - [`wallet`] — Sign-In with Ethereum: `POST /auth/wallet/challenge`, `/auth/wallet/verify`.
//! - [`device`] — a device (the CLI) signed in through a browser: `POST /auth/device`,
//!   `/auth/device/approve`, `/auth/device/token`.
//! - [`oauth`] — Google (OpenID Connect) and GitHub: `GET /auth/oauth/{provider}`, its
//!   `/callback`, and `POST /auth/oauth/exchange`.

pub mod device;
pub mod magic;
pub mod oauth;
pub mod routes;
pub mod store;
pub mod tokens;
pub mod wallet;
