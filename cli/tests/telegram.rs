//! The Telegram bridge end to end: the real `warren dev` with `WARREN_TELEGRAM_TOKEN`, talking
//! to the fake Bot API of the test kit (the real HTTP protocol: long polling, MarkdownV2
//! checked as Telegram checks it, drafts, edits, files, buttons, 429s), driven as Telegram
//! users would drive it: an admin and a user in their private chats with the bot.

mod common;
mod edge_support;
mod gateway_support;

use common::{Warren, agent_bin};
use edge_support::{ENCRYPTION_KEY, Platform};
use gateway_support::Ws;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use warren_testkit::model_server::{ModelServer, Reply};
use warren_testkit::telegram::{BotMessage, Failure, TestTelegram, TgUser};
use warren_testkit::wait_until;

/// How long a bot reply may take (an agent's first answer includes deploying it).
const REPLY: Duration = Duration::from_secs(60);

/// The admin's Telegram id (listed in `WARREN_TELEGRAM_ADMINS`).
const ADMIN_ID: i64 = 1001;
/// A user's.
const ALICE_ID: i64 = 2002;

/// A platform with the bridge on, a model server behind it and the fake Bot API before it.
struct Bot {
    platform: Platform,
    tg: TestTelegram,
    model: ModelServer,
    admin: TgUser,
    alice: TgUser,
}

impl Bot {
    async fn start(env: &[(&str, &str)]) -> Self {
        let tg = TestTelegram::start().await;
        let model = ModelServer::start().await;
        let (token, api, model_url) = (tg.token().to_owned(), tg.api_url(), model.url());
        let agent_bin = agent_bin().display().to_string();
        let admin_id = ADMIN_ID.to_string();
        let mut vars: Vec<(&str, &str)> = vec![
            ("WARREN_TELEGRAM_TOKEN", &token),
            ("WARREN_TELEGRAM_API_URL", &api),
            ("WARREN_TELEGRAM_ADMINS", &admin_id),
            ("WARREN_AGENT_BIN", &agent_bin),
            ("WARREN_DEFAULT_PROVIDER", "openai"),
            ("WARREN_DEFAULT_BASE_URL", &model_url),
            ("WARREN_DEFAULT_API_KEY", "sk-platform"),
        ];
        vars.extend_from_slice(env);
        let platform = Platform::start(&vars).await;
        Self {
            platform,
            tg,
            model,
            admin: TgUser::new(ADMIN_ID, "Ada"),
            alice: TgUser::new(ALICE_ID, "Alice"),
        }
    }

    /// `user` sends `text` and waits for the bot's next message in their chat that `matches`.
    async fn ask(
        &self,
        user: &TgUser,
        text: &str,
        matches: impl Fn(&BotMessage) -> bool,
    ) -> BotMessage {
        let sent = self.tg.send_text(user, text);
        self.tg
            .wait_for_message(
                user.id,
                |m| m.message_id > sent.message_id && matches(m),
                REPLY,
            )
            .await
    }

    /// The admin registers, Alice registers and the admin approves her with the button.
    async fn admin_approves_alice(&self) {
        let welcome = self.ask(&self.admin, "/start", |_| true).await;
        assert!(welcome.text.contains("admin"), "{welcome:?}");
        let registered = self.ask(&self.alice, "/start", |_| true).await;
        assert!(
            registered.text.contains("sent to an admin for approval"),
            "{registered:?}"
        );
        // Pending: the agent is out of reach, in words.
        let refused = self.ask(&self.alice, "hello?", |_| true).await;
        assert!(
            refused.text.contains("pending admin approval"),
            "{refused:?}"
        );

        let notice = self
            .tg
            .wait_for_message(
                ADMIN_ID,
                |m| m.text.contains("New user registration"),
                REPLY,
            )
            .await;
        assert!(notice.text.contains(&ALICE_ID.to_string()), "{notice:?}");
        let approve = notice
            .button_data()
            .into_iter()
            .find(|data| data.starts_with("approve:"))
            .expect("an Approve button");
        self.tg
            .press_button(&self.admin, ADMIN_ID, notice.message_id, &approve);
        let told = self
            .tg
            .wait_for_message(ALICE_ID, |m| m.text.contains("You've been approved"), REPLY)
            .await;
        assert!(told.text.starts_with("🎉"), "{told:?}");
        // The notice shows the decision and loses its buttons; the tap was answered.
        wait_until(REPLY, || async {
            self.tg.messages(ADMIN_ID).iter().any(|m| {
                m.message_id == notice.message_id
                    && m.text.contains("Approved by Ada")
                    && m.button_data().is_empty()
            })
        })
        .await;
        // The tap is answered too (after the edit, or before it: either order is fine).
        wait_until(REPLY, || async {
            self.tg
                .callback_answers()
                .iter()
                .any(|(_, text)| text.as_deref().is_some_and(|t| t.contains("Approved")))
        })
        .await;
    }
}

