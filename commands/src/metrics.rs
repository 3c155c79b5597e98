//! The process's Prometheus metrics: one registry, recorded by every role in the process and
//! served on `/metrics` (OpenMetrics text) by the edge's ops listener (ADR 36).
//!
//! Every series is named `warren_…`. Recording is a map lookup and an atomic add; nothing here
//! blocks or fails. Values measured only when scraped (how far each durable consumer is behind,
//! how far each projection is) are refreshed by the scrape itself, from the durables this
//! process registered with [`watch_durable`].

use async_nats::jetstream;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// `GET`, `POST`, …
    pub method: String,
    /// The matched route (`/api/v1/agents/{id}`), or `unmatched`: never the raw path.
    pub route: String,
    /// The response status.
    pub status: u16,
}

/// Labels of an HTTP request's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// `GET`, `POST`, …
    pub method: String,
    /// The matched route.
    pub route: String,
}

/// Labels of a command.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    /// The aggregate type it was sent to (`user`, `agent`, `conversation`).
    pub aggregate: &'static str,
    /// `committed`, `duplicate`, `unchanged`, `rejected`, `conflict` or `error`.
    pub outcome: &'static str,
}

/// One label naming a thing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Named {
    /// The thing.
    pub name: String,
}

/// A kind of live connection or stream (`ws`, `sse`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The kind.
    pub kind: &'static str,
}

/// Labels of a sandbox count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SandboxLabels {
    /// The provisioner (`process`, `docker`).
    pub sandbox: &'static str,
    /// `running`, `paused` or `stopped`.
    pub state: &'static str,
}

/// Labels of a finished run.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `completed`, `failed`, `cancelled` or `gone`.
    pub outcome: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every series this process records.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by method, route and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// HTTP request latency by method and route (until the response head; streams excluded).
    pub http_duration: Histograms<RouteLabels>,
    /// Commands by aggregate and outcome.
    pub commands: Family<CommandLabels, Counter>,
    /// Latency of one append to the log (a publish and its acknowledgement).
    pub append_duration: Histogram,
    /// Appends that lost a race and were decided again.
    pub append_retries: Counter,
    /// Commits pending (not yet acknowledged) per durable consumer, as of the last scrape.
    pub consumer_pending: Family<Named, Gauge>,
    /// Commits of the log a projection has not applied yet, as of the last scrape.
    pub projection_lag: Family<Named, Gauge>,
    /// Commits a projection parked (could not apply), as of the last scrape.
    pub projection_parked: Family<Named, Gauge>,
    /// Open client connections and streams, by kind.
    pub live_connections: Family<KindLabels, Gauge>,
    /// Frames written to clients, by kind.
    pub frames_sent: Family<KindLabels, Counter>,
    /// Clients dropped because they fell too far behind, by kind.
    pub slow_client_drops: Family<KindLabels, Counter>,
    /// Runs the chat worker started.
    pub runs_started: Counter,
    /// Runs the chat worker finished, by outcome.
    pub runs_finished: Family<OutcomeLabels, Counter>,
    /// From a run's start to its first token (or first whole text).
    pub time_to_first_token: Histogram,
    /// Sandboxes by provisioner and state, as of the deployer's last measurement.
    pub sandboxes: Family<SandboxLabels, Gauge>,
    /// How long each deployment step took.
    pub deploy_step_duration: Histograms<Named>,
    durables: Mutex<BTreeMap<(&'static str, String), jetstream::Context>>,
}

