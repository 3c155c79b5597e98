//! Agents that run and talk, end to end: the real `warren dev` (edge, projector, deployer, chat
//! worker) deploys a real `warren-agent`, which talks to the scripted model server over the
//! OpenAI streaming protocol; the test talks to the edge over HTTP/SSE like a client (and over
//! the WebSocket gateway where a cursor's reset is compared).

mod chat_support;
mod common;
mod edge_support;
mod gateway_support;

use chat_support::{Chat, alive};
use gateway_support::Ws;
use serde_json::json;
use std::time::Duration;
use warren_testkit::model_server::Reply;
use warren_testkit::{wait_for, wait_until};

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_message_streams_text_a_tool_call_its_result_and_done_and_the_run_is_recorded() {
    let chat = Chat::start(&[]).await;
    chat.model.push(Reply::tool_call(
        "shell",
        json!({"command": "echo hi from the tool"}),
    ));
    chat.model.push(Reply::text("The tool said hi."));

    let mut run = chat.send("Run echo for me").await;
    let queued = run.until("queued").await;
    assert_eq!(queued.data["position"], 0, "{queued:?}");
    let conversation_id = queued.data["conversation_id"]
        .as_str()
        .expect("conversation id")
        .to_owned();
    let tool_use = run.until("tool_use").await;
    assert_eq!(tool_use.data["name"], "shell");
    assert_eq!(tool_use.data["input"]["command"], "echo hi from the tool");
    let call_id = tool_use.data["call_id"]
        .as_str()
        .expect("call id")
        .to_owned();
    let result = run.until("tool_result").await;
    assert_eq!(result.data["call_id"], call_id.as_str());
    assert_eq!(result.data["ok"], true);
    assert!(
        result.data["output"]
            .as_str()
            .is_some_and(|o| o.contains("hi from the tool")),
        "{result:?}"
    );
    let done = run.finish().await;
    assert_eq!(done.kind(), "done", "{:?}", run.frames);
    assert_eq!(done.data["text"], "The tool said hi.");
    assert_eq!(
        run.text(),
        "The tool said hi.",
        "text deltas add up to the reply"
    );
    assert_eq!(done.data["tool_calls"][0]["call_id"], call_id.as_str());

    // Every frame carries the log cursor, in order.
    let ids: Vec<u64> = run.frames.iter().map(|f| f.id.expect("id")).collect();
    assert!(ids.windows(2).all(|w| w[0] <= w[1]), "{ids:?}");

    // The completed run is in the messages read model …
    let path = format!("/api/v1/conversations/{conversation_id}/messages");
    let messages = wait_for(TIMEOUT, || async {
        let answer = chat.platform.get(&path, Some(&chat.user.access)).await;
        let list = answer.body.as_array()?.clone();
        (list.len() == 2).then_some(list)
    })
    .await;
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[0]["text"], "Run echo for me");
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["text"], "The tool said hi.");
    assert_eq!(messages[1]["tool_calls"][0]["call_id"], call_id.as_str());
    assert_eq!(messages[1]["tool_calls"][0]["name"], "shell");
    let conversations = chat
        .platform
        .get("/api/v1/conversations", Some(&chat.user.access))
        .await;
    assert_eq!(conversations.body[0]["id"], conversation_id.as_str());

    // … and in the log, as one RunCompleted with the tool call and its result.
    let js = chat.platform.nats.jetstream().await;
    let stream = js
        .get_stream("CONVERSATIONS")
        .await
        .expect("conversations stream");
    let last = stream
        .get_last_raw_message_by_subject(&format!("conv.{conversation_id}.ev"))
        .await
        .expect("last commit");
    let commit: serde_json::Value = serde_json::from_slice(&last.payload).expect("commit JSON");
    assert_eq!(commit[0]["type"], "RunCompleted", "{commit}");
    let data = &commit[0]["data"];
    assert_eq!(data["tool_calls"][0]["name"], "shell");
    assert!(
        data["tool_calls"][0]["output"]
            .as_str()
            .is_some_and(|o| o.contains("hi from the tool"))
    );
    // The model was called with the platform key, twice (tool call, then the answer).
    assert_eq!(chat.model.request_count(), 2);
    assert_eq!(
        chat.model.recorded()[0].api_key.as_deref(),
        Some("sk-platform")
    );
}

