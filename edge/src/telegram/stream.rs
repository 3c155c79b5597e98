//! A run asked from Telegram, shown while it streams: the answer so far (its newest 4096
//! characters) and the tools it calls, as a draft (`sendMessageDraft`, private chats) at most
//! once a second. Where drafts are refused (groups, or a Bot API without them), one message
//! is sent and edited in place instead, at most once a second; the final answer is then edited
//! into it by [`super::deliver`].
//!
//! This is the live part only: it follows the conversation's log as a gateway client does, and
//! if Telegram is unreachable meanwhile the drafts are simply skipped. The final answer is
//! delivered from the log by [`super::deliver`], which nothing loses. Once that answer is out
//! (the run's record is gone), no draft or edit is sent any more. Files the agent wrote are
//! offered at the end (`/get PATH`).

use super::Bridge;
use super::api::TgError;
use super::format;
use super::store::RunRecord;
use crate::follow::{self, Follow};
use crate::frame::Frame;
use serde_json::json;
use std::time::{Duration, Instant};
use warren_domain::ids::{ConversationId, RunId};

/// The least time between two drafts (or edits) of one answer.
const DRAFT_EVERY: Duration = Duration::from_secs(1);

/// How the answer so far is shown.
enum Mode {
    /// `sendMessageDraft`.
    Draft,
    /// A message edited in place.
    Edit(Option<i64>),
}

/// The answer so far.
struct Draft {
    chat: i64,
    run: RunId,
    draft_id: i64,
    text: String,
    tools: Vec<String>,
    shown: String,
    mode: Mode,
    next: Instant,
}

/// Follows `run` (committed at `seq`) and shows it in `chat` until it ends.
pub async fn follow_run(
    bridge: Bridge,
    chat: i64,
    conversation: ConversationId,
    run: RunId,
    seq: u64,
) {
    let follow = Follow {
        conversation_id: conversation,
        from_seq: seq + 1,
        run: Some(run),
        opening: Vec::new(),
        keepalive: None,
    };
    let mut follower = match follow::follow(&bridge.state.hub, follow).await {
        Ok(follower) => follower,
        Err(err) => {
            tracing::warn!(%run, error = %err, "following a run for telegram failed");
            return;
        }
    };
    let mut draft = Draft {
        chat,
        run,
        // Any non-zero id naming this answer.
        draft_id: (run.0.as_u64_pair().0 & 0x7fff_ffff).max(1) as i64,
        text: String::new(),
        tools: Vec::new(),
        shown: String::new(),
        mode: if chat > 0 {
            Mode::Draft
        } else {
            Mode::Edit(None)
        },
        next: Instant::now(),
    };
    let mut files = Vec::new();
    loop {
        let item = tokio::select! {
            item = follower.next() => item,
            _ = bridge.shutdown.cancelled() => return,
        };
        let Some(item) = item else {
            break;
        };
        match item.frame() {
            Frame::Text { content, .. } => draft.text.push_str(content),
            Frame::ToolUse { name, .. } => draft.tools.push(name.clone()),
            Frame::File { path, size, .. } => files.push((path.clone(), *size)),
            Frame::Done { .. }
            | Frame::Failed { .. }
            | Frame::Cancelled { .. }
            | Frame::End { .. } => break,
            _ => continue,
        }
        draft.show(&bridge).await;
    }
    for (path, size) in files {
        let size = size.map(|s| format!(" ({s} bytes)")).unwrap_or_default();
        bridge
            .say(
                chat,
                &format!("📎 Your agent wrote {path}{size}: /get {path}"),
            )
            .await;
    }
}

impl Draft {
    /// What the draft shows now.
    fn render(&self) -> String {
        let mut shown = String::new();
        if !self.tools.is_empty() {
            shown.push_str(&format!("🔧 {}\n\n", self.tools.join(", ")));
        }
        shown.push_str(&self.text);
        format::tail(shown.trim())
    }

    /// Shows the answer so far, if a second has passed and it changed.
    async fn show(&mut self, bridge: &Bridge) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        let text = self.render();
        if text.is_empty() || text == self.shown {
            return;
        }
        // The final answer is out: nothing more to show.
        let record = match bridge.store.run(self.run).await {
            Ok(Some(record)) => record,
            _ => return,
        };
        self.next = now + DRAFT_EVERY;
        let sent = match self.mode {
            Mode::Draft => {
                let params =
                    json!({ "chat_id": self.chat, "draft_id": self.draft_id, "text": text });
                let sent = bridge
                    .api
                    .call::<bool>("sendMessageDraft", &params)
                    .await
                    .map(|_| ());
                if let Err(err @ TgError::Refused { .. }) = &sent {
                    tracing::info!(error = %err, "drafts refused: editing a message instead");
                    self.mode = Mode::Edit(None);
                    return Box::pin(self.show_now(bridge, record, text)).await;
                }
                sent
            }
            Mode::Edit(_) => return self.show_now(bridge, record, text).await,
        };
        self.settle(sent, text);
    }

    /// Sends or edits the message showing the answer so far.
    async fn show_now(&mut self, bridge: &Bridge, record: RunRecord, text: String) {
        let sent = match self.mode {
            Mode::Edit(Some(message_id)) => {
                let params =
                    json!({ "chat_id": self.chat, "message_id": message_id, "text": text });
                match bridge
                    .api
                    .call::<serde_json::Value>("editMessageText", &params)
                    .await
                {
                    Err(err) if err.says("not modified") => Ok(()),
                    other => other.map(|_| ()),
                }
            }
            _ => {
                let params = json!({ "chat_id": self.chat, "text": text });
                match bridge
                    .api
                    .call::<super::types::Message>("sendMessage", &params)
                    .await
                {
                    Ok(message) => {
                        self.mode = Mode::Edit(Some(message.message_id));
                        let record = RunRecord {
                            placeholder: Some(message.message_id),
                            ..record
                        };
                        match bridge.store.update_run(self.run, &record).await {
                            Ok(true) => {}
                            // The answer went out meanwhile: the draft message goes.
                            Ok(false) => {
                                let params = json!({ "chat_id": self.chat, "message_id": message.message_id });
                                let _ = bridge.api.call::<bool>("deleteMessage", &params).await;
                            }
                            Err(err) => {
                                tracing::warn!(error = %err, "recording a draft message failed")
                            }
                        }
                        Ok(())
                    }
                    Err(err) => Err(err),
                }
            }
        };
        self.settle(sent, text);
    }

    fn settle(&mut self, sent: Result<(), TgError>, text: String) {
        match sent {
            Ok(()) => self.shown = text,
            Err(TgError::RetryAfter(wait)) => self.next = Instant::now() + wait,
            // Best effort: the final answer comes from the log anyway.
            Err(err) => tracing::debug!(error = %err, "a draft was not shown"),
        }
    }
}
