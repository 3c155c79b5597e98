//! The WebSocket gateway (protocol v1), end to end over real WebSockets against the real
//! `warren dev`, a real `warren-agent` and the scripted model server: the handshake and error
//! rules, several clients on one session, queueing, cancelling and slash commands.

mod chat_support;
mod common;
mod edge_support;
mod gateway_support;

use chat_support::Chat;
use gateway_support::Ws;
use serde_json::{Value, json};
use warren_testkit::model_server::Reply;

fn close_reason(
    close: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>,
) -> (u16, String) {
    let close = close.expect("a close frame with a reason");
    (u16::from(close.code), close.reason.to_string())
}

#[tokio::test]
async fn the_handshake_comes_first_and_bad_frames_get_errors_or_a_reasoned_close() {
    let chat = Chat::start(&[]).await;
    let base = &chat.platform.base;

    // No token: closed, saying why.
    let mut ws = Ws::open(base).await;
    ws.send_text(
        r#"{"type":"req","id":"c","method":"connect","params":{"version":"1","clientType":"cli"}}"#,
    )
    .await;
    let (code, reason) = close_reason(ws.closed().await);
    assert_eq!(code, 1008);
    assert!(reason.contains("token"), "{reason}");

    // Anything but connect first: closed.
    let mut ws = Ws::open(base).await;
    ws.send_text(r#"{"type":"req","id":"1","method":"status","params":{}}"#)
        .await;
    let (code, reason) = close_reason(ws.closed().await);
    assert_eq!(code, 1008);
    assert!(reason.contains("connect"), "{reason}");

    // Malformed JSON first: closed.
    let mut ws = Ws::open(base).await;
    ws.send_text("{not json").await;
    assert_eq!(close_reason(ws.closed().await).0, 1007);

    // A forged token: closed.
    let mut ws = Ws::open(base).await;
    ws.send_text(r#"{"type":"req","id":"c","method":"connect","params":{"version":"1","clientType":"cli","token":"forged"}}"#)
        .await;
    assert_eq!(close_reason(ws.closed().await).0, 1008);

    // A good handshake, then an unknown method and bad params: error answers, still open.
    let (mut ws, hello) = Ws::connect(base, &chat.user.access).await;
    assert_eq!(hello["protocolVersion"], "1");
    let methods: Vec<&str> = hello["supportedMethods"]
        .as_array()
        .expect("methods")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for method in [
        "agent",
        "agent.cancel",
        "sessions.list",
        "sessions.new",
        "sessions.switch",
        "sessions.history",
        "status",
    ] {
        assert!(methods.contains(&method), "{method} in {methods:?}");
    }
    let unknown = ws.call("sessions.delete", json!({})).await;
    assert_eq!(unknown["ok"], false);
    assert_eq!(unknown["errorCode"], "unknown_method");
    let bad = ws.call("sessions.switch", json!({"sessionId": 42})).await;
    assert_eq!(bad["ok"], false);
    assert_eq!(bad["errorCode"], "invalid_params");
    assert_eq!(
        bad["details"]["fields"][0]["field"], "params.sessionId",
        "{bad}"
    );
    // A param the method does not know is refused by name, not ignored, and nothing is posted.
    let unknown_param = ws
        .call(
            "agent",
            json!({"message": "hello", "agentId": chat.agent_id, "backend": "ssh"}),
        )
        .await;
    assert_eq!(
        unknown_param["errorCode"], "invalid_params",
        "{unknown_param}"
    );
    assert_eq!(
        unknown_param["details"]["fields"][0]["field"], "params.backend",
        "{unknown_param}"
    );
    let sessions = ws.call("sessions.list", json!({})).await;
    assert_eq!(
        sessions["payload"]["total"], 0,
        "nothing was started: {sessions}"
    );
    let wrong_mode = ws
        .call(
            "agent",
            json!({"message": "hello", "agentId": chat.agent_id, "mode": "shout"}),
        )
        .await;
    assert_eq!(wrong_mode["errorCode"], "invalid_params", "{wrong_mode}");
    let other = ws
        .call(
            "sessions.switch",
            json!({"sessionId": "00000000-0000-0000-0000-000000000001"}),
        )
        .await;
    assert_eq!(other["errorCode"], "not_found");
    let status = ws.call("status", json!({})).await;
    assert_eq!(status["ok"], true, "{status}");
    assert!(status["payload"]["gateway"]["activeConnections"].as_u64() >= Some(1));

    // A frame far larger than the connection's first read buffer, but under the limit, is read
    // whole and answered.
    let padded = ws
        .call("status", json!({"pad": "p".repeat(60 * 1024)}))
        .await;
    assert!(padded["ok"].is_boolean(), "{padded}");

    // An oversized frame closes the connection (1009); malformed JSON later too (1007).
    let (mut big, _) = Ws::connect(base, &chat.user.access).await;
    big.send_text(&format!(
        r#"{{"type":"req","id":"x","method":"agent","params":{{"message":"{}"}}}}"#,
        "a".repeat(200 * 1024)
    ))
    .await;
    assert!(big.closed().await.is_none_or(|c| u16::from(c.code) == 1009));
    ws.send_text("[1, 2").await;
    assert_eq!(close_reason(ws.closed().await).0, 1007);
}

/// Events without the per-connection parts, for comparing clients.
fn shared_view(events: &[Value]) -> Vec<(Value, Value)> {
    events
        .iter()
        .map(|e| {
            let mut payload = e["payload"].clone();
            payload.as_object_mut().map(|p| p.remove("fromSelf"));
            (
                e["seq"].clone(),
                json!({"event": e["event"], "payload": payload}),
            )
        })
        .collect()
}

#[tokio::test]
async fn two_websocket_clients_and_an_sse_client_on_one_session_see_the_same_events() {
    let chat = Chat::start(&[]).await;
    let base = &chat.platform.base;
    let (mut a, _) = Ws::connect(base, &chat.user.access).await;
    let created = a
        .call(
            "sessions.new",
            json!({"agentId": chat.agent_id, "title": "Shared"}),
        )
        .await;
    assert_eq!(created["ok"], true, "{created}");
    let session = created["payload"]["sessionId"]
        .as_str()
        .expect("session")
        .to_owned();
    let (mut b, _) = Ws::connect(base, &chat.user.access).await;
    let switched = b
        .call("sessions.switch", json!({"sessionId": session}))
        .await;
    assert_eq!(switched["ok"], true, "{switched}");
    let mut sse = chat.follow(&session, Some(0)).await;

    // Params that would be ignored are refused by name: another agent than the session's, a
    // slash command given a session, a slash command's extra words.
    for (params, field) in [
        (
            json!({"message": "hi", "agentId": "00000000-0000-0000-0000-000000000009"}),
            "params.agentId",
        ),
        (
            json!({"message": "/status", "sessionId": session}),
            "params.sessionId",
        ),
        (json!({"message": "/cancel now"}), "params.message"),
    ] {
        let refused = a.call("agent", params).await;
        assert_eq!(refused["errorCode"], "invalid_params", "{refused}");
        assert_eq!(refused["details"]["fields"][0]["field"], field, "{refused}");
    }

    chat.model
        .push(Reply::tool_call("shell", json!({"command": "echo shared"})));
    chat.model.push(Reply::text("Both of you see this."));
    let sent = a.call("agent", json!({"message": "hello from A"})).await;
    assert_eq!(sent["ok"], true, "{sent}");
    assert_eq!(sent["payload"]["status"], "accepted");
    let final_a = a.until("final").await;
    let final_b = b.until("final").await;
    assert_eq!(final_a["payload"]["content"], "Both of you see this.");
    assert_eq!(final_a, final_b);
    sse.until("done").await;

    // The same events in the same order with the same cursors; only fromSelf differs.
    assert_eq!(shared_view(&a.events), shared_view(&b.events));
    let message_a = a
        .events
        .iter()
        .find(|e| e["event"] == "message")
        .expect("echo");
    let message_b = b
        .events
        .iter()
        .find(|e| e["event"] == "message")
        .expect("echo");
    assert_eq!(message_a["payload"]["fromSelf"], true);
    assert_eq!(message_b["payload"]["fromSelf"], false);
    assert_eq!(message_a["payload"]["content"], "hello from A");
    for name in ["queued", "tool_call", "tool_result", "token"] {
        assert!(
            a.events.iter().any(|e| e["event"] == name),
            "{name}: {:?}",
            a.events
        );
    }
    // The SSE client saw every one of those log positions too.
    let ws_seqs: Vec<u64> = a.events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    let sse_seqs: Vec<u64> = sse.frames.iter().filter_map(|f| f.id).collect();
    for seq in &ws_seqs {
        assert!(
            sse_seqs.contains(seq),
            "{seq} missing from SSE {sse_seqs:?}"
        );
    }
    assert!(ws_seqs.windows(2).all(|w| w[0] <= w[1]), "{ws_seqs:?}");

    // Resuming B after a cursor replays exactly what followed it.
    let cursor = ws_seqs[ws_seqs.len() / 2];
    let (mut resumed, _) = Ws::connect(base, &chat.user.access).await;
    let again = resumed
        .call(
            "sessions.switch",
            json!({"sessionId": session, "after": cursor}),
        )
        .await;
    assert_eq!(again["ok"], true);
    resumed.until("final").await;
    let expected: Vec<_> = shared_view(&b.events)
        .into_iter()
        .filter(|(seq, _)| seq.as_u64().is_some_and(|s| s > cursor))
        .collect();
    assert_eq!(shared_view(&resumed.events), expected);
}

#[tokio::test]
async fn messages_queue_and_cancel_over_websocket_and_slash_commands_are_answered() {
    let chat = Chat::start(&[]).await;
    let base = &chat.platform.base;
    let (mut ws, _) = Ws::connect(base, &chat.user.access).await;
    chat.model.push(Reply::tool_call(
        "shell",
        json!({"command": "echo $$ > ws.pid; exec sleep 600"}),
    ));
    let first = ws
        .call(
            "agent",
            json!({"message": "long one", "agentId": chat.agent_id}),
        )
        .await;
    assert_eq!(first["ok"], true, "{first}");
    let first_run = first["payload"]["runId"].clone();
    ws.until("tool_call").await;

    let second = ws.call("agent", json!({"message": "after it"})).await;
    assert_eq!(second["payload"]["status"], "queued", "{second}");
    assert_eq!(second["payload"]["position"], 1);
    let queued = loop {
        let event = ws.until("queued").await;
        if event["payload"]["runId"] == second["payload"]["runId"] {
            break event;
        }
    };
    assert_eq!(queued["payload"]["position"], 1);

    // The waiting run is cancelled at once; the running one by its worker.
    let cancel = ws
        .call("agent.cancel", json!({"runId": second["payload"]["runId"]}))
        .await;
    assert_eq!(cancel["ok"], true, "{cancel}");
    let cancelled = ws.until("cancelled").await;
    assert_eq!(cancelled["payload"]["runId"], second["payload"]["runId"]);
    let stop = ws.call("agent", json!({"message": "/cancel"})).await;
    assert_eq!(stop["ok"], true, "{stop}");
    assert_eq!(stop["payload"]["command"], "cancel");
    let cancelled = ws.until("cancelled").await;
    assert_eq!(cancelled["payload"]["runId"], first_run);

    // Slash commands.
    let help = ws.call("agent", json!({"message": "/help"})).await;
    assert!(
        help["payload"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("/sessions"))
    );
    let sessions = ws.call("agent", json!({"message": "/sessions"})).await;
    assert!(
        sessions["payload"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("Recent sessions")),
        "{sessions}"
    );
    let new = ws.call("agent", json!({"message": "/new"})).await;
    assert_eq!(new["ok"], true, "{new}");
    let listed = ws.call("sessions.list", json!({"limit": 10})).await;
    assert_eq!(listed["payload"]["total"], 2);
    assert_eq!(
        listed["payload"]["sessions"][0]["id"],
        new["payload"]["result"]["sessionId"]
    );
    let back = ws.call("agent", json!({"message": "/session 2"})).await;
    assert_eq!(back["ok"], true, "{back}");
    let history = ws.call("sessions.history", json!({"limit": 10})).await;
    let messages = history["payload"]["messages"].as_array().expect("messages");
    let contents: Vec<&str> = messages
        .iter()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(contents, ["long one", "after it"]);
    // Both runs were cancelled: each is in the history with its outcome.
    let outcomes: Vec<(&str, &str)> = messages
        .iter()
        .filter(|m| m["role"] == "assistant")
        .filter_map(|m| Some((m["status"].as_str()?, m["error"]["code"].as_str()?)))
        .collect();
    assert_eq!(
        outcomes,
        [("cancelled", "cancelled"), ("cancelled", "cancelled")],
        "{history}"
    );
    let unknown = ws.call("agent", json!({"message": "/frobnicate"})).await;
    assert_eq!(unknown["errorCode"], "unknown_command");
}

#[tokio::test]
async fn two_requests_sent_at_once_are_answered_one_after_the_other() {
    let chat = Chat::start(&[]).await;
    let base = &chat.platform.base;
    let (mut ws, _) = Ws::connect(base, &chat.user.access).await;
    chat.model
        .push(Reply::text("The first answer, in several words."));
    chat.model.push(Reply::text("The second answer."));
    // Both requests go out before either answer is read.
    ws.send_text(
        &json!({"type": "req", "id": "one", "method": "agent",
        "params": {"message": "first", "agentId": chat.agent_id}})
        .to_string(),
    )
    .await;
    let first = loop {
        let frame = ws.frame().await.expect("open");
        if frame["id"] == "one" {
            break frame;
        }
    };
    ws.send_text(
        &json!({"type": "req", "id": "two", "method": "agent",
        "params": {"message": "second"}})
        .to_string(),
    )
    .await;
    let second = loop {
        let frame = ws.frame().await.expect("open");
        if frame["id"] == "two" {
            break frame;
        }
    };
    let (one, two) = (&first["payload"]["runId"], &second["payload"]["runId"]);
    // Read until both runs are final.
    let mut finals = 0;
    while finals < 2 {
        if ws.until("final").await["payload"]["runId"].is_string() {
            finals += 1;
        }
    }
    // The second waited its turn: every event of the first run's work comes before any of the
    // second's, and each got its own answer.
    let work = |run: &Value| -> Vec<usize> {
        ws.events
            .iter()
            .enumerate()
            .filter(|(_, e)| e["payload"]["runId"] == *run)
            .filter(|(_, e)| matches!(e["event"].as_str(), Some("token" | "status" | "final")))
            .map(|(i, _)| i)
            .collect()
    };
    let (of_one, of_two) = (work(one), work(two));
    assert!(!of_one.is_empty() && !of_two.is_empty());
    assert!(of_one.iter().max() < of_two.iter().min(), "{:?}", ws.events);
    let answer = |run: &Value| {
        ws.events
            .iter()
            .find(|e| e["event"] == "final" && e["payload"]["runId"] == *run)
            .map(|e| e["payload"]["content"].clone())
    };
    assert_eq!(
        answer(one),
        Some(json!("The first answer, in several words."))
    );
    assert_eq!(answer(two), Some(json!("The second answer.")));
    let queued = ws
        .events
        .iter()
        .find(|e| e["event"] == "queued" && e["payload"]["runId"] == *two)
        .expect("the second was queued");
    assert!(queued["payload"]["position"].as_u64().is_some());
}

/// Every frame of a conversation's feed up to the log's current end: (cursor, frame).
async fn full_feed(chat: &Chat, session: &str) -> Vec<(u64, Value)> {
    let js = chat.platform.nats.jetstream().await;
    let mut stream = js.get_stream("CONVERSATIONS").await.expect("stream");
    let last = stream.info().await.expect("info").state.last_sequence;
    let mut feed = chat.follow(session, Some(0)).await;
    while feed.frames.last().and_then(|f| f.id) != Some(last) {
        feed.next().await.expect("a frame");
    }
    feed.frames
        .iter()
        .map(|f| (f.id.expect("id"), f.data.clone()))
        .collect()
}

#[tokio::test]
async fn clients_dropped_at_random_points_resume_with_every_event_exactly_once_in_order() {
    use rand::Rng;
    let chat = Chat::start(&[]).await;
    // A conversation with some history: three runs with tool calls and streamed text.
    let (mut ws, _) = Ws::connect(&chat.platform.base, &chat.user.access).await;
    let created = ws
        .call("sessions.new", json!({"agentId": chat.agent_id}))
        .await;
    let session = created["payload"]["sessionId"]
        .as_str()
        .expect("session")
        .to_owned();
    for n in 0..3 {
        chat.model.push(Reply::tool_call(
            "shell",
            json!({"command": format!("echo {n}")}),
        ));
        chat.model
            .push(Reply::text(format!("Answer {n} in a few words here.")));
        ws.call("agent", json!({"message": format!("question {n}")}))
            .await;
        ws.until("final").await;
    }
    let reference = full_feed(&chat, &session).await;
    assert!(reference.len() > 20, "{}", reference.len());
    let last = reference.last().expect("frames").0;

    let mut rng = rand::rng();
    for trial in 0..200 {
        let mut got: Vec<(u64, Value)> = Vec::new();
        let mut cursor = 0;
        let over_ws = trial % 2 == 1;
        while cursor < last {
            let take = rng.random_range(1..=12);
            if over_ws {
                let (mut client, _) = Ws::connect(&chat.platform.base, &chat.user.access).await;
                let switched = client
                    .call(
                        "sessions.switch",
                        json!({"sessionId": session, "after": cursor}),
                    )
                    .await;
                if switched["ok"] != true {
                    let log = chat.platform.warren.log_text();
                    let cause: Vec<&str> = log
                        .lines()
                        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
                        .collect();
                    panic!("trial {trial}: {switched}\n{}", cause.join("\n"));
                }
                while client.events.len() < take
                    && client.events.last().and_then(|e| e["seq"].as_u64()) != Some(last)
                {
                    client.frame().await.expect("open");
                }
                for event in &client.events {
                    let seq = event["seq"].as_u64().expect("seq");
                    got.push((seq, event["event"].clone()));
                    cursor = seq;
                }
            } else {
                let mut feed = chat.follow(&session, Some(cursor)).await;
                while feed.frames.len() < take
                    && feed.frames.last().and_then(|f| f.id) != Some(last)
                {
                    feed.next().await.expect("a frame");
                }
                for frame in &feed.frames {
                    let seq = frame.id.expect("id");
                    got.push((seq, frame.data["type"].clone()));
                    cursor = seq;
                }
            }
            // Dropping the client here is the disconnect.
        }
        // Several frames can share a cursor (one commit, several events): a client that drops
        // between them resumes after the whole commit, so compare per commit.
        let commits = |frames: &[(u64, Value)]| {
            let mut seqs: Vec<u64> = frames.iter().map(|(s, _)| *s).collect();
            seqs.dedup();
            seqs
        };
        // The gateway sends no event for `run_started` and `cancel_requested` facts.
        let relevant: Vec<(u64, Value)> = reference
            .iter()
            .filter(|(_, f)| {
                !over_ws || !matches!(f["type"].as_str(), Some("run_started" | "cancel_requested"))
            })
            .cloned()
            .collect();
        let expected = commits(&relevant);
        assert_eq!(commits(&got), expected, "trial {trial}: gap or duplicate");
        assert!(
            got.windows(2).all(|w| w[0].0 <= w[1].0),
            "trial {trial}: out of order"
        );
    }
}

#[tokio::test]
async fn two_edge_processes_serve_one_conversation_with_identical_events() {
    let chat = Chat::start(&[]).await;
    let (second, edge) = chat.platform.second_edge(&[]).await;

    let (mut a, _) = Ws::connect(&chat.platform.base, &chat.user.access).await;
    let created = a
        .call("sessions.new", json!({"agentId": chat.agent_id}))
        .await;
    let session = created["payload"]["sessionId"]
        .as_str()
        .expect("session")
        .to_owned();
    let (mut b, _) = Ws::connect(&second, &chat.user.access).await;
    assert_eq!(
        b.call("sessions.switch", json!({"sessionId": session}))
            .await["ok"],
        true
    );
    chat.model.push(Reply::text("Served by both edges."));
    let sent = b
        .call("agent", json!({"message": "from the second edge"}))
        .await;
    assert_eq!(sent["ok"], true, "{sent}");
    a.until("final").await;
    b.until("final").await;
    assert_eq!(shared_view(&a.events), shared_view(&b.events));
    let echo = a
        .events
        .iter()
        .find(|e| e["event"] == "message")
        .expect("echo");
    assert_eq!(echo["payload"]["fromSelf"], false);
    drop(edge);
}

#[tokio::test]
async fn sessions_stay_isolated_clients_come_and_go_and_model_errors_are_error_events() {
    let chat = Chat::start(&[]).await;
    let base = &chat.platform.base;
    let (mut a, _) = Ws::connect(base, &chat.user.access).await;
    let one = a
        .call(
            "sessions.new",
            json!({"agentId": chat.agent_id, "title": "one"}),
        )
        .await;
    let one = one["payload"]["sessionId"]
        .as_str()
        .expect("session")
        .to_owned();
    let (mut b, _) = Ws::connect(base, &chat.user.access).await;
    let two = b
        .call(
            "sessions.new",
            json!({"agentId": chat.agent_id, "title": "two"}),
        )
        .await;
    let two = two["payload"]["sessionId"]
        .as_str()
        .expect("session")
        .to_owned();
    let (mut watcher, _) = Ws::connect(base, &chat.user.access).await;
    watcher
        .call("sessions.switch", json!({"sessionId": one}))
        .await;

    // B works in session two: nothing of it reaches session one's clients.
    chat.model.push(Reply::text("For session two only."));
    b.call("agent", json!({"message": "in two"})).await;
    b.until("final").await;
    // A's message in session one: A and the watcher see it; B, in two, does not.
    chat.model.push(Reply::text("For session one."));
    a.call("agent", json!({"message": "in one"})).await;
    a.until("final").await;
    watcher.until("final").await;
    for client in [&a, &watcher] {
        assert!(
            client
                .events
                .iter()
                .all(|e| e["payload"]["sessionId"] == one.as_str()),
            "{:?}",
            client.events
        );
        assert!(
            !client
                .events
                .iter()
                .any(|e| e["payload"]["content"] == "in two")
        );
    }
    assert!(!b.events.iter().any(|e| e["payload"]["content"] == "in one"));
    assert!(
        b.events
            .iter()
            .all(|e| e["payload"]["sessionId"] == two.as_str()),
        "{:?}",
        b.events
    );
    // Session one, just used, moves to the top of the list (once the read model has it).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let listed = b.call("sessions.list", json!({})).await;
        if listed["payload"]["sessions"][0]["id"] == one.as_str() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{listed}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // A leaves mid-conversation; the watcher goes on receiving, including a cancel.
    drop(a);
    chat.model.push(Reply::hang());
    let (mut c, _) = Ws::connect(base, &chat.user.access).await;
    c.call("sessions.switch", json!({"sessionId": one})).await;
    let sent = c.call("agent", json!({"message": "hang on"})).await;
    watcher.until("token").await;
    c.call("agent.cancel", json!({"runId": sent["payload"]["runId"]}))
        .await;
    let cancelled = watcher.until("cancelled").await;
    assert_eq!(cancelled["payload"]["runId"], sent["payload"]["runId"]);
    assert_eq!(
        c.until("cancelled").await["payload"]["runId"],
        sent["payload"]["runId"]
    );

    // The model refusing the key: an error event, not retryable, the connection open.
    chat.model.push(Reply::error_with(401, "invalid api key"));
    c.call("agent", json!({"message": "with a bad key"})).await;
    let error = c.until("error").await;
    assert_eq!(error["payload"]["retryable"], false, "{error}");
    assert_eq!(error["payload"]["errorCode"], "model_http_error");
    assert_eq!(c.call("status", json!({})).await["ok"], true);
}

/// Reads `token` events until `count` arrived, counting them in `progress`; returns their seqs.
async fn read_tokens(
    mut ws: Ws,
    count: usize,
    progress: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> (Ws, Vec<u64>) {
    let mut seqs = Vec::with_capacity(count);
    while seqs.len() < count {
        let frame = ws.frame().await.expect("a fast client is never dropped");
        if frame["event"] == "token" {
            seqs.push(frame["seq"].as_u64().expect("seq"));
            progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        assert_ne!(frame["event"], "error", "{frame}");
    }
    (ws, seqs)
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_while_the_fast_ones_get_every_event_on_time() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let chat = Chat::start(&[]).await;
    let base = &chat.platform.base;
    let (mut owner, _) = Ws::connect(base, &chat.user.access).await;
    let session = owner.new_session(&chat.agent_id).await;
    let (mut other, _) = Ws::connect(base, &chat.user.access).await;
    other.switch(&session).await;
    let mut slow = Ws::connect_small_window(base, &chat.user.access).await;
    slow.switch(&session).await;

    // A long, fast stream of large deltas (more than the slow client's socket buffers and its
    // 256-frame allowance together). The slow client reads nothing meanwhile; the fast ones are
    // never more than a batch behind, so any stall of theirs would stop the test.
    const TOTAL: usize = 1600;
    const BATCH: usize = 100;
    let progress: Vec<Arc<AtomicUsize>> = (0..2).map(|_| Arc::default()).collect();
    let readers: Vec<_> = [owner, other]
        .into_iter()
        .zip(&progress)
        .map(|(ws, progress)| tokio::spawn(read_tokens(ws, TOTAL, progress.clone())))
        .collect();
    let js = chat.platform.nats.jetstream().await;
    let run_id = uuid::Uuid::now_v7();
    let text = "x".repeat(4096);
    let mut published = Vec::with_capacity(TOTAL);
    for batch in 0..TOTAL / BATCH {
        for _ in 0..BATCH {
            let delta = json!({"type": "token", "data": {"run_id": run_id, "text": text}});
            let ack = js
                .publish(format!("conv.{session}.live"), delta.to_string().into())
                .await
                .expect("publish")
                .await
                .expect("ack");
            published.push(ack.sequence);
        }
        let done = (batch + 1) * BATCH;
        warren_testkit::wait_until(std::time::Duration::from_secs(20), || async {
            progress.iter().all(|p| p.load(Ordering::Relaxed) >= done)
        })
        .await;
    }
    for reader in readers {
        let (_, seqs) = reader.await.expect("fast reader");
        assert_eq!(seqs, published, "a fast client missed or reordered events");
    }

    // The slow client now reads: a prefix of the stream in order, then the reason, then a close
    // asking it to come back.
    let mut got = Vec::new();
    let mut reason = None;
    let close = loop {
        match slow.frame().await {
            Ok(frame) if frame["event"] == "token" => {
                got.push(frame["seq"].as_u64().expect("seq"));
            }
            Ok(frame) if frame["event"] == "error" => reason = Some(frame["payload"].clone()),
            Ok(_) => {}
            Err(close) => break close,
        }
    };
    assert!(got.len() < TOTAL, "the slow client was not dropped");
    assert_eq!(got, published[..got.len()]);
    let reason = reason.expect("an error event saying why");
    assert_eq!(reason["errorCode"], "slow_consumer");
    assert_eq!(reason["retryable"], true);
    let (code, text) = close_reason(close);
    assert_eq!(code, 1013, "{text}");

    // It resumes after its last seq and gets the rest, exactly once.
    let (mut again, _) = Ws::connect(base, &chat.user.access).await;
    let mut params = json!({"sessionId": session});
    if let Some(last) = got.last() {
        params["after"] = (*last).into();
    }
    again.call("sessions.switch", params).await;
    let (_, rest) = read_tokens(again, TOTAL - got.len(), Arc::default()).await;
    assert_eq!(rest, published[got.len()..]);
}

#[tokio::test]
async fn a_message_the_agent_schedules_reaches_every_client_of_the_session_and_its_history() {
    let chat = Chat::start(&[]).await;
    let base = &chat.platform.base;
    let (mut a, _) = Ws::connect(base, &chat.user.access).await;
    let session = a.new_session(&chat.agent_id).await;
    let (mut b, _) = Ws::connect(base, &chat.user.access).await;
    b.switch(&session).await;
    let mut sse = chat.follow(&session, Some(0)).await;

    // The agent schedules a reminder (its runtime's schedule_message tool) and answers.
    chat.model.push(Reply::tool_call(
        "schedule_message",
        json!({"message": "Time to stretch.", "delay_seconds": 1}),
    ));
    chat.model.push(Reply::text("I will remind you."));
    let sent = a.call("agent", json!({"message": "remind me"})).await;
    assert_eq!(sent["ok"], true, "{sent}");
    a.until("final").await;

    // When it is due, the platform collects it from the runtime's /pending: both sockets and
    // the SSE follower get it, as the agent's own message outside any run.
    let mut proactive = Vec::new();
    for ws in [&mut a, &mut b] {
        let message = loop {
            let event = ws.until("message").await;
            if event["payload"]["role"] == "assistant" {
                break event;
            }
        };
        assert_eq!(
            message["payload"]["content"], "Time to stretch.",
            "{message}"
        );
        assert_eq!(message["payload"]["proactive"], true, "{message}");
        assert_eq!(message["payload"]["fromSelf"], false, "{message}");
        assert!(message["seq"].as_u64().is_some(), "{message}");
        proactive.push(message["payload"]["messageId"].clone());
    }
    assert_eq!(proactive[0], proactive[1], "one message, seen twice");
    let frame = sse.until("agent_message").await;
    assert_eq!(frame.data["text"], "Time to stretch.");
    assert_eq!(frame.data["message_id"], proactive[0]);

    // … and it is in the conversation's history, once.
    let history = warren_testkit::wait_for(std::time::Duration::from_secs(10), || async {
        let messages = chat
            .platform
            .get(
                &format!("/api/v1/conversations/{session}/messages"),
                Some(&chat.user.access),
            )
            .await;
        let list = messages.body.as_array()?.clone();
        list.iter()
            .any(|m| m["text"] == "Time to stretch.")
            .then_some(list)
    })
    .await;
    let reminders: Vec<&Value> = history
        .iter()
        .filter(|m| m["text"] == "Time to stretch.")
        .collect();
    assert_eq!(reminders.len(), 1, "{history:?}");
    assert_eq!(reminders[0]["role"], "assistant");
    assert!(reminders[0]["run_id"].is_null(), "{history:?}");
}
