//! Chat runs end to end: the runtime on port 0, the scripted model server behind it, HTTP/SSE
//! in front.

mod common;

use common::{Agent, SseReader, TIMEOUT, alive, kinds, of_kind, read_pid};
use serde_json::{Value, json};
use warren_agent::ProviderKind;
use warren_testkit::{ModelServer, Reply, wait_until};

#[tokio::test]
async fn a_text_answer_streams_tokens_then_done_with_the_full_text() {
    let model = ModelServer::start().await;
    model.push(Reply::text("Hello world").with_usage(11, 2));
    let agent = Agent::start(&model, |_| {}).await;

    let events = agent
        .chat(json!({"message": "hi", "chat_id": "u1:a1"}))
        .await;

    assert_eq!(kinds(&events), ["token", "token", "text", "done"]);
    let tokens: String = of_kind(&events, "token")
        .iter()
        .map(|e| e.data["delta"].as_str().expect("delta"))
        .collect();
    assert_eq!(tokens, "Hello world");
    assert_eq!(of_kind(&events, "text")[0].data["content"], "Hello world");
    let done = &events.last().expect("done").data;
    assert_eq!(done["text"], "Hello world");
    assert_eq!(
        done["usage"],
        json!({"input_tokens": 11, "output_tokens": 2})
    );
    assert_eq!(done["iterations"], 1);
    let ids: Vec<u64> = events
        .iter()
        .map(|e| e.id.expect("every event has an id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");

    let request = &model.requests()[0];
    assert_eq!(request["model"], "test-model");
    assert_eq!(request["stream"], true);
    assert_eq!(request["messages"][0]["role"], "system");
    assert_eq!(
        request["messages"][1],
        json!({"role": "user", "content": "hi"})
    );
    let tools: Vec<&str> = request["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["function"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        tools,
        [
            "shell",
            "read_file",
            "write_file",
            "edit_file",
            "list_files",
            "web_fetch",
            "schedule_message"
        ]
    );
}

#[tokio::test]
async fn a_tool_call_round_trip_runs_the_shell_and_feeds_the_result_back_to_the_model() {
    let model = ModelServer::start().await;
    model.push(Reply::tool_call("shell", json!({"command": "echo hi"})));
    model.push(Reply::text("It printed hi."));
    let agent = Agent::start(&model, |_| {}).await;

    let events = agent
        .chat(json!({"message": "run echo", "chat_id": "c"}))
        .await;

    assert_eq!(
        kinds(&events),
        [
            "tool_use",
            "tool_result",
            "token",
            "token",
            "token",
            "text",
            "done"
        ]
    );
    let tool_use = &of_kind(&events, "tool_use")[0].data;
    let call_id = tool_use["call_id"].as_str().expect("call id");
    assert!(call_id.starts_with("call_"), "{call_id}");
    assert_eq!(tool_use["name"], "shell");
    assert_eq!(tool_use["input"], json!({"command": "echo hi"}));
    let result = &of_kind(&events, "tool_result")[0].data;
    assert_eq!(result["call_id"], call_id);
    assert_eq!(result["ok"], true);
    assert_eq!(result["output"].as_str().expect("output").trim(), "hi");
    let done = &events.last().expect("done").data;
    assert_eq!(done["text"], "It printed hi.");
    assert_eq!(done["iterations"], 2);

    assert_eq!(model.request_count(), 2);
    let second = &model.requests()[1]["messages"];
    assert_eq!(second[2]["role"], "assistant");
    assert_eq!(second[2]["tool_calls"][0]["id"], call_id);
    assert_eq!(second[3]["role"], "tool");
    assert_eq!(second[3]["tool_call_id"], call_id);
    assert_eq!(second[3]["content"].as_str().expect("content").trim(), "hi");
}

#[tokio::test]
async fn the_history_goes_with_the_next_message_until_delete_clears_it() {
    let model = ModelServer::start().await;
    model.push(Reply::text("First"));
    model.push(Reply::text("Second"));
    model.push(Reply::text("Third"));
    model.push(Reply::text("Fresh"));
    let agent = Agent::start(&model, |config| config.model.system_prompt = String::new()).await;

    let first = agent.chat(json!({"message": "one", "chat_id": "c"})).await;
    // The chat is free as soon as `done` arrives, before the stream closes.
    let response = agent
        .post_chat(json!({"message": "two", "chat_id": "c"}))
        .await;
    let mut stream = SseReader::new(response);
    let second_run = stream.until("done").await;
    let third = agent
        .post_chat(json!({"message": "three", "chat_id": "c"}))
        .await;
    assert_eq!(third.status(), 200, "not busy right after done");
    SseReader::new(third).collect().await;
    stream.collect().await;
    assert!(
        second_run[0].id > first.last().expect("event").id,
        "event ids continue across a chat's runs"
    );
    let second = &model.requests()[1]["messages"];
    assert_eq!(
        second,
        &json!([
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "First"},
            {"role": "user", "content": "two"},
        ])
    );

    let cleared: Value = agent
        .request(reqwest::Method::DELETE, "/chat/c")
        .send()
        .await
        .expect("delete")
        .json()
        .await
        .expect("json");
    assert_eq!(
        cleared,
        json!({"status": "ok", "deleted": 6, "cancelled": false})
    );
    agent.chat(json!({"message": "four", "chat_id": "c"})).await;
    assert_eq!(
        model.requests()[3]["messages"],
        json!([{"role": "user", "content": "four"}])
    );
}