#[tokio::test]
async fn start_approve_then_chat_streams_a_draft_and_a_final_markdown_answer() {
    let bot = Bot::start(&[]).await;
    bot.admin_approves_alice().await;

    // The first message needs no setup: an agent is made, and the answer streams.
    bot.model.push(
        Reply::text("Here you go. Run `ls -la` then:\n```bash\necho done.\n```\nThat's all!")
            .with_chunk_delay(Duration::from_millis(300)),
    );
    bot.tg.send_text(&bot.alice, "How do I list files?");
    let answer = bot
        .tg
        .wait_for_message(
            ALICE_ID,
            |m| m.text.contains("That's all!"),
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(
        answer.parse_mode.as_deref(),
        Some("MarkdownV2"),
        "{answer:?}"
    );
    assert!(
        answer.raw_text.contains("```bash\necho done."),
        "{answer:?}"
    );
    assert!(answer.text.contains("Run ls -la then:"), "{answer:?}");
    // Drafts showed the answer growing before it was final.
    let drafts = bot.tg.drafts(ALICE_ID);
    assert!(!drafts.is_empty(), "no draft was shown");
    assert!(
        drafts.iter().all(|d| {
            "Here you go. Run `ls -la` then:\n```bash\necho done.\n```\nThat's all!"
                .starts_with(d.trim_end())
        }),
        "{drafts:?}"
    );
    let draft_times: Vec<Instant> = bot
        .tg
        .calls_of("sendMessageDraft")
        .iter()
        .map(|c| c.at)
        .collect();
    for pair in draft_times.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(900),
            "drafts more than once a second"
        );
    }

    // A long answer arrives whole, split on lines under Telegram's limit.
    let long: String = (0..300)
        .map(|i| format!("line {i}: some words here.\n"))
        .collect();
    bot.model.push(Reply::text(long.clone()));
    let before = bot.tg.messages(ALICE_ID).len();
    bot.tg.send_text(&bot.alice, "Tell me a lot");
    let last = bot
        .tg
        .wait_for_message(ALICE_ID, |m| m.text.contains("line 299:"), REPLY)
        .await;
    let parts: Vec<BotMessage> = bot.tg.messages(ALICE_ID)[before..]
        .iter()
        .filter(|m| m.text.contains("line "))
        .cloned()
        .collect();
    assert!(parts.len() >= 2, "{} parts", parts.len());
    assert_eq!(parts.last().map(|m| m.message_id), Some(last.message_id));
    let joined: String = parts.iter().map(|m| format!("{}\n", m.text)).collect();
    assert_eq!(joined, long, "every line once, in order");
}

#[tokio::test]
async fn setkey_deletes_the_message_stores_the_key_and_the_next_answer_uses_it() {
    let bot = Bot::start(&[("WARREN_APPROVAL", "open")]).await;
    bot.ask(&bot.alice, "/start", |_| true).await;
    // Asking about an agent makes none.
    for question in ["/status", "/shell ls", "/stop"] {
        let answer = bot.ask(&bot.alice, question, |_| true).await;
        assert!(
            answer.text.contains("no agent yet"),
            "{question}: {answer:?}"
        );
    }
    let key_message = bot.tg.send_text(
        &bot.alice,
        &format!("/setkey custom sk-alice-own {}", bot.model.url()),
    );
    let stored = bot
        .tg
        .wait_for_message(ALICE_ID, |m| m.text.contains("is stored"), REPLY)
        .await;
    assert!(!stored.text.contains("sk-alice-own"), "{stored:?}");
    assert!(bot.tg.is_deleted(ALICE_ID, key_message.message_id));

    bot.model.push(Reply::text("Paid with your own key."));
    let answer = bot
        .ask(&bot.alice, "hello", |m| {
            m.text.contains("Paid with your own key.")
        })
        .await;
    assert!(!answer.text.is_empty());
    let keys: Vec<String> = bot
        .model
        .recorded()
        .iter()
        .map(|r| r.api_key.clone().unwrap_or_default())
        .collect();
    assert_eq!(keys, ["sk-alice-own"], "the model saw {keys:?}");
}

