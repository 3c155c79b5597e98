//! What operators see (ADR 36): every role serves `/metrics`, `/healthz` and `/readyz` on
//! `WARREN_METRICS_ADDR`; the named series move under a small load; health and readiness
//! answer within a second while NATS is down, and the platform recovers when it returns.

mod chat_support;
mod common;
mod edge_support;

use chat_support::Chat;
use common::{Warren, free_port};
use edge_support::{ENCRYPTION_KEY, Platform};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use warren_testkit::model_server::Reply;
use warren_testkit::{wait_for, wait_until};

/// One scrape: each sample (`name{labels}`) and its value.
#[derive(Debug)]
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    async fn of(addr: &str) -> Self {
        let response = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("scrape");
        assert_eq!(response.status(), 200);
        let kind = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
        let text = response.text().await.expect("metrics text");
        assert!(text.ends_with("# EOF\n"), "{text}");
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (sample, value) = line.rsplit_once(' ')?;
                Some((sample.to_owned(), value.parse().ok()?))
            })
            .collect();
        Self(samples)
    }

    /// The value of one sample (0 when absent).
    fn value(&self, sample: &str) -> f64 {
        self.0.get(sample).copied().unwrap_or(0.0)
    }

    /// The sum of the samples starting with `prefix`.
    fn sum(&self, prefix: &str) -> f64 {
        self.0
            .iter()
            .filter(|(sample, _)| sample.starts_with(prefix))
            .map(|(_, value)| value)
            .sum()
    }

    fn has(&self, prefix: &str) -> bool {
        self.0.keys().any(|sample| sample.starts_with(prefix))
    }
}

