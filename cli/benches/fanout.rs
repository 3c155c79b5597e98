//! Fan-out: one edge process serving N live clients — half WebSocket (gateway protocol v1),
//! half SSE (`GET /api/v1/conversations/{id}/events`) — spread over M conversations, while
//! stamped `token` deltas are published to `conv.<id>.live` at a steady rate. Measured, next to
//! a bare broadcast server on the same machine as the ceiling (same clients, same rate, same
//! measurement; see `fanout/bare.rs`):
//!
//! 1. resident memory per idle connection: the server's VmRSS before and after opening the
//!    WebSocket clients (connected and switched to their session), then the SSE clients;
//! 2. steady load (after an unmeasured 2 s warm-up at the same rate): deliveries/s and the
//!    p50/p99 time from publishing a delta to a client reading it;
//! 3. saturation: the rate doubled step by step until deliveries/s stop growing or a client is
//!    dropped, for the most deliveries/s each server reaches, and the most it reaches with p99
//!    under 50 ms.
//!
//! Real nats-server and PostgreSQL (testkit); the user, agent and conversations are created by
//! commands and projected; the edge is the real `warren edge` binary in its own process, so its
//! memory is its own. Clients and the publisher run in this process.
//!
//! `cargo bench -p warren-cli --bench fanout` (env: `WARREN_BENCH_CLIENTS`, default 10000;
//! `WARREN_BENCH_CONVERSATIONS`, default 100; `WARREN_BENCH_RATE` events/s per conversation,
//! default 2; `WARREN_BENCH_SECONDS` of steady load, default 15; `WARREN_BENCH_STEP_SECONDS`
//! per saturation step, default 4, 0 skips saturation). Quick run:
//! `WARREN_BENCH_CLIENTS=1000 WARREN_BENCH_CONVERSATIONS=10 cargo bench -p warren-cli --bench fanout`.

#[path = "fanout/bare.rs"]
mod bare;
#[path = "fanout/clients.rs"]
mod clients;
#[path = "fanout/report.rs"]
mod report;
#[path = "support/seed.rs"]
mod seed;

use async_nats::HeaderMap;
use async_nats::jetstream;
use clients::{Clients, Target, Transport, now_ns};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use report::{
    GROWING, IDLE_HEADER, Idle, LOAD_HEADER, Load, Report, Run, TARGET_CLIENTS, cpu_secs, rss_kb,
    settled_rss, summary,
};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use warren_commands::{CommandService, topology};
use warren_domain::conversation::LiveDelta;
use warren_domain::ids::RunId;
use warren_edge::auth::store::AuthKv;
use warren_edge::auth::tokens::Tokens;
use warren_edge::consistency::{caught_up, projection};
use warren_projections::schema::{self, LIVE_SCHEMA};
use warren_testkit::{TestDb, TestNats, TestSmtp, wait_until};
use warren_workers::projector::Projector;

const JWT_SECRET: &str = "fanout-bench-jwt-secret-at-least-32-bytes";
const ENCRYPTION_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// Warm-up clients per transport (opened and closed before the idle baseline).
const WARM_UP: usize = 50;
/// Unmeasured load before the steady phase.
const WARM_UP_SECS: f64 = 2.0;
/// Saturation doubles the rate at most this many times.
const SATURATION_STEPS: u32 = 10;
/// Publishes awaiting their ack at most.
const MAX_IN_FLIGHT: usize = 4096;

