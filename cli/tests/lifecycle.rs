//! Agents' lifecycle end to end (docs/adr/0024): the real `warren dev` (edge, projector,
//! deployer, chat worker) with `process` sandboxes (a paused agent is SIGSTOPped) and the
//! scripted model server. An agent left idle is paused, never in the middle of a run; its next
//! message resumes it, and every client following the conversation is told `resuming` before
//! the answer streams. With a cap on awake sandboxes, creating one more is refused with 503
//! `at_capacity`, and a message to a paused agent waits, queued, until a slot frees. The idle
//! pause and resume are also seen end to end in a docker sandbox (`docker pause`).

mod chat_support;
mod common;
mod edge_support;
mod sandbox_support;

use chat_support::{Chat, Frame, RunStream};
use serde_json::{Value, json};
use std::time::Duration;
use warren_commands::{CommandMeta, CommandService, codec};
use warren_domain::Actor;
use warren_domain::agent::{AgentCommand, AgentEvent};
use warren_testkit::model_server::Reply;
use warren_testkit::{wait_for, wait_until};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Short lifecycle timings: paused after 4 idle seconds, looked at every second.
const FAST: [(&str, &str); 3] = [
    ("WARREN_AGENT_IDLE_PAUSE_SECS", "4"),
    ("WARREN_CHAT_LEASE_BEAT_SECS", "1"),
    ("WARREN_DEPLOYER_RECONCILE_SECS", "1"),
];

/// The runtime process's state letter in `/proc/<pid>/stat` (`T`: stopped by a signal).
fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

async fn status(chat: &Chat, agent: &str) -> Value {
    chat.platform
        .get(
            &format!("/api/v1/agents/{agent}/status"),
            Some(&chat.user.access),
        )
        .await
        .body
}

async fn wait_status(chat: &Chat, agent: &str, wanted: &str) {
    wait_until(TIMEOUT, || async {
        status(chat, agent).await["status"] == wanted
    })
    .await;
}

/// The types of the agent's events in the log, in order.
async fn agent_events(chat: &Chat, agent: &str) -> Vec<&'static str> {
    let js = chat.platform.nats.jetstream().await;
    let stream = js.get_stream("AGENTS").await.expect("agents stream");
    let mut types = Vec::new();
    let mut seq = 1;
    while let Ok(message) = stream.get_raw_message(seq).await {
        if message.subject.as_str() == format!("agent.{agent}") {
            for envelope in codec::decode::<AgentEvent>(&message.payload).expect("decode") {
                types.push(envelope.event.event_type());
            }
        }
        seq += 1;
    }
    types
}

/// The frames of `stream` up to its run's terminal frame.
async fn to_the_end(stream: &mut RunStream, run_id: &str) -> Vec<Frame> {
    loop {
        let frame = stream
            .next()
            .await
            .unwrap_or_else(|| panic!("the stream ended early: {:?}", stream.frames));
        if frame.data["run_id"] == run_id && matches!(frame.kind(), "done" | "error") {
            break;
        }
    }
    stream
        .frames
        .iter()
        .filter(|frame| frame.data["run_id"] == run_id)
        .cloned()
        .collect()
}

/// Where the first frame of `kind` (and `status`, for status frames) is.
fn position(frames: &[Frame], kind: &str, status: Option<&str>) -> Option<usize> {
    frames.iter().position(|frame| {
        frame.kind() == kind && status.is_none_or(|status| frame.data["status"] == status)
    })
}

