//! Analysts replay usage history: a scripted history (two users' agents, deployments, runs,
//! metered model calls of two providers, files, one model call stored at an old event version)
//! yields exact totals and costs per bucket and group from `GET /api/v1/admin/usage`; a user's
//! own report holds only their usage; the analyst API refuses non-analysts; a price change
//! followed by `warren replay --projection usage` changes cost and nothing else; a replay from a
//! time rebuilds the same facts.

mod common;
mod edge_support;

use common::Warren;
use edge_support::{Platform, Session};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;
use warren_commands::topology;
use warren_testkit::wait_until;

/// January's prices: gpt-4o at 2.5 / 10 USD per million tokens, any Anthropic model at 3 / 15
/// with cached input at 0.3.
const JANUARY_PRICES: &str = r#"
[[prices]]
provider = "openai"
model = "gpt-4o"
from = "2026-01-01"
input_per_million = 2.5
output_per_million = 10.0

[[prices]]
provider = "anthropic"
model = "*"
from = "2026-01-01"
input_per_million = 3.0
output_per_million = 15.0
cached_input_per_million = 0.3
"#;

/// From February gpt-4o's input costs 5 USD per million tokens.
const FEBRUARY_PRICE: &str = r#"
[[prices]]
provider = "openai"
model = "gpt-4o"
from = "2026-02-01"
input_per_million = 5.0
output_per_million = 10.0
"#;

const RANGE: &str = "from=2026-01-01&to=2026-03-01";

/// Publishes one commit of one event, as the platform's `scenario` role, dated `at`.
async fn publish(
    js: &async_nats::jetstream::Context,
    subject: String,
    aggregate: Uuid,
    at: &str,
    event_type: &str,
    version: &str,
    data: Value,
) {
    let commit = json!([{
        "id": Uuid::new_v4(),
        "version": version,
        "aggregate_id": aggregate,
        "command_id": Uuid::new_v4(),
        "actor": {"kind": "system", "id": "scenario"},
        "occurred_at": at,
        "type": event_type,
        "data": data,
    }]);
    js.publish(subject, serde_json::to_vec(&commit).expect("json").into())
        .await
        .expect("publish")
        .await
        .expect("stored");
}

async fn agent_event(
    js: &async_nats::jetstream::Context,
    agent: Uuid,
    at: &str,
    event_type: &str,
    data: Value,
) {
    let version = warren_domain::versions::current(event_type);
    let subject = topology::agent_subject(&agent.to_string());
    publish(js, subject, agent, at, event_type, version, data).await;
}

