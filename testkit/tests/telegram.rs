//! The fake Telegram speaks the Bot API as a bot sees it over HTTP: updates by long poll or
//! webhook, Telegram's errors, strict MarkdownV2, files and injected failures.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use warren_testkit::telegram::{Failure, TestTelegram, TgUser};

const WAIT: Duration = Duration::from_secs(10);

/// Calls `method` with JSON parameters; returns the HTTP status and the body.
async fn call(telegram: &TestTelegram, method: &str, params: Value) -> (u16, Value) {
    let url = format!("{}/bot{}/{method}", telegram.api_url(), telegram.token());
    let response = reqwest::Client::new()
        .post(url)
        .json(&params)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// Calls `method` and expects `ok: true`; returns the result.
async fn ok(telegram: &TestTelegram, method: &str, params: Value) -> Value {
    let (status, body) = call(telegram, method, params).await;
    assert_eq!(status, 200, "{method}: {body}");
    assert_eq!(body["ok"], true, "{method}: {body}");
    body["result"].clone()
}

fn alice() -> TgUser {
    TgUser::new(1001, "Alice").with_username("alice")
}

#[tokio::test]
async fn a_long_poll_returns_an_update_sent_while_it_waits_and_an_offset_confirms_it() {
    let telegram = Arc::new(TestTelegram::start().await);
    let poller = telegram.clone();
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let result = ok(&poller, "getUpdates", json!({"timeout": 30})).await;
        (result, started.elapsed())
    });
    telegram.wait_for_poll(WAIT).await;
    let sent = telegram.send_text(&alice(), "/start now");

    let (updates, waited) = poll.await.expect("poll task");
    assert!(
        waited < Duration::from_secs(10),
        "woke at once, took {waited:?}"
    );
    let updates = updates.as_array().expect("an array").clone();
    assert_eq!(updates.len(), 1);
    let update = &updates[0];
    assert_eq!(update["update_id"], sent.update_id);
    let message = &update["message"];
    assert_eq!(message["message_id"], sent.message_id);
    assert_eq!(message["text"], "/start now");
    assert_eq!(
        message["chat"],
        json!({"id": 1001, "type": "private", "first_name": "Alice", "username": "alice"})
    );
    assert_eq!(message["from"]["is_bot"], false);
    assert_eq!(
        message["entities"],
        json!([{"type": "bot_command", "offset": 0, "length": 6}])
    );

    // Not confirmed yet: the same update comes again; the next offset forgets it.
    let again = ok(&telegram, "getUpdates", json!({})).await;
    assert_eq!(again[0]["update_id"], sent.update_id);
    assert_eq!(telegram.pending_updates(), 1);
    let after = ok(
        &telegram,
        "getUpdates",
        json!({"offset": sent.update_id + 1, "timeout": 0}),
    )
    .await;
    assert_eq!(after, json!([]));
    assert_eq!(telegram.pending_updates(), 0);
}

#[tokio::test]
async fn a_second_get_updates_ends_the_waiting_one_with_409() {
    let telegram = Arc::new(TestTelegram::start().await);
    let first = telegram.clone();
    let waiting =
        tokio::spawn(async move { call(&first, "getUpdates", json!({"timeout": 30})).await });
    telegram.wait_for_poll(WAIT).await;

    let second = ok(&telegram, "getUpdates", json!({"timeout": 0})).await;
    let (status, body) = waiting.await.expect("first poll");

    assert_eq!(second, json!([]));
    assert_eq!(status, 409);
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 409, "description": "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"})
    );
}

