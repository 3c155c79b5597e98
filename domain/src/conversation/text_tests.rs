//! Given/when/then tests of the text rules on every free-text field of the conversation
//! commands, the chat worker's included.

use super::*;
use crate::testing::{self, Given};
use ConversationCommand as C;
use ConversationEvent as E;
use serde_json::json;
use uuid::Uuid;

fn given(events: impl IntoIterator<Item = ConversationEvent>) -> Given<Conversation> {
    testing::given(events)
}

const CONV: ConversationId = ConversationId(Uuid::from_u128(1));
const USER: UserId = UserId(Uuid::from_u128(2));
const AGENT: AgentId = AgentId(Uuid::from_u128(3));
const RUN: RunId = RunId(Uuid::from_u128(101));
const MESSAGE: MessageId = MessageId(Uuid::from_u128(201));
/// Characters no field accepts, and characters only multi-line fields accept.
const NEVER: [&str; 4] = ["\u{0}", "\u{1b}", "\u{7}", "\u{7f}"];
const LINE_BREAKS: [&str; 3] = ["\n", "\r", "\t"];

fn start(title: &str) -> ConversationCommand {
    C::StartConversation {
        conversation_id: CONV,
        user_id: USER,
        agent_id: AGENT,
        title: Some(title.into()),
    }
}

fn started() -> Vec<ConversationEvent> {
    vec![E::ConversationStarted {
        conversation_id: CONV,
        user_id: USER,
        agent_id: AGENT,
        title: None,
    }]
}

fn post(text: &str, client_id: &str, client_kind: &str) -> ConversationCommand {
    C::PostMessage {
        message_id: MESSAGE,
        run_id: RUN,
        text: text.into(),
        client_id: Some(client_id.into()),
        client_kind: Some(client_kind.into()),
        mode: PostMode::Queue,
    }
}

/// Started, with the run posted and waiting.
fn waiting() -> Vec<ConversationEvent> {
    let mut events = started();
    events.extend([
        E::MessagePosted {
            conversation_id: CONV,
            message_id: MESSAGE,
            agent_id: AGENT,
            user_id: USER,
            text: "hi".into(),
            client_id: None,
            client_kind: None,
            run_id: RUN,
            position: 0,
        },
        E::RunQueued {
            conversation_id: CONV,
            run_id: RUN,
            message_id: MESSAGE,
            position: 0,
        },
    ]);
    events
}

/// Started, with the run running.
fn running() -> Vec<ConversationEvent> {
    let mut events = waiting();
    events.push(E::RunStarted {
        conversation_id: CONV,
        run_id: RUN,
        worker_id: "chat-1".into(),
    });
    events
}

fn call(call_id: &str, name: &str, args: serde_json::Value, output: &str) -> ToolCall {
    ToolCall {
        call_id: call_id.into(),
        name: name.into(),
        args,
        output: output.into(),
        ok: true,
    }
}

fn complete(text: &str, tool_calls: Vec<ToolCall>) -> ConversationCommand {
    C::CompleteRun {
        run_id: RUN,
        reply_id: MessageId(Uuid::from_u128(99)),
        text: text.into(),
        tool_calls,
        usage: TokenUsage::default(),
        duration_ms: 10,
    }
}

fn fail(code: &str, message: &str) -> ConversationCommand {
    C::FailRun {
        run_id: RUN,
        code: code.into(),
        message: message.into(),
        retryable: false,
    }
}

/// Asserts `command` on a state built from `events` is refused as invalid `field`.
#[track_caller]
fn refused(events: Vec<ConversationEvent>, command: ConversationCommand, field: &str) {
    match given(events).when(command).then_error("invalid_input") {
        ConversationError::InvalidInput { field: got, .. } => assert_eq!(got, field),
        other => panic!("expected invalid_input, got {other}"),
    }
}

#[test]
fn a_title_is_one_line_without_control_characters() {
    for c in NEVER.into_iter().chain(LINE_BREAKS) {
        let title = format!("Plans{c}now");
        refused(vec![], start(&title), "title");
        refused(started(), C::RenameConversation { title }, "title");
    }
    refused(vec![], start(&"t".repeat(201)), "title");
}