async fn user_id(platform: &Platform, session: &Session) -> Uuid {
    let me = platform
        .get("/api/v1/users/me", Some(&session.access))
        .await;
    assert_eq!(me.status, 200, "{me:?}");
    me.body["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("an id")
}

/// Writes the history: alice's agent `a` and bob's agent `b`.
async fn script(js: &async_nats::jetstream::Context, alice: Uuid, bob: Uuid) -> (Uuid, Uuid) {
    let (a, b, conversation) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    for (agent, owner) in [(a, alice), (b, bob)] {
        agent_event(
            js,
            agent,
            "2026-01-10T09:00:00Z",
            "AgentCreated",
            json!({
                "agent_id": agent, "owner_id": owner, "name": "helper", "system_prompt": "",
                "model": "gpt-4o", "runtime": "warren", "backend": "docker"
            }),
        )
        .await;
    }
    let deployment = Uuid::new_v4();
    agent_event(
        js,
        a,
        "2026-01-10T10:05:00Z",
        "DeploymentRequested",
        json!({"agent_id": a, "deployment_id": deployment}),
    )
    .await;
    agent_event(
        js,
        a,
        "2026-01-10T10:06:00Z",
        "AgentDeployed",
        json!({"agent_id": a, "deployment_id": deployment, "endpoint_url": "http://127.0.0.1:1"}),
    )
    .await;
    agent_event(
        js,
        a,
        "2026-01-10T11:06:00Z",
        "AgentStopped",
        json!({"agent_id": a}),
    )
    .await;
    agent_event(js, a, "2026-01-10T10:30:00Z", "ModelUsageMetered", json!({
        "agent_id": a, "user_id": alice, "provider": "openai", "model": "gpt-4o", "own_key": false,
        "input_tokens": 1_000_000, "output_tokens": 100_000, "cached_input_tokens": 0
    }))
    .await;
    agent_event(js, b, "2026-01-10T12:00:00Z", "ModelUsageMetered", json!({
        "agent_id": b, "user_id": bob, "provider": "anthropic", "model": "claude-sonnet-4",
        "own_key": true, "input_tokens": 2_000_000, "output_tokens": 0, "cached_input_tokens": 1_000_000
    }))
    .await;
    agent_event(
        js,
        a,
        "2026-01-10T10:50:00Z",
        "FileUploaded",
        json!({"agent_id": a, "user_id": alice, "path": "in.csv", "size": 1000}),
    )
    .await;
    agent_event(
        js,
        a,
        "2026-02-01T08:00:00Z",
        "FileDownloaded",
        json!({"agent_id": a, "user_id": alice, "path": "out.csv", "size": 400}),
    )
    .await;
    // Stored before model calls counted cached tokens: version 1, lifted on read.
    publish(
        js,
        topology::agent_subject(&a.to_string()),
        a,
        "2026-02-01T09:00:00Z",
        "ModelUsageMetered",
        "1",
        json!({
            "agent_id": a, "user_id": alice, "provider": "openai", "model": "gpt-4o",
            "own_key": false, "input_tokens": 500_000, "output_tokens": 0
        }),
    )
    .await;

    let subject = topology::conversation_subject(&conversation.to_string());
    let conv = |at: &'static str, event_type: &'static str, data: Value| {
        let subject = subject.clone();
        async move {
            let version = warren_domain::versions::current(event_type);
            publish(js, subject, conversation, at, event_type, version, data).await;
        }
    };
    let (run, message) = (Uuid::new_v4(), Uuid::new_v4());
    conv(
        "2026-01-10T10:39:00Z",
        "ConversationStarted",
        json!({
            "conversation_id": conversation, "user_id": alice, "agent_id": a, "title": null
        }),
    )
    .await;
    conv("2026-01-10T10:40:00Z", "MessagePosted", json!({
        "conversation_id": conversation, "message_id": message, "agent_id": a, "user_id": alice,
        "text": "count the files", "client_id": null, "client_kind": null, "run_id": run, "position": 0
    }))
    .await;
    conv(
        "2026-01-10T10:41:00Z",
        "RunCompleted",
        json!({
            "conversation_id": conversation, "run_id": run, "reply_id": Uuid::new_v4(),
            "user_id": alice, "agent_id": a, "text": "Two.",
            "tool_calls": [
                {"call_id": "1", "name": "shell", "args": {}, "output": "", "ok": true},
                {"call_id": "2", "name": "read_file", "args": {}, "output": "", "ok": true}
            ],
            "usage": {"input_tokens": 10, "output_tokens": 20}, "duration_ms": 1500,
            "model": "gpt-4o", "provider": "openai"
        }),
    )
    .await;
    let failed = Uuid::new_v4();
    conv(
        "2026-02-01T10:00:00Z",
        "RunFailed",
        json!({
            "conversation_id": conversation, "run_id": failed, "code": "runtime_error",
            "message": "the runtime stopped", "retryable": true
        }),
    )
    .await;
    (a, b)
}

/// The report at `path`, once it is `ready`.
async fn report_when(
    platform: &Platform,
    token: &str,
    path: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let answer = platform.get(path, Some(token)).await;
            assert_eq!(answer.status, 200, "{path}: {answer:?}");
            if ready(&answer.body) {
                return answer.body;
            }
            last = answer.body;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{path} never became ready; last: {last:#}"))
}

fn row<'a>(report: &'a Value, bucket: &str, group: Value) -> &'a Value {
    report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|row| row["bucket"] == bucket && row["group"] == group)
        .unwrap_or_else(|| panic!("no row {bucket} {group} in {report:#}"))
}

