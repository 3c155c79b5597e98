//! The web console in a real headless Chromium (Debian's `chromium` driven by `chromedriver`
//! over WebDriver), against the real `warren dev`: what a person sees when they sign in, create
//! an agent, chat (and interrupt a reply, attach a file), reload, approve someone, or run out
//! of quota. Each test saves screenshots under the target dir's `tmp/console/`.

mod chat_support;
mod common;
mod console_support;
mod edge_support;

use chat_support::{Chat, agent_bin};
use console_support::{Driver, Page};
use edge_support::{Platform, link_token};
use serde_json::json;
use std::time::Duration;
use warren_testkit::model_server::Reply;

/// Desktop and phone window sizes.
const DESKTOP: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (390, 844);

#[tokio::test]
async fn the_edge_serves_the_console_on_its_pages_with_a_strict_csp_and_leaves_the_api_alone() {
    let platform = Platform::start(&[]).await;
    let http = &platform.http;
    for page in [
        "/",
        "/auth/verify?token=abc",
        "/agents",
        "/settings",
        "/usage",
        "/admin",
    ] {
        let answer = http
            .get(format!("{}{page}", platform.base))
            .send()
            .await
            .expect("page");
        assert_eq!(answer.status(), 200, "{page}");
        let headers = answer.headers().clone();
        assert_eq!(
            headers["content-type"], "text/html; charset=utf-8",
            "{page}"
        );
        let csp = headers["content-security-policy"].to_str().expect("csp");
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe"),
            "{csp}"
        );
        assert_eq!(headers["cache-control"], "no-cache");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        let body = answer.text().await.expect("body");
        assert!(body.contains("/console/app.js"), "{body}");
    }
    let agent_page = http
        .get(format!(
            "{}/agents/0190a7a1-0000-7000-8000-000000000000",
            platform.base
        ))
        .send()
        .await
        .expect("agent page");
    assert_eq!(agent_page.status(), 200);

    let script = http
        .get(format!("{}/console/app.js", platform.base))
        .send()
        .await
        .expect("script");
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let etag = script.headers()["etag"].clone();
    let again = http
        .get(format!("{}/console/app.js", platform.base))
        .header("if-none-match", etag)
        .send()
        .await
        .expect("revalidation");
    assert_eq!(again.status(), 304, "an unchanged file is not sent again");

    let missing = platform.get("/console/nothing.js", None).await;
    assert_eq!(missing.status, 404);
    let api = platform.get("/api/v1/no-such-route", None).await;
    assert_eq!(api.status, 404);
    assert_eq!(
        api.body["error"]["code"], "not_found",
        "the API still answers JSON"
    );
    let health = platform.get("/api/v1/health", None).await;
    assert_eq!(health.status, 200);
}

#[tokio::test]
async fn a_person_signs_in_with_the_emailed_code_and_with_the_emailed_link() {
    let platform = Platform::start(&[("WARREN_APPROVAL", "open")]).await;
    let driver = Driver::start().await;

    let by_code = driver.browser("sign-in-code", DESKTOP.0, DESKTOP.1).await;
    by_code.sign_in_by_code(&platform, "ada@example.com").await;
    by_code.wait_text("h1", "Agents").await;
    by_code.find("#create-agent").await;
    by_code.screenshot("signed-in").await;

    let by_link = driver.browser("sign-in-link", PHONE.0, PHONE.1).await;
    by_link.open(&platform.base).await;
    by_link.fill("#email", "grace@example.com").await;
    by_link.click("#send-link").await;
    by_link.wait_text("#check-mail", "grace@example.com").await;
    by_link.screenshot("check-your-mail").await;
    let mail = platform
        .smtp
        .wait_for_mail("grace@example.com", 1, Duration::from_secs(10))
        .await;
    // The email's link is `{WARREN_FRONTEND_URL}/auth/verify?token=…`; the console serves it.
    assert!(
        mail.text()
            .contains("http://console.test/auth/verify?token=")
    );
    let link = format!("{}/auth/verify?token={}", platform.base, link_token(&mail));
    by_link.open(&link).await;
    by_link.wait_text("h1", "Agents").await;
    let address = by_link.run("return location.href;", vec![]).await;
    assert!(
        !address.as_str().unwrap_or_default().contains("token"),
        "the token leaves the address bar: {address}"
    );
    by_link.screenshot("signed-in").await;

    // A used link does not sign anyone in again, and says why in words.
    let again = driver
        .browser("sign-in-used-link", DESKTOP.0, DESKTOP.1)
        .await;
    again.open(&link).await;
    let error = again
        .wait_texts("#verify-error", "an error", |t| {
            t.iter().any(|t| !t.is_empty())
        })
        .await;
    assert!(
        !error[0].contains('{'),
        "an error as text, not JSON: {error:?}"
    );
    again.screenshot("used-link").await;
    for page in [by_code, by_link, again] {
        page.close().await;
    }
}

