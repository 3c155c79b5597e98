//! The chat worker against a plain baal-agent runtime (a local server speaking that protocol: whole
//! turn `text` events, tool calls without ids or results, a bare `done`), on a real nats-server:
//! it synthesises call ids, publishes the text as deltas and still records the whole run.

use axum::Router;
use axum::response::sse::{Event, Sse};
use axum::routing::{get, post};
use futures::StreamExt;
use std::convert::Infallible;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use warren_commands::secrets::AgentTokens;
use warren_commands::{CommandMeta, CommandService, codec};
use warren_domain::Actor;
use warren_domain::agent::RuntimeKind;
use warren_domain::conversation::{ConversationCommand, ConversationEvent, LiveDelta, PostMode};
use warren_domain::ids::{AgentId, ConversationId, MessageId, RunId, UserId};
use warren_projections::capacity::Capacity;
use warren_testkit::{TestNats, wait_for};
use warren_workers::chat::{ChatSettings, ChatWorker};

mod common;

const KEY: [u8; 32] = [5; 32];

/// What a baal-agent streams for a turn that runs `ls` and answers.
fn baal_agent() -> Router {
    let chat = || async {
        let frames = [
            r#"{"type":"text","content":"Let me look."}"#,
            r#"{"type":"tool_use","name":"shell","input":"{\"command\":\"ls\"}"}"#,
            r#"{"type":"keepalive"}"#,
            r#"{"type":"text","content":"There are two files."}"#,
            r#"{"type":"done"}"#,
        ];
        Sse::new(futures::stream::iter(
            frames.map(|data| Ok::<_, Infallible>(Event::default().data(data))),
        ))
    };
    Router::new()
        .route("/chat", post(chat))
        .route("/health", get(|| async { r#"{"status":"ok"}"# }))
}

#[tokio::test]
async fn a_plain_baal_agent_run_gets_synthesised_call_ids_and_is_recorded_whole() {
    let nats = TestNats::start().await;
    let js = nats.jetstream().await;
    let commands = CommandService::start(js.clone(), &Default::default())
        .await
        .expect("command service");
    let endpoint = common::serve(baal_agent()).await;
    let meta = || CommandMeta::new(Actor::System("test".into()));
    let (user, agent) = (UserId::new(), AgentId::new());
    common::deployed_agent(&commands, agent, user, RuntimeKind::BaalAgent, endpoint).await;
    AgentTokens::open(&js, &KEY)
        .await
        .expect("tokens")
        .put(agent, "baal-token")
        .await
        .expect("token");

    let shutdown = CancellationToken::new();
    let worker = ChatWorker::build(
        nats.client().await,
        commands.clone(),
        &KEY,
        ChatSettings {
            live_ttl_header: "90s".into(),
            ..ChatSettings::default()
        },
        Capacity::unlimited(),
    )
    .await
    .expect("worker");
    let running = tokio::spawn(worker.run(shutdown.clone()));

    let conversation = ConversationId::new();
    let id = conversation.to_string();
    let mut live = nats
        .client()
        .await
        .subscribe(format!("conv.{id}.live"))
        .await
        .expect("subscribe");
    let run_id = RunId::new();
    for command in [
        ConversationCommand::StartConversation {
            conversation_id: conversation,
            user_id: user,
            agent_id: agent,
            title: None,
        },
        ConversationCommand::PostMessage {
            message_id: MessageId::new(),
            run_id,
            text: "what is here?".into(),
            client_id: None,
            client_kind: None,
            mode: PostMode::Queue,
        },
    ] {
        commands
            .conversations
            .execute(&id, command, &meta())
            .await
            .expect("conversation");
    }

    let stream = js.get_stream("CONVERSATIONS").await.expect("stream");
    let completed = wait_for(Duration::from_secs(20), || async {
        let last = stream
            .get_last_raw_message_by_subject(&format!("conv.{id}.ev"))
            .await
            .ok()?;
        let events = codec::decode::<ConversationEvent>(&last.payload).ok()?;
        events.into_iter().find_map(|e| match e.event {
            ConversationEvent::RunCompleted {
                run_id: r,
                text,
                tool_calls,
                ..
            } if r == run_id => Some((text, tool_calls)),
            _ => None,
        })
    })
    .await;
    let (text, tool_calls) = completed;
    assert_eq!(text, "Let me look.\n\nThere are two files.");
    assert_eq!(tool_calls.len(), 1);
    assert_eq!(tool_calls[0].call_id, "call_1");
    assert_eq!(tool_calls[0].name, "shell");
    assert_eq!(
        tool_calls[0].args,
        serde_json::json!("{\"command\":\"ls\"}")
    );

    // The live view saw the whole-turn texts as deltas and the call under its synthesised id.
    let mut texts = String::new();
    let mut call_ids = Vec::new();
    while texts != "Let me look.There are two files." {
        let message = tokio::time::timeout(Duration::from_secs(10), live.next())
            .await
            .expect("a delta in time")
            .expect("subscription open");
        // Each delta expires from the log after the configured time.
        let ttl = message.headers.as_ref().and_then(|h| h.get("Nats-TTL"));
        assert_eq!(ttl.map(|v| v.as_str()), Some("90s"));
        match serde_json::from_slice::<LiveDelta>(&message.payload).expect("delta") {
            LiveDelta::Token { text, .. } => texts.push_str(&text),
            LiveDelta::ToolCall { call_id, .. } => call_ids.push(call_id),
            _ => {}
        }
    }
    assert_eq!(call_ids, ["call_1"]);
    shutdown.cancel();
    running.await.expect("worker stops");
}
