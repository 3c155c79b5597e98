//! Given/when/then tests for the Conversation aggregate: every command, accepted and refused,
//! and the queue's positions.

use super::*;
use crate::testing::{self, Given};
use ConversationCommand as C;
use ConversationEvent as E;
use uuid::Uuid;

pub(super) fn given(events: impl IntoIterator<Item = ConversationEvent>) -> Given<Conversation> {
    testing::given(events)
}

pub(super) const CONV: ConversationId = ConversationId(Uuid::from_u128(1));
pub(super) const USER: UserId = UserId(Uuid::from_u128(2));
pub(super) const AGENT: AgentId = AgentId(Uuid::from_u128(3));
pub(super) const REPLY: MessageId = MessageId(Uuid::from_u128(99));

pub(super) fn run(n: u128) -> RunId {
    RunId(Uuid::from_u128(100 + n))
}

pub(super) fn message(n: u128) -> MessageId {
    MessageId(Uuid::from_u128(200 + n))
}

pub(super) fn started() -> ConversationEvent {
    E::ConversationStarted {
        conversation_id: CONV,
        user_id: USER,
        agent_id: AGENT,
        title: None,
    }
}

fn post(n: u128, mode: PostMode) -> ConversationCommand {
    C::PostMessage {
        message_id: message(n),
        run_id: run(n),
        text: format!("message {n}"),
        client_id: Some("ws-7".into()),
        client_kind: Some("web".into()),
        mode,
    }
}

pub(super) fn posted(n: u128, position: u32) -> ConversationEvent {
    E::MessagePosted {
        conversation_id: CONV,
        message_id: message(n),
        agent_id: AGENT,
        user_id: USER,
        text: format!("message {n}"),
        client_id: Some("ws-7".into()),
        client_kind: Some("web".into()),
        run_id: run(n),
        position,
    }
}

pub(super) fn queued(n: u128, position: u32) -> ConversationEvent {
    E::RunQueued {
        conversation_id: CONV,
        run_id: run(n),
        message_id: message(n),
        position,
    }
}

pub(super) fn run_started(n: u128) -> ConversationEvent {
    E::RunStarted {
        conversation_id: CONV,
        run_id: run(n),
        worker_id: "chat-1".into(),
    }
}

fn cancelled(n: u128, reason: CancelReason) -> ConversationEvent {
    E::RunCancelled {
        conversation_id: CONV,
        run_id: run(n),
        reason,
    }
}

/// Started, with run 1 running and runs 2 and 3 waiting.
fn busy() -> Vec<ConversationEvent> {
    vec![
        started(),
        posted(1, 0),
        queued(1, 0),
        run_started(1),
        posted(2, 1),
        queued(2, 1),
        posted(3, 2),
        queued(3, 2),
    ]
}

fn queue_of(conversation: &Conversation) -> Vec<(RunId, bool)> {
    conversation
        .runs
        .iter()
        .map(|slot| (slot.run_id, slot.is_running()))
        .collect()
}

fn complete(n: u128) -> ConversationCommand {
    C::CompleteRun {
        run_id: run(n),
        reply_id: REPLY,
        text: "done".into(),
        tool_calls: vec![ToolCall {
            call_id: "call_1".into(),
            name: "shell".into(),
            args: serde_json::json!({"cmd": "ls"}),
            output: "README.md".into(),
            ok: true,
        }],
        usage: TokenUsage {
            input_tokens: 120,
            output_tokens: 30,
        },
        duration_ms: 1500,
        model: None,
        provider: None,
    }
}

fn fail(n: u128) -> ConversationCommand {
    C::FailRun {
        run_id: run(n),
        code: "LLM_TIMEOUT".into(),
        message: "the model did not answer".into(),
        retryable: true,
    }
}

// --- start and rename ---

#[test]
fn starting_a_conversation_records_user_agent_and_title() {
    let conversation = given([])
        .when(C::StartConversation {
            conversation_id: CONV,
            user_id: USER,
            agent_id: AGENT,
            title: Some("  ".into()),
        })
        .then_events([started()]);
    assert_eq!(conversation.id, Some(CONV));
    assert_eq!(conversation.title, None);
}

#[test]
fn starting_twice_is_refused() {
    given([started()])
        .when(C::StartConversation {
            conversation_id: CONV,
            user_id: USER,
            agent_id: AGENT,
            title: None,
        })
        .then_error("already_exists");
}

#[test]
fn any_other_command_before_start_is_not_found() {
    given([])
        .when(post(1, PostMode::Queue))
        .then_error("not_found");
}

