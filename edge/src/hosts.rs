//! `/api/v1/admin/hosts*`: the machines the `ssh` provisioner places agents on, for admins only
//! (docs/adr/0039-ssh-hosts.md).
//!
//! Registering a host seals its SSH private key in the `secrets` bucket first (under
//! `host-key.<name>`), then records `RegisterHost`; the key is never in the log and never shown
//! again. A listing reads the hosts from the log: their load (agents placed), capacity, state
//! and pinned SSH key. A host whose key changed legitimately (a reinstall) is re-pinned by an
//! admin, to a given key or to the next one seen. Removing a host is refused while agents are
//! placed on it.

use crate::error::ApiError;
use crate::extract::{AdminUser, ApiJson, ApiPath};
use crate::input::TextFields;
use crate::openapi::resp;
use crate::routes::ApiRouter;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use utoipa::ToSchema;
use warren_commands::CommandMeta;
use warren_domain::Actor;
use warren_domain::host::{Host, HostCommand, HostEngine, HostSpec, valid_host_key, valid_name};

/// The longest private key accepted, bytes.
const MAX_PRIVATE_KEY: usize = 16 * 1024;

/// The host routes.
pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .get("/admin/hosts", list)
        .post("/admin/hosts", register)
        .delete("/admin/hosts/{name}", remove)
        .put("/admin/hosts/{name}/host-key", repin)
}

/// `PUT /admin/hosts/{name}/host-key`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostKeyChange {
    /// The host's new SSH public key (`<type> <base64>`) to pin; `null` or left out: forget
    /// the pinned one, and the next contact pins what the host presents.
    pub host_key: Option<String>,
}

impl TextFields for HostKeyChange {}

/// `POST /admin/hosts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewHost {
    /// Its name: 1–63 lowercase letters, digits and dashes.
    pub name: String,
    /// Its address as the deployer and chat workers reach it (DNS name or IP).
    pub address: String,
    /// SSH port (default 22).
    pub port: Option<u16>,
    /// SSH user: root, or one that may `sudo` without a password (default `root`).
    pub user: Option<String>,
    /// The SSH private key (OpenSSH or PEM, unencrypted); stored encrypted, never shown again.
    pub private_key: String,
    /// How many agents it runs at most.
    pub capacity: u32,
    /// Labels a placement may ask for.
    #[serde(default)]
    pub labels: BTreeSet<String>,
    /// The platform's URL as this host's agents reach it (default: the platform's runtime URL).
    pub platform_url: Option<String>,
    /// The host's SSH public key (`<type> <base64>`) to pin now; else the first one seen is.
    pub host_key: Option<String>,
    /// How its agents run: `ssh` (default: processes under users of their own) or `docker`
    /// (containers of the host's Docker engine, reached through the SSH connection).
    #[schema(value_type = Option<String>, example = "docker")]
    pub engine: Option<HostEngine>,
}

impl TextFields for NewHost {}

/// A host as admins see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct HostView {
    /// Its name.
    pub name: String,
    /// Its address.
    pub address: String,
    /// SSH port.
    pub port: u16,
    /// SSH user.
    pub user: String,
    /// Agents it runs at most.
    pub capacity: u32,
    /// Agents placed on it.
    pub agents: usize,
    /// Its labels.
    pub labels: BTreeSet<String>,
    /// The platform's URL as its agents reach it, when not the default.
    pub platform_url: Option<String>,
    /// Its pinned SSH public key, once pinned.
    pub host_key: Option<String>,
    /// `ssh` or `docker`.
    pub engine: &'static str,
    /// `up` or `down`.
    pub state: &'static str,
    /// What the deployer saw, while it is down.
    pub down_reason: Option<String>,
}

impl HostView {
    fn of(name: String, host: &Host) -> Option<Self> {
        let spec = host.spec.as_ref()?;
        (!host.removed).then(|| Self {
            name,
            address: spec.address.clone(),
            port: spec.port,
            user: spec.user.clone(),
            capacity: spec.capacity,
            agents: host.agents.len(),
            labels: spec.labels.clone(),
            platform_url: spec.platform_url.clone(),
            host_key: host.host_key.clone(),
            engine: spec.engine.as_str(),
            state: if host.down { "down" } else { "up" },
            down_reason: host.down_reason.clone(),
        })
    }
}

fn looks_like_private_key(key: &str) -> bool {
    let key = key.trim();
    key.len() <= MAX_PRIVATE_KEY
        && key.starts_with("-----BEGIN ")
        && key.contains("PRIVATE KEY-----")
        && key.ends_with("-----")
}

/// Registered hosts, by name, with their load.
#[utoipa::path(get, path = "/api/v1/admin/hosts", operation_id = "get_admin_hosts", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "Hosts by name.", body = Vec<HostView>),
        resp::Unauthorized, resp::Forbidden))]
pub(crate) async fn list(
    State(state): State<AppState>,
    _admin: AdminUser,
) -> Result<Json<Vec<HostView>>, ApiError> {
    let hosts = state.commands.hosts().await.map_err(ApiError::internal)?;
    Ok(Json(
        hosts
            .into_iter()
            .filter_map(|(name, host)| HostView::of(name, &host))
            .collect(),
    ))
}

