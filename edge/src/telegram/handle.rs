//! One update at a time per chat (several chats at once): who the sender is, then what they
//! asked. Every action is a call into [`crate::app`], as the REST routes and the gateway make
//! it, with the sender's Telegram identity standing in for a token
//! ([`crate::app::access::vouched`]).
//!
//! An update's command id follows from its `update_id` (`telegram:<bot>:<update>:<what>`), so an
//! update handled again (a replica died before acking it) posts, creates or records nothing
//! twice.

use super::Bridge;
use super::format::{self, escape, escape_code};
use super::store::{Current, RunRecord};
use super::types::{CallbackQuery, Document, Update, User};
use crate::app::access::{self, ApprovedUser, AuthUser};
use crate::app::agents::{self, Lifecycle, NewAgent};
use crate::app::chat::{self, Client, Message, Target};
use crate::app::exec::{ExecFrame, ExecRequest};
use crate::app::identity::{self, Identity};
use crate::app::{admin, download, exec, keys, limits, upload, usage};
use crate::error::ApiError;
use crate::views;
use axum::body::Body;
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;
use warren_commands::topology::{TELEGRAM, TELEGRAM_UPDATES};
use warren_domain::agent::{Backend, RuntimeKind};
use warren_domain::conversation::PostMode;
use warren_domain::ids::{AgentId, CommandId, ConversationId, UserId};
use warren_domain::user::{AuthKind, Provider, UserCommand, UserStatus};
use warren_workers::consume::{Durable, Handled, consume_concurrently};
use warren_workers::supervise::supervise;

/// Updates handled at once by one replica (one chat's still one at a time).
const CONCURRENCY: usize = 64;
/// The most Telegram lets a bot download.
const TELEGRAM_DOWNLOAD_MAX: u64 = 20 * 1024 * 1024;
/// The most Telegram lets a bot upload.
const TELEGRAM_UPLOAD_MAX: u64 = 50 * 1024 * 1024;
/// The most shell output kept.
const SHELL_OUTPUT_MAX: usize = 1024 * 1024;
/// The longest a `/shell` command is waited for (the runtime's own timeout is shorter).
const SHELL_DEADLINE: Duration = Duration::from_secs(150);
/// Shell output longer than this is sent as a file.
const SHELL_INLINE_MAX: usize = 3500;
/// How long a message waits for its agent's deployment.
const DEPLOY_WAIT: Duration = Duration::from_secs(300);
/// How often the agent's state is read meanwhile.
const DEPLOY_POLL: Duration = Duration::from_millis(500);
/// The name of an agent created for a user's first message.
const FIRST_AGENT_NAME: &str = "Assistant";

/// What the bot answers in a group chat when groups are not enabled.
pub const GROUPS_REFUSED: &str =
    "I only talk in private chats. Message me directly to reach your agent.";

/// The help text.
pub const HELP: &str = "\
Talk to your agent: just send a message.

/start — register (or /start CODE to link your Warren account)
/myid — your Telegram id
/new — start a new session
/sessions — your sessions with this agent
/session N — switch to session N
/history [N] — the last N messages
/cancel — stop the answer in progress
/status — your agent's state and resources
/agents — your agents
/agent NAME — switch agent
/stop, /restart — stop or restart your agent
/shell CMD — run a shell command in your agent's sandbox
/get PATH — get a file from the workspace (send a document to put one there)
/setkey PROVIDER KEY [BASE_URL] — store your own provider key (your message is deleted)
/model NAME — change your agent's model
/usage — today's usage and limits
/help — this text";

/// The commands Telegram lists in the bot's menu (`setMyCommands`).
pub const MENU: [(&str, &str); 17] = [
    ("new", "Start a new session"),
    ("sessions", "Your sessions with this agent"),
    ("history", "The last messages"),
    ("cancel", "Stop the answer in progress"),
    ("status", "Your agent's state and resources"),
    ("agents", "Your agents"),
    ("agent", "Switch agent: /agent NAME"),
    ("stop", "Stop your agent"),
    ("restart", "Restart your agent"),
    ("shell", "Run a shell command: /shell CMD"),
    ("get", "Get a workspace file: /get PATH"),
    ("setkey", "Store your provider key: /setkey PROVIDER KEY"),
    ("model", "Change your agent's model: /model NAME"),
    ("usage", "Today's usage and limits"),
    ("myid", "Your Telegram id"),
    ("start", "Register, or link your account: /start CODE"),
    ("help", "All commands"),
];

/// Consumes the queue of updates until shutdown.
pub async fn run(bridge: &Bridge) {
    let durable = Durable {
        stream: TELEGRAM,
        name: "telegram",
        filter: TELEGRAM_UPDATES,
        ack_wait: Duration::from_secs(600),
    };
    let js = bridge.state.commands.jetstream();
    supervise("telegram", bridge.shutdown.clone(), || {
        consume_concurrently(
            js,
            &durable,
            &bridge.shutdown,
            CONCURRENCY,
            |message| async move {
                match serde_json::from_slice::<Update>(&message.payload) {
                    Ok(update) => {
                        bridge.handle(update).await;
                        Handled::Done
                    }
                    Err(err) => Handled::Poison(format!("not a telegram update: {err}")),
                }
            },
        )
    })
    .await;
}

