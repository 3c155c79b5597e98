//! What the chat worker tells a runtime about the model (ADR 23), on a real nats-server: only
//! the protocol of the user's own key, never a key or a URL. A runtime here records every
//! `POST /chat` body it is sent.

use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::routing::{get, post};
use serde_json::Value;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use warren_commands::secrets::{AgentTokens, ProviderKeys};
use warren_commands::{CommandMeta, CommandService, codec};
use warren_domain::Actor;
use warren_domain::agent::RuntimeKind;
use warren_domain::conversation::{ConversationCommand, ConversationEvent, PostMode};
use warren_domain::ids::{AgentId, ConnectionId, ConversationId, KeyId, MessageId, RunId, UserId};
use warren_domain::user::{ApprovalMode, AuthKind, AuthMethod, Provider, UserCommand};
use warren_projections::capacity::Capacity;
use warren_testkit::{TestNats, wait_for};
use warren_workers::chat::{ChatSettings, ChatWorker};

mod common;

const KEY: [u8; 32] = [6; 32];
const SECRET: &str = "sk-ant-the-users-own-secret-0123";

type Bodies = Arc<Mutex<Vec<Value>>>;

/// A runtime that records each `POST /chat` body and answers `done` at once.
fn recording_runtime(bodies: Bodies) -> Router {
    async fn chat(
        State(bodies): State<Bodies>,
        axum::Json(body): axum::Json<Value>,
    ) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
        bodies.lock().unwrap_or_else(|p| p.into_inner()).push(body);
        Sse::new(futures::stream::iter([Ok(
            Event::default().data(r#"{"type":"done","text":"ok"}"#)
        )]))
    }
    Router::new()
        .route("/chat", post(chat))
        .route("/health", get(|| async { r#"{"status":"ok"}"# }))
        .with_state(bodies)
}

/// Posts `text` in a new conversation of `user` with `agent` and waits for its run's outcome.
async fn run_once(commands: &CommandService, user: UserId, agent: AgentId, text: &str) {
    let conversation = ConversationId::new();
    let id = conversation.to_string();
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
            text: text.into(),
            client_id: None,
            client_kind: None,
            mode: PostMode::Queue,
        },
    ] {
        commands
            .conversations
            .execute(&id, command, &CommandMeta::new(Actor::User(user)))
            .await
            .expect("conversation");
    }
    let stream = commands
        .jetstream()
        .get_stream("CONVERSATIONS")
        .await
        .expect("stream");
    let outcome = wait_for(Duration::from_secs(20), || async {
        let last = stream
            .get_last_raw_message_by_subject(&format!("conv.{id}.ev"))
            .await
            .ok()?;
        let events = codec::decode::<ConversationEvent>(&last.payload).ok()?;
        events.into_iter().find_map(|e| match e.event {
            ConversationEvent::RunCompleted { .. } | ConversationEvent::RunFailed { .. } => {
                Some(e.event)
            }
            _ => None,
        })
    })
    .await;
    assert!(
        matches!(outcome, ConversationEvent::RunCompleted { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_runtime_is_told_the_protocol_of_the_users_key_and_never_the_key_or_its_url() {
    let nats = TestNats::start().await;
    let js = nats.jetstream().await;
    let commands = CommandService::start(js.clone(), &Default::default())
        .await
        .expect("command service");
    let bodies = Bodies::default();
    let endpoint = common::serve(recording_runtime(bodies.clone())).await;

    // A user with an Anthropic key at a custom URL (its secret in the store, as the edge
    // keeps it), and a running agent of theirs.
    let (user, agent, key_id) = (UserId::new(), AgentId::new(), KeyId::new());
    let own = || CommandMeta::new(Actor::User(user));
    for command in [
        UserCommand::RegisterUser {
            user_id: user,
            email: Some("ada@example.test".into()),
            display_name: None,
            avatar_url: None,
            auth: AuthMethod {
                connection_id: ConnectionId::new(),
                kind: AuthKind::Email,
                external_id: "ada@example.test".into(),
            },
            approval: ApprovalMode::Open,
            is_admin: false,
        },
        UserCommand::SetProviderKey {
            key_id,
            provider: Provider::Anthropic,
            base_url: Some("https://llm.internal.example/v1".into()),
            label: None,
            fingerprint: "sk-a…0123".into(),
        },
    ] {
        commands
            .users
            .execute(&user.to_string(), command, &own())
            .await
            .expect("user");
    }
    ProviderKeys::open(&js, &KEY)
        .await
        .expect("provider keys")
        .put(user, key_id, SECRET)
        .await
        .expect("secret");
    common::deployed_agent(&commands, agent, user, RuntimeKind::Warren, endpoint).await;
    AgentTokens::open(&js, &KEY)
        .await
        .expect("tokens")
        .put(agent, "agent-token")
        .await
        .expect("token");

    let shutdown = CancellationToken::new();
    let worker = ChatWorker::build(
        nats.client().await,
        commands.clone(),
        &KEY,
        ChatSettings::default(),
        Capacity::unlimited(),
    )
    .await
    .expect("worker");
    let running = tokio::spawn(worker.run(shutdown.clone()));

    run_once(&commands, user, agent, "on my key").await;
    commands
        .users
        .execute(
            &user.to_string(),
            UserCommand::RemoveProviderKey { key_id },
            &own(),
        )
        .await
        .expect("key removed");
    run_once(&commands, user, agent, "on the platform's").await;

    let bodies = bodies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    // With a key of their own: its protocol, nothing else of it.
    assert_eq!(bodies[0]["message"], "on my key");
    assert_eq!(bodies[0]["provider"], "anthropic");
    // Without: the runtime's configured protocol (the platform default's).
    assert_eq!(bodies[1]["message"], "on the platform's");
    assert!(bodies[1].get("provider").is_none(), "{}", bodies[1]);
    for body in &bodies {
        for field in ["api_key", "base_url"] {
            assert!(body.get(field).is_none(), "{field} sent: {body}");
        }
        let text = body.to_string();
        assert!(
            !text.contains(SECRET) && !text.contains("llm.internal.example"),
            "{text}"
        );
    }
    shutdown.cancel();
    running.await.expect("worker stops");
}
