//! `/api/v1/agents*`: agents as their owner sees them, wired to the Agent aggregate.
//!
//! Only approved users reach these routes (403 `not_approved` otherwise). Another user's agent
//! is 404, exactly like a missing one. Writes answer after the agents projection applied them,
//! so the next GET agrees. Deploying is the deployer's work: here a create, a prompt/model change,
//! a repair or a redeploy only records the request (and the status shows its progress).

use crate::app::{self, agents::Lifecycle};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApprovedUser, IdempotencyKey};
use crate::input::TextFields;
use crate::openapi::{resp, runtime_schema};
use crate::routes::ApiRouter;
use crate::state::AppState;
use crate::views::{self, AgentView, DeploymentEventView};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;
use uuid::Uuid;
use warren_commands::sandboxes::SandboxState;
use warren_domain::agent::{Agent, Backend, DeploymentStep, RuntimeKind};
use warren_domain::ids::AgentId;
use warren_domain::text;

/// How long `GET /agents/{id}/health` waits for the runtime.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

/// The agent routes.
pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .get("/agents", list)
        .post("/agents", create)
        .get("/agents/{id}", get)
        .patch("/agents/{id}", update)
        .delete("/agents/{id}", delete)
        .get("/agents/{id}/status", status)
        .post("/agents/{id}/stop", stop)
        .post("/agents/{id}/start", start)
        .post("/agents/{id}/restart", restart)
        .post("/agents/{id}/repair", repair)
        .post("/agents/{id}/redeploy", redeploy)
        .get("/agents/{id}/health", health)
}

/// `POST /agents`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAgent {
    /// Display name (1 to 64 characters).
    #[schema(example = "Research helper")]
    pub name: String,
    /// The system prompt (empty if left out).
    pub system_prompt: Option<String>,
    /// Model identifier; the platform default (`WARREN_DEFAULT_MODEL`) if left out.
    pub model: Option<String>,
    /// The runtime to install (`warren` if left out).
    #[schema(schema_with = runtime_schema)]
    pub runtime: Option<RuntimeKind>,
    /// Where it runs: `ssh` (a registered host, placed by the deployer), or the platform's own
    /// sandbox (`process` or `docker`, whichever the platform runs; the default).
    #[schema(schema_with = crate::openapi::backend_schema)]
    pub backend: Option<Backend>,
    /// Admins only: the SSH host to place it on, by name or label (any host with room that
    /// matches). Implies `backend: ssh`.
    #[schema(example = "gpu")]
    pub host: Option<String>,
}

/// `PATCH /agents/{id}`: fields left out are kept. A prompt or model change redeploys.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentPatch {
    /// New display name.
    pub name: Option<String>,
    /// New system prompt.
    pub system_prompt: Option<String>,
    /// New model.
    pub model: Option<String>,
}

/// The text fields of both agent bodies.
const AGENT_FIELDS: &[(&str, text::TextRule)] = &[
    ("name", text::AGENT_NAME),
    ("system_prompt", text::SYSTEM_PROMPT),
    ("model", text::MODEL),
];

impl TextFields for NewAgent {
    const TEXT_FIELDS: &'static [(&'static str, text::TextRule)] = AGENT_FIELDS;
}

impl TextFields for AgentPatch {
    const TEXT_FIELDS: &'static [(&'static str, text::TextRule)] = AGENT_FIELDS;
}

/// Deployment progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentStatusView {
    /// The agent.
    pub agent_id: Uuid,
    /// The agent's status.
    pub status: String,
    /// The current (or last) attempt.
    pub deployment_id: Option<Uuid>,
    /// The last step completed (or failed) in it.
    pub current_step: Option<String>,
    /// That step's 1-based position.
    pub step_number: Option<u8>,
    /// Steps in an attempt (6).
    pub total_steps: u8,
    /// The last error.
    pub last_error: Option<String>,
    /// The runtime's base URL once deployed.
    pub endpoint: Option<String>,
    /// Deployment facts, oldest first (the last 100).
    pub history: Vec<DeploymentEventView>,
    /// Seconds since the sandbox's runtime started (running or paused), when reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_secs: Option<u64>,
    /// CPU the sandbox used between the deployer's last two looks, in percent of one core,
    /// when reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// Memory the sandbox uses, bytes, when reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// The size of the agent's workspace on disk, bytes, when reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
    /// When the deployer measured the four figures above (at each reconciliation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measured_at: Option<DateTime<Utc>>,
}