/// What the bot says when an action is refused.
#[derive(Debug)]
pub struct Said(pub String);

impl From<ApiError> for Said {
    fn from(err: ApiError) -> Self {
        Said(describe(&err))
    }
}

/// An error in words for a Telegram user.
pub fn describe(err: &ApiError) -> String {
    match err {
        ApiError::Internal(source) => {
            tracing::error!(error = %crate::error::chain(source.as_ref()), "a telegram request failed");
            "⚠️ Something went wrong on our side; try again.".to_owned()
        }
        ApiError::Unavailable(what) => {
            format!("⚠️ {what} is unavailable right now; try again in a moment.")
        }
        ApiError::NotFound => "⚠️ Not found.".to_owned(),
        other => {
            let body = other.body();
            // Pending: said as spec 003 says it (rejected or revoked: the reason as given).
            if body.code == "not_approved"
                && body
                    .details
                    .as_ref()
                    .is_some_and(|d| d["status"] == "pending")
            {
                return PENDING.to_owned();
            }
            format!("⚠️ {}", body.message)
        }
    }
}

/// What a refused link code is answered with.
const LINK_CODE_REFUSED: &str = "⚠️ This link code is unknown, expired or already used: make a new one (`warren connect telegram`, or POST /api/v1/users/me/connections/telegram).";

/// What a pending user is told.
const PENDING: &str =
    "⏳ Your account is pending admin approval. You'll be notified once approved.";

/// What an update comes to: a reply to send (or none: the answer streams), or a refusal.
type Outcome = Result<Option<String>, Said>;

/// A reply.
fn reply(text: impl Into<String>) -> Outcome {
    Ok(Some(text.into()))
}

/// One update being handled.
struct Ctx<'a> {
    bridge: &'a Bridge,
    chat: i64,
    from: &'a User,
    update_id: i64,
    message_id: i64,
}

impl Bridge {
    /// Handles one update; whatever goes wrong is said to the sender.
    pub async fn handle(&self, update: Update) {
        if let Some(query) = update.callback_query {
            let _chat = self.chat_lock(query.from.id).lock().await;
            self.on_button(query).await;
            return;
        }
        let Some(message) = update.message else {
            return;
        };
        let Some(from) = message.from.clone().filter(|from| !from.is_bot) else {
            return;
        };
        let chat = message.chat.id;
        // A private chat is the sender's own: anything else is a forged update.
        if message.chat.is_private() && chat != from.id {
            tracing::warn!(
                chat,
                from = from.id,
                "an update whose private chat is not its sender's; ignored"
            );
            return;
        }
        let _chat = self.chat_lock(chat).lock().await;
        if !message.chat.is_private() && !self.settings.groups {
            self.say(chat, GROUPS_REFUSED).await;
            return;
        }
        let ctx = Ctx {
            bridge: self,
            chat,
            from: &from,
            update_id: update.update_id,
            message_id: message.message_id,
        };
        let outcome = match (&message.text, &message.document) {
            (Some(text), _) => match text.strip_prefix('/') {
                Some(command) => ctx.command(command).await,
                None => ctx.chat_text(text).await,
            },
            (None, Some(document)) => ctx.document(document).await,
            _ => Err(Said("I read text messages and documents.".into())),
        };
        match outcome {
            Ok(Some(text)) | Err(Said(text)) => self.say(chat, &text).await,
            Ok(None) => {}
        }
    }

    /// Sends `text` as plain messages, waiting out Telegram's limits and outages.
    pub async fn say(&self, chat: i64, text: &str) {
        for part in format::split_plain(text) {
            let params = json!({ "chat_id": chat, "text": part });
            if let Err(err) = self
                .api
                .call_retrying::<serde_json::Value>("sendMessage", &params)
                .await
            {
                tracing::warn!(chat, error = %err, "telegram refused a message");
                return;
            }
        }
    }

    /// Sends MarkdownV2 `parts`, waiting out Telegram's limits and outages.
    pub async fn say_markdown(
        &self,
        chat: i64,
        parts: &[String],
    ) -> Result<(), super::api::TgError> {
        for part in parts {
            let params = json!({ "chat_id": chat, "text": part, "parse_mode": "MarkdownV2" });
            self.api
                .call_retrying::<serde_json::Value>("sendMessage", &params)
                .await?;
        }
        Ok(())
    }

    /// The platform user a Telegram account signs in, as of now.
    pub async fn user_of(&self, telegram_id: i64) -> Result<Option<AuthUser>, ApiError> {
        match identity::owner(&self.state, AuthKind::Telegram, &telegram_id.to_string()).await? {
            Some(id) => access::vouched(&self.state, id).await.map(Some),
            None => Ok(None),
        }
    }