/// Records, in the page, every value the progress bar of an agent card takes: each mutation
/// record's old value (so values set within one task are each seen), then the current one.
const WATCH_PROGRESS: &str = "window.progress = []; new MutationObserver((records) => { \
    for (const r of records) if (r.oldValue !== null) window.progress.push(r.oldValue); \
    }).observe(document.body, {subtree: true, attributeFilter: ['aria-valuenow'], \
      attributeOldValue: true}); return true;";
const PROGRESS_SEEN: &str = "return [...window.progress, \
    document.querySelector('.agent .bar').getAttribute('aria-valuenow')];";

#[tokio::test]
async fn creating_an_agent_shows_its_six_deployment_steps_as_they_happen_and_its_card_stops_starts_and_deletes_it()
 {
    let agent = agent_bin().display().to_string();
    let platform =
        Platform::start(&[("WARREN_APPROVAL", "open"), ("WARREN_AGENT_BIN", &agent)]).await;
    let driver = Driver::start().await;
    let page = driver.browser("create-agent", DESKTOP.0, DESKTOP.1).await;
    page.sign_in_by_code(&platform, "maker@example.com").await;
    page.find("#create-agent").await;
    page.run(WATCH_PROGRESS, vec![]).await;

    page.fill("#agent-name", "Scout").await;
    page.click("#create").await;
    page.wait_texts(
        ".agent[data-status='running'] .name",
        "Scout running",
        |t| t.iter().any(|t| t == "Scout"),
    )
    .await;
    let done = page.texts(".agent .steps li.done").await;
    assert_eq!(
        done,
        [
            "Allocating",
            "Provisioning",
            "Installing",
            "Configuring",
            "Starting",
            "Health check"
        ]
    );
    let progress: Vec<String> =
        serde_json::from_value(page.run(PROGRESS_SEEN, vec![]).await).expect("values");
    let mut steps = progress.clone();
    steps.dedup();
    assert_eq!(
        steps,
        ["0", "1", "2", "3", "4", "5", "6"],
        "each step shown on its own, in order, as the feed reported it: {progress:?}"
    );
    page.screenshot("running").await;

    // Stop, start and delete from the card.
    page.click(".agent .stop").await;
    page.wait_texts(
        ".agent[data-status='stopped'] .name",
        "Scout stopped",
        |t| t.iter().any(|t| t == "Scout"),
    )
    .await;
    page.click(".agent .start").await;
    page.wait_texts(
        ".agent[data-status='running'] .name",
        "Scout running again",
        |t| t.iter().any(|t| t == "Scout"),
    )
    .await;
    page.click(".agent .delete").await;
    page.client
        .accept_alert()
        .await
        .expect("confirm the deletion");
    page.wait_texts(".agent .name", "no agent", |t| t.is_empty())
        .await;
    let agents = platform
        .get("/api/v1/agents", Some(&page_session(&page).await))
        .await;
    assert_eq!(agents.body, json!([]), "deleted on the platform too");
    page.close().await;
}

/// The access token the console holds.
async fn page_session(page: &Page) -> String {
    page.run("return localStorage.getItem('warren.access');", vec![])
        .await
        .as_str()
        .expect("signed in")
        .to_owned()
}