/// The runtime's health as seen from the edge.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentHealthView {
    /// The agent.
    pub agent_id: Uuid,
    /// The agent's status.
    pub status: String,
    /// The runtime's base URL, if deployed.
    pub endpoint: Option<String>,
    /// Whether `GET {endpoint}/health` answered 2xx.
    pub healthy: bool,
    /// The runtime's HTTP status, if it answered.
    pub runtime_status: Option<u16>,
    /// When this was checked.
    pub checked_at: DateTime<Utc>,
}

/// The agent's current state if `caller` owns it and it is not deleted; 404 otherwise.
pub(crate) async fn owned_agent(
    state: &AppState,
    caller: &ApprovedUser,
    id: Uuid,
) -> Result<(AgentId, Agent), ApiError> {
    app::agents::owned_agent(state, caller.id, AgentId(id)).await
}

/// The agent as the read model has it, or, while the read model lags behind the write that
/// made it, as the log has it: a successful write never answers 404.
async fn answer(
    state: &AppState,
    caller: &ApprovedUser,
    agent_id: AgentId,
) -> Result<AgentView, ApiError> {
    match views::agent(&state.db, caller.id, agent_id).await {
        Err(ApiError::NotFound) => {
            let (_, agent) = app::agents::owned_agent(state, caller.id, agent_id).await?;
            views::agent_from_log(&agent, Utc::now()).ok_or(ApiError::NotFound)
        }
        other => other,
    }
}

/// The caller's agents, oldest first.
#[utoipa::path(get, path = "/api/v1/agents", operation_id = "get_agents", tag = "agents", security(("bearer" = [])),
    responses((status = 200, description = "Agents.", body = Vec<AgentView>), resp::Unauthorized, resp::Forbidden))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: ApprovedUser,
) -> Result<Json<Vec<AgentView>>, ApiError> {
    Ok(Json(views::agents(&state.db, caller.id).await?))
}

/// Create an agent; its first deployment is requested at once.
#[utoipa::path(post, path = "/api/v1/agents", operation_id = "post_agents", tag = "agents", security(("bearer" = [])),
    request_body = NewAgent,
    responses((status = 201, description = "Created; deployment requested.", body = AgentView),
        resp::BadRequest, resp::Unauthorized, resp::Forbidden, resp::Validation, resp::RateLimited, resp::AtCapacity))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: ApprovedUser,
    key: IdempotencyKey,
    ApiJson(request): ApiJson<NewAgent>,
) -> Result<(StatusCode, Json<AgentView>), ApiError> {
    let agent_id = app::agents::create(
        &state,
        &caller,
        app::agents::NewAgent {
            name: request.name,
            system_prompt: request.system_prompt,
            model: request.model,
            runtime: request.runtime.unwrap_or_default(),
            backend: request.backend.unwrap_or(if request.host.is_some() {
                Backend::Ssh
            } else {
                Backend::default()
            }),
            host: request.host,
        },
        key.command_id(caller.id),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(answer(&state, &caller, agent_id).await?),
    ))
}

/// One of the caller's agents.
#[utoipa::path(get, path = "/api/v1/agents/{id}", operation_id = "get_agents_by_id", tag = "agents", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Agent id")),
    responses((status = 200, description = "The agent.", body = AgentView), resp::Unauthorized, resp::Forbidden, resp::NotFound))]
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: ApprovedUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<AgentView>, ApiError> {
    Ok(Json(views::agent(&state.db, caller.id, AgentId(id)).await?))
}

/// Change name, prompt or model; a prompt or model change requests a redeploy.
#[utoipa::path(patch, path = "/api/v1/agents/{id}", operation_id = "patch_agents_by_id", tag = "agents", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Agent id")),
    request_body = AgentPatch,
    responses((status = 200, description = "The updated agent.", body = AgentView),
        resp::BadRequest, resp::Unauthorized, resp::Forbidden, resp::NotFound, resp::Conflict, resp::Validation, resp::RateLimited, resp::AtCapacity))]
