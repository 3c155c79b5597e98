//! Export throughput: `warren export usage` of a log of 1,000,000 metered model calls, to CSV
//! and to Parquet, next to the raw read rate of the same stream by a bare ordered consumer in
//! the same run (the floor any export of the log stands on).
//!
//! A real nats-server (testkit). The AGENTS stream gets [`AGENTS`] `AgentCreated` commits, then
//! the calls as `ModelUsageMetered` commits of one envelope each, as the edge's meter writes
//! them, spread over the agents' subjects and published with many acks in flight. The export
//! runs in this process: `src/export/`'s files are included here as modules (everything but its
//! `mod.rs`, which only parses arguments and connects).
//!
//! `cargo bench -p warren-cli --bench export` (env: `WARREN_BENCH_ROWS`, default 1000000).

#[allow(dead_code)]
#[path = "../src/export/lines.rs"]
mod lines;
#[allow(dead_code)]
#[path = "../src/export/parquet_file.rs"]
mod parquet_file;
#[allow(dead_code)]
#[path = "../src/export/read.rs"]
mod read;
#[allow(dead_code)]
#[path = "../src/export/usage.rs"]
mod usage;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use std::time::{Duration, Instant};
use warren_commands::codec;
use warren_commands::topology::{self, LogSettings};
use warren_domain::agent::{AgentEvent, Backend, RuntimeKind};
use warren_domain::ids::{AgentId, CommandId, EventId, UserId};
use warren_domain::usage::{Price, PriceTable};
use warren_domain::user::Provider;
use warren_domain::{Actor, Envelope, versions};
use warren_testkit::TestNats;

/// Agents the calls are spread over.
const AGENTS: usize = 1000;
/// Publishes awaiting their ack at most: under the JetStream context's 5,000 ack permits, which
/// an unpolled ack future holds (more would wait on a permit forever).
const MAX_IN_FLIGHT: usize = 4096;

fn envelope(agent: AgentId, event: AgentEvent, type_name: &str) -> Envelope<AgentEvent> {
    Envelope {
        id: EventId::new(),
        version: versions::current(type_name).to_owned(),
        aggregate_id: agent.to_string(),
        command_id: CommandId::new(),
        actor: Actor::System("bench".into()),
        occurred_at: chrono::Utc::now(),
        event,
    }
}

/// Publishes `count` commits, the `i`th built by `commit(i)`, with many acks in flight.
async fn publish(
    js: &jetstream::Context,
    count: usize,
    commit: impl Fn(usize) -> (String, Vec<u8>),
) {
    let mut acks = FuturesUnordered::new();
    for i in 0..count {
        while acks.len() >= MAX_IN_FLIGHT {
            let ack: Option<Result<_, _>> = acks.next().await;
            ack.expect("an ack in flight")
                .expect("a publish acknowledged");
        }
        let (subject, payload) = commit(i);
        let ack = js
            .publish(subject, payload.into())
            .await
            .expect("a publish sent");
        acks.push(std::future::IntoFuture::into_future(ack));
    }
    while let Some(ack) = acks.next().await {
        ack.expect("a publish acknowledged");
    }
}

/// The raw read: every message of the stream through a bare ordered consumer, nothing decoded.
async fn raw_read(js: &jetstream::Context) -> (u64, Duration) {
    let started = Instant::now();
    let stream = js.get_stream(topology::AGENTS).await.expect("AGENTS");
    let mut messages = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: "agent.*".into(),
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("an ordered consumer")
        .messages()
        .await
        .expect("its messages");
    let mut read = 0u64;
    while let Some(message) = messages.next().await {
        let message = message.expect("a message");
        read += 1;
        if message.info().expect("its info").pending == 0 {
            break;
        }
    }
    (read, started.elapsed())
}

fn rate(count: u64, took: Duration) -> String {
    format!("{:.0}k", count as f64 / took.as_secs_f64() / 1000.0)
}

#[tokio::main]
async fn main() {
    let rows: usize = std::env::var("WARREN_BENCH_ROWS")
        .ok()
        .and_then(|rows| rows.parse().ok())
        .unwrap_or(1_000_000);
    let nats = TestNats::start().await;
    let js = nats.jetstream().await;
    topology::ensure(&js, &LogSettings::default())
        .await
        .expect("the log's streams");

    let started = Instant::now();
    let owners: Vec<(AgentId, UserId)> = (0..AGENTS)
        .map(|_| (AgentId::new(), UserId::new()))
        .collect();
    publish(&js, AGENTS, |i| {
        let (agent, owner) = owners[i];
        let created = AgentEvent::AgentCreated {
            agent_id: agent,
            owner_id: owner,
            name: format!("agent {i}"),
            system_prompt: "You are helpful.".into(),
            model: "bench-model".into(),
            runtime: RuntimeKind::Warren,
            backend: Backend::Docker,
            host: None,
        };
        let commit = [envelope(agent, created, "AgentCreated")];
        let payload = codec::encode(&commit).expect("a commit encodes");
        (topology::agent_subject(&agent.to_string()), payload)
    })
    .await;
    publish(&js, rows, |i| {
        let (agent, owner) = owners[i % AGENTS];
        let metered = AgentEvent::ModelUsageMetered {
            agent_id: agent,
            user_id: owner,
            provider: Provider::Openrouter,
            model: "bench-model".into(),
            own_key: false,
            input_tokens: 1000 + (i % 5000) as u64,
            output_tokens: 200 + (i % 700) as u64,
            cached_input_tokens: (i % 3 * 300) as u64,
        };
        let commit = [envelope(agent, metered, "ModelUsageMetered")];
        let payload = codec::encode(&commit).expect("a commit encodes");
        (topology::agent_subject(&agent.to_string()), payload)
    })
    .await;
    let messages = (AGENTS + rows) as u64;
    println!(
        "setup: {messages} commits published in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let (read, raw) = raw_read(&js).await;
    assert_eq!(read, messages, "the raw read saw every commit");
    println!(
        "raw read: {read} msgs in {:.1} s = {} msgs/s",
        raw.as_secs_f64(),
        rate(read, raw)
    );

    let prices = PriceTable::new(&[Price {
        provider: "openrouter".into(),
        model: "bench-model".into(),
        from: "2020-01-01".parse().expect("a day"),
        input_per_million: 2.0,
        output_per_million: 10.0,
        cached_input_per_million: Some(0.5),
    }])
    .expect("a price table");
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (name, format) in [
        ("csv", usage::Format::Csv),
        ("parquet", usage::Format::Parquet),
    ] {
        let output = dir.path().join(format!("usage.{name}"));
        let request = usage::Request {
            from: None,
            to: None,
            format,
            output: &output,
            resume: false,
            progress: false,
        };
        let started = Instant::now();
        let report = usage::export(&js, &prices, &request)
            .await
            .expect("the export");
        let took = started.elapsed();
        assert_eq!(report.rows, rows as u64, "a row per call");
        let size = std::fs::metadata(&output).expect("the file").len();
        println!(
            "export {name}: {} rows in {:.1} s = {} rows/s (raw read {} msgs/s), {:.0} MB",
            report.rows,
            took.as_secs_f64(),
            rate(report.rows, took),
            rate(read, raw),
            size as f64 / 1e6
        );
    }
}