#[tokio::test]
async fn cancel_stops_a_running_reply_and_says_so() {
    let chat = Chat::start(&[]).await;
    let driver = Driver::start().await;
    let page = driver.browser("cancel", DESKTOP.0, DESKTOP.1).await;
    open_chat(&chat, &page).await;
    chat.model
        .push(Reply::text("Thinking about it ").then_hang());
    page.fill("#message", "Take your time").await;
    page.click("#send").await;
    page.wait_text(".msg.assistant .text", "Thinking about it")
        .await;
    page.click("#cancel").await;
    let said = page
        .wait_text(".msg.assistant.cancelled .run-error", "cancelled")
        .await;
    assert!(said.starts_with("the run was cancelled"), "{said}");
    let disabled = page
        .find("#cancel")
        .await
        .prop("disabled")
        .await
        .expect("prop");
    assert_eq!(disabled.as_deref(), Some("true"), "nothing left to cancel");
    page.screenshot("cancelled").await;
    page.close().await;
}

#[tokio::test]
async fn send_now_interrupts_the_running_reply_and_answers_the_new_message() {
    let chat = Chat::start(&[]).await;
    let driver = Driver::start().await;
    let page = driver.browser("interrupt", DESKTOP.0, DESKTOP.1).await;
    open_chat(&chat, &page).await;
    // Then at phone width: the composer's buttons wrap under the message field.
    page.client
        .set_window_size(PHONE.0, PHONE.1)
        .await
        .expect("phone width");
    chat.model
        .push(Reply::text("Thinking about it ").then_hang());
    page.fill("#message", "Take your time").await;
    page.click("#send").await;
    page.wait_text(".msg.assistant .text", "Thinking about it")
        .await;

    chat.model.push(Reply::text("Here is the short answer."));
    page.fill("#message", "Actually, be quick").await;
    page.click("#interrupt").await;
    let said = page
        .wait_text(".msg.assistant.cancelled .run-error", "cancelled")
        .await;
    assert!(said.starts_with("the run was cancelled"), "{said}");
    page.wait_text(".msg.assistant.done .text", "Here is the short answer.")
        .await;
    page.wait_text(".msg.user .text", "Actually, be quick")
        .await;
    let hidden = page
        .find("#interrupt")
        .await
        .prop("hidden")
        .await
        .expect("prop");
    assert_eq!(hidden.as_deref(), Some("true"), "nothing left to interrupt");
    // The model was asked again with the new message last.
    let last = chat.model.requests().pop().expect("a model request");
    let messages = last["messages"].as_array().expect("messages");
    assert_eq!(
        messages.last().expect("a message")["content"],
        "Actually, be quick"
    );
    page.screenshot("interrupted").await;
    page.close().await;
}

#[tokio::test]
async fn attached_files_land_in_the_agents_workspace_and_a_refusal_is_shown_in_words() {
    let chat = Chat::start(&[("WARREN_UPLOAD_MAX_BYTES", "4096")]).await;
    let driver = Driver::start().await;
    let page = driver.browser("upload", DESKTOP.0, DESKTOP.1).await;
    open_chat(&chat, &page).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "Remember the milk.\n").expect("write");

    // The file picker is the browser's own; WebDriver chooses the file for the person.
    page.find("#attach")
        .await
        .send_keys(&notes.display().to_string())
        .await
        .expect("choose a file");
    page.wait_text("#uploaded", "Uploaded notes.txt (19 bytes)")
        .await;
    assert_eq!(
        std::fs::read_to_string(chat.workspace().join("notes.txt")).expect("in the workspace"),
        "Remember the milk.\n"
    );

    // Over the platform's upload limit: the platform's words, not its JSON, and nothing written.
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![b'x'; 10_000]).expect("write");
    page.find("#attach")
        .await
        .send_keys(&big.display().to_string())
        .await
        .expect("choose a file");
    let said = page
        .wait_text("#chat-error", "larger than the upload limit")
        .await;
    assert!(!said.contains('{'), "words, not JSON: {said}");
    assert!(!chat.workspace().join("big.bin").exists());
    page.screenshot("uploaded").await;
    page.close().await;
}

/// Signs `chat`'s user in and opens their agent's chat page in a new session.
async fn open_chat(chat: &Chat, page: &Page) -> String {
    page.sign_in_by_code(&chat.platform, "chatter@example.com")
        .await;
    page.find("#create-agent").await;
    page.open(&format!("{}/agents/{}", chat.platform.base, chat.agent_id))
        .await;
    page.click("#new-session").await;
    page.wait_url("session=").await
}

