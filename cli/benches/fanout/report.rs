//! What the fan-out bench measures of a process (`/proc`), what it found of each server, and
//! the tables it prints: idle memory, each load phase, and every figure next to its target.

use crate::clients::Latencies;
use std::time::{Duration, Instant};

/// Issue 5's targets.
pub const TARGET_CLIENTS: usize = 10_000;
/// Per idle WebSocket and SSE connection: 10 KB and 20 KB (decimal; the figures are in KiB).
const CEILING_WS_KB: f64 = 10.0;
const CEILING_SSE_KB: f64 = 20.0;
/// KiB in a KB.
const KIB_PER_KB: f64 = 1000.0 / 1024.0;
const TARGET_SHARE_OF_BARE: f64 = 0.5;
const CEILING_P99_MS: f64 = 50.0;
/// Saturation stops once doubling the rate raises deliveries/s by less than this factor.
pub const GROWING: f64 = 1.15;

/// The header of [`Idle::row`].
pub const IDLE_HEADER: &str = "| server | clients WS + SSE | connect s | RSS idle MiB | + WS MiB | + SSE MiB | KiB per WS | KiB per SSE | nats-server KiB per client | JetStream consumers |\n|---|---|---|---|---|---|---|---|---|---|";
/// The header of [`Load::row`].
pub const LOAD_HEADER: &str = "| server | phase | events/s per conv | published | deliveries/s | delivered | p50 ms | p99 ms | WS p99 ms | SSE p99 ms | clients dropped | CPU server / nats-server / bench |\n|---|---|---|---|---|---|---|---|---|---|---|---|";

/// VmRSS of a process, KiB.
pub fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time of a process, in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field(14) + field(15)) as f64 / rustix::param::clock_ticks_per_second() as f64
}

/// The RSS once it stops moving (two readings 300 ms apart within 0.5%), or after 10 s.
pub async fn settled_rss(pid: u32) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = rss_kb(pid);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = rss_kb(pid);
        if now.abs_diff(last) * 200 <= last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// Idle memory of one server.
pub struct Idle {
    /// RSS with no clients (after a warm-up), KiB.
    pub base_kb: u64,
    /// RSS with the WebSocket clients, KiB.
    pub after_ws_kb: u64,
    /// RSS with the WebSocket and the SSE clients, KiB.
    pub after_sse_kb: u64,
    /// WebSocket clients.
    pub ws: usize,
    /// SSE clients.
    pub sse: usize,
    /// What nats-server grew by, per client, KiB.
    pub nats_per_client_kb: f64,
    /// JetStream consumers on the conversations stream with every client connected.
    pub consumers: usize,
    /// How long connecting them all took.
    pub open_secs: f64,
}

impl Idle {
    fn ws_kb(&self) -> f64 {
        self.after_ws_kb.saturating_sub(self.base_kb) as f64 / self.ws as f64
    }

    fn sse_kb(&self) -> f64 {
        self.after_sse_kb.saturating_sub(self.after_ws_kb) as f64 / self.sse as f64
    }

    /// A row of [`IDLE_HEADER`].
    pub fn row(&self, name: &str) -> String {
        format!(
            "| {name} | {} + {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            self.ws,
            self.sse,
            self.open_secs,
            self.base_kb as f64 / 1024.0,
            self.after_ws_kb as f64 / 1024.0,
            self.after_sse_kb as f64 / 1024.0,
            self.ws_kb(),
            self.sse_kb(),
            self.nats_per_client_kb,
            self.consumers,
        )
    }
}

/// One load phase of one server.
pub struct Load {
    /// Events/s per conversation.
    pub rate: f64,
    /// How long the publisher ran.
    pub window_secs: f64,
    /// Events published (acknowledged).
    pub published: u64,
    /// Publishes that failed.
    pub failed: u64,
    /// Deliveries the published events owe the connected clients.
    pub expected: u64,
    /// Deliveries while the publisher ran.
    pub in_window: u64,
    /// Deliveries once drained.
    pub delivered: u64,
    /// Publish-to-client latencies, both transports.
    pub latencies: Latencies,
    /// p99 of the WebSocket clients, ms.
    pub ws_p99: f64,
    /// p99 of the SSE clients, ms.
    pub sse_p99: f64,
    /// Clients the server dropped meanwhile.
    pub dropped: u64,
    /// CPU of the server, nats-server and this bench process, % of one core.
    pub cpu: [f64; 3],
}

impl Load {
    /// Deliveries/s while the publisher ran.
    pub fn per_sec(&self) -> f64 {
        self.in_window as f64 / self.window_secs
    }

    /// Every publish acknowledged and no client dropped.
    pub fn clean(&self) -> bool {
        self.failed == 0 && self.dropped == 0
    }

    /// A row of [`LOAD_HEADER`].
    pub fn row(&self, name: &str, phase: &str) -> String {
        format!(
            "| {name} | {phase} | {} | {} | {:.0} | {:.1}% | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.0}% / {:.0}% / {:.0}% |",
            self.rate,
            self.published,
            self.per_sec(),
            100.0 * self.delivered as f64 / self.expected.max(1) as f64,
            self.latencies.quantile_ms(0.5),
            self.latencies.quantile_ms(0.99),
            self.ws_p99,
            self.sse_p99,
            self.dropped,
            self.cpu[0],
            self.cpu[1],
            self.cpu[2],
        )
    }
}

