//! Added latency per live delta: from the agent runtime emitting a token to an SSE client of the
//! edge receiving it, through the chat worker, JetStream and the edge's read of the log —
//! next to the same client reading the runtime directly (the floor), in the same run.
//!
//! Everything real but the model: a real nats-server and PostgreSQL, the edge, projector and chat
//! worker in this process, and a runtime speaking the `warren-agent` protocol that streams
//! `token` events stamped with their emission time. Runs 1, 10 and 100 concurrent runs, each in
//! its own conversation.
//!
//! `cargo bench -p warren-cli --bench delta_latency` (env: `WARREN_BENCH_TOKENS` per run, default
//! 40; `WARREN_BENCH_TOKEN_MS` between tokens, default 50 — slower than the 30 ms coalescing
//! window, so what is measured is the platform's overhead, not deliberate batching).

#[path = "support/seed.rs"]
mod seed;

use axum::Router;
use axum::response::sse::{Event, Sse};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use futures::StreamExt;
use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use warren_commands::CommandService;
use warren_commands::secrets::AgentTokens;
use warren_domain::agent::{AgentCommand, DeploymentStep};
use warren_domain::ids::{AgentId, ConversationId};
use warren_edge::mail::Mailer;
use warren_edge::{AppState, EdgeSettings};
use warren_projections::capacity::Capacity;
use warren_projections::schema::{self, LIVE_SCHEMA};
use warren_testkit::{TestDb, TestNats};
use warren_workers::chat::{ChatSettings, ChatWorker};
use warren_workers::projector::Projector;

const MASTER_KEY: [u8; 32] = [9; 32];
const AGENT_TOKEN: &str = "bench-agent-token";
/// The target of issue 4: p99 added latency at 100 concurrent runs.
const CEILING_P99_MS: f64 = 10.0;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A runtime that streams `tokens` token events, `gap` apart, each carrying its emission time.
fn runtime(tokens: u64, gap: Duration) -> Router {
    let chat = move || async move {
        let stream = futures::stream::unfold(0u64, move |i| async move {
            if i > tokens {
                return None;
            }
            if i == tokens {
                let done = r#"{"type":"done","text":"bench","usage":{"input_tokens":1,"output_tokens":1}}"#;
                return Some((Ok::<_, Infallible>(Event::default().data(done)), i + 1));
            }
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            let data = format!(r#"{{"type":"token","delta":"{};"}}"#, now_ns());
            Some((Ok(Event::default().data(data)), i + 1))
        });
        Sse::new(stream)
    };
    Router::new()
        .route("/chat", post(chat))
        .route("/chat/{id}/cancel", post(|| async { "{}" }))
        .route("/health", get(|| async { r#"{"status":"ok"}"# }))
}

/// Reads an SSE body and returns the latency of every stamped token in it (ms), until `done`.
async fn latencies(response: reqwest::Response, field: &str) -> Vec<f64> {
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else { break };
        let received = now_ns();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) else {
                continue;
            };
            let Ok(json) = serde_json::from_str::<serde_json::Value>(data.trim()) else {
                continue;
            };
            if matches!(json["type"].as_str(), Some("done" | "error")) {
                return out;
            }
            if let Some(text) = json[field].as_str() {
                for stamp in text.split(';').filter_map(|s| s.parse::<u128>().ok()) {
                    out.push(received.saturating_sub(stamp) as f64 / 1e6);
                }
            }
        }
    }
    out
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Bench {
    http: reqwest::Client,
    edge: String,
    runtime: String,
    access: String,
    agent: AgentId,
    conversations: Vec<ConversationId>,
}

impl Bench {
    /// `runs` concurrent runs through the edge; every delta's latency.
    async fn via_edge(&self, runs: usize) -> Vec<f64> {
        let tasks = self.conversations[..runs].iter().map(|conversation| {
            let request = self
                .http
                .post(format!("{}/api/v1/chat/{}", self.edge, self.agent))
                .bearer_auth(&self.access)
                .json(&serde_json::json!({"message": "go", "conversation_id": conversation}));
            async move {
                let response = request.send().await.expect("chat");
                assert_eq!(response.status(), 200, "chat refused");
                latencies(response, "content").await
            }
        });
        futures::future::join_all(tasks).await.concat()
    }

    /// The same client reading the runtime directly.
    async fn direct(&self, runs: usize) -> Vec<f64> {
        let tasks = (0..runs).map(|i| {
            let request = self
                .http
                .post(format!("{}/chat", self.runtime))
                .bearer_auth(AGENT_TOKEN)
                .json(&serde_json::json!({"message": "go", "chat_id": format!("direct-{i}")}));
            async move {
                let response = request.send().await.expect("runtime chat");
                latencies(response, "delta").await
            }
        });
        futures::future::join_all(tasks).await.concat()
    }
}

async fn setup(
    shutdown: &CancellationToken,
    tokens: u64,
    gap: Duration,
) -> (Bench, TestNats, TestDb) {
    let nats = TestNats::start().await;
    let db = TestDb::create().await;
    let js = nats.jetstream().await;
    let commands = CommandService::start(js.clone(), &Default::default())
        .await
        .expect("command service");
    let pool = schema::open(db.url(), LIVE_SCHEMA, 20)
        .await
        .expect("read models");
    tokio::spawn(Projector::build(js.clone(), pool.clone()).run(shutdown.clone()));

    let runtime_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let runtime_url = format!("http://{}", runtime_listener.local_addr().expect("addr"));
    let runtime_listener = runtime_listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(runtime_listener, runtime(tokens, gap)).await });

    let mut settings = EdgeSettings::for_tests();
    settings.encryption_key = warren_edge::settings::KeyBytes(MASTER_KEY.to_vec());
    for limits in [
        &mut settings.tiers.free,
        &mut settings.tiers.pro,
        &mut settings.tiers.enterprise,
    ] {
        limits.messages_per_day = u64::MAX / 2;
    }
    let state = AppState::build(
        commands.clone(),
        pool.clone(),
        nats.client().await,
        settings,
        Mailer::Log,
    )
    .await
    .expect("edge state");
    let user = seed::user(&commands).await;
    let access = state.tokens.issue(user).await.expect("tokens").access_token;

    let deployment_id = Uuid::now_v7();
    let deployed = DeploymentStep::ALL
        .iter()
        .map(|step| AgentCommand::CompleteDeploymentStep {
            deployment_id,
            step: *step,
        })
        .chain([AgentCommand::CompleteDeployment {
            deployment_id,
            endpoint_url: runtime_url.clone(),
            workspace: None,
        }]);
    let agent = seed::agent(&commands, user, deployment_id, deployed).await;
    AgentTokens::open(&js, &MASTER_KEY)
        .await
        .expect("tokens")
        .put(agent, AGENT_TOKEN)
        .await
        .expect("token");
    let conversations: Vec<ConversationId> = seed::conversations(&commands, user, agent, 100)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();

    let worker = ChatWorker::build(
        nats.client().await,
        commands.clone(),
        &MASTER_KEY,
        ChatSettings::default(),
        Capacity::unlimited(),
    )
    .await
    .expect("chat worker");
    tokio::spawn(worker.run(shutdown.clone()));
    let edge_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let edge = format!("http://{}", edge_listener.local_addr().expect("addr"));
    tokio::spawn(warren_edge::serve(edge_listener, state, shutdown.clone()));
    let bench = Bench {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(200)
            .build()
            .expect("client"),
        edge,
        runtime: runtime_url,
        access,
        agent,
        conversations,
    };
    (bench, nats, db)
}