#[test]
fn renaming_sets_the_trimmed_title_and_a_same_title_is_a_no_op() {
    let renamed = E::ConversationRenamed {
        conversation_id: CONV,
        title: "Trip plans".into(),
    };
    let conversation = given([started()])
        .when(C::RenameConversation {
            title: " Trip plans ".into(),
        })
        .then_events([renamed.clone()]);
    assert_eq!(conversation.title.as_deref(), Some("Trip plans"));
    given([started(), renamed])
        .when(C::RenameConversation {
            title: "Trip plans".into(),
        })
        .then_nothing();
}

#[test]
fn a_blank_title_is_refused() {
    given([started()])
        .when(C::RenameConversation { title: " ".into() })
        .then_error("invalid_input");
}

// --- posting and queueing ---

#[test]
fn a_message_in_an_idle_conversation_is_next_up() {
    let conversation = given([started()])
        .when(post(1, PostMode::Queue))
        .then_events([posted(1, 0), queued(1, 0)]);
    assert_eq!(conversation.next_up().map(|r| r.run_id), Some(run(1)));
}

#[test]
fn messages_behind_a_running_run_queue_with_growing_positions() {
    let conversation = given(busy())
        .when(post(4, PostMode::Queue))
        .then_events([posted(4, 3), queued(4, 3)]);
    assert_eq!(conversation.position(run(4)), Some(3));
}

#[test]
fn an_interrupt_cancels_the_running_run_and_goes_next() {
    let conversation = given(busy())
        .when(post(4, PostMode::Interrupt))
        .then_events([
            posted(4, 0),
            cancelled(1, CancelReason::Interrupted),
            queued(4, 0),
        ]);
    assert_eq!(
        queue_of(&conversation),
        vec![(run(4), false), (run(2), false), (run(3), false)]
    );
}

#[test]
fn an_interrupt_with_nothing_running_just_goes_first() {
    let history = vec![started(), posted(1, 0), queued(1, 0)];
    let conversation = given(history)
        .when(post(2, PostMode::Interrupt))
        .then_events([posted(2, 0), queued(2, 0)]);
    assert_eq!(conversation.next_up().map(|r| r.run_id), Some(run(2)));
}

#[test]
fn a_blank_message_is_refused() {
    let mut command = post(1, PostMode::Queue);
    if let C::PostMessage { text, .. } = &mut command {
        *text = "\n ".into();
    }
    given([started()]).when(command).then_error("invalid_input");
}

#[test]
fn a_run_id_already_in_the_queue_is_refused() {
    given(busy())
        .when(post(2, PostMode::Queue))
        .then_error("duplicate_run");
}

#[test]
fn the_queue_has_a_limit() {
    let mut history = vec![started()];
    for n in 0..MAX_PENDING_RUNS as u128 {
        history.push(queued(n, n as u32));
    }
    let error = given(history)
        .when(post(500, PostMode::Queue))
        .then_error("queue_full");
    assert_eq!(error.to_string(), "the queue is full (20 runs)");
}

// --- running ---

#[test]
fn a_worker_starts_the_run_at_the_head() {
    let conversation = given([started(), posted(1, 0), queued(1, 0)])
        .when(C::StartRun {
            run_id: run(1),
            worker_id: "chat-1".into(),
        })
        .then_events([run_started(1)]);
    assert_eq!(conversation.running().map(|r| r.run_id), Some(run(1)));
}

#[test]
fn nothing_starts_while_a_run_is_running() {
    given(busy())
        .when(C::StartRun {
            run_id: run(2),
            worker_id: "chat-2".into(),
        })
        .then_error("run_in_progress");
}

#[test]
fn only_the_head_of_the_queue_may_start() {
    let history = vec![
        started(),
        posted(1, 0),
        queued(1, 0),
        posted(2, 1),
        queued(2, 1),
    ];
    let error = given(history)
        .when(C::StartRun {
            run_id: run(2),
            worker_id: "chat-1".into(),
        })
        .then_error("run_not_next");
    assert_eq!(
        error,
        ConversationError::RunNotNext {
            run_id: run(2),
            next: run(1)
        }
    );
}

#[test]
fn starting_an_unknown_run_or_with_a_blank_worker_is_refused() {
    given([started(), posted(1, 0), queued(1, 0)])
        .when(C::StartRun {
            run_id: run(9),
            worker_id: "chat-1".into(),
        })
        .then_error("run_not_active");
    given([started(), posted(1, 0), queued(1, 0)])
        .when(C::StartRun {
            run_id: run(1),
            worker_id: " ".into(),
        })
        .then_error("invalid_input");
}

#[test]
fn completing_the_running_run_records_the_reply_and_frees_the_queue() {
    let conversation = given(busy())
        .when(complete(1))
        .then_events([E::RunCompleted {
            conversation_id: CONV,
            run_id: run(1),
            reply_id: REPLY,
            user_id: USER,
            agent_id: AGENT,
            text: "done".into(),
            tool_calls: vec![ToolCall {
                call_id: "call_1".into(),
                name: "shell".into(),
                args: serde_json::json!({"cmd": "ls"}),
                output: "README.md".into(),
                ok: true,
            }],
            usage: TokenUsage {
                input_tokens: 120,
                output_tokens: 30,
            },
            duration_ms: 1500,
            model: None,
            provider: None,
        }]);
    assert_eq!(conversation.next_up().map(|r| r.run_id), Some(run(2)));
    assert_eq!(conversation.position(run(3)), Some(1));
}

