//! Given/when/then tests for the Agent aggregate: every command, accepted and refused.

use super::*;
use crate::testing::{self, Given};
use AgentCommand as C;
use AgentEvent as E;

pub(super) fn given(events: impl IntoIterator<Item = AgentEvent>) -> Given<Agent> {
    testing::given(events)
}

pub(super) const AGENT: AgentId = AgentId(Uuid::from_u128(1));
pub(super) const OWNER: UserId = UserId(Uuid::from_u128(2));
pub(super) const FIRST: Uuid = Uuid::from_u128(10);
const SECOND: Uuid = Uuid::from_u128(11);
const ENDPOINT: &str = "http://127.0.0.1:4100";

fn create() -> AgentCommand {
    C::CreateAgent {
        agent_id: AGENT,
        owner_id: OWNER,
        name: " Scout ".into(),
        system_prompt: "You are helpful.".into(),
        model: "qwen3-coder-next".into(),
        runtime: RuntimeKind::Warren,
        backend: Backend::Docker,
        host: None,
        deployment_id: FIRST,
    }
}

pub(super) fn created() -> Vec<AgentEvent> {
    vec![
        E::AgentCreated {
            agent_id: AGENT,
            owner_id: OWNER,
            name: "Scout".into(),
            system_prompt: "You are helpful.".into(),
            model: "qwen3-coder-next".into(),
            runtime: RuntimeKind::Warren,
            backend: Backend::Docker,
            host: None,
        },
        E::DeploymentRequested {
            agent_id: AGENT,
            deployment_id: FIRST,
        },
    ]
}

fn step(deployment_id: Uuid, step: DeploymentStep) -> AgentEvent {
    E::DeploymentStepCompleted {
        agent_id: AGENT,
        deployment_id,
        step,
    }
}

/// History up to and including `last` completed in the first attempt.
pub(super) fn deploying_through(last: DeploymentStep) -> Vec<AgentEvent> {
    let mut events = created();
    events.extend(
        DeploymentStep::ALL
            .iter()
            .take(last.number() as usize)
            .map(|s| step(FIRST, *s)),
    );
    events
}

pub(super) fn running() -> Vec<AgentEvent> {
    let mut events = deploying_through(DeploymentStep::HealthCheck);
    events.push(E::AgentDeployed {
        agent_id: AGENT,
        deployment_id: FIRST,
        endpoint_url: ENDPOINT.into(),
        workspace: None,
    });
    events
}

fn then(
    mut events: Vec<AgentEvent>,
    more: impl IntoIterator<Item = AgentEvent>,
) -> Vec<AgentEvent> {
    events.extend(more);
    events
}

fn stopped() -> Vec<AgentEvent> {
    then(running(), [E::AgentStopped { agent_id: AGENT }])
}

fn failed() -> Vec<AgentEvent> {
    then(
        deploying_through(DeploymentStep::Allocating),
        [E::DeploymentFailed {
            agent_id: AGENT,
            deployment_id: FIRST,
            step: DeploymentStep::Provisioning,
            error: "no capacity".into(),
        }],
    )
}

fn paused() -> Vec<AgentEvent> {
    then(running(), [E::AgentPaused { agent_id: AGENT }])
}

fn deleted() -> Vec<AgentEvent> {
    then(running(), [E::AgentDeleted { agent_id: AGENT }])
}

// --- creation ---

#[test]
fn creating_an_agent_requests_its_first_deployment() {
    let agent = given([]).when(create()).then_events(created());
    assert_eq!(agent.status, AgentStatus::Pending);
    assert_eq!(agent.owner_id, OWNER);
    assert_eq!(
        agent.deployment,
        Some(Deployment {
            deployment_id: FIRST,
            completed: None
        })
    );
}

#[test]
fn a_host_is_chosen_only_for_ssh_agents_and_by_a_valid_name_or_label() {
    let with = |backend: Backend, host: &str| {
        let mut command = create();
        if let C::CreateAgent {
            backend: b,
            host: h,
            ..
        } = &mut command
        {
            *b = backend;
            *h = Some(host.into());
        }
        command
    };
    given([])
        .when(with(Backend::Docker, "gpu"))
        .then_invalid("host");
    given([])
        .when(with(Backend::Ssh, "GPU box"))
        .then_invalid("host");
    let agent = given([]).when(with(Backend::Ssh, "gpu")).then_events({
        let mut events = created();
        if let E::AgentCreated { backend, host, .. } = &mut events[0] {
            *backend = Backend::Ssh;
            *host = Some("gpu".into());
        }
        events
    });
    assert_eq!(agent.host.as_deref(), Some("gpu"));
}