    /// An admin pressed Approve or Reject under a registration notice.
    async fn on_button(&self, query: CallbackQuery) {
        let data = query.data.clone().unwrap_or_default();
        let answer = match self.decide(&query, &data).await {
            Ok(done) => done,
            Err(Said(text)) => text,
        };
        let params = json!({ "callback_query_id": query.id, "text": answer });
        if let Err(err) = self
            .api
            .call_retrying::<bool>("answerCallbackQuery", &params)
            .await
        {
            tracing::warn!(error = %err, "answering a button press failed");
        }
    }

    /// The Link button under a `/start CODE` question: the code is used now.
    async fn link(&self, query: &CallbackQuery, code: &str) -> Result<String, Said> {
        let private = query
            .message
            .as_ref()
            .is_some_and(|message| message.chat.id == query.from.id);
        if !private {
            return Err(Said("Link accounts in a private chat with me.".into()));
        }
        let user = identity::redeem_link_code(&self.state, code, AuthKind::Telegram)
            .await
            .map_err(|_| Said(LINK_CODE_REFUSED.into()))?;
        let telegram = Identity {
            kind: AuthKind::Telegram,
            external_id: query.from.id.to_string(),
            email: None,
            display_name: Some(warren_domain::text::DISPLAY_NAME.fit(&query.from.display_name())),
            listed_admin: false,
        };
        identity::link(&self.state, user, telegram).await?;
        let mut current = self
            .store
            .current(user)
            .await
            .map_err(|err| Said(describe(&ApiError::internal(err))))?
            .unwrap_or_default();
        current.chat_id = query.from.id;
        self.store
            .set_current(user, &current)
            .await
            .map_err(|err| Said(describe(&ApiError::internal(err))))?;
        Ok("🔗 Linked".into())
    }

    async fn decide(&self, query: &CallbackQuery, data: &str) -> Result<String, Said> {
        if let Some(code) = data.strip_prefix("link:") {
            let linked = self.link(query, code).await?;
            self.settle_question(query, "🔗 This Telegram account now signs in to your Warren account. Send me a message to talk to your agent.").await;
            return Ok(linked);
        }
        if data == "link-cancel" {
            self.settle_question(query, "Not linked.").await;
            return Ok("Not linked".into());
        }
        let (verb, id) = data
            .split_once(':')
            .ok_or_else(|| Said("This button is no longer valid.".into()))?;
        let user = Uuid::parse_str(id)
            .map(UserId)
            .map_err(|_| Said("This button is no longer valid.".into()))?;
        let (command, done) = match verb {
            "approve" => (UserCommand::ApproveUser, "✅ Approved"),
            "reject" => (UserCommand::RejectUser { reason: None }, "❌ Rejected"),
            _ => return Err(Said("This button is no longer valid.".into())),
        };
        let caller = self
            .user_of(query.from.id)
            .await?
            .ok_or_else(|| Said("Only admins can decide registrations.".into()))?;
        let admin = access::admin(caller)
            .map_err(|_| Said("Only admins can decide registrations.".into()))?;
        let decided = admin::decide(&self.state, &admin, user, command).await?;
        // The notice shows the decision; its buttons go.
        if let Some(message) = &query.message {
            let text = format!(
                "{}\n\n{done} by {}",
                message.text.clone().unwrap_or_default(),
                query.from.display_name()
            );
            let params = json!({
                "chat_id": message.chat.id,
                "message_id": message.message_id,
                "text": text,
            });
            if let Err(err) = self
                .api
                .call_retrying::<serde_json::Value>("editMessageText", &params)
                .await
            {
                tracing::warn!(error = %err, "updating a registration notice failed");
            }
        }
        let who = decided
            .display_name
            .or(decided.email)
            .unwrap_or_else(|| decided.id.to_string());
        Ok(format!("{done}: {who}"))
    }
}

impl Bridge {
    /// Replaces a question's text (and its buttons) with its outcome.
    async fn settle_question(&self, query: &CallbackQuery, text: &str) {
        let Some(message) = &query.message else {
            return;
        };
        let params =
            json!({ "chat_id": message.chat.id, "message_id": message.message_id, "text": text });
        if let Err(err) = self
            .api
            .call_retrying::<serde_json::Value>("editMessageText", &params)
            .await
        {
            tracing::warn!(error = %err, "settling a question failed");
        }
    }
}