#[tokio::test]
async fn cancelling_a_running_shell_kills_its_whole_process_group() {
    let model = ModelServer::start().await;
    let command = "sh -c 'echo $$ > grandchild.pid; exec sleep 30' & echo $$ > shell.pid; wait";
    model.push(Reply::tool_call("shell", json!({"command": command})));
    let agent = Agent::start(&model, |_| {}).await;
    let response = agent
        .post_chat(json!({"message": "sleep", "chat_id": "c"}))
        .await;
    let mut stream = SseReader::new(response);
    stream.until("tool_use").await;
    let shell = read_pid(agent.workspace.path(), "shell.pid").await;
    let grandchild = read_pid(agent.workspace.path(), "grandchild.pid").await;
    assert!(alive(shell) && alive(grandchild));

    assert!(agent.cancel("c").await, "a run was going");

    let rest = stream.collect().await;
    assert_eq!(kinds(&rest), ["tool_result", "error"]);
    let result = &rest[0].data;
    assert_eq!(result["ok"], false);
    assert!(
        result["output"]
            .as_str()
            .expect("output")
            .contains("[cancelled]")
    );
    let error = &rest[1].data;
    assert_eq!(error["code"], "cancelled");
    assert_eq!(error["retryable"], false);
    wait_until(TIMEOUT, || async { !alive(shell) && !alive(grandchild) }).await;
    assert!(!agent.cancel("c").await, "nothing left to cancel");
    assert_eq!(model.request_count(), 1, "no model turn after a cancel");
}

