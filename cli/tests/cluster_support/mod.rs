//! Support for the cluster fault tests: a three-node NATS cluster in Docker containers on a
//! network of the test's own (each node can be killed, restarted, cut off and let back), and an
//! SSE follower that resumes on another edge with its cursor, as a real client would.

#![allow(dead_code)]

use futures::StreamExt;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use warren_deploy::{NatsKeys, Role};

/// `docker <args>`: its standard output, or what it said on failure.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|err| format!("docker {args:?}: {err}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `docker <args>`, which must succeed.
pub fn must(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|err| panic!("{err}"))
}

/// The real `nats-server` executable (a pyenv shim is a script that cannot run in a container).
fn nats_server_executable() -> PathBuf {
    let found = warren_deploy::nats::nats_server_binary(None).expect("nats-server");
    let is_script = std::fs::read(&found).is_ok_and(|bytes| bytes.starts_with(b"#!"));
    if !is_script {
        return found;
    }
    let out = Command::new("pyenv")
        .args(["which", "nats-server"])
        .output()
        .expect("nats-server is a script and pyenv does not answer");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// An image holding only `nats-server` (a static binary), made locally from scratch and named
/// after its version: no registry is reachable here.
fn nats_image() -> String {
    let binary = nats_server_executable();
    let version = Command::new(&binary)
        .arg("--version")
        .output()
        .expect("nats-server --version");
    let version = String::from_utf8_lossy(&version.stdout);
    let version = version
        .split_whitespace()
        .last()
        .expect("a version")
        .trim_start_matches('v');
    let tag = format!("warren-test-nats:{version}");
    if docker(&["image", "inspect", &tag]).is_ok() {
        return tag;
    }
    let stage = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&binary, stage.path().join("nats-server")).expect("copy nats-server");
    let tar = stage.path().join("image.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(stage.path())
        .arg("-cf")
        .arg(&tar)
        .arg("nats-server")
        .status()
        .expect("tar");
    assert!(status.success(), "tar of nats-server");
    must(&[
        "import",
        "--change",
        r#"ENTRYPOINT ["/nats-server"]"#,
        &tar.display().to_string(),
        &tag,
    ]);
    tag
}

/// One node of the cluster.
pub struct Node {
    /// 1, 2 or 3.
    pub index: usize,
    /// Its `server_name` (what JetStream names peers by).
    pub server_name: String,
    pub container: String,
    pub ip: String,
}

/// Three nats-servers (JetStream, R3-ready) in containers on a Docker network of their own,
/// configured by Warren's cluster files (`deploy/nats/cluster/`, with the auth files `warren
/// nats-auth` writes: only the roles' keys may connect; routes present a password). The host reaches each node at its container address. Removed on drop.
pub struct NatsCluster {
    pub network: String,
    pub nodes: Vec<Node>,
    pub keys: NatsKeys,
    _config: tempfile::TempDir,
}

impl NatsCluster {
    /// Creates the network (a /24 no other network holds) and starts the nodes.
    pub fn start() -> Self {
        let image = nats_image();
        let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let network = format!("warren-faults-{id}");
        let mut subnet = None;
        // Somewhere in 10.224.0.0/12, clear of Docker's default pools and of the agents'
        // sandbox network (10.213.0.0/16).
        let mut refused = String::new();
        for _ in 0..32 {
            let [second, third, ..] = *uuid::Uuid::new_v4().as_bytes();
            let candidate = format!("10.{}.{third}", 224 + second % 16);
            match docker(&[
                "network",
                "create",
                "--subnet",
                &format!("{candidate}.0/24"),
                &network,
            ]) {
                Ok(_) => {
                    subnet = Some(candidate);
                    break;
                }
                Err(err) => refused = err,
            }
        }
        let subnet = subnet
            .unwrap_or_else(|| panic!("no free /24 for the test's Docker network: {refused}"));
        let config = tempfile::tempdir().expect("tempdir");
        let keys = warren_deploy::nats_auth::write_server_files(
            config.path(),
            &["nats-1", "nats-2", "nats-3"],
        )
        .expect("NATS auth files");
        // The cluster's own configuration, as shipped (node-N.conf includes common.conf).
        let shipped =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats/cluster");
        for entry in std::fs::read_dir(&shipped)
            .expect("deploy/nats/cluster")
            .flatten()
        {
            std::fs::copy(entry.path(), config.path().join(entry.file_name()))
                .expect("copy config");
        }
        let mut cluster = Self {
            network,
            nodes: Vec::new(),
            keys,
            _config: config,
        };
        for index in 1..=3 {
            let node = Node {
                index,
                server_name: format!("warren-nats-{index}"),
                container: format!("{}-nats-{index}", cluster.network),
                ip: format!("{subnet}.{}", 10 + index),
            };

            must(&[
                "run",
                "-d",
                "--name",
                &node.container,
                "--network",
                &cluster.network,
                "--ip",
                &node.ip,
                "--network-alias",
                &format!("nats-{index}"),
                "-v",
                &format!("{}:/etc/nats:ro", cluster._config.path().display()),
                &image,
                "-c",
                &format!("/etc/nats/node-{index}.conf"),
            ]);
            cluster.nodes.push(node);
        }
        cluster
    }

    /// `WARREN_NATS_URL`: every node.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("nats://{}:4222", node.ip))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// What a `warren` role needs to reach the cluster, with R3 streams.
    pub fn warren_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("WARREN_NATS_URL", self.urls()),
            (
                "WARREN_NATS_CREDENTIALS_DIR",
                self.keys.dir().display().to_string(),
            ),
            ("WARREN_NATS_REPLICAS", "3".into()),
        ]
    }

    /// A JetStream context as the admin.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        let client = warren_deploy::nats_auth::connect(&self.urls(), Some(&self.keys), Role::Admin)
            .await
            .expect("connect to the cluster as the admin");
        async_nats::jetstream::new(client)
    }

    /// The node whose `server_name` is `name`.
    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|node| node.server_name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// SIGKILL to the node's server.
    pub fn kill(&self, node: &Node) {
        must(&["kill", &node.container]);
    }

    /// Starts a killed node again (same address, same store).
    pub fn start_again(&self, node: &Node) {
        must(&["start", &node.container]);
    }

    /// Cuts the node off the network: from the other nodes and from every client.
    pub fn partition(&self, node: &Node) {
        must(&["network", "disconnect", &self.network, &node.container]);
    }

    /// Lets a cut-off node back, at its address.
    pub fn heal(&self, node: &Node) {
        must(&[
            "network",
            "connect",
            "--ip",
            &node.ip,
            "--alias",
            &format!("nats-{}", node.index),
            &self.network,
            &node.container,
        ]);
    }

    /// The node's log (for assertion messages).
    pub fn logs(&self, node: &Node) -> String {
        Command::new("docker")
            .args(["logs", "--timestamps", &node.container])
            .output()
            .map(|out| String::from_utf8_lossy(&out.stderr).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            let _ = docker(&["rm", "-f", "-v", &node.container]);
        }
        let _ = docker(&["network", "rm", &self.network]);
    }
}