/// Records, in the page, every text the newest reply shows while it streams.
const WATCH_REPLY: &str = "window.seen = []; new MutationObserver(() => { \
    const reply = [...document.querySelectorAll('.msg.assistant')].pop(); \
    const text = reply ? reply.querySelector('.text:last-of-type').textContent : ''; \
    if (text && window.seen[window.seen.length - 1] !== text) window.seen.push(text); \
    }).observe(document.body, {subtree: true, childList: true, characterData: true}); return true;";

#[tokio::test]
async fn a_chat_streams_tokens_and_a_tool_call_and_a_second_tab_sees_the_same_live() {
    let chat = Chat::start(&[]).await;
    let driver = Driver::start().await;
    let page = driver.browser("chat", DESKTOP.0, DESKTOP.1).await;
    let url = open_chat(&chat, &page).await;
    let first = page.client.window().await.expect("window");

    // A second window of the same browser (so the same sign-in) on the same session, at phone
    // width.
    let second = page
        .client
        .new_window(false)
        .await
        .expect("new window")
        .handle;
    page.client
        .switch_to_window(second.clone())
        .await
        .expect("tab");
    page.client
        .set_window_size(PHONE.0, PHONE.1)
        .await
        .expect("size");
    page.open(&url).await;
    page.find("#transcript").await;
    page.run(WATCH_REPLY, vec![]).await;
    page.client
        .switch_to_window(first.clone())
        .await
        .expect("tab");
    page.run(WATCH_REPLY, vec![]).await;

    chat.model.push(Reply::tool_call(
        "shell",
        json!({"command": "echo console-ok"}),
    ));
    let answer = "The shell printed console-ok for you, as asked. ";
    chat.model
        .push(Reply::text(answer).with_chunk_delay(Duration::from_millis(120)));
    page.fill("#message", "Run echo console-ok").await;
    page.click("#send").await;

    let command = page
        .wait_text(".msg.assistant .tool .command", "echo console-ok")
        .await;
    assert_eq!(command, "echo console-ok");
    page.wait_text(".msg.assistant .tool .output", "console-ok")
        .await;
    page.wait_texts(".msg.assistant.done", "the finished reply", |t| {
        !t.is_empty()
    })
    .await;
    let reply = page.texts(".msg.assistant .text").await.join("");
    assert_eq!(reply, answer, "every token once, in order");
    let seen = page.run("return window.seen;", vec![]).await;
    let seen: Vec<String> = serde_json::from_value(seen).expect("texts");
    assert!(
        seen.len() >= 4 && seen.windows(2).all(|w| w[1].starts_with(&w[0])),
        "the reply grew token by token: {seen:?}"
    );
    assert_eq!(page.texts(".msg.user .text").await, ["Run echo console-ok"]);
    page.click(".msg.assistant .tool summary").await;
    page.screenshot("tool-call").await;

    page.client.switch_to_window(second).await.expect("tab");
    page.wait_texts(".msg.assistant.done", "the finished reply", |t| {
        !t.is_empty()
    })
    .await;
    assert_eq!(page.texts(".msg.assistant .text").await.join(""), answer);
    assert_eq!(page.texts(".msg.user .text").await, ["Run echo console-ok"]);
    assert_eq!(
        page.texts(".msg.assistant .tool .command").await,
        ["echo console-ok"]
    );
    let seen: Vec<String> =
        serde_json::from_value(page.run("return window.seen;", vec![]).await).expect("texts");
    assert!(
        seen.len() >= 4,
        "the second tab saw the tokens live: {seen:?}"
    );
    page.screenshot("second-tab-phone").await;
    page.close().await;
}

/// Sends `message`; the reply, 40 words `<prefix>01 ` … streamed 150 ms apart, is returned once
/// its fifth word shows.
async fn count_slowly(chat: &Chat, page: &Page, prefix: &str, message: &str) -> String {
    let answer: String = (1..=40).map(|n| format!("{prefix}{n:02} ")).collect();
    chat.model
        .push(Reply::text(answer.clone()).with_chunk_delay(Duration::from_millis(150)));
    page.fill("#message", message).await;
    page.click("#send").await;
    page.wait_text(".msg.assistant .text", &format!("{prefix}05"))
        .await;
    answer
}

