//! Forking a conversation at a message, end to end (docs/adr/0027-fork.md): the real
//! `warren dev` and a real `warren-agent` talking to the scripted model server; the test forks
//! over REST and the gateway like a client and reads what the model was sent.

mod chat_support;
mod common;
mod edge_support;
mod gateway_support;

use chat_support::Chat;
use gateway_support::Ws;
use serde_json::{Value, json};
use std::time::Duration;
use warren_testkit::model_server::Reply;
use warren_testkit::wait_for;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `text` in the user's conversation with the agent (`conversation` if given) and waits
/// for its reply; the conversation's id.
async fn exchange(chat: &Chat, text: &str, reply: &str, conversation: Option<&str>) -> String {
    chat.model.push(Reply::text(reply));
    let mut body = json!({"message": text});
    if let Some(id) = conversation {
        body["conversation_id"] = id.into();
    }
    let mut run = chat.send_with(body).await;
    let id = run.until("queued").await.data["conversation_id"]
        .as_str()
        .expect("conversation id")
        .to_owned();
    let done = run.finish().await;
    assert_eq!(done.data["text"], reply, "{:?}", run.frames);
    id
}

/// The conversation's messages once there are `count` of them.
async fn messages(chat: &Chat, conversation: &str, count: usize) -> Vec<Value> {
    let path = format!("/api/v1/conversations/{conversation}/messages");
    wait_for(TIMEOUT, || async {
        let answer = chat.platform.get(&path, Some(&chat.user.access)).await;
        let list = answer.body.as_array()?.clone();
        (list.len() == count).then_some(list)
    })
    .await
}

