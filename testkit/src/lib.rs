//! Test support for Warren's component and end-to-end tests: a real `nats-server` and a fresh
//! PostgreSQL database per test, and condition polling instead of sleeps.
//!
//! ```no_run
//! use std::time::Duration;
//! use warren_testkit::{TestDb, TestNats, wait_until};
//!
//! # async fn example() {
//! let nats = TestNats::start().await;
//! let client = nats.client().await;
//! let db = TestDb::create().await;
//! sqlx::query("CREATE TABLE t (id int)").execute(db.pool()).await.expect("create table");
//! wait_until(Duration::from_secs(5), || async {
//!     client.connection_state() == async_nats::connection::State::Connected
//! })
//! .await;
//! # }
//! ```
//!
//! # Layout
//!
//! - [`nats`] — [`TestNats`]: a [`warren_deploy::LocalNats`] in a temporary directory on a free
//!   port, killed and removed when the test ends.
//! - [`db`] — [`TestDb`]: a uniquely named database on a shared server (`WARREN_TEST_DATABASE_URL`
//!   or one PostgreSQL cluster the kit starts and shares between test processes), dropped when
//!   the test ends.
//! - [`smtp`] — [`TestSmtp`]: a local SMTP server on a free port that keeps the mail it gets.
//! - [`wait`] — [`wait_until`] and [`wait_for`]: poll a condition with a timeout and fail with the
//!   caller's location.
//! - [`model_server`] — [`ModelServer`]: a scripted LLM provider speaking the OpenAI chat
//!   completions and Anthropic Messages wire protocols (streaming with tool calls), recording
//!   every request.
//! - [`telegram`] — [`TestTelegram`]: a fake Telegram Bot API (long polling and webhooks,
//!   strict `MarkdownV2`, files, fault injection) with simulated users, recording every call.
//! - [`otlp`] — [`TestCollector`]: a local OpenTelemetry collector endpoint (OTLP/HTTP, JSON)
//!   keeping the spans it is sent.
//! - [`oauth`] — [`TestOAuth`]: a local OAuth 2.0 / OpenID Connect provider speaking Google's
//!   (RS256 ID tokens, JWKS, userinfo) and GitHub's (OAuth app, REST user API) wire protocols,
//!   with PKCE, single-use codes, key rotation and tampered ID tokens, recording every request.
//!
//! The helpers panic with a descriptive message instead of returning errors: they run only in
//! tests, where a panic is the failure report (`try_` variants return the error instead).

pub mod db;
pub mod model_server;
pub mod nats;
pub mod oauth;
pub mod otlp;
pub mod smtp;
pub mod telegram;
pub mod wait;

pub use db::TestDb;
pub use model_server::{ModelServer, Reply};
pub use nats::TestNats;
pub use oauth::{OAuthUser, TestOAuth};
pub use otlp::{CollectedSpan, TestCollector};
pub use smtp::{Mail, TestSmtp};
pub use telegram::{TestTelegram, TgUser};
pub use wait::{wait_for, wait_until};
