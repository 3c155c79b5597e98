//! W3C trace context (`traceparent`) carried from a request to the commits it causes and on to
//! the work they cause: the edge scopes each request in its context ([`scope`]), every command
//! issued inside takes it ([`current`]) into its commit's `traceparent` header, and a worker
//! handling that commit scopes its own work in a child of it ([`child_of`]).
//!
//! Only the context travels (a trace id shared by every hop, a span id per hop); exporting spans
//! is not done yet (issue 16).

use std::future::Future;

/// The header that carries the context (on HTTP requests and on commits).
pub const HEADER: &str = "traceparent";

tokio::task_local! {
    static CURRENT: String;
}

/// Runs `work` with `traceparent` as the current trace context.
pub async fn scope<F: Future>(traceparent: String, work: F) -> F::Output {
    CURRENT.scope(traceparent, work).await
}

/// The current trace context, if the task runs inside [`scope`].
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
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
    valid.then_some(trace)
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