pub(crate) async fn update(
    State(state): State<AppState>,
    caller: ApprovedUser,
    ApiPath(id): ApiPath<Uuid>,
    key: IdempotencyKey,
    ApiJson(patch): ApiJson<AgentPatch>,
) -> Result<Json<AgentView>, ApiError> {
    let change = app::agents::Change {
        name: patch.name,
        system_prompt: patch.system_prompt,
        model: patch.model,
    };
    let agent_id = app::agents::configure(
        &state,
        &caller,
        AgentId(id),
        change,
        key.command_id(caller.id),
    )
    .await?;
    Ok(Json(answer(&state, &caller, agent_id).await?))
}

/// Delete an agent; its sandbox is then destroyed by the deployer.
#[utoipa::path(delete, path = "/api/v1/agents/{id}", operation_id = "delete_agents_by_id", tag = "agents", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Agent id")),
    responses((status = 204, description = "Deleted."), resp::Unauthorized, resp::Forbidden, resp::NotFound, resp::RateLimited))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: ApprovedUser,
    ApiPath(id): ApiPath<Uuid>,
    key: IdempotencyKey,
) -> Result<StatusCode, ApiError> {
    app::agents::lifecycle(
        &state,
        &caller,
        AgentId(id),
        Lifecycle::Delete,
        key.command_id(caller.id),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deployment progress: status, the step reached (of 6) and the deployment history; and what
/// the sandbox uses (uptime, CPU, memory, disk) when the deployer measured it.
#[utoipa::path(get, path = "/api/v1/agents/{id}/status", operation_id = "get_agents_by_id_status", tag = "agents", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Agent id")),
    responses((status = 200, description = "Progress.", body = AgentStatusView), resp::Unauthorized, resp::Forbidden, resp::NotFound))]
pub(crate) async fn status(
    State(state): State<AppState>,
    caller: ApprovedUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<AgentStatusView>, ApiError> {
    let agent = views::agent(&state.db, caller.id, AgentId(id)).await?;
    let history = views::deployment_history(&state.db, AgentId(id)).await?;
    let step_number = agent
        .current_step
        .as_deref()
        .and_then(|step| step.parse::<DeploymentStep>().ok())
        .map(DeploymentStep::number);
    // The figures are extras: without them the status still answers.
    let stats = state
        .sandbox_stats
        .get(AgentId(id))
        .await
        .unwrap_or_else(|err| {
            tracing::warn!(agent_id = %id, error = %err, "reading the sandbox's use failed");
            None
        });
    let uptime_secs = stats
        .as_ref()
        .filter(|stats| stats.state != SandboxState::Stopped)
        .and_then(|stats| stats.started_at)
        .and_then(|started| (Utc::now() - started).to_std().ok())
        .map(|uptime| uptime.as_secs());
    Ok(Json(AgentStatusView {
        agent_id: agent.id,
        status: agent.status,
        deployment_id: agent.deployment_id,
        current_step: agent.current_step,
        step_number,
        total_steps: DeploymentStep::ALL.len() as u8,
        last_error: agent.last_error,
        endpoint: agent.endpoint,
        history,
        uptime_secs,
        cpu_percent: stats.as_ref().and_then(|stats| stats.cpu_percent),
        memory_bytes: stats.as_ref().and_then(|stats| stats.memory_bytes),
        disk_bytes: stats.as_ref().and_then(|stats| stats.disk_bytes),
        measured_at: stats.map(|stats| stats.sampled_at),
    }))
}

/// Stop the agent's sandbox (it keeps its workspace; start brings it back).
#[utoipa::path(post, path = "/api/v1/agents/{id}/stop", operation_id = "post_agents_by_id_stop", tag = "agents", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Agent id")),
    responses((status = 202, description = "Stop requested.", body = AgentView),
        resp::Unauthorized, resp::Forbidden, resp::NotFound, resp::Conflict, resp::RateLimited))]
pub(crate) async fn stop(
    state: State<AppState>,
    caller: ApprovedUser,
    id: ApiPath<Uuid>,
    key: IdempotencyKey,
) -> Result<(StatusCode, Json<AgentView>), ApiError> {
    act(state, caller, id, key, Lifecycle::Stop).await
}

/// Start a stopped agent.
#[utoipa::path(post, path = "/api/v1/agents/{id}/start", operation_id = "post_agents_by_id_start", tag = "agents", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Agent id")),
    responses((status = 202, description = "Start requested.", body = AgentView),
        resp::Unauthorized, resp::Forbidden, resp::NotFound, resp::Conflict, resp::RateLimited, resp::AtCapacity))]
