//! The Agent aggregate: configuration and lifecycle, with the six-step deployment progress.
//!
//! Rules worth knowing:
//! - Creating an agent also requests its first deployment. A deployment *attempt* is opened by
//!   `DeploymentRequested`, `RepairRequested` or `RedeployRequested` (status `pending`), advances
//!   through the six [`DeploymentStep`]s strictly in order (`deploying`), and ends in
//!   `AgentDeployed` (`running`, only after the health check step) or `DeploymentFailed`
//!   (`failed`, naming the step that was due). Progress for any other attempt is
//!   `deployment_not_active`, so a deployer working on a superseded attempt finds out.
//! - A prompt or model change redeploys (superseding an attempt in progress) unless the agent is
//!   stopped; a name-only change never does.
//! - Repair is for failed or stopped agents, redeploy for running or paused ones; start needs an
//!   agent that was deployed before.
//! - Pause, resume and destroy are idempotent (their issuers act on observations that repeat);
//!   everything else on a deleted agent is refused with `deleted`.
//! - Ownership and quotas are the caller's checks; the state keeps `owner_id` for them.
//! - An exec is recorded (`ExecRequested`) only for a running agent, before the runtime runs
//!   it; its outcome and file uploads are recorded whatever the status since (they are facts
//!   that already happened). These audit events change no state.
//! - A model call's metered usage (`ModelUsageMetered`) is recorded whatever the status, even
//!   of a deleted agent: the call happened, and its tokens count against the owner's quota.
//! - Every text field keeps its [`crate::text`] rule: name, model and endpoint on one line; the
//!   prompt and the deployer's and lifecycle's error texts may span lines.
//!
//! Layout: `types` (status, steps, runtime, backend, exec failures), `command`, `event`,
//! `error`, and this file's state, `decide` and `apply`.

mod command;
mod error;
mod event;
mod types;

#[cfg(test)]
mod audit_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod text_tests;

pub use command::AgentCommand;
pub use error::AgentError;
pub use event::AgentEvent;
pub use types::{
    AgentStatus, Backend, Deployment, DeploymentStep, ExecFailure, RedeployReason, RuntimeKind,
    SandboxAlert,
};

use crate::aggregate::impl_aggregate;
use crate::ids::{AgentId, ExecId, UserId};
use crate::text::{self, is_http_url, non_blank};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The longest agent name accepted, in characters.
pub const MAX_AGENT_NAME_CHARS: usize = text::AGENT_NAME.max_chars;

/// An agent as folded from its events. `id` is `None` until `AgentCreated`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    /// The agent, once created.
    pub id: Option<AgentId>,
    /// Its owner.
    pub owner_id: UserId,
    /// Display name.
    pub name: String,
    /// The system prompt.
    pub system_prompt: String,
    /// Model identifier.
    pub model: String,
    /// The runtime it runs.
    pub runtime: RuntimeKind,
    /// Where it is provisioned.
    pub backend: Backend,
    /// The SSH host it is placed on, by name or label (absent: any host with room).
    pub host: Option<String>,
    /// Derived status.
    pub status: AgentStatus,
    /// The attempt in progress, if any.
    pub deployment: Option<Deployment>,
    /// The runtime's base URL from the last successful deployment.
    pub endpoint_url: Option<String>,
    /// The workspace a deployment recorded (a warm pool's), kept for every later one; `None`:
    /// the agent's default workspace.
    pub workspace: Option<String>,
    /// Whether the deleted agent's sandbox is gone.
    pub destroyed: bool,
}