#[tokio::test]
async fn an_idle_agent_is_paused_but_never_mid_run_and_its_next_message_resumes_it_first() {
    let chat = Chat::start(&FAST).await;
    let agent = chat.agent_id.clone();

    // (1) A run longer than the idle time keeps the agent running.
    chat.model.push(Reply::tool_call(
        "shell",
        json!({"command": "sleep 6; echo slept"}),
    ));
    chat.model.push(Reply::text("Slept well."));
    let mut first = chat.send("sleep for six seconds").await;
    let conversation_id = first.until("queued").await.data["conversation_id"]
        .as_str()
        .expect("conversation id")
        .to_owned();
    first.until("tool_use").await;
    let watch = async {
        loop {
            assert_eq!(
                status(&chat, &agent).await["status"],
                "running",
                "the agent was paused during a run"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let done = tokio::select! {
        done = first.finish() => done,
        _ = watch => unreachable!(),
    };
    assert_eq!(done.data["text"], "Slept well.", "{:?}", first.frames);
    let cursor = done.id.expect("cursor");

    // (2) Idle for 4 s: paused, in the log and for real (the runtime is stopped by a signal).
    wait_status(&chat, &agent, "paused").await;
    let pid = chat.agent_pid();
    wait_until(TIMEOUT, || async { process_state(pid) == Some('T') }).await;
    assert!(
        agent_events(&chat, &agent)
            .await
            .ends_with(&["AgentPaused"]),
        "{:?}",
        agent_events(&chat, &agent).await
    );

    // (3) The next message resumes it: its sender and a client following the conversation are
    // told `resuming` before the answer streams; the answer is the usual one.
    let mut follower = chat.follow(&conversation_id, Some(cursor)).await;
    chat.model.push(Reply::text("Awake again."));
    let mut second = chat.send("are you there?").await;
    let run_id = second.until("queued").await.data["run_id"]
        .as_str()
        .expect("run id")
        .to_owned();
    let frames = to_the_end(&mut second, &run_id).await;
    let resuming = position(&frames, "status", Some("resuming"));
    let text = position(&frames, "text", None);
    assert!(
        resuming.is_some() && resuming < text,
        "resuming comes first: {frames:?}"
    );
    assert_eq!(
        position(&frames, "status", None),
        resuming,
        "no other status before it: {frames:?}"
    );
    let done = frames.last().expect("terminal frame");
    assert_eq!(done.kind(), "done", "{frames:?}");
    assert_eq!(done.data["text"], "Awake again.");
    // The same runtime runs again (checked before it could be idle again).
    assert_ne!(process_state(pid), Some('T'));
    assert_eq!(chat.agent_pid(), pid, "resumed, not restarted");
    let followed = to_the_end(&mut follower, &run_id).await;
    assert!(
        position(&followed, "status", Some("resuming")) < position(&followed, "text", None),
        "the follower is told too: {followed:?}"
    );

    // The platform recorded the resume after the pause.
    let events = agent_events(&chat, &agent).await;
    let paused = events.iter().position(|e| *e == "AgentPaused");
    let resumed = events.iter().position(|e| *e == "AgentResumed");
    assert!(paused.is_some() && paused < resumed, "{events:?}");
}

#[tokio::test]
async fn the_status_reports_what_the_sandbox_uses() {
    let chat = Chat::start(&[("WARREN_DEPLOYER_RECONCILE_SECS", "1")]).await;
    let agent = chat.agent_id.clone();
    std::fs::write(chat.workspace().join("notes.txt"), vec![b'x'; 100_000]).expect("a file");
    // CPU needs two looks at the runtime.
    let figures = wait_for(TIMEOUT, || async {
        let status = status(&chat, &agent).await;
        status["cpu_percent"].is_number().then_some(status)
    })
    .await;
    assert_eq!(figures["status"], "running");
    assert!(figures["uptime_secs"].is_u64(), "{figures}");
    assert!(
        figures["memory_bytes"]
            .as_u64()
            .is_some_and(|m| m > 1 << 20),
        "{figures}"
    );
    assert!(
        figures["disk_bytes"].as_u64().is_some_and(|d| d >= 100_000),
        "{figures}"
    );
    assert!(figures["measured_at"].is_string(), "{figures}");
}

#[tokio::test]
async fn past_the_sandbox_cap_creating_is_refused_and_a_message_to_a_paused_agent_waits_for_a_slot()
{
    let chat = Chat::start(&[
        ("WARREN_MAX_SANDBOXES", "1"),
        ("WARREN_AGENT_IDLE_PAUSE_SECS", "0"),
        ("WARREN_DEPLOYER_RECONCILE_SECS", "1"),
        ("WARREN_TIER_FREE_MAX_AGENTS", "5"),
    ])
    .await;
    let create = || async {
        chat.platform
            .post(
                "/api/v1/agents",
                Some(&chat.user.access),
                json!({"name": "Another"}),
            )
            .await
    };

    // (1) One sandbox runs: a second agent is refused.
    let refused = create().await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.body["error"]["code"], "at_capacity");
    assert_eq!(refused.body["error"]["details"]["limit"], 1);

    // (2) Paused (as the idle pause would), the first agent frees its slot: the second one is
    // created and runs.
    let js = chat.platform.nats.jetstream().await;
    let commands = CommandService::open(js).await.expect("the log");
    commands
        .agents
        .execute(
            &chat.agent_id,
            AgentCommand::PauseAgent,
            &CommandMeta::new(Actor::System("lifecycle-test".into())),
        )
        .await
        .expect("pause");
    wait_status(&chat, &chat.agent_id, "paused").await;
    let pid = chat.agent_pid();
    wait_until(TIMEOUT, || async { process_state(pid) == Some('T') }).await;
    let created = create().await;
    assert_eq!(created.status, 201, "{created:?}");
    let second = created.body["id"].as_str().expect("id").to_owned();
    wait_status(&chat, &second, "running").await;

    // (3) A message to the paused agent is accepted and waits, queued, told `at_capacity`.
    chat.model.push(Reply::text("Worth the wait."));
    let mut run = chat.send("hello?").await;
    let run_id = run.until("queued").await.data["run_id"]
        .as_str()
        .expect("run id")
        .to_owned();
    let waiting = run.until("status").await;
    assert_eq!(waiting.data["status"], "at_capacity", "{:?}", run.frames);
    assert_eq!(status(&chat, &chat.agent_id).await["status"], "paused");
    assert_eq!(process_state(pid), Some('T'));
    assert_eq!(chat.model.request_count(), 0, "nothing ran yet");

    // (4) Stopping the other agent frees the slot: the paused one resumes and answers.
    let stopped = chat
        .platform
        .post(
            &format!("/api/v1/agents/{second}/stop"),
            Some(&chat.user.access),
            json!({}),
        )
        .await;
    assert_eq!(stopped.status, 202, "{stopped:?}");
    let frames = to_the_end(&mut run, &run_id).await;
    let at_capacity = position(&frames, "status", Some("at_capacity"));
    let resuming = position(&frames, "status", Some("resuming"));
    let text = position(&frames, "text", None);
    assert!(
        at_capacity < resuming && resuming < text,
        "at_capacity, then resuming, then the answer: {frames:?}"
    );
    let done = frames.last().expect("terminal frame");
    assert_eq!(done.kind(), "done", "{frames:?}");
    assert_eq!(done.data["text"], "Worth the wait.");
    assert_eq!(status(&chat, &chat.agent_id).await["status"], "running");
}

#[tokio::test]
async fn an_idle_docker_sandbox_is_paused_and_its_next_message_unpauses_it_first() {
    sandbox_support::ensure_image().await;
    let net = sandbox_support::SandboxNet::new(common::free_port());
    let mut env: Vec<(&str, String)> = net.env();
    env.extend(FAST.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let chat = Chat::start(&env).await;
    let agent = chat.agent_id.clone();
    let container = sandbox_support::container(&agent);
    let info = |field: &'static str| {
        let container = container.clone();
        move || sandbox_support::inspect(&container).map(|info| info["State"][field].clone())
    };
    let started_at = info("StartedAt")();

    // A first answer, then 4 idle seconds: the agent is paused and so is its container.
    chat.model.push(Reply::text("Hello."));
    let mut first = chat.send("hello").await;
    assert_eq!(first.finish().await.data["text"], "Hello.");
    wait_status(&chat, &agent, "paused").await;
    let paused = info("Paused");
    wait_until(TIMEOUT, || async { paused() == Some(Value::Bool(true)) }).await;

    // The next message thaws it: `resuming` first, then the answer from the same container.
    chat.model.push(Reply::text("Awake again."));
    let mut second = chat.send("are you there?").await;
    let run_id = second.until("queued").await.data["run_id"]
        .as_str()
        .expect("run id")
        .to_owned();
    let frames = to_the_end(&mut second, &run_id).await;
    let resuming = position(&frames, "status", Some("resuming"));
    assert!(
        resuming.is_some() && resuming < position(&frames, "text", None),
        "resuming comes first: {frames:?}"
    );
    let done = frames.last().expect("terminal frame");
    assert_eq!(done.data["text"], "Awake again.", "{frames:?}");
    assert_eq!(
        paused(),
        Some(Value::Bool(false)),
        "the container is thawed"
    );
    assert_eq!(info("StartedAt")(), started_at, "resumed, not restarted");
}
