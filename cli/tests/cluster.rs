//! Warren as a cluster, under faults (issue 16). A three-node NATS cluster (every stream R3) runs
//! in Docker containers on a network of the test's own; PostgreSQL, two edges, two chat workers,
//! a projector, a notifier and a deployer run as `warren` processes on the host, as the compose
//! file runs them. Clients follow one conversation on both edges, two writers commit through both
//! edges, and chats flow while the test, one fault at a time:
//!
//! 1. kills the NATS node leading the conversations' stream, then starts it again;
//! 2. cuts the node leading the users' stream off the network, then lets it back;
//! 3. kills an edge (its followers resume on the other edge);
//! 4. kills the chat worker in the middle of a run (the other worker closes the run);
//! 5. stops PostgreSQL, then starts it again.
//!
//! What users would notice is checked: every acknowledged command is in the log; each restored
//! node rejoins and catches up on every stream; every follower, whichever edges it went through,
//! saw exactly the frames an unbroken follower saw, in order; the run of the lost worker ends
//! with `worker_lost`; the read models converge once PostgreSQL is back. The recovery times are
//! printed (the README's table comes from a run with `--no-capture`).

mod cluster_support;
mod common;
mod edge_support;

use cluster_support::{FollowerLog, NatsCluster, caught_up, follow};
use common::{Warren, agent_bin, free_port, get_json};
use edge_support::{ENCRYPTION_KEY, link_token, session};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use warren_commands::topology;
use warren_deploy::{LocalPostgres, PostgresOptions};
use warren_testkit::model_server::{ModelServer, Reply};
use warren_testkit::{TestSmtp, wait_for, wait_until};

/// How long any one recovery may take before the test fails.
const RECOVERY: Duration = Duration::from_secs(90);
/// How long a plain request may take.
const REQUEST: Duration = Duration::from_secs(15);
const JWT_SECRET: &str = "5f0e1d2c3b4a59687766554433221100ffeeddccbbaa99887766554433221100";

/// The platform's processes and what they run on.
struct Platform {
    nats: NatsCluster,
    pg: LocalPostgres,
    _pg_dir: tempfile::TempDir,
    smtp: TestSmtp,
    model: ModelServer,
    dir: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
    /// Edge base URLs; the processes beside them (`None` once killed).
    edges: Vec<(String, Option<Warren>)>,
    chat: Vec<Warren>,
    workers: Vec<Warren>,
    http: reqwest::Client,
}

