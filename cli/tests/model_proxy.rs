//! The model proxy (ADR 23), end to end: the real `warren dev` deploys real `warren-agent`
//! processes that hold no provider key and call their model through the edge with their own
//! agent token; the scripted model server sees only the real key (the platform's or the
//! user's), the answer streams back as it is written, the provider's usage lands in the read
//! model, and the daily token quota stops the next call with a run error the user can read.

mod chat_support;
mod common;
mod edge_support;

use chat_support::{Chat, runtime_env};
use serde_json::{Value, json};
use std::time::Duration;
use warren_testkit::model_server::Reply;
use warren_testkit::{ModelServer, wait_for};

/// The platform key of [`Chat::start`].
const PLATFORM_KEY: &str = "sk-platform";

/// Every `NAME=value` of a process's environment.
fn environ(pid: i32) -> Vec<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("the runtime's environ");
    environ
        .split(|&b| b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .collect()
}

/// The agent's proxy URL for `tail` (`openai/chat/completions`, `anthropic/messages`).
fn proxy_url(chat: &Chat, agent_id: &str, tail: &str) -> String {
    format!(
        "{}/api/v1/runtime/agents/{agent_id}/model/{tail}",
        chat.platform.base
    )
}

/// A minimal OpenAI chat completions request.
fn completion(stream: bool) -> Value {
    json!({
        "model": "scripted",
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
    })
}

/// The `ModelUsageMetered` events of the agent, oldest first.
async fn metered(chat: &Chat) -> Vec<Value> {
    chat.agent_commits()
        .await
        .iter()
        .map(|commit| serde_json::from_str::<Value>(commit).expect("commit JSON"))
        .flat_map(|commit| commit.as_array().cloned().unwrap_or_default())
        .filter(|event| event["type"] == "ModelUsageMetered")
        .collect()
}

/// Today's model tokens on `/usage` once they reach `at_least`.
async fn tokens_used(chat: &Chat, at_least: u64) -> Value {
    wait_for(Duration::from_secs(30), || async {
        let usage = chat
            .platform
            .get("/api/v1/usage", Some(&chat.user.access))
            .await
            .body;
        (usage["tokens"]["used"].as_u64()? >= at_least).then_some(usage["tokens"].clone())
    })
    .await
}

#[tokio::test]
async fn a_runtime_holds_no_provider_key_and_the_provider_sees_only_the_real_one() {
    let chat = Chat::start(&[]).await;
    chat.model.expect_api_key(PLATFORM_KEY);
    let pid = chat.agent_pid();
    let token = runtime_env(pid, "WARREN_AGENT_TOKEN").expect("the runtime's token");

    // What the deployer gave the runtime: its token and the proxy, no provider key or URL.
    let env = environ(pid);
    for entry in &env {
        assert!(!entry.contains(PLATFORM_KEY), "a provider key: {entry}");
        assert!(
            !entry.contains(&chat.model.url()),
            "the provider's URL: {entry}"
        );
    }
    assert_eq!(
        runtime_env(pid, "WARREN_AGENT_MODEL_PROXY").as_deref(),
        Some("true")
    );
    for absent in ["WARREN_AGENT_API_KEY", "WARREN_AGENT_BASE_URL"] {
        assert_eq!(runtime_env(pid, absent), None, "{absent} is set");
    }

    // A run: the model is called through the proxy with the platform key, token by token.
    chat.model.push(
        Reply::text("one two three four five")
            .with_chunk_delay(Duration::from_millis(40))
            .with_usage(31, 5),
    );
    let mut run = chat.send("count for me").await;
    let done = run.finish().await;
    assert_eq!(done.kind(), "done", "{:?}", run.frames);
    assert_eq!(done.data["text"], "one two three four five");
    let deltas = run.frames.iter().filter(|f| f.kind() == "text").count();
    assert!(
        deltas >= 2,
        "the reply streamed in pieces: {:?}",
        run.frames
    );
    let recorded = chat.model.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].path, "/v1/chat/completions");
    assert_eq!(recorded[0].api_key.as_deref(), Some(PLATFORM_KEY));
    assert!(!recorded[0].body.to_string().contains(&token));
    assert_eq!(recorded[0].body["stream_options"]["include_usage"], true);

    // The provider's own numbers, recorded by the edge and counted for the owner.
    let tokens = tokens_used(&chat, 36).await;
    assert_eq!(tokens["used"], 36, "{tokens}");
    assert_eq!(tokens["limit"], 200_000, "the free tier's default");
    let events = metered(&chat).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event["actor"], json!({"kind": "system", "id": "edge"}));
    assert_eq!(event["data"]["provider"], "openai");
    assert_eq!(event["data"]["own_key"], false);
    assert_eq!(event["data"]["input_tokens"], 31);
    assert_eq!(event["data"]["output_tokens"], 5);
}

