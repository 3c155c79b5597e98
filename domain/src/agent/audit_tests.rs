//! Given/when/then tests of the audit commands: an exec asked of a running agent, its outcome,
//! and file uploads.

use super::tests::{AGENT, OWNER, created, given, running};
use super::*;
use AgentCommand as C;
use AgentEvent as E;

const EXEC: ExecId = ExecId(Uuid::from_u128(20));

fn exec(command: &str, cwd: Option<&str>) -> AgentCommand {
    C::RequestExec {
        exec_id: EXEC,
        user_id: OWNER,
        command: command.into(),
        cwd: cwd.map(Into::into),
        timeout_ms: Some(5_000),
    }
}

fn outcome(exit_code: Option<i32>, failure: Option<ExecFailure>) -> AgentCommand {
    C::RecordExecOutcome {
        exec_id: EXEC,
        exit_code,
        signal: None,
        timed_out: false,
        failure,
    }
}

fn upload(path: &str) -> AgentCommand {
    C::RecordFileUpload {
        user_id: OWNER,
        path: path.into(),
        size: 42,
    }
}

fn with(mut events: Vec<AgentEvent>, more: AgentEvent) -> Vec<AgentEvent> {
    events.push(more);
    events
}

#[test]
fn an_exec_on_a_running_agent_is_recorded_verbatim_and_changes_nothing_else() {
    let before = given(running()).state();
    let agent = given(running())
        .when(exec("  echo hi\n  exit 3", Some("src")))
        .then_events([E::ExecRequested {
            agent_id: AGENT,
            exec_id: EXEC,
            user_id: OWNER,
            command: "  echo hi\n  exit 3".into(),
            cwd: Some("src".into()),
            timeout_ms: Some(5_000),
        }]);
    assert_eq!(agent, before);
}

#[test]
fn an_exec_needs_a_running_agent() {
    given(created())
        .when(exec("ls", None))
        .then_error("invalid_state");
    let stopped = with(running(), E::AgentStopped { agent_id: AGENT });
    given(stopped)
        .when(exec("ls", None))
        .then_error("invalid_state");
    let deleted = with(running(), E::AgentDeleted { agent_id: AGENT });
    given(deleted).when(exec("ls", None)).then_error("deleted");
    given([]).when(exec("ls", None)).then_error("not_found");
}

#[test]
fn an_exec_command_and_cwd_keep_their_text_rules() {
    given(running())
        .when(exec("  ", None))
        .then_invalid("command");
    given(running())
        .when(exec("echo \u{1b}[2J", None))
        .then_invalid("command");
    given(running())
        .when(exec(&"x".repeat(16_001), None))
        .then_invalid("command");
    given(running())
        .when(exec("ls", Some("a\nb")))
        .then_invalid("cwd");
}

#[test]
fn an_exec_outcome_is_recorded_even_after_the_agent_stopped() {
    let stopped = with(running(), E::AgentStopped { agent_id: AGENT });
    given(stopped)
        .when(outcome(Some(3), None))
        .then_events([E::ExecFinished {
            agent_id: AGENT,
            exec_id: EXEC,
            exit_code: Some(3),
            signal: None,
            timed_out: false,
            failure: None,
        }]);
    given(running())
        .when(outcome(None, Some(ExecFailure::ClientGone)))
        .then_events([E::ExecFinished {
            agent_id: AGENT,
            exec_id: EXEC,
            exit_code: None,
            signal: None,
            timed_out: false,
            failure: Some(ExecFailure::ClientGone),
        }]);
}

#[test]
fn an_upload_is_recorded_with_its_trimmed_path_and_the_path_keeps_its_rule() {
    given(running())
        .when(upload(" data/in.csv "))
        .then_events([E::FileUploaded {
            agent_id: AGENT,
            user_id: OWNER,
            path: "data/in.csv".into(),
            size: 42,
        }]);
    given(running()).when(upload(" ")).then_invalid("path");
    given(running())
        .when(upload("a\u{0}b"))
        .then_invalid("path");
    let deleted = with(running(), E::AgentDeleted { agent_id: AGENT });
    given(deleted).when(upload("a")).then_error("deleted");
}

#[test]
fn owners_record_execs_and_uploads_and_only_the_platform_their_outcome() {
    use crate::Authority;
    let requested = E::ExecRequested {
        agent_id: AGENT,
        exec_id: EXEC,
        user_id: OWNER,
        command: "ls".into(),
        cwd: None,
        timeout_ms: None,
    };
    let finished = E::ExecFinished {
        agent_id: AGENT,
        exec_id: EXEC,
        exit_code: Some(0),
        signal: None,
        timed_out: false,
        failure: None,
    };
    let uploaded = E::FileUploaded {
        agent_id: AGENT,
        user_id: OWNER,
        path: "a".into(),
        size: 1,
    };
    assert_eq!(requested.authority(), Authority::Subject);
    assert_eq!(uploaded.authority(), Authority::Subject);
    assert_eq!(finished.authority(), Authority::Platform);
}

fn metered(model: &str) -> AgentCommand {
    C::MeterModelUsage {
        provider: crate::user::Provider::Openrouter,
        model: model.into(),
        own_key: true,
        input_tokens: 120,
        output_tokens: 7,
        cached_input_tokens: 0,
    }
}

#[test]
fn a_metered_model_call_counts_for_the_owner_whatever_the_agents_status() {
    let event = E::ModelUsageMetered {
        agent_id: AGENT,
        user_id: OWNER,
        provider: crate::user::Provider::Openrouter,
        model: "qwen3-coder-next".into(),
        own_key: true,
        input_tokens: 120,
        output_tokens: 7,
        cached_input_tokens: 0,
    };
    let before = given(running()).state();
    let agent = given(running())
        .when(metered("qwen3-coder-next"))
        .then_events([event.clone()]);
    assert_eq!(agent, before, "an audit fact changes no state");
    // A call in flight when the agent stopped or was deleted still happened.
    for last in [
        E::AgentStopped { agent_id: AGENT },
        E::AgentDeleted { agent_id: AGENT },
    ] {
        given(with(running(), last))
            .when(metered("qwen3-coder-next"))
            .then_events([event.clone()]);
    }
    given([])
        .when(metered("qwen3-coder-next"))
        .then_error("not_found");
    assert_eq!(event.authority(), crate::Authority::Platform);
}

#[test]
fn a_metered_model_keeps_its_text_rule() {
    given(running())
        .when(metered("gpt\n4"))
        .then_invalid("model");
}