struct Settings {
    clients: usize,
    conversations: usize,
    rate: f64,
    seconds: f64,
    step_seconds: f64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Settings {
    fn from_env() -> Self {
        let settings = Self {
            clients: env_or("WARREN_BENCH_CLIENTS", TARGET_CLIENTS),
            conversations: env_or("WARREN_BENCH_CONVERSATIONS", 100),
            rate: env_or("WARREN_BENCH_RATE", 2.0),
            seconds: env_or("WARREN_BENCH_SECONDS", 15.0),
            step_seconds: env_or("WARREN_BENCH_STEP_SECONDS", 4.0),
        };
        assert!(
            settings.conversations > 0
                && settings.clients.is_multiple_of(2 * settings.conversations),
            "WARREN_BENCH_CLIENTS must be a multiple of 2 × WARREN_BENCH_CONVERSATIONS"
        );
        settings
    }

    /// WebSocket clients per conversation (as many SSE clients).
    fn per_transport(&self) -> usize {
        self.clients / self.conversations / 2
    }
}

/// The platform the servers run against, and what the clients follow.
struct Platform {
    nats: TestNats,
    _db: TestDb,
    _smtp: TestSmtp,
    dir: tempfile::TempDir,
    js: jetstream::Context,
    edge_env: Vec<(&'static str, String)>,
    token: Arc<str>,
    conversations: Vec<Conversation>,
    /// Consumers on the conversations stream before any server ran (the projector's).
    own_consumers: usize,
    shutdown: CancellationToken,
}

struct Conversation {
    id: Uuid,
    subject: String,
    run: RunId,
}

impl Platform {
    async fn start(settings: &Settings) -> Self {
        let nats = TestNats::start().await;
        let db = TestDb::create().await;
        let smtp = TestSmtp::start().await;
        let js = nats.jetstream().await;
        let shutdown = CancellationToken::new();
        let commands = CommandService::start(js.clone(), &Default::default())
            .await
            .expect("command service");
        // As the writer: the edge reads as the reader, which sees the writer's tables only.
        let pool = schema::open(&db.writer_url(), LIVE_SCHEMA, 5)
            .await
            .expect("read models");
        tokio::spawn(Projector::build(js.clone(), pool.clone()).run(shutdown.clone()));

        let user = seed::user(&commands).await;
        let agent = seed::agent(&commands, user, Uuid::now_v7(), []).await;
        let started = seed::conversations(&commands, user, agent, settings.conversations).await;
        let last_seq = started.iter().map(|(_, seq)| *seq).max().unwrap_or(0);
        let conversations: Vec<Conversation> = started
            .into_iter()
            .map(|(id, _)| Conversation {
                id: id.0,
                subject: topology::conversation_live_subject(&id.to_string()),
                run: RunId::new(),
            })
            .collect();
        wait_until(Duration::from_secs(60), || async {
            caught_up(&pool, projection::CONVERSATIONS, last_seq)
                .await
                .unwrap_or(false)
        })
        .await;

        let ttl = Duration::from_secs(3600);
        let tokens = Tokens::new(
            AuthKv::open(&js).await.expect("auth bucket"),
            JWT_SECRET.as_bytes(),
            ttl,
            ttl,
        );
        let token = tokens.issue(user).await.expect("token").access_token;
        let mut edge_env = [nats.warren_env(), db.warren_env()].concat();
        edge_env.extend([
            ("WARREN_JWT_SECRET", JWT_SECRET.to_owned()),
            ("WARREN_ENCRYPTION_KEY", ENCRYPTION_KEY.to_owned()),
            ("WARREN_SMTP_URL", smtp.url()),
            ("WARREN_LOG", "warn".to_owned()),
            // Every client of the bench comes from 127.0.0.1.
            ("WARREN_HTTP_MAX_CONNECTIONS_PER_IP", "100000".to_owned()),
            (
                "WARREN_RATE_WS_CONNECTS_PER_IP_PER_MINUTE",
                "100000".to_owned(),
            ),
        ]);
        let own_consumers = js
            .get_stream(topology::CONVERSATIONS)
            .await
            .expect("CONVERSATIONS stream")
            .cached_info()
            .state
            .consumer_count;
        Self {
            nats,
            _db: db,
            _smtp: smtp,
            dir: tempfile::tempdir().expect("tempdir"),
            js,
            edge_env,
            token: token.into(),
            conversations,
            own_consumers,
            shutdown,
        }
    }

    fn nats_pid(&self) -> u32 {
        self.nats.pid().expect("nats-server pid")
    }

    async fn conversations_stream(&self) -> jetstream::stream::State {
        self.js
            .get_stream(topology::CONVERSATIONS)
            .await
            .expect("CONVERSATIONS stream")
            .cached_info()
            .state
            .clone()
    }

    /// Publishes stamped tokens round-robin over the conversations, `rate` per conversation
    /// per second, for `duration`; the number acknowledged and the number that failed.
    async fn publish(&self, rate: f64, duration: Duration) -> (u64, u64) {
        let total_rate = rate * self.conversations.len() as f64;
        let mut ticks = tokio::time::interval(Duration::from_millis(2));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut acks = FuturesUnordered::new();
        let (mut sent, mut failed) = (0u64, 0u64);
        let started = Instant::now();
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                Some(ack) = acks.next(), if !acks.is_empty() => {
                    failed += u64::from(Result::is_err(&ack));
                    continue;
                }
            }
            let elapsed = started.elapsed();
            if elapsed >= duration {
                break;
            }
            let due = (elapsed.as_secs_f64() * total_rate) as u64;
            while sent < due && acks.len() < MAX_IN_FLIGHT {
                let conversation = &self.conversations[sent as usize % self.conversations.len()];
                let delta = LiveDelta::Token {
                    run_id: conversation.run,
                    text: format!("@{}", now_ns()),
                };
                let payload = serde_json::to_vec(&delta).expect("a delta serializes");
                let mut headers = HeaderMap::new();
                headers.insert("Nats-TTL", "10m");
                match self
                    .js
                    .publish_with_headers(conversation.subject.clone(), headers, payload.into())
                    .await
                {
                    Ok(ack) => acks.push(std::future::IntoFuture::into_future(ack)),
                    Err(_) => failed += 1,
                }
                sent += 1;
            }
        }
        while let Some(ack) = acks.next().await {
            failed += u64::from(ack.is_err());
        }
        (sent - failed, failed)
    }
}