/// Whether every stream of the log has a leader and all three replicas current, `node`
/// among them: the node is back and has caught up. Lists the laggards otherwise.
pub async fn caught_up(js: &async_nats::jetstream::Context, node: &str) -> Result<(), String> {
    let mut names = js.stream_names();
    let mut lagging = Vec::new();
    let mut count = 0;
    while let Some(name) = names.next().await {
        let name = name.map_err(|err| err.to_string())?;
        count += 1;
        let mut stream = js.get_stream(&name).await.map_err(|err| err.to_string())?;
        let info = stream.info().await.map_err(|err| err.to_string())?;
        let Some(cluster) = info.cluster.clone() else {
            lagging.push(format!("{name}: no cluster info"));
            continue;
        };
        let leader = cluster.leader.clone().unwrap_or_default();
        let members: Vec<&str> = std::iter::once(leader.as_str())
            .chain(cluster.replicas.iter().map(|peer| peer.name.as_str()))
            .collect();
        let behind = cluster
            .replicas
            .iter()
            .any(|peer| !peer.current || peer.offline || peer.lag.unwrap_or(0) > 0);
        if leader.is_empty() || cluster.replicas.len() != 2 || behind || !members.contains(&node) {
            lagging.push(format!("{name}: {cluster:?}"));
        }
    }
    if count == 0 {
        return Err("no stream".into());
    }
    if lagging.is_empty() {
        Ok(())
    } else {
        Err(lagging.join("; "))
    }
}

