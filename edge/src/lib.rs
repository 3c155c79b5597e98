//! Warren's edge: the Axum HTTP surface (REST under `/api/v1`, SSE and the WebSocket gateway).
//!
//! Handlers parse input into a command or a query and map the result; no business rules, and no
//! SQL outside [`views`] and [`consistency`]. One error type owns the HTTP mapping. After a write, a
//! handler waits (bounded) for the projection that serves its reads ([`consistency`]), so the
//! client's next GET sees it.
//!
//! Layout:
//! - [`app`] — the application layer: every use case once (access, limits, chat, agents), called
//!   by the REST handlers and the gateway alike; adapters only translate.
//! - [`idempotency`] — `Idempotency-Key` / `idempotencyKey`: retries return the first answer.
//! - [`settings`] — [`EdgeSettings`]: the edge's validated configuration.
//! - [`state`] — [`AppState`]: command service, read-model pool, NATS, KV stores, mailer, limits.
//! - [`error`] — [`ApiError`]: the one `IntoResponse` with the stable JSON envelope, and the one
//!   table from domain codes to statuses.
//! - [`extract`] — JSON/path/query extractors answering in the envelope; `AuthUser`,
//!   `ApprovedUser`, `AdminUser`; the client IP.
//! - [`input`] — the text rules on every string a client or runtime sends (bodies, queries,
//!   paths, gateway params), checked before any command is built.
//! - [`routes`] — [`routes::ApiRouter`]: a router that records its (method, path) table.
//! - [`server`] — every resource router merged in one place, shared layers, `serve`.
//! - [`console`] — the web console (static HTML, CSS and JavaScript modules embedded in the
//!   binary) at `/`, with its single-page paths and a strict CSP.
//! - [`lane`] — follow streams (SSE `GET`s) answered by a small HTTP/1 writer of its own;
//!   hyper serves every other connection.
//! - [`conns`] — connection caps (per IP, in all, a reserve for health) and the idle and
//!   header timeouts.
//! - [`auth`] — magic links, tokens, identities and the `/auth` routes.
//! - [`users`], [`keys`] — `/users/me`, connections, provider API keys.
//! - [`admin`] — `/admin/users`: approve, reject, revoke, roles and tiers.
//! - [`hosts`] — `/admin/hosts`: the SSH hosts agents are placed on.
//! - [`agents`] — `/agents`: create, configure, delete, deployment status (and what the sandbox
//!   uses), repair, redeploy, health; waking past the sandbox cap is 503 `at_capacity`.
//! - [`chat`] — `/chat/{agent_id}`: post a message and stream its run as SSE from the log;
//!   clear history, pending messages, and `/files` downloads proxied from the runtime.
//! - [`frame`] — what a client is sent on a stream, typed once from the log's events, with one
//!   serializer per protocol (LiberClaw SSE, gateway v1) and the feed's versioned frames.
//! - [`workspace`] — `POST /agents/{id}/exec` (a shell command's output as SSE) and
//!   `PUT /files/{agent_id}/{path}` (a streamed upload), both audited in the log.
//! - [`follow`] — following a conversation's log from a cursor, for SSE and WebSocket clients,
//!   through one shared read per conversation per process ([`follow::hub`]).
//! - [`feed`] — `GET /events`: the user-wide live feed of agent and conversation changes.
//! - [`gateway`] — `GET /ws`: the gateway protocol v1 over WebSocket.
//! - [`conversations`] — `/conversations`: by last activity, and their messages.
//! - [`runtime_api`] — `/runtime/agents/{id}/sessions`: what agent runtimes call back on for
//!   their session tools, authenticated by the agent's own token ([`runtime_api::RuntimeCaller`]).
//! - [`model_proxy`] — `/runtime/agents/{id}/model/{openai,anthropic}/…`: the model proxy, so no
//!   provider key is ever inside a sandbox (ADR 23; the use case is [`app::model`]).
//! - [`analytics`] — `/admin/usage` (analysts) and `/usage/report`: usage per bucket and group,
//!   priced.
//! - [`usage`], [`quota`] — `/usage`, and the tier quotas (agents, messages and model tokens per
//!   day).
//! - [`mail`] — SMTP (or log) delivery.
//! - [`consistency`] — bounded wait for a projection checkpoint (read-after-write).
//! - [`ratelimit`] — fixed-window request limits counted in KV, shared by every edge process.
//! - [`telegram`] — the Telegram bridge (`warren worker telegram`): a bot calling the
//!   application layer, its updates queued in the log, answers streamed as drafts and delivered
//!   from the log; its webhook route `POST /telegram/webhook`.
//! - [`views`] — read-model queries and the JSON shapes of users, keys, agents, usage.
//! - [`health`] — `GET /api/v1/health`: NATS, Postgres and each projection's lag.
//! - [`ops`] — the operators' listener of every role (`WARREN_METRICS_ADDR`): `/metrics`,
//!   `/healthz`, `/readyz`, and the one bounded dependency check.
//! - [`openapi`] — the OpenAPI 3.1 document at `GET /api/v1/openapi.json`.

pub mod admin;
pub mod agents;
pub mod analytics;
pub mod app;
pub mod auth;
pub mod chat;
pub mod conns;
pub mod consistency;
pub mod console;
pub mod conversations;
pub mod error;
pub mod extract;
pub mod feed;
pub mod follow;
pub mod frame;
pub mod gateway;
pub mod health;
pub mod hosts;
pub mod idempotency;
pub mod input;
pub mod keys;
pub mod lane;
pub mod mail;
pub mod model_proxy;
pub mod openapi;
pub mod ops;
pub mod quota;
pub mod ratelimit;
pub mod routes;
pub mod runtime_api;
pub mod server;
pub mod settings;
pub mod state;
pub mod telegram;
pub mod usage;
pub mod users;
pub mod views;
pub mod workspace;

pub use error::ApiError;
pub use server::{router, serve};
pub use settings::EdgeSettings;
pub use state::AppState;
