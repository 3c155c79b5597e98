//! Given/when/then tests of the text rules on every free-text field of the agent commands.

use super::*;
use crate::testing::{self, Given};
use AgentCommand as C;
use AgentEvent as E;

fn given(events: impl IntoIterator<Item = AgentEvent>) -> Given<Agent> {
    testing::given(events)
}

const AGENT: AgentId = AgentId(Uuid::from_u128(1));
const OWNER: UserId = UserId(Uuid::from_u128(2));
const FIRST: Uuid = Uuid::from_u128(10);
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
        deployment_id: FIRST,
    }
}

fn created() -> Vec<AgentEvent> {
    vec![
        E::AgentCreated {
            agent_id: AGENT,
            owner_id: OWNER,
            name: "Scout".into(),
            system_prompt: "Be brief.".into(),
            model: "m".into(),
            runtime: RuntimeKind::Warren,
            backend: Backend::Process,
        },
        E::DeploymentRequested {
            agent_id: AGENT,
            deployment_id: FIRST,
        },
    ]
}

/// Created, with every step of the first attempt through `steps` completed.
fn through(steps: usize) -> Vec<AgentEvent> {
    let mut events = created();
    events.extend(
        DeploymentStep::ALL
            .iter()
            .take(steps)
            .map(|step| E::DeploymentStepCompleted {
                agent_id: AGENT,
                deployment_id: FIRST,
                step: *step,
            }),
    );
    events
}

fn running() -> Vec<AgentEvent> {
    let mut events = through(DeploymentStep::ALL.len());
    events.push(E::AgentDeployed {
        agent_id: AGENT,
        deployment_id: FIRST,
        endpoint_url: "http://127.0.0.1:4100".into(),
    });
    events
}

fn update(name: Option<&str>, prompt: Option<&str>, model: Option<&str>) -> AgentCommand {
    C::UpdateAgentConfig {
        name: name.map(Into::into),
        system_prompt: prompt.map(Into::into),
        model: model.map(Into::into),
        deployment_id: Uuid::from_u128(11),
    }
}

/// Asserts `command` on a state built from `events` is refused as invalid `field`.
#[track_caller]
fn refused(events: Vec<AgentEvent>, command: AgentCommand, field: &str) {
    match given(events).when(command).then_error("invalid_input") {
        AgentError::InvalidInput { field: got, .. } => assert_eq!(got, field),
        other => panic!("expected invalid_input, got {other}"),
    }
}

#[test]
fn a_name_or_model_with_any_control_character_is_refused() {
    for c in NEVER.into_iter().chain(LINE_BREAKS) {
        let bad = format!("Sc{c}out");
        refused(vec![], create(&bad, "", "m"), "name");
        refused(vec![], create("Scout", "", &bad), "model");
        refused(created(), update(Some(&bad), None, None), "name");
        refused(created(), update(None, None, Some(&bad)), "model");
    }
    refused(vec![], create("Scout", "", &"m".repeat(201)), "model");
}

#[test]
fn a_system_prompt_may_span_lines_but_holds_no_other_control_character() {
    for c in NEVER {
        let prompt = format!("Be brief.{c}");
        refused(vec![], create("Scout", &prompt, "m"), "system_prompt");
        refused(
            created(),
            update(None, Some(&prompt), None),
            "system_prompt",
        );
    }
    refused(
        vec![],
        create("Scout", &"p".repeat(64001), "m"),
        "system_prompt",
    );
    let events = given([])
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
            },
            E::DeploymentRequested {
                agent_id: AGENT,
                deployment_id: FIRST,
            },
        ]);
    assert_eq!(events.system_prompt, "Be brief.\n\tAlways.");
}

#[test]
fn the_deployers_endpoint_and_error_texts_keep_the_rules_too() {
    let endpoint = C::CompleteDeployment {
        deployment_id: FIRST,
        endpoint_url: "http://127.0.0.1:4100/\u{0}".into(),
    };
    refused(through(DeploymentStep::ALL.len()), endpoint, "endpoint_url");
    for error in [
        "exit\u{0}".to_owned(),
        "\u{1b}[31mred".into(),
        "e".repeat(2001),
    ] {
        let fail = C::FailDeployment {
            deployment_id: FIRST,
            step: DeploymentStep::Allocating,
            error: error.clone(),
        };
        refused(created(), fail, "error");
        refused(running(), C::ReportAgentFailure { error }, "error");
    }
    given(created())
        .when(C::FailDeployment {
            deployment_id: FIRST,
            step: DeploymentStep::Allocating,
            error: "no port\nfree".into(),
        })
        .then_events([E::DeploymentFailed {
            agent_id: AGENT,
            deployment_id: FIRST,
            step: DeploymentStep::Allocating,
            error: "no port\nfree".into(),
        }]);
}
