//! [`TestCollector`]: a local OpenTelemetry collector endpoint speaking OTLP/HTTP with the JSON
//! encoding (`POST /v1/traces`, `application/json`, ids as hex strings, as the OTLP
//! specification maps protobuf to JSON), keeping every span it is sent.
//!
//! Point a process at it with `OTEL_EXPORTER_OTLP_ENDPOINT` = [`TestCollector::url`] and
//! `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`. A protobuf body is refused with 415, as a
//! JSON-only receiver would.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// One span as a collector stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectedSpan {
    /// `service.name` of the process that sent it.
    pub service: String,
    /// The span's name.
    pub name: String,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// The parent's span id; empty for a root span.
    pub parent_span_id: String,
    /// `SpanKind` as its protobuf number (1 internal, 2 server, 3 client, 4 producer, 5 consumer).
    pub kind: i64,
    /// String and integer attributes, as text.
    pub attributes: Vec<(String, String)>,
}

impl CollectedSpan {
    /// An attribute's value, as text.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    spans: Mutex<Vec<CollectedSpan>>,
    exports: Mutex<u64>,
}

/// The collector; stops when dropped.
pub struct TestCollector {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl TestCollector {
    /// Starts it on a free loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP collector");
        let addr = listener.local_addr().expect("collector address");
        let shared = Arc::new(Shared::default());
        let stop = CancellationToken::new();
        let app = Router::new()
            .route("/v1/traces", post(export))
            .with_state(shared.clone());
        let stopped = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await;
        });
        Self { addr, shared, stop }
    }

    /// The endpoint, for `OTEL_EXPORTER_OTLP_ENDPOINT` (the exporter adds `/v1/traces`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<CollectedSpan> {
        lock(&self.shared.spans).clone()
    }

    /// How many export requests were accepted.
    pub fn exports(&self) -> u64 {
        *lock(&self.shared.exports)
    }
}

impl Drop for TestCollector {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `POST /v1/traces`: an `ExportTraceServiceRequest` in JSON.
async fn export(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !json_body {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "this collector takes OTLP/HTTP JSON only",
        )
            .into_response();
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let Some(spans) = parse(&request) else {
        return (StatusCode::BAD_REQUEST, "not an ExportTraceServiceRequest").into_response();
    };
    lock(&shared.spans).extend(spans);
    *lock(&shared.exports) += 1;
    // An ExportTraceServiceResponse with no partial success: everything was accepted.
    (
        [(header::CONTENT_TYPE, "application/json")],
        json!({}).to_string(),
    )
        .into_response()
}

fn parse(request: &Value) -> Option<Vec<CollectedSpan>> {
    let mut found = Vec::new();
    for resource_spans in request.get("resourceSpans")?.as_array()? {
        let resource = attributes(&resource_spans["resource"]["attributes"]);
        let service = resource
            .iter()
            .find(|(key, _)| key == "service.name")
            .map(|(_, value)| value.clone())
            .unwrap_or_default();
        for scope_spans in resource_spans["scopeSpans"].as_array()? {
            for span in scope_spans["spans"].as_array()? {
                let text = |key: &str| span[key].as_str().unwrap_or_default().to_owned();
                let hex = |id: String, len: usize| {
                    (id.len() == len && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
                };
                found.push(CollectedSpan {
                    service: service.clone(),
                    name: text("name"),
                    trace_id: hex(text("traceId"), 32)?,
                    span_id: hex(text("spanId"), 16)?,
                    parent_span_id: text("parentSpanId"),
                    kind: span["kind"].as_i64().unwrap_or_default(),
                    attributes: attributes(&span["attributes"]),
                });
            }
        }
    }
    Some(found)
}

/// `KeyValue`s with string, integer, boolean or double values, as text.
fn attributes(list: &Value) -> Vec<(String, String)> {
    let Some(list) = list.as_array() else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|pair| {
            let key = pair["key"].as_str()?.to_owned();
            let value = &pair["value"];
            let text = if let Some(s) = value["stringValue"].as_str() {
                s.to_owned()
            } else if let Some(i) = value.get("intValue") {
                // int64 is a JSON string in OTLP's mapping; some encoders send a number.
                i.as_str().map_or_else(|| i.to_string(), str::to_owned)
            } else if let Some(b) = value["boolValue"].as_bool() {
                b.to_string()
            } else {
                value["doubleValue"].to_string()
            };
            Some((key, text))
        })
        .collect()
}