#[tokio::test]
async fn cancelling_a_streaming_model_turn_ends_the_run_and_frees_the_chat() {
    let model = ModelServer::start().await;
    model.push(Reply::hang());
    let agent = Agent::start(&model, |_| {}).await;
    let response = agent
        .post_chat(json!({"message": "first", "chat_id": "c"}))
        .await;
    let mut stream = SseReader::new(response);
    let before = stream.until("token").await;
    assert_eq!(before[0].data["delta"], "Thinking");

    let busy = agent
        .post_chat(json!({"message": "again", "chat_id": "c"}))
        .await;
    assert_eq!(busy.status(), 409);
    let body: Value = busy.json().await.expect("json");
    assert_eq!(body["error"]["code"], "chat_busy");

    assert!(agent.cancel("c").await);
    let rest = stream.collect().await;
    assert_eq!(kinds(&rest), ["error"]);
    assert_eq!(rest[0].data["code"], "cancelled");

    model.push(Reply::text("Back"));
    let events = agent
        .chat(json!({"message": "second", "chat_id": "c"}))
        .await;
    assert_eq!(events.last().expect("done").data["text"], "Back");
    let messages = &model.requests()[1]["messages"];
    let users: Vec<&Value> = messages
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["role"] == "user")
        .collect();
    assert_eq!(users.len(), 2, "the cancelled turn's user message is kept");
    assert!(
        messages
            .as_array()
            .expect("messages")
            .iter()
            .all(|m| m["role"] != "assistant"),
        "the cut-off turn is not"
    );
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_run_and_kills_the_shell() {
    let model = ModelServer::start().await;
    model.push(Reply::tool_call(
        "shell",
        json!({"command": "echo $$ > shell.pid; exec sleep 30"}),
    ));
    // A gone client is noticed when the next write fails: keepalives make that prompt.
    let agent = Agent::start(&model, |config| {
        config.limits.keepalive = std::time::Duration::from_millis(50);
    })
    .await;
    let response = agent
        .post_chat(json!({"message": "sleep", "chat_id": "c"}))
        .await;
    let mut stream = SseReader::new(response);
    stream.until("tool_use").await;
    let shell = read_pid(agent.workspace.path(), "shell.pid").await;
    drop(stream);

    wait_until(TIMEOUT, || async { !alive(shell) }).await;
    model.push(Reply::text("still here"));
    let status = wait_for_free_chat(&agent, "c").await;
    assert_eq!(status, 200);
}

/// Posts to `chat_id` until it is no longer busy; the final status.
async fn wait_for_free_chat(agent: &Agent, chat_id: &str) -> u16 {
    warren_testkit::wait_for(TIMEOUT, || async {
        let response = agent
            .post_chat(json!({"message": "next", "chat_id": chat_id}))
            .await;
        let status = response.status().as_u16();
        (status != 409).then_some(status)
    })
    .await
}

#[tokio::test]
async fn the_anthropic_streaming_path_answers_and_calls_tools() {
    let model = ModelServer::start_with_key("sk-ant-test").await;
    model.push(Reply::text("Saving.").and_tool_call(
        "write_file",
        json!({"path": "notes/a.txt", "content": "hello"}),
    ));
    model.push(Reply::text("Saved it.").with_usage(40, 3));
    let agent = Agent::start(&model, |config| {
        config.model.provider = ProviderKind::Anthropic;
        config.model.api_key = Some("sk-ant-test".into());
    })
    .await;

    let events = agent
        .chat(json!({"message": "save hello", "chat_id": "c"}))
        .await;

    assert_eq!(
        kinds(&events),
        [
            "token",
            "text",
            "tool_use",
            "tool_result",
            "file",
            "token",
            "token",
            "text",
            "done"
        ]
    );
    let call_id = of_kind(&events, "tool_use")[0].data["call_id"]
        .as_str()
        .expect("call id")
        .to_owned();
    assert!(call_id.starts_with("toolu_"), "{call_id}");
    assert_eq!(
        of_kind(&events, "file")[0].data,
        json!({"type": "file", "path": "notes/a.txt", "size": 5})
    );
    let done = &events.last().expect("done").data;
    assert_eq!(done["text"], "Saving.\n\nSaved it.");
    let written = std::fs::read_to_string(agent.workspace.path().join("notes/a.txt"));
    assert_eq!(written.expect("file written"), "hello");

    let recorded = model.recorded();
    assert_eq!(recorded.len(), 2);
    assert!(recorded.iter().all(|r| r.path == "/v1/messages"));
    assert_eq!(recorded[1].api_key.as_deref(), Some("sk-ant-test"));
    let second = &recorded[1].body;
    assert!(second["system"].is_string());
    assert_eq!(second["messages"][1]["content"][1]["id"], call_id.as_str());
    let result_block = &second["messages"][2]["content"][0];
    assert_eq!(result_block["type"], "tool_result");
    assert_eq!(result_block["tool_use_id"], call_id.as_str());
    assert_eq!(result_block["is_error"], false);
}