#[tokio::test]
async fn documents_land_in_the_workspace_shell_lists_them_and_get_returns_them_byte_for_byte() {
    let bot = Bot::start(&[("WARREN_APPROVAL", "open")]).await;
    bot.ask(&bot.alice, "/start", |_| true).await;
    // The agent is made on the first use and must run before files reach its workspace.
    bot.model.push(Reply::text("Ready."));
    bot.ask(&bot.alice, "hi", |m| m.text.contains("Ready."))
        .await;

    let bytes: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    bot.tg
        .send_document(&bot.alice, "data.bin", bytes.clone(), None);
    let saved = bot
        .tg
        .wait_for_message(ALICE_ID, |m| m.text.contains("Saved data.bin"), REPLY)
        .await;
    assert!(saved.text.contains("68.4 KB"), "{saved:?}");

    let listing = bot
        .ask(&bot.alice, "/shell ls -l", |m| m.text.contains("exit"))
        .await;
    assert!(
        listing.text.contains("data.bin") && listing.text.contains("70000"),
        "{listing:?}"
    );
    assert!(listing.text.contains("exit 0"), "{listing:?}");

    let file = bot
        .ask(&bot.alice, "/get data.bin", |m| m.document.is_some())
        .await;
    let (name, got) = file.document.expect("a document");
    assert_eq!(name, "data.bin");
    assert!(got == bytes, "the file came back changed");

    let missing = bot.ask(&bot.alice, "/get nope.txt", |_| true).await;
    assert!(missing.text.contains("no file nope.txt"), "{missing:?}");
    let escape = bot.ask(&bot.alice, "/get ../../etc/passwd", |_| true).await;
    assert!(escape.text.contains("workspace"), "{escape:?}");
}

#[tokio::test]
async fn a_linked_account_sees_telegram_messages_on_the_websocket_with_the_same_seq_and_back() {
    let bot = Bot::start(&[("WARREN_APPROVAL", "open")]).await;
    let web = bot.platform.sign_in("alice@example.com").await;
    let link = bot
        .platform
        .post(
            "/api/v1/users/me/connections/telegram",
            Some(&web.access),
            json!({}),
        )
        .await;
    assert_eq!(link.status, 201, "{link:?}");
    let command = link.body["command"].as_str().expect("command");
    // The bot names the account and asks before linking (a code from someone else would
    // otherwise tie this Telegram account to theirs).
    let question = bot.ask(&bot.alice, command, |_| true).await;
    assert!(question.text.contains("alice@example.com"), "{question:?}");
    let link_button = question
        .button_data()
        .into_iter()
        .find(|data| data.starts_with("link:"))
        .expect("a Link button");
    bot.tg
        .press_button(&bot.alice, ALICE_ID, question.message_id, &link_button);
    bot.tg
        .wait_for_message(
            ALICE_ID,
            |m| m.message_id == question.message_id && m.text.contains("now signs in"),
            REPLY,
        )
        .await;
    // The code works once.
    let again = bot.ask(&bot.alice, command, |_| true).await;
    assert!(again.text.contains("already used"), "{again:?}");
    let connections = bot
        .platform
        .get("/api/v1/users/me/connections", Some(&web.access))
        .await;
    assert!(
        connections
            .body
            .as_array()
            .expect("list")
            .iter()
            .any(|c| c["kind"] == "telegram"),
        "{connections:?}"
    );

    bot.model.push(Reply::text("First answer."));
    bot.ask(&bot.alice, "from telegram one", |m| {
        m.text.contains("First answer.")
    })
    .await;
    let sessions = bot
        .platform
        .get("/api/v1/conversations", Some(&web.access))
        .await;
    let session = sessions.body[0]["id"]
        .as_str()
        .expect("a session")
        .to_owned();

    let (mut ws, _) = Ws::connect(&bot.platform.base, &web.access).await;
    ws.switch(&session).await;
    bot.model.push(Reply::text("Second answer."));
    bot.tg.send_text(&bot.alice, "from telegram two");
    let message = ws.until("message").await;
    assert_eq!(
        message["payload"]["content"], "from telegram two",
        "{message}"
    );
    assert_eq!(message["payload"]["fromSelf"], false, "{message}");
    ws.until("final").await;
    let messages = bot
        .platform
        .get(
            &format!("/api/v1/conversations/{session}/messages"),
            Some(&web.access),
        )
        .await;
    let logged = messages.body["messages"]
        .as_array()
        .or(messages.body.as_array())
        .expect("messages")
        .iter()
        .find(|m| m["text"] == "from telegram two")
        .cloned()
        .expect("the telegram message in the log");
    assert_eq!(message["seq"], logged["seq"], "{message} vs {logged}");
    assert_eq!(logged["client_kind"], "telegram", "{logged}");

    // And back: typed in another client (this WebSocket says it is the CLI), shown in
    // Telegram, answered in both.
    bot.model.push(Reply::text("Third answer."));
    let sent = ws.call("agent", json!({"message": "from the web"})).await;
    assert_eq!(sent["ok"], true, "{sent}");
    bot.tg
        .wait_for_message(ALICE_ID, |m| m.text == "💬 You (CLI): from the web", REPLY)
        .await;
    bot.tg
        .wait_for_message(ALICE_ID, |m| m.text.contains("Third answer."), REPLY)
        .await;
}