fn latency_buckets() -> Histogram {
    // 1 ms … ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

fn step_buckets() -> Histogram {
    // 10 ms … ~5.5 min.
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("warren");
        let metrics = Self {
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_buckets),
            commands: Family::default(),
            append_duration: latency_buckets(),
            append_retries: Counter::default(),
            consumer_pending: Family::default(),
            projection_lag: Family::default(),
            projection_parked: Family::default(),
            live_connections: Family::default(),
            frames_sent: Family::default(),
            slow_client_drops: Family::default(),
            runs_started: Counter::default(),
            runs_finished: Family::default(),
            time_to_first_token: latency_buckets(),
            sandboxes: Family::default(),
            deploy_step_duration: Family::new_with_constructor(step_buckets),
            durables: Mutex::new(BTreeMap::new()),
            registry: Registry::default(),
        };
        let m = &metrics;
        let r = &mut registry;
        r.register(
            "http_requests",
            "HTTP requests by method, route and status",
            m.http_requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency until the response head, by method and route",
            m.http_duration.clone(),
        );
        r.register(
            "commands",
            "Commands by aggregate and outcome",
            m.commands.clone(),
        );
        r.register(
            "append_duration_seconds",
            "Latency of one append to the log",
            m.append_duration.clone(),
        );
        r.register(
            "append_retries",
            "Appends that lost a race and were decided again",
            m.append_retries.clone(),
        );
        r.register(
            "consumer_pending",
            "Commits not yet acknowledged per durable consumer",
            m.consumer_pending.clone(),
        );
        r.register(
            "projection_lag",
            "Commits a projection has not applied yet",
            m.projection_lag.clone(),
        );
        r.register(
            "projection_parked",
            "Commits a projection parked",
            m.projection_parked.clone(),
        );
        r.register(
            "live_connections",
            "Open client connections and streams by kind",
            m.live_connections.clone(),
        );
        r.register(
            "frames_sent",
            "Frames written to clients by kind",
            m.frames_sent.clone(),
        );
        r.register(
            "slow_client_drops",
            "Clients dropped for falling behind, by kind",
            m.slow_client_drops.clone(),
        );
        r.register("runs_started", "Runs started", m.runs_started.clone());
        r.register(
            "runs_finished",
            "Runs finished by outcome",
            m.runs_finished.clone(),
        );
        r.register(
            "time_to_first_token_seconds",
            "From a run's start to its first token",
            m.time_to_first_token.clone(),
        );
        r.register(
            "sandboxes",
            "Sandboxes by provisioner and state",
            m.sandboxes.clone(),
        );
        r.register(
            "deploy_step_duration_seconds",
            "Duration of each deployment step",
            m.deploy_step_duration.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// The OpenMetrics text of every series.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Counts a command's outcome.
    pub fn command(&self, aggregate: &'static str, outcome: &'static str) {
        self.commands
            .get_or_create(&CommandLabels { aggregate, outcome })
            .inc();
    }

    /// Counts a request.
    pub fn http(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.http_requests
            .get_or_create(&HttpLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A live connection of `kind`, counted until the guard drops.
    pub fn live(&'static self, kind: &'static str) -> LiveGuard {
        self.live_connections
            .get_or_create(&KindLabels { kind })
            .inc();
        LiveGuard {
            metrics: self,
            kind,
        }
    }

    /// Counts a frame written to a client.
    pub fn frame_sent(&self, kind: &'static str) {
        self.frames_sent.get_or_create(&KindLabels { kind }).inc();
    }

    /// Counts a client dropped for falling behind.
    pub fn slow_client_dropped(&self, kind: &'static str) {
        self.slow_client_drops
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// Counts a finished run.
    pub fn run_finished(&self, outcome: &'static str) {
        self.runs_finished
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Records how long a deployment step took.
    pub fn deploy_step(&self, step: &str, elapsed: Duration) {
        self.deploy_step_duration
            .get_or_create(&Named {
                name: step.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the count of `sandbox` sandboxes in `state`.
    pub fn set_sandboxes(&self, sandbox: &'static str, state: &'static str, count: i64) {
        self.sandboxes
            .get_or_create(&SandboxLabels { sandbox, state })
            .set(count);
    }

    /// The durable consumers this process reads, as `(stream, name)`, each with the
    /// connection of the role that reads it (the one allowed to ask about it).
    pub fn durables(&self) -> Vec<(&'static str, String, jetstream::Context)> {
        self.durables
            .lock()
            .map(|durables| {
                durables
                    .iter()
                    .map(|((stream, name), js)| (*stream, name.clone(), js.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Counts one live connection while it lives.
pub struct LiveGuard {
    metrics: &'static Metrics,
    kind: &'static str,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.metrics
            .live_connections
            .get_or_create(&KindLabels { kind: self.kind })
            .dec();
    }
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Registers a durable consumer this process reads, so that a scrape reports how far behind it
/// is (`warren_consumer_pending{name}`).
pub fn watch_durable(js: &jetstream::Context, stream: &'static str, name: &str) {
    if let Ok(mut durables) = global().durables.lock() {
        durables.insert((stream, name.to_owned()), js.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_series_appear_in_the_text_with_their_labels() {
        let metrics = Metrics::new();
        metrics.http("GET", "/api/v1/health", 200, Duration::from_millis(3));
        metrics.command("agent", "committed");
        metrics.runs_started.inc();
        let text = metrics.render();
        assert!(
            text.contains(
                r#"warren_http_requests_total{method="GET",route="/api/v1/health",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"warren_commands_total{aggregate="agent",outcome="committed"} 1"#),
            "{text}"
        );
        assert!(text.contains("warren_runs_started_total 1"), "{text}");
        assert!(
            text.contains("warren_http_request_duration_seconds_count"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn a_live_guard_counts_while_it_lives() {
        let metrics: &'static Metrics = Box::leak(Box::new(Metrics::new()));
        let first = metrics.live("sse");
        let second = metrics.live("sse");
        assert!(
            metrics
                .render()
                .contains(r#"warren_live_connections{kind="sse"} 2"#)
        );
        drop(first);
        drop(second);
        assert!(
            metrics
                .render()
                .contains(r#"warren_live_connections{kind="sse"} 0"#)
        );
    }
}