/// Register a host agents can be placed on over SSH.
#[utoipa::path(post, path = "/api/v1/admin/hosts", operation_id = "post_admin_hosts", tag = "admin", security(("bearer" = [])),
    request_body = NewHost,
    responses((status = 201, description = "The registered host.", body = HostView),
        resp::BadRequest, resp::Unauthorized, resp::Forbidden, resp::Conflict, resp::Validation, resp::RateLimited))]
pub(crate) async fn register(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiJson(body): ApiJson<NewHost>,
) -> Result<(StatusCode, Json<HostView>), ApiError> {
    if !valid_name(&body.name) {
        return Err(ApiError::invalid_field(
            "name",
            "must be 1 to 63 lowercase letters, digits and dashes",
        ));
    }
    if !looks_like_private_key(&body.private_key) {
        return Err(ApiError::invalid_field(
            "private_key",
            "must be one unencrypted private key in OpenSSH or PEM form (at most 16 KiB)",
        ));
    }
    let (existing, _) = state
        .commands
        .hosts
        .load(&body.name)
        .await
        .map_err(ApiError::internal)?;
    if existing.name.is_some() {
        return Err(ApiError::conflict(
            "already_exists",
            format!("host {} already exists", body.name),
        ));
    }
    let spec = HostSpec {
        address: body.address,
        port: body.port.unwrap_or(22),
        user: body.user.unwrap_or_else(|| "root".into()),
        capacity: body.capacity,
        labels: body.labels,
        platform_url: body.platform_url,
        engine: body.engine.unwrap_or_default(),
    };
    // Checked before the key is stored, so a refused registration leaves no secret behind.
    if body
        .host_key
        .as_deref()
        .is_some_and(|key| !valid_host_key(key))
    {
        return Err(ApiError::invalid_field(
            "host_key",
            "must be one SSH public key, '<type> <base64>'",
        ));
    }
    spec.validate().map_err(|err| match err {
        warren_domain::host::HostError::InvalidInput { field, reason } => {
            ApiError::invalid_field(field, reason)
        }
        other => ApiError::internal(other),
    })?;
    let mut private_key = body.private_key.trim().to_owned();
    private_key.push('\n');
    state
        .host_keys
        .put(&body.name, &private_key)
        .await
        .map_err(ApiError::internal)?;
    state
        .commands
        .hosts
        .execute(
            &body.name,
            HostCommand::RegisterHost {
                name: body.name.clone(),
                spec,
                host_key: body.host_key,
            },
            &CommandMeta::new(Actor::User(admin.id)),
        )
        .await?;
    tracing::info!(admin = %admin.id, host = %body.name, "host registered");
    Ok((StatusCode::CREATED, Json(view(&state, body.name).await?)))
}

/// Forget a host (refused while agents are placed on it); its SSH key is destroyed.
#[utoipa::path(delete, path = "/api/v1/admin/hosts/{name}", operation_id = "delete_admin_hosts_by_name", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "Host name")),
    responses((status = 204, description = "Removed."),
        resp::Unauthorized, resp::Forbidden, resp::NotFound, resp::Conflict, resp::RateLimited))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    if !valid_name(&name) {
        return Err(ApiError::NotFound);
    }
    state
        .commands
        .hosts
        .execute(
            &name,
            HostCommand::RemoveHost,
            &CommandMeta::new(Actor::User(admin.id)),
        )
        .await?;
    state
        .host_keys
        .purge(&name)
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(admin = %admin.id, host = %name, "host removed");
    Ok(StatusCode::NO_CONTENT)
}

/// Re-pin a host's SSH key after a legitimate change (a reinstall): to the key given, or,
/// with `host_key` null, to the one the host presents at the next contact.
#[utoipa::path(put, path = "/api/v1/admin/hosts/{name}/host-key", operation_id = "put_admin_hosts_host_key", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "Host name")),
    request_body = HostKeyChange,
    responses((status = 200, description = "The host, re-pinned.", body = HostView),
        resp::BadRequest, resp::Unauthorized, resp::Forbidden, resp::NotFound, resp::Validation, resp::RateLimited))]
pub(crate) async fn repin(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<HostKeyChange>,
) -> Result<Json<HostView>, ApiError> {
    if !valid_name(&name) {
        return Err(ApiError::NotFound);
    }
    let forgotten = body.host_key.is_none();
    state
        .commands
        .hosts
        .execute(
            &name,
            HostCommand::RepinHostKey {
                host_key: body.host_key,
            },
            &CommandMeta::new(Actor::User(admin.id)),
        )
        .await?;
    tracing::info!(admin = %admin.id, host = %name, forgotten, "host key re-pinned");
    Ok(Json(view(&state, name).await?))
}

/// Host `name` as the log has it now.
async fn view(state: &AppState, name: String) -> Result<HostView, ApiError> {
    let (host, _) = state
        .commands
        .hosts
        .load(&name)
        .await
        .map_err(ApiError::internal)?;
    HostView::of(name, &host).ok_or(ApiError::NotFound)
}