/// Waits for the reply to finish and checks it shows `answer` and `message` exactly once.
async fn every_token_once(page: &Page, answer: &str, message: &str) {
    page.wait_texts(".msg.assistant.done", "the finished reply", |t| {
        !t.is_empty()
    })
    .await;
    assert_eq!(
        page.texts(".msg.assistant .text").await.join(""),
        answer,
        "nothing lost, nothing twice"
    );
    assert_eq!(page.texts(".msg.user .text").await, [message]);
}

#[tokio::test]
async fn a_reload_in_the_middle_of_a_run_shows_every_token_exactly_once() {
    let chat = Chat::start(&[]).await;
    let driver = Driver::start().await;
    let page = driver.browser("reload", DESKTOP.0, DESKTOP.1).await;
    open_chat(&chat, &page).await;

    let answer = count_slowly(&chat, &page, "w", "Count slowly").await;
    let before = page.texts(".msg.assistant .text").await.join("");
    assert!(
        !before.contains("w40"),
        "still streaming when reloaded: {before}"
    );

    page.client.refresh().await.expect("reload");
    page.find("#transcript").await;
    every_token_once(&page, &answer, "Count slowly").await;
    page.screenshot("after-reload").await;
    page.close().await;
}

#[tokio::test]
async fn a_dropped_connection_resumes_the_run_after_the_last_token_shown() {
    let chat = Chat::start(&[]).await;
    // The browser talks to an edge of its own, which the test stops and starts again.
    let port = common::free_port();
    let (base, edge) = chat.platform.edge_on(port, &[]).await;
    let driver = Driver::start().await;
    let page = driver.browser("dropped", DESKTOP.0, DESKTOP.1).await;
    page.sign_in_by_code_at(&base, &chat.platform, "chatter@example.com")
        .await;
    page.find("#create-agent").await;
    page.open(&format!("{base}/agents/{}", chat.agent_id)).await;
    page.click("#new-session").await;
    page.wait_url("session=").await;

    let answer = count_slowly(&chat, &page, "d", "Count while I drop").await;

    drop(edge); // the connection drops; the run goes on in the chat worker
    page.wait_texts("body.offline", "that it is offline", |t| !t.is_empty())
        .await;
    let (_, edge) = chat.platform.edge_on(port, &[]).await;
    every_token_once(&page, &answer, "Count while I drop").await;
    page.screenshot("resumed").await;
    page.close().await;
    drop(edge);
}

#[tokio::test]
async fn an_admin_approves_a_pending_user_who_can_then_create_an_agent() {
    let platform = Platform::start(&[("WARREN_ADMIN_EMAILS", "boss@example.com")]).await;
    let driver = Driver::start().await;

    let newcomer = driver.browser("pending-user", PHONE.0, PHONE.1).await;
    newcomer
        .sign_in_by_code(&platform, "newbie@example.com")
        .await;
    newcomer
        .wait_text("#pending-text", "waiting for an administrator")
        .await;
    newcomer.screenshot("pending").await;

    let admin = driver.browser("admin", DESKTOP.0, DESKTOP.1).await;
    admin.sign_in_by_code(&platform, "boss@example.com").await;
    admin.find("#create-agent").await;
    admin.click("#nav-admin").await;
    admin
        .wait_text("#pending-users", "newbie@example.com")
        .await;
    admin.screenshot("pending-list").await;
    admin
        .click("#pending-users [data-email='newbie@example.com'] .approve")
        .await;
    admin.wait_text("#pending-users", "Nobody is waiting").await;
    admin.wait_text("#all-users", "newbie@example.com").await;

    newcomer.click("#check-again").await;
    newcomer.fill("#agent-name", "Approved helper").await;
    newcomer.click("#create").await;
    newcomer
        .wait_texts(".agent .name", "the new agent", |t| {
            t.iter().any(|t| t == "Approved helper")
        })
        .await;
    newcomer.screenshot("agent-created").await;
    newcomer.close().await;
    admin.close().await;
}