#[tokio::test]
async fn telegram_rate_limits_and_outages_delay_answers_but_lose_nothing() {
    let bot = Bot::start(&[("WARREN_APPROVAL", "open")]).await;
    bot.ask(&bot.alice, "/start", |_| true).await;
    bot.model.push(Reply::text("Warming up."));
    bot.ask(&bot.alice, "hi", |m| m.text.contains("Warming up."))
        .await;

    // A 429 on the answer: the bridge waits as told, then sends it.
    bot.tg.fail_next(
        "sendMessage",
        1,
        Failure::TooManyRequests { retry_after: 2 },
    );
    bot.model.push(Reply::text("After the rate limit."));
    bot.tg.send_text(&bot.alice, "one");
    bot.tg
        .wait_for_message(
            ALICE_ID,
            |m| m.text.contains("After the rate limit."),
            REPLY,
        )
        .await;
    let sends = bot.tg.calls_of("sendMessage");
    let limited = sends.iter().position(|c| c.status == 429).expect("the 429");
    let retried = &sends[limited + 1];
    assert_eq!(retried.status, 200);
    assert!(
        retried.at - sends[limited].at >= Duration::from_secs(2),
        "retried too soon"
    );

    // Telegram down while an answer is made: it arrives, once, when Telegram is back.
    bot.model.push(
        Reply::text("Answer A arrives after the outage, whole.")
            .with_chunk_delay(Duration::from_millis(400)),
    );
    bot.tg.send_text(&bot.alice, "question A");
    // The model is answering (slowly): Telegram goes down before the answer is done.
    wait_until(REPLY, || async { bot.model.pending_replies() == 0 }).await;
    bot.tg.set_unreachable(true);
    let failed = |tg: &TestTelegram| {
        tg.calls_of("sendMessage")
            .iter()
            .filter(|c| c.status == 502)
            .count()
    };
    // The final answer's delivery meets the outage, and keeps trying.
    wait_until(REPLY, || async { failed(&bot.tg) >= 2 }).await;
    assert!(
        !bot.tg
            .messages(ALICE_ID)
            .iter()
            .any(|m| m.text.contains("Answer A")),
        "delivered during the outage"
    );
    bot.tg.set_unreachable(false);
    let delivered = bot
        .tg
        .wait_for_message(
            ALICE_ID,
            |m| m.text.contains("Answer A arrives after the outage, whole."),
            Duration::from_secs(90),
        )
        .await;
    let count = bot
        .tg
        .messages(ALICE_ID)
        .iter()
        .filter(|m| m.text.contains("Answer A"))
        .count();
    assert_eq!(count, 1, "delivered once: {delivered:?}");
}