#[tokio::main]
async fn main() {
    let tokens = env_or("WARREN_BENCH_TOKENS", 40);
    let gap = Duration::from_millis(env_or("WARREN_BENCH_TOKEN_MS", 50));
    let shutdown = CancellationToken::new();
    let (bench, _nats, _db) = setup(&shutdown, tokens, gap).await;
    // Warm up: connections, caches, the first consumer.
    bench.via_edge(1).await;

    println!(
        "delta latency, runtime emission -> SSE client ({tokens} tokens per run, {} ms apart)",
        gap.as_millis()
    );
    println!(
        "| concurrent runs | deltas | via edge p50 ms | p99 ms | direct p50 ms | p99 ms | added p50 ms | added p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut added_p99_at_100 = f64::NAN;
    for runs in [1, 10, 100] {
        let mut edge = bench.via_edge(runs).await;
        let mut direct = bench.direct(runs).await;
        edge.sort_by(f64::total_cmp);
        direct.sort_by(f64::total_cmp);
        let added = |p| pct(&edge, p) - pct(&direct, p);
        if runs == 100 {
            added_p99_at_100 = added(0.99);
        }
        println!(
            "| {runs} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            edge.len(),
            pct(&edge, 0.5),
            pct(&edge, 0.99),
            pct(&direct, 0.5),
            pct(&direct, 0.99),
            added(0.5),
            added(0.99),
        );
        assert_eq!(
            edge.len(),
            runs * tokens as usize,
            "every delta arrived once"
        );
    }
    println!(
        "added p99 at 100 runs: {added_p99_at_100:.2} ms (ceiling {CEILING_P99_MS} ms: {})",
        if added_p99_at_100 < CEILING_P99_MS {
            "met"
        } else {
            "MISSED"
        }
    );
    shutdown.cancel();
}