impl Platform {
    fn spawn(&self, args: &[&str], extra: &[(&'static str, String)], name: &str) -> Warren {
        let mut env = self.env.clone();
        for (key, value) in extra {
            env.retain(|(k, _)| k != key);
            env.push((key, value.clone()));
        }
        Warren::spawn(args, &env, self.dir.path(), name)
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// A chat worker with its metrics (and readiness) on a port of its own.
    async fn start_chat_worker(&mut self) {
        let n = self.chat.len() + 1;
        let metrics = free_port();
        let worker = self.spawn(
            &["worker", "chat"],
            &[("WARREN_METRICS_ADDR", format!("127.0.0.1:{metrics}"))],
            &format!("chat-{n}"),
        );
        let ready = format!("http://127.0.0.1:{metrics}/readyz");
        wait_until(RECOVERY, || async {
            reqwest::get(&ready)
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        self.chat.push(worker);
    }

    /// `method` `url` with `token` and a JSON `body` (the answer whatever its status).
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        token: Option<&str>,
        body: Value,
    ) -> reqwest::Response {
        let mut request = self.http.request(method, url).timeout(REQUEST).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request")
    }

    fn edge(&self, i: usize) -> &str {
        &self.edges[i].0
    }

    /// Posts `message` to `agent` through `edge` (retrying with the same idempotency key while
    /// the edge cannot commit it) and reads the run to its end: the terminal frame (its cursor as
    /// `id`). When the stream is interrupted (an `error` frame without a cursor, or the
    /// connection ends), it resumes as a client does: following `conversation` from the last
    /// cursor seen (`since` before any).
    async fn chat(
        &self,
        edge: &str,
        token: &str,
        agent: &str,
        conversation: Option<&str>,
        since: u64,
        message: &str,
    ) -> Value {
        let key = uuid::Uuid::new_v4().to_string();
        let response = wait_for(RECOVERY, || async {
            let response = self
                .http
                .post(format!("{edge}/api/v1/chat/{agent}"))
                .bearer_auth(token)
                .header("idempotency-key", &key)
                .json(&json!({ "message": message }))
                .send()
                .await
                .ok()?;
            (response.status() == 200).then_some(response)
        })
        .await;
        let mut body = futures::StreamExt::boxed(response.bytes_stream());
        let mut buffer = String::new();
        let mut last = since;
        let mut run: Option<String> = None;
        loop {
            let interrupted = if let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) else {
                    continue;
                };
                let mut data: Value = serde_json::from_str(data.trim()).expect("JSON frame");
                let id = block
                    .lines()
                    .find_map(|l| l.strip_prefix("id:"))
                    .and_then(|id| id.trim().parse::<u64>().ok());
                if let Some(id) = id {
                    last = id;
                }
                let frame_run = data["run_id"].as_str().map(str::to_owned);
                if run.is_none() {
                    run = frame_run.clone();
                }
                let kind = data["type"].as_str().unwrap_or_default();
                let ours = frame_run.is_some() && frame_run == run;
                if matches!(kind, "done" | "error") && id.is_some() && ours {
                    data["id"] = json!(id);
                    return data;
                }
                kind == "error" && id.is_none()
            } else {
                match tokio::time::timeout(RECOVERY, futures::StreamExt::next(&mut body))
                    .await
                    .expect("a frame of the run in time")
                {
                    Some(Ok(chunk)) => {
                        buffer.push_str(&String::from_utf8_lossy(&chunk));
                        false
                    }
                    _ => true,
                }
            };
            if interrupted {
                let conversation = conversation.expect("a conversation to resume in");
                let url = format!("{edge}/api/v1/conversations/{conversation}/events");
                let response = wait_for(RECOVERY, || async {
                    let response = self
                        .http
                        .get(&url)
                        .bearer_auth(token)
                        .header("last-event-id", last.to_string())
                        .send()
                        .await
                        .ok()?;
                    (response.status() == 200).then_some(response)
                })
                .await;
                body = futures::StreamExt::boxed(response.bytes_stream());
                buffer.clear();
            }
        }
    }

    /// A chat that must complete with the scripted reply; the cursor of its `done` frame.
    async fn chat_done(
        &self,
        edge: &str,
        token: &str,
        agent: &str,
        conversation: Option<&str>,
        since: u64,
        n: usize,
    ) -> u64 {
        self.model
            .push(Reply::text(format!("reply {n} from the model")));
        let message = format!("message {n}");
        let frame = self
            .chat(edge, token, agent, conversation, since, &message)
            .await;
        assert_eq!(frame["type"], "done", "chat {n} through {edge}: {frame}");
        frame["id"].as_u64().expect("done has a cursor")
    }
}

/// The agents' runtimes outlive the deployer by design: stop them with the test.
impl Drop for Platform {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("WARREN_TEST_KEEP_LOGS").is_some() {
            // The roles' logs outlive a failure (or any run, when asked), for whoever reads it.
            let keep = std::env::temp_dir().join(format!("warren-cluster-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&keep);
            for entry in std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if entry.path().extension().is_some_and(|e| e == "log") {
                    let _ = std::fs::copy(entry.path(), keep.join(entry.file_name()));
                }
            }
            for agent in std::fs::read_dir(self.dir.path().join("data/agents"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = format!("agent-{}.log", agent.file_name().to_string_lossy());
                let _ = std::fs::copy(agent.path().join("agent.log"), keep.join(name));
            }
            for node in &self.nats.nodes {
                let _ = std::fs::write(
                    keep.join(format!("{}.log", node.server_name)),
                    self.nats.logs(node),
                );
            }
            eprintln!("the roles' logs are in {}", keep.display());
        }
        common::kill_agents(&self.dir.path().join("data/agents"));
    }
}

/// Starts the cluster: NATS nodes, PostgreSQL and its roles, the log's R3 streams and the
/// schema (`warren db-roles`, `warren migrate`), then every role.
async fn start() -> Platform {
    let nats = NatsCluster::start();
    let pg_dir = tempfile::tempdir().expect("tempdir");
    let pg = LocalPostgres::start(
        pg_dir.path(),
        PostgresOptions {
            fsync: false,
            initdb_no_sync: true,
            ..PostgresOptions::default()
        },
    )
    .await
    .expect("PostgreSQL");
    let smtp = TestSmtp::start().await;
    let model = ModelServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let edge_ports = [free_port(), free_port()];
    let edges: Vec<String> = edge_ports
        .iter()
        .map(|port| format!("http://127.0.0.1:{port}"))
        .collect();
    let mut env = nats.warren_env();
    env.extend([
        (
            "WARREN_DATABASE_URL",
            pg.url_as("warren_writer", "writer-secret", "warren"),
        ),
        (
            "WARREN_DATABASE_READER_URL",
            pg.url_as("warren_reader", "reader-secret", "warren"),
        ),
        ("WARREN_JWT_SECRET", JWT_SECRET.into()),
        ("WARREN_ENCRYPTION_KEY", ENCRYPTION_KEY.into()),
        ("WARREN_SMTP_URL", smtp.url()),
        ("WARREN_FRONTEND_URL", "http://console.test".into()),
        ("WARREN_APPROVAL", "open".into()),
        ("WARREN_ADMIN_EMAILS", "operator@admin.test".into()),
        ("WARREN_DEFAULT_PROVIDER", "openai".into()),
        ("WARREN_DEFAULT_BASE_URL", model.url()),
        ("WARREN_DEFAULT_API_KEY", "sk-platform".into()),
        ("WARREN_LOCAL_MODEL", "off".into()),
        // Two agents for one user.
        ("WARREN_TIER_FREE_MAX_AGENTS", "2".into()),
        ("WARREN_TIER_FREE_MESSAGES_PER_DAY", "1000".into()),
        ("WARREN_AGENT_BIN", agent_bin().display().to_string()),
        (
            "WARREN_DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
        // The runtimes reach the model proxy on the edge that stays up.
        ("WARREN_RUNTIME_PLATFORM_URL", edges[1].clone()),
        // A lost chat worker is noticed in about 10 s, not the default 20; a lease still
        // outlives the leases bucket's leader election after a node is lost.
        ("WARREN_CHAT_LEASE_BEAT_SECS", "2".into()),
        ("WARREN_CHAT_LEASE_STALE_SECS", "10".into()),
        ("WARREN_CHAT_SWEEP_SECS", "1".into()),
        ("WARREN_RATE_WRITES_PER_USER_PER_MINUTE", "100000".into()),
        ("WARREN_RATE_WRITES_PER_IP_PER_MINUTE", "100000".into()),
        ("WARREN_RATE_AUTH_PER_IP_PER_MINUTE", "100000".into()),
        ("WARREN_RATE_LOGIN_PER_EMAIL_PER_HOUR", "100000".into()),
        (
            "WARREN_RATE_LOGIN_PER_EMAIL_ALL_IPS_PER_HOUR",
            "100000".into(),
        ),
        ("WARREN_RATE_WS_CONNECTS_PER_IP_PER_MINUTE", "100000".into()),
    ]);
    let mut platform = Platform {
        nats,
        pg,
        _pg_dir: pg_dir,
        smtp,
        model,
        dir,
        env,
        edges: Vec::new(),
        chat: Vec::new(),
        workers: Vec::new(),
        // Streams last as long as they do; requests time out on their own (`REQUEST`).
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("client"),
    };

    let mut roles = platform.spawn(
        &["db-roles"],
        &[("WARREN_DATABASE_SUPERUSER_URL", platform.pg.url("postgres"))],
        "db-roles",
    );
    assert!(
        roles.wait_success(RECOVERY).await,
        "warren db-roles:\n{}",
        platform.log("db-roles")
    );
    // Until the nodes have formed the cluster and elected a JetStream leader, streams cannot
    // be made: as the compose file's `migrate`, retry.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut migrate = platform.spawn(&["migrate"], &[], "migrate");
        if migrate.wait_success(RECOVERY).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "warren migrate never succeeded on the cluster:\n{}\n{}",
            platform.log("migrate"),
            platform.nats.logs(&platform.nats.nodes[0])
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    for (args, name) in [
        (&["worker", "projector"][..], "projector"),
        (&["worker", "notifier"][..], "notifier"),
        (&["worker", "deployer"][..], "deployer"),
    ] {
        let worker = platform.spawn(args, &[], name);
        platform.workers.push(worker);
    }
    for (i, port) in edge_ports.iter().enumerate() {
        let edge = platform.spawn(
            &["edge"],
            &[("WARREN_HTTP_ADDR", format!("127.0.0.1:{port}"))],
            &format!("edge-{}", i + 1),
        );
        let health = format!("{}/api/v1/health", edges[i]);
        wait_until(RECOVERY, || async {
            matches!(get_json(&health).await, Some((200, _)))
        })
        .await;
        platform.edges.push((edges[i].clone(), Some(edge)));
    }
    // One chat worker for now: the run it holds when it is killed must be closed by another.
    platform.start_chat_worker().await;
    platform
}

/// Signs in through the emailed link on `edge`: the access token and the user id.
async fn sign_in(platform: &Platform, edge: &str, email: &str) -> (String, String) {
    let sent = platform
        .send(
            reqwest::Method::POST,
            &format!("{edge}/api/v1/auth/login/email"),
            None,
            json!({ "email": email }),
        )
        .await;
    assert_eq!(sent.status(), 202);
    let mail = platform
        .smtp
        .wait_for_mail(email, 1, Duration::from_secs(20))
        .await;
    let verified: Value = platform
        .send(
            reqwest::Method::POST,
            &format!("{edge}/api/v1/auth/verify-magic-link"),
            None,
            json!({ "token": link_token(&mail) }),
        )
        .await
        .json()
        .await
        .expect("verify JSON");
    let access = session(&verified).access;
    let me: Value = get_authed(platform, edge, &access, "/api/v1/users/me")
        .await
        .expect("users/me");
    (access, me["id"].as_str().expect("user id").to_owned())
}

async fn get_authed(platform: &Platform, edge: &str, token: &str, path: &str) -> Option<Value> {
    let response = platform
        .http
        .get(format!("{edge}{path}"))
        .timeout(REQUEST)
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// Creates an agent through `edge` and waits until it runs.
async fn running_agent(platform: &Platform, edge: &str, token: &str, name: &str) -> String {
    let created = platform
        .send(
            reqwest::Method::POST,
            &format!("{edge}/api/v1/agents"),
            Some(token),
            json!({ "name": name, "system_prompt": "Be brief." }),
        )
        .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.expect("agent JSON");
    let id = created["id"].as_str().expect("agent id").to_owned();
    let path = format!("/api/v1/agents/{id}/status");
    wait_for(RECOVERY, || async {
        let status = get_authed(platform, edge, token, &path).await?;
        assert_ne!(status["status"], "failed", "{status}");
        (status["status"] == "running").then_some(())
    })
    .await;
    id
}

/// Writers committing profile changes through one edge (the other when theirs is gone):
/// every name acknowledged with 200 is kept, every other answer counted as refused.
struct Writers {
    acked: Arc<Mutex<Vec<String>>>,
    refused: Arc<AtomicUsize>,
    /// The last refusal.
    why: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(platform: &Platform, token: &str) -> Self {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let why = Arc::new(Mutex::new(String::new()));
        let edges: Vec<String> = platform.edges.iter().map(|(e, _)| e.clone()).collect();
        let tasks = (0..2)
            .map(|writer| {
                let (acked, refused, stop) = (acked.clone(), refused.clone(), stop.clone());
                let why = why.clone();
                let why = move |text: String| *why.lock().unwrap_or_else(|e| e.into_inner()) = text;
                let (http, token, edges) = (platform.http.clone(), token.to_owned(), edges.clone());
                tokio::spawn(async move {
                    let mut at = writer;
                    let mut tick = tokio::time::interval(Duration::from_millis(25));
                    for i in 0.. {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        tick.tick().await;
                        let name = format!("w{writer}-{i:06}");
                        let edge = &edges[at % edges.len()];
                        let answer = http
                            .patch(format!("{edge}/api/v1/users/me"))
                            .timeout(REQUEST)
                            .bearer_auth(&token)
                            .json(&json!({ "display_name": name }))
                            .send()
                            .await;
                        match answer {
                            Ok(answer) if answer.status() == 200 => {
                                acked.lock().expect("acked").push(name);
                            }
                            Ok(answer) => {
                                refused.fetch_add(1, Ordering::SeqCst);
                                let status = answer.status();
                                let body = answer.text().await.unwrap_or_default();
                                why(format!("{status} {body}"));
                            }
                            Err(err) => {
                                // The edge is gone: the other one.
                                refused.fetch_add(1, Ordering::SeqCst);
                                why(err.to_string());
                                at += 1;
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            acked,
            refused,
            why,
            stop,
            tasks,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().expect("acked").len()
    }

    /// Waits until `more` further commands were acknowledged: the writers get through.
    async fn progress(&self, more: usize) -> Duration {
        let started = Instant::now();
        let target = self.acked() + more;
        while self.acked() < target {
            assert!(
                started.elapsed() < RECOVERY,
                "the writers got {} of {more} more acknowledgements; last refusal: {}",
                self.acked() + more - target,
                self.why.lock().expect("why")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        started.elapsed()
    }

    async fn finish(self) -> (Vec<String>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("writer");
        }
        let acked = self.acked.lock().expect("acked").clone();
        (acked, self.refused.load(Ordering::SeqCst))
    }
}

/// The profile names the log holds for `user`.
async fn logged_names(platform: &Platform, user: &str) -> HashSet<String> {
    let js = platform.nats.jetstream().await;
    let stream = js.get_stream(topology::USERS).await.expect("USERS");
    let subject = topology::user_subject(user);
    let mut names = HashSet::new();
    let mut next = 1;
    while let Ok(message) = stream
        .direct_get_next_for_subject(subject.as_str(), Some(next))
        .await
    {
        next = message.sequence + 1;
        let text = String::from_utf8_lossy(&message.payload);
        let mut rest = text.as_ref();
        while let Some(at) = rest.find("\"w") {
            let candidate: String = rest[at + 1..].chars().take(9).collect();
            if candidate.len() == 9 && candidate.as_bytes()[2] == b'-' {
                names.insert(candidate);
            }
            rest = &rest[at + 2..];
        }
    }
    names
}

/// The leader of `stream` (a node's `server_name`).
async fn leader_of(platform: &Platform, stream: &str) -> String {
    let js = platform.nats.jetstream().await;
    wait_for(RECOVERY, || async {
        let mut stream = js.get_stream(stream).await.ok()?;
        stream.info().await.ok()?.cluster.clone()?.leader
    })
    .await
}

/// Waits until `node` has rejoined and every stream is current on all three nodes.
async fn rejoined(platform: &Platform, node: &str) -> Duration {
    let started = Instant::now();
    let js = platform.nats.jetstream().await;
    let deadline = Instant::now() + RECOVERY;
    loop {
        match caught_up(&js, node).await {
            Ok(()) => return started.elapsed(),
            Err(why) => assert!(Instant::now() < deadline, "{node} never caught up: {why}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cluster_loses_nothing_when_a_nats_node_an_edge_a_chat_worker_or_postgres_fails() {
    let begun = Instant::now();
    let mut platform = start().await;
    let (a, b) = (platform.edge(0).to_owned(), platform.edge(1).to_owned());
    let (token, user) = sign_in(&platform, &a, "operator@admin.test").await;
    let followed = running_agent(&platform, &a, &token, "Followed").await;
    let other = running_agent(&platform, &b, &token, "Interrupted").await;

    // The conversation the clients follow, from just after its first run.
    let start_at = platform.chat_done(&a, &token, &followed, None, 0, 0).await;
    let conversations = get_authed(
        &platform,
        &a,
        &token,
        &format!("/api/v1/conversations?agent_id={followed}"),
    )
    .await
    .expect("conversations");
    let conversation = conversations[0]["id"]
        .as_str()
        .expect("conversation id")
        .to_owned();
    let (end_tx, end_rx) = watch::channel(None::<u64>);
    let followers: Vec<(usize, Arc<Mutex<FollowerLog>>, tokio::task::JoinHandle<()>)> =
        [0, 0, 1, 1]
            .into_iter()
            .map(|edge| {
                let order = vec![
                    platform.edge(edge).to_owned(),
                    platform.edge(1 - edge).to_owned(),
                ];
                let (log, task) = follow(
                    platform.http.clone(),
                    order,
                    conversation.clone(),
                    token.clone(),
                    start_at,
                    end_rx.clone(),
                );
                (edge, log, task)
            })
            .collect();
    let mut cursor = start_at;
    let writers = Writers::start(&platform, &token);
    writers.progress(20).await;
    let mut n = 1;
    let mut report = Vec::new();

    // 1. Kill the node leading the conversations' stream; chats and writes go on.
    eprintln!("fault 1 at {:.1} s", begun.elapsed().as_secs_f64());
    let victim = leader_of(&platform, topology::CONVERSATIONS).await;
    let node = platform.nats.node(&victim);
    let killed = Instant::now();
    platform.nats.kill(node);
    let writes_back = writers.progress(20).await;
    for edge in [&a, &b] {
        cursor = platform
            .chat_done(edge, &token, &followed, Some(&conversation), cursor, n)
            .await;
        n += 1;
    }
    let down_for = killed.elapsed();
    platform.nats.start_again(node);
    let caught = rejoined(&platform, &victim).await;
    report.push(format!(
        "NATS node {victim} (conversations' leader) killed: 20 more writes acknowledged {:.1} s after the kill; back after {:.1} s, every stream current on it {:.1} s after its start",
        writes_back.as_secs_f64(),
        down_for.as_secs_f64(),
        caught.as_secs_f64()
    ));

    // 2. Cut the node leading the users' stream off the network; then let it back.
    eprintln!("fault 2 at {:.1} s", begun.elapsed().as_secs_f64());
    let victim = leader_of(&platform, topology::USERS).await;
    let node = platform.nats.node(&victim);
    platform.nats.partition(node);
    let writes_back = writers.progress(20).await;
    cursor = platform
        .chat_done(&a, &token, &followed, Some(&conversation), cursor, n)
        .await;
    n += 1;
    platform.nats.heal(node);
    let caught = rejoined(&platform, &victim).await;
    report.push(format!(
        "NATS node {victim} (users' leader) partitioned: 20 more writes acknowledged {:.1} s after the cut; every stream current on it {:.1} s after it was let back",
        writes_back.as_secs_f64(),
        caught.as_secs_f64()
    ));

    // 3. Kill an edge: its followers resume on the other one.
    eprintln!("fault 3 at {:.1} s", begun.elapsed().as_secs_f64());
    let mut edge = platform.edges[0].1.take().expect("edge 1 runs");
    edge.kill_group().await;
    cursor = platform
        .chat_done(&b, &token, &followed, Some(&conversation), cursor, n)
        .await;
    let done = cursor;
    n += 1;
    wait_until(RECOVERY, || async {
        followers.iter().all(|(_, log, _)| {
            log.lock()
                .expect("log")
                .frames
                .last()
                .is_some_and(|seen| seen.id >= done)
        })
    })
    .await;
    let resumed: Vec<Duration> = followers
        .iter()
        .filter(|(edge, _, _)| *edge == 0)
        .map(|(_, log, _)| {
            let log = log.lock().expect("log");
            log.resumes
                .iter()
                .rev()
                .find(|(from, to, _)| *from == a && *to == b)
                .map(|(_, _, after)| *after)
                .unwrap_or_else(|| {
                    panic!(
                        "a follower of the killed edge resumed on the other: {:?}",
                        log.resumes
                    )
                })
        })
        .collect();
    report.push(format!(
        "edge killed: its {} followers resumed on the other edge after {:?}",
        resumed.len(),
        resumed
    ));

    // 4. Kill the chat worker in the middle of a run: another one closes it.
    eprintln!("fault 4 at {:.1} s", begun.elapsed().as_secs_f64());
    platform
        .model
        .push(Reply::text("a reply that never ends").then_hang());
    let (interrupted, mut run) = {
        // No timeout on this one: the stream lasts as long as the run.
        let response = platform
            .http
            .post(format!("{b}/api/v1/chat/{other}"))
            .bearer_auth(&token)
            .json(&json!({ "message": "start and hang" }))
            .send()
            .await
            .expect("chat");
        assert_eq!(response.status(), 200);
        (
            Instant::now(),
            futures::StreamExt::boxed(response.bytes_stream()),
        )
    };
    let mut text = String::new();
    let mut terminal = None;
    while terminal.is_none() {
        let chunk = tokio::time::timeout(RECOVERY, futures::StreamExt::next(&mut run))
            .await
            .expect("a frame in time")
            .expect("the run's stream")
            .expect("the run's stream");
        text.push_str(&String::from_utf8_lossy(&chunk));
        if text.contains("\"type\":\"text\"") && platform.chat.len() == 1 {
            // The first worker streams this run: a second one joins, then the first dies.
            platform.start_chat_worker().await;
            let mut first = platform.chat.remove(0);
            first.kill_group().await;
            terminal = Some(Instant::now());
        }
    }
    let killed_at = terminal.expect("killed");
    while !text.contains("\"type\":\"error\"") && !text.contains("\"type\":\"done\"") {
        let chunk = tokio::time::timeout(RECOVERY, futures::StreamExt::next(&mut run))
            .await
            .expect("the run closed in time")
            .expect("the run's stream")
            .expect("the run's stream");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        text.contains("worker_lost"),
        "the run of the killed worker ends with worker_lost: {text}"
    );
    report.push(format!(
        "chat worker killed mid-run: the other worker closed the run (worker_lost) {:.1} s after the kill ({:.1} s after the message)",
        killed_at.elapsed().as_secs_f64(),
        interrupted.elapsed().as_secs_f64()
    ));

    // 5. Stop PostgreSQL; start it again: the read models converge.
    eprintln!("fault 5 at {:.1} s", begun.elapsed().as_secs_f64());
    let health = format!("{b}/api/v1/health");
    platform.pg.stop().await.expect("stop PostgreSQL");
    let stopped = Instant::now();
    wait_until(RECOVERY, || async {
        !matches!(get_json(&health).await, Some((200, _)))
    })
    .await;
    platform.pg.restart().await.expect("start PostgreSQL again");
    let down = stopped.elapsed();
    let restarted = Instant::now();
    wait_until(RECOVERY, || async {
        matches!(get_json(&health).await, Some((200, _)))
    })
    .await;
    let healthy_after = restarted.elapsed();
    let last = platform
        .chat_done(&b, &token, &followed, Some(&conversation), cursor, n)
        .await;
    let (acked, refused) = writers.finish().await;
    let patched = platform
        .send(
            reqwest::Method::PATCH,
            &format!("{b}/api/v1/users/me"),
            Some(&token),
            json!({ "display_name": "final name" }),
        )
        .await;
    assert_eq!(patched.status(), 200);
    wait_until(RECOVERY, || async {
        get_authed(&platform, &b, &token, "/api/v1/users/me")
            .await
            .is_some_and(|me| me["display_name"] == "final name")
    })
    .await;
    let messages_path = format!("/api/v1/conversations/{conversation}/messages?limit=100");
    wait_until(RECOVERY, || async {
        get_authed(&platform, &b, &token, &messages_path)
            .await
            .and_then(|m| m.as_array().map(Vec::len))
            .is_some_and(|count| count == 2 * (n + 1))
    })
    .await;
    report.push(format!(
        "PostgreSQL stopped for {:.1} s: health 200 again {:.1} s after its start; the read models caught up with the log {:.1} s after its start",
        down.as_secs_f64(),
        healthy_after.as_secs_f64(),
        restarted.elapsed().as_secs_f64()
    ));

    // Every acknowledged command is in the log.
    let logged = logged_names(&platform, &user).await;
    let lost: Vec<&String> = acked
        .iter()
        .filter(|name| !logged.contains(*name))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged commands are not in the log: {lost:?}",
        lost.len(),
        acked.len()
    );
    report.push(format!(
        "writes: {} acknowledged, all {} in the log ({} logged in all); {refused} refused or unanswered (not acknowledged)",
        acked.len(),
        acked.len(),
        logged.len()
    ));

    // Every follower saw what an unbroken one saw: nothing missing, nothing repeated.
    end_tx.send(Some(last)).expect("followers listen");
    let mut seen = Vec::new();
    for (edge, log, task) in followers {
        tokio::time::timeout(RECOVERY, task)
            .await
            .expect("the follower reached the last frame")
            .expect("follower");
        let log = log.lock().expect("log");
        let ids: Vec<u64> = log.frames.iter().map(|s| s.id).collect();
        assert!(
            ids.windows(2).all(|w| w[0] <= w[1]),
            "a follower from edge {edge} saw frames out of order: {ids:?}"
        );
        seen.push((edge, log.frames.clone(), log.resumes.len()));
    }
    let reference = &seen[0].1;
    assert!(
        reference.iter().filter(|s| s.kind == "done").count() >= n,
        "the followers saw every run: {reference:?}"
    );
    for (edge, frames, _) in &seen {
        assert_eq!(
            frames, reference,
            "a follower that started on edge {edge} saw other frames than the first"
        );
    }
    report.push(format!(
        "followers: {} frames each, identical across all {} (resumes per follower: {:?})",
        reference.len(),
        seen.len(),
        seen.iter().map(|(_, _, r)| *r).collect::<Vec<_>>()
    ));
    println!("cluster under faults:\n- {}", report.join("\n- "));
}