impl Agent {
    /// Decides what `command` changes, validating everything; never mutates.
    pub fn decide(&self, command: &AgentCommand) -> Result<Vec<AgentEvent>, AgentError> {
        use AgentCommand as C;
        use AgentStatus as S;
        let Some(agent_id) = self.id else {
            return match command {
                C::CreateAgent {
                    agent_id,
                    owner_id,
                    name,
                    system_prompt,
                    model,
                    runtime,
                    backend,
                    host,
                    deployment_id,
                } => Ok(vec![
                    AgentEvent::AgentCreated {
                        agent_id: *agent_id,
                        owner_id: *owner_id,
                        name: valid_name(name)?,
                        system_prompt: valid_prompt(system_prompt)?,
                        model: valid_model(model)?,
                        runtime: *runtime,
                        backend: *backend,
                        host: valid_host(host.as_deref(), *backend)?,
                    },
                    AgentEvent::DeploymentRequested {
                        agent_id: *agent_id,
                        deployment_id: *deployment_id,
                    },
                ]),
                _ => Err(AgentError::NotFound {
                    command: command.name(),
                }),
            };
        };
        if let C::CreateAgent { .. } = command {
            return Err(AgentError::AlreadyExists { agent_id });
        }
        if self.status == S::Deleted {
            return match command {
                C::MeterModelUsage { .. } => self.meter(agent_id, command),
                C::DestroyAgent if self.destroyed => Ok(vec![]),
                C::DestroyAgent => Ok(vec![AgentEvent::AgentDestroyed { agent_id }]),
                _ => Err(AgentError::Deleted { agent_id }),
            };
        }
        match command {
            C::CreateAgent { .. } => Err(AgentError::AlreadyExists { agent_id }),
            C::UpdateAgentConfig {
                name,
                system_prompt,
                model,
                deployment_id,
            } => self.update_config(
                agent_id,
                name.as_ref(),
                system_prompt.as_ref(),
                model.as_ref(),
                *deployment_id,
            ),
            C::CompleteDeploymentStep {
                deployment_id,
                step,
            } => {
                self.expect_step(*deployment_id, *step)?;
                Ok(vec![AgentEvent::DeploymentStepCompleted {
                    agent_id,
                    deployment_id: *deployment_id,
                    step: *step,
                }])
            }
            C::CompleteDeployment {
                deployment_id,
                endpoint_url,
                workspace,
            } => self.complete_deployment(
                agent_id,
                *deployment_id,
                endpoint_url,
                workspace.as_deref(),
            ),
            C::FailDeployment {
                deployment_id,
                step,
                error,
            } => {
                text::AGENT_ERROR.check(error)?;
                self.expect_step(*deployment_id, *step)?;
                Ok(vec![AgentEvent::DeploymentFailed {
                    agent_id,
                    deployment_id: *deployment_id,
                    step: *step,
                    error: error.clone(),
                }])
            }
            C::StopAgent => self.transition(
                "stop",
                &[S::Running, S::Paused, S::Failed],
                AgentEvent::AgentStopped { agent_id },
            ),
            C::StartAgent => {
                if self.status == S::Stopped && self.endpoint_url.is_none() {
                    return Err(AgentError::NeverDeployed { agent_id });
                }
                self.transition(
                    "start",
                    &[S::Stopped],
                    AgentEvent::AgentStarted { agent_id },
                )
            }
            C::RestartAgent => self.transition(
                "restart",
                &[S::Running, S::Paused],
                AgentEvent::AgentRestarted { agent_id },
            ),
            C::PauseAgent if self.status == S::Paused => Ok(vec![]),
            C::PauseAgent => {
                self.transition("pause", &[S::Running], AgentEvent::AgentPaused { agent_id })
            }
            C::ResumeAgent if self.status == S::Running => Ok(vec![]),
            C::ResumeAgent => self.transition(
                "resume",
                &[S::Paused],
                AgentEvent::AgentResumed { agent_id },
            ),
            C::ReportAgentFailure { error } => {
                text::AGENT_ERROR.check(error)?;
                self.transition(
                    "report a failure of",
                    &[S::Running],
                    AgentEvent::AgentFailed {
                        agent_id,
                        error: error.clone(),
                    },
                )
            }
            C::RepairAgent { deployment_id } => self.transition(
                "repair",
                &[S::Failed, S::Stopped],
                AgentEvent::RepairRequested {
                    agent_id,
                    deployment_id: *deployment_id,
                },
            ),
            // A failed agent may be redeployed too: a newcomer's first try is often that.
            C::RedeployAgent { deployment_id } => self.transition(
                "redeploy",
                &[S::Running, S::Paused, S::Failed],
                AgentEvent::RedeployRequested {
                    agent_id,
                    deployment_id: *deployment_id,
                    reason: RedeployReason::Manual,
                },
            ),
            C::ReconfigureAgent { deployment_id } => self.transition(
                "reconfigure",
                &[S::Running],
                AgentEvent::RedeployRequested {
                    agent_id,
                    deployment_id: *deployment_id,
                    reason: RedeployReason::PlatformConfigChanged,
                },
            ),
            C::DeleteAgent => Ok(vec![AgentEvent::AgentDeleted { agent_id }]),
            C::DestroyAgent => Err(AgentError::InvalidState {
                action: "destroy",
                status: self.status,
            }),
            C::RequestExec {
                exec_id,
                user_id,
                command,
                cwd,
                timeout_ms,
            } => self.request_exec(
                agent_id,
                *exec_id,
                *user_id,
                command,
                cwd.as_deref(),
                *timeout_ms,
            ),
            C::RecordExecOutcome {
                exec_id,
                exit_code,
                signal,
                timed_out,
                failure,
            } => Ok(vec![AgentEvent::ExecFinished {
                agent_id,
                exec_id: *exec_id,
                exit_code: *exit_code,
                signal: *signal,
                timed_out: *timed_out,
                failure: *failure,
            }]),
            C::RecordFileUpload {
                user_id,
                path,
                size,
            }
            | C::RecordFileDownload {
                user_id,
                path,
                size,
            } => {
                let path = non_blank(path).ok_or(AgentError::InvalidInput {
                    field: "path",
                    reason: "must not be blank",
                })?;
                text::FILE_PATH.check(&path)?;
                let (user_id, size) = (*user_id, *size);
                Ok(vec![match command {
                    C::RecordFileUpload { .. } => AgentEvent::FileUploaded {
                        agent_id,
                        user_id,
                        path,
                        size,
                    },
                    _ => AgentEvent::FileDownloaded {
                        agent_id,
                        user_id,
                        path,
                        size,
                    },
                }])
            }
            C::MeterModelUsage { .. } => self.meter(agent_id, command),
            C::RaiseSandboxAlert { alert, detail } => {
                text::FAILURE_MESSAGE.check(detail)?;
                Ok(vec![AgentEvent::SandboxAlerted {
                    agent_id,
                    alert: *alert,
                    detail: detail.clone(),
                }])
            }
        }
    }

