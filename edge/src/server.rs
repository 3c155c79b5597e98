//! The router and the server loop: every resource router merged in one place, with the layers
//! every route shares (body limit, per-IP write limit, CORS, the JSON error envelope for
//! unknown routes, wrong methods and panics), and the server loop that puts follow streams on
//! the [`lane`](crate::lane).

use crate::conns::Connections;
use crate::error::ApiError;
use crate::extract::{client_ip, is_write};
use crate::lane::{Lane, Sniffer};
use crate::routes::{API_PREFIX, ApiRouter};
use crate::state::AppState;
use crate::{
    admin, agents, analytics, auth, chat, console, conversations, feed, gateway, health, hosts,
    keys, model_proxy, openapi, runtime_api, usage, users, workspace,
};
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument;
use warren_commands::{metrics, trace};

/// Every API route, merged in one place.
pub fn api() -> ApiRouter {
    ApiRouter::new()
        .merge(health::routes())
        .merge(openapi::routes())
        .merge(auth::routes::routes())
        .merge(auth::wallet::routes())
        .merge(auth::oauth::routes())
        .merge(auth::device::routes())
        .merge(users::routes())
        .merge(keys::routes())
        .merge(admin::routes())
        .merge(hosts::routes())
        .merge(agents::routes())
        .merge(usage::routes())
        .merge(analytics::routes())
        .merge(chat::routes())
        .merge(workspace::routes())
        .merge(conversations::routes())
        .merge(feed::routes())
        .merge(runtime_api::routes())
        .merge(model_proxy::routes())
        .merge(crate::telegram::intake::routes())
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let max_body = state.settings.max_body_bytes;
    let cors = cors_layer(&state.settings.cors_origins);
    let api = api()
        .into_router()
        .method_not_allowed_fallback(|| async {
            ApiError::client(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method",
            )
        })
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::idempotency::middleware,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            limit_writes_per_ip,
        ));
    let mut router = Router::new()
        .nest(API_PREFIX, api)
        .merge(gateway::routes())
        .merge(console::routes())
        .fallback(|| async {
            ApiError::client(StatusCode::NOT_FOUND, "not_found", "no such route")
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("handler panicked".into()).into_response()
        }))
        .layer(middleware::from_fn(count_request))
        .layer(middleware::from_fn(trace_request))
        .with_state(state);
    if let Some(cors) = cors {
        router = router.layer(cors);
    }
    router
}

async fn limit_writes_per_ip(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    // Every runtime of a host calls its model from one address; the token quota bounds them.
    // Telegram's webhook is authenticated by its secret, and Telegram's servers post every
    // bot's updates from a few addresses.
    let path = request.uri().path();
    let exempt = model_proxy::is_model_path(path) || path == crate::telegram::intake::WEBHOOK_PATH;
    if is_write(request.method()) && !exempt {
        let (parts, body) = request.into_parts();
        let ip = client_ip(&parts);
        if let Err(err) = crate::app::limits::ip_write(&state, &ip).await {
            return err.into_response();
        }
        return next.run(Request::from_parts(parts, body)).await;
    }
    next.run(request).await
}

/// Runs each request as a span (`GET /api/v1/agents/{agent_id}`): a child of the client's
/// `traceparent` when it sends a valid one, else a new trace. Every command the request issues
/// carries its context into the commit, and every log line of the request names its trace id.
async fn trace_request(request: Request, next: Next) -> Response {
    let parent = request
        .headers()
        .get(trace::HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| path.as_str());
    let name = format!("{} {route}", request.method());
    trace::span(
        name,
        trace::SpanKind::Server,
        parent.as_deref(),
        async move {
            let traceparent = trace::current().unwrap_or_default();
            let span = tracing::info_span!(
                "request",
                method = %request.method(),
                path = request.uri().path(),
                trace_id = trace::trace_id(&traceparent).unwrap_or_default(),
            );
            let response = next.run(request).instrument(span).await;
            let status = response.status();
            trace::attribute("http.response.status_code", i64::from(status.as_u16()));
            if status.is_server_error() {
                trace::failed(status.to_string());
            }
            response
        },
    )
    .await
}

/// Counts every request by method, matched route and status, with its latency until the
/// response head (`warren_http_requests_total`, `warren_http_request_duration_seconds`). A
/// path no route matched is counted as `unmatched` and an unusual method as `other`, so a scan
/// cannot grow the series.
async fn count_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let response = next.run(request).await;
    // Any token is a method to HTTP: only the known ones become labels.
    let method = match method {
        Method::GET
        | Method::HEAD
        | Method::POST
        | Method::PUT
        | Method::PATCH
        | Method::DELETE
        | Method::OPTIONS => method.as_str(),
        _ => "other",
    };
    metrics::global().http(
        method,
        route.as_deref().unwrap_or("unmatched"),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// CORS for the configured origins (`*` for any); `None` when none are configured.
fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin.trim_end_matches('/')).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .expose_headers([HeaderName::from_static("retry-after")])
            .max_age(Duration::from_secs(600)),
    )
}

/// Serves until `shutdown` fires, then drains in-flight requests and open streams.
///
/// Follow streams (SSE `GET`s) are answered on the [`lane`](crate::lane); hyper serves every
/// other connection, with a header timeout (which also closes keep-alive connections idle
/// between requests). Every connection is counted against the caps of [`crate::conns`].
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let closing = state.closing.clone();
    let limits = state.settings.http.clone();
    let app = router(state);
    let tasks = TaskTracker::new();
    let connections = Connections::new(limits.clone());
    let lane = Lane::new(app.clone(), shutdown.clone(), tasks.clone(), connections);
    let mut sniffer = Sniffer::new(listener, lane);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    // CONNECT for WebSockets over HTTP/2, as axum::serve does.
    builder.http2().enable_connect_protocol();
    loop {
        let (io, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = sniffer.accept() => accepted,
        };
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.map(Body::new)
            },
        ));
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    // Streams waiting on runs end now, so draining does not wait for the runs.
    closing.cancel();
    tasks.close();
    if tokio::time::timeout(DRAIN, tasks.wait()).await.is_err() {
        tracing::warn!("connections still open {DRAIN:?} after shutdown; dropping them");
    }
    Ok(())
}

/// How long shutdown waits for in-flight requests and streams.
const DRAIN: Duration = Duration::from_secs(10);