#[tokio::test]
async fn a_second_message_during_a_run_is_queued_at_position_1_and_runs_after() {
    let chat = Chat::start(&[]).await;
    // The first run's tool waits for a file the test creates once the second message is queued.
    chat.model.push(Reply::tool_call(
        "shell",
        json!({"command": "while [ ! -f release ]; do sleep 0.05; done; echo released"}),
    ));
    chat.model.push(Reply::text("First answer."));
    chat.model.push(Reply::text("Second answer."));

    let mut first = chat.send("first").await;
    first.until("tool_use").await;
    let mut second = chat.send("second").await;
    let queued = second.until("queued").await;
    assert_eq!(queued.data["position"], 1, "{queued:?}");

    std::fs::write(chat.workspace().join("release"), b"").expect("release the tool");
    let done = first.finish().await;
    assert_eq!(done.data["text"], "First answer.", "{:?}", first.frames);
    let done = second.finish().await;
    assert_eq!(done.data["text"], "Second answer.", "{:?}", second.frames);
    // The second run started only after the first completed.
    let first_done = first.frames.last().and_then(|f| f.id).expect("id");
    let second_text = second
        .frames
        .iter()
        .find(|f| f.kind() == "text")
        .and_then(|f| f.id)
        .expect("second run's text");
    assert!(second_text > first_done, "{first_done} < {second_text}");
}

#[tokio::test]
async fn cancelling_a_running_shell_tool_kills_its_process_and_records_the_run_cancelled() {
    let chat = Chat::start(&[]).await;
    chat.model.push(Reply::tool_call(
        "shell",
        json!({"command": "echo $$ > tool.pid; exec sleep 600"}),
    ));
    let mut run = chat.send("sleep a long time").await;
    let conversation_id = run.until("queued").await.data["conversation_id"]
        .as_str()
        .expect("conversation id")
        .to_owned();
    run.until("tool_use").await;
    let pid = chat.tool_pid("tool.pid").await;
    assert!(alive(pid), "the tool runs");

    let cancelled = chat
        .platform
        .post(
            &format!("/api/v1/conversations/{conversation_id}/cancel"),
            Some(&chat.user.access),
            json!({}),
        )
        .await;
    assert_eq!(cancelled.status, 202, "{cancelled:?}");
    assert_eq!(cancelled.body["status"], "cancel_requested");
    let end = run.finish().await;
    assert_eq!(end.kind(), "error", "{:?}", run.frames);
    assert_eq!(end.data["code"], "cancelled");
    wait_until(TIMEOUT, || async { !alive(pid) }).await;

    // The log says cancelled, and the agent takes the next message.
    let js = chat.platform.nats.jetstream().await;
    let stream = js.get_stream("CONVERSATIONS").await.expect("stream");
    let last = stream
        .get_last_raw_message_by_subject(&format!("conv.{conversation_id}.ev"))
        .await
        .expect("last commit");
    let commit: serde_json::Value = serde_json::from_slice(&last.payload).expect("commit JSON");
    assert_eq!(commit[0]["type"], "RunCancelled", "{commit}");
    chat.model.push(Reply::text("Back."));
    let mut next = chat.send("still there?").await;
    assert_eq!(next.finish().await.data["text"], "Back.");
}

#[tokio::test]
async fn the_message_past_the_daily_quota_is_refused_before_the_model_is_called() {
    let chat = Chat::start(&[("WARREN_TIER_FREE_MESSAGES_PER_DAY", "1")]).await;
    chat.model.push(Reply::text("One."));
    let mut run = chat.send("one").await;
    assert_eq!(run.finish().await.kind(), "done");
    wait_until(TIMEOUT, || async {
        chat.platform
            .get("/api/v1/usage", Some(&chat.user.access))
            .await
            .body["messages"]["used"]
            == 1
    })
    .await;

    chat.model.push(Reply::text("Two."));
    let refused = chat.post_chat(json!({"message": "two"})).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(retry_after > 0 && retry_after <= 86_400, "{retry_after}");
    let body: serde_json::Value = refused.json().await.expect("error envelope");
    assert_eq!(body["error"]["code"], "quota_exceeded");
    assert_eq!(
        chat.model.request_count(),
        1,
        "the model never saw the second message"
    );
    assert_eq!(chat.model.pending_replies(), 1);
}