#[test]
fn creating_twice_is_refused_even_after_deletion() {
    given(created()).when(create()).then_error("already_exists");
    given(deleted()).when(create()).then_error("already_exists");
}

#[test]
fn a_blank_or_overlong_name_or_a_blank_model_is_refused() {
    for (name, model) in [("  ", "m"), (&*"n".repeat(65), "m"), ("ok", " ")] {
        let mut command = create();
        if let C::CreateAgent {
            name: n, model: m, ..
        } = &mut command
        {
            *n = name.into();
            *m = model.into();
        }
        given([]).when(command).then_error("invalid_input");
    }
}

#[test]
fn any_other_command_before_creation_is_not_found() {
    given([]).when(C::StopAgent).then_error("not_found");
}

// --- deployment steps ---

#[test]
fn the_first_step_moves_the_agent_to_deploying() {
    let agent = given(created())
        .when(C::CompleteDeploymentStep {
            deployment_id: FIRST,
            step: DeploymentStep::Allocating,
        })
        .then_events([step(FIRST, DeploymentStep::Allocating)]);
    assert_eq!(agent.status, AgentStatus::Deploying);
}

#[test]
fn steps_complete_strictly_in_order() {
    let mut history = created();
    for s in DeploymentStep::ALL {
        let command = C::CompleteDeploymentStep {
            deployment_id: FIRST,
            step: *s,
        };
        given(history.clone())
            .when(command)
            .then_events([step(FIRST, *s)]);
        history.push(step(FIRST, *s));
    }
}

#[test]
fn a_skipped_or_repeated_step_is_out_of_order() {
    let error = given(created())
        .when(C::CompleteDeploymentStep {
            deployment_id: FIRST,
            step: DeploymentStep::Provisioning,
        })
        .then_error("step_out_of_order");
    assert_eq!(
        error.to_string(),
        format!("step provisioning is out of order in deployment {FIRST} (next is allocating)")
    );
    given(deploying_through(DeploymentStep::Installing))
        .when(C::CompleteDeploymentStep {
            deployment_id: FIRST,
            step: DeploymentStep::Installing,
        })
        .then_error("step_out_of_order");
}

#[test]
fn progress_for_another_attempt_is_not_active() {
    given(created())
        .when(C::CompleteDeploymentStep {
            deployment_id: SECOND,
            step: DeploymentStep::Allocating,
        })
        .then_error("deployment_not_active");
    given(running())
        .when(C::CompleteDeploymentStep {
            deployment_id: FIRST,
            step: DeploymentStep::Allocating,
        })
        .then_error("deployment_not_active");
}

#[test]
fn a_deployment_completes_after_the_health_check() {
    let agent = given(deploying_through(DeploymentStep::HealthCheck))
        .when(C::CompleteDeployment {
            deployment_id: FIRST,
            endpoint_url: ENDPOINT.into(),
            workspace: None,
        })
        .then_events([E::AgentDeployed {
            agent_id: AGENT,
            deployment_id: FIRST,
            endpoint_url: ENDPOINT.into(),
            workspace: None,
        }]);
    assert_eq!(agent.status, AgentStatus::Running);
    assert_eq!(agent.endpoint_url.as_deref(), Some(ENDPOINT));
    assert_eq!(agent.deployment, None);
    assert_eq!(agent.workspace, None, "the agent's default workspace");
}

