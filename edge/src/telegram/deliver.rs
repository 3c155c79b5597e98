//! What must reach Telegram however long it is down, read from the log by durable consumers
//! (shared by the replicas; a delivery is acked only once Telegram took it, and Telegram's
//! `429 retry_after` and outages are waited out, so nothing is lost):
//!
//! - `telegram-deliver` on the conversations' facts: a run's final answer (MarkdownV2, split at
//!   4096 characters, its tool calls named first), failure or cancellation — to the chat that
//!   asked it, or to the user's chat if the conversation is their current one there; and what
//!   the user typed in another client (web, CLI) in their current conversation, so one
//!   conversation reads the same everywhere.
//! - `telegram-users` on the users' facts: a registration waiting for approval, to every admin
//!   with a linked Telegram account, with Approve / Reject buttons; and the decision, to the
//!   user.

use super::Bridge;
use super::api::TgError;
use super::format;
use super::store::Current;
use crate::views;
use serde_json::json;
use std::time::Duration;
use warren_commands::codec;
use warren_commands::topology::{CONVERSATIONS, USERS};
use warren_domain::conversation::{ConversationEvent, ToolCall};
use warren_domain::ids::{ConversationId, RunId, UserId};
use warren_domain::user::{AuthKind, UserEvent, UserStatus};
use warren_workers::consume::{Durable, Handled, consume};
use warren_workers::supervise::supervise;

/// How long a delivery may take before another replica gets it.
const ACK_WAIT: Duration = Duration::from_secs(300);

/// Runs both consumers until shutdown.
pub async fn run(bridge: &Bridge) {
    let js = bridge.state.commands.jetstream();
    let conversations = Durable {
        stream: CONVERSATIONS,
        name: "telegram-deliver",
        filter: "conv.*.ev",
        ack_wait: ACK_WAIT,
    };
    let users = Durable {
        stream: USERS,
        name: "telegram-users",
        filter: "user.*",
        ack_wait: ACK_WAIT,
    };
    let conversations = supervise("telegram-deliver", bridge.shutdown.clone(), || {
        consume(js, &conversations, &bridge.shutdown, |message| async move {
            match codec::decode::<ConversationEvent>(&message.payload) {
                Ok(envelopes) => {
                    for envelope in envelopes {
                        if let Err(handled) = bridge.deliver(envelope.event).await {
                            return handled;
                        }
                    }
                    Handled::Done
                }
                Err(err) => Handled::Poison(err.to_string()),
            }
        })
    });
    let users = supervise("telegram-users", bridge.shutdown.clone(), || {
        consume(js, &users, &bridge.shutdown, |message| async move {
            match codec::decode::<UserEvent>(&message.payload) {
                Ok(envelopes) => {
                    for envelope in envelopes {
                        if let Err(handled) = bridge.tell(envelope.event).await {
                            return handled;
                        }
                    }
                    Handled::Done
                }
                Err(err) => Handled::Poison(err.to_string()),
            }
        })
    });
    tokio::join!(conversations, users);
}

/// A delivery that must be tried again.
fn retry(reason: impl std::fmt::Display) -> Handled {
    Handled::Retry {
        reason: reason.to_string(),
        after: Duration::from_secs(2),
    }
}

/// Telegram's answer to a delivery: refusals (a user who blocked the bot) are logged and
/// dropped; only shutdown leaves it for another try.
fn sent(outcome: Result<(), TgError>) -> Result<(), Handled> {
    match outcome {
        Ok(()) => Ok(()),
        Err(TgError::Closing) => Err(retry("shutting down")),
        Err(err) => {
            tracing::warn!(error = %err, "telegram refused a delivery; dropped");
            Ok(())
        }
    }
}

impl Bridge {
    /// The chat a conversation's output goes to: the one that asked the run, else the user's
    /// chat if this is their current conversation there.
    async fn chat_for(
        &self,
        run: Option<RunId>,
        user: Option<UserId>,
        conversation: ConversationId,
    ) -> Result<Option<(i64, Option<i64>)>, Handled> {
        if let Some(run) = run
            && let Some(record) = self.store.run(run).await.map_err(retry)?
        {
            return Ok(Some((record.chat_id, record.placeholder)));
        }
        let Some(user) = user else {
            return Ok(None);
        };
        Ok(self
            .store
            .current(user)
            .await
            .map_err(retry)?
            .filter(|current| current.chat_id != 0 && current.conversation_id == Some(conversation))
            .map(|current| (current.chat_id, None)))
    }