#[test]
fn completing_a_waiting_finished_or_cancelled_run_is_not_active() {
    given(busy()).when(complete(2)).then_error("run_not_active");
    let mut finished = busy();
    finished.push(cancelled(1, CancelReason::Interrupted));
    given(finished)
        .when(complete(1))
        .then_error("run_not_active");
}

#[test]
fn failing_the_running_run_removes_it() {
    let conversation = given(busy()).when(fail(1)).then_events([E::RunFailed {
        conversation_id: CONV,
        run_id: run(1),
        code: "LLM_TIMEOUT".into(),
        message: "the model did not answer".into(),
        retryable: true,
    }]);
    assert_eq!(conversation.running(), None);
}

#[test]
fn failing_a_run_that_is_not_running_is_not_active() {
    given(busy()).when(fail(3)).then_error("run_not_active");
}

// --- cancel ---

#[test]
fn cancelling_a_waiting_run_removes_it_and_shifts_later_positions() {
    let conversation = given(busy())
        .when(C::RequestCancel { run_id: run(2) })
        .then_events([cancelled(2, CancelReason::Requested)]);
    assert_eq!(conversation.position(run(3)), Some(1));
}

#[test]
fn cancelling_the_running_run_asks_its_worker_once() {
    let requested = E::CancelRequested {
        conversation_id: CONV,
        run_id: run(1),
    };
    let conversation = given(busy())
        .when(C::RequestCancel { run_id: run(1) })
        .then_events([requested.clone()]);
    assert!(conversation.running().is_some_and(|r| r.cancel_requested));

    let mut history = busy();
    history.push(requested);
    given(history)
        .when(C::RequestCancel { run_id: run(1) })
        .then_nothing();
}

#[test]
fn the_worker_confirms_the_cancel() {
    let mut history = busy();
    history.push(E::CancelRequested {
        conversation_id: CONV,
        run_id: run(1),
    });
    let conversation = given(history)
        .when(C::CancelRun { run_id: run(1) })
        .then_events([cancelled(1, CancelReason::Requested)]);
    assert_eq!(conversation.next_up().map(|r| r.run_id), Some(run(2)));
}

#[test]
fn cancelling_an_unknown_run_is_not_active() {
    given(busy())
        .when(C::RequestCancel { run_id: run(9) })
        .then_error("run_not_active");
    given(busy())
        .when(C::CancelRun { run_id: run(9) })
        .then_error("run_not_active");
}

// --- history ---

#[test]
fn history_is_cleared_when_no_run_is_running_or_waiting() {
    given([started()])
        .when(C::ClearHistory)
        .then_events([E::HistoryCleared {
            conversation_id: CONV,
        }]);
}

#[test]
fn clearing_history_is_refused_while_a_run_is_running_or_waiting() {
    given(busy())
        .when(C::ClearHistory)
        .then_error("run_in_progress");
    given([started(), posted(1, 0), queued(1, 0)])
        .when(C::ClearHistory)
        .then_error("run_in_progress");
}

// --- proactive messages ---

#[test]
fn an_agents_own_message_is_delivered_to_a_started_conversation_even_while_a_run_runs() {
    let message_id = message(77);
    let deliver = C::DeliverAgentMessage {
        message_id,
        text: "Reminder: stand up.".into(),
    };
    given(busy())
        .when(deliver.clone())
        .then_events([E::AgentMessagePosted {
            conversation_id: CONV,
            message_id,
            user_id: USER,
            agent_id: AGENT,
            text: "Reminder: stand up.".into(),
        }]);
    given([]).when(deliver).then_error("not_found");
    given([started()])
        .when(C::DeliverAgentMessage {
            message_id,
            text: "  ".into(),
        })
        .then_error("invalid_input");
}

#[test]
fn a_full_turn_folds_back_to_an_empty_queue() {
    let conversation = given([
        started(),
        posted(1, 0),
        queued(1, 0),
        run_started(1),
        cancelled(1, CancelReason::Requested),
    ])
    .state();
    assert!(conversation.runs.is_empty());
}

#[test]
fn a_queued_run_keeps_the_text_of_the_message_it_answers() {
    let conversation = given(busy()).state();
    let texts: Vec<&str> = conversation
        .runs
        .iter()
        .map(|slot| slot.text.as_str())
        .collect();
    assert_eq!(texts, ["message 1", "message 2", "message 3"]);
}
