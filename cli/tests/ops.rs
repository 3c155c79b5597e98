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
    moved(
        r#"warren_http_requests_total{method="POST",route="/api/v1/chat/{id}",status="200"}"#,
    );
    moved(
        r#"warren_http_request_duration_seconds_count{method="POST",route="/api/v1/chat/{id}"}"#,
    );
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
    let mut platform =
        Platform::start(&[("WARREN_APPROVAL", "open"), ("WARREN_METRICS_ADDR", &addr)]).await;
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
}