    /// Folds one event into the state. No rules here: `decide` already checked them.
    pub fn apply(&mut self, event: &AgentEvent) {
        use AgentStatus as S;
        match event {
            AgentEvent::AgentCreated {
                agent_id,
                owner_id,
                name,
                system_prompt,
                model,
                runtime,
                backend,
                host,
            } => {
                *self = Agent {
                    id: Some(*agent_id),
                    owner_id: *owner_id,
                    name: name.clone(),
                    system_prompt: system_prompt.clone(),
                    model: model.clone(),
                    runtime: *runtime,
                    backend: *backend,
                    host: host.clone(),
                    ..Agent::default()
                };
            }
            AgentEvent::AgentConfigUpdated {
                name,
                system_prompt,
                model,
                ..
            } => {
                self.name = name.clone();
                self.system_prompt = system_prompt.clone();
                self.model = model.clone();
            }
            AgentEvent::DeploymentRequested { deployment_id, .. }
            | AgentEvent::RepairRequested { deployment_id, .. }
            | AgentEvent::RedeployRequested { deployment_id, .. } => {
                self.status = S::Pending;
                self.deployment = Some(Deployment {
                    deployment_id: *deployment_id,
                    completed: None,
                });
            }
            AgentEvent::DeploymentStepCompleted {
                deployment_id,
                step,
                ..
            } => {
                self.status = S::Deploying;
                self.deployment = Some(Deployment {
                    deployment_id: *deployment_id,
                    completed: Some(*step),
                });
            }
            AgentEvent::AgentDeployed {
                endpoint_url,
                workspace,
                ..
            } => {
                self.status = S::Running;
                self.deployment = None;
                self.endpoint_url = Some(endpoint_url.clone());
                if workspace.is_some() {
                    self.workspace = workspace.clone();
                }
            }
            AgentEvent::DeploymentFailed { .. } => {
                self.status = S::Failed;
                self.deployment = None;
            }
            AgentEvent::AgentStopped { .. } => {
                self.status = S::Stopped;
                self.deployment = None;
            }
            AgentEvent::AgentStarted { .. }
            | AgentEvent::AgentRestarted { .. }
            | AgentEvent::AgentResumed { .. } => self.status = S::Running,
            AgentEvent::AgentPaused { .. } => self.status = S::Paused,
            AgentEvent::AgentFailed { .. } => self.status = S::Failed,
            AgentEvent::AgentDeleted { .. } => {
                self.status = S::Deleted;
                self.deployment = None;
            }
            AgentEvent::AgentDestroyed { .. } => self.destroyed = true,
            AgentEvent::ExecRequested { .. }
            | AgentEvent::ExecFinished { .. }
            | AgentEvent::FileUploaded { .. }
            | AgentEvent::FileDownloaded { .. }
            | AgentEvent::ModelUsageMetered { .. }
            | AgentEvent::SandboxAlerted { .. } => {}
        }
    }

