//! The command path under load: N concurrent writers, each executing commands on its own User
//! aggregate, against three stores measured in the same run:
//! - Warren's JetStream store (decide on the cached aggregate, append with the sequence check);
//! - cqrs-es's `postgres-es` store with the same aggregate (aggregate-store mode: one row to load);
//! - raw JetStream publish + ack with the expected-subject-sequence header: the ceiling.
//!
//! Three times: at default settings (nats-server `sync_interval` 2m; Postgres
//! `synchronous_commit=on`, its default), at equal durability (nats-server `sync_interval:
//! always`), and on a three-node nats-server cluster on loopback with R3 streams (default sync:
//! a publish is acknowledged once two of the three nodes stored it), production's layout.
//!
//! `cargo bench -p warren-commands --bench command_path` (env: `WARREN_BENCH_WRITERS`, default 64;
//! `WARREN_BENCH_SECS` per measurement, default 5).

use async_nats::jetstream::{self, message::PublishMessage};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warren_commands::store::{CommandMeta, Store};
use warren_commands::topology::{self, LogSettings};
use warren_deploy::{LocalNats, LocalPostgres, NatsOptions, PostgresOptions};
use warren_domain::Actor;
use warren_domain::ids::{ConnectionId, UserId};
use warren_domain::user::{ApprovalMode, AuthKind, AuthMethod, User, UserCommand};

struct Figures {
    ops: usize,
    secs: f64,
    latencies: Vec<Duration>,
}

impl Figures {
    fn per_sec(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    fn pct(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i].as_secs_f64() * 1000.0
    }
}

/// Runs `writers` loops of `op(writer, i)` for `secs`, timing every call.
async fn load<F, Fut>(writers: usize, secs: u64, op: F) -> Figures
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                op(w, i).await;
                latencies.push(t.elapsed());
                i += 1;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("writer"));
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort();
    Figures {
        ops: latencies.len(),
        secs,
        latencies,
    }
}

fn register(id: UserId) -> UserCommand {
    UserCommand::RegisterUser {
        user_id: id,
        email: None,
        display_name: None,
        avatar_url: None,
        auth: AuthMethod {
            connection_id: ConnectionId::new(),
            kind: AuthKind::Email,
            external_id: id.to_string(),
        },
        approval: ApprovalMode::Open,
        is_admin: false,
    }
}

fn rename(i: usize) -> UserCommand {
    UserCommand::UpdateProfile {
        display_name: Some(format!("name {i}")),
        avatar_url: None,
        show_tool_calls: None,
    }
}

async fn warren(js: &jetstream::Context, writers: usize, secs: u64) -> Figures {
    let store: Store<User> = Store::open(js.clone()).await.expect("open store");
    let ids: Vec<UserId> = (0..writers).map(|_| UserId::new()).collect();
    let meta = || CommandMeta::new(Actor::System("bench".into()));
    for id in &ids {
        store
            .execute(&id.to_string(), register(*id), &meta())
            .await
            .expect("register");
    }
    let ids = Arc::new(ids);
    load(writers, secs, move |w, i| {
        let (store, id) = (store.clone(), ids[w]);
        async move {
            store
                .execute(&id.to_string(), rename(i), &meta())
                .await
                .expect("command");
        }
    })
    .await
}

async fn raw(js: &jetstream::Context, writers: usize, secs: u64) -> Figures {
    let subjects: Vec<String> = (0..writers)
        .map(|_| topology::user_subject(&UserId::new().to_string()))
        .collect();
    let last: Arc<Vec<tokio::sync::Mutex<u64>>> =
        Arc::new((0..writers).map(|_| tokio::sync::Mutex::new(0)).collect());
    let subjects = Arc::new(subjects);
    let body = bytes::Bytes::from(vec![b'x'; 300]);
    let js = js.clone();
    load(writers, secs, move |w, i| {
        let (js, subjects, last, body) = (js.clone(), subjects.clone(), last.clone(), body.clone());
        async move {
            let mut seq = last[w].lock().await;
            let publish = PublishMessage::build()
                .payload(body)
                .message_id(format!("{w}-{i}-{}", uuid::Uuid::now_v7()))
                .expected_last_subject_sequence(*seq);
            let ack = js
                .send_publish(subjects[w].clone(), publish)
                .await
                .expect("publish")
                .await
                .expect("ack");
            *seq = ack.sequence;
        }
    })
    .await
}

async fn postgres_es(url: &str, writers: usize, secs: u64) -> Figures {
    let pool = sqlx08::postgres::PgPoolOptions::new()
        .max_connections(writers as u32)
        .connect(url)
        .await
        .expect("pool");
    for ddl in [
        "CREATE TABLE IF NOT EXISTS events (aggregate_type text NOT NULL, aggregate_id text NOT NULL, \
         sequence bigint CHECK (sequence >= 0) NOT NULL, event_type text NOT NULL, event_version text NOT NULL, \
         payload json NOT NULL, metadata json NOT NULL, PRIMARY KEY (aggregate_type, aggregate_id, sequence))",
        "CREATE TABLE IF NOT EXISTS snapshots (aggregate_type text NOT NULL, aggregate_id text NOT NULL, \
         last_sequence bigint CHECK (last_sequence >= 0) NOT NULL, current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL, \
         payload json NOT NULL, PRIMARY KEY (aggregate_type, aggregate_id, last_sequence))",
    ] {
        sqlx08::query(ddl)
            .execute(&pool)
            .await
            .expect("postgres-es tables");
    }
    let cqrs = Arc::new(postgres_es::postgres_aggregate_cqrs::<User>(
        pool,
        vec![],
        (),
    ));
    let ids: Vec<UserId> = (0..writers).map(|_| UserId::new()).collect();
    for id in &ids {
        cqrs.execute(&id.to_string(), register(*id))
            .await
            .expect("register");
    }
    let ids = Arc::new(ids);
    load(writers, secs, move |w, i| {
        let (cqrs, id) = (cqrs.clone(), ids[w]);
        async move {
            let metadata = HashMap::from([("actor".to_owned(), "system:bench".to_owned())]);
            cqrs.execute_with_metadata(&id.to_string(), rename(i), metadata)
                .await
                .expect("command");
        }
    })
    .await
}