#[tokio::test]
async fn keepalive_events_arrive_while_the_model_is_slow() {
    let model = ModelServer::start().await;
    model.push(Reply::text("slow answer").with_chunk_delay(std::time::Duration::from_millis(300)));
    let agent = Agent::start(&model, |config| {
        config.limits.keepalive = std::time::Duration::from_millis(40);
    })
    .await;

    let events = agent.chat(json!({"message": "hi", "chat_id": "c"})).await;

    assert!(!of_kind(&events, "keepalive").is_empty(), "{events:#?}");
    assert_eq!(events.last().expect("done").kind(), "done");
    let ids: Vec<u64> = events.iter().map(|e| e.id.expect("id")).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "keepalives are numbered too"
    );
}

#[tokio::test]
async fn a_model_http_error_yields_a_retryable_error_event() {
    let model = ModelServer::start().await;
    model.push(Reply::error_with(500, "upstream exploded"));
    let agent = Agent::start(&model, |_| {}).await;

    let events = agent.chat(json!({"message": "hi", "chat_id": "c"})).await;

    assert_eq!(kinds(&events), ["error"]);
    let error = &events[0].data;
    assert_eq!(error["code"], "model_http_error");
    assert_eq!(error["retryable"], true);
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("upstream exploded")
    );
    assert_eq!(error["content"], error["message"]);
}

#[tokio::test]
async fn a_runtime_with_neither_key_nor_base_url_fails_the_run_as_model_not_configured() {
    let model = ModelServer::start().await;
    let agent = Agent::start(&model, |config| {
        config.model.base_url = None;
        config.model.api_key = None;
    })
    .await;

    let events = agent.chat(json!({"message": "hi", "chat_id": "c"})).await;

    assert_eq!(kinds(&events), ["error"]);
    let error = &events[0].data;
    assert_eq!(error["code"], "model_not_configured");
    assert_eq!(error["retryable"], false);
    let message = error["message"].as_str().expect("message");
    assert!(
        message.contains("WARREN_AGENT_BASE_URL") && message.contains("WARREN_AGENT_API_KEY"),
        "{message}"
    );
    assert_eq!(model.requests().len(), 0, "nothing was sent anywhere");
}

#[tokio::test]
async fn an_unreachable_model_is_named_without_its_url_or_key() {
    let model = ModelServer::start().await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let agent = Agent::start(&model, |config| {
        config.model.base_url = Some(format!("http://127.0.0.1:{closed}/v1?key=sk-in-the-url"));
        config.model.api_key = Some("sk-secret".into());
    })
    .await;

    let events = agent.chat(json!({"message": "hi", "chat_id": "c"})).await;

    assert_eq!(kinds(&events), ["error"]);
    let error = &events[0].data;
    assert_eq!(error["code"], "model_unreachable");
    assert_eq!(error["retryable"], true);
    let message = error["message"].as_str().expect("message");
    assert!(message.contains("openai"), "{message}");
    for leak in [
        "sk-in-the-url",
        "sk-secret",
        "127.0.0.1",
        &closed.to_string(),
    ] {
        assert!(!message.contains(leak), "{leak} leaked: {message}");
    }
}

#[tokio::test]
async fn a_broken_model_stream_yields_an_error_after_the_partial_tokens() {
    let model = ModelServer::start().await;
    model.push(Reply::drop_mid_stream());
    model.push(Reply::text("partial").then_stream_error("Overloaded"));
    let agent = Agent::start(&model, |_| {}).await;

    let events = agent.chat(json!({"message": "hi", "chat_id": "c"})).await;
    assert_eq!(kinds(&events), ["token", "token", "error"]);
    let error = &events.last().expect("error").data;
    assert_eq!(error["code"], "model_stream_broken");
    assert_eq!(error["retryable"], true);

    let events = agent
        .chat(json!({"message": "again", "chat_id": "c"}))
        .await;
    assert_eq!(kinds(&events), ["token", "error"]);
    assert_eq!(events[1].data["code"], "model_error");
}

#[tokio::test]
async fn a_request_may_bring_its_own_model_and_key() {
    let model = ModelServer::start_with_key("sk-user").await;
    model.push(Reply::text("ok"));
    let agent = Agent::start(&model, |config| {
        config.model.api_key = Some("sk-platform-default".into());
    })
    .await;

    let events = agent
        .chat(json!({"message": "hi", "chat_id": "c", "api_key": "sk-user", "model": "user-model"}))
        .await;

    assert_eq!(events.last().expect("done").kind(), "done");
    let recorded = &model.recorded()[0];
    assert_eq!(recorded.api_key.as_deref(), Some("sk-user"));
    assert_eq!(recorded.body["model"], "user-model");
}