/// The report with every cost figure taken out.
fn without_cost(mut report: Value) -> Value {
    let strip = |totals: &mut Value| {
        if let Some(totals) = totals.as_object_mut() {
            totals.remove("cost_usd");
        }
    };
    strip(&mut report["totals"]);
    for row in report["rows"].as_array_mut().expect("rows") {
        strip(row);
    }
    report
}

async fn usage_rows(platform: &Platform) -> Vec<Value> {
    sqlx::query_scalar("SELECT to_jsonb(e) FROM warren.usage_events e ORDER BY event_id")
        .fetch_all(platform.db.pool())
        .await
        .expect("usage rows")
}

fn env_of(platform: &Platform) -> Vec<(&str, String)> {
    platform
        .env
        .iter()
        .map(|(key, value)| (key.as_str(), value.clone()))
        .collect()
}

fn replay(platform: &Platform, args: &[&str], name: &str) -> Warren {
    let args = [&["replay"], args].concat();
    Warren::spawn(&args, &env_of(platform), platform.dir.path(), name)
}

#[tokio::test]
async fn usage_is_totalled_and_priced_per_bucket_and_group_and_a_replay_reprices_it() {
    let config = tempfile::tempdir().expect("tempdir");
    let prices = config.path().join("warren.toml");
    std::fs::write(&prices, JANUARY_PRICES).expect("prices");
    let prices_path = prices.display().to_string();
    let mut platform =
        Platform::start(&[("WARREN_APPROVAL", "open"), ("WARREN_CONFIG", &prices_path)]).await;
    // The admin signs in first: admins are mailed each later registration.
    let admin = platform.sign_in("operator@admin.test").await;
    let alice = platform.sign_in("alice@example.test").await;
    let bob = platform.sign_in("bob@example.test").await;
    let carol = platform.sign_in("carol@example.test").await;
    let (alice_id, bob_id) = (
        user_id(&platform, &alice).await,
        user_id(&platform, &bob).await,
    );
    let js = platform.nats.jetstream().await;
    let (a, _b) = script(&js, alice_id, bob_id).await;

    // Only analysts and admins read everyone's usage.
    let path = format!("/api/v1/admin/usage?{RANGE}&bucket=month&group_by=user");
    let refused = platform.get(&path, Some(&carol.access)).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    let carol_id = user_id(&platform, &carol).await;
    let promoted = platform
        .patch(
            &format!("/api/v1/admin/users/{carol_id}"),
            Some(&admin.access),
            json!({"role": "analyst"}),
        )
        .await;
    assert_eq!(promoted.status, 200, "{promoted:?}");

    // Per month and user: exact totals and costs, the version 1 model call counted.
    let by_user = report_when(&platform, &carol.access, &path, |report| {
        report["totals"]["model_calls"] == 3 && report["totals"]["runs"] == 2
    })
    .await;
    let (alice_key, bob_key) = (json!(alice_id.to_string()), json!(bob_id.to_string()));
    let january_alice = row(&by_user, "2026-01-01T00:00:00Z", alice_key.clone());
    assert_eq!(january_alice["model_calls"], 1);
    assert_eq!(january_alice["input_tokens"], 1_000_000);
    assert_eq!(january_alice["output_tokens"], 100_000);
    assert_eq!(
        january_alice["cost_usd"], 3.5,
        "1M in at 2.5 + 100k out at 10"
    );
    assert_eq!(january_alice["messages"], 1);
    assert_eq!(january_alice["runs"], 1);
    assert_eq!(january_alice["tool_calls"], 2);
    assert_eq!(january_alice["run_ms"], 1500);
    assert_eq!(january_alice["reported_input_tokens"], 10);
    assert_eq!(january_alice["deployments"], 1);
    assert_eq!(january_alice["running_seconds"], 3600.0);
    assert_eq!(january_alice["file_bytes_in"], 1000);
    let january_bob = row(&by_user, "2026-01-01T00:00:00Z", bob_key.clone());
    assert_eq!(january_bob["cached_tokens"], 1_000_000);
    assert_eq!(
        january_bob["cost_usd"], 3.3,
        "1M in at 3 + 1M cached at 0.3"
    );
    let february_alice = row(&by_user, "2026-02-01T00:00:00Z", alice_key.clone());
    assert_eq!(
        february_alice["model_calls"], 1,
        "the version 1 event is counted"
    );
    assert_eq!(february_alice["input_tokens"], 500_000);
    assert_eq!(february_alice["cached_tokens"], 0);
    assert_eq!(february_alice["cost_usd"], 1.25);
    assert_eq!(february_alice["failed_runs"], 1);
    assert_eq!(february_alice["file_bytes_out"], 400);
    assert_eq!(
        by_user["rows"].as_array().map(Vec::len),
        Some(3),
        "{by_user:#}"
    );
    assert_eq!(by_user["totals"]["cost_usd"], 8.05);
    assert_eq!(by_user["totals"]["input_tokens"], 3_500_000);

    // Per day and model: the run and the call of gpt-4o together; facts without a model apart.
    let by_model = platform
        .get(
            &format!("/api/v1/admin/usage?{RANGE}&bucket=day&group_by=model"),
            Some(&carol.access),
        )
        .await
        .body;
    let gpt = row(&by_model, "2026-01-10T00:00:00Z", json!("gpt-4o"));
    assert_eq!(
        (gpt["runs"].clone(), gpt["model_calls"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(
        row(&by_model, "2026-01-10T00:00:00Z", json!("claude-sonnet-4"))["cost_usd"],
        3.3
    );
    assert_eq!(
        row(&by_model, "2026-01-10T00:00:00Z", Value::Null)["running_seconds"],
        3600.0
    );
    // Per hour and tier: the hour the sandbox ran is cut at the edge (10:06 to 11:06).
    let by_hour = platform
        .get(
            &format!("/api/v1/admin/usage?{RANGE}&bucket=hour&group_by=tier"),
            Some(&admin.access),
        )
        .await
        .body;
    assert_eq!(
        row(&by_hour, "2026-01-10T10:00:00Z", json!("free"))["running_seconds"],
        3240.0
    );
    assert_eq!(
        row(&by_hour, "2026-01-10T11:00:00Z", json!("free"))["running_seconds"],
        360.0
    );
    assert_eq!(by_hour["totals"], by_user["totals"]);

    // A user's own report holds their usage only.
    let own = platform
        .get(
            &format!("/api/v1/usage/report?{RANGE}&bucket=month"),
            Some(&alice.access),
        )
        .await;
    assert_eq!(own.status, 200, "{own:?}");
    assert_eq!(own.body["totals"]["cost_usd"], 4.75);
    assert_eq!(
        own.body["totals"]["cached_tokens"], 0,
        "none of bob's usage"
    );
    let bobs = platform
        .get(
            &format!("/api/v1/usage/report?{RANGE}&group_by=agent"),
            Some(&bob.access),
        )
        .await;
    assert_eq!(bobs.body["totals"]["model_calls"], 1, "{bobs:?}");
    assert!(
        !bobs.body.to_string().contains(&a.to_string()),
        "alice's agent shows to bob"
    );
    let grouped = platform
        .get(
            &format!("/api/v1/usage/report?{RANGE}&group_by=user"),
            Some(&bob.access),
        )
        .await;
    assert_eq!(grouped.status, 422, "{grouped:?}");
    for bad in [
        "bucket=week",
        "from=yesterday",
        "from=2026-03-01&to=2026-01-01",
        "group_by=colour",
    ] {
        let answer = platform
            .get(&format!("/api/v1/admin/usage?{bad}"), Some(&carol.access))
            .await;
        assert_eq!(answer.status, 422, "{bad}: {answer:?}");
    }

    // A price change, then a usage replay: cost changes, nothing else does.
    let facts = usage_rows(&platform).await;
    std::fs::write(&prices, format!("{JANUARY_PRICES}{FEBRUARY_PRICE}")).expect("prices");
    let mut replayed = replay(&platform, &["--projection", "usage"], "replay-usage");
    assert!(
        replayed.wait_success(Duration::from_secs(120)).await,
        "{}",
        replayed.log_text()
    );
    assert_eq!(
        usage_rows(&platform).await,
        facts,
        "the replay rebuilt the same facts"
    );
    platform.start_again(&[]).await;
    let repriced = report_when(&platform, &carol.access, &path, |report| {
        report["totals"]["cost_usd"] != 8.05
    })
    .await;
    assert_eq!(
        row(&repriced, "2026-02-01T00:00:00Z", alice_key)["cost_usd"],
        2.5
    );
    assert_eq!(repriced["totals"]["cost_usd"], 9.3);
    assert_eq!(
        without_cost(repriced.clone()),
        without_cost(by_user.clone())
    );

    // The export, read from the log, adds up to the API's totals, cost included.
    let file = platform.dir.path().join("usage.jsonl");
    let file_arg = file.display().to_string();
    let mut export = Warren::spawn(
        &[
            "export",
            "usage",
            "--from",
            "2026-01-01",
            "--to",
            "2026-03-01",
            "--output",
            &file_arg,
        ],
        &env_of(&platform),
        platform.dir.path(),
        "export",
    );
    assert!(
        export.wait_success(Duration::from_secs(60)).await,
        "{}",
        export.log_text()
    );
    let rows: Vec<Value> = std::fs::read_to_string(&file)
        .expect("the export")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON row"))
        .collect();
    fn of<'a>(rows: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        rows.iter().filter(move |row| row["kind"] == kind)
    }
    let of_kind = |kind: &'static str| of(&rows, kind);
    let sum = |kind: &'static str, field: &str| {
        of_kind(kind)
            .map(|row| row[field].as_u64().expect("a count"))
            .sum::<u64>()
    };
    let totals = &repriced["totals"];
    assert_eq!(
        of_kind("message").count() as u64,
        totals["messages"].as_u64().expect("n")
    );
    assert_eq!(
        of_kind("run").count() as u64,
        totals["runs"].as_u64().expect("n")
    );
    assert_eq!(
        of_kind("model_call").count() as u64,
        totals["model_calls"].as_u64().expect("n")
    );
    assert_eq!(
        of_kind("deployment").count() as u64,
        totals["deployments"].as_u64().expect("n")
    );
    for (kind, field, total) in [
        ("model_call", "input_tokens", "input_tokens"),
        ("model_call", "cached_tokens", "cached_tokens"),
        ("model_call", "output_tokens", "output_tokens"),
        ("run", "input_tokens", "reported_input_tokens"),
        ("run", "duration_ms", "run_ms"),
        ("file_in", "bytes", "file_bytes_in"),
        ("file_out", "bytes", "file_bytes_out"),
    ] {
        assert_eq!(
            sum(kind, field),
            totals[total].as_u64().expect("n"),
            "{kind} {field}"
        );
    }
    let cost: f64 = of_kind("model_call")
        .map(|row| row["cost_usd"].as_f64().expect("priced"))
        .sum();
    assert!((cost - 9.3).abs() < 1e-9, "the export costs {cost}");

    // A replay from February keeps January's facts and rebuilds the rest alike.
    let mut from_february = replay(
        &platform,
        &["--projection", "usage", "--from-time", "2026-02-01"],
        "replay-february",
    );
    assert!(
        from_february.wait_success(Duration::from_secs(120)).await,
        "{}",
        from_february.log_text()
    );
    assert_eq!(usage_rows(&platform).await, facts);
    wait_until(Duration::from_secs(30), || async {
        platform.get(&path, Some(&carol.access)).await.body["totals"]["model_calls"] == 3
    })
    .await;
}