#[tokio::test]
async fn an_exhausted_quota_is_shown_as_the_platforms_words() {
    let chat = Chat::start(&[("WARREN_TIER_FREE_MESSAGES_PER_DAY", "1")]).await;
    let driver = Driver::start().await;
    let page = driver.browser("quota", DESKTOP.0, DESKTOP.1).await;
    open_chat(&chat, &page).await;
    chat.model.push(Reply::text("The one answer today."));
    page.fill("#message", "hello").await;
    page.click("#send").await;
    page.wait_texts(".msg.assistant.done", "the reply", |t| !t.is_empty())
        .await;

    page.fill("#message", "and again").await;
    page.click("#send").await;
    let shown = page
        .wait_texts("#chat-error", "an error", |t| {
            t.iter().any(|t| !t.is_empty())
        })
        .await;
    let refused = chat
        .platform
        .post(
            &format!("/api/v1/chat/{}", chat.agent_id),
            Some(&chat.user.access),
            json!({"message": "over the quota"}),
        )
        .await;
    assert_eq!(
        refused.body["error"]["code"], "quota_exceeded",
        "{refused:?}"
    );
    assert_eq!(
        shown[0],
        refused.body["error"]["message"].as_str().unwrap_or("?")
    );
    page.screenshot("quota").await;

    // The usage page says what is left and draws today's message.
    page.click("#nav a[href='/usage']").await;
    page.wait_text("#quotas .meter", "1 of 1 used · 0 left")
        .await;
    let bars = page
        .run(
            "return document.querySelectorAll('#usage-chart svg rect.messages').length;",
            vec![],
        )
        .await;
    assert_eq!(bars, json!(1), "one day of usage, one bar");
    page.screenshot("usage").await;
    page.close().await;
}

#[tokio::test]
async fn provider_keys_are_set_replaced_and_deleted_without_ever_being_shown_back() {
    let platform = Platform::start(&[("WARREN_APPROVAL", "open")]).await;
    let driver = Driver::start().await;
    let page = driver.browser("settings", DESKTOP.0, DESKTOP.1).await;
    page.sign_in_by_code(&platform, "keys@example.com").await;
    page.find("#create-agent").await;
    page.click("#nav a[href='/settings']").await;
    page.wait_text("#keys", "No keys").await;

    page.fill("#key-secret", "sk-first-secret-0001").await;
    page.fill("#key-label", "work").await;
    page.click("#save-key").await;
    page.wait_text("#keys .fingerprint", "0001").await;
    page.click("#keys .replace").await;
    page.fill("#key-secret", "sk-second-secret-0002").await;
    page.click("#save-key").await;
    let prints = page
        .wait_texts("#keys .fingerprint", "the new key only", |t| {
            t.len() == 1 && t[0].ends_with("0002")
        })
        .await;
    let html = page
        .run("return document.documentElement.outerHTML;", vec![])
        .await;
    let html = html.as_str().unwrap_or_default();
    for secret in ["sk-first-secret-0001", "sk-second-secret-0002"] {
        assert!(!html.contains(secret), "{secret} is shown back: {prints:?}");
    }
    page.screenshot("keys").await;
    page.click("#keys .delete").await;
    page.wait_text("#keys", "No keys").await;

    page.fill("#default-model", "model-of-choice").await;
    page.click("#model-form button").await;
    page.click("#nav a[href='/']").await;
    let model = page
        .find("#agent-model")
        .await
        .prop("value")
        .await
        .expect("value");
    assert_eq!(
        model.as_deref(),
        Some("model-of-choice"),
        "new agents get the default model"
    );
    page.close().await;
}

#[tokio::test]
async fn settings_link_telegram_with_a_code_the_bot_confirms_and_list_the_connection() {
    use warren_testkit::telegram::{TestTelegram, TgUser};
    let tg = TestTelegram::start().await;
    let (token, api) = (tg.token().to_owned(), tg.api_url());
    let platform = Platform::start(&[
        ("WARREN_APPROVAL", "open"),
        ("WARREN_TELEGRAM_TOKEN", &token),
        ("WARREN_TELEGRAM_API_URL", &api),
    ])
    .await;
    let driver = Driver::start().await;
    let page = driver.browser("connections", PHONE.0, PHONE.1).await;
    page.sign_in_by_code(&platform, "tg@example.com").await;
    page.find("#create-agent").await;
    page.click("#nav a[href='/settings']").await;
    page.wait_text("#connections", "email").await;

    page.click("#link-telegram").await;
    let command = page.wait_text("#telegram-command", "/start ").await;
    let user = TgUser::new(4242, "Tess");
    let sent = tg.send_text(&user, &command);
    let question = tg
        .wait_for_message(
            4242,
            |m| m.message_id > sent.message_id && m.text.contains("tg@example.com"),
            Duration::from_secs(30),
        )
        .await;
    let link = question
        .button_data()
        .into_iter()
        .find(|data| data.starts_with("link:"))
        .expect("a Link button");
    tg.press_button(&user, 4242, question.message_id, &link);
    tg.wait_for_message(
        4242,
        |m| m.message_id == question.message_id && m.text.contains("now signs in"),
        Duration::from_secs(30),
    )
    .await;

    page.click("#nav a[href='/']").await;
    page.click("#nav a[href='/settings']").await;
    page.wait_texts("#connections .badge", "email and telegram", |kinds| {
        kinds.len() == 2 && kinds.iter().any(|k| k == "telegram")
    })
    .await;
    page.screenshot("connections").await;
    page.close().await;
}