#[test]
fn a_warm_pool_s_workspace_is_recorded_and_kept_by_later_deployments() {
    let pooled = "warren-ws-pool-1a2b";
    let mut events = deploying_through(DeploymentStep::HealthCheck);
    let agent = given(events.clone())
        .when(C::CompleteDeployment {
            deployment_id: FIRST,
            endpoint_url: ENDPOINT.into(),
            workspace: Some(pooled.into()),
        })
        .then_events([E::AgentDeployed {
            agent_id: AGENT,
            deployment_id: FIRST,
            endpoint_url: ENDPOINT.into(),
            workspace: Some(pooled.into()),
        }]);
    assert_eq!(agent.workspace.as_deref(), Some(pooled));
    events.push(E::AgentDeployed {
        agent_id: AGENT,
        deployment_id: FIRST,
        endpoint_url: ENDPOINT.into(),
        workspace: Some(pooled.into()),
    });
    events.push(config_redeploy());
    events.push(E::AgentDeployed {
        agent_id: AGENT,
        deployment_id: SECOND,
        endpoint_url: ENDPOINT.into(),
        workspace: None,
    });
    let agent = given(events.clone())
        .when(C::StopAgent)
        .then_events([E::AgentStopped { agent_id: AGENT }]);
    assert_eq!(agent.workspace.as_deref(), Some(pooled), "never forgotten");
    given(deploying_through(DeploymentStep::HealthCheck))
        .when(C::CompleteDeployment {
            deployment_id: FIRST,
            endpoint_url: ENDPOINT.into(),
            workspace: Some(" ".into()),
        })
        .then_error("invalid_input");
}

#[test]
fn a_deployment_cannot_complete_before_the_health_check() {
    given(deploying_through(DeploymentStep::Starting))
        .when(C::CompleteDeployment {
            deployment_id: FIRST,
            endpoint_url: ENDPOINT.into(),
            workspace: None,
        })
        .then_error("deployment_incomplete");
}

#[test]
fn a_deployment_needs_a_web_endpoint() {
    given(deploying_through(DeploymentStep::HealthCheck))
        .when(C::CompleteDeployment {
            deployment_id: FIRST,
            endpoint_url: "not a url".into(),
            workspace: None,
        })
        .then_error("invalid_input");
}

#[test]
fn a_deployment_fails_at_the_step_that_was_due() {
    let agent = given(deploying_through(DeploymentStep::Allocating))
        .when(C::FailDeployment {
            deployment_id: FIRST,
            step: DeploymentStep::Provisioning,
            error: "no capacity".into(),
        })
        .then_events(failed()[created().len() + 1..].to_vec());
    assert_eq!(agent.status, AgentStatus::Failed);
    assert_eq!(agent.deployment, None);
}

#[test]
fn a_failure_at_another_step_or_for_another_attempt_is_refused() {
    given(deploying_through(DeploymentStep::Allocating))
        .when(C::FailDeployment {
            deployment_id: FIRST,
            step: DeploymentStep::Starting,
            error: "boom".into(),
        })
        .then_error("step_out_of_order");
    given(failed())
        .when(C::FailDeployment {
            deployment_id: FIRST,
            step: DeploymentStep::Provisioning,
            error: "again".into(),
        })
        .then_error("deployment_not_active");
}

// --- configuration ---

fn update(name: Option<&str>, prompt: Option<&str>, model: Option<&str>) -> AgentCommand {
    C::UpdateAgentConfig {
        name: name.map(str::to_owned),
        system_prompt: prompt.map(str::to_owned),
        model: model.map(str::to_owned),
        deployment_id: SECOND,
    }
}

fn config(name: &str, prompt: &str, model: &str) -> AgentEvent {
    E::AgentConfigUpdated {
        agent_id: AGENT,
        name: name.into(),
        system_prompt: prompt.into(),
        model: model.into(),
    }
}

fn config_redeploy() -> AgentEvent {
    E::RedeployRequested {
        agent_id: AGENT,
        deployment_id: SECOND,
        reason: RedeployReason::ConfigChanged,
    }
}

#[test]
fn renaming_does_not_redeploy() {
    given(running())
        .when(update(Some("Scout II"), None, None))
        .then_events([config("Scout II", "You are helpful.", "qwen3-coder-next")]);
}

#[test]
fn a_prompt_or_model_change_redeploys_a_running_agent() {
    let agent = given(running())
        .when(update(None, Some("Be terse."), None))
        .then_events([
            config("Scout", "Be terse.", "qwen3-coder-next"),
            config_redeploy(),
        ]);
    assert_eq!(agent.status, AgentStatus::Pending);
    given(running())
        .when(update(None, None, Some("glm-4.7")))
        .then_events([
            config("Scout", "You are helpful.", "glm-4.7"),
            config_redeploy(),
        ]);
}