/// A server under test in its own process (killed when dropped).
struct Server {
    name: &'static str,
    _child: tokio::process::Child,
    pid: u32,
    addr: SocketAddr,
}

impl Server {
    /// `warren edge`, logging to `<dir>/edge.log`, once it answers its health check.
    async fn edge(platform: &Platform) -> Self {
        let port = warren_deploy::free_port().expect("free port");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log_path = platform.dir.path().join("edge.log");
        let log = std::fs::File::create(&log_path).expect("edge log");
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"));
        command
            .arg("edge")
            .envs(platform.edge_env.iter().map(|(k, v)| (k, v)))
            .env("WARREN_HTTP_ADDR", addr.to_string())
            .env("WARREN_CONFIG", platform.dir.path().join("absent.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("edge log"))
            .stderr(log)
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn warren edge");
        let pid = child.id().expect("edge pid");
        let health = format!("http://{addr}/api/v1/health");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if reqwest::get(&health)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            let exited = child.try_wait().expect("edge status");
            if exited.is_some() || Instant::now() > deadline {
                panic!(
                    "warren edge not healthy ({exited:?}); log:\n{}",
                    read_log(&log_path)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            name: "edge",
            _child: child,
            pid,
            addr,
        }
    }

    /// The bare broadcast server: this binary again, as [`bare::serve`].
    async fn bare(platform: &Platform) -> Self {
        let exe = std::env::current_exe().expect("this bench's path");
        let mut child = tokio::process::Command::new(exe)
            .env(bare::NATS_URL_ENV, platform.nats.url())
            .env(
                bare::NATS_SEED_ENV,
                platform
                    .nats
                    .keys()
                    .seed(warren_deploy::Role::Admin)
                    .expect("admin seed"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the bare server");
        let pid = child.id().expect("bare pid");
        let stdout = child.stdout.take().expect("bare stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the bare server's address in time")
            .expect("bare stdout")
            .expect("the bare server's address");
        Self {
            name: "bare",
            _child: child,
            pid,
            addr: line.trim().parse().expect("an address"),
        }
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Raises the soft open-files limit to the hard one (children inherit it).
fn raise_nofile() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let Some(max) = limit.maximum {
        let raised = Rlimit {
            current: Some(max),
            maximum: Some(max),
        };
        setrlimit(Resource::Nofile, raised).expect("raise RLIMIT_NOFILE");
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Publishes at `rate` for `seconds` and measures what the clients got.
async fn load(
    platform: &Platform,
    server: &Server,
    clients: &Clients,
    rate: f64,
    seconds: f64,
) -> Load {
    clients.ws.start_phase();
    clients.sse.start_phase();
    let dropped_before = clients.dropped();
    let alive = clients.connected as u64 - dropped_before;
    let before = clients.deliveries();
    let pids = [server.pid, platform.nats_pid(), std::process::id()];
    let cpu_before = pids.map(cpu_secs);
    let started = Instant::now();
    let (published, failed) = platform
        .publish(rate, Duration::from_secs_f64(seconds))
        .await;
    let window_secs = started.elapsed().as_secs_f64();
    let in_window = clients.deliveries() - before;
    let cpu_after = pids.map(cpu_secs);
    let cpu = std::array::from_fn(|i| 100.0 * (cpu_after[i] - cpu_before[i]) / window_secs);
    let expected = published * alive / platform.conversations.len() as u64;
    // Drain: until everything arrived, or nothing more arrives for 2 s (at most 30 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut last, mut last_change) = (clients.deliveries(), Instant::now());
    while clients.deliveries() - before < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = clients.deliveries();
        if now != last {
            (last, last_change) = (now, Instant::now());
        } else if last_change.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    let (ws, sse) = (clients.ws.latencies(), clients.sse.latencies());
    Load {
        rate,
        window_secs,
        published,
        failed,
        expected,
        in_window,
        delivered: clients.deliveries() - before,
        latencies: ws.clone().merge(&sse),
        ws_p99: ws.quantile_ms(0.99),
        sse_p99: sse.quantile_ms(0.99),
        dropped: clients.dropped() - dropped_before,
        cpu,
    }
}

/// Idle memory, steady load and saturation of one server, with its own fresh clients.
async fn measure(platform: &Platform, server: &Server, settings: &Settings) -> Report {
    let name = server.name;
    let ids: Vec<Uuid> = platform.conversations.iter().map(|c| c.id).collect();
    let after = platform.conversations_stream().await.last_sequence;

    // Warm up (first connections, allocator pools), then let them go.
    let target = Target {
        addr: server.addr,
        token: platform.token.clone(),
    };
    let mut warm = Clients::new(target.clone());
    let warm_ids = &ids[..ids.len().min(WARM_UP)];
    warm.open(Transport::Ws, warm_ids, 1, after).await;
    warm.open(Transport::Sse, warm_ids, 1, after).await;
    warm.stop.cancel();
    no_consumers_left(platform).await;

    let mut clients = Clients::new(target);
    let nats_pid = platform.nats_pid();
    let base_kb = settled_rss(server.pid).await;
    let nats_base_kb = rss_kb(nats_pid);
    let opening = Instant::now();
    clients
        .open(Transport::Ws, &ids, settings.per_transport(), after)
        .await;
    let after_ws_kb = settled_rss(server.pid).await;
    clients
        .open(Transport::Sse, &ids, settings.per_transport(), after)
        .await;
    let open_secs = opening.elapsed().as_secs_f64();
    let after_sse_kb = settled_rss(server.pid).await;
    let idle = Idle {
        base_kb,
        after_ws_kb,
        after_sse_kb,
        ws: ids.len() * settings.per_transport(),
        sse: ids.len() * settings.per_transport(),
        nats_per_client_kb: rss_kb(nats_pid).saturating_sub(nats_base_kb) as f64
            / clients.connected as f64,
        consumers: platform.conversations_stream().await.consumer_count - platform.own_consumers,
        open_secs,
    };
    println!("{IDLE_HEADER}\n{}", idle.row(name));

    // Warm up the rooms and each connection's first frames, unmeasured.
    load(platform, server, &clients, settings.rate, WARM_UP_SECS).await;
    let steady = load(platform, server, &clients, settings.rate, settings.seconds).await;
    println!("{LOAD_HEADER}\n{}", steady.row(name, "steady"));
    let mut saturation = Vec::new();
    let mut saturated = false;
    if settings.step_seconds > 0.0 {
        let (mut rate, mut best) = (settings.rate, steady.per_sec());
        for n in 1..=SATURATION_STEPS {
            rate *= 2.0;
            let step = load(platform, server, &clients, rate, settings.step_seconds).await;
            println!("{}", step.row(name, &format!("step {n}")));
            saturated = !step.clean() || step.per_sec() < GROWING * best;
            best = best.max(step.per_sec());
            saturation.push(step);
            if saturated {
                break;
            }
        }
    }
    clients.stop.cancel();
    no_consumers_left(platform).await;
    Report {
        name,
        idle,
        connected: clients.connected,
        steady,
        saturation,
        saturated,
    }
}

/// Waits (at most 60 s) until the server's JetStream consumers are gone, so one phase's
/// clients do not weigh on the next (the bare server makes none).
async fn no_consumers_left(platform: &Platform) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = platform.conversations_stream().await.consumer_count - platform.own_consumers;
        if left == 0 {
            return;
        }
        if Instant::now() > deadline {
            println!("note: {left} JetStream consumers still open 60 s after their clients left");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() {
    if let Some(url) = std::env::var_os(bare::NATS_URL_ENV) {
        bare::serve(url.to_str().expect("a UTF-8 NATS URL")).await;
        return;
    }
    let settings = Settings::from_env();
    let nofile = raise_nofile();
    println!(
        "fan-out: {} clients over {} conversations, {} events/s per conversation for {} s, saturation steps of {} s; open files limit {nofile}",
        settings.clients,
        settings.conversations,
        settings.rate,
        settings.seconds,
        settings.step_seconds
    );
    let platform = Platform::start(&settings).await;

    let edge_server = Server::edge(&platform).await;
    let edge = measure(&platform, &edge_server, &settings).await;
    drop(edge_server);
    let bare_server = Server::bare(&platform).await;
    let bare = measure(&platform, &bare_server, &settings).await;
    drop(bare_server);

    let run = Run {
        clients: settings.clients,
        conversations: settings.conversations,
        rate: settings.rate,
    };
    summary(&run, &edge, &bare);
    platform.shutdown.cancel();
}
