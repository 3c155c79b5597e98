//! Call a model on an agent's behalf: the model proxy's use case (ADR 23). An agent runtime
//! holds no provider key; it calls the platform with its own agent token, and this forwards the
//! call to the owner's upstream ([`upstream`]) with the real key, within the owner's daily token
//! quota, streaming the answer back as it arrives while [`meter`] reads the provider's usage
//! from it; once the answer ends, the usage is recorded in the log (`ModelUsageMetered`, as
//! `system:edge`), where the projector counts it for the quota.
//!
//! Refusals, each before anything is sent upstream: a body past the cap (413
//! `payload_too_large`) or not a JSON object (400 `invalid_json`); no upstream configured (503
//! `model_not_configured`); a protocol path that is not the upstream's (409
//! `model_protocol_mismatch`); the quota used up (429 `quota_exceeded`); more than
//! [`in_flight::MAX_PER_AGENT`] calls of the agent's in flight (429 `too_many_model_calls`).
//! Provider-side tools that would reach the internet for the agent (Anthropic's
//! `mcp_servers`, `container`) are removed from the request, and its `model` is the agent's
//! own whatever the runtime asked (a prompt-injected runtime cannot spend the key on a costlier
//! model). An upstream that cannot
//! be reached is 502 `model_unreachable`. The provider's own answers, errors included, pass
//! through unchanged.

pub mod in_flight;
pub mod meter;
pub mod upstream;

use crate::error::ApiError;
use crate::quota;
use crate::runtime_api::RuntimeCaller;
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use chrono::Utc;
use futures::StreamExt;
use meter::{Meter, Usage};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use upstream::Upstream;
use warren_commands::CommandMeta;
use warren_commands::trace;
use warren_domain::Actor;
use warren_domain::agent::AgentCommand;
use warren_domain::ids::AgentId;
use warren_domain::text;
use warren_domain::user::ModelProtocol;

/// Chunks of an answer waiting for a slow runtime; past this the upstream read waits too.
const CHUNK_QUEUE: usize = 32;
/// The `anthropic-version` sent when the runtime sent none (the API requires one).
const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Request headers passed on to the provider; everything else (the agent token, hop-by-hop
/// headers, cookies, forwarding headers) stays here.
const REQUEST_HEADERS: [&str; 3] = ["accept", "anthropic-version", "anthropic-beta"];
/// Answer headers passed back to the runtime (the body's type, and what a client may act on).
const ANSWER_HEADERS: [&str; 4] = ["content-type", "retry-after", "request-id", "x-request-id"];

/// A model call as a runtime sent it.
pub struct ModelCall {
    /// The protocol of the path it called.
    pub protocol: ModelProtocol,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body (read here within the cap).
    pub body: Body,
}

/// The provider's answer, on its way back: status, the headers passed on, and the body as it
/// streams.
pub struct Forwarded {
    /// The provider's status.
    pub status: StatusCode,
    /// The headers passed on.
    pub headers: HeaderMap,
    /// The body, chunk by chunk as the provider sends it.
    pub body: Body,
}

fn refused(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::client(status, code, message)
}

/// Forwards `call` for `caller`'s agent (see the module doc for the refusals).
pub async fn forward(
    state: &AppState,
    caller: &RuntimeCaller,
    call: ModelCall,
) -> Result<Forwarded, ApiError> {
    let limit = state.settings.model_proxy_max_body_bytes;
    let body = axum::body::to_bytes(call.body, limit).await.map_err(|_| {
        refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("a model request may hold at most {limit} bytes"),
        )
    })?;
    let Ok(Value::Object(mut request)) = serde_json::from_slice::<Value>(&body) else {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body must be a JSON object",
        ));
    };
    let (owner, _) = state
        .commands
        .users
        .load(&caller.owner.to_string())
        .await
        .map_err(ApiError::internal)?;
    let upstream = upstream::resolve(state, caller.owner, &owner)
        .await?
        .ok_or_else(|| {
            refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "model_not_configured",
                "no model provider is configured for this agent: its owner has no key of their \
                 own and the platform has no default",
            )
        })?;
    if upstream.protocol() != call.protocol {
        let expected = upstream.protocol();
        return Err(refused(
            StatusCode::CONFLICT,
            "model_protocol_mismatch",
            format!(
                "this agent's model provider ({}) speaks the {expected} protocol: call \
                 .../model/{expected} instead of .../model/{}",
                upstream.provider, call.protocol
            ),
        ));
    }
    quota::check_token_quota_at(
        &state.db,
        &state.settings.tiers,
        caller.owner,
        owner.tier,
        Utc::now(),
    )
    .await?;
    let slot = state.model_calls.take(caller.agent).ok_or_else(|| {
        refused(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_model_calls",
            format!(
                "this agent already has {} model calls in flight; wait for one to end",
                in_flight::MAX_PER_AGENT
            ),
        )
    })?;
    let stripped = strip_provider_side_reach(&mut request);
    let pinned = pin_model(&mut request, &caller.model);
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .map(|model| text::MODEL.fit(model))
        .unwrap_or_default();
    let asked = call.protocol == ModelProtocol::Openai && ask_for_usage(&mut request);
    let body = if asked || stripped || pinned {
        Bytes::from(serde_json::to_vec(&request).map_err(ApiError::internal)?)
    } else {
        body
    };
    let response = send(state, &upstream, &call.headers, body).await?;
    let status = response.status();
    let mut headers = HeaderMap::new();
    for name in ANSWER_HEADERS {
        if let Some(value) = response.headers().get(name) {
            headers.insert(HeaderName::from_static(name), value.clone());
        }
    }
    let event_stream = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"));
    let usage = Metered {
        state: state.clone(),
        agent: caller.agent,
        upstream,
        model,
    };
    let meter = status
        .is_success()
        .then(|| (Meter::new(call.protocol, event_stream), usage));
    Ok(Forwarded {
        status,
        headers,
        body: pump(response, meter, slot),
    })
}