pub(crate) async fn start(
    state: State<AppState>,
    caller: ApprovedUser,
    id: ApiPath<Uuid>,
    key: IdempotencyKey,
) -> Result<(StatusCode, Json<AgentView>), ApiError> {
    act(state, caller, id, key, Lifecycle::Start).await
}

/// Restart a running agent.
#[utoipa::path(post, path = "/api/v1/agents/{id}/restart", operation_id = "post_agents_by_id_restart", tag = "agents", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Agent id")),
    responses((status = 202, description = "Restart requested.", body = AgentView),
        resp::Unauthorized, resp::Forbidden, resp::NotFound, resp::Conflict, resp::RateLimited, resp::AtCapacity))]
pub(crate) async fn restart(
    state: State<AppState>,
    caller: ApprovedUser,
    id: ApiPath<Uuid>,
    key: IdempotencyKey,
) -> Result<(StatusCode, Json<AgentView>), ApiError> {
    act(state, caller, id, key, Lifecycle::Restart).await
}

/// Deploy a failed or stopped agent again.
#[utoipa::path(post, path = "/api/v1/agents/{id}/repair", operation_id = "post_agents_by_id_repair", tag = "agents", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Agent id")),
    responses((status = 202, description = "Repair requested.", body = AgentView),
        resp::Unauthorized, resp::Forbidden, resp::NotFound, resp::Conflict, resp::RateLimited, resp::AtCapacity))]
pub(crate) async fn repair(
    state: State<AppState>,
    caller: ApprovedUser,
    id: ApiPath<Uuid>,
    key: IdempotencyKey,
) -> Result<(StatusCode, Json<AgentView>), ApiError> {
    act(state, caller, id, key, Lifecycle::Repair).await
}

/// Deploy a running, paused or failed agent again (latest runtime, same configuration).
#[utoipa::path(post, path = "/api/v1/agents/{id}/redeploy", operation_id = "post_agents_by_id_redeploy", tag = "agents", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Agent id")),
    responses((status = 202, description = "Redeploy requested.", body = AgentView),
        resp::Unauthorized, resp::Forbidden, resp::NotFound, resp::Conflict, resp::RateLimited, resp::AtCapacity))]
pub(crate) async fn redeploy(
    state: State<AppState>,
    caller: ApprovedUser,
    id: ApiPath<Uuid>,
    key: IdempotencyKey,
) -> Result<(StatusCode, Json<AgentView>), ApiError> {
    act(state, caller, id, key, Lifecycle::Redeploy).await
}

/// Asks `what` of the caller's agent and answers 202 with the agent.
async fn act(
    State(state): State<AppState>,
    caller: ApprovedUser,
    ApiPath(id): ApiPath<Uuid>,
    key: IdempotencyKey,
    what: Lifecycle,
) -> Result<(StatusCode, Json<AgentView>), ApiError> {
    let agent_id = app::agents::lifecycle(
        &state,
        &caller,
        AgentId(id),
        what,
        key.command_id(caller.id),
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(answer(&state, &caller, agent_id).await?),
    ))
}

/// Ask the agent's runtime for its health (`GET {endpoint}/health`, 3 s timeout).
#[utoipa::path(get, path = "/api/v1/agents/{id}/health", operation_id = "get_agents_by_id_health", tag = "agents", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Agent id")),
    responses((status = 200, description = "What the runtime said (or that it did not answer).", body = AgentHealthView),
        resp::Unauthorized, resp::Forbidden, resp::NotFound))]
pub(crate) async fn health(
    State(state): State<AppState>,
    caller: ApprovedUser,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<AgentHealthView>, ApiError> {
    let agent = views::agent(&state.db, caller.id, AgentId(id)).await?;
    let runtime_status = match (&agent.endpoint, agent.status.as_str()) {
        (Some(endpoint), "running") => state
            .http
            .get(format!("{}/health", endpoint.trim_end_matches('/')))
            .timeout(HEALTH_TIMEOUT)
            .send()
            .await
            .ok()
            .map(|response| response.status().as_u16()),
        _ => None,
    };
    Ok(Json(AgentHealthView {
        agent_id: agent.id,
        status: agent.status,
        endpoint: agent.endpoint,
        healthy: runtime_status.is_some_and(|code| (200..300).contains(&code)),
        runtime_status,
        checked_at: Utc::now(),
    }))
}
