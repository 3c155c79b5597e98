//! Given/when/then tests of the text rules on every free-text field of the conversation
//! commands, the chat worker's included.

use super::tests::{
    AGENT, CONV, REPLY, USER, given, message, posted, queued, run, run_started, started,
};
use super::*;
use ConversationCommand as C;
use ConversationEvent as E;
use serde_json::json;

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

fn post(text: &str, client_id: &str, client_kind: &str) -> ConversationCommand {
    C::PostMessage {
        message_id: message(1),
        run_id: run(1),
        text: text.into(),
        client_id: Some(client_id.into()),
        client_kind: Some(client_kind.into()),
        mode: PostMode::Queue,
    }
}

/// Started, with run 1 waiting.
fn waiting() -> Vec<ConversationEvent> {
    vec![started(), posted(1, 0), queued(1, 0)]
}

/// Started, with run 1 running.
fn running() -> Vec<ConversationEvent> {
    let mut events = waiting();
    events.push(run_started(1));
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
        run_id: run(1),
        reply_id: REPLY,
        text: text.into(),
        tool_calls,
        usage: TokenUsage::default(),
        duration_ms: 10,
        model: None,
        provider: None,
    }
}

fn fail(code: &str, message: &str) -> ConversationCommand {
    C::FailRun {
        run_id: run(1),
        code: code.into(),
        message: message.into(),
        retryable: false,
    }
}

#[test]
fn a_title_is_one_line_without_control_characters() {
    for c in NEVER.into_iter().chain(LINE_BREAKS) {
        let title = format!("Plans{c}now");
        given([]).when(start(&title)).then_invalid("title");
        given([started()])
            .when(C::RenameConversation { title })
            .then_invalid("title");
    }
    given([])
        .when(start(&"t".repeat(201)))
        .then_invalid("title");
}

#[test]
fn a_message_may_span_lines_but_holds_no_other_control_character() {
    for c in NEVER {
        given([started()])
            .when(post(&format!("hi{c}"), "ws-1", "web"))
            .then_invalid("text");
    }
    given([started()])
        .when(post(&"m".repeat(32001), "ws-1", "web"))
        .then_invalid("text");
    given([started()])
        .when(post("line one\n\tline two", "ws-1", "web"))
        .then_events([
            E::MessagePosted {
                conversation_id: CONV,
                message_id: message(1),
                agent_id: AGENT,
                user_id: USER,
                text: "line one\n\tline two".into(),
                client_id: Some("ws-1".into()),
                client_kind: Some("web".into()),
                run_id: run(1),
                position: 0,
            },
            queued(1, 0),
        ]);
}

#[test]
fn the_posting_clients_id_and_kind_are_one_line_without_control_characters() {
    for c in NEVER.into_iter().chain(LINE_BREAKS) {
        let bad = format!("ws{c}1");
        given([started()])
            .when(post("hi", &bad, "web"))
            .then_invalid("client_id");
        given([started()])
            .when(post("hi", "ws-1", &bad))
            .then_invalid("client_kind");
    }
    given([started()])
        .when(post("hi", "ws-1", &"k".repeat(33)))
        .then_invalid("client_kind");
}

#[test]
fn a_worker_id_holds_no_control_character() {
    given(waiting())
        .when(C::StartRun {
            run_id: run(1),
            worker_id: "chat\u{0}1".into(),
        })
        .then_invalid("worker_id");
}

#[test]
fn a_completed_run_keeps_the_rules_in_its_reply_and_every_tool_call() {
    let fine = || call("call_1", "shell", json!({"command": "ls\n"}), "a\tb\n");
    let refused = |calls: Vec<ToolCall>, field: &str| {
        given(running())
            .when(complete("ok", calls))
            .then_invalid(field);
    };
    for c in NEVER {
        let bad = format!("x{c}");
        given(running())
            .when(complete(&bad, vec![fine()]))
            .then_invalid("text");
        let output = call("call_1", "shell", json!({}), &bad);
        refused(vec![fine(), output], "tool_calls.output");
        let args = call("call_1", "shell", json!({"command": ["ls", bad]}), "");
        refused(vec![args], "tool_calls.args");
    }
    for c in NEVER.into_iter().chain(LINE_BREAKS) {
        let bad = format!("x{c}");
        refused(
            vec![call(&bad, "shell", json!({}), "")],
            "tool_calls.call_id",
        );
        refused(vec![call("call_1", &bad, json!({}), "")], "tool_calls.name");
    }
    let key = call("call_1", "shell", json!({"k\u{0}": 1}), "");
    refused(vec![key], "tool_calls.args");
    given(running())
        .when(complete(&"r".repeat(100_001), vec![]))
        .then_invalid("text");
}

#[test]
fn a_failed_run_has_a_one_line_code_and_a_message_without_control_characters() {
    for c in NEVER {
        given(running())
            .when(fail(&format!("E{c}"), "m"))
            .then_invalid("code");
        given(running())
            .when(fail("E", &format!("m{c}")))
            .then_invalid("message");
    }
    given(running())
        .when(fail("E\nX", "m"))
        .then_invalid("code");
    given(running())
        .when(fail("E", &"m".repeat(2001)))
        .then_invalid("message");
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
            run_id: run(1),
            reply_id: REPLY,
            user_id: USER,
            agent_id: AGENT,
            text: reply.clone(),
            tool_calls: vec![fitted],
            usage: TokenUsage::default(),
            duration_ms: 10,
            model: None,
            provider: None,
        }]);
    let code = text::FAILURE_CODE.fit(&hostile);
    let message = text::FAILURE_MESSAGE.fit(&hostile);
    given(running())
        .when(fail(&code, &message))
        .then_events([E::RunFailed {
            conversation_id: CONV,
            run_id: run(1),
            code,
            message,
            retryable: false,
        }]);
}
