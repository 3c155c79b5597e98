//! Sign-in and sessions: magic links, wallets (EIP-4361), JWT access tokens, rotating refresh
//! tokens.
//!
//! Layout:
//! - [`store`] — [`store::AuthKv`]: JSON records in the `auth_tokens` KV bucket, revision-checked.
//! - [`tokens`] — access JWTs (HS256 pinned) and refresh families with reuse detection.
//! - [`magic`] — magic links and 6-digit codes: hashed, single use, TTL, attempt lock.
//! - [`routes`] — `POST /auth/login/email`, `/auth/verify-magic-link`, `/auth/refresh`,
//!   `/auth/logout`, `/auth/logout/all`, `GET /auth/providers`.
//! - [`wallet`] — Sign-In with Ethereum: `POST /auth/wallet/challenge`, `/auth/wallet/verify`.

pub mod magic;
pub mod routes;
pub mod store;
pub mod tokens;
pub mod wallet;