async fn nats(sync_interval: &str, dir: &std::path::Path) -> (LocalNats, jetstream::Context) {
    let options = NatsOptions {
        sync_interval: sync_interval.to_owned(),
        ..Default::default()
    };
    let server = LocalNats::start(dir, options).await.expect("nats-server");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(client);
    topology::ensure(&js, &LogSettings::default())
        .await
        .expect("topology");
    (server, js)
}

/// Three nats-servers on loopback forming one JetStream cluster; killed on drop.
struct Cluster(Vec<std::process::Child>);

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The R3 row's log: a three-node cluster, Warren's streams with three replicas, once the
/// cluster elected its JetStream leader.
async fn cluster(dir: &std::path::Path) -> (Cluster, jetstream::Context) {
    let binary = warren_deploy::nats::nats_server_binary(None).expect("nats-server binary");
    let clients: Vec<u16> = (0..3)
        .map(|_| warren_deploy::free_port().expect("a free port"))
        .collect();
    let routes: Vec<u16> = (0..3)
        .map(|_| warren_deploy::free_port().expect("a free port"))
        .collect();
    let route_list = routes
        .iter()
        .map(|port| format!("nats-route://127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut children = Vec::new();
    for node in 0..3 {
        let store = dir.join(format!("node-{node}"));
        std::fs::create_dir_all(&store).expect("store dir");
        let config = dir.join(format!("node-{node}.conf"));
        std::fs::write(
            &config,
            format!(
                "server_name: bench-{node}\nlisten: 127.0.0.1:{}\nmax_payload: 1MB\n\
                 jetstream {{ store_dir: \"{}\" }}\n\
                 cluster {{ name: bench, listen: 127.0.0.1:{}, routes: [{route_list}] }}\n",
                clients[node],
                store.display(),
                routes[node]
            ),
        )
        .expect("write config");
        let log = std::fs::File::create(dir.join(format!("node-{node}.log"))).expect("log");
        children.push(
            std::process::Command::new(&binary)
                .arg("-c")
                .arg(&config)
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("start nats-server"),
        );
    }
    let cluster = Cluster(children);
    let urls = clients
        .iter()
        .map(|port| format!("nats://127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    let deadline = Instant::now() + Duration::from_secs(60);
    let client = loop {
        match async_nats::connect(warren_deploy::nats_auth::servers(&urls)).await {
            Ok(client) => break client,
            Err(err) if Instant::now() < deadline => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("connecting to the cluster: {err}"),
        }
    };
    let js = jetstream::new(client);
    let settings = LogSettings {
        replicas: 3,
        ..LogSettings::default()
    };
    // Until the cluster has a JetStream meta leader, stream creation fails.
    loop {
        match topology::ensure(&js, &settings).await {
            Ok(_) => break,
            Err(err) if Instant::now() < deadline => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => panic!("R3 topology on the cluster: {err}"),
        }
    }
    (cluster, js)
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing and expects a quick exit.
    if !std::env::args().any(|a| a == "--bench") {
        println!("command_path: run with `cargo bench -p warren-commands --bench command_path`");
        return;
    }
    let writers = env("WARREN_BENCH_WRITERS", 64) as usize;
    let secs = env("WARREN_BENCH_SECS", 5);
    let tmp = tempfile::tempdir().expect("tempdir");

    let pg = LocalPostgres::start(
        tmp.path().join("pg"),
        PostgresOptions {
            settings: vec![("max_connections".into(), "300".into())],
            ..Default::default()
        },
    )
    .await
    .expect("postgres");
    pg.create_database("bench").await.expect("database");
    let pg_figures = postgres_es(&pg.url("bench"), writers, secs).await;

    println!("\ncommand path, {writers} concurrent writers, {secs} s per measurement");
    println!(
        "| durability | warren cmds/s | p50 ms | p99 ms | postgres-es cmds/s | p50 ms | p99 ms | raw ceiling msgs/s | warren ÷ postgres-es | warren ÷ raw |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (label, sync, target_pg) in [
        ("default settings", "2m", 10.0),
        ("equal (fsync every write)", "always", 2.0),
        ("R3: 3-node cluster, default sync", "r3", 10.0),
    ] {
        let dir = tmp.path().join(format!("nats-{sync}"));
        let (_single, _cluster, js) = if sync == "r3" {
            let (cluster, js) = cluster(&dir).await;
            (None, Some(cluster), js)
        } else {
            let (server, js) = nats(sync, &dir).await;
            (Some(server), None, js)
        };
        let ceiling = raw(&js, writers, secs).await;
        let ours = warren(&js, writers, secs).await;
        let vs_pg = ours.per_sec() / pg_figures.per_sec();
        let vs_raw = ours.per_sec() / ceiling.per_sec();
        println!(
            "| {label} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.0} | {:.1}× (target ≥ {target_pg}×) | {:.0}% (target ≥ 70%) |",
            ours.per_sec(),
            ours.pct(0.5),
            ours.pct(0.99),
            pg_figures.per_sec(),
            pg_figures.pct(0.5),
            pg_figures.pct(0.99),
            ceiling.per_sec(),
            vs_pg,
            vs_raw * 100.0,
        );
    }
}