impl Ctx<'_> {
    fn state(&self) -> &crate::state::AppState {
        &self.bridge.state
    }

    /// The command id of this update's `what`.
    fn command_id(&self, what: &str) -> CommandId {
        CommandId(Uuid::new_v5(
            &Uuid::NAMESPACE_URL,
            format!("telegram:{}:{}:{what}", self.bridge.bot_id, self.update_id).as_bytes(),
        ))
    }

    async fn registered(&self) -> Result<AuthUser, Said> {
        self.bridge
            .user_of(self.from.id)
            .await?
            .ok_or_else(|| Said("You are not registered yet: send /start.".into()))
    }

    async fn approved(&self) -> Result<ApprovedUser, Said> {
        let caller = self.registered().await?;
        Ok(access::approved(self.state(), caller).await?)
    }

    /// An approved user about to change something: the per-user write limit applies.
    async fn writer(&self) -> Result<ApprovedUser, Said> {
        let caller = self.approved().await?;
        limits::user_write(self.state(), caller.id).await?;
        Ok(caller)
    }

    /// Where the caller is in Telegram (this chat from now on).
    async fn current(&self, user: UserId) -> Result<Current, Said> {
        let mut current = self
            .bridge
            .store
            .current(user)
            .await
            .map_err(|err| Said(describe(&ApiError::internal(err))))?
            .unwrap_or_default();
        // Only a private chat receives the user's conversation from other clients: a group's
        // other members must not.
        if self.chat == self.from.id {
            current.chat_id = self.chat;
        }
        Ok(current)
    }

    async fn remember(&self, user: UserId, current: &Current) -> Result<(), Said> {
        self.bridge
            .store
            .set_current(user, current)
            .await
            .map_err(|err| Said(describe(&ApiError::internal(err))))
    }

    /// The caller's current agent: the one they chose, else their oldest, else a new one (a
    /// user's first message needs no setup step).
    async fn agent(&self, caller: &ApprovedUser, current: &mut Current) -> Result<AgentId, Said> {
        self.agent_or_new(caller, current, false).await
    }

    /// [`Self::agent`], made when the caller has none and `create` says so (a message or a
    /// file needs one; a question about it does not).
    async fn agent_or_new(
        &self,
        caller: &ApprovedUser,
        current: &mut Current,
        create: bool,
    ) -> Result<AgentId, Said> {
        if let Some(id) = current.agent_id
            && views::agent(&self.state().db, caller.id, id).await.is_ok()
        {
            return Ok(id);
        }
        let agents = views::agents(&self.state().db, caller.id).await?;
        let id = match agents.first() {
            Some(agent) => AgentId(agent.id),
            None if !create => {
                return Err(Said(
                    "You have no agent yet: send me a message and I set one up.".into(),
                ));
            }
            None => {
                let new = NewAgent {
                    name: FIRST_AGENT_NAME.into(),
                    system_prompt: None,
                    model: None,
                    runtime: RuntimeKind::default(),
                    backend: Backend::default(),
                    host: None,
                };
                agents::create(self.state(), caller, new, self.command_id("first-agent")).await?
            }
        };
        current.agent_id = Some(id);
        current.conversation_id = None;
        Ok(id)
    }

    /// Waits while `agent` is being deployed (a message to an agent still deploying would
    /// fail), saying so once; its state as it settled.
    async fn deployed(&self, caller: &ApprovedUser, agent: AgentId) -> Result<String, Said> {
        let deadline = tokio::time::Instant::now() + DEPLOY_WAIT;
        let mut told = false;
        loop {
            let view = views::agent(&self.state().db, caller.id, agent).await?;
            if !matches!(view.status.as_str(), "pending" | "allocating" | "deploying") {
                return Ok(view.status);
            }
            if !told {
                self.bridge
                    .say(
                        self.chat,
                        "🛠 Your agent is being set up: the answer follows when it is ready.",
                    )
                    .await;
                told = true;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Said("⚠️ Your agent is taking long to start: try again in a minute (/status shows how far it got).".into()));
            }
            tokio::select! {
                _ = tokio::time::sleep(DEPLOY_POLL) => {}
                _ = self.bridge.shutdown.cancelled() => return Err(Said("⚠️ The bot is restarting: send your message again.".into())),
            }
        }
    }

    async fn command(&self, line: &str) -> Outcome {
        let (name, args) = line
            .split_once(char::is_whitespace)
            .map(|(name, args)| (name, args.trim()))
            .unwrap_or((line, ""));
        // `/cmd@this_bot` in groups.
        let name = name
            .split('@')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match name.as_str() {
            "start" => self.start(args).await,
            "myid" => reply(format!("Your Telegram id: {}", self.from.id)),
            "help" => reply(HELP),
            "new" => self.new_session().await,
            "sessions" => self.sessions().await,
            "session" => self.switch_session(args).await,
            "history" => self.history(args).await,
            "cancel" => self.cancel().await,
            "status" => self.status().await,
            "agents" => self.agents().await,
            "agent" => self.switch_agent(args).await,
            "stop" => self.lifecycle(Lifecycle::Stop).await,
            "restart" => self.lifecycle(Lifecycle::Restart).await,
            "shell" => self.shell(args).await,
            "get" => self.get(args).await,
            "setkey" => self.set_key(args).await,
            "model" => self.model(args).await,
            "usage" => self.usage().await,
            other => Err(Said(format!("Unknown command /{other}.\n\n{HELP}"))),
        }
    }

    async fn start(&self, code: &str) -> Outcome {
        let state = self.state();
        let name = Some(warren_domain::text::DISPLAY_NAME.fit(&self.from.display_name()))
            .filter(|name| !name.is_empty());
        if !code.is_empty() {
            return self.offer_link(code).await;
        }
        let known = self.bridge.user_of(self.from.id).await?.is_some();
        let signed = identity::sign_in_by_telegram(state, self.from.id, name).await?;
        let current = self.current(signed.user_id).await?;
        self.remember(signed.user_id, &current).await?;
        let caller = access::vouched(state, signed.user_id).await?;
        let caller_status = caller.user.status;
        let text = if signed.became_admin {
            "👑 Welcome! You are this platform's admin: registrations come to you here with Approve / Reject buttons. Send me a message to talk to your agent."
        } else if access::approved(state, caller).await.is_ok() {
            if known {
                "👋 Welcome back! Send me a message to talk to your agent."
            } else {
                "✅ Welcome! Send me a message to talk to your agent: I set it up on your first message."
            }
        } else if known && caller_status != UserStatus::Pending {
            return reply(format!(
                "Your account is {caller_status}: an admin has to approve it again."
            ));
        } else {
            "✅ Registered! Your request has been sent to an admin for approval. You'll be notified once approved."
        };
        reply(text)
    }

    /// `/start CODE`: which account the code links to, with a button to confirm (a code sent by
    /// someone else would otherwise tie this Telegram account to theirs unasked).
    async fn offer_link(&self, code: &str) -> Outcome {
        if self.chat != self.from.id {
            return Err(Said("Send /start CODE to me in a private chat.".into()));
        }
        let code = code.trim();
        let user = identity::peek_link_code(self.state(), code, AuthKind::Telegram)
            .await
            .map_err(|_| Said(LINK_CODE_REFUSED.into()))?;
        let account = views::user(&self.state().db, user).await?;
        let who = account
            .email
            .or(account.display_name)
            .unwrap_or_else(|| account.id.to_string());
        let text = format!(
            "Link this Telegram account to the Warren account {who}? It then signs in as that \
             account here. Only do it if you made the code yourself."
        );
        let buttons = json!({ "inline_keyboard": [[
            { "text": "🔗 Link", "callback_data": format!("link:{code}") },
            { "text": "Cancel", "callback_data": "link-cancel" },
        ]]});
        let params = json!({ "chat_id": self.chat, "text": text, "reply_markup": buttons });
        self.bridge
            .api
            .call_retrying::<serde_json::Value>("sendMessage", &params)
            .await
            .map_err(|err| Said(format!("⚠️ Telegram refused the question: {err}")))?;
        Ok(None)
    }

    async fn chat_text(&self, text: &str) -> Outcome {
        let caller = self.writer().await?;
        let mut current = self.current(caller.id).await?;
        let agent = self.agent_or_new(&caller, &mut current, true).await?;
        self.deployed(&caller, agent).await?;
        let command_id = self.command_id("post");
        let message = |target| Message {
            target,
            text: text.to_owned(),
            mode: PostMode::Queue,
            client: Client {
                id: Some(format!("telegram:{}", self.chat)),
                kind: "telegram".into(),
            },
            command_id,
        };
        // Recorded first, so the answer finds its chat however fast it comes.
        let run = chat::run_of(command_id);
        let record = RunRecord {
            chat_id: self.chat,
            placeholder: None,
        };
        self.bridge
            .store
            .put_run(run, &record)
            .await
            .map_err(|err| Said(describe(&ApiError::internal(err))))?;
        let posted = match current.conversation_id {
            Some(conversation) => {
                match chat::post(
                    self.state(),
                    &caller,
                    message(Target::Both(conversation, agent)),
                )
                .await
                {
                    // The conversation is gone: the agent's latest, or a new one.
                    Err(ApiError::NotFound) => {
                        chat::post(self.state(), &caller, message(Target::Agent(agent))).await
                    }
                    other => other,
                }
            }
            None => chat::post(self.state(), &caller, message(Target::Agent(agent))).await,
        };
        let posted = match posted {
            Ok(posted) => posted,
            Err(err) => {
                let _ = self.bridge.store.remove_run(run).await;
                return Err(err.into());
            }
        };
        current.conversation_id = Some(posted.conversation_id);
        self.remember(caller.id, &current).await?;
        let typing = json!({ "chat_id": self.chat, "action": "typing" });
        let _ = self
            .bridge
            .api
            .call::<bool>("sendChatAction", &typing)
            .await;
        if posted.position > 0 {
            self.bridge
                .say(
                    self.chat,
                    &format!("⏳ Queued behind {} message(s).", posted.position),
                )
                .await;
        }
        tokio::spawn(super::stream::follow_run(
            self.bridge.clone(),
            self.chat,
            posted.conversation_id,
            posted.run_id,
            posted.seq,
        ));
        Ok(None)
    }

    /// The caller's current agent and conversation (the agent's latest if none was chosen).
    async fn conversation(
        &self,
        caller: &ApprovedUser,
    ) -> Result<(AgentId, Current, Option<ConversationId>), Said> {
        let mut current = self.current(caller.id).await?;
        let agent = self.agent(caller, &mut current).await?;
        let conversation = match current.conversation_id {
            Some(id) => Some(id),
            None => views::conversations(&self.state().db, caller.id, Some(agent), 1)
                .await?
                .first()
                .map(|c| ConversationId(c.id)),
        };
        Ok((agent, current, conversation))
    }

    async fn new_session(&self) -> Outcome {
        let caller = self.writer().await?;
        let mut current = self.current(caller.id).await?;
        let agent = self.agent_or_new(&caller, &mut current, true).await?;
        let started =
            chat::start(self.state(), &caller, agent, None, self.command_id("new")).await?;
        current.conversation_id = Some(started.conversation_id);
        self.remember(caller.id, &current).await?;
        reply("🆕 New session started: your next message begins it.")
    }

    async fn sessions(&self) -> Outcome {
        let caller = self.approved().await?;
        let (agent, current, _) = self.conversation(&caller).await?;
        let list = views::conversations(&self.state().db, caller.id, Some(agent), 20).await?;
        if list.is_empty() {
            return Err(Said("No sessions yet: send a message to start one.".into()));
        }
        let mut text = String::from("Your sessions (newest first):\n");
        for (n, conversation) in list.iter().enumerate() {
            let mark = if current.conversation_id == Some(ConversationId(conversation.id)) {
                " ← current"
            } else {
                ""
            };
            let title = if conversation.title.is_empty() {
                "(untitled)"
            } else {
                &conversation.title
            };
            text.push_str(&format!(
                "{}. {title} — {} message(s){mark}\n",
                n + 1,
                conversation.message_count
            ));
        }
        text.push_str("\n/session N switches.");
        reply(text)
    }

    async fn switch_session(&self, args: &str) -> Outcome {
        let caller = self.approved().await?;
        let n: usize = args
            .parse()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| Said("Usage: /session N (see /sessions).".into()))?;
        let (agent, mut current, _) = self.conversation(&caller).await?;
        let list = views::conversations(&self.state().db, caller.id, Some(agent), 20).await?;
        let chosen = list
            .get(n - 1)
            .ok_or_else(|| Said(format!("There is no session {n}: see /sessions.")))?;
        current.conversation_id = Some(ConversationId(chosen.id));
        self.remember(caller.id, &current).await?;
        reply(format!("Switched to session {n}."))
    }

    async fn history(&self, args: &str) -> Outcome {
        let caller = self.approved().await?;
        let count = if args.is_empty() {
            10
        } else {
            args.parse::<i64>()
                .ok()
                .filter(|n| (1..=50).contains(n))
                .ok_or_else(|| Said("Usage: /history [N], N from 1 to 50.".into()))?
        };
        let (_, _, conversation) = self.conversation(&caller).await?;
        let Some(conversation) = conversation else {
            return Err(Said("No messages yet.".into()));
        };
        let messages = views::messages(&self.state().db, conversation.0, None, count).await?;
        if messages.is_empty() {
            return Err(Said("No messages yet.".into()));
        }
        let mut text = String::new();
        for message in messages {
            let who = if message.role == "user" {
                "👤"
            } else {
                "🤖"
            };
            let mut body: String = message.text.chars().take(600).collect();
            if body.len() < message.text.len() {
                body.push('…');
            }
            text.push_str(&format!("{who} {body}\n\n"));
        }
        reply(text)
    }

    async fn cancel(&self) -> Outcome {
        let caller = self.writer().await?;
        let (_, _, conversation) = self.conversation(&caller).await?;
        let conversation = conversation.ok_or_else(|| Said("Nothing is running.".into()))?;
        chat::cancel(
            self.state(),
            &caller,
            conversation,
            None,
            self.command_id("cancel"),
        )
        .await?;
        reply("⏹ Cancelling.")
    }

    async fn status(&self) -> Outcome {
        let caller = self.registered().await?;
        let Ok(caller) = access::approved(self.state(), caller.clone()).await else {
            return Err(Said(format!(
                "Your account is {}. {PENDING}",
                caller.user.status
            )));
        };
        let mut current = self.current(caller.id).await?;
        let agent = self.agent(&caller, &mut current).await?;
        self.remember(caller.id, &current).await?;
        let view = views::agent(&self.state().db, caller.id, agent).await?;
        let mut text = format!("🤖 {} — {}\nmodel: {}", view.name, view.status, view.model);
        if let Some(step) = view.current_step.filter(|_| view.status == "deploying") {
            text.push_str(&format!("\nstep: {step}"));
        }
        if let Some(error) = view.last_error.filter(|_| view.status == "failed") {
            text.push_str(&format!("\nerror: {error}"));
        }
        if let Ok(Some(stats)) = self.state().sandbox_stats.get(agent).await {
            if let Some(started) = stats.started_at {
                let up = (chrono::Utc::now() - started).num_seconds().max(0);
                text.push_str(&format!("\nuptime: {}", human_duration(up)));
            }
            if let Some(cpu) = stats.cpu_percent {
                text.push_str(&format!("\nCPU: {cpu:.1}%"));
            }
            if let Some(memory) = stats.memory_bytes {
                text.push_str(&format!("\nRAM: {}", human_bytes(memory)));
            }
            if let Some(disk) = stats.disk_bytes {
                text.push_str(&format!("\ndisk: {}", human_bytes(disk)));
            }
        }
        reply(text)
    }

    async fn agents(&self) -> Outcome {
        let caller = self.approved().await?;
        let current = self.current(caller.id).await?;
        let list = views::agents(&self.state().db, caller.id).await?;
        if list.is_empty() {
            return Err(Said(
                "No agents yet: send a message and I set one up.".into(),
            ));
        }
        let mut text = String::from("Your agents:\n");
        for agent in list {
            let mark = if current.agent_id == Some(AgentId(agent.id)) {
                " ← current"
            } else {
                ""
            };
            text.push_str(&format!(
                "• {} — {} ({}){mark}\n",
                agent.name, agent.status, agent.model
            ));
        }
        text.push_str("\n/agent NAME switches.");
        reply(text)
    }

    async fn switch_agent(&self, name: &str) -> Outcome {
        let caller = self.approved().await?;
        if name.is_empty() {
            return Err(Said("Usage: /agent NAME (see /agents).".into()));
        }
        let list = views::agents(&self.state().db, caller.id).await?;
        let agent = list
            .iter()
            .find(|agent| agent.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| Said(format!("You have no agent named {name}: see /agents.")))?;
        let mut current = self.current(caller.id).await?;
        current.agent_id = Some(AgentId(agent.id));
        current.conversation_id = None;
        self.remember(caller.id, &current).await?;
        reply(format!("Switched to {}.", agent.name))
    }

    async fn lifecycle(&self, what: Lifecycle) -> Outcome {
        let caller = self.writer().await?;
        let mut current = self.current(caller.id).await?;
        let agent = self.agent(&caller, &mut current).await?;
        agents::lifecycle(
            self.state(),
            &caller,
            agent,
            what,
            self.command_id("lifecycle"),
        )
        .await?;
        reply(match what {
            Lifecycle::Stop => "⏹ Stopping your agent (its workspace is kept).",
            _ => "🔄 Restarting your agent.",
        })
    }

    async fn shell(&self, command: &str) -> Outcome {
        if command.is_empty() {
            return Err(Said("Usage: /shell COMMAND".into()));
        }
        let caller = self.writer().await?;
        let mut current = self.current(caller.id).await?;
        let agent = self.agent(&caller, &mut current).await?;
        self.deployed(&caller, agent).await?;
        let request = ExecRequest {
            command: command.to_owned(),
            timeout_ms: None,
            cwd: None,
        };
        let mut run = exec::exec(
            self.state(),
            &caller,
            agent,
            request,
            self.command_id("shell"),
        )
        .await?;
        let mut output = String::new();
        let mut ending = String::from("no exit status");
        let deadline = tokio::time::Instant::now() + SHELL_DEADLINE;
        while let Ok(Some(frame)) = tokio::time::timeout_at(deadline, run.frames.recv()).await {
            match frame {
                ExecFrame::Stdout { data } | ExecFrame::Stderr { data } => {
                    if output.len() < SHELL_OUTPUT_MAX {
                        output.push_str(&data);
                    }
                }
                ExecFrame::Exit {
                    code,
                    signal,
                    timed_out,
                    truncated,
                } => {
                    ending = match (code, signal) {
                        (Some(code), _) => format!("exit {code}"),
                        (None, Some(signal)) => format!("killed by signal {signal}"),
                        _ => "no exit status".into(),
                    };
                    if timed_out {
                        ending.push_str(", timed out");
                    }
                    if truncated {
                        ending.push_str(", output truncated");
                    }
                    break;
                }
                ExecFrame::Error { message, .. } => {
                    ending = message.to_owned();
                    break;
                }
                ExecFrame::Keepalive => {}
            }
        }
        if format::units(&escape_code(&output)) > SHELL_INLINE_MAX {
            self.bridge
                .api
                .send_document(self.chat, "output.txt", output.into_bytes(), Some(&ending))
                .await
                .map_err(|err| Said(format!("⚠️ Telegram refused the output: {err}")))?;
            return Ok(None);
        }
        let body = if output.trim().is_empty() {
            "(no output)".to_owned()
        } else {
            output
        };
        let text = format!(
            "```\n{}\n```\n{}",
            escape_code(body.trim_end()),
            escape(&ending)
        );
        self.bridge
            .say_markdown(self.chat, &[text])
            .await
            .map_err(|err| Said(format!("⚠️ Telegram refused the output: {err}")))?;
        Ok(None)
    }

    async fn get(&self, path: &str) -> Outcome {
        if path.is_empty() {
            return Err(Said(
                "Usage: /get PATH (a path in your agent's workspace)".into(),
            ));
        }
        let caller = self.approved().await?;
        let mut current = self.current(caller.id).await?;
        let agent = self.agent(&caller, &mut current).await?;
        self.deployed(&caller, agent).await?;
        let max = self
            .state()
            .settings
            .upload_max_bytes
            .min(TELEGRAM_UPLOAD_MAX);
        let file = download::download(
            self.state(),
            &caller,
            agent,
            path.trim_start_matches('/'),
            max as usize,
        )
        .await?;
        let name = file.path.rsplit('/').next().unwrap_or("file").to_owned();
        self.bridge
            .api
            .send_document(self.chat, &name, file.bytes.to_vec(), Some(&file.path))
            .await
            .map_err(|err| Said(format!("⚠️ Telegram refused the file: {err}")))?;
        Ok(None)
    }

    async fn document(&self, document: &Document) -> Outcome {
        let caller = self.writer().await?;
        let max = self
            .state()
            .settings
            .upload_max_bytes
            .min(TELEGRAM_DOWNLOAD_MAX);
        if document.file_size.is_some_and(|size| size > max) {
            return Err(Said(format!(
                "⚠️ That file is too big: I take files up to {}.",
                human_bytes(max)
            )));
        }
        let mut current = self.current(caller.id).await?;
        let agent = self.agent_or_new(&caller, &mut current, true).await?;
        self.deployed(&caller, agent).await?;
        let bytes = self
            .bridge
            .api
            .download(&document.file_id, max)
            .await
            .map_err(|err| match err {
                super::api::TgError::Refused { code: 413, .. } => Said(format!(
                    "⚠️ That file is too big: I take files up to {}.",
                    human_bytes(max)
                )),
                other => Said(format!("⚠️ Telegram did not give me the file: {other}")),
            })?;
        let name = file_name(document.file_name.as_deref());
        let size = bytes.len() as u64;
        let uploaded = upload::upload(
            self.state(),
            &caller,
            agent,
            upload::Upload {
                path: name,
                body: Body::from(bytes),
                declared_len: Some(size),
            },
            self.command_id("upload"),
        )
        .await?;
        reply(format!(
            "📥 Saved {} ({}) in your agent's workspace.",
            uploaded.path,
            human_bytes(uploaded.size)
        ))
    }

    async fn set_key(&self, args: &str) -> Outcome {
        // The key must not stay in the chat, whatever happens next.
        let delete = json!({ "chat_id": self.chat, "message_id": self.message_id });
        let deleted = match self
            .bridge
            .api
            .call_retrying::<bool>("deleteMessage", &delete)
            .await
        {
            Ok(_) => "I deleted your message so the key does not stay in this chat.",
            Err(err) => {
                tracing::warn!(error = %err, "deleting a /setkey message failed");
                "⚠️ I could not delete your message: delete it yourself, and consider the key exposed."
            }
        };
        if self.chat != self.from.id {
            return Err(Said(format!(
                "Keys are set in a private chat with me, never in a group. {deleted}"
            )));
        }
        let mut words = args.split_whitespace();
        let (Some(provider), Some(key)) = (words.next(), words.next()) else {
            return Err(Said(format!(
                "Usage: /setkey PROVIDER KEY [BASE_URL] (anthropic, openai, openrouter or custom). {deleted}"
            )));
        };
        // Never echoed: the first word may be the key itself, given in the wrong order.
        let provider: Provider = provider.to_ascii_lowercase().parse().map_err(|_| {
            Said(format!(
                "⚠️ Unknown provider: use /setkey PROVIDER KEY with anthropic, openai, openrouter or custom. {deleted}"
            ))
        })?;
        let caller = self.writer().await?;
        let stored = keys::add(
            self.state(),
            &caller,
            keys::NewKey {
                provider,
                api_key: key.to_owned(),
                base_url: words.next().map(str::to_owned),
                label: None,
            },
        )
        .await?;
        reply(format!(
            "🔑 Your {} key ({}) is stored, encrypted. {deleted}",
            stored.provider, stored.fingerprint
        ))
    }

    async fn model(&self, model: &str) -> Outcome {
        if model.is_empty() {
            return Err(Said("Usage: /model NAME".into()));
        }
        let caller = self.writer().await?;
        let mut current = self.current(caller.id).await?;
        let agent = self.agent(&caller, &mut current).await?;
        let change = agents::Change {
            model: Some(model.to_owned()),
            ..Default::default()
        };
        agents::configure(
            self.state(),
            &caller,
            agent,
            change,
            self.command_id("model"),
        )
        .await?;
        reply(format!("🧠 Your agent now uses {model}."))
    }

    async fn usage(&self) -> Outcome {
        let caller = self.registered().await?;
        let today = usage::summary(self.state(), &caller).await?;
        let limit = |limit: u64| {
            if limit == 0 {
                "∞".to_owned()
            } else {
                limit.to_string()
            }
        };
        reply(format!(
            "Today ({}, tier {}):\nmessages: {} / {}\ntokens: {} / {}\nagents: {} / {}",
            today.day,
            today.tier,
            today.messages.used,
            limit(today.messages.limit),
            today.tokens.used,
            limit(today.tokens.limit),
            today.agents.used,
            limit(today.agents.limit),
        ))
    }
}

/// A sent document's name as a workspace path: its last segment, without characters a path
/// may not hold.
fn file_name(name: Option<&str>) -> String {
    let name = name
        .unwrap_or("upload.bin")
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default();
    let clean: String = name.chars().filter(|c| !c.is_control()).collect();
    match clean.trim() {
        "" | "." | ".." => "upload.bin".into(),
        clean => clean.to_owned(),
    }
}

/// `seconds` as `3d 4h`, `5h 2m`, `7m 3s`.
fn human_duration(seconds: i64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// `bytes` as `512 B`, `3.1 KB`, `12.0 MB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}