    fn transition(
        &self,
        action: &'static str,
        allowed: &[AgentStatus],
        event: AgentEvent,
    ) -> Result<Vec<AgentEvent>, AgentError> {
        if allowed.contains(&self.status) {
            Ok(vec![event])
        } else {
            Err(AgentError::InvalidState {
                action,
                status: self.status,
            })
        }
    }

    /// Checks that `deployment_id` is the attempt in progress and `step` is the one due.
    fn expect_step(&self, deployment_id: Uuid, step: DeploymentStep) -> Result<(), AgentError> {
        let deployment = self.active_deployment(deployment_id)?;
        let expected = deployment.next_step();
        if expected == Some(step) {
            Ok(())
        } else {
            Err(AgentError::StepOutOfOrder {
                deployment_id,
                expected,
                got: step,
            })
        }
    }

    fn active_deployment(&self, deployment_id: Uuid) -> Result<&Deployment, AgentError> {
        self.deployment
            .as_ref()
            .filter(|deployment| deployment.deployment_id == deployment_id)
            .ok_or(AgentError::DeploymentNotActive { deployment_id })
    }

    fn complete_deployment(
        &self,
        agent_id: AgentId,
        deployment_id: Uuid,
        endpoint_url: &str,
        workspace: Option<&str>,
    ) -> Result<Vec<AgentEvent>, AgentError> {
        let deployment = self.active_deployment(deployment_id)?;
        if deployment.completed != Some(DeploymentStep::HealthCheck) {
            return Err(AgentError::DeploymentIncomplete {
                deployment_id,
                completed: deployment.completed,
            });
        }
        let endpoint_url = non_blank(endpoint_url)
            .filter(|url| is_http_url(url))
            .ok_or(AgentError::InvalidInput {
                field: "endpoint_url",
                reason: "must be an http or https URL",
            })?;
        text::ENDPOINT_URL.check(&endpoint_url)?;
        let workspace = match workspace {
            Some(workspace) => {
                let workspace = non_blank(workspace).ok_or(AgentError::InvalidInput {
                    field: "workspace",
                    reason: "must not be blank",
                })?;
                text::WORKSPACE.check(&workspace)?;
                Some(workspace)
            }
            None => None,
        };
        Ok(vec![AgentEvent::AgentDeployed {
            agent_id,
            deployment_id,
            endpoint_url,
            workspace,
        }])
    }

    /// Records an exec for a running agent. The command is kept as sent (not trimmed: the
    /// runtime runs it verbatim), but must not be blank.
    fn request_exec(
        &self,
        agent_id: AgentId,
        exec_id: ExecId,
        user_id: UserId,
        command: &str,
        cwd: Option<&str>,
        timeout_ms: Option<u64>,
    ) -> Result<Vec<AgentEvent>, AgentError> {
        if command.trim().is_empty() {
            return Err(AgentError::InvalidInput {
                field: "command",
                reason: "must not be blank",
            });
        }
        text::EXEC_COMMAND.check(command)?;
        text::EXEC_CWD.check_optional(cwd)?;
        self.transition(
            "exec in",
            &[AgentStatus::Running],
            AgentEvent::ExecRequested {
                agent_id,
                exec_id,
                user_id,
                command: command.to_owned(),
                cwd: cwd.map(str::to_owned),
                timeout_ms,
            },
        )
    }