#[tokio::test]
async fn webhook_mode_registers_the_webhook_and_refuses_a_wrong_secret() {
    let secret = "s3cr3t-token_ok";
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}/api/v1/telegram/webhook");
    let addr = format!("127.0.0.1:{port}");
    let bot = Bot::start(&[
        ("WARREN_HTTP_ADDR", &addr),
        ("WARREN_TELEGRAM_WEBHOOK_URL", &url),
        ("WARREN_TELEGRAM_WEBHOOK_SECRET", secret),
    ])
    .await;
    wait_until(REPLY, || async {
        bot.tg.webhook_url().as_deref() == Some(url.as_str())
    })
    .await;
    let set = bot.tg.calls_of("setWebhook");
    assert_eq!(set[0].params["secret_token"], secret, "{:?}", set[0].params);

    // Telegram posts updates there with the secret: the bot answers.
    let answer = bot.ask(&bot.alice, "/myid", |_| true).await;
    assert_eq!(answer.text, format!("Your Telegram id: {ALICE_ID}"));

    // A forged update is refused and handled by nobody.
    let forged = json!({"update_id": 999_999, "message": {"message_id": 1, "date": 0,
        "chat": {"id": ALICE_ID, "type": "private"}, "from": {"id": ALICE_ID, "is_bot": false, "first_name": "Mallory"},
        "text": "/myid"}});
    let http = reqwest::Client::new();
    for header in [Some("wrong"), None] {
        let mut request = http.post(&url).json(&forged);
        if let Some(header) = header {
            request = request.header("X-Telegram-Bot-Api-Secret-Token", header);
        }
        let response = request.send().await.expect("webhook");
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "invalid_secret", "{body}");
    }
    // With the right secret, an update whose private chat is not its sender's is dropped (a
    // forged sender would otherwise get another user's answers). Its chat shares Alice's lock
    // stripe, so it is handled before her next update.
    const FORGED_CHAT: i64 = ALICE_ID + 64;
    let forged_chat = json!({"update_id": 999_998, "message": {"message_id": 1, "date": 0,
        "chat": {"id": FORGED_CHAT, "type": "private"}, "from": {"id": ALICE_ID, "is_bot": false, "first_name": "Alice"},
        "text": "/myid"}});
    let accepted = http
        .post(&url)
        .header("X-Telegram-Bot-Api-Secret-Token", secret)
        .json(&forged_chat)
        .send()
        .await
        .expect("webhook");
    assert_eq!(accepted.status(), 200);
    // A right secret with a body that is no update is a 400, not a crash.
    let bad = http
        .post(&url)
        .header("X-Telegram-Bot-Api-Secret-Token", secret)
        .body("{not json")
        .send()
        .await
        .expect("webhook");
    assert_eq!(bad.status(), 400);
    // One more real update is still answered once, and the forged one never was.
    bot.ask(&bot.alice, "/myid", |_| true).await;
    let answers = bot
        .tg
        .messages(ALICE_ID)
        .iter()
        .filter(|m| m.text.starts_with("Your Telegram id"))
        .count();
    assert_eq!(answers, 2);
    let to_forged = bot
        .tg
        .calls()
        .into_iter()
        .filter(|c| c.params["chat_id"] == FORGED_CHAT)
        .count();
    assert_eq!(to_forged, 0, "the forged chat was answered");
}

