//! The agent's session tools (spec 002 E4, "LLM can find sessions"), end to end: the real
//! `warren dev` deploys a real `warren-agent` that knows its platform; the scripted model calls
//! `sessions_search`, the runtime asks the edge's runtime API with its own agent token, and the
//! result reaches the model and every client over the WebSocket gateway. The runtime API itself
//! refuses anything but the agent's own token and never shows another user's session.

mod chat_support;
mod common;
mod edge_support;
mod gateway_support;

use chat_support::{Chat, runtime_env};
use chrono::Utc;
use gateway_support::Ws;
use serde_json::{Value, json};
use warren_testkit::model_server::Reply;

/// Sends `message` as an `agent` request in the current session and waits for its `final`.
async fn ask(ws: &mut Ws, message: &str) -> Value {
    let answer = ws.call("agent", json!({"message": message})).await;
    assert_eq!(answer["ok"], true, "{answer}");
    ws.until("final").await
}

#[tokio::test]
async fn the_model_finds_the_users_sessions_with_the_session_search_tool() {
    let chat = Chat::start(&[]).await;
    let base = chat.platform.base.clone();
    let (mut ws, _) = Ws::connect(&base, &chat.user.access).await;

    let python = ws.new_session(&chat.agent_id).await;
    chat.model.push(Reply::text("Sure, let's plan it."));
    ask(&mut ws, "Let's plan the Python async refactor").await;
    let weather = ws.new_session(&chat.agent_id).await;
    chat.model.push(Reply::text("Probably."));
    ask(&mut ws, "Will it rain tomorrow?").await;

    // In a third session the user asks; the model searches.
    let third = ws.new_session(&chat.agent_id).await;
    chat.model.push(Reply::tool_call(
        "sessions_search",
        json!({"query": "ASYNC python"}),
    ));
    chat.model
        .push(Reply::text("That was the refactor planning session."));
    let last = ask(&mut ws, "Which session was that thing about?").await;
    assert_eq!(
        last["payload"]["content"],
        "That was the refactor planning session."
    );
    let call = ws
        .events
        .iter()
        .find(|e| e["event"] == "tool_call")
        .expect("a tool_call event");
    assert_eq!(call["payload"]["toolName"], "sessions_search", "{call}");
    let result = ws
        .events
        .iter()
        .find(|e| e["event"] == "tool_result")
        .expect("a tool_result event")["payload"]["result"]
        .clone();
    assert_eq!(result["success"], true, "{result}");
    let found = result["content"].as_str().expect("tool output");
    assert!(
        found.contains(&python) && found.contains("Python async refactor"),
        "the Python session is found: {found}"
    );
    assert!(
        !found.contains(&weather) && !found.contains(&third),
        "only sessions with every word: {found}"
    );

    // The model was offered the tools and read the result.
    let requests = chat.model.requests();
    let offered: Vec<&str> = requests[0]["tools"]
        .as_array()
        .expect("tools offered")
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    assert!(
        offered.contains(&"sessions_search") && offered.contains(&"sessions_get"),
        "{offered:?}"
    );
    let fed_back = requests
        .last()
        .expect("a request")
        .to_string()
        .contains(&python);
    assert!(fed_back, "the tool result goes back to the model");

    // The runtime API, called like the runtime does.
    let pid = chat.agent_pid();
    assert_eq!(
        runtime_env(pid, "WARREN_AGENT_ID").as_deref(),
        Some(chat.agent_id.as_str())
    );
    assert_eq!(
        runtime_env(pid, "WARREN_AGENT_PLATFORM_URL").as_deref(),
        Some(base.as_str())
    );
    let token = runtime_env(pid, "WARREN_AGENT_TOKEN").expect("the runtime's token");
    let sessions = format!("{base}/api/v1/runtime/agents/{}/sessions", chat.agent_id);
    let get = |url: String, bearer: Option<String>| {
        let http = chat.platform.http.clone();
        async move {
            let mut request = http.get(url);
            if let Some(bearer) = bearer {
                request = request.bearer_auth(bearer);
            }
            let response = request.send().await.expect("runtime API request");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, listed) = get(sessions.clone(), Some(token.clone())).await;
    assert_eq!(status, 200, "{listed}");
    let ids: Vec<&str> = listed["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [third.as_str(), weather.as_str(), python.as_str()],
        "no query lists them all, most recently active first"
    );
    // Date filters: all three were active today (UTC), none last week.
    let today = Utc::now().date_naive();
    let (status, active_today) =
        get(format!("{sessions}?date_filter=today"), Some(token.clone())).await;
    if Utc::now().date_naive() == today {
        assert_eq!(status, 200);
        assert_eq!(
            active_today["sessions"].as_array().map(Vec::len),
            Some(3),
            "{active_today}"
        );
    }
    let (_, last_week) = get(
        format!("{sessions}?date_filter=last_week"),
        Some(token.clone()),
    )
    .await;
    assert_eq!(last_week["sessions"], json!([]), "{last_week}");
    let (status, refused) = get(
        format!("{sessions}?date_filter=someday"),
        Some(token.clone()),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(
        refused["error"]["details"]["fields"][0]["field"],
        "date_filter"
    );

    let (status, one) = get(format!("{sessions}/{python}"), Some(token.clone())).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["session"]["id"], python.as_str());
    assert_eq!(
        one["messages"][0]["text"],
        "Let's plan the Python async refactor"
    );
    assert_eq!(one["messages"][1]["text"], "Sure, let's plan it.");

    // Anything but the agent's own token is 401; another user's session is 404.
    for bearer in [
        None,
        Some("not-the-token".to_owned()),
        Some(chat.user.access.clone()),
    ] {
        let (status, body) = get(sessions.clone(), bearer).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["code"], "invalid_agent_token");
    }
    let unknown_agent = format!(
        "{base}/api/v1/runtime/agents/{}/sessions",
        uuid::Uuid::now_v7()
    );
    assert_eq!(get(unknown_agent, Some(token.clone())).await.0, 401);

    let other = chat.platform.sign_in("other@example.com").await;
    let created = chat
        .platform
        .post(
            "/api/v1/agents",
            Some(&other.access),
            json!({"name": "Theirs"}),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let (mut theirs, _) = Ws::connect(&base, &other.access).await;
    let their_session = theirs
        .new_session(created.body["id"].as_str().expect("agent id"))
        .await;
    let (status, body) = get(format!("{sessions}/{their_session}"), Some(token.clone())).await;
    assert_eq!(status, 404, "{body}");
    assert!(!body.to_string().contains("Theirs"));
    let missing = uuid::Uuid::now_v7();
    assert_eq!(
        get(format!("{sessions}/{missing}"), Some(token)).await.0,
        404
    );
}
