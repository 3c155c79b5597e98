//! The `cqrs_es::Aggregate` impls are thin wrappers: `handle` yields exactly what `decide` does
//! and applies it, errors pass through, and each aggregate has its stable `TYPE`.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use uuid::Uuid;
use warren_domain::agent::Agent;
use warren_domain::conversation::{Conversation, ConversationCommand, PostMode};
use warren_domain::ids::{AgentId, ConversationId, MessageId, RunId, UserId};
use warren_domain::user::{User, UserCommand};

/// Runs a future that never waits. The wrappers' only await is an uncontended lock, so no
/// runtime is needed; a pending poll would mean a wrapper grew real I/O.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("an aggregate wrapper waited"),
    }
}

/// Handles `command` through the cqrs-es wrapper; returns the events written.
fn handle<A: Aggregate<Services = ()>>(
    state: &mut A,
    command: A::Command,
) -> Result<Vec<A::Event>, A::Error> {
    let sink = EventSink::default();
    ready(state.handle(command, &(), &sink))?;
    Ok(ready(sink.collect()))
}

#[test]
fn each_aggregate_has_its_stable_type() {
    assert_eq!(User::TYPE, "user");
    assert_eq!(Agent::TYPE, "agent");
    assert_eq!(Conversation::TYPE, "conversation");
}

#[test]
fn handle_writes_and_applies_what_decide_decides() {
    let mut conversation = Conversation::default();
    let start = ConversationCommand::StartConversation {
        conversation_id: ConversationId(Uuid::from_u128(1)),
        user_id: UserId(Uuid::from_u128(2)),
        agent_id: AgentId(Uuid::from_u128(3)),
        title: None,
    };
    let post = ConversationCommand::PostMessage {
        message_id: MessageId(Uuid::from_u128(4)),
        run_id: RunId(Uuid::from_u128(5)),
        text: "hi".into(),
        client_id: None,
        client_kind: None,
        mode: PostMode::Queue,
    };
    handle(&mut conversation, start).expect("start is accepted");
    let decided = conversation.decide(&post).expect("post is accepted");
    let written = handle(&mut conversation, post).expect("post is accepted");
    assert_eq!(written, decided);
    let types: Vec<String> = written.iter().map(DomainEvent::event_type).collect();
    assert_eq!(types, ["MessagePosted", "RunQueued"]);
    assert_eq!(written[0].event_version(), "1");
    assert_eq!(
        conversation.next_up().map(|run| run.run_id),
        Some(RunId(Uuid::from_u128(5)))
    );
}

#[test]
fn handle_passes_refusals_through_and_writes_nothing() {
    let mut user = User::default();
    let error = handle(&mut user, UserCommand::ApproveUser).expect_err("no such user");
    assert_eq!(error.code(), "not_found");
    assert_eq!(user, User::default());
}