/// Removes the request fields with which a provider would reach the internet on the agent's
/// behalf (Anthropic's MCP connector and code-execution container): a sandbox has no internet,
/// and these would give it one. `true` if the request changed.
fn strip_provider_side_reach(request: &mut Map<String, Value>) -> bool {
    let mut changed = false;
    for field in ["mcp_servers", "container"] {
        changed |= request.remove(field).is_some();
    }
    changed
}

/// Sets the request's `model` to the agent's own (the one its owner chose, in the log); `true`
/// if the request changed.
fn pin_model(request: &mut Map<String, Value>, model: &str) -> bool {
    if model.is_empty() || request.get("model").and_then(Value::as_str) == Some(model) {
        return false;
    }
    request.insert("model".into(), Value::String(model.to_owned()));
    true
}

/// Sets `stream_options.include_usage` on a streaming OpenAI request, so its last chunk
/// carries the usage the proxy counts; `true` if the request changed.
fn ask_for_usage(request: &mut Map<String, Value>) -> bool {
    if request.get("stream") != Some(&Value::Bool(true)) {
        return false;
    }
    let options = request.entry("stream_options").or_insert_with(|| json!({}));
    if !options.is_object() {
        *options = json!({});
    }
    match options.as_object_mut() {
        Some(options) if options.get("include_usage") != Some(&Value::Bool(true)) => {
            options.insert("include_usage".into(), Value::Bool(true));
            true
        }
        _ => false,
    }
}

/// Sends the call upstream with the real key in the provider's header style.
async fn send(
    state: &AppState,
    upstream: &Upstream,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<reqwest::Response, ApiError> {
    let mut request = state
        .model_http
        .post(upstream.url())
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    for name in REQUEST_HEADERS {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value.as_bytes());
        }
    }
    request = match upstream.protocol() {
        ModelProtocol::Openai => match upstream.api_key() {
            Some(key) => request.bearer_auth(key),
            None => request,
        },
        ModelProtocol::Anthropic => {
            if !headers.contains_key("anthropic-version") {
                request = request.header("anthropic-version", ANTHROPIC_VERSION);
            }
            match upstream.api_key() {
                Some(key) => request.header("x-api-key", key),
                None => request,
            }
        }
    };
    // The provider call is a span of the run's trace, its context on the request.
    let call = async {
        let request = request.header(trace::HEADER, trace::current().unwrap_or_else(trace::fresh));
        let answer = request.body(body).send().await;
        if let Ok(answer) = &answer {
            trace::attribute(
                "http.response.status_code",
                i64::from(answer.status().as_u16()),
            );
        }
        answer
    };
    let name = format!("model {}", upstream.provider);
    trace::child(name, trace::SpanKind::Client, call)
        .await
        .map_err(|err| {
            // The cause may name the URL; it goes to the log, the runtime gets the provider's name.
            tracing::warn!(
                provider = %upstream.provider,
                error = %crate::error::chain(&err),
                "the model provider could not be reached"
            );
            refused(
                StatusCode::BAD_GATEWAY,
                "model_unreachable",
                format!("could not reach the {} model provider", upstream.provider),
            )
        })
}

