//! Given/when/then tests for forking: the fact names its origin, and the fork hands its
//! history to the runtime until a run completes in it.

use super::tests::{given, message, posted, queued, run, run_started, started};
use super::*;
use ConversationCommand as C;
use ConversationEvent as E;
use uuid::Uuid;

const FORK: ConversationId = ConversationId(Uuid::from_u128(11));
const ORIGIN: ConversationId = ConversationId(Uuid::from_u128(1));
const USER: UserId = UserId(Uuid::from_u128(2));
const AGENT: AgentId = AgentId(Uuid::from_u128(3));

fn fork(after: u64) -> ConversationCommand {
    C::ForkConversation {
        conversation_id: FORK,
        user_id: USER,
        agent_id: AGENT,
        title: Some("  Try again  ".into()),
        origin_id: ORIGIN,
        after,
    }
}

fn forked() -> ConversationEvent {
    E::ConversationForked {
        conversation_id: FORK,
        user_id: USER,
        agent_id: AGENT,
        title: Some("Try again".into()),
        origin_id: ORIGIN,
        after: 7,
    }
}

#[test]
fn forking_records_the_origin_and_the_point_and_the_fork_hands_over_its_history() {
    let fork = given([]).when(fork(7)).then_events([forked()]);
    assert_eq!(fork.id, Some(FORK));
    assert_eq!(
        fork.forked_from,
        Some(ForkOrigin {
            origin_id: ORIGIN,
            after: 7
        })
    );
    assert!(fork.hand_over_history);
    assert!(!given([started()]).state().hand_over_history);
}

#[test]
fn a_fork_of_itself_at_no_point_or_over_an_existing_conversation_is_refused() {
    given([]).when(fork(0)).then_invalid("after");
    given([])
        .when(C::ForkConversation {
            conversation_id: ORIGIN,
            user_id: USER,
            agent_id: AGENT,
            title: None,
            origin_id: ORIGIN,
            after: 3,
        })
        .then_invalid("origin_id");
    given([forked()]).when(fork(7)).then_error("already_exists");
}

#[test]
fn the_first_completed_run_or_a_clear_ends_the_hand_over_but_a_failed_run_does_not() {
    let on = |events: Vec<ConversationEvent>| given(events).state().hand_over_history;
    let mut running = vec![forked(), posted(1, 0), queued(1, 0), run_started(1)];
    for event in &mut running {
        if let E::MessagePosted {
            conversation_id, ..
        }
        | E::RunQueued {
            conversation_id, ..
        }
        | E::RunStarted {
            conversation_id, ..
        } = event
        {
            *conversation_id = FORK;
        }
    }
    let failed = E::RunFailed {
        conversation_id: FORK,
        run_id: run(1),
        code: "model_unreachable".into(),
        message: "no".into(),
        retryable: true,
    };
    let completed = E::RunCompleted {
        conversation_id: FORK,
        run_id: run(1),
        reply_id: message(9),
        user_id: USER,
        agent_id: AGENT,
        text: "hi".into(),
        tool_calls: vec![],
        usage: TokenUsage::default(),
        duration_ms: 1,
        model: None,
        provider: None,
    };
    assert!(on([running.clone(), vec![failed]].concat()));
    assert!(!on([running, vec![completed]].concat()));
    assert!(!on(vec![
        forked(),
        E::HistoryCleared {
            conversation_id: FORK
        }
    ]));
}

#[test]
fn the_fork_fact_keeps_its_stored_form() {
    assert_eq!(
        serde_json::to_value(forked()).expect("json"),
        serde_json::json!({"type": "ConversationForked", "data": {
            "conversation_id": "00000000-0000-0000-0000-00000000000b",
            "user_id": "00000000-0000-0000-0000-000000000002",
            "agent_id": "00000000-0000-0000-0000-000000000003",
            "title": "Try again",
            "origin_id": "00000000-0000-0000-0000-000000000001",
            "after": 7,
        }})
    );
}