async fn probe(addr: &str, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("probe");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn warren_dev_serves_metrics_and_probes_and_the_series_move_under_a_chat() {
    let addr = format!("127.0.0.1:{}", free_port());
    let chat = Chat::start(&[
        ("WARREN_METRICS_ADDR", &addr),
        ("WARREN_DEPLOYER_RECONCILE_SECS", "1"),
    ])
    .await;
    assert_eq!(probe(&addr, "/healthz").await.0, 200);
    let (status, body) = probe(&addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""status":"ready""#), "{body}");

    let before = Scrape::of(&addr).await;
    // The agent's deployment went through every step.
    assert!(
        before.value(r#"warren_deploy_step_duration_seconds_count{name="health_check"}"#) >= 1.0,
        "{before:?}"
    );
    chat.model.push(Reply::text("Hello from the model."));
    let mut run = chat.send("hi").await;
    let conversation_id = run.until("queued").await.data["conversation_id"]
        .as_str()
        .expect("conversation id")
        .to_owned();
    assert_eq!(run.finish().await.kind(), "done");
    // A follow stream stays open while the next scrapes are taken.
    let follow = chat.follow(&conversation_id, None).await;
    // A scan's paths and made-up methods do not become labels.
    let brew = reqwest::Method::from_bytes(b"BREW").expect("a method token");
    let scanned = chat
        .platform
        .http
        .request(brew, format!("{}/api/v1/health", chat.platform.base))
        .send()
        .await
        .expect("BREW");
    assert_eq!(scanned.status(), 405);
    let missing = chat
        .platform
        .http
        .get(format!("{}/no/such/scanned-path", chat.platform.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);

    let after = wait_for(Duration::from_secs(30), || async {
        let after = Scrape::of(&addr).await;
        let settled = after.value(r#"warren_live_connections{kind="sse"}"#) >= 1.0
            && after.value(r#"warren_sandboxes{sandbox="process",state="running"}"#) >= 1.0
            && after.has(r#"warren_consumer_pending{name="chat"}"#);
        settled.then_some(after)
    })
    .await;
    let moved = |sample: &str| {
        let family = sample.split('{').next().unwrap_or(sample);
        assert!(
            after.sum(sample) > before.sum(sample),
            "{sample} did not move: {} then {}; the family: {:?}",
            before.sum(sample),
            after.sum(sample),
            after
                .0
                .iter()
                .filter(|(key, _)| key.starts_with(family))
                .collect::<Vec<_>>()
        );
    };
    moved(r#"warren_http_requests_total{method="POST",route="/api/v1/chat/{id}",status="200"}"#);
    moved(r#"warren_http_request_duration_seconds_count{method="POST",route="/api/v1/chat/{id}"}"#);
    moved(r#"warren_commands_total{aggregate="CONVERSATIONS",outcome="committed"}"#);
    moved("warren_append_duration_seconds_count");
    moved("warren_runs_started_total");
    moved(r#"warren_runs_finished_total{outcome="completed"}"#);
    moved("warren_time_to_first_token_seconds_count");
    moved(r#"warren_frames_sent_total{kind="sse"}"#);
    // Scrape-time gauges: each durable consumer's and each projection's backlog.
    for sample in [
        r#"warren_consumer_pending{name="deployer"}"#,
        r#"warren_consumer_pending{name="notifier"}"#,
        r#"warren_projection_lag{name="conversations"}"#,
        r#"warren_projection_parked{name="users"}"#,
    ] {
        assert!(after.has(sample), "no {sample}: {after:?}");
    }
    assert!(
        after.has(
            r#"warren_http_requests_total{method="other",route="/api/v1/health",status="405"}"#
        ),
        "{after:?}"
    );
    assert!(
        after.has(r#"warren_http_requests_total{method="GET",route="unmatched",status="404"}"#),
        "{after:?}"
    );
    assert!(
        !after
            .0
            .keys()
            .any(|sample| sample.contains("BREW") || sample.contains("scanned-path")),
        "a client's method or path became a label"
    );
    // Routes are templates: no id ever becomes a label.
    assert!(
        !after.0.keys().any(|sample| sample.contains(&chat.agent_id)),
        "an agent id in a label"
    );
    drop(follow);
    wait_until(Duration::from_secs(10), || async {
        Scrape::of(&addr)
            .await
            .value(r#"warren_live_connections{kind="sse"}"#)
            == 0.0
    })
    .await;
}

#[tokio::test]
async fn each_role_run_on_its_own_serves_metrics_and_probes() {
    let platform = Platform::start(&[("WARREN_APPROVAL", "open")]).await;
    let jwt = std::fs::read_to_string(platform.dir.path().join("data/jwt_secret"))
        .expect("the dev JWT secret");
    let mut base: Vec<(&str, String)> =
        [platform.nats.warren_env(), platform.db.warren_env()].concat();
    base.extend([
        ("WARREN_ENCRYPTION_KEY", ENCRYPTION_KEY.to_owned()),
        ("WARREN_JWT_SECRET", jwt.trim().to_owned()),
        ("WARREN_SMTP_URL", platform.smtp.url()),
        ("WARREN_AGENT_BIN", edge_support::NO_AGENT_BIN.to_owned()),
    ]);
    let http = free_port();
    let roles: [(&[&str], &str); 5] = [
        (&["edge"], "warren_http_requests_total"),
        (
            &["worker", "projector"],
            r#"warren_projection_lag{name="users"}"#,
        ),
        (
            &["worker", "chat"],
            r#"warren_consumer_pending{name="chat"}"#,
        ),
        (
            &["worker", "deployer"],
            r#"warren_consumer_pending{name="deployer"}"#,
        ),
        (
            &["worker", "notifier"],
            r#"warren_consumer_pending{name="notifier"}"#,
        ),
    ];
    let mut running = Vec::new();
    for (args, series) in roles {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut env = base.clone();
        env.push(("WARREN_METRICS_ADDR", addr.clone()));
        env.push(("WARREN_HTTP_ADDR", format!("127.0.0.1:{http}")));
        let name = args.join("-");
        let process = Warren::spawn(args, &env, platform.dir.path(), &name);
        running.push((name, addr, series, process));
    }
    // The edge run on its own serves a request, which its own scrape counts.
    let edge = format!("http://127.0.0.1:{http}/api/v1/health");
    wait_until(Duration::from_secs(30), || async {
        matches!(common::get_json(&edge).await, Some((200, _)))
    })
    .await;
    for (name, addr, series, process) in &running {
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Ok(response) = reqwest::get(format!("http://{addr}/readyz")).await
                    && response.status() == 200
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(
            ready.is_ok(),
            "{name} never ready; log:\n{}",
            process.log_text()
        );
        assert_eq!(probe(addr, "/healthz").await.0, 200, "{name}");
        let found = wait_for(Duration::from_secs(30), || async {
            let scrape = Scrape::of(addr).await;
            scrape.has(series).then_some(scrape)
        })
        .await;
        assert!(found.has(series), "{name}: {found:?}");
    }
    let edge_scrape = Scrape::of(&running[0].1).await;
    assert!(
        edge_scrape.value(
            r#"warren_http_requests_total{method="GET",route="/api/v1/health",status="200"}"#
        ) >= 1.0,
        "{edge_scrape:?}"
    );
}

#[tokio::test]
async fn health_and_readiness_answer_within_a_second_while_nats_is_down_and_all_recovers() {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut platform = Platform::start(&[
        ("WARREN_APPROVAL", "open"),
        ("WARREN_METRICS_ADDR", &addr),
        ("WARREN_LOG_FORMAT", "json"),
    ])
    .await;
    let me = platform.sign_in("steady@example.com").await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    platform.nats.kill().await.expect("kill nats-server");
    // Several probes while it is down: each answers 503 naming NATS, within a second.
    for _ in 0..5 {
        let asked = Instant::now();
        let health = client
            .get(format!("{}/api/v1/health", platform.base))
            .send()
            .await
            .expect("health answers");
        let took = asked.elapsed();
        assert_eq!(health.status(), 503);
        let body: Value = health.json().await.expect("json");
        assert!(took < Duration::from_secs(1), "health took {took:?}");
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
        assert_eq!(body["error"]["details"]["nats"], "unreachable", "{body}");
        assert_eq!(body["error"]["details"]["postgres"], "ok", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("nats")),
            "{body}"
        );

        let asked = Instant::now();
        let ready = client
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .expect("readyz answers");
        let took = asked.elapsed();
        assert_eq!(ready.status(), 503);
        assert!(took < Duration::from_secs(1), "readyz took {took:?}");
        let body: Value = ready.json().await.expect("json");
        assert_eq!(body["nats"], "unreachable", "{body}");
        // Liveness is not readiness: the process still serves.
        let live = client
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(live.status(), 200);
    }
    platform.nats.restart().await.expect("restart nats-server");
    // Without restarting Warren: healthy again, and a write goes through.
    let health = format!("{}/api/v1/health", platform.base);
    wait_until(Duration::from_secs(60), || async {
        matches!(common::get_json(&health).await, Some((200, _)))
    })
    .await;
    let patched = platform
        .patch(
            "/api/v1/users/me",
            Some(&me.access),
            json!({"display_name": "Back again"}),
        )
        .await;
    assert_eq!(patched.status, 200, "{patched:?}");
    let (status, body) = probe(&addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    // WARREN_LOG_FORMAT=json: every line a log collector reads is one JSON object, the
    // outage's warnings among them.
    let log = platform.warren.log_text();
    let lines: Vec<Value> = log
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|line| line["level"].is_string() && line["timestamp"].is_string())
    );
    assert!(lines.iter().any(|line| line["level"] == "WARN"), "{log}");
}

/// The direct children of `pid` (of every thread) with their program names.
fn children(pid: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let listed = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in listed
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            if let Some(name) = running(child) {
                found.push((child, name));
            }
        }
    }
    found
}

/// The program name of a running process (zombies count as gone).
fn running(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (name, rest) = stat.split_once(") ")?;
    let state = rest.split_whitespace().next()?;
    (state != "Z" && state != "X").then(|| name.rsplit_once('(').map_or("", |n| n.1).to_owned())
}

/// `warren dev`'s embedded server called `name`.
fn embedded(warren: &Warren, name: &str) -> u32 {
    let pid = warren.child.id().expect("warren pid");
    children(pid)
        .into_iter()
        .find(|(_, found)| found == name)
        .unwrap_or_else(|| panic!("no {name} under warren dev: {:?}", children(pid)))
        .0
}

/// `pid` and every process under it.
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut at = 0;
    while at < all.len() {
        let below = children(all[at]);
        all.extend(below.into_iter().map(|(child, _)| child));
        at += 1;
    }
    all
}

fn signal_all(pids: &[u32], signal: rustix::process::Signal) {
    for pid in pids {
        if let Some(pid) = rustix::process::Pid::from_raw(*pid as i32) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }
}

/// While the embedded server `name` hangs (every process of it stopped), health answers 503
/// naming `down` within a second, every time; once it runs on, health is 200 again.
async fn hang(warren: &Warren, base: &str, name: &str, down: &str) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let pids = tree(embedded(warren, name));
    signal_all(&pids, rustix::process::Signal::STOP);
    for _ in 0..3 {
        let asked = Instant::now();
        let answer = client.get(format!("{base}/api/v1/health")).send().await;
        let took = asked.elapsed();
        let (status, body) = match answer {
            Ok(answer) => (
                answer.status().as_u16(),
                answer.json::<Value>().await.unwrap_or(Value::Null),
            ),
            Err(err) => (0, Value::String(err.to_string())),
        };
        if status != 503 || took >= Duration::from_secs(1) {
            signal_all(&pids, rustix::process::Signal::CONT);
            panic!("{name} hung: health answered {status} after {took:?}: {body}");
        }
        assert_eq!(body["error"]["details"][down], "unreachable", "{body}");
    }
    signal_all(&pids, rustix::process::Signal::CONT);
    let health = format!("{base}/api/v1/health");
    wait_until(Duration::from_secs(60), || async {
        matches!(common::get_json(&health).await, Some((200, _)))
    })
    .await;
}

/// Probes health until it is 200 again: every answer comes within a second, and a 503 names
/// `down`.
async fn outage(base: &str, down: &str, warren: &Warren) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut refused = 0;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(90);
    loop {
        if Instant::now() > deadline {
            let log = warren.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "{down} down: not healthy again after 90 s; log (last lines first):\n{}",
                tail.join("\n")
            );
        }
        let asked = Instant::now();
        let answer = client.get(format!("{base}/api/v1/health")).send().await;
        let took = asked.elapsed();
        assert!(took < Duration::from_secs(1), "health took {took:?}");
        let answer = answer.expect("health answers");
        let status = answer.status().as_u16();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        match status {
            // A server back within a few hundred milliseconds may never be seen down.
            200 if refused > 0 || started.elapsed() > Duration::from_secs(3) => {
                eprintln!("{down}: {refused} probe(s) answered 503 before 200");
                return;
            }
            200 => {}
            503 => {
                assert_eq!(body["error"]["details"][down], "unreachable", "{body}");
                refused += 1;
            }
            other => panic!("health answered {other}: {body}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn warren_dev_starts_its_dead_nats_server_and_postgres_again_and_no_acknowledged_message_is_lost()
 {
    let model = warren_testkit::model_server::ModelServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let http = free_port();
    let base = format!("http://127.0.0.1:{http}");
    let env: Vec<(&str, String)> = vec![
        (
            "WARREN_DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
        ("WARREN_HTTP_ADDR", format!("127.0.0.1:{http}")),
        ("WARREN_APPROVAL", "open".into()),
        ("WARREN_LOCAL_MODEL", "off".into()),
        (
            "WARREN_AGENT_BIN",
            common::agent_bin().display().to_string(),
        ),
        ("WARREN_DEFAULT_PROVIDER", "openai".into()),
        ("WARREN_DEFAULT_BASE_URL", model.url()),
        ("WARREN_DEFAULT_API_KEY", "sk-platform".into()),
    ];
    let warren = Warren::spawn(&["dev"], &env, dir.path(), "dev");
    let health = format!("{base}/api/v1/health");
    wait_until(Duration::from_secs(60), || async {
        matches!(common::get_json(&health).await, Some((200, _)))
    })
    .await;
    let http_client = reqwest::Client::new();
    let post = |path: &str, token: Option<&str>, body: Value| {
        let mut request = http_client.post(format!("{base}{path}")).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    // Sign in with the code `warren dev` logs (no mail server).
    let sent = post(
        "/api/v1/auth/login/email",
        None,
        json!({"email": "ops@example.com"}),
    )
    .await
    .expect("login");
    assert_eq!(sent.status(), 202);
    let code = wait_for(Duration::from_secs(10), || async {
        let log = warren.log_text();
        let at = log.find("code: ")? + "code: ".len();
        let code: String = log[at..].chars().take(6).collect();
        code.chars().all(|c| c.is_ascii_digit()).then_some(code)
    })
    .await;
    let pair: Value = post(
        "/api/v1/auth/verify-magic-link",
        None,
        json!({"email": "ops@example.com", "code": code}),
    )
    .await
    .expect("verify")
    .json()
    .await
    .expect("tokens");
    let token = pair["access_token"].as_str().expect("access").to_owned();
    let created: Value = post("/api/v1/agents", Some(&token), json!({"name": "Steady"}))
        .await
        .expect("create")
        .json()
        .await
        .expect("agent");
    let agent_id = created["id"].as_str().expect("agent id").to_owned();
    let status_url = format!("{base}/api/v1/agents/{agent_id}/status");
    wait_until(Duration::from_secs(60), || async {
        let status: Value = http_client
            .get(&status_url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("status")
            .json()
            .await
            .unwrap_or(Value::Null);
        status["status"] == "running"
    })
    .await;

    // One chat per phase: before, after NATS died, after PostgreSQL died. Each acknowledged
    // message must be in the conversation at the end, with its answer.
    let mut acknowledged = Vec::new();
    let mut conversation_id: Option<String> = None;
    let chat = |message: String, conversation: Option<String>| {
        let mut body = json!({"message": message});
        if let Some(id) = conversation {
            body["conversation_id"] = json!(id);
        }
        http_client
            .post(format!("{base}/api/v1/chat/{agent_id}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    // A hung server is down too, as a probe sees it.
    hang(&warren, &base, "nats-server", "nats").await;
    hang(&warren, &base, "postgres", "postgres").await;
    for (phase, kill) in [
        ("before", None),
        ("nats", Some("nats-server")),
        ("postgres", Some("postgres")),
    ] {
        if let Some(name) = kill {
            let pid = embedded(&warren, name);
            rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid as i32).expect("pid"),
                rustix::process::Signal::KILL,
            )
            .expect("SIGKILL");
            let down = if name == "postgres" {
                "postgres"
            } else {
                "nats"
            };
            outage(&base, down, &warren).await;
            let again = embedded(&warren, name);
            assert_ne!(again, pid, "{name} was started again");
        }
        model.push(Reply::text(format!("answer {phase}")));
        let message = format!("message {phase}");
        let response = wait_for(Duration::from_secs(30), || async {
            let response = chat(message.clone(), conversation_id.clone()).await.ok()?;
            (response.status() == 200).then_some(response)
        })
        .await;
        let text = response.text().await.expect("the run's stream");
        assert!(text.contains(&format!("answer {phase}")), "{phase}: {text}");
        if conversation_id.is_none() {
            let at = text
                .find("\"conversation_id\":\"")
                .expect("conversation id")
                + 19;
            conversation_id = Some(text[at..at + 36].to_owned());
        }
        acknowledged.push(message);
    }
    let conversation_id = conversation_id.expect("a conversation");
    let messages_url = format!("{base}/api/v1/conversations/{conversation_id}/messages");
    let kept = wait_for(Duration::from_secs(30), || async {
        let body: Value = http_client
            .get(&messages_url)
            .bearer_auth(&token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let texts: Vec<String> = body
            .as_array()
            .or_else(|| body["messages"].as_array())?
            .iter()
            .filter_map(|m| m["text"].as_str().map(str::to_owned))
            .collect();
        (texts.len() >= 6).then_some(texts)
    })
    .await;
    for message in &acknowledged {
        assert!(kept.contains(message), "{message} lost: {kept:?}");
    }
    for phase in ["before", "nats", "postgres"] {
        assert!(
            kept.contains(&format!("answer {phase}")),
            "answer {phase} lost: {kept:?}"
        );
    }
}

/// Every commit of `conversation_id`: its event types and its trace id.
async fn commits_with_traces(chat: &Chat, conversation_id: &str) -> Vec<(String, String)> {
    let js = chat.platform.nats.jetstream().await;
    let mut stream = js.get_stream("CONVERSATIONS").await.expect("stream");
    let last = stream.info().await.expect("info").state.last_sequence;
    let subject = format!("conv.{conversation_id}.ev");
    let mut found = Vec::new();
    for seq in 1..=last {
        let Ok(message) = stream.get_raw_message(seq).await else {
            continue;
        };
        if message.subject.as_str() != subject {
            continue;
        }
        let header = |name: &str| {
            message
                .headers
                .get(name)
                .map(|value| value.as_str().to_owned())
                .unwrap_or_default()
        };
        let traceparent = header("traceparent");
        let trace = warren_commands::trace::trace_id(&traceparent)
            .unwrap_or_else(|| panic!("commit {seq} has no valid traceparent: {traceparent:?}"))
            .to_owned();
        found.push((header("Warren-Event-Types"), trace));
    }
    found
}

/// Posts "follow me" (answered "Traced.") to the chat's agent as a client in the trace context
/// `traceparent`, and returns the run's stream.
async fn traced_chat(chat: &Chat, traceparent: &str) -> chat_support::RunStream {
    chat.model.push(Reply::text("Traced."));
    let response = chat
        .platform
        .http
        .post(format!(
            "{}/api/v1/chat/{}",
            chat.platform.base, chat.agent_id
        ))
        .bearer_auth(&chat.user.access)
        .header("traceparent", traceparent)
        .json(&json!({"message": "follow me"}))
        .send()
        .await
        .expect("chat");
    assert_eq!(response.status(), 200);
    chat_support::RunStream::new(response)
}

#[tokio::test]
async fn a_requests_trace_id_is_on_its_commit_and_on_the_commits_of_the_run_it_caused() {
    let chat = Chat::start(&[]).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut run = traced_chat(&chat, &format!("00-{trace}-00f067aa0ba902b7-01")).await;
    let conversation_id = run.until("queued").await.data["conversation_id"]
        .as_str()
        .expect("conversation id")
        .to_owned();
    assert_eq!(run.finish().await.kind(), "done");
    let commits = wait_for(Duration::from_secs(10), || async {
        let commits = commits_with_traces(&chat, &conversation_id).await;
        commits
            .iter()
            .any(|(types, _)| types.contains("RunCompleted"))
            .then_some(commits)
    })
    .await;
    for wanted in ["MessagePosted", "RunStarted", "RunCompleted"] {
        let (types, found) = commits
            .iter()
            .find(|(types, _)| types.contains(wanted))
            .unwrap_or_else(|| panic!("no {wanted} commit: {commits:?}"));
        assert_eq!(found, trace, "{types}: {commits:?}");
    }

    // Without a context of its own, a request starts a new trace, and its run continues it.
    chat.model.push(Reply::text("Untraced."));
    let mut run = chat
        .send_with(json!({"message": "again", "conversation_id": conversation_id}))
        .await;
    assert_eq!(run.finish().await.kind(), "done");
    let commits = wait_for(Duration::from_secs(10), || async {
        let commits = commits_with_traces(&chat, &conversation_id).await;
        (commits
            .iter()
            .filter(|(types, _)| types.contains("RunCompleted"))
            .count()
            == 2)
            .then_some(commits)
    })
    .await;
    let later: Vec<&String> = commits
        .iter()
        .skip_while(|(types, _)| !types.contains("RunCompleted"))
        .skip(1)
        .filter(|(types, _)| {
            ["MessagePosted", "RunStarted", "RunCompleted"]
                .iter()
                .any(|wanted| types.contains(wanted))
        })
        .map(|(_, trace)| trace)
        .collect();
    assert!(later.len() >= 3, "{commits:?}");
    assert!(later.iter().all(|found| *found == later[0]), "{commits:?}");
    assert_ne!(later[0], trace);
}

/// Spans of one trace, as `name (service)` lines, for failure messages.
fn outline(spans: &[warren_testkit::CollectedSpan]) -> String {
    spans
        .iter()
        .map(|span| {
            format!(
                "{} [{}] {} {} <- {}",
                span.name, span.service, span.trace_id, span.span_id, span.parent_span_id
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn one_trace_from_the_request_through_the_commit_the_chat_worker_and_the_runtime_to_the_delivery()
 {
    let collector = warren_testkit::TestCollector::start().await;
    let endpoint = collector.url();
    let chat = Chat::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let mut run = traced_chat(&chat, &format!("00-{trace}-{client_span}-01")).await;
    assert_eq!(run.finish().await.kind(), "done");

    // Every hop, one trace: the request, its append, the chat worker's reaction and run, the
    // runtime call, the runtime's model call through the platform's proxy to the provider,
    // the projector, and the edge handing the commits to the stream's client.
    let wanted = [
        "POST /api/v1/chat/{id}",
        "append",
        "chat react",
        "chat run",
        "runtime POST /chat",
        "POST /api/v1/runtime/agents/{agent_id}/model/openai/chat/completions",
        "model openai",
        "project",
        "deliver",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans: Vec<_> = collector
            .spans()
            .into_iter()
            .filter(|span| span.trace_id == trace)
            .collect();
        let missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|name| !spans.iter().any(|span| span.name == *name))
            .collect();
        // The run's own commits are delivered too, not only the request's.
        let delivered = spans.iter().filter(|span| span.name == "deliver").count();
        if missing.is_empty() && delivered >= 2 {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "missing {missing:?} ({delivered} deliveries) in trace {trace}:\n{}\nall spans:\n{}",
            outline(&spans),
            outline(&collector.spans())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // One tree: each span's parent is a span of the trace, or the client's own span.
    for span in &spans {
        assert!(
            span.parent_span_id == client_span
                || spans
                    .iter()
                    .any(|other| other.span_id == span.parent_span_id),
            "{} has a parent outside the trace:\n{}",
            span.name,
            outline(&spans)
        );
        assert_eq!(span.service, "warren-dev", "{}", span.name);
    }
    let request = spans
        .iter()
        .find(|span| span.name == wanted[0])
        .expect("the request span");
    assert_eq!(request.parent_span_id, client_span);
    assert_eq!(request.kind, 2, "a server span");
    assert_eq!(request.attribute("http.response.status_code"), Some("200"));
    // The provider was called within the trace too.
    let provider_calls: Vec<_> = chat
        .model
        .recorded()
        .into_iter()
        .filter_map(|request| request.traceparent)
        .collect();
    assert!(
        provider_calls
            .iter()
            .any(|traceparent| warren_commands::trace::trace_id(traceparent) == Some(trace)),
        "{provider_calls:?}"
    );
}