#[tokio::test]
async fn a_runtime_that_crashes_mid_stream_fails_the_run_and_the_agent_can_be_repaired() {
    let chat = Chat::start(&[]).await;
    chat.model
        .push(Reply::text("Starting to answer").then_hang());
    let mut run = chat.send("crash please").await;
    run.until("text").await;
    let pid = chat.agent_pid();
    rustix::process::kill_process_group(
        rustix::process::Pid::from_raw(pid).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill the runtime");
    let end = run.finish().await;
    assert_eq!(end.kind(), "error", "{:?}", run.frames);
    assert_eq!(end.data["code"], "runtime_stream_broken");
    assert_eq!(end.data["retryable"], true);

    // The worker found the runtime gone and marked the agent failed, so it can be repaired.
    let status_path = format!("/api/v1/agents/{}/status", chat.agent_id);
    wait_until(TIMEOUT, || async {
        chat.platform
            .get(&status_path, Some(&chat.user.access))
            .await
            .body["status"]
            == "failed"
    })
    .await;
    let repaired = chat
        .platform
        .post(
            &format!("/api/v1/agents/{}/repair", chat.agent_id),
            Some(&chat.user.access),
            json!({}),
        )
        .await;
    assert_eq!(repaired.status, 202, "{repaired:?}");
    chat.wait_running().await;
    wait_until(TIMEOUT, || async { chat.agent_pid() != pid }).await;
    chat.model.push(Reply::text("I am back."));
    let mut next = chat.send("again").await;
    let done = next.finish().await;
    assert_eq!(done.data["text"], "I am back.", "{:?}", next.frames);
}

#[tokio::test]
async fn another_users_agent_and_conversation_are_not_found() {
    let chat = Chat::start(&[]).await;
    chat.model.push(Reply::text("Mine."));
    let mut run = chat.send("hello").await;
    let conversation_id = run.until("queued").await.data["conversation_id"]
        .as_str()
        .expect("conversation id")
        .to_owned();
    run.finish().await;

    let other = chat.platform.sign_in("other@example.com").await;
    let token = Some(other.access.as_str());
    let agent = &chat.agent_id;
    let p = &chat.platform;
    assert_eq!(
        p.post(
            &format!("/api/v1/chat/{agent}"),
            token,
            json!({"message": "hi"})
        )
        .await
        .status,
        404
    );
    assert_eq!(
        p.delete(&format!("/api/v1/chat/{agent}"), token)
            .await
            .status,
        404
    );
    assert_eq!(
        p.get(&format!("/api/v1/chat/{agent}/pending"), token)
            .await
            .status,
        404
    );
    assert_eq!(
        p.get(&format!("/api/v1/files/{agent}/notes.txt"), token)
            .await
            .status,
        404
    );
    assert_eq!(
        p.get(
            &format!("/api/v1/conversations/{conversation_id}/messages"),
            token
        )
        .await
        .status,
        404
    );
    assert_eq!(
        p.post(
            &format!("/api/v1/conversations/{conversation_id}/cancel"),
            token,
            json!({})
        )
        .await
        .status,
        404
    );
    assert_eq!(
        p.get("/api/v1/conversations", token).await.body,
        json!([]),
        "no leak in listings"
    );
}

#[tokio::test]
async fn workspace_files_download_through_the_edge_and_traversal_is_refused() {
    let chat = Chat::start(&[]).await;
    std::fs::create_dir_all(chat.workspace().join("out")).expect("dir");
    std::fs::write(chat.workspace().join("out/report.md"), b"# Report\n").expect("file");
    let base = &chat.platform.base;
    let agent = &chat.agent_id;
    let http = &chat.platform.http;
    let file = http
        .get(format!("{base}/api/v1/files/{agent}/out/report.md"))
        .bearer_auth(&chat.user.access)
        .send()
        .await
        .expect("download");
    assert_eq!(file.status(), 200);
    assert_eq!(file.bytes().await.expect("bytes").as_ref(), b"# Report\n");
    for bad in ["..%2F..%2Fprocess.json", "out/..%2F..%2Fprocess.json"] {
        let refused = chat
            .platform
            .get(
                &format!("/api/v1/files/{agent}/{bad}"),
                Some(&chat.user.access),
            )
            .await;
        assert_eq!(refused.status, 400, "{bad}: {refused:?}");
        assert_eq!(refused.body["error"]["code"], "invalid_path");
    }
    let missing = chat
        .platform
        .get(
            &format!("/api/v1/files/{agent}/nope.txt"),
            Some(&chat.user.access),
        )
        .await;
    assert_eq!(missing.status, 404);
}

/// The last commit on a conversation's facts subject: its events' type and data.
async fn last_commit(chat: &Chat, conversation_id: &str) -> serde_json::Value {
    let js = chat.platform.nats.jetstream().await;
    let stream = js.get_stream("CONVERSATIONS").await.expect("stream");
    let last = stream
        .get_last_raw_message_by_subject(&format!("conv.{conversation_id}.ev"))
        .await
        .expect("last commit");
    serde_json::from_slice(&last.payload).expect("commit JSON")
}

#[tokio::test]
async fn the_run_of_a_killed_chat_worker_is_closed_by_another_replica() {
    // Short lease timings: a dead worker's run is closed within stale + sweep = 5 s of its last
    // beat. With the defaults it takes at least 12 s, which the wait below does not allow.
    let leases = [
        ("WARREN_CHAT_LEASE_BEAT_SECS", "1"),
        ("WARREN_CHAT_LEASE_STALE_SECS", "4"),
        ("WARREN_CHAT_SWEEP_SECS", "1"),
    ];
    let mut chat = Chat::start(&leases).await;
    // A second replica beside the one inside `warren dev`.
    let mut env = [
        chat.platform.nats.warren_env(),
        chat.platform.db.warren_env(),
    ]
    .concat();
    env.push((
        "WARREN_ENCRYPTION_KEY",
        edge_support::ENCRYPTION_KEY.to_owned(),
    ));
    env.extend(leases.map(|(key, value)| (key, value.to_owned())));
    let mut replica = common::Warren::spawn(
        &["worker", "chat"],
        &env,
        chat.platform.dir.path(),
        "chat-replica",
    );
    let replica_pid = replica.child.id().expect("replica pid");
    let dev_pid = chat.platform.warren.child.id().expect("dev pid");

    chat.model.push(Reply::hang());
    let mut run = chat.send("never finishes").await;
    let conversation_id = run.until("queued").await.data["conversation_id"]
        .as_str()
        .expect("conversation id")
        .to_owned();
    run.until("text").await;
    let started = last_commit(&chat, &conversation_id).await;
    assert_eq!(started[0]["type"], "RunStarted", "{started}");
    let run_id = started[0]["data"]["run_id"].clone();
    let worker = started[0]["data"]["worker_id"]
        .as_str()
        .expect("worker id")
        .to_owned();

    // Kill whichever replica runs it; the other must close the run.
    let (survivor_pid, replica_died) = if worker.starts_with(&format!("chat-{replica_pid}-")) {
        replica.kill_group().await;
        (dev_pid, true)
    } else {
        assert!(
            worker.starts_with(&format!("chat-{dev_pid}-")),
            "{worker} is neither {dev_pid} nor {replica_pid}"
        );
        chat.platform.warren.kill_group().await;
        (replica_pid, false)
    };
    let failed = wait_for(Duration::from_secs(10), || async {
        let commit = last_commit(&chat, &conversation_id).await;
        (commit[0]["type"] == "RunFailed").then_some(commit)
    })
    .await;
    let event = &failed[0];
    assert_eq!(event["data"]["run_id"], run_id);
    assert_eq!(event["data"]["code"], "worker_lost");
    assert_eq!(event["data"]["retryable"], true);
    assert!(
        event["actor"]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with(&format!("chat-{survivor_pid}-"))),
        "closed by the surviving replica: {event}"
    );
    if replica_died {
        // The edge survived: its client saw the run end too.
        let end = run.finish().await;
        assert_eq!(end.data["code"], "worker_lost", "{:?}", run.frames);
    }
}

