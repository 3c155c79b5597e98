//! Given/when/then tests of the text rules on every free-text field of the agent commands.

use super::tests::{AGENT, FIRST, OWNER, created, deploying_through, given, running};
use super::*;
use AgentCommand as C;
use AgentEvent as E;

/// Characters no field accepts, and characters only multi-line fields accept.
const NEVER: [&str; 4] = ["\u{0}", "\u{1b}", "\u{7}", "\u{9b}"];
const LINE_BREAKS: [&str; 3] = ["\n", "\r", "\t"];

fn create(name: &str, system_prompt: &str, model: &str) -> AgentCommand {
    C::CreateAgent {
        agent_id: AGENT,
        owner_id: OWNER,
        name: name.into(),
        system_prompt: system_prompt.into(),
        model: model.into(),
        runtime: RuntimeKind::Warren,
        backend: Backend::Process,
        host: None,
        deployment_id: FIRST,
    }
}

fn update(name: Option<&str>, prompt: Option<&str>, model: Option<&str>) -> AgentCommand {
    C::UpdateAgentConfig {
        name: name.map(Into::into),
        system_prompt: prompt.map(Into::into),
        model: model.map(Into::into),
        deployment_id: Uuid::from_u128(11),
    }
}

fn fail(error: &str) -> AgentCommand {
    C::FailDeployment {
        deployment_id: FIRST,
        step: DeploymentStep::Allocating,
        error: error.into(),
    }
}

#[test]
fn a_name_or_model_with_any_control_character_is_refused() {
    for c in NEVER.into_iter().chain(LINE_BREAKS) {
        let bad = format!("Sc{c}out");
        given([]).when(create(&bad, "", "m")).then_invalid("name");
        given([])
            .when(create("Scout", "", &bad))
            .then_invalid("model");
        given(created())
            .when(update(Some(&bad), None, None))
            .then_invalid("name");
        given(created())
            .when(update(None, None, Some(&bad)))
            .then_invalid("model");
    }
    given([])
        .when(create("Scout", "", &"m".repeat(201)))
        .then_invalid("model");
}

#[test]
fn a_system_prompt_may_span_lines_but_holds_no_other_control_character() {
    for c in NEVER {
        let prompt = format!("Be brief.{c}");
        given([])
            .when(create("Scout", &prompt, "m"))
            .then_invalid("system_prompt");
        given(created())
            .when(update(None, Some(&prompt), None))
            .then_invalid("system_prompt");
    }
    given([])
        .when(create("Scout", &"p".repeat(64001), "m"))
        .then_invalid("system_prompt");
    let agent = given([])
        .when(create("Scout", "Be brief.\n\tAlways.\r\n", "m"))
        .then_events([
            E::AgentCreated {
                agent_id: AGENT,
                owner_id: OWNER,
                name: "Scout".into(),
                system_prompt: "Be brief.\n\tAlways.".into(),
                model: "m".into(),
                runtime: RuntimeKind::Warren,
                backend: Backend::Process,
                host: None,
            },
            E::DeploymentRequested {
                agent_id: AGENT,
                deployment_id: FIRST,
            },
        ]);
    assert_eq!(agent.system_prompt, "Be brief.\n\tAlways.");
}

#[test]
fn the_deployers_endpoint_and_error_texts_keep_the_rules_too() {
    given(deploying_through(DeploymentStep::HealthCheck))
        .when(C::CompleteDeployment {
            deployment_id: FIRST,
            endpoint_url: "http://127.0.0.1:4100/\u{0}".into(),
            workspace: None,
        })
        .then_invalid("endpoint_url");
    for error in [
        "exit\u{0}".to_owned(),
        "\u{1b}[31mred".into(),
        "e".repeat(2001),
    ] {
        given(created()).when(fail(&error)).then_invalid("error");
        given(running())
            .when(C::ReportAgentFailure { error })
            .then_invalid("error");
    }
    given(created())
        .when(fail("no port\nfree"))
        .then_events([E::DeploymentFailed {
            agent_id: AGENT,
            deployment_id: FIRST,
            step: DeploymentStep::Allocating,
            error: "no port\nfree".into(),
        }]);
}