/// `(role, content)` of each message of a model request but the system prompt.
fn dialogue(request: &Value) -> Vec<(String, String)> {
    request["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["role"] != "system")
        .map(|m| {
            (
                m["role"].as_str().unwrap_or_default().to_owned(),
                m["content"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn said(role: &str, content: &str) -> (String, String) {
    (role.to_owned(), content.to_owned())
}

#[tokio::test]
async fn a_fork_after_the_second_of_four_messages_has_two_and_the_runtime_is_given_exactly_those() {
    let chat = Chat::start(&[]).await;
    let origin = exchange(&chat, "First question", "First answer.", None).await;
    exchange(&chat, "Second question", "Second answer.", Some(&origin)).await;
    let original = messages(&chat, &origin, 4).await;
    let after = original[1]["seq"].as_u64().expect("seq");

    let forked = chat
        .platform
        .post(
            &format!("/api/v1/conversations/{origin}/fork"),
            Some(&chat.user.access),
            json!({"after": after, "title": "Another way"}),
        )
        .await;
    assert_eq!(forked.status, 201, "{:?}", forked.body);
    assert_eq!(forked.body["forked_from"], origin.as_str());
    assert_eq!(forked.body["forked_after"], after);
    assert_eq!(forked.body["message_count"], 2);
    let fork = forked.body["id"].as_str().expect("fork id").to_owned();
    assert_ne!(fork, origin);

    // The fork's history has the first two messages; the original still has four.
    let inherited = messages(&chat, &fork, 2).await;
    let texts: Vec<_> = inherited.iter().map(|m| m["text"].clone()).collect();
    assert_eq!(texts, [json!("First question"), json!("First answer.")]);
    assert_eq!(inherited[1]["seq"], after, "the copies keep their cursors");
    assert_eq!(messages(&chat, &origin, 4).await, original);

    // The sessions list shows the fork as a session of its own, naming its origin.
    let listed = chat
        .platform
        .get("/api/v1/conversations", Some(&chat.user.access))
        .await;
    let entry = listed
        .body
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["id"] == fork.as_str())
        .cloned()
        .expect("the fork is listed");
    assert_eq!(entry["forked_from"], origin.as_str());
    assert_eq!(entry["title"], "Another way");
    assert_eq!(entry["message_count"], 2);

    // A message in the fork reaches the model with exactly that history, and the next one with
    // the fork's own history after it (the runtime kept it).
    let before = chat.model.request_count();
    exchange(&chat, "Fork question", "Fork answer.", Some(&fork)).await;
    let recorded = chat.model.recorded();
    assert_eq!(recorded.len(), before + 1);
    assert_eq!(
        dialogue(&recorded[before].body),
        [
            said("user", "First question"),
            said("assistant", "First answer."),
            said("user", "Fork question"),
        ]
    );
    exchange(&chat, "And then?", "Then this.", Some(&fork)).await;
    assert_eq!(
        dialogue(&chat.model.recorded()[before + 1].body),
        [
            said("user", "First question"),
            said("assistant", "First answer."),
            said("user", "Fork question"),
            said("assistant", "Fork answer."),
            said("user", "And then?"),
        ]
    );
    // The original goes on with its own four.
    exchange(&chat, "Third question", "Third answer.", Some(&origin)).await;
    let last = chat.model.recorded().last().cloned().expect("request");
    assert_eq!(dialogue(&last.body).len(), 5);
    assert_eq!(messages(&chat, &fork, 6).await.len(), 6);
}

#[tokio::test]
async fn a_fork_point_that_is_no_message_someone_elses_conversation_and_a_retried_fork_are_answered_clearly()
 {
    let chat = Chat::start(&[]).await;
    let origin = exchange(&chat, "Only question", "Only answer.", None).await;
    let original = messages(&chat, &origin, 2).await;
    let user_seq = original[0]["seq"].as_u64().expect("seq");
    let fork_path = format!("/api/v1/conversations/{origin}/fork");
    let token = Some(chat.user.access.as_str());
    let p = &chat.platform;

    let beyond = p.post(&fork_path, token, json!({"after": 1_000_000})).await;
    assert_eq!(beyond.status, 422, "{:?}", beyond.body);
    assert_eq!(beyond.body["error"]["code"], "after_beyond_end");
    assert_eq!(
        beyond.body["error"]["details"]["fields"][0]["field"],
        "after"
    );
    for not_a_message in [0, user_seq + 1] {
        let refused = p
            .post(&fork_path, token, json!({"after": not_a_message}))
            .await;
        assert_eq!(refused.status, 422, "{not_a_message}: {:?}", refused.body);
        assert_eq!(refused.body["error"]["code"], "not_a_message");
    }
    let malformed = p.post(&fork_path, token, json!({"after": "two"})).await;
    assert_eq!(malformed.status, 422, "{:?}", malformed.body);

    let unknown = p
        .post(
            &format!("/api/v1/conversations/{}/fork", uuid::Uuid::new_v4()),
            token,
            json!({"after": user_seq}),
        )
        .await;
    assert_eq!(unknown.status, 404, "{:?}", unknown.body);
    let other = p.sign_in("other@example.com").await;
    let theirs = p
        .post(&fork_path, Some(&other.access), json!({"after": user_seq}))
        .await;
    assert_eq!(theirs.status, 404, "{:?}", theirs.body);
    let listed = p
        .get("/api/v1/conversations", Some(&chat.user.access))
        .await;
    assert_eq!(
        listed.body.as_array().map(Vec::len),
        Some(1),
        "no refused fork made a conversation"
    );

    // The gateway's sessions.fork is the same use case: same refusals, and a retried fork (same
    // idempotencyKey) forks once.
    let (mut ws, _) = Ws::connect(&p.base, &chat.user.access).await;
    let refused = ws
        .call(
            "sessions.fork",
            json!({"sessionId": origin, "after": user_seq + 1}),
        )
        .await;
    assert_eq!(refused["errorCode"], "not_a_message", "{refused}");
    let params = json!({"sessionId": origin, "after": user_seq, "idempotencyKey": "fork-1"});
    let first = ws.call("sessions.fork", params.clone()).await;
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["payload"]["forkedFrom"], origin.as_str());
    assert_eq!(first["payload"]["messageCount"], 1);
    let again = ws.call("sessions.fork", params).await;
    assert_eq!(again["payload"]["sessionId"], first["payload"]["sessionId"]);
    let sessions = ws.call("sessions.list", json!({})).await;
    let sessions = sessions["payload"]["sessions"]
        .as_array()
        .expect("sessions")
        .clone();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let fork = first["payload"]["sessionId"].as_str().expect("fork id");
    let history = ws
        .call("sessions.history", json!({"sessionId": fork}))
        .await;
    let texts: Vec<_> = history["payload"]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(texts, [json!("Only question")]);
}
