//! The model proxy's routes (ADR 23): an agent runtime calls its model here with its own agent
//! token, as it would call the provider, and never holds a provider key.
//!
//! - `POST /runtime/agents/{agent_id}/model/openai/chat/completions` (OpenAI chat completions;
//!   token as `Authorization: Bearer`),
//! - `POST /runtime/agents/{agent_id}/model/anthropic/messages` (Anthropic Messages; token as
//!   `x-api-key`, or Bearer),
//!
//! so a runtime whose base URL is `{platform}/api/v1/runtime/agents/{id}/model/openai` (or
//! `/anthropic`) and whose key is its agent token works unchanged. The use case is
//! [`crate::app::model`]; here requests and answers are only translated. The proxy's own
//! refusals carry the [`PROXY_ERROR`] header with their code, so a runtime tells them apart
//! from a provider's errors, which pass through unchanged.
//!
//! These routes are outside the per-IP write limit and the idempotency layer: every runtime of
//! a host calls from one address, a model call is not a replayable write, and the token quota
//! bounds them instead.

use crate::app::model::{self, ModelCall};
use crate::error::ApiError;
use crate::openapi::resp;
use crate::routes::ApiRouter;
use crate::runtime_api::RuntimeCaller;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use warren_domain::user::ModelProtocol;

/// The header on the proxy's own error answers, naming their code (`model_not_configured`,
/// `model_unreachable`, `quota_exceeded`, …).
pub const PROXY_ERROR: &str = "warren-proxy-error";

const OPENAI_PATH: &str = "/model/openai/chat/completions";
const ANTHROPIC_PATH: &str = "/model/anthropic/messages";

/// The model proxy's routes.
pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .post(
            &format!("/runtime/agents/{{agent_id}}{OPENAI_PATH}"),
            openai,
        )
        .post(
            &format!("/runtime/agents/{{agent_id}}{ANTHROPIC_PATH}"),
            anthropic,
        )
}

/// Whether `path` (with or without the `/api/v1` prefix) is a model proxy route.
pub fn is_model_path(path: &str) -> bool {
    path.contains("/runtime/agents/")
        && (path.ends_with(OPENAI_PATH) || path.ends_with(ANTHROPIC_PATH))
}

/// An OpenAI chat completion (streamed or not), forwarded to the agent owner's model provider
/// with the real key; the provider's answer streams back unchanged.
#[utoipa::path(post, path = "/api/v1/runtime/agents/{agent_id}/model/openai/chat/completions", operation_id = "post_runtime_model_openai", tag = "runtime", security(("agent_token" = [])),
    params(("agent_id" = Uuid, Path, description = "The calling runtime's agent")),
    request_body(content = Object, content_type = "application/json",
        description = "An OpenAI chat completions request, at most `WARREN_MODEL_PROXY_MAX_BODY_BYTES`. A streamed one is sent with `stream_options.include_usage`."),
    responses((status = 200, description = "The provider's answer: a `chat.completion` or its event stream. Its other statuses and error bodies pass through too.",
            content((Object = "application/json"), (String = "text/event-stream"))),
        resp::BadRequest, resp::Unauthorized, resp::Conflict, resp::TooLarge, resp::RateLimited,
        resp::BadGateway, resp::Unavailable))]
pub(crate) async fn openai(
    State(state): State<AppState>,
    caller: RuntimeCaller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    proxy(&state, &caller, ModelProtocol::Openai, headers, body).await
}

/// An Anthropic Messages request (streamed or not), forwarded to the agent owner's model
/// provider with the real key; the provider's answer streams back unchanged.
#[utoipa::path(post, path = "/api/v1/runtime/agents/{agent_id}/model/anthropic/messages", operation_id = "post_runtime_model_anthropic", tag = "runtime", security(("agent_token" = [])),
    params(("agent_id" = Uuid, Path, description = "The calling runtime's agent")),
    request_body(content = Object, content_type = "application/json",
        description = "An Anthropic Messages request, at most `WARREN_MODEL_PROXY_MAX_BODY_BYTES`."),
    responses((status = 200, description = "The provider's answer: a `message` or its event stream. Its other statuses and error bodies pass through too.",
            content((Object = "application/json"), (String = "text/event-stream"))),
        resp::BadRequest, resp::Unauthorized, resp::Conflict, resp::TooLarge, resp::RateLimited,
        resp::BadGateway, resp::Unavailable))]
pub(crate) async fn anthropic(
    State(state): State<AppState>,
    caller: RuntimeCaller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    proxy(&state, &caller, ModelProtocol::Anthropic, headers, body).await
}

async fn proxy(
    state: &AppState,
    caller: &RuntimeCaller,
    protocol: ModelProtocol,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let call = ModelCall {
        protocol,
        headers,
        body,
    };
    match model::forward(state, caller, call).await {
        Ok(forwarded) => (forwarded.status, forwarded.headers, forwarded.body).into_response(),
        Err(err) => refusal(err),
    }
}

/// The proxy's own refusal: the error envelope, with its code in [`PROXY_ERROR`] too.
fn refusal(err: ApiError) -> Response {
    let code = err.body().code;
    let mut response = err.into_response();
    if let Ok(code) = HeaderValue::from_str(&code) {
        response.headers_mut().insert(PROXY_ERROR, code);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_paths_are_recognised_with_or_without_the_prefix() {
        let id = "00000000-0000-0000-0000-000000000001";
        assert!(is_model_path(&format!(
            "/api/v1/runtime/agents/{id}/model/openai/chat/completions"
        )));
        assert!(is_model_path(&format!(
            "/runtime/agents/{id}/model/anthropic/messages"
        )));
        assert!(!is_model_path(&format!("/runtime/agents/{id}/sessions")));
        assert!(!is_model_path("/api/v1/chat/x/model/anthropic/messages"));
    }
}