/// Everything measured of one server.
pub struct Report {
    /// `edge` or `bare`.
    pub name: &'static str,
    /// Idle memory.
    pub idle: Idle,
    /// Clients connected.
    pub connected: usize,
    /// At the configured rate.
    pub steady: Load,
    /// At doubling rates, until saturated.
    pub saturation: Vec<Load>,
    /// Whether saturation was reached (else the peak is a lower bound).
    pub saturated: bool,
}

impl Report {
    /// The most deliveries/s of a phase that dropped no client, whatever its latency.
    fn peak_per_sec(&self) -> f64 {
        self.phases()
            .filter(|(_, l)| l.clean())
            .map(|(_, l)| l.per_sec())
            .fold(0.0, f64::max)
    }

    /// The most deliveries/s of a phase that dropped no client and kept p99 under the target.
    fn within_target_per_sec(&self) -> f64 {
        self.phases()
            .filter(|(_, l)| l.clean() && l.latencies.quantile_ms(0.99) < CEILING_P99_MS)
            .map(|(_, l)| l.per_sec())
            .fold(0.0, f64::max)
    }

    fn phases(&self) -> impl Iterator<Item = (String, &Load)> {
        std::iter::once(("steady".to_owned(), &self.steady)).chain(
            self.saturation
                .iter()
                .enumerate()
                .map(|(i, l)| (format!("step {}", i + 1), l)),
        )
    }
}

fn mark(ok: bool) -> &'static str {
    if ok { "✅" } else { "❌" }
}

/// The run's setup, for the summary.
pub struct Run {
    /// All clients, half WebSocket and half SSE.
    pub clients: usize,
    /// Conversations they are spread over.
    pub conversations: usize,
    /// The steady rate, events/s per conversation.
    pub rate: f64,
}

/// Prints every table (markdown, ready for the README).
pub fn summary(run: &Run, edge: &Report, bare: &Report) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let half = run.clients / 2;
    println!(
        "\n## fan-out: {} clients ({half} WS + {half} SSE) over {} conversations, {} events/s per conversation, {cores} cores\n",
        run.clients, run.conversations, run.rate
    );
    println!("{IDLE_HEADER}");
    println!(
        "{}\n{}\n",
        edge.idle.row(edge.name),
        bare.idle.row(bare.name)
    );
    println!("{LOAD_HEADER}");
    for report in [edge, bare] {
        for (phase, load) in report.phases() {
            println!("{}", load.row(report.name, &phase));
        }
    }

    println!("\n| | edge | bare ceiling | target |\n|---|---|---|---|");
    let all_clients =
        run.clients >= TARGET_CLIENTS && edge.connected == run.clients && edge.steady.dropped == 0;
    println!(
        "| concurrent clients on one process | {} (dropped in steady load: {}) | {} | {TARGET_CLIENTS} {} |",
        edge.connected,
        edge.steady.dropped,
        bare.connected,
        mark(all_clients)
    );
    let (ws, sse) = (edge.idle.ws_kb(), edge.idle.sse_kb());
    println!(
        "| RSS per idle WebSocket | {ws:.1} KiB | {:.1} KiB | ≤ {CEILING_WS_KB} KB ({:.2} KiB) {} |",
        bare.idle.ws_kb(),
        CEILING_WS_KB * KIB_PER_KB,
        mark(ws <= CEILING_WS_KB * KIB_PER_KB)
    );
    println!(
        "| RSS per idle SSE | {sse:.1} KiB | {:.1} KiB | ≤ {CEILING_SSE_KB} KB ({:.2} KiB) {} |",
        bare.idle.sse_kb(),
        CEILING_SSE_KB * KIB_PER_KB,
        mark(sse <= CEILING_SSE_KB * KIB_PER_KB)
    );
    let p99 = edge.steady.latencies.quantile_ms(0.99);
    println!(
        "| steady load: deliveries/s, p50, p99 | {:.0}/s, {:.2} ms, {p99:.2} ms | {:.0}/s, {:.2} ms, {:.2} ms | p99 < {CEILING_P99_MS} ms at {TARGET_CLIENTS} clients {} |",
        edge.steady.per_sec(),
        edge.steady.latencies.quantile_ms(0.5),
        bare.steady.per_sec(),
        bare.steady.latencies.quantile_ms(0.5),
        bare.steady.latencies.quantile_ms(0.99),
        mark(p99 < CEILING_P99_MS && all_clients)
    );
    println!(
        "| most deliveries/s with p99 < {CEILING_P99_MS} ms | {:.0} | {:.0} | |",
        edge.within_target_per_sec(),
        bare.within_target_per_sec(),
    );
    let share = edge.peak_per_sec() / bare.peak_per_sec();
    let bound = |report: &Report| {
        if report.saturated {
            ""
        } else {
            " (not saturated: at least)"
        }
    };
    println!(
        "| peak deliveries/s (no client dropped) | {:.0}{} | {:.0}{} | edge ≥ {:.0}% of bare: {:.0}% {} |",
        edge.peak_per_sec(),
        bound(edge),
        bare.peak_per_sec(),
        bound(bare),
        100.0 * TARGET_SHARE_OF_BARE,
        100.0 * share,
        mark(share >= TARGET_SHARE_OF_BARE)
    );
}