#[tokio::test]
async fn a_user_with_their_own_provider_key_is_served_on_it_not_on_the_platform_key() {
    let chat = Chat::start(&[]).await;
    let added = chat
        .platform
        .post(
            "/api/v1/users/me/api-keys",
            Some(&chat.user.access),
            json!({
                "provider": "custom",
                "base_url": chat.model.url(),
                "api_key": "sk-user-own-key-0123456789",
            }),
        )
        .await;
    assert_eq!(added.status, 201, "{added:?}");
    chat.model.push(Reply::text("On your key."));
    let mut run = chat.send("whose key?").await;
    assert_eq!(run.finish().await.data["text"], "On your key.");
    let recorded = chat.model.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        recorded[0].api_key.as_deref(),
        Some("sk-user-own-key-0123456789")
    );
}

#[tokio::test]
async fn an_interrupting_message_cancels_the_running_run_and_clearing_history_forgets_it() {
    let chat = Chat::start(&[]).await;
    chat.model
        .push(Reply::text("Thinking about the first").then_hang());
    chat.model.push(Reply::text("Answering the second."));
    let mut first = chat.send("first").await;
    first.until("text").await;
    let mut second = chat
        .send_with(json!({"message": "never mind, second", "mode": "interrupt"}))
        .await;
    assert_eq!(second.until("queued").await.data["position"], 0);
    let end = first.finish().await;
    assert_eq!(end.kind(), "error", "{:?}", first.frames);
    assert_eq!(end.data["code"], "cancelled");
    let done = second.finish().await;
    assert_eq!(
        done.data["text"], "Answering the second.",
        "{:?}",
        second.frames
    );

    // Clearing forgets the conversation here and in the runtime: the next model request
    // carries only the new message.
    let conversation_id = done.data["conversation_id"]
        .as_str()
        .expect("conversation id")
        .to_owned();
    let cleared = chat
        .platform
        .delete(
            &format!("/api/v1/chat/{}", chat.agent_id),
            Some(&chat.user.access),
        )
        .await;
    assert_eq!(cleared.status, 200, "{cleared:?}");
    assert_eq!(cleared.body["conversation_id"], conversation_id.as_str());
    let messages = chat
        .platform
        .get(
            &format!("/api/v1/conversations/{conversation_id}/messages"),
            Some(&chat.user.access),
        )
        .await;
    assert_eq!(messages.body, json!([]));
    chat.model.push(Reply::text("Fresh start."));
    // The worker handles the conversation's commits in order: HistoryCleared (clear the
    // runtime's chat) before the next message's RunQueued.
    let mut next = chat.send("hello again").await;
    assert_eq!(next.finish().await.data["text"], "Fresh start.");
    let request = chat.model.requests().last().cloned().expect("a request");
    let texts: Vec<String> = request["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["role"] != "system")
        .map(|m| m["content"].to_string())
        .collect();
    assert_eq!(texts.len(), 1, "only the new message: {texts:?}");
    assert!(texts[0].contains("hello again"), "{texts:?}");
}

#[tokio::test]
async fn a_conversation_followed_with_a_cursor_gets_history_then_live_and_a_stale_cursor_a_reset() {
    let chat = Chat::start(&[]).await;
    chat.model
        .push(Reply::tool_call("shell", json!({"command": "echo one"})));
    chat.model.push(Reply::text("First reply."));
    let mut run = chat.send("first").await;
    run.finish().await;
    let queued = run
        .frames
        .iter()
        .find(|f| f.kind() == "queued")
        .expect("queued");
    let conversation_id = queued.data["conversation_id"]
        .as_str()
        .expect("conversation id")
        .to_owned();
    let run_id = queued.data["run_id"].clone();

    // From the start: the whole run, frame for frame as its own stream had it (same ids, same
    // data), with the conversation's other frames around it.
    let mut feed = chat.follow(&conversation_id, Some(0)).await;
    feed.until("done").await;
    let of_run: Vec<_> = feed
        .frames
        .iter()
        .filter(|f| f.data["run_id"] == run_id)
        .map(|f| (f.id, f.data.clone()))
        .collect();
    let streamed: Vec<_> = run.frames.iter().map(|f| (f.id, f.data.clone())).collect();
    assert_eq!(of_run, streamed);
    assert_eq!(feed.frames[0].kind(), "message");
    assert_eq!(feed.frames[0].data["text"], "first");

    // Live: a second message shows up on the open feed.
    chat.model.push(Reply::text("Second reply."));
    let mut second = chat
        .send_with(json!({"message": "second", "conversation_id": conversation_id}))
        .await;
    second.finish().await;
    let message = feed.until("message").await;
    assert_eq!(message.data["text"], "second");
    assert_eq!(feed.until("done").await.data["text"], "Second reply.");

    // Resume from any frame's cursor: exactly the frames after it, in order.
    let all: Vec<_> = feed.frames.iter().map(|f| (f.id, f.data.clone())).collect();
    let cursor = all[all.len() / 2].0.expect("id");
    let mut resumed = chat.follow(&conversation_id, Some(cursor)).await;
    let expected: Vec<_> = all
        .iter()
        .filter(|(id, _)| id.is_some_and(|id| id > cursor))
        .cloned()
        .collect();
    while resumed.frames.len() < expected.len() {
        resumed.next().await.expect("a resumed frame");
    }
    let got: Vec<_> = resumed
        .frames
        .iter()
        .map(|f| (f.id, f.data.clone()))
        .collect();
    assert_eq!(got, expected);

    // A cursor older than what the log keeps: an explicit reset with a snapshot, never a gap.
    // (The messages are projected first: purging would take them from the projector too.)
    let path = format!("/api/v1/conversations/{conversation_id}/messages");
    wait_for(TIMEOUT, || async {
        let answer = chat.platform.get(&path, Some(&chat.user.access)).await;
        (answer.body.as_array()?.len() == 4).then_some(())
    })
    .await;
    let js = chat.platform.nats.jetstream().await;
    let mut stream = js.get_stream("CONVERSATIONS").await.expect("stream");
    let last = stream.info().await.expect("info").state.last_sequence;
    stream.purge().sequence(last).await.expect("purge");
    let mut reset = chat.follow(&conversation_id, Some(1)).await;
    let first = reset.next().await.expect("a frame");
    assert_eq!(first.kind(), "reset", "{first:?}");
    let texts: Vec<&str> = first.data["messages"]
        .as_array()
        .expect("snapshot messages")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, ["first", "First reply.", "second", "Second reply."]);

    // The same cursor over the WebSocket gateway (`sessions.switch` with `after`): a `reset`
    // event with the same messages.
    let (mut ws, _) = Ws::connect(&chat.platform.base, &chat.user.access).await;
    let switched = ws
        .call(
            "sessions.switch",
            json!({"sessionId": conversation_id, "after": 1}),
        )
        .await;
    assert_eq!(switched["ok"], true, "{switched}");
    let reset = match ws.events.iter().find(|e| e["event"] == "reset").cloned() {
        Some(reset) => reset,
        None => ws.until("reset").await,
    };
    assert_eq!(reset["payload"]["reason"], "cursor_expired", "{reset}");
    let contents: Vec<&str> = reset["payload"]["recentMessages"]
        .as_array()
        .unwrap_or_else(|| panic!("no recentMessages: {reset}"))
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(
        contents,
        ["first", "First reply.", "second", "Second reply."]
    );
}
