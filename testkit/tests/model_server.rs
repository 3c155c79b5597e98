//! The scripted model server speaks each provider's wire format as the real APIs do.

use serde_json::{Value, json};
use warren_testkit::model_server::{ModelServer, Reply};

/// The `data:` payloads of an SSE body, with the `event:` name preceding each (if any).
fn frames(body: &str) -> Vec<(Option<String>, String)> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut event = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = Some(name.to_owned());
                } else if let Some(payload) = line.strip_prefix("data: ") {
                    data.push_str(payload);
                }
            }
            (event, data)
        })
        .collect()
}

async fn post(url: &str, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new().post(url).json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request")
}

fn openai_request(stream: bool, include_usage: bool) -> Value {
    let mut body = json!({
        "model": "gpt-test",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
    });
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

#[tokio::test]
async fn an_openai_text_reply_streams_word_chunks_then_finish_usage_and_done() {
    let server = ModelServer::start().await;
    server.push(Reply::text("Hello world").with_usage(11, 2));
    let url = format!("{}/chat/completions", server.url());
    let response = post(&url, openai_request(true, true), &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let frames = frames(&response.text().await.expect("body"));

    assert_eq!(frames.last().expect("frames").1, "[DONE]");
    let chunks: Vec<Value> = frames[..frames.len() - 1]
        .iter()
        .map(|(_, data)| serde_json::from_str(data).expect("chunk json"))
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello world");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = chunks.last().expect("usage chunk");
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 11);
    assert_eq!(usage["usage"]["completion_tokens"], 2);
    assert_eq!(server.request_count(), 1);
    assert_eq!(server.requests()[0]["model"], "gpt-test");
}

#[tokio::test]
async fn an_openai_tool_call_arrives_in_fragments_that_reassemble_to_the_arguments() {
    let server = ModelServer::start().await;
    let input = json!({"command": "echo hi && ls -la /tmp"});
    server.push(Reply::tool_call("shell", input.clone()));
    let url = format!("{}/chat/completions", server.url());
    let response = post(&url, openai_request(true, false), &[]).await;
    let frames = frames(&response.text().await.expect("body"));
    let chunks: Vec<Value> = frames
        .iter()
        .filter(|(_, data)| data != "[DONE]")
        .map(|(_, data)| serde_json::from_str(data).expect("chunk json"))
        .collect();

    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert!(deltas.len() > 2, "arguments split over several chunks");
    assert!(deltas.iter().all(|d| d["index"] == 0));
    assert!(deltas[0]["id"].as_str().expect("id").starts_with("call_"));
    assert_eq!(deltas[0]["function"]["name"], "shell");
    assert!(deltas[1..].iter().all(|d| d.get("id").is_none()));
    let arguments: String = deltas
        .iter()
        .filter_map(|d| d["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).expect("args"),
        input
    );
    let last = chunks.last().expect("finish chunk");
    assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
    assert!(
        last.get("usage").is_none(),
        "no usage without include_usage"
    );
}

#[tokio::test]
async fn a_non_streaming_openai_request_gets_one_completion_object() {
    let server = ModelServer::start().await;
    server.push(Reply::text("Hi there").and_tool_call("list_files", json!({})));
    let url = format!("{}/chat/completions", server.url());
    let body: Value = post(&url, openai_request(false, false), &[])
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(body["object"], "chat.completion");
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], "Hi there");
    assert_eq!(message["tool_calls"][0]["function"]["name"], "list_files");
    assert_eq!(message["tool_calls"][0]["function"]["arguments"], "{}");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn an_anthropic_stream_follows_the_messages_event_sequence() {
    let server = ModelServer::start().await;
    server.push(
        Reply::text("Let me look")
            .and_tool_call("read_file", json!({"path": "notes.txt"}))
            .with_usage(20, 7),
    );
    let url = format!("{}/messages", server.url());
    let request = json!({
        "model": "claude-test",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": true,
    });
    let response = post(&url, request, &[("anthropic-version", "2023-06-01")]).await;
    assert_eq!(response.status(), 200);
    let frames = frames(&response.text().await.expect("body"));
    let names: Vec<&str> = frames
        .iter()
        .map(|(event, _)| event.as_deref().expect("every frame is named"))
        .collect();
    assert_eq!(names[..2], ["message_start", "ping"]);
    assert_eq!(names[names.len() - 2..], ["message_delta", "message_stop"]);
    for (event, data) in &frames {
        let data: Value = serde_json::from_str(data).expect("json");
        assert_eq!(Some(data["type"].as_str().expect("type")), event.as_deref());
    }
    let data: Vec<Value> = frames
        .iter()
        .map(|(_, d)| serde_json::from_str(d).expect("json"))
        .collect();
    assert_eq!(data[0]["message"]["usage"]["input_tokens"], 20);
    let tool_start = data
        .iter()
        .find(|d| d["content_block"]["type"] == "tool_use")
        .expect("tool_use block");
    assert_eq!(tool_start["index"], 1);
    assert_eq!(tool_start["content_block"]["name"], "read_file");
    let partial: String = data
        .iter()
        .filter(|d| d["delta"]["type"] == "input_json_delta")
        .filter_map(|d| d["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&partial).expect("input"),
        json!({"path": "notes.txt"})
    );
    let message_delta = &data[data.len() - 2];
    assert_eq!(message_delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(message_delta["usage"]["output_tokens"], 7);
}

#[tokio::test]
async fn anthropic_requests_without_version_or_max_tokens_are_refused_like_the_real_api() {
    let server = ModelServer::start().await;
    server.push(Reply::text("never sent"));
    let url = format!("{}/messages", server.url());
    let without_version = json!({"model": "m", "max_tokens": 5, "messages": []});
    let response = post(&url, without_version, &[]).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let without_max_tokens = json!({"model": "m", "messages": []});
    let response = post(
        &url,
        without_max_tokens,
        &[("anthropic-version", "2023-06-01")],
    )
    .await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        server.pending_replies(),
        1,
        "a refused request takes no reply"
    );
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn a_wrong_key_is_refused_with_401_and_the_presented_key_is_recorded() {
    let server = ModelServer::start_with_key("sk-right").await;
    server.push(Reply::text("ok"));
    let url = format!("{}/chat/completions", server.url());
    let response = post(
        &url,
        openai_request(false, false),
        &[("authorization", "Bearer sk-wrong")],
    )
    .await;
    assert_eq!(response.status(), 401);
    let response = post(
        &url,
        openai_request(false, false),
        &[("authorization", "Bearer sk-right")],
    )
    .await;
    assert_eq!(response.status(), 200);
    let keys: Vec<Option<String>> = server.recorded().into_iter().map(|r| r.api_key).collect();
    assert_eq!(
        keys,
        [Some("sk-wrong".to_owned()), Some("sk-right".to_owned())]
    );
}

#[tokio::test]
async fn scripted_errors_and_an_empty_queue_answer_with_the_provider_error_envelope() {
    let server = ModelServer::start().await;
    server.push(Reply::error(503));
    let url = format!("{}/chat/completions", server.url());
    let response = post(&url, openai_request(true, true), &[]).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.expect("json");
    assert!(body["error"]["message"].is_string());

    let response = post(&url, openai_request(true, true), &[]).await;
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("no scripted reply")
    );
}

#[tokio::test]
async fn a_dropped_stream_breaks_the_body_after_the_partial_answer() {
    let server = ModelServer::start().await;
    server.push(Reply::drop_mid_stream());
    let url = format!("{}/chat/completions", server.url());
    let response = post(&url, openai_request(true, true), &[]).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.text().await.is_err(),
        "the body ends with a transport error"
    );
}

#[tokio::test]
async fn a_hanging_stream_sends_its_first_chunks_and_then_nothing() {
    use futures::StreamExt;
    let server = ModelServer::start().await;
    server.push(Reply::hang());
    let url = format!("{}/chat/completions", server.url());
    let response = post(&url, openai_request(true, true), &[]).await;
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("Thinking") {
        let chunk = body.next().await.expect("more body").expect("chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let next = tokio::time::timeout(std::time::Duration::from_millis(200), body.next()).await;
    assert!(next.is_err(), "nothing after the partial answer: {next:?}");
    drop(server);
}