#[tokio::test]
async fn a_users_own_anthropic_key_is_used_through_the_anthropic_path_and_metered_as_theirs() {
    let chat = Chat::start(&[]).await;
    let own = ModelServer::start_with_key("sk-ant-users-own-0123456789").await;
    let added = chat
        .platform
        .post(
            "/api/v1/users/me/api-keys",
            Some(&chat.user.access),
            json!({
                "provider": "anthropic",
                "base_url": own.url(),
                "api_key": "sk-ant-users-own-0123456789",
            }),
        )
        .await;
    assert_eq!(added.status, 201, "{added:?}");
    own.push(Reply::text("In my own words.").with_usage(12, 4));
    let mut run = chat.send("whose words?").await;
    let done = run.finish().await;
    assert_eq!(done.data["text"], "In my own words.", "{:?}", run.frames);
    let recorded = own.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].path, "/v1/messages");
    assert_eq!(
        recorded[0].api_key.as_deref(),
        Some("sk-ant-users-own-0123456789")
    );
    assert_eq!(chat.model.request_count(), 0, "not the platform's provider");
    tokens_used(&chat, 16).await;
    let events = metered(&chat).await;
    assert_eq!(events[0]["data"]["provider"], "anthropic");
    assert_eq!(events[0]["data"]["own_key"], true);
    assert_eq!(events[0]["data"]["input_tokens"], 12);
    assert_eq!(events[0]["data"]["output_tokens"], 4);
}

#[tokio::test]
async fn past_the_daily_token_quota_the_next_call_is_refused_and_the_run_says_why() {
    let chat = Chat::start(&[("WARREN_TIER_FREE_TOKENS_PER_DAY", "50")]).await;
    chat.model
        .push(Reply::text("A long answer.").with_usage(40, 20));
    let mut run = chat.send("first").await;
    assert_eq!(run.finish().await.kind(), "done", "{:?}", run.frames);
    let tokens = tokens_used(&chat, 60).await;
    assert_eq!(tokens["limit"], 50);

    chat.model.push(Reply::text("never sent"));
    let mut run = chat.send("second").await;
    let end = run.finish().await;
    assert_eq!(end.kind(), "error", "{:?}", run.frames);
    assert_eq!(end.data["code"], "quota_exceeded", "{end:?}");
    assert_eq!(end.data["retryable"], false);
    let message = end.data["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("50 tokens per day") && message.contains("used 60"),
        "{message}"
    );
    assert_eq!(chat.model.request_count(), 1, "the provider was not called");

    // The proxy's own answer, as a runtime gets it.
    let token = runtime_env(chat.agent_pid(), "WARREN_AGENT_TOKEN").expect("token");
    let refused = chat
        .platform
        .http
        .post(proxy_url(&chat, &chat.agent_id, "openai/chat/completions"))
        .bearer_auth(&token)
        .json(&completion(true))
        .send()
        .await
        .expect("proxy request");
    assert_eq!(refused.status(), 429);
    assert_eq!(
        refused
            .headers()
            .get("warren-proxy-error")
            .and_then(|v| v.to_str().ok()),
        Some("quota_exceeded")
    );
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.expect("envelope");
    assert_eq!(body["error"]["code"], "quota_exceeded");
    assert_eq!(body["error"]["details"]["resource"], "tokens");
}