    async fn deliver(&self, event: ConversationEvent) -> Result<(), Handled> {
        match event {
            ConversationEvent::MessagePosted {
                conversation_id,
                user_id,
                text,
                client_kind,
                ..
            } if client_kind.as_deref() != Some("telegram") => {
                if let Some((chat, _)) = self.chat_for(None, Some(user_id), conversation_id).await?
                {
                    let from = match client_kind.as_deref() {
                        Some("cli") => "CLI",
                        Some("web") | None => "web",
                        Some(other) => other,
                    };
                    self.say(chat, &format!("💬 You ({from}): {text}")).await;
                }
            }
            ConversationEvent::RunCompleted {
                conversation_id,
                run_id,
                user_id,
                text,
                tool_calls,
                ..
            } => {
                if let Some((chat, placeholder)) = self
                    .chat_for(Some(run_id), Some(user_id), conversation_id)
                    .await?
                {
                    let parts = format::render(&with_tools(&text, &tool_calls));
                    sent(self.answer(chat, placeholder, &parts, &text).await)?;
                }
                self.store.remove_run(run_id).await.map_err(retry)?;
            }
            ConversationEvent::RunFailed {
                conversation_id,
                run_id,
                message,
                ..
            } => {
                if let Some((chat, placeholder)) =
                    self.chat_for(Some(run_id), None, conversation_id).await?
                {
                    let text = format!("⚠️ The answer failed: {message}");
                    sent(self.replace(chat, placeholder, &text).await)?;
                }
                self.store.remove_run(run_id).await.map_err(retry)?;
            }
            ConversationEvent::RunCancelled {
                conversation_id,
                run_id,
                ..
            } => {
                if let Some((chat, placeholder)) =
                    self.chat_for(Some(run_id), None, conversation_id).await?
                {
                    sent(self.replace(chat, placeholder, "⏹ Cancelled.").await)?;
                }
                self.store.remove_run(run_id).await.map_err(retry)?;
            }
            ConversationEvent::AgentMessagePosted {
                conversation_id,
                user_id,
                text,
                ..
            } => {
                if let Some((chat, _)) = self.chat_for(None, Some(user_id), conversation_id).await?
                {
                    let parts = format::render(&text);
                    sent(self.answer(chat, None, &parts, &text).await)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Sends an answer's parts, the first edited into the draft message if there is one; as
    /// plain text if Telegram refuses the markup.
    async fn answer(
        &self,
        chat: i64,
        placeholder: Option<i64>,
        parts: &[String],
        plain: &str,
    ) -> Result<(), TgError> {
        let mut rest = parts;
        if let (Some(message_id), Some(first)) = (placeholder, parts.first()) {
            let params = json!({
                "chat_id": chat,
                "message_id": message_id,
                "text": first,
                "parse_mode": "MarkdownV2",
            });
            match self
                .api
                .call_retrying::<serde_json::Value>("editMessageText", &params)
                .await
            {
                Ok(_) => rest = &parts[1..],
                Err(TgError::Closing) => return Err(TgError::Closing),
                // The draft message is gone: send the answer anew.
                Err(err) => {
                    tracing::info!(error = %err, "editing the draft into the answer failed")
                }
            }
        }
        match self.say_markdown(chat, rest).await {
            // Nothing of it went out: the whole answer as plain text instead.
            Err(err @ TgError::Refused { code: 400, .. }) if rest.len() == parts.len() => {
                tracing::error!(error = %err, "telegram refused an answer's markup; sent as plain text");
                self.say(chat, plain).await;
                Ok(())
            }
            other => other,
        }
    }

    /// Replaces the draft message with `text`, or sends it.
    async fn replace(
        &self,
        chat: i64,
        placeholder: Option<i64>,
        text: &str,
    ) -> Result<(), TgError> {
        if let Some(message_id) = placeholder {
            let params = json!({ "chat_id": chat, "message_id": message_id, "text": text });
            if self
                .api
                .call_retrying::<serde_json::Value>("editMessageText", &params)
                .await
                .is_ok()
            {
                return Ok(());
            }
        }
        self.say(chat, text).await;
        Ok(())
    }

    /// Tells admins of a registration, and users of decisions about them.
    async fn tell(&self, event: UserEvent) -> Result<(), Handled> {
        match event {
            UserEvent::UserRegistered {
                user_id,
                email,
                display_name,
                auth,
                status: UserStatus::Pending,
                ..
            } => {
                let mut text = String::from("🆕 New user registration:");
                text.push_str(&format!(
                    "\nName: {}",
                    display_name.as_deref().unwrap_or("—")
                ));
                if let Some(email) = email {
                    text.push_str(&format!("\nEmail: {email}"));
                }
                if auth.kind == AuthKind::Telegram {
                    text.push_str(&format!("\nTelegram id: {}", auth.external_id));
                }
                text.push_str(&format!("\nUser id: {user_id}"));
                let buttons = json!({ "inline_keyboard": [[
                    { "text": "✅ Approve", "callback_data": format!("approve:{}", user_id.0) },
                    { "text": "❌ Reject", "callback_data": format!("reject:{}", user_id.0) },
                ]]});
                let admins = views::admin_ids(&self.state.db).await.map_err(retry)?;
                for admin in admins {
                    for chat in self.telegram_ids(admin).await? {
                        let params =
                            json!({ "chat_id": chat, "text": text, "reply_markup": buttons });
                        let outcome = self
                            .api
                            .call_retrying::<serde_json::Value>("sendMessage", &params)
                            .await
                            .map(|_| ());
                        sent(outcome)?;
                    }
                }
            }
            UserEvent::AuthMethodUnlinked {
                user_id,
                kind: AuthKind::Telegram,
                ..
            } => {
                // The chat that was theirs gets nothing more of their conversations.
                let still = self.telegram_ids(user_id).await?;
                let current = self.store.current(user_id).await.map_err(retry)?;
                if let Some(current) = current.filter(|c| !still.contains(&c.chat_id)) {
                    self.store
                        .set_current(
                            user_id,
                            &Current {
                                chat_id: 0,
                                ..current
                            },
                        )
                        .await
                        .map_err(retry)?;
                }
            }
            UserEvent::UserApproved { user_id, .. } => {
                self.tell_user(
                    user_id,
                    "🎉 You've been approved! Send me a message to talk to your agent.",
                )
                .await?;
            }
            UserEvent::UserRejected { user_id, reason } => {
                let reason = reason.map(|r| format!(" Reason: {r}")).unwrap_or_default();
                self.tell_user(user_id, &format!("Your registration was declined.{reason}"))
                    .await?;
            }
            UserEvent::UserAccessRevoked {
                user_id, reason, ..
            } => {
                let reason = reason.map(|r| format!(" Reason: {r}")).unwrap_or_default();
                self.tell_user(user_id, &format!("Your access was revoked.{reason}"))
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }

    async fn tell_user(&self, user: UserId, text: &str) -> Result<(), Handled> {
        for chat in self.telegram_ids(user).await? {
            self.say(chat, text).await;
        }
        Ok(())
    }

    /// The Telegram accounts linked to `user` (their private chats have the same ids).
    async fn telegram_ids(&self, user: UserId) -> Result<Vec<i64>, Handled> {
        let (found, _) = self
            .state
            .commands
            .users
            .load(&user.to_string())
            .await
            .map_err(retry)?;
        Ok(found
            .auth_methods
            .iter()
            .filter(|auth| auth.kind == AuthKind::Telegram)
            .filter_map(|auth| auth.external_id.parse().ok())
            .collect())
    }
}

/// The answer with the tools it used named first (`🔧 shell ×2, read_file`).
fn with_tools(text: &str, calls: &[ToolCall]) -> String {
    if calls.is_empty() {
        return text.to_owned();
    }
    let mut counted: Vec<(&str, usize)> = Vec::new();
    for call in calls {
        match counted.iter_mut().find(|(name, _)| *name == call.name) {
            Some((_, n)) => *n += 1,
            None => counted.push((&call.name, 1)),
        }
    }
    let names: Vec<String> = counted
        .into_iter()
        .map(|(name, n)| {
            if n > 1 {
                format!("{name} ×{n}")
            } else {
                name.to_owned()
            }
        })
        .collect();
    format!("🔧 {}\n\n{text}", names.join(", "))
}