/// What a metered call records once its answer ends.
struct Metered {
    state: AppState,
    agent: AgentId,
    upstream: Upstream,
    model: String,
}

impl Metered {
    async fn record(self, usage: Usage) {
        let meta = CommandMeta::new(Actor::System("edge".into()));
        let command = AgentCommand::MeterModelUsage {
            provider: self.upstream.provider,
            model: self.model,
            own_key: self.upstream.own_key,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cached_input_tokens: usage.cached_input_tokens,
        };
        match self
            .state
            .commands
            .agents
            .execute(&self.agent.to_string(), command, &meta)
            .await
        {
            Ok(_) => tracing::debug!(
                agent_id = %self.agent,
                input_tokens = usage.input_tokens,
                output_tokens = usage.output_tokens,
                "model usage metered"
            ),
            Err(err) => tracing::warn!(
                agent_id = %self.agent,
                input_tokens = usage.input_tokens,
                output_tokens = usage.output_tokens,
                error = %err,
                "recording metered model usage failed"
            ),
        }
    }
}

/// The answer's body: a task of its own reads the provider and hands each chunk on as it
/// arrives (no buffering past [`CHUNK_QUEUE`] chunks), feeding the meter; when the answer ends,
/// breaks off or the runtime goes away, it records what the meter read. The task, not the
/// response, records, so a runtime that hangs up mid-answer is still counted.
fn pump(
    response: reqwest::Response,
    mut meter: Option<(Meter, Metered)>,
    slot: in_flight::Slot,
) -> Body {
    let (chunks, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(CHUNK_QUEUE);
    tokio::spawn(async move {
        let mut upstream = response.bytes_stream();
        loop {
            let next = tokio::select! {
                _ = chunks.closed() => break,
                next = upstream.next() => next,
            };
            match next {
                Some(Ok(chunk)) => {
                    if let Some((meter, _)) = &mut meter {
                        meter.feed(&chunk);
                    }
                    if chunks.send(Ok(chunk)).await.is_err() {
                        break;
                    }
                }
                Some(Err(err)) => {
                    let _ = chunks.send(Err(std::io::Error::other(err))).await;
                    break;
                }
                None => break,
            }
        }
        if let Some((meter, metered)) = meter
            && let Some(usage) = meter.finish()
        {
            metered.record(usage).await;
        }
        drop(slot);
    });
    Body::from_stream(futures::stream::unfold(receiver, |mut receiver| async {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("an object, got {other}"),
        }
    }

    #[test]
    fn provider_side_internet_access_is_removed_from_a_request() {
        let mut call = request(json!({
            "model": "m",
            "mcp_servers": [{"type": "url", "url": "https://example.test/"}],
            "container": "c",
        }));
        assert!(strip_provider_side_reach(&mut call));
        assert_eq!(call, request(json!({"model": "m"})));
        assert!(
            !strip_provider_side_reach(&mut call),
            "nothing left to remove"
        );
    }

    #[test]
    fn a_streaming_openai_request_is_made_to_report_its_usage() {
        let mut streaming = request(json!({"model": "m", "stream": true}));
        assert!(ask_for_usage(&mut streaming));
        assert_eq!(streaming["stream_options"], json!({"include_usage": true}));
        let mut asked =
            request(json!({"stream": true, "stream_options": {"include_usage": true, "x": 1}}));
        assert!(!ask_for_usage(&mut asked), "already asked: sent unchanged");
        let mut refused =
            request(json!({"stream": true, "stream_options": {"include_usage": false}}));
        assert!(ask_for_usage(&mut refused));
        assert_eq!(refused["stream_options"]["include_usage"], true);
        let mut whole = request(json!({"model": "m"}));
        assert!(
            !ask_for_usage(&mut whole),
            "a non-streamed answer has its usage"
        );
    }
}
