//! Reaching an agent's runtime on its owner's behalf: its base URL and token while it runs
//! (409 `agent_not_running` otherwise), and the one rule for workspace paths a client names.

use crate::error::ApiError;
use crate::state::AppState;
use axum::http::StatusCode;
use warren_domain::agent::{Agent, AgentStatus};
use warren_domain::ids::AgentId;

/// The runtime's base URL and bearer token, if the agent is running.
pub async fn endpoint(
    state: &AppState,
    agent_id: AgentId,
    agent: &Agent,
) -> Result<(reqwest::Url, String), ApiError> {
    let not_running = || ApiError::conflict("agent_not_running", "the agent is not running");
    let (AgentStatus::Running, Some(endpoint)) = (&agent.status, &agent.endpoint_url) else {
        return Err(not_running());
    };
    let url = reqwest::Url::parse(endpoint).map_err(ApiError::internal)?;
    let token = state
        .agent_tokens
        .get(agent_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(not_running)?;
    Ok((url, token))
}

/// A workspace-relative path that cannot leave the workspace, as its segments: no empty, `.`
/// or `..` segment, no leading `/`, no backslash or NUL (400 `invalid_path` otherwise). The
/// runtime checks again, symlinks included.
pub fn safe_path(path: &str) -> Result<Vec<&str>, ApiError> {
    let invalid = || {
        ApiError::client(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            "the path must stay inside the agent's workspace",
        )
    };
    if path.contains(['\\', '\0']) {
        return Err(invalid());
    }
    let segments: Vec<&str> = path.split('/').collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return Err(invalid());
    }
    Ok(segments)
}

/// 400 `invalid_path`: the runtime refused a path as not a file inside the workspace.
pub fn not_a_workspace_file() -> ApiError {
    ApiError::client(
        StatusCode::BAD_REQUEST,
        "invalid_path",
        "the path is not a file inside the agent's workspace",
    )
}

/// `url` with its path set to `/{first}/{segments…}`, each segment percent-encoded.
pub fn with_path(mut url: reqwest::Url, first: &str, segments: &[&str]) -> reqwest::Url {
    if let Ok(mut path) = url.path_segments_mut() {
        path.clear().push(first).extend(segments);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_leave_the_workspace_are_refused() {
        assert_eq!(
            safe_path("out/report.md").ok(),
            Some(vec!["out", "report.md"])
        );
        for bad in [
            "../etc/passwd",
            "a/../../b",
            "/etc/passwd",
            "a//b",
            "./a",
            "a\\..\\b",
            "",
        ] {
            assert!(safe_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn segments_are_encoded_into_the_runtime_url() {
        let base = reqwest::Url::parse("http://127.0.0.1:4100/").expect("url");
        let url = with_path(base, "files", &["out dir", "a?b.md"]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:4100/files/out%20dir/a%3Fb.md"
        );
    }
}