#[test]
fn a_message_may_span_lines_but_holds_no_other_control_character() {
    for c in NEVER {
        refused(started(), post(&format!("hi{c}"), "ws-1", "web"), "text");
    }
    refused(started(), post(&"m".repeat(32001), "ws-1", "web"), "text");
    given(started())
        .when(post("line one\n\tline two", "ws-1", "web"))
        .then_events([
            E::MessagePosted {
                conversation_id: CONV,
                message_id: MESSAGE,
                agent_id: AGENT,
                user_id: USER,
                text: "line one\n\tline two".into(),
                client_id: Some("ws-1".into()),
                client_kind: Some("web".into()),
                run_id: RUN,
                position: 0,
            },
            E::RunQueued {
                conversation_id: CONV,
                run_id: RUN,
                message_id: MESSAGE,
                position: 0,
            },
        ]);
}

#[test]
fn the_posting_clients_id_and_kind_are_one_line_without_control_characters() {
    for c in NEVER.into_iter().chain(LINE_BREAKS) {
        let bad = format!("ws{c}1");
        refused(started(), post("hi", &bad, "web"), "client_id");
        refused(started(), post("hi", "ws-1", &bad), "client_kind");
    }
    refused(
        started(),
        post("hi", "ws-1", &"k".repeat(33)),
        "client_kind",
    );
}

#[test]
fn a_worker_id_holds_no_control_character() {
    let command = C::StartRun {
        run_id: RUN,
        worker_id: "chat\u{0}1".into(),
    };
    refused(waiting(), command, "worker_id");
}

#[test]
fn a_completed_run_keeps_the_rules_in_its_reply_and_every_tool_call() {
    let fine = || call("call_1", "shell", json!({"command": "ls\n"}), "a\tb\n");
    for c in NEVER {
        let bad = format!("x{c}");
        refused(running(), complete(&bad, vec![fine()]), "text");
        let output = call("call_1", "shell", json!({}), &bad);
        refused(
            running(),
            complete("ok", vec![fine(), output]),
            "tool_calls.output",
        );
        let args = call(
            "call_1",
            "shell",
            json!({"command": ["ls", bad.clone()]}),
            "",
        );
        refused(running(), complete("ok", vec![args]), "tool_calls.args");
    }
    for c in NEVER.into_iter().chain(LINE_BREAKS) {
        let bad = format!("x{c}");
        let id = call(&bad, "shell", json!({}), "");
        refused(running(), complete("ok", vec![id]), "tool_calls.call_id");
        let name = call("call_1", &bad, json!({}), "");
        refused(running(), complete("ok", vec![name]), "tool_calls.name");
    }
    let key = call("call_1", "shell", json!({"k\u{0}": 1}), "");
    refused(running(), complete("ok", vec![key]), "tool_calls.args");
    refused(running(), complete(&"r".repeat(100_001), vec![]), "text");
}

#[test]
fn a_failed_run_has_a_one_line_code_and_a_message_without_control_characters() {
    for c in NEVER {
        refused(running(), fail(&format!("E{c}"), "m"), "code");
        refused(running(), fail("E", &format!("m{c}")), "message");
    }
    refused(running(), fail("E\nX", "m"), "code");
    refused(running(), fail("E", &"m".repeat(2001)), "message");
}

#[test]
fn text_the_chat_worker_fitted_is_always_accepted() {
    let hostile = "\u{0}\u{1b}[2J\u{7}\u{85}".repeat(30_000);
    let fitted = call(
        &text::CALL_ID.fit(&hostile),
        &text::TOOL_NAME.fit(&hostile),
        text::escape_json(&json!({"a": hostile, hostile.clone(): [hostile]})),
        &text::TOOL_OUTPUT.fit(&hostile),
    );
    let reply = text::REPLY.fit(&hostile);
    given(running())
        .when(complete(&reply, vec![fitted.clone()]))
        .then_events([E::RunCompleted {
            conversation_id: CONV,
            run_id: RUN,
            reply_id: MessageId(Uuid::from_u128(99)),
            user_id: USER,
            agent_id: AGENT,
            text: reply.clone(),
            tool_calls: vec![fitted],
            usage: TokenUsage::default(),
            duration_ms: 10,
        }]);
    let (code, message) = (
        text::FAILURE_CODE.fit(&hostile),
        text::FAILURE_MESSAGE.fit(&hostile),
    );
    given(running())
        .when(fail(&code, &message))
        .then_events([E::RunFailed {
            conversation_id: CONV,
            run_id: RUN,
            code: code.clone(),
            message: message.clone(),
            retryable: false,
        }]);
}