#[tokio::test]
async fn continue_with_github_signs_in_and_settings_links_google() {
    use warren_testkit::oauth::{OAuthUser, TestOAuth};
    let oauth = TestOAuth::start().await;
    oauth.sign_in_as(OAuthUser::new("hana", "hana@example.com"));
    // The provider sends the browser back to the console's URL: here, the edge itself.
    let addr = format!("127.0.0.1:{}", common::free_port());
    let base = format!("http://{addr}");
    let mut env = edge_support::oauth_env(&oauth);
    env.extend([
        ("WARREN_APPROVAL", "open".to_owned()),
        ("WARREN_HTTP_ADDR", addr.clone()),
        ("WARREN_FRONTEND_URL", base.clone()),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let platform = Platform::start(&env).await;
    let driver = Driver::start().await;
    let page = driver.browser("oauth", PHONE.0, PHONE.1).await;
    page.open(&platform.base).await;
    page.wait_text("#oauth-github", "Continue with GitHub")
        .await;
    page.wait_text("#oauth-google", "Continue with Google")
        .await;
    page.click("#oauth-github").await;
    // GitHub consents at once and sends the browser back; the console takes the tokens.
    page.find("#create-agent").await;
    assert!(!page.wait_url("/").await.contains("handover"));

    page.click("#nav a[href='/settings']").await;
    page.wait_text("#link-google", "Link Google").await;
    page.click("#link-google").await;
    page.wait_url("/settings").await;
    page.wait_texts("#connections .badge", "github, email and google", |kinds| {
        kinds.len() == 3 && kinds.iter().any(|k| k == "google")
    })
    .await;
    page.screenshot("oauth-linked").await;
    page.close().await;
}

#[tokio::test]
async fn the_device_page_signs_in_first_then_approves_the_cli_code() {
    let platform = Platform::start(&[("WARREN_APPROVAL", "open")]).await;
    let started = platform.post("/api/v1/auth/device", None, json!({})).await;
    assert_eq!(started.status, 201, "{started:?}");
    let user_code = started.body["user_code"].as_str().expect("user code");
    let device_code = started.body["device_code"].as_str().expect("device code");

    let driver = Driver::start().await;
    let page = driver.browser("device", PHONE.0, PHONE.1).await;
    // Not signed in yet: the page asks for a sign-in, then comes back to the approval.
    page.open(&format!("{}/device?code={user_code}", platform.base))
        .await;
    let email = "ivy@example.com";
    let before = platform.smtp.mails_to(email).len();
    page.fill("#email", email).await;
    page.click("#send-link").await;
    let mail = platform
        .smtp
        .wait_for_mail(email, before + 1, Duration::from_secs(10))
        .await;
    page.fill("#code", &edge_support::code(&mail)).await;
    page.click("#verify-code").await;
    page.wait_text("#device-text", email).await;
    let shown = page
        .run(
            "return document.getElementById('device-code').value",
            vec![],
        )
        .await;
    assert_eq!(shown, json!(user_code));
    page.click("#approve-device").await;
    page.wait_text("#device-done", "signed in").await;
    page.screenshot("device-approved").await;
    page.close().await;

    let signed_in = platform
        .post(
            "/api/v1/auth/device/token",
            None,
            json!({ "device_code": device_code }),
        )
        .await;
    assert_eq!(signed_in.status, 200, "{signed_in:?}");
    let me = platform
        .get("/api/v1/users/me", signed_in.body["access_token"].as_str())
        .await;
    assert_eq!(me.body["email"], email);
}