#[tokio::test]
async fn markdown_v2_with_an_unescaped_dot_is_refused_and_escaped_text_is_rendered_plain() {
    let telegram = TestTelegram::start().await;
    telegram.send_text(&alice(), "hi");

    let (status, body) = call(
        &telegram,
        "sendMessage",
        json!({"chat_id": 1001, "text": "Done. *Really*", "parse_mode": "MarkdownV2"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["description"],
        "Bad Request: can't parse entities: Character '.' is reserved and must be escaped with the preceding '\\'"
    );

    let raw = "Done\\. *Really* see `a.b()` and [docs](https://x.test/a_(b\\))\\!";
    let message = ok(
        &telegram,
        "sendMessage",
        json!({"chat_id": 1001, "text": raw, "parse_mode": "MarkdownV2"}),
    )
    .await;
    assert_eq!(message["text"], "Done. Really see a.b() and docs!");
    assert_eq!(message["from"]["id"], telegram.bot_id());
    assert_eq!(
        message["message_id"], 2,
        "ids are shared with the user's message"
    );

    let sent = telegram.messages(1001);
    assert_eq!(sent.len(), 1, "the refused message is not in the chat");
    assert_eq!(sent[0].text, "Done. Really see a.b() and docs!");
    assert_eq!(sent[0].raw_text, raw);
    assert_eq!(sent[0].parse_mode.as_deref(), Some("MarkdownV2"));
    let types: Vec<&str> = sent[0]
        .entities
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(types, ["bold", "code", "text_link"]);
    assert_eq!(telegram.calls_of("sendMessage").len(), 2);
    assert_eq!(telegram.calls_of("sendMessage")[0].status, 400);
}

#[tokio::test]
async fn send_message_refuses_what_telegram_refuses() {
    let telegram = TestTelegram::start().await;
    let refused = |text: String, chat: i64| json!({"chat_id": chat, "text": text});
    let (status, body) = call(&telegram, "sendMessage", refused("hi".into(), 1001)).await;
    assert_eq!(
        (status, body["description"].as_str()),
        (400, Some("Bad Request: chat not found"))
    );

    telegram.send_text(&alice(), "hi");
    let (_, body) = call(&telegram, "sendMessage", refused(String::new(), 1001)).await;
    assert_eq!(body["description"], "Bad Request: message text is empty");
    let (_, body) = call(&telegram, "sendMessage", refused("x".repeat(4097), 1001)).await;
    assert_eq!(body["description"], "Bad Request: message is too long");
    ok(&telegram, "sendMessage", refused("x".repeat(4096), 1001)).await;

    let (_, body) = call(
        &telegram,
        "sendMessage",
        json!({"chat_id": 1001, "text": "*open", "parse_mode": "MarkdownV2"}),
    )
    .await;
    assert_eq!(
        body["description"],
        "Bad Request: can't parse entities: Can't find end of the entity starting at byte offset 0"
    );
    let long_data = json!({"inline_keyboard": [[{"text": "x", "callback_data": "d".repeat(65)}]]});
    let (_, body) = call(
        &telegram,
        "sendMessage",
        json!({"chat_id": 1001, "text": "k", "reply_markup": long_data}),
    )
    .await;
    assert_eq!(body["description"], "Bad Request: BUTTON_DATA_INVALID");
}

#[tokio::test]
async fn html_and_form_encoded_parameters_work() {
    let telegram = TestTelegram::start().await;
    telegram.send_text(&alice(), "hi");
    let url = format!("{}/bot{}/sendmessage", telegram.api_url(), telegram.token());
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("chat_id=1001&parse_mode=HTML&text=%3Cb%3E1+%26lt%3B+2%3C%2Fb%3E+%26amp%3B+done")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(telegram.messages(1001)[0].text, "1 < 2 & done");
    let call = &telegram.calls_of("sendMessage")[0];
    assert_eq!(call.params["chat_id"], 1001, "typed, though sent as text");
}

#[tokio::test]
async fn an_edit_in_place_keeps_the_history_and_an_identical_edit_is_not_modified() {
    let telegram = TestTelegram::start().await;
    telegram.send_text(&alice(), "hi");
    let keyboard = json!({"inline_keyboard": [[{"text": "Stop", "callback_data": "stop"}]]});
    let sent = ok(
        &telegram,
        "sendMessage",
        json!({"chat_id": 1001, "text": "Thinking", "reply_markup": keyboard}),
    )
    .await;
    let id = sent["message_id"].as_i64().expect("message id");

    let edit = json!({"chat_id": 1001, "message_id": id, "text": "Thinking\\.\\.", "parse_mode": "MarkdownV2", "reply_markup": keyboard});
    let edited = ok(&telegram, "editMessageText", edit.clone()).await;
    assert_eq!(edited["text"], "Thinking..");
    let (status, body) = call(&telegram, "editMessageText", edit).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["description"],
        "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message"
    );
    ok(
        &telegram,
        "editMessageText",
        json!({"chat_id": 1001, "message_id": id, "text": "Done"}),
    )
    .await;

    let message = telegram
        .wait_for_message(1001, |m| m.text == "Done", WAIT)
        .await;
    assert_eq!(message.edits, ["Thinking", "Thinking.."]);
    assert_eq!(
        message.reply_markup, None,
        "an edit without markup drops the keyboard"
    );
    assert_eq!(telegram.messages(1001).len(), 1);

    let (_, body) = call(
        &telegram,
        "editMessageText",
        json!({"chat_id": 1001, "message_id": 99, "text": "x"}),
    )
    .await;
    assert_eq!(
        body["description"],
        "Bad Request: message to edit not found"
    );
}

#[tokio::test]
async fn a_user_document_downloads_byte_for_byte_and_a_bot_upload_is_recorded() {
    let telegram = TestTelegram::start().await;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(3 * 1024 * 1024).collect();
    let sent = telegram.send_document(&alice(), "notes.bin", bytes.clone(), Some("my file"));

    let updates = ok(&telegram, "getUpdates", json!({})).await;
    let message = &updates[0]["message"];
    assert_eq!(message["message_id"], sent.message_id);
    assert_eq!(message["caption"], "my file");
    assert_eq!(message["document"]["file_name"], "notes.bin");
    assert_eq!(message["document"]["file_size"], bytes.len());
    let file = ok(
        &telegram,
        "getFile",
        json!({"file_id": message["document"]["file_id"]}),
    )
    .await;
    let path = file["file_path"].as_str().expect("file_path");
    let url = format!("{}/file/bot{}/{path}", telegram.api_url(), telegram.token());
    let downloaded = reqwest::get(url)
        .await
        .expect("download")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(downloaded.as_ref(), bytes.as_slice());
    let (_, body) = call(&telegram, "getFile", json!({"file_id": "nope"})).await;
    assert_eq!(body["description"], "Bad Request: invalid file_id");

    // The bot sends a file back as multipart/form-data, as Bot API clients do.
    let upload = b"line one\nline \x00two\n".to_vec();
    let boundary = "----warren-test-boundary";
    let mut body = Vec::new();
    for (name, value) in [
        ("chat_id", "1001"),
        ("caption", "*Report*"),
        ("parse_mode", "MarkdownV2"),
    ] {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"document\"; filename=\"report.txt\"\r\nContent-Type: text/plain\r\n\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(&upload);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let url = format!(
        "{}/bot{}/sendDocument",
        telegram.api_url(),
        telegram.token()
    );
    let response = reqwest::Client::new()
        .post(url)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), 200);
    let result: Value = response.json().await.expect("JSON");
    assert_eq!(result["result"]["document"]["file_name"], "report.txt");
    assert_eq!(result["result"]["document"]["mime_type"], "text/plain");
    assert_eq!(result["result"]["caption"], "Report");

    let document = telegram.messages(1001).pop().expect("the bot's document");
    assert_eq!(
        document.document,
        Some(("report.txt".to_owned(), upload.clone()))
    );
    assert_eq!(document.caption.as_deref(), Some("Report"));
    let call = telegram.calls_of("sendDocument").pop().expect("recorded");
    assert_eq!(
        call.params["document"],
        json!({"file_name": "report.txt", "size": upload.len()})
    );
    assert_eq!(call.params["chat_id"], 1001);
}

