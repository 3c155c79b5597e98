//! Text that enters the platform, end to end against the real `warren dev`: a NUL or another
//! control character in any free-text field over REST or the WebSocket gateway is refused,
//! naming the field, and appends nothing; a model that answers with control characters (through
//! a real `warren-agent`) has its output escaped, recorded, and the read models go on; a
//! WebSocket frame that breaks the protocol closes with its RFC 6455 code.

mod chat_support;
mod common;
mod edge_support;
mod gateway_support;

use chat_support::{Chat, runtime_env};
use edge_support::{Answer, Platform, Session};
use gateway_support::Ws;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use warren_testkit::model_server::Reply;
use warren_testkit::{wait_for, wait_until};

const TIMEOUT: Duration = Duration::from_secs(30);

/// The last sequence of each of the log's streams.
async fn log_heads(platform: &Platform) -> Vec<u64> {
    let js = platform.nats.jetstream().await;
    let mut heads = Vec::new();
    for name in ["USERS", "AGENTS", "CONVERSATIONS"] {
        let mut stream = js.get_stream(name).await.expect("stream");
        heads.push(
            stream
                .info()
                .await
                .expect("stream info")
                .state
                .last_sequence,
        );
    }
    heads
}

/// Requests to one route: (method, path, caller, [(body, the field its refusal names)]).
type Case<'a> = (&'a str, &'a str, &'a Session, Vec<(Value, &'a str)>);

/// Asserts a 422 `validation_failed` whose details name `field`.
#[track_caller]
fn assert_refused(answer: &Answer, field: &str, what: &str) {
    assert_eq!(answer.status, 422, "{what}: {answer:?}");
    assert_eq!(answer.body["error"]["code"], "validation_failed", "{what}");
    assert_eq!(
        answer.body["error"]["details"]["fields"][0]["field"], field,
        "{what}: {answer:?}"
    );
}

/// The signed-in user's id.
async fn user_id(platform: &Platform, session: &Session) -> String {
    let me = platform
        .get("/api/v1/users/me", Some(&session.access))
        .await;
    me.body["id"].as_str().expect("user id").to_owned()
}

/// Creates an agent named `name` for `user` and waits until its deployment failed (these
/// platforms have no runtime), so the log is quiet afterwards.
async fn failed_agent(platform: &Platform, user: &Session, name: &str) -> String {
    let created = platform
        .post("/api/v1/agents", Some(&user.access), json!({"name": name}))
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.body["id"].as_str().expect("agent id").to_owned();
    let status = format!("/api/v1/agents/{id}/status");
    wait_until(TIMEOUT, || async {
        platform.get(&status, Some(&user.access)).await.body["status"] == "failed"
    })
    .await;
    id
}

#[tokio::test]
async fn a_control_character_in_any_rest_text_field_is_a_422_naming_it_and_appends_nothing() {
    let platform = Platform::start(&[("WARREN_ADMIN_EMAILS", "admin@example.com")]).await;
    let admin = platform.sign_in("admin@example.com").await;
    let user = platform.sign_in("user@example.com").await;
    let guest = platform.sign_in("guest@example.com").await;
    let (user_id, guest_id) = (
        user_id(&platform, &user).await,
        user_id(&platform, &guest).await,
    );
    let approved = platform
        .post(
            &format!("/api/v1/admin/users/{user_id}/approve"),
            Some(&admin.access),
            json!({}),
        )
        .await;
    assert_eq!(approved.status, 200, "{approved:?}");
    let agent = failed_agent(&platform, &user, "Helper").await;
    let heads = log_heads(&platform).await;

    let key = |extra: Value| {
        let mut body = json!({"provider": "custom", "api_key": "sk-0123456789abcdefghij",
            "base_url": "https://llm.example.com/v1", "label": "work"});
        body.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        body
    };
    let agent_path = format!("/api/v1/agents/{agent}");
    let chat_path = format!("/api/v1/chat/{agent}");
    let reject_path = format!("/api/v1/admin/users/{guest_id}/reject");
    let revoke_path = format!("/api/v1/admin/users/{user_id}/revoke");
    let me = "/api/v1/users/me";
    let keys = "/api/v1/users/me/api-keys";
    let cases: Vec<Case> = vec![
        (
            "PATCH",
            me,
            &user,
            vec![
                (json!({"display_name": "Ada\u{0}"}), "display_name"),
                (json!({"display_name": "Ada\u{1b}[31m"}), "display_name"),
                // Names are one line: the domain's rule for the field, checked at the edge.
                (json!({"display_name": "Ada\nLovelace"}), "display_name"),
                (
                    json!({"avatar_url": "https://x.io/\u{7}.png"}),
                    "avatar_url",
                ),
                // Any string anywhere in a body, by its path.
                (json!({"extra": {"list": ["ok", "\u{0}"]}}), "extra.list[1]"),
            ],
        ),
        (
            "POST",
            "/api/v1/agents",
            &user,
            vec![
                (json!({"name": "Scout\u{0}"}), "name"),
                (
                    json!({"name": "Scout", "system_prompt": "Be\u{0}brief"}),
                    "system_prompt",
                ),
                (json!({"name": "Scout", "model": "gpt\u{7}"}), "model"),
            ],
        ),
        (
            "PATCH",
            &agent_path,
            &user,
            vec![
                (json!({"name": "Helper\u{1b}"}), "name"),
                (json!({"system_prompt": "\u{0}"}), "system_prompt"),
            ],
        ),
        (
            "POST",
            &chat_path,
            &user,
            vec![
                (json!({"message": "hello\u{0}"}), "message"),
                (json!({"message": "ring\u{7}ring"}), "message"),
            ],
        ),
        (
            "POST",
            keys,
            &user,
            vec![
                (key(json!({"label": "wo\u{0}rk"})), "label"),
                (key(json!({"base_url": "https://x.io/\u{1b}"})), "base_url"),
                (
                    key(json!({"api_key": "sk-01234567\u{0}89abcdef"})),
                    "api_key",
                ),
            ],
        ),
        (
            "POST",
            &reject_path,
            &admin,
            vec![(json!({"reason": "not now\u{0}"}), "reason")],
        ),
        (
            "POST",
            &revoke_path,
            &admin,
            vec![(json!({"reason": "bye\u{1b}[2J"}), "reason")],
        ),
        (
            "POST",
            "/api/v1/auth/login/email",
            &user,
            vec![(json!({"email": "a\u{0}@example.com"}), "email")],
        ),
    ];
    for (method, path, session, bodies) in cases {
        for (body, field) in bodies {
            let what = format!("{method} {path} {body}");
            let answer = platform
                .call(method, path, Some(&session.access), Some(body))
                .await;
            assert_refused(&answer, field, &what);
        }
    }
    // Query strings too.
    let listed = platform
        .get("/api/v1/admin/users?status=pen%00ding", Some(&admin.access))
        .await;
    assert_refused(&listed, "status", "admin listing");

    // Nothing reached the log, and the read models say what they said.
    assert_eq!(log_heads(&platform).await, heads);
    let me = platform.get("/api/v1/users/me", Some(&user.access)).await;
    assert_eq!(me.body["display_name"], Value::Null, "{me:?}");
    assert_eq!(me.body["status"], "approved");
    let agent = platform.get(&agent_path, Some(&user.access)).await;
    assert_eq!(agent.body["name"], "Helper");
    let conversations = platform
        .get("/api/v1/conversations", Some(&user.access))
        .await;
    assert_eq!(conversations.body, json!([]));
    let guest_now = platform.get("/api/v1/users/me", Some(&guest.access)).await;
    assert_eq!(guest_now.body["status"], "pending");

    // The same fields with clean text are accepted (multi-line where the field allows it).
    let renamed = platform
        .patch(
            &agent_path,
            Some(&user.access),
            json!({"name": "Helper 2", "system_prompt": "Be brief.\n\tAlways."}),
        )
        .await;
    assert_eq!(renamed.status, 200, "{renamed:?}");
    assert_eq!(renamed.body["system_prompt"], "Be brief.\n\tAlways.");
}

/// The fields named by a refused gateway request's details.
fn refused_field(answer: &Value) -> &str {
    assert_eq!(answer["ok"], false, "{answer}");
    assert_eq!(answer["errorCode"], "invalid_params", "{answer}");
    answer["details"]["fields"][0]["field"]
        .as_str()
        .unwrap_or_else(|| panic!("no field in {answer}"))
}

#[tokio::test]
async fn a_control_character_in_gateway_params_is_invalid_params_naming_it_on_an_open_connection() {
    let platform = Platform::start(&[("WARREN_APPROVAL", "open")]).await;
    let user = platform.sign_in("ws@example.com").await;
    let agent = failed_agent(&platform, &user, "Helper").await;
    let (mut ws, _) = Ws::connect(&platform.base, &user.access).await;
    let heads = log_heads(&platform).await;

    let title = ws
        .call(
            "sessions.new",
            json!({"agentId": agent, "title": "Plans\u{0}"}),
        )
        .await;
    assert_eq!(refused_field(&title), "title");
    let title = ws
        .call(
            "sessions.new",
            json!({"agentId": agent, "title": "Plans\nfor May"}),
        )
        .await;
    assert_eq!(refused_field(&title), "title", "titles are one line");
    assert_eq!(log_heads(&platform).await, heads, "no session was started");

    let session = ws.new_session(&agent).await;
    let heads = log_heads(&platform).await;
    for message in ["hello\u{0}", "clear\u{1b}[2J", "bell\u{7}"] {
        let answer = ws.call("agent", json!({"message": message})).await;
        assert_eq!(refused_field(&answer), "message", "{message:?}");
    }
    let nested = ws
        .call("sessions.list", json!({"limit": 5, "filter": ["\u{0}"]}))
        .await;
    assert_eq!(refused_field(&nested), "filter[0]");

    // Still open, still this session, and nothing was posted.
    let status = ws.call("status", json!({})).await;
    assert_eq!(status["ok"], true, "{status}");
    assert_eq!(status["payload"]["session"]["id"], session.as_str());
    let history = ws.call("sessions.history", json!({})).await;
    assert_eq!(history["payload"]["messages"], json!([]), "{history}");
    assert_eq!(log_heads(&platform).await, heads);

    // A client type with a control character: answered, then the connection is closed (1008).
    let mut bad = Ws::open(&platform.base).await;
    bad.send_text(
        &json!({"type": "req", "id": "c", "method": "connect",
            "params": {"version": "1", "clientType": "cli\u{0}", "token": user.access}})
        .to_string(),
    )
    .await;
    let answer = bad.frame().await.expect("an answer before the close");
    assert_eq!(refused_field(&answer), "clientType");
    let close = bad.closed().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);
}