/// One SSE frame of a conversation: its cursor and type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub id: u64,
    pub kind: String,
}

/// What a follower did.
#[derive(Debug, Default)]
pub struct FollowerLog {
    /// Every frame with a cursor, in order.
    pub frames: Vec<Seen>,
    /// (edge it left, edge it resumed on, how long from losing the stream to resuming).
    pub resumes: Vec<(String, String, Duration)>,
}

/// A client following a conversation's events (`GET /conversations/{id}/events`), from cursor
/// `after`, on `edges[0]` first. When its stream ends it resumes with `Last-Event-ID`: on the same
/// edge while that one answers, else on the next one in `edges` (the edge died). It stops once it has seen a frame at or past the `until` cursor.
pub fn follow(
    http: reqwest::Client,
    edges: Vec<String>,
    conversation: String,
    token: String,
    after: u64,
    mut until: watch::Receiver<Option<u64>>,
) -> (Arc<Mutex<FollowerLog>>, tokio::task::JoinHandle<()>) {
    let log = Arc::new(Mutex::new(FollowerLog::default()));
    let shared = log.clone();
    let task = tokio::spawn(async move {
        let mut last = after;
        let mut at = 0usize;
        let mut lost: Option<(String, Instant)> = None;
        loop {
            let edge = &edges[at % edges.len()];
            let response = http
                .get(format!("{edge}/api/v1/conversations/{conversation}/events"))
                .bearer_auth(&token)
                .header("last-event-id", last.to_string())
                .send()
                .await;
            let response = match response {
                Ok(response) if response.status() == 200 => response,
                _ => {
                    // That edge is down (or cannot serve yet): the next one.
                    lost.get_or_insert_with(|| (edge.clone(), Instant::now()));
                    at += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if let Some((from, since)) = lost.take() {
                shared
                    .lock()
                    .expect("log")
                    .resumes
                    .push((from, edge.clone(), since.elapsed()));
            }
            let mut body = response.bytes_stream();
            let mut buffer = String::new();
            loop {
                if let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    let mut id = None;
                    let mut kind = String::new();
                    for line in block.lines() {
                        if let Some(value) = line.strip_prefix("id:") {
                            id = value.trim().parse::<u64>().ok();
                        } else if let Some(data) = line.strip_prefix("data:") {
                            let data: Value = serde_json::from_str(data.trim()).unwrap_or_default();
                            kind = data["type"].as_str().unwrap_or_default().to_owned();
                        }
                    }
                    if let Some(id) = id {
                        last = id;
                        shared.lock().expect("log").frames.push(Seen { id, kind });
                    }
                    if until.borrow().is_some_and(|until| last >= until) {
                        return;
                    }
                    continue;
                }
                let chunk = tokio::select! {
                    chunk = body.next() => chunk,
                    // The end was named while the stream is quiet: maybe already reached.
                    changed = until.changed() => {
                        if changed.is_err() || until.borrow().is_some_and(|until| last >= until) {
                            return;
                        }
                        continue;
                    }
                };
                match chunk {
                    Some(Ok(bytes)) => buffer.push_str(&String::from_utf8_lossy(&bytes)),
                    _ => break,
                }
            }
            // The stream ended (the edge lost its upstream, or died): resume, on the same edge
            // if it still answers.
            lost = Some((edge.clone(), Instant::now()));
        }
    });
    (log, task)
}
