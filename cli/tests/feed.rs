//! The user-wide feed, end to end against the real `warren dev`: `GET /api/v1/events` (SSE) and
//! the gateway's `feed.subscribe` (WebSocket) stream every change to the caller's agents
//! (creation, redeploys with each deployment step) and conversations (messages, runs), and nothing of
//! anybody else's.

mod chat_support;
mod common;
mod edge_support;
mod gateway_support;

use chat_support::{Chat, RunStream};
use gateway_support::Ws;
use serde_json::{Value, json};
use warren_testkit::model_server::Reply;

/// Opens the caller's feed over SSE and waits for it to be subscribed.
async fn feed(chat: &Chat, token: &str) -> RunStream {
    let response = chat
        .platform
        .http
        .get(format!("{}/api/v1/events", chat.platform.base))
        .bearer_auth(token)
        .send()
        .await
        .expect("feed request");
    assert_eq!(response.status(), 200);
    let mut frames = RunStream::new(response);
    assert_eq!(frames.next().await.expect("ready").kind(), "ready");
    frames
}

/// Reads SSE feed frames until one for `id` carries a change of `change_type`.
async fn sse_until(frames: &mut RunStream, id: &str, change_type: &str) -> Value {
    loop {
        let frame = frames.next().await.expect("feed frame");
        if frame.data["id"] == id && frame.data["change"]["type"] == change_type {
            return frame.data;
        }
    }
}

/// Reads WS `feed` events until one for `id` carries a change of `change_type`.
async fn ws_until(ws: &mut Ws, id: &str, change_type: &str) -> Value {
    loop {
        let frame = ws.until("feed").await;
        let payload = &frame["payload"];
        if payload["id"] == id && payload["change"]["type"] == change_type {
            return payload.clone();
        }
    }
}

#[tokio::test]
async fn the_feed_streams_a_users_agent_and_conversation_changes_and_nobody_elses() {
    let chat = Chat::start(&[]).await;
    let other = chat.platform.sign_in("someone-else@example.com").await;
    let mut mine = feed(&chat, &chat.user.access).await;
    let mut theirs = feed(&chat, &other.access).await;
    let (mut ws, _) = Ws::connect(&chat.platform.base, &chat.user.access).await;
    let subscribed = ws.call("feed.subscribe", json!({})).await;
    assert_eq!(subscribed["ok"], true, "{subscribed}");

    // The agent is redeployed: the request, every deployment step and the result, on both of
    // the owner's feeds.
    let agent = chat.agent_id.clone();
    let redeploy = chat
        .platform
        .post(
            &format!("/api/v1/agents/{agent}/redeploy"),
            Some(&chat.user.access),
            json!({}),
        )
        .await;
    assert!(redeploy.status < 300, "{redeploy:?}");
    let first = sse_until(&mut mine, &agent, "redeploy_requested").await;
    assert_eq!(first["type"], "agent");
    assert_eq!(first["v"], 1, "the feed's frames are versioned: {first}");
    assert_eq!(first["change"]["reason"], "manual");
    assert!(first["seq"].as_u64().is_some_and(|seq| seq > 0));
    let step = sse_until(&mut mine, &agent, "deployment_step").await;
    assert!(step["change"]["step"].is_string(), "{step}");
    let deployed = sse_until(&mut mine, &agent, "deployed").await;
    // The feed is not the log: internal facts such as the runtime's address stay out.
    assert!(
        deployed["change"].get("endpoint_url").is_none()
            && !deployed.to_string().contains("127.0.0.1"),
        "{deployed}"
    );
    ws_until(&mut ws, &agent, "redeploy_requested").await;
    ws_until(&mut ws, &agent, "deployed").await;
    chat.wait_running().await;

    // A message to the first agent: the new message and the finished run.
    chat.model.push(Reply::text("Hello from the feed."));
    let mut run = chat.send("hi there").await;
    let conversation = run.until("queued").await.data["conversation_id"]
        .as_str()
        .expect("conversation id")
        .to_owned();
    run.finish().await;
    let posted = sse_until(&mut mine, &conversation, "message_posted").await;
    assert_eq!(posted["type"], "conversation");
    assert_eq!(posted["change"]["text"], "hi there");
    let done = sse_until(&mut mine, &conversation, "run_completed").await;
    assert_eq!(done["change"]["text"], "Hello from the feed.");
    ws_until(&mut ws, &conversation, "message_posted").await;
    ws_until(&mut ws, &conversation, "run_completed").await;

    // The other user's feed saw none of it: the first frame it gets is its own new agent.
    let created = chat
        .platform
        .post(
            "/api/v1/agents",
            Some(&other.access),
            json!({"name": "Theirs", "system_prompt": "Hi."}),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let own = created.body["id"].as_str().expect("agent id").to_owned();
    let frame = theirs.next().await.expect("a frame of their own");
    assert_eq!(frame.data["id"], own.as_str(), "{frame:?}");
    assert_eq!(frame.data["change"]["type"], "created");
    // … while the first user's feed never shows it.
    ws.call("feed.unsubscribe", json!({})).await;
    chat.model.push(Reply::text("Again."));
    chat.send_with(json!({"message": "again", "conversation_id": conversation}))
        .await
        .finish()
        .await;
    sse_until(&mut mine, &conversation, "run_completed").await;
    assert!(
        mine.frames.iter().all(|f| f.data["id"] != own.as_str()),
        "another user's agent on my feed"
    );

    // Without a token: refused.
    let anonymous = chat.platform.get("/api/v1/events", None).await;
    assert_eq!(anonymous.status, 401);
}
