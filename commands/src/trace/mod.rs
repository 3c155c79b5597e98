//! W3C trace context (`traceparent`) carried from a request to the commits it causes and on to
//! the work they cause, and the spans of each hop, exported by OTLP when configured
//! ([`export`]).
//!
//! The edge runs each request as a span ([`span`]) under the client's context; every command
//! issued inside appends in a child span whose context ([`current`]) goes into its commit's
//! `traceparent` header; a worker handling that commit runs its work as a span under that
//! header, and passes its own context on (to the agent runtime's HTTP calls, to the model
//! provider). Without an exporter only the context travels: a trace id shared by every hop and
//! a new span id per hop.
//!
//! - [`export`] — the OTLP span exporter, started from the standard `OTEL_*` variables.

pub mod export;

pub use opentelemetry::trace::SpanKind;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _,
};
use std::borrow::Cow;
use std::future::Future;
use std::sync::Mutex;

/// The header that carries the context (on HTTP requests and on commits).
pub const HEADER: &str = "traceparent";

tokio::task_local! {
    static CURRENT: Hop;
}

/// The context a task runs in, and the exported span it ends when the task's work is done.
struct Hop {
    traceparent: String,
    span: Option<Mutex<opentelemetry_sdk::trace::Span>>,
}

impl Hop {
    fn context(traceparent: String) -> Self {
        Self {
            traceparent,
            span: None,
        }
    }

    /// A new hop under `parent`: an exported span when an exporter runs, else just a child
    /// context.
    fn start(name: Cow<'static, str>, kind: SpanKind, parent: Option<&str>) -> Self {
        let Some(tracer) = export::tracer() else {
            return Self::context(child_of(parent));
        };
        let parent = match parent.and_then(remote) {
            Some(remote) => opentelemetry::Context::new().with_remote_span_context(remote),
            None => opentelemetry::Context::new(),
        };
        let span = tracer
            .span_builder(name)
            .with_kind(kind)
            .start_with_context(tracer, &parent);
        let context = span.span_context();
        let traceparent = format!(
            "00-{}-{}-{:02x}",
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8()
        );
        Self {
            traceparent,
            span: Some(Mutex::new(span)),
        }
    }

    fn with_span(&self, change: impl FnOnce(&mut opentelemetry_sdk::trace::Span)) {
        if let Some(span) = &self.span {
            change(
                &mut span
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
        }
    }
}

/// Runs `work` with `traceparent` as the current trace context (no span of its own).
pub async fn scope<F: Future>(traceparent: String, work: F) -> F::Output {
    CURRENT.scope(Hop::context(traceparent), work).await
}

/// Runs `work` as the span `name`, a child of `parent` (a `traceparent`; a new trace when it is
/// missing or malformed). Inside, [`current`] is the span's own context. The span starts now
/// (so the future may be spawned) and ends when `work` is done.
pub fn span<N: Into<Cow<'static, str>>, F: Future>(
    name: N,
    kind: SpanKind,
    parent: Option<&str>,
    work: F,
) -> impl Future<Output = F::Output> + use<N, F> {
    CURRENT.scope(Hop::start(name.into(), kind, parent), work)
}

/// Runs `work` as the span `name` under the current context (read now).
pub fn child<N: Into<Cow<'static, str>>, F: Future>(
    name: N,
    kind: SpanKind,
    work: F,
) -> impl Future<Output = F::Output> + use<N, F> {
    let parent = current();
    span(name, kind, parent.as_deref(), work)
}

/// Records the synchronous `work` as the span `name` under `parent`, when spans are exported
/// (otherwise it only runs it: nothing downstream needs its context).
pub fn record<T>(
    name: impl Into<Cow<'static, str>>,
    kind: SpanKind,
    parent: Option<&str>,
    work: impl FnOnce() -> T,
) -> T {
    if export::tracer().is_none() {
        return work();
    }
    CURRENT.sync_scope(Hop::start(name.into(), kind, parent), work)
}

/// Runs `work` as the span `name` under `parent` when spans are exported (otherwise it only
/// runs it: for work whose context goes no further, such as applying a commit to a read model).
pub fn observe<N: Into<Cow<'static, str>>, F: Future>(
    name: N,
    kind: SpanKind,
    parent: Option<&str>,
    work: F,
) -> impl Future<Output = F::Output> + use<N, F> {
    let hop = export::tracer().map(|_| Hop::start(name.into(), kind, parent));
    async move {
        match hop {
            Some(hop) => CURRENT.scope(hop, work).await,
            None => work.await,
        }
    }
}

/// Sets an attribute on the current span (when it is exported).
pub fn attribute(key: &'static str, value: impl Into<opentelemetry::Value>) {
    let _ = CURRENT.try_with(|hop| {
        hop.with_span(|span| span.set_attribute(opentelemetry::KeyValue::new(key, value)))
    });
}

/// Marks the current span failed, with a description (when it is exported).
pub fn failed(description: impl Into<Cow<'static, str>>) {
    let _ =
        CURRENT.try_with(|hop| hop.with_span(|span| span.set_status(Status::error(description))));
}

/// The current trace context, if the task runs inside [`scope`] or [`span`].
pub fn current() -> Option<String> {
    CURRENT.try_with(|hop| hop.traceparent.clone()).ok()
}

/// A fresh context: a new trace.
pub fn fresh() -> String {
    let trace: u128 = rand::random::<u128>().max(1);
    format!("00-{trace:032x}-{:016x}-01", span_id())
}

/// A context for the next hop of `parent`'s trace (same trace id, a new span id), or a fresh
/// one when `parent` is not a valid `traceparent`.
pub fn child_of(parent: Option<&str>) -> String {
    match parent.and_then(trace_id) {
        Some(trace) => format!("00-{trace}-{:016x}-01", span_id()),
        None => fresh(),
    }
}

/// The trace id of a valid version-00 `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`, ids not
/// all zeros).
pub fn trace_id(traceparent: &str) -> Option<&str> {
    parts(traceparent).map(|(trace, _, _)| trace)
}

/// The trace id, parent span id and flags of a valid version-00 `traceparent`.
fn parts(traceparent: &str) -> Option<(&str, &str, &str)> {
    let mut parts = traceparent.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let valid = parts.next().is_none()
        && version == "00"
        && hex(trace, 32)
        && hex(span, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && span.bytes().any(|b| b != b'0');
    valid.then_some((trace, span, flags))
}

/// A valid `traceparent` as the remote parent of a span.
fn remote(traceparent: &str) -> Option<SpanContext> {
    let (trace, span, flags) = parts(traceparent)?;
    Some(SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    ))
}

fn span_id() -> u64 {
    rand::random::<u64>().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_keeps_the_trace_id_and_takes_a_new_span_id() {
        let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let child = child_of(Some(parent));
        assert_eq!(trace_id(&child), Some("0af7651916cd43dd8448eb211c80319c"));
        assert_ne!(&child[36..52], "b7ad6b7169203331");
    }

    #[test]
    fn malformed_contexts_start_a_new_trace() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        ] {
            assert_eq!(trace_id(bad), None, "{bad}");
            assert!(trace_id(&child_of(Some(bad))).is_some());
        }
    }

    #[tokio::test]
    async fn the_scope_is_the_current_context_inside_only() {
        assert_eq!(current(), None);
        let inside = scope(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            async { current() },
        )
        .await;
        assert!(inside.is_some());
    }
}