    /// Records a model call's usage (any status: the call already happened).
    fn meter(
        &self,
        agent_id: AgentId,
        command: &AgentCommand,
    ) -> Result<Vec<AgentEvent>, AgentError> {
        let AgentCommand::MeterModelUsage {
            provider,
            model,
            own_key,
            input_tokens,
            output_tokens,
            cached_input_tokens,
        } = command
        else {
            // Only reached with `MeterModelUsage`.
            return Ok(vec![]);
        };
        text::MODEL.check(model)?;
        Ok(vec![AgentEvent::ModelUsageMetered {
            agent_id,
            user_id: self.owner_id,
            provider: *provider,
            model: model.clone(),
            own_key: *own_key,
            input_tokens: *input_tokens,
            output_tokens: *output_tokens,
            cached_input_tokens: (*cached_input_tokens).min(*input_tokens),
        }])
    }

    fn update_config(
        &self,
        agent_id: AgentId,
        name: Option<&String>,
        system_prompt: Option<&String>,
        model: Option<&String>,
        deployment_id: Uuid,
    ) -> Result<Vec<AgentEvent>, AgentError> {
        let name = name.map_or_else(|| Ok(self.name.clone()), |name| valid_name(name))?;
        let model = model.map_or_else(|| Ok(self.model.clone()), |model| valid_model(model))?;
        let system_prompt = system_prompt.map_or_else(
            || Ok(self.system_prompt.clone()),
            |prompt| valid_prompt(prompt),
        )?;
        let needs_redeploy = system_prompt != self.system_prompt || model != self.model;
        if !needs_redeploy && name == self.name {
            return Ok(vec![]);
        }
        let mut events = vec![AgentEvent::AgentConfigUpdated {
            agent_id,
            name,
            system_prompt,
            model,
        }];
        if needs_redeploy && self.status != AgentStatus::Stopped {
            events.push(AgentEvent::RedeployRequested {
                agent_id,
                deployment_id,
                reason: RedeployReason::ConfigChanged,
            });
        }
        Ok(events)
    }
}

fn valid_name(name: &str) -> Result<String, AgentError> {
    let name = non_blank(name).ok_or(AgentError::InvalidInput {
        field: "name",
        reason: "must not be blank",
    })?;
    text::AGENT_NAME.check(&name)?;
    Ok(name)
}

/// A host constraint: a host name or label, and only for agents on SSH hosts.
fn valid_host(host: Option<&str>, backend: Backend) -> Result<Option<String>, AgentError> {
    let Some(host) = host else {
        return Ok(None);
    };
    if backend != Backend::Ssh {
        return Err(AgentError::InvalidInput {
            field: "host",
            reason: "only agents on SSH hosts (backend ssh) choose a host",
        });
    }
    if !crate::host::valid_name(host) {
        return Err(AgentError::InvalidInput {
            field: "host",
            reason: "must be a host name or label: 1-63 lowercase letters, digits and dashes",
        });
    }
    Ok(Some(host.to_owned()))
}

fn valid_model(model: &str) -> Result<String, AgentError> {
    let model = non_blank(model).ok_or(AgentError::InvalidInput {
        field: "model",
        reason: "must not be blank",
    })?;
    text::MODEL.check(&model)?;
    Ok(model)
}

/// The trimmed prompt (empty is fine: no system prompt).
fn valid_prompt(prompt: &str) -> Result<String, AgentError> {
    let prompt = prompt.trim();
    text::SYSTEM_PROMPT.check(prompt)?;
    Ok(prompt.to_owned())
}

impl_aggregate! {
    aggregate: Agent,
    type: "agent",
    command: AgentCommand,
    event: AgentEvent,
    error: AgentError,
}
