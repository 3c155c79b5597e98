//! The runtime in model proxy mode (`WARREN_AGENT_MODEL_PROXY`, Warren's ADR 23): it calls
//! `{platform}/api/v1/runtime/agents/{id}/model/{provider}` with its own token and no provider
//! key, a run may switch the protocol but not bring a key, and the platform's refusals (marked
//! by their `warren-proxy-error` header) become the run errors they name. The platform here is a
//! local server that records each call and either relays it to the scripted model server or
//! refuses it as the edge's proxy does.

mod common;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::{Agent, TOKEN};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use warren_agent::config::{ModelProxy, Platform};
use warren_testkit::model_server::{ModelServer, Reply};

/// A call the platform received: its path and the key it presented, by header.
#[derive(Clone, Debug)]
struct Call {
    path: String,
    bearer: Option<String>,
    x_api_key: Option<String>,
}

/// What the platform answers next: relay to the model server, or refuse like the proxy.
#[derive(Clone)]
enum Answer {
    Relay,
    Refuse(u16, &'static str, &'static str),
    /// A provider's own error passed through (no proxy header), whatever its body says.
    Provider(u16, Value),
}

#[derive(Clone)]
struct PlatformStub {
    model: String,
    calls: Arc<Mutex<Vec<Call>>>,
    answers: Arc<Mutex<VecDeque<Answer>>>,
}

async fn model_call(
    State(platform): State<PlatformStub>,
    Path((agent, protocol, rest)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    platform.calls.lock().expect("calls").push(Call {
        path: format!("/agents/{agent}/model/{protocol}/{rest}"),
        bearer: header("authorization").and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned)),
        x_api_key: header("x-api-key"),
    });
    let answer = platform
        .answers
        .lock()
        .expect("answers")
        .pop_front()
        .unwrap_or(Answer::Relay);
    match answer {
        Answer::Relay => {
            let mut request = reqwest::Client::new()
                .post(format!("{}/{rest}", platform.model))
                .header("content-type", "application/json")
                .body(body);
            if let Some(version) = header("anthropic-version") {
                request = request.header("anthropic-version", version);
            }
            let relayed = request.send().await.expect("the model server");
            let status = StatusCode::from_u16(relayed.status().as_u16()).expect("status");
            let content_type = header_of(&relayed);
            let bytes = relayed.bytes().await.expect("body");
            (status, [("content-type", content_type)], bytes).into_response()
        }
        Answer::Refuse(status, code, message) => (
            StatusCode::from_u16(status).expect("status"),
            [("warren-proxy-error", code)],
            axum::Json(json!({"error": {"code": code, "message": message}})),
        )
            .into_response(),
        Answer::Provider(status, body) => (
            StatusCode::from_u16(status).expect("status"),
            axum::Json(body),
        )
            .into_response(),
    }
}

fn header_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned()
}

/// A platform relaying to `model`, and a runtime (agent `a1`) calling its model through it.
async fn proxied(model: &ModelServer) -> (Agent, PlatformStub) {
    let platform = PlatformStub {
        model: model.url(),
        calls: Arc::default(),
        answers: Arc::default(),
    };
    let app = Router::new()
        .route(
            "/api/v1/runtime/agents/{agent}/model/{protocol}/{*rest}",
            post(model_call),
        )
        .with_state(platform.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let agent = Agent::start(model, |config| {
        let platform = Platform {
            url,
            agent_id: "a1".into(),
        };
        config.model.base_url = None;
        config.model.api_key = None;
        config.model.proxy = Some(ModelProxy::new(&platform, &config.token));
        config.platform = Some(platform);
    })
    .await;
    (agent, platform)
}

fn last_error(events: &[common::SseEvent]) -> Value {
    let last = events.last().expect("a terminal event");
    assert_eq!(last.kind(), "error", "{events:?}");
    last.data.clone()
}

#[tokio::test]
async fn through_the_proxy_the_runtime_presents_its_own_token_and_a_run_may_switch_protocol() {
    let model = ModelServer::start().await;
    model.push(Reply::text("Hello through the platform."));
    model.push(Reply::text("And in Anthropic's words."));
    let (agent, platform) = proxied(&model).await;

    let events = agent.chat(json!({"message": "hi", "chat_id": "c"})).await;
    let done = events.last().expect("done");
    assert_eq!(done.kind(), "done", "{events:?}");
    assert_eq!(done.data["text"], "Hello through the platform.");
    let events = agent
        .chat(json!({"message": "again", "chat_id": "c", "provider": "anthropic"}))
        .await;
    assert_eq!(events.last().expect("done").kind(), "done", "{events:?}");

    let calls = platform.calls.lock().expect("calls").clone();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].path, "/agents/a1/model/openai/chat/completions");
    assert_eq!(calls[0].bearer.as_deref(), Some(TOKEN));
    assert_eq!(calls[1].path, "/agents/a1/model/anthropic/messages");
    assert_eq!(calls[1].x_api_key.as_deref(), Some(TOKEN));
    assert_eq!(model.recorded()[1].path, "/v1/messages");
}

#[tokio::test]
async fn through_the_proxy_a_run_cannot_bring_a_key_or_a_base_url() {
    let model = ModelServer::start().await;
    let (agent, platform) = proxied(&model).await;
    for extra in [
        json!({"api_key": "sk-smuggled"}),
        json!({"base_url": "http://elsewhere.example/v1"}),
    ] {
        let mut body = json!({"message": "hi", "chat_id": "c"});
        body.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        let response = agent.post_chat(body).await;
        assert_eq!(response.status(), 400, "{extra}");
        let answer: Value = response.json().await.expect("envelope");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("model proxy")),
            "{answer}"
        );
    }
    assert!(platform.calls.lock().expect("calls").is_empty());
}

#[tokio::test]
async fn the_proxys_refusals_become_the_run_errors_they_name_and_a_providers_errors_do_not() {
    let model = ModelServer::start().await;
    let (agent, platform) = proxied(&model).await;
    let script = [
        (
            Answer::Refuse(
                503,
                "model_not_configured",
                "no model provider is configured",
            ),
            "model_not_configured",
            false,
        ),
        (
            Answer::Refuse(
                502,
                "model_unreachable",
                "could not reach the openrouter model provider",
            ),
            "model_unreachable",
            true,
        ),
        (
            Answer::Refuse(
                429,
                "quota_exceeded",
                "your plan allows 50 tokens per day; you have used 60",
            ),
            "quota_exceeded",
            false,
        ),
        // A provider's body may say anything: without the platform's header it is the
        // provider's error.
        (
            Answer::Provider(
                429,
                json!({"error": {"code": "quota_exceeded", "message": "slow down"}}),
            ),
            "model_http_error",
            true,
        ),
    ];
    for (n, (answer, code, retryable)) in script.into_iter().enumerate() {
        platform.answers.lock().expect("answers").push_back(answer);
        let events = agent
            .chat(json!({"message": "hi", "chat_id": format!("c{n}")}))
            .await;
        let error = last_error(&events);
        assert_eq!(error["code"], code, "{error}");
        assert_eq!(error["retryable"], retryable, "{error}");
        if code == "quota_exceeded" {
            assert_eq!(
                error["message"],
                "your plan allows 50 tokens per day; you have used 60"
            );
        }
    }
    assert_eq!(model.request_count(), 0);
}
