//! The application layer (DESIGN §3a, ADR 17): each use case written once, returning a typed
//! outcome, for every channel — REST handlers and gateway methods only translate requests into
//! these calls and outcomes into their protocol. A rule that holds on one channel (approval,
//! revocation, a quota, a rate limit) therefore holds on all.
//!
//! Layout:
//! - [`access`] — who is asking, as of now: authentication, approval, admin, re-checks of open
//!   connections.
//! - [`revocation`] — the per-process watch that tells open connections to re-check.
//! - [`limits`] — every rate limit by name, counted across edge processes.
//! - [`chat`] — post a message (ownership, approval, quota, conversation pick or start, queue
//!   mode), cancel a run, clear history, start a conversation.
//! - [`fork`] — fork a conversation after one of its messages.
//! - [`agents`] — create, configure, delete, stop, start, restart, repair, redeploy.
//! - [`runtime`] — a running agent's runtime (URL and token), and the workspace path rule.
//! - [`exec`] — run a shell command in the agent, its output streamed, audited in the log.
//! - [`upload`] — stream a file into the agent's workspace, within the limit, audited.
//! - [`model`] — call a model on an agent's behalf (the model proxy): the owner's upstream and
//!   key, the token quota, the answer streamed back and its usage metered into the log.
//! - [`identity`] — sign-in by an identity (email, Telegram): registration, linking, link
//!   codes, and who is admin.
//! - [`admin`] — an admin's decisions about a user (approve, reject, revoke, role).
//! - [`keys`] — a user's provider keys, sealed outside the log.
//! - [`download`] — read a file out of the agent's workspace, within a size cap.
//! - [`usage`] — a user's usage today against their tier's limits.
//! - [`analytics`] — usage over a time range per bucket and group, priced: the analyst API and a
//!   user's own report.

pub mod access;
pub mod admin;
pub mod agents;
pub mod analytics;
pub mod chat;
pub mod download;
pub mod exec;
pub mod fork;
pub mod identity;
pub mod keys;
pub mod limits;
pub mod model;
pub mod revocation;
pub mod runtime;
pub mod upload;
pub mod usage;