#[tokio::test]
async fn a_run_stops_with_max_iterations_when_the_model_keeps_calling_tools() {
    let model = ModelServer::start().await;
    model.push(Reply::tool_call("list_files", json!({})));
    let agent = Agent::start(&model, |config| config.limits.max_iterations = 1).await;

    let events = agent.chat(json!({"message": "loop", "chat_id": "c"})).await;

    assert_eq!(kinds(&events), ["tool_use", "tool_result", "error"]);
    assert_eq!(events[2].data["code"], "max_iterations");
}

#[tokio::test]
async fn bad_chat_requests_get_a_json_400() {
    let model = ModelServer::start().await;
    let agent = Agent::start(&model, |_| {}).await;
    for body in [
        json!({"chat_id": "c"}),
        json!({"message": "  ", "chat_id": "c"}),
    ] {
        let response = agent.post_chat(body).await;
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "invalid_request");
    }
    assert_eq!(model.request_count(), 0);
}

#[tokio::test]
async fn web_fetch_reads_a_loopback_url_for_the_model() {
    let model = ModelServer::start().await;
    let agent = Agent::start(&model, |_| {}).await;
    let url = format!("{}/health", agent.url);
    model.push(Reply::tool_call("web_fetch", json!({"url": url})));
    model.push(Reply::text("It is healthy."));

    let events = agent
        .chat(json!({"message": "check", "chat_id": "c"}))
        .await;

    let result = &of_kind(&events, "tool_result")[0].data;
    assert_eq!(result["ok"], true);
    let output = result["output"].as_str().expect("output");
    assert!(output.starts_with("HTTP 200 OK"), "{output}");
    assert!(output.contains("\"status\":\"ok\""), "{output}");
    assert_eq!(events.last().expect("done").kind(), "done");
}

#[tokio::test]
async fn shutting_down_ends_running_runs_with_a_retryable_error() {
    let model = ModelServer::start().await;
    model.push(Reply::hang());
    let agent = Agent::start(&model, |_| {}).await;
    let response = agent
        .post_chat(json!({"message": "hi", "chat_id": "c"}))
        .await;
    let mut stream = SseReader::new(response);
    stream.until("token").await;

    agent.stop();

    let rest = stream.collect().await;
    assert_eq!(kinds(&rest), ["error"]);
    assert_eq!(rest[0].data["code"], "shutting_down");
    assert_eq!(rest[0].data["retryable"], true);
}

#[tokio::test]
async fn a_tool_killed_for_memory_ends_the_run_and_the_next_run_answers() {
    // The counter file stands in for the cgroup's: the tool raises it, as the kernel does when
    // it kills a process for the sandbox's memory limit.
    let counter = tempfile::NamedTempFile::new().expect("counter");
    std::fs::write(
        counter.path(),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
    )
    .expect("write");
    let model = ModelServer::start().await;
    let bump = format!("printf 'oom_kill 1\\n' > {}", counter.path().display());
    model.push(Reply::tool_call("shell", json!({"command": bump})));
    model.push(Reply::text("never asked"));
    let path = counter.path().to_owned();
    let agent = Agent::start(&model, move |config| {
        config.limits.oom_counter = Some(warren_agent::memory::OomCounter::at(path));
    })
    .await;

    let events = agent.chat(json!({"message": "hog", "chat_id": "c"})).await;
    assert_eq!(kinds(&events), ["tool_use", "tool_result", "error"]);
    assert_eq!(events[2].data["code"], "sandbox_out_of_memory");
    assert_eq!(model.request_count(), 1, "the model is not asked again");

    let events = agent
        .chat(json!({"message": "again", "chat_id": "c"}))
        .await;
    assert_eq!(events.last().expect("end").kind(), "done", "{events:?}");
}