#[test]
fn a_model_change_mid_deployment_supersedes_the_attempt() {
    let agent = given(deploying_through(DeploymentStep::Installing))
        .when(update(None, None, Some("glm-4.7")))
        .then_events([
            config("Scout", "You are helpful.", "glm-4.7"),
            config_redeploy(),
        ]);
    given(then(
        created(),
        [
            config("Scout", "You are helpful.", "glm-4.7"),
            config_redeploy(),
        ],
    ))
    .when(C::CompleteDeploymentStep {
        deployment_id: FIRST,
        step: DeploymentStep::Allocating,
    })
    .then_error("deployment_not_active");
    assert_eq!(agent.deployment.map(|d| d.deployment_id), Some(SECOND));
}

#[test]
fn a_prompt_change_on_a_stopped_agent_waits_for_the_next_deployment() {
    given(stopped())
        .when(update(None, Some("Be terse."), None))
        .then_events([config("Scout", "Be terse.", "qwen3-coder-next")]);
}

#[test]
fn a_config_update_that_changes_nothing_emits_nothing() {
    given(running())
        .when(update(Some("Scout"), Some(" You are helpful. "), None))
        .then_nothing();
}

#[test]
fn a_config_update_with_a_blank_name_is_refused() {
    given(running())
        .when(update(Some(""), None, None))
        .then_error("invalid_input");
}

// --- lifecycle ---

#[test]
fn a_running_agent_can_be_stopped_and_started_again() {
    let agent = given(running())
        .when(C::StopAgent)
        .then_events([E::AgentStopped { agent_id: AGENT }]);
    assert_eq!(agent.status, AgentStatus::Stopped);
    let agent = given(stopped())
        .when(C::StartAgent)
        .then_events([E::AgentStarted { agent_id: AGENT }]);
    assert_eq!(agent.status, AgentStatus::Running);
}

#[test]
fn stopping_needs_a_running_paused_or_failed_agent() {
    given(failed())
        .when(C::StopAgent)
        .then_events([E::AgentStopped { agent_id: AGENT }]);
    given(created())
        .when(C::StopAgent)
        .then_error("invalid_state");
    given(stopped())
        .when(C::StopAgent)
        .then_error("invalid_state");
}

#[test]
fn starting_needs_a_stopped_agent_that_was_deployed() {
    given(running())
        .when(C::StartAgent)
        .then_error("invalid_state");
    given(then(failed(), [E::AgentStopped { agent_id: AGENT }]))
        .when(C::StartAgent)
        .then_error("never_deployed");
}

#[test]
fn restart_works_on_running_and_paused_agents_only() {
    let agent = given(paused())
        .when(C::RestartAgent)
        .then_events([E::AgentRestarted { agent_id: AGENT }]);
    assert_eq!(agent.status, AgentStatus::Running);
    given(stopped())
        .when(C::RestartAgent)
        .then_error("invalid_state");
}

#[test]
fn an_idle_running_agent_pauses_and_resumes() {
    let agent = given(running())
        .when(C::PauseAgent)
        .then_events([E::AgentPaused { agent_id: AGENT }]);
    assert_eq!(agent.status, AgentStatus::Paused);
    given(paused())
        .when(C::ResumeAgent)
        .then_events([E::AgentResumed { agent_id: AGENT }]);
}

#[test]
fn pause_and_resume_are_idempotent() {
    given(paused()).when(C::PauseAgent).then_nothing();
    given(running()).when(C::ResumeAgent).then_nothing();
}

#[test]
fn pause_and_resume_are_refused_in_other_states() {
    given(stopped())
        .when(C::PauseAgent)
        .then_error("invalid_state");
    given(failed())
        .when(C::ResumeAgent)
        .then_error("invalid_state");
}

#[test]
fn a_failed_health_check_fails_a_running_agent() {
    let agent = given(running())
        .when(C::ReportAgentFailure {
            error: "health endpoint timed out".into(),
        })
        .then_events([E::AgentFailed {
            agent_id: AGENT,
            error: "health endpoint timed out".into(),
        }]);
    assert_eq!(agent.status, AgentStatus::Failed);
    given(stopped())
        .when(C::ReportAgentFailure { error: "x".into() })
        .then_error("invalid_state");
}

// --- repair and redeploy ---

