//! Proactive messages from a runtime reach only that agent's conversations: a hostile runtime
//! naming another agent's conversation, or no conversation at all, delivers nothing (real
//! nats-server).

use async_nats::jetstream;
use warren_commands::proactive::{self, Pending};
use warren_commands::{CommandMeta, CommandService, codec, topology};
use warren_domain::Actor;
use warren_domain::conversation::{ConversationCommand, ConversationEvent};
use warren_domain::ids::{AgentId, ConversationId, UserId};
use warren_testkit::TestNats;

async fn conversation(service: &CommandService, agent: AgentId) -> ConversationId {
    let id = ConversationId::new();
    let meta = CommandMeta::new(Actor::System("test".into()));
    service
        .conversations
        .execute(
            &id.to_string(),
            ConversationCommand::StartConversation {
                conversation_id: id,
                user_id: UserId::new(),
                agent_id: agent,
                title: None,
            },
            &meta,
        )
        .await
        .expect("start");
    id
}

fn pending(chat: impl ToString, content: &str) -> Pending {
    Pending {
        chat_id: chat.to_string(),
        content: content.to_owned(),
    }
}

#[tokio::test]
async fn a_runtime_delivers_into_its_own_agents_conversations_only() {
    let nats = TestNats::start().await;
    let js = jetstream::new(nats.client().await);
    let service = CommandService::start(js, &Default::default())
        .await
        .expect("service");
    let (mine, theirs) = (AgentId::new(), AgentId::new());
    let own = conversation(&service, mine).await;
    let other = conversation(&service, theirs).await;

    let delivered = proactive::deliver(
        &service,
        mine,
        vec![
            pending(own, "Reminder: stand up.\u{0}"),
            pending(other, "I am in your conversation"),
            pending(ConversationId::new(), "nobody's"),
            pending("not-a-uuid", "garbage"),
            pending(own, "   "),
        ],
        "chat-test",
    )
    .await;
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0].conversation_id, own);
    // Escaped, not refused: the NUL is shown, not stored.
    assert_eq!(delivered[0].text, "Reminder: stand up.\u{2400}");

    // The other agent's conversation holds its start and nothing else.
    let stream = service
        .jetstream()
        .get_stream(topology::CONVERSATIONS)
        .await
        .expect("stream");
    let last = stream
        .get_last_raw_message_by_subject(&topology::conversation_subject(&other.to_string()))
        .await
        .expect("last commit");
    let events = codec::decode::<ConversationEvent>(&last.payload).expect("commit");
    assert!(
        events
            .iter()
            .all(|e| matches!(e.event, ConversationEvent::ConversationStarted { .. })),
        "another agent's conversation was written to: {events:?}"
    );
}

#[tokio::test]
async fn one_take_delivers_a_bounded_number_of_bounded_messages() {
    let nats = TestNats::start().await;
    let js = jetstream::new(nats.client().await);
    let service = CommandService::start(js, &Default::default())
        .await
        .expect("service");
    let agent = AgentId::new();
    let own = conversation(&service, agent).await;
    let mut flood: Vec<Pending> = (0..proactive::MAX_PER_TAKE * 3)
        .map(|n| pending(own, &format!("message {n}")))
        .collect();
    flood[0].content = "x".repeat(proactive::MAX_CHARS * 10);
    let delivered = proactive::deliver(&service, agent, flood, "chat-test").await;
    assert_eq!(delivered.len(), proactive::MAX_PER_TAKE);
    assert_eq!(delivered[0].text.chars().count(), proactive::MAX_CHARS);
    assert_eq!(delivered[1].text, "message 1");
}