#[tokio::test]
async fn only_the_agents_own_token_opens_its_proxy_and_nothing_reaches_the_provider_otherwise() {
    let chat = Chat::start(&[("WARREN_TIER_FREE_MAX_AGENTS", "2")]).await;
    let other = chat
        .platform
        .post(
            "/api/v1/agents",
            Some(&chat.user.access),
            json!({"name": "Other"}),
        )
        .await;
    assert_eq!(other.status, 201, "{other:?}");
    let other_id = other.body["id"].as_str().expect("id").to_owned();
    let other_pid = wait_for(Duration::from_secs(60), || async {
        let record = std::fs::read_to_string(
            chat.agent_dir()
                .join("..")
                .join(&other_id)
                .join("process.json"),
        )
        .ok()?;
        let record: Value = serde_json::from_str(&record).ok()?;
        i32::try_from(record["pid"].as_i64()?).ok()
    })
    .await;
    let other_token = wait_for(Duration::from_secs(10), || async {
        runtime_env(other_pid, "WARREN_AGENT_TOKEN")
    })
    .await;
    let own_token = runtime_env(chat.agent_pid(), "WARREN_AGENT_TOKEN").expect("token");

    let call = |tail: &'static str, auth: Option<(&'static str, String)>| {
        let request = chat
            .platform
            .http
            .post(proxy_url(&chat, &chat.agent_id, tail))
            .json(&completion(false));
        let request = match auth {
            Some((header, value)) => request.header(header, value),
            None => request,
        };
        async move {
            let response = request.send().await.expect("proxy request");
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, body["error"]["code"].clone())
        }
    };
    let bearer = |token: &str| Some(("authorization", format!("Bearer {token}")));
    let unauthorized = json!("invalid_agent_token");
    for tail in ["openai/chat/completions", "anthropic/messages"] {
        assert_eq!(
            call(tail, None).await,
            (401, unauthorized.clone()),
            "{tail}"
        );
        assert_eq!(
            call(tail, bearer("not-a-token")).await,
            (401, unauthorized.clone())
        );
        assert_eq!(
            call(tail, bearer(&other_token)).await,
            (401, unauthorized.clone()),
            "another agent's token"
        );
        assert_eq!(
            call(tail, Some(("x-api-key", other_token.clone()))).await,
            (401, unauthorized.clone())
        );
        assert_eq!(
            call(tail, bearer(&chat.user.access)).await,
            (401, unauthorized.clone()),
            "a user's access token"
        );
    }
    assert_eq!(chat.model.request_count(), 0);

    // The agent's own token, as Anthropic clients send it, on the path of another protocol:
    // refused, saying which protocol to speak.
    let (status, code) = call("anthropic/messages", Some(("x-api-key", own_token.clone()))).await;
    assert_eq!((status, code), (409, json!("model_protocol_mismatch")));
    // And a non-streamed call on the right path is forwarded, its usage counted.
    chat.model.push(Reply::text("Whole.").with_usage(3, 2));
    let response = chat
        .platform
        .http
        .post(proxy_url(&chat, &chat.agent_id, "openai/chat/completions"))
        .bearer_auth(&own_token)
        .json(&completion(false))
        .send()
        .await
        .expect("proxy request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("a chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "Whole.");
    assert_eq!(
        chat.model.recorded()[0].api_key.as_deref(),
        Some(PLATFORM_KEY)
    );
    tokens_used(&chat, 5).await;

    // A long history is larger than the edge's limit for other requests (256 KiB), not than
    // the model proxy's (8 MiB by default).
    chat.model.push(Reply::text("Read it all."));
    let long = json!({
        "model": "scripted",
        "messages": [{"role": "user", "content": "x".repeat(300 * 1024)}],
    });
    let response = chat
        .platform
        .http
        .post(proxy_url(&chat, &chat.agent_id, "openai/chat/completions"))
        .bearer_auth(&own_token)
        .json(&long)
        .send()
        .await
        .expect("proxy request");
    assert_eq!(response.status(), 200);
    assert_eq!(chat.model.request_count(), 2);
}

#[tokio::test]
async fn an_answer_streams_through_as_it_is_written_and_a_body_past_the_cap_is_refused() {
    let chat = Chat::start(&[("WARREN_MODEL_PROXY_MAX_BODY_BYTES", "4096")]).await;
    let token = runtime_env(chat.agent_pid(), "WARREN_AGENT_TOKEN").expect("token");
    let url = proxy_url(&chat, &chat.agent_id, "openai/chat/completions");

    // The provider writes part of its answer and then nothing more: the part arrives anyway,
    // so the proxy holds nothing back.
    chat.model.push(Reply::text("first words").then_hang());
    let response = chat
        .platform
        .http
        .post(&url)
        .bearer_auth(&token)
        .json(&completion(true))
        .send()
        .await
        .expect("proxy request");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let mut body = Box::pin(response.bytes_stream());
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        use futures::StreamExt;
        while !seen.contains("words") {
            let chunk = body.next().await.expect("more").expect("a chunk");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the streamed part arrives while the provider still writes");
    assert!(seen.contains("first "), "{seen}");
    drop(body);

    let large = json!({
        "model": "scripted",
        "messages": [{"role": "user", "content": "x".repeat(5000)}],
    });
    let refused = chat
        .platform
        .http
        .post(&url)
        .bearer_auth(&token)
        .json(&large)
        .send()
        .await
        .expect("proxy request");
    assert_eq!(refused.status(), 413);
    let body: Value = refused.json().await.expect("envelope");
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert_eq!(
        chat.model.request_count(),
        1,
        "only the first call went out"
    );
}

#[tokio::test]
async fn a_runtime_cannot_choose_a_costlier_model_than_its_agents() {
    let chat = Chat::start(&[]).await;
    let token = runtime_env(chat.agent_pid(), "WARREN_AGENT_TOKEN").expect("token");
    let agent = chat
        .platform
        .get(
            &format!("/api/v1/agents/{}", chat.agent_id),
            Some(&chat.user.access),
        )
        .await
        .body;
    let own_model = agent["model"]
        .as_str()
        .expect("the agent's model")
        .to_owned();

    // A prompt-injected runtime asks for another model with the platform's key: the provider
    // is asked for the agent's own, and the usage is recorded under it.
    chat.model.push(Reply::text("fine").with_usage(3, 1));
    let mut request = completion(false);
    request["model"] = json!("the-most-expensive-model");
    let response = chat
        .platform
        .http
        .post(proxy_url(&chat, &chat.agent_id, "openai/chat/completions"))
        .bearer_auth(&token)
        .json(&request)
        .send()
        .await
        .expect("proxy request");
    assert_eq!(response.status(), 200);
    let recorded = chat.model.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].body["model"], own_model.as_str());
    assert!(
        !recorded[0]
            .body
            .to_string()
            .contains("the-most-expensive-model")
    );
    let events = wait_for(Duration::from_secs(30), || async {
        let events = metered(&chat).await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(events[0]["data"]["model"], own_model.as_str(), "{events:?}");
}