#[tokio::test]
async fn fail_next_answers_429_with_retry_after_then_serves_again() {
    let telegram = TestTelegram::start().await;
    telegram.send_text(&alice(), "hi");
    telegram.fail_next(
        "sendMessage",
        1,
        Failure::TooManyRequests { retry_after: 3 },
    );
    let params = json!({"chat_id": 1001, "text": "hello"});

    let (status, body) = call(&telegram, "sendMessage", params.clone()).await;
    assert_eq!(status, 429);
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 3", "parameters": {"retry_after": 3}})
    );
    assert!(telegram.messages(1001).is_empty());
    ok(&telegram, "sendMessage", params.clone()).await;

    telegram.set_unreachable(true);
    let (status, body) = call(&telegram, "getMe", json!({})).await;
    assert_eq!(
        (status, body["description"].as_str()),
        (502, Some("Bad Gateway"))
    );
    telegram.set_unreachable(false);
    let me = ok(&telegram, "getMe", json!({})).await;
    assert_eq!(me["username"], telegram.bot_username());
    assert_eq!(me["is_bot"], true);

    let statuses: Vec<u16> = telegram
        .wait_for_calls("sendMessage", 2, WAIT)
        .await
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, [429, 200]);
}

#[tokio::test]
async fn a_wrong_token_is_401_and_an_unknown_method_404() {
    let telegram = TestTelegram::start().await;
    let url = format!("{}/bot123:WRONG/getMe", telegram.api_url());
    let response = reqwest::get(url).await.expect("request");
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 401, "description": "Unauthorized"})
    );

    let (status, body) = call(&telegram, "sendCarrierPigeon", json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 404, "description": "Not Found"})
    );
}