#[test]
fn a_failed_or_stopped_agent_can_be_repaired() {
    for history in [failed(), stopped()] {
        let agent = given(history)
            .when(C::RepairAgent {
                deployment_id: SECOND,
            })
            .then_events([E::RepairRequested {
                agent_id: AGENT,
                deployment_id: SECOND,
            }]);
        assert_eq!(agent.status, AgentStatus::Pending);
        assert_eq!(agent.deployment.map(|d| d.deployment_id), Some(SECOND));
    }
}

#[test]
fn a_running_or_deploying_agent_cannot_be_repaired() {
    for history in [running(), created()] {
        given(history)
            .when(C::RepairAgent {
                deployment_id: SECOND,
            })
            .then_error("invalid_state");
    }
}

#[test]
fn a_running_agent_can_be_redeployed() {
    given(running())
        .when(C::RedeployAgent {
            deployment_id: SECOND,
        })
        .then_events([E::RedeployRequested {
            agent_id: AGENT,
            deployment_id: SECOND,
            reason: RedeployReason::Manual,
        }]);
}

#[test]
fn a_running_agent_is_redeployed_when_the_platform_config_changed() {
    given(running())
        .when(C::ReconfigureAgent {
            deployment_id: SECOND,
        })
        .then_events([E::RedeployRequested {
            agent_id: AGENT,
            deployment_id: SECOND,
            reason: RedeployReason::PlatformConfigChanged,
        }]);
}

#[test]
fn only_a_running_agent_is_reconfigured() {
    let reconfigure = C::ReconfigureAgent {
        deployment_id: SECOND,
    };
    given(stopped())
        .when(reconfigure.clone())
        .then_error("invalid_state");
    given(failed())
        .when(reconfigure)
        .then_error("invalid_state");
}

#[test]
fn a_failed_agent_can_be_redeployed() {
    given(failed())
        .when(C::RedeployAgent {
            deployment_id: SECOND,
        })
        .then_events([E::RedeployRequested {
            agent_id: AGENT,
            deployment_id: SECOND,
            reason: RedeployReason::Manual,
        }]);
}

#[test]
fn a_stopped_agent_is_started_or_repaired_not_redeployed() {
    given(stopped())
        .when(C::RedeployAgent {
            deployment_id: SECOND,
        })
        .then_error("invalid_state");
}

// --- deletion ---

#[test]
fn deleting_abandons_any_attempt_in_progress() {
    let agent = given(deploying_through(DeploymentStep::Configuring))
        .when(C::DeleteAgent)
        .then_events([E::AgentDeleted { agent_id: AGENT }]);
    assert_eq!(agent.status, AgentStatus::Deleted);
    assert_eq!(agent.deployment, None);
}

#[test]
fn a_deleted_agent_refuses_everything_but_destroy() {
    for command in [
        C::DeleteAgent,
        C::StartAgent,
        C::PauseAgent,
        update(Some("x"), None, None),
    ] {
        given(deleted()).when(command).then_error("deleted");
    }
}

#[test]
fn a_deleted_agent_is_destroyed_once() {
    let agent = given(deleted())
        .when(C::DestroyAgent)
        .then_events([E::AgentDestroyed { agent_id: AGENT }]);
    assert!(agent.destroyed);
    given(then(deleted(), [E::AgentDestroyed { agent_id: AGENT }]))
        .when(C::DestroyAgent)
        .then_nothing();
}

#[test]
fn only_a_deleted_agent_can_be_destroyed() {
    given(running())
        .when(C::DestroyAgent)
        .then_error("invalid_state");
}

#[test]
fn steps_know_their_order() {
    assert_eq!(
        DeploymentStep::FIRST.next(),
        Some(DeploymentStep::Provisioning)
    );
    assert_eq!(DeploymentStep::HealthCheck.next(), None);
    assert_eq!(DeploymentStep::HealthCheck.number(), 6);
    assert!(DeploymentStep::Installing < DeploymentStep::Starting);
    assert_eq!(
        "health_check".parse::<DeploymentStep>(),
        Ok(DeploymentStep::HealthCheck)
    );
}

#[test]
fn only_the_three_request_events_open_a_deployment() {
    assert_eq!(created()[1].opened_deployment(), Some(FIRST));
    assert_eq!(config_redeploy().opened_deployment(), Some(SECOND));
    assert_eq!(
        E::AgentStopped { agent_id: AGENT }.opened_deployment(),
        None
    );
}
