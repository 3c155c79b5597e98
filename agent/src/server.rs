//! [`AppState`], the router (every route, merged in one place) and the server loop.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{delete, get, post};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::chats::Chats;
use crate::config::{Config, ConfigError};
use crate::error::ApiError;
use crate::pending::Pending;
use crate::routes::{chat, exec, files};
use crate::tools::Toolbox;
use crate::tools::schedule::Scheduler;
use crate::workspace::Workspace;
use crate::{auth, routes};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The configuration.
    pub config: Arc<Config>,
    /// The workspace root.
    pub workspace: Workspace,
    /// Chat histories and running runs.
    pub chats: Arc<Chats>,
    /// Proactive messages for `GET /pending`.
    pub pending: Arc<Pending>,
    /// The tools runs use.
    pub toolbox: Toolbox,
    /// The HTTP client for the model provider and `web_fetch`.
    pub http: reqwest::Client,
    /// Fires when the server stops; runs and execs are its children.
    pub shutdown: CancellationToken,
}

/// Why the runtime could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is invalid.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    /// The workspace directory cannot be created or resolved.
    #[error("cannot open workspace {path:?}")]
    Workspace {
        /// The configured path.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The state directory cannot be read or created.
    #[error("cannot open state directory")]
    StateDir(#[source] std::io::Error),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// Serving failed.
    #[error("server failed")]
    Serve(#[source] std::io::Error),
}

impl AppState {
    /// Opens the workspace and state directory and builds the shared pieces.
    pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Self, ServeError> {
        config.validate()?;
        let workspace =
            Workspace::open(&config.workspace).map_err(|source| ServeError::Workspace {
                path: config.workspace.clone(),
                source,
            })?;
        let chats = Chats::open(config.state_dir.as_deref(), shutdown.clone())
            .await
            .map_err(ServeError::StateDir)?;
        // No overall timeout: model streams are long. Silence is bounded per read by the run.
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(30))
            .user_agent(concat!("warren-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ServeError::HttpClient)?;
        let pending = Arc::new(Pending::default());
        let mut toolbox = Toolbox::new(workspace.clone(), config.limits.clone(), http.clone())
            .with_scheduler(Scheduler::new(pending.clone(), shutdown.clone()));
        if let Some(platform) = &config.platform {
            toolbox = toolbox.with_platform(platform, config.token.clone());
        }
        Ok(Self {
            config: Arc::new(config),
            workspace,
            chats: Arc::new(chats),
            pending,
            toolbox,
            http,
            shutdown,
        })
    }
}

/// Every route. `/health` is open; the rest require the bearer token.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/chat", post(chat::start))
        .route("/chat/{chat_id}", delete(chat::clear))
        .route("/chat/{chat_id}/cancel", post(chat::cancel))
        .route("/pending", get(chat::pending))
        .route(
            "/files/{*path}",
            get(files::download)
                .post(files::upload)
                // The upload handler streams to disk and enforces its own limit.
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/exec", post(exec::start))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/health", get(routes::health))
        .merge(protected)
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .with_state(state)
}

/// Serves on `listener` until `shutdown` fires: running runs and execs are cancelled (their
/// process groups killed), their streams end, then the server returns.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let state = AppState::build(config, shutdown.clone()).await?;
    // Streamed events are small writes: Nagle would hold one back until the peer's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(ServeError::Serve)
}
