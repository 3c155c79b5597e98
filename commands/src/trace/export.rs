//! Spans exported by OTLP over HTTP (protobuf or JSON), started from the standard `OTEL_*`
//! variables: `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) turns it
//! on, `OTEL_EXPORTER_OTLP_PROTOCOL` picks `http/protobuf` (the default) or `http/json`,
//! `OTEL_EXPORTER_OTLP_HEADERS` adds headers, `OTEL_SERVICE_NAME` and
//! `OTEL_RESOURCE_ATTRIBUTES` describe the process, `OTEL_BSP_*` tune the batches and
//! `OTEL_TRACES_EXPORTER=none` turns it off. gRPC is not built in.
//!
//! Spans are batched and sent from a thread of the exporter's own; a collector that is down
//! costs dropped spans, never a stalled request.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use std::sync::OnceLock;

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// The tracer spans are exported with, once [`from_env`] started one.
pub(crate) fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get()
}

/// Why span export could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A protocol this build does not speak.
    #[error(
        "OTEL_EXPORTER_OTLP_PROTOCOL={0:?}: Warren exports spans by http/protobuf or http/json"
    )]
    Protocol(String),
    /// The exporter's own configuration was refused (an endpoint that is not a URL, say).
    #[error("the OTLP span exporter: {0}")]
    Build(String),
    /// A second exporter in one process.
    #[error("span export was already started in this process")]
    Twice,
}

/// The running exporter: dropping it sends what is still batched and stops it.
pub struct Exporter(SdkTracerProvider);

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Err(err) = self.0.shutdown() {
            tracing::warn!(error = %err, "flushing the last spans failed");
        }
    }
}

fn set(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// Starts exporting when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
/// is set and `OTEL_TRACES_EXPORTER` is not `none`; `Ok(None)` otherwise. `service` names the
/// process (`service.name`) unless `OTEL_SERVICE_NAME` does.
pub fn from_env(service: &str) -> Result<Option<Exporter>, ExportError> {
    let wanted = set("OTEL_EXPORTER_OTLP_ENDPOINT")
        .or_else(|| set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        .is_some();
    if !wanted || set("OTEL_TRACES_EXPORTER").as_deref() == Some("none") {
        return Ok(None);
    }
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(protocol) = set(name) {
            if protocol != "http/protobuf" && protocol != "http/json" {
                return Err(ExportError::Protocol(protocol));
            }
            break;
        }
    }
    if TRACER.get().is_some() {
        return Err(ExportError::Twice);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|err| ExportError::Build(err.to_string()))?;
    let mut resource = Resource::builder();
    if set("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_owned());
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    TRACER
        .set(provider.tracer("warren"))
        .map_err(|_| ExportError::Twice)?;
    Ok(Some(Exporter(provider)))
}
