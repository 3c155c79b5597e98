//! The `warren` client commands, beside the server roles: `warren login`, `warren agents …`,
//! `warren chat …`, `warren connect telegram`. They speak only the public API: REST for sign-in and agents, the gateway
//! protocol v1 over WebSocket for conversations and the live feed (ADR 29).
//!
//! Layout:
//! - [`store`] — the client's directory: the sign-in (owner-only) and the last session;
//! - [`api`] — REST with the error envelope and silent token refresh;
//! - [`gateway`] — one gateway v1 socket: handshake, requests and their answers, events;
//! - [`events`] — the gateway's event frames as types;
//! - [`link`] — a gateway socket that reconnects and resumes a session by `seq`;
//! - [`render`] — output for people, or JSON for scripts;
//! - [`login`], [`agents`], [`chat`], [`connect`] — the commands.

pub mod agents;
pub mod api;
pub mod chat;
pub mod connect;
pub mod events;
pub mod gateway;
pub mod link;
pub mod login;
pub mod render;
pub mod store;