#[tokio::test]
async fn buttons_drafts_deletes_and_commands() {
    let telegram = TestTelegram::start().await;
    let key = telegram.send_text(&alice(), "sk-secret-key");
    telegram.send_text_in_group(&alice(), -5005, "hello group");
    let keyboard = json!({"inline_keyboard": [[{"text": "Yes", "callback_data": "yes"}]]});
    let asked = ok(
        &telegram,
        "sendMessage",
        json!({"chat_id": 1001, "text": "Sure?", "reply_markup": keyboard}),
    )
    .await;
    let asked_id = asked["message_id"].as_i64().expect("id");
    assert_eq!(telegram.messages(1001)[0].button_data(), ["yes"]);

    let query_id = telegram.press_button(&alice(), 1001, asked_id, "yes");
    let updates = ok(
        &telegram,
        "getUpdates",
        json!({"allowed_updates": ["callback_query"]}),
    )
    .await;
    assert_eq!(
        updates.as_array().map(Vec::len),
        Some(1),
        "messages filtered out: {updates}"
    );
    let query = &updates[0]["callback_query"];
    assert_eq!(query["id"], query_id);
    assert_eq!(query["data"], "yes");
    assert_eq!(query["message"]["message_id"], asked_id);
    ok(
        &telegram,
        "answerCallbackQuery",
        json!({"callback_query_id": query_id, "text": "ok"}),
    )
    .await;
    let (_, body) = call(
        &telegram,
        "answerCallbackQuery",
        json!({"callback_query_id": query_id}),
    )
    .await;
    assert_eq!(
        body["description"],
        "Bad Request: query is too old and response timeout expired or query ID is invalid"
    );
    assert_eq!(
        telegram.callback_answers(),
        [(query_id, Some("ok".to_owned()))]
    );

    ok(
        &telegram,
        "sendMessageDraft",
        json!({"chat_id": 1001, "draft_id": 7, "text": "Wor"}),
    )
    .await;
    ok(
        &telegram,
        "sendMessageDraft",
        json!({"chat_id": 1001, "draft_id": 7, "text": "*Working*", "parse_mode": "MarkdownV2"}),
    )
    .await;
    assert_eq!(telegram.drafts(1001), ["Wor", "Working"]);
    let (status, body) = call(
        &telegram,
        "sendMessageDraft",
        json!({"chat_id": -5005, "draft_id": 7, "text": "x"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["description"],
        "Bad Request: method is available only for private chats"
    );

    ok(
        &telegram,
        "deleteMessage",
        json!({"chat_id": 1001, "message_id": key.message_id}),
    )
    .await;
    assert!(telegram.is_deleted(1001, key.message_id));
    let (_, body) = call(
        &telegram,
        "deleteMessage",
        json!({"chat_id": 1001, "message_id": key.message_id}),
    )
    .await;
    assert_eq!(
        body["description"],
        "Bad Request: message to delete not found"
    );

    let commands = json!([{"command": "start", "description": "Start"}]);
    ok(&telegram, "setMyCommands", json!({"commands": commands})).await;
    assert_eq!(
        telegram.commands(),
        [("start".to_owned(), "Start".to_owned())]
    );
    ok(
        &telegram,
        "sendChatAction",
        json!({"chat_id": -5005, "action": "typing"}),
    )
    .await;
}

/// What the webhook receiver got: the secret header and the update, per request.
type Received = Arc<Mutex<Vec<(Option<String>, Value)>>>;

#[tokio::test]
async fn a_webhook_gets_each_update_with_the_secret_and_a_500_is_retried() {
    let received: Received = Arc::default();
    let log = received.clone();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::Json<Value>| {
            let log = log.clone();
            async move {
                let secret = headers
                    .get("x-telegram-bot-api-secret-token")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let mut log = log.lock().expect("log");
                log.push((secret, body.0));
                // The first delivery fails: Telegram must try again.
                if log.len() == 1 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook_url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let telegram = TestTelegram::start().await;
    let first = telegram.send_text(&alice(), "one");
    ok(
        &telegram,
        "setWebhook",
        json!({"url": hook_url, "secret_token": "s3cret_-x"}),
    )
    .await;
    let (status, body) = call(&telegram, "getUpdates", json!({})).await;
    assert_eq!(status, 409);
    assert_eq!(
        body["description"],
        "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"
    );
    let second = telegram.send_text(&alice(), "two");
    telegram.wait_until_no_pending(WAIT).await;

    let received = received.lock().expect("log").clone();
    let ids: Vec<i64> = received
        .iter()
        .filter_map(|(_, u)| u["update_id"].as_i64())
        .collect();
    assert_eq!(
        ids,
        [first.update_id, first.update_id, second.update_id],
        "retried, in order"
    );
    assert!(
        received
            .iter()
            .all(|(secret, _)| secret.as_deref() == Some("s3cret_-x"))
    );
    assert_eq!(received[2].1["message"]["text"], "two");

    let info = ok(&telegram, "getWebhookInfo", json!({})).await;
    assert_eq!(info["url"], hook_url);
    assert_eq!(info["pending_update_count"], 0);
    assert!(
        info["last_error_message"]
            .as_str()
            .is_some_and(|m| m.contains("500"))
    );
    let (_, body) = call(
        &telegram,
        "setWebhook",
        json!({"url": hook_url, "secret_token": "a:b"}),
    )
    .await;
    assert_eq!(
        body["description"],
        "Bad Request: secret token contains unallowed characters"
    );
    ok(&telegram, "deleteWebhook", json!({})).await;
    assert_eq!(ok(&telegram, "getUpdates", json!({})).await, json!([]));
}

#[tokio::test]
#[should_panic(expected = "no matching message in chat 1001")]
async fn wait_for_message_fails_with_what_the_chat_got() {
    let telegram = TestTelegram::start().await;
    telegram.send_text(&alice(), "hi");
    ok(
        &telegram,
        "sendMessage",
        json!({"chat_id": 1001, "text": "Something else"}),
    )
    .await;
    telegram
        .wait_for_message(1001, |m| m.text == "Hello", Duration::from_millis(200))
        .await;
}
