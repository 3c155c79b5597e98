//! `warren-agent`: the runtime inside each sandbox. It runs the model loop against an
//! OpenAI-compatible or Anthropic endpoint with tools (shell, files, web fetch) confined to one
//! workspace, behind the baal-agent HTTP protocol extended with token deltas, tool call ids and
//! results, cancellation, shell exec and file upload. Under Warren it holds no provider key: it
//! calls its model through the platform's model proxy with its own token
//! ([`config::ModelProxy`], `WARREN_AGENT_MODEL_PROXY`). `PROTOCOL.md` in this crate describes
//! the protocol and the binary's configuration as implemented.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use tokio_util::sync::CancellationToken;
//! let config = warren_agent::Config::new("/workspace", "agent-token");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! warren_agent::serve(config, listener, CancellationToken::new()).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`config`] — [`Config`] (token, workspace, model settings and the model proxy, limits) and
//!   the binary's flags.
//! - [`server`] — shared state, the router (all routes in one place), [`serve`].
//! - [`routes`] — the handlers: chat runs, cancel/clear, pending, files, exec, health.
//! - [`auth`] — the bearer-token middleware (constant-time compare).
//! - [`error`] — [`error::ApiError`], the JSON error envelope.
//! - [`events`] — [`events::AgentEvent`], the SSE event shapes, ids and keepalives.
//! - [`chats`] — per-chat history, the one-run-per-chat rule, optional persistence.
//! - [`run`] — the model loop of one run.
//! - [`model`] — provider-neutral messages; OpenAI and Anthropic streaming wire formats; the
//!   model proxy's refusals.
//! - [`tools`] — the tools offered to the model.
//! - [`process`] — shell commands in their own process group, output capping.
//! - [`workspace`] — path confinement to the workspace.
//! - [`pending`] — the proactive message queue behind `GET /pending`.
//! - [`memory`] — the sandbox's out-of-memory kill counter, which ends a run whose tool was
//!   killed for memory.

pub mod auth;
pub mod chats;
pub mod config;
pub mod error;
pub mod events;
pub mod memory;
pub mod model;
pub mod pending;
pub mod process;
pub mod routes;
pub mod run;
pub mod server;
pub mod tools;
pub mod workspace;

pub use config::{Config, ProviderKind, Secret};
pub use server::{ServeError, serve};