#[tokio::test]
async fn two_telegram_workers_answer_each_update_once_and_one_takes_over_from_the_other() {
    let mut bot = Bot::start(&[("WARREN_APPROVAL", "open")]).await;
    // A second replica: `warren worker telegram` on the same log and database.
    let jwt = std::fs::read_to_string(bot.platform.dir.path().join("data/jwt_secret"))
        .expect("the dev JWT secret");
    let mut env: Vec<(&str, String)> = vec![
        ("WARREN_JWT_SECRET", jwt.trim().to_owned()),
        ("WARREN_ENCRYPTION_KEY", ENCRYPTION_KEY.to_owned()),
        ("WARREN_TELEGRAM_TOKEN", bot.tg.token().to_owned()),
        ("WARREN_TELEGRAM_API_URL", bot.tg.api_url()),
        ("WARREN_AGENT_BIN", edge_support::NO_AGENT_BIN.to_owned()),
        ("WARREN_LOG", "info".to_owned()),
    ];
    env.extend(bot.platform.nats.warren_env());
    env.extend(bot.platform.db.warren_env());
    let second = Warren::spawn(
        &["worker", "telegram"],
        &env,
        bot.platform.dir.path(),
        "telegram-2",
    );
    wait_until(REPLY, || async {
        second.log_text().contains("telegram bridge starting")
    })
    .await;

    let answered = |tg: &TestTelegram| {
        tg.messages(ALICE_ID)
            .iter()
            .filter(|m| m.text.starts_with("Your Telegram id"))
            .count()
    };
    for _ in 0..4 {
        bot.tg.send_text(&bot.alice, "/myid");
    }
    wait_until(REPLY, || async { answered(&bot.tg) >= 4 }).await;
    bot.tg.wait_until_no_pending(REPLY).await;

    // The replica in `warren dev` goes: the other one polls now, and answers everything once.
    assert!(bot.platform.stop().await, "warren dev did not stop cleanly");
    for _ in 0..4 {
        bot.tg.send_text(&bot.alice, "/myid");
    }
    wait_until(REPLY, || async { answered(&bot.tg) >= 8 }).await;
    // One more, answered after the others: nothing came twice.
    bot.tg.send_text(&bot.alice, "/help");
    bot.tg
        .wait_for_message(ALICE_ID, |m| m.text.contains("/shell CMD"), REPLY)
        .await;
    assert_eq!(answered(&bot.tg), 8, "{:#?}", bot.tg.messages(ALICE_ID));
}

#[tokio::test]
async fn group_chats_are_refused_politely_and_unknown_commands_get_the_help() {
    let bot = Bot::start(&[]).await;
    bot.tg.send_text_in_group(&bot.alice, -500, "hello bot");
    let refused = bot.tg.wait_for_message(-500, |_| true, REPLY).await;
    assert!(refused.text.contains("private chats"), "{refused:?}");

    let unknown = bot.ask(&bot.alice, "/frobnicate", |_| true).await;
    assert!(
        unknown.text.contains("Unknown command /frobnicate"),
        "{unknown:?}"
    );
    assert!(unknown.text.contains("/setkey"), "{unknown:?}");
    let myid = bot.ask(&bot.alice, "/myid", |_| true).await;
    assert_eq!(myid.text, format!("Your Telegram id: {ALICE_ID}"));
    // The menu Telegram shows lists the commands.
    let menu = bot.tg.commands();
    assert!(
        menu.iter().any(|(command, _)| command == "shell"),
        "{menu:?}"
    );
    // Not registered: told how, nothing created.
    let chat = bot.ask(&bot.alice, "hello", |_| true).await;
    assert!(chat.text.contains("send /start"), "{chat:?}");
}

#[tokio::test]
async fn in_a_group_the_answer_is_one_message_edited_in_place_then_final() {
    let bot = Bot::start(&[
        ("WARREN_APPROVAL", "open"),
        ("WARREN_TELEGRAM_GROUPS", "true"),
    ])
    .await;
    const GROUP: i64 = -700;
    bot.tg.send_text_in_group(&bot.alice, GROUP, "/start");
    bot.tg
        .wait_for_message(GROUP, |m| m.text.contains("Welcome"), REPLY)
        .await;
    let words: String = (0..12).map(|i| format!("word{i} ")).collect();
    bot.model.push(
        Reply::text(words.trim_end().to_owned()).with_chunk_delay(Duration::from_millis(250)),
    );
    bot.tg
        .send_text_in_group(&bot.alice, GROUP, "say twelve words");
    let answer = bot
        .tg
        .wait_for_message(
            GROUP,
            |m| m.text.contains("word11") && m.parse_mode.is_some(),
            REPLY,
        )
        .await;
    // The draft message became the answer: edited in place, never a second copy.
    assert!(!answer.edits.is_empty(), "{answer:?}");
    assert!(
        answer.edits.iter().all(|e| words.starts_with(e.trim_end())),
        "{answer:?}"
    );
    let copies = bot
        .tg
        .messages(GROUP)
        .iter()
        .filter(|m| m.text.contains("word0"))
        .count();
    assert_eq!(copies, 1);
    assert!(bot.tg.drafts(GROUP).is_empty());
    let edits: Vec<Instant> = bot
        .tg
        .calls_of("editMessageText")
        .iter()
        .filter(|c| c.params["parse_mode"].is_null())
        .map(|c| c.at)
        .collect();
    for pair in edits.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(900),
            "edits more than once a second"
        );
    }
}