/// A text frame carrying `payload` as it is.
fn text_frame(payload: &[u8]) -> Frame {
    Frame::message(payload.to_vec(), OpCode::Data(Data::Text), true)
}

#[tokio::test]
async fn websocket_frames_close_with_1007_for_invalid_utf8_and_1002_for_protocol_violations() {
    let platform = Platform::start(&[("WARREN_APPROVAL", "open")]).await;
    let user = platform.sign_in("frames@example.com").await;
    let code = |close: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>| {
        u16::from(close.expect("a close frame").code)
    };

    // Invalid UTF-8 in a text frame, after connect and before it.
    let (mut ws, _) = Ws::connect(&platform.base, &user.access).await;
    ws.send_frame(text_frame(b"{\"type\":\"req\",\"id\":\"\xff\xfe\"}"))
        .await;
    assert_eq!(code(ws.closed().await), 1007);
    let mut ws = Ws::open(&platform.base).await;
    ws.send_frame(text_frame(b"\xc3\x28")).await;
    assert_eq!(code(ws.closed().await), 1007);

    // A reserved bit set (no extension was negotiated).
    let (mut ws, _) = Ws::connect(&platform.base, &user.access).await;
    let mut reserved = text_frame(br#"{"type":"req","id":"1","method":"status","params":{}}"#);
    reserved.header_mut().rsv1 = true;
    ws.send_frame(reserved).await;
    assert_eq!(code(ws.closed().await), 1002);

    // A fragmented control frame, before connect.
    let mut ws = Ws::open(&platform.base).await;
    let mut ping = Frame::ping(b"hi".to_vec());
    ping.header_mut().is_final = false;
    ws.send_frame(ping).await;
    assert_eq!(code(ws.closed().await), 1002);

    // A continuation with nothing to continue, and an opcode that does not exist.
    let (mut ws, _) = Ws::connect(&platform.base, &user.access).await;
    ws.send_frame(Frame::message(
        b"tail".to_vec(),
        OpCode::Data(Data::Continue),
        true,
    ))
    .await;
    assert_eq!(code(ws.closed().await), 1002);
    let (mut ws, _) = Ws::connect(&platform.base, &user.access).await;
    let mut unknown = Frame::ping(Vec::new());
    unknown.header_mut().opcode = OpCode::Control(Control::Reserved(0xb));
    ws.send_frame(unknown).await;
    assert_eq!(code(ws.closed().await), 1002);

    // A well-formed connection is unaffected.
    let (mut ws, _) = Ws::connect(&platform.base, &user.access).await;
    assert_eq!(ws.call("status", json!({})).await["ok"], true);
}

/// Whether `text` holds a control character other than tab and line breaks.
fn has_control(text: &str) -> bool {
    text.chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

#[tokio::test]
async fn a_model_answering_with_control_characters_is_escaped_recorded_and_the_read_models_go_on() {
    let chat = Chat::start(&[]).await;
    chat.model.push(
        Reply::tool_call(
            "shell",
            json!({"command": "printf 'tool\\000out\\033[1m'", "note": "arg\u{0}bell\u{7}"}),
        )
        .and_tool_call(
            "write_file",
            json!({"path": "note\u{1b}.txt", "content": "x\u{0}y"}),
        ),
    );
    chat.model
        .push(Reply::text("done\u{0}with\u{7}bell and \u{1b}[31mred"));
    let escaped_reply = "done␀with␇bell and ␛[31mred";

    let mut run = chat.send("Do the hostile thing").await;
    let conversation = run.until("queued").await.data["conversation_id"]
        .as_str()
        .expect("conversation id")
        .to_owned();
    let tool_use = run.until("tool_use").await;
    assert_eq!(tool_use.data["input"]["note"], "arg␀bell␇", "{tool_use:?}");
    let done = run.finish().await;
    assert_eq!(done.kind(), "done", "{:?}", run.frames);
    assert_eq!(done.data["text"], escaped_reply);
    let shell = run
        .frames
        .iter()
        .find(|f| f.kind() == "tool_result" && f.data["call_id"] == tool_use.data["call_id"])
        .unwrap_or_else(|| panic!("no shell result in {:?}", run.frames));
    let output = shell.data["output"].as_str().unwrap_or("");
    assert!(output.contains("tool␀out␛[1m"), "{shell:?}");
    let file = run
        .frames
        .iter()
        .find(|f| f.kind() == "file")
        .unwrap_or_else(|| panic!("no file frame in {:?}", run.frames));
    assert_eq!(file.data["path"], "note␛.txt");
    for frame in &run.frames {
        assert!(!has_control(&frame.data.to_string()), "{frame:?}");
    }

    // The history (PostgreSQL) shows the escaped reply and tool call.
    let path = format!("/api/v1/conversations/{conversation}/messages");
    let messages = wait_for(TIMEOUT, || async {
        let answer = chat.platform.get(&path, Some(&chat.user.access)).await;
        let list = answer.body.as_array()?.clone();
        (list.len() == 2).then_some(list)
    })
    .await;
    assert_eq!(messages[1]["text"], escaped_reply);
    assert_eq!(messages[1]["tool_calls"][0]["args"]["note"], "arg␀bell␇");
    let recorded = messages[1]["tool_calls"][0]["output"]
        .as_str()
        .unwrap_or("");
    assert!(recorded.contains("tool␀out␛[1m"), "{recorded}");

    // The log holds no control character: the commit's JSON has no escaped one either.
    let js = chat.platform.nats.jetstream().await;
    let stream = js.get_stream("CONVERSATIONS").await.expect("stream");
    let last = stream
        .get_last_raw_message_by_subject(&format!("conv.{conversation}.ev"))
        .await
        .expect("last commit");
    let commit = String::from_utf8(last.payload.to_vec()).expect("UTF-8 commit");
    assert!(commit.contains("RunCompleted"), "{commit}");
    assert!(
        !commit.contains("\\u0000") && !has_control(&commit),
        "{commit}"
    );

    // The read models go on: the next message, and another user's change, show up.
    chat.model.push(Reply::text("Still here."));
    let mut next = chat.send("Are you still there?").await;
    assert_eq!(next.finish().await.data["text"], "Still here.");
    wait_until(TIMEOUT, || async {
        let answer = chat.platform.get(&path, Some(&chat.user.access)).await;
        answer.body.as_array().is_some_and(|list| list.len() == 4)
    })
    .await;
    let other = chat.platform.sign_in("other@example.com").await;
    let renamed = chat
        .platform
        .patch(
            "/api/v1/users/me",
            Some(&other.access),
            json!({"display_name": "Other"}),
        )
        .await;
    assert_eq!(renamed.status, 200, "{renamed:?}");
    assert_eq!(renamed.body["display_name"], "Other");

    // The runtime API (called with the agent's own token) checks its query strings too.
    let token = runtime_env(chat.agent_pid(), "WARREN_AGENT_TOKEN").expect("agent token");
    let search = chat
        .platform
        .http
        .get(format!(
            "{}/api/v1/runtime/agents/{}/sessions?query=hostile%00word",
            chat.platform.base, chat.agent_id
        ))
        .bearer_auth(token)
        .send()
        .await
        .expect("runtime API");
    assert_eq!(search.status(), 422);
    let body: Value = search.json().await.expect("JSON");
    assert_eq!(
        body["error"]["details"]["fields"][0]["field"], "query",
        "{body}"
    );
}
