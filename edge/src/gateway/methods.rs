//! What each gateway method and slash command does. Every answer is a `res` frame; a refusal
//! carries the same stable code the REST surface uses.

use super::protocol::{self, Req};
use super::{CONNECTIONS, Conn, STARTED, Session};
use crate::conversations::owned_conversation;
use crate::error::ApiError;
use crate::follow::{Follow, Item, Start, follow};
use crate::input::check_json;
use crate::{quota, views};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use uuid::Uuid;
use warren_commands::CommandMeta;
use warren_domain::Actor;
use warren_domain::conversation::{ConversationCommand, ConversationEvent, PostMode};
use warren_domain::ids::{AgentId, ConversationId, MessageId, RunId};

/// Messages `sessions.switch` answers with.
const RECENT_MESSAGES: i64 = 20;

/// A refusal: its stable code and what to tell the client.
struct Refusal(String, String);

impl From<ApiError> for Refusal {
    fn from(err: ApiError) -> Self {
        if let ApiError::Internal(source) = &err {
            tracing::error!(error = %source, "gateway request failed");
        }
        let body = err.body();
        Refusal(body.code, body.message)
    }
}

fn bad_params(message: &str) -> Refusal {
    Refusal("invalid_params".into(), message.into())
}

fn uuid_param(params: &Value, name: &str) -> Result<Option<Uuid>, Refusal> {
    match &params[name] {
        Value::Null => Ok(None),
        Value::String(s) => s
            .parse()
            .map(Some)
            .map_err(|_| bad_params(&format!("params.{name} must be a UUID"))),
        _ => Err(bad_params(&format!("params.{name} must be a UUID string"))),
    }
}

fn int_param(params: &Value, name: &str, default: i64, max: i64) -> Result<i64, Refusal> {
    match &params[name] {
        Value::Null => Ok(default),
        value => value
            .as_i64()
            .filter(|n| (0..=max).contains(n))
            .ok_or_else(|| bad_params(&format!("params.{name} must be from 0 to {max}"))),
    }
}

fn message_view(m: &views::MessageView) -> Value {
    json!({
        "id": m.id, "role": m.role, "content": m.text, "runId": m.run_id,
        "timestamp": m.created_at, "seq": m.seq,
    })
}

impl Conn {
    /// Answers one request.
    pub(super) async fn handle(&mut self, req: Req) -> Value {
        // Before any method runs: no string in the params may carry a control character.
        if let Err(refused) = check_json(&req.params, protocol::text_params(&req.method)) {
            return protocol::invalid_field(&req.id, &refused.field, refused.reason);
        }
        let outcome = match req.method.as_str() {
            "agent" => self.agent(&req.params).await,
            "agent.cancel" => self.cancel(&req.params).await,
            "sessions.list" => self.list(&req.params).await,
            "sessions.new" => self.new_session(&req.params).await,
            "sessions.switch" => self.switch(&req.params).await,
            "sessions.history" => self.history(&req.params).await,
            "status" => self.status(&req.params).await,
            "feed.subscribe" => self.subscribe().await,
            "feed.unsubscribe" => {
                self.feed = None;
                Ok(json!({"subscribed": false}))
            }
            "connect" => Err(Refusal(
                "already_connected".into(),
                "connect is the first frame only".into(),
            )),
            other => Err(Refusal(
                "unknown_method".into(),
                format!(
                    "unknown method `{other}`; supported: {}",
                    protocol::METHODS.join(", ")
                ),
            )),
        };
        match outcome {
            Ok(payload) => protocol::ok(&req.id, payload),
            Err(Refusal(code, message)) => protocol::fail(&req.id, &code, &message),
        }
    }

    /// `feed.subscribe`: `feed` events for every change to the user's agents and conversations.
    async fn subscribe(&mut self) -> Result<Value, Refusal> {
        if self.feed.is_none() {
            self.feed = Some(self.state.feed.subscribe(self.user.id).await?);
        }
        Ok(json!({"subscribed": true}))
    }

    fn meta(&self) -> CommandMeta {
        CommandMeta::new(Actor::User(self.user.id))
    }

    fn require_approved(&self) -> Result<(), Refusal> {
        if self.user.user.is_approved() {
            Ok(())
        } else {
            Err(Refusal(
                "not_approved".into(),
                "your account waits for an admin's approval".into(),
            ))
        }
    }

    /// The session named by `params.sessionId` (switching to it), else the current one.
    async fn session_for(&mut self, params: &Value) -> Result<Session, Refusal> {
        if let Some(id) = uuid_param(params, "sessionId")?
            && self.session.as_ref().is_none_or(|s| s.id.0 != id)
        {
            self.follow_session(id, None).await?;
        }
        self.session.clone().ok_or_else(|| {
            Refusal(
                "no_session".into(),
                "no session yet: call sessions.new with an agentId (or send one with agentId)"
                    .into(),
            )
        })
    }

    /// Makes `id` the current session and follows its log: after `after`, or from a snapshot.
    /// Returns the recent messages of the snapshot (empty when resuming).
    async fn follow_session(
        &mut self,
        id: Uuid,
        after: Option<u64>,
    ) -> Result<Vec<Value>, Refusal> {
        let conversation = owned_conversation(&self.state, self.user.id, id).await?;
        let (from_seq, opening, recent) = match Start::of(&self.state, id, after, RECENT_MESSAGES)
            .await?
        {
            Start::After(after) => (after + 1, vec![], vec![]),
            Start::Snapshot {
                checkpoint,
                messages,
                expired,
            } => {
                let recent: Vec<Value> = messages.iter().map(message_view).collect();
                let opening = match expired {
                    Some(_) => vec![Item::new(
                        Some(checkpoint),
                        json!({"type": "reset", "reason": "cursor_expired", "messages": recent}),
                    )],
                    None => vec![],
                };
                (checkpoint + 1, opening, recent)
            }
        };
        let follower = follow(
            &self.state.hub,
            Follow {
                conversation_id: ConversationId(id),
                from_seq,
                run: None,
                opening,
                keepalive: None,
            },
        )
        .await?;
        self.session = Some(Session {
            id: ConversationId(id),
            agent_id: conversation.agent_id,
        });
        self.follower = Some(follower);
        Ok(recent)
    }

    /// `agent {message, sessionId?, agentId?, mode?}`.
    async fn agent(&mut self, params: &Value) -> Result<Value, Refusal> {
        let message = params["message"]
            .as_str()
            .filter(|m| !m.trim().is_empty())
            .ok_or_else(|| bad_params("params.message is required"))?
            .to_owned();
        if message.trim_start().starts_with('/') {
            return self.command(message.trim()).await;
        }
        self.require_approved()?;
        if self.session.is_none()
            && params["sessionId"].is_null()
            && let Some(agent) = uuid_param(params, "agentId")?
        {
            self.start_session(AgentId(agent), None).await?;
        }
        let session = self.session_for(params).await?;
        let mode = match params["mode"].as_str() {
            None | Some("queue") => PostMode::Queue,
            Some("interrupt") => PostMode::Interrupt,
            Some(_) => return Err(bad_params("params.mode is queue or interrupt")),
        };
        quota::check_message_quota(&self.state.db, &self.state.settings.tiers, &self.user).await?;
        let run_id = RunId::new();
        let committed = self
            .state
            .commands
            .conversations
            .execute(
                &session.id.to_string(),
                ConversationCommand::PostMessage {
                    message_id: MessageId::new(),
                    run_id,
                    text: message,
                    client_id: Some(self.client_id.clone()),
                    client_kind: Some(self.client_type.clone()),
                    mode,
                },
                &self.meta(),
            )
            .await
            .map_err(ApiError::from)?;
        let position = committed.events.iter().find_map(|e| match e.event {
            ConversationEvent::RunQueued { position, .. } => Some(position),
            _ => None,
        });
        let status = if position.unwrap_or(0) > 0 {
            "queued"
        } else {
            "accepted"
        };
        Ok(json!({
            "runId": run_id, "sessionId": session.id, "status": status, "position": position,
            "seq": committed.sequence,
        }))
    }

    /// `agent.cancel {runId?}`: the given run, or the current session's running one.
    async fn cancel(&mut self, params: &Value) -> Result<Value, Refusal> {
        self.require_approved()?;
        let session = self.session_for(params).await?;
        let conversation = owned_conversation(&self.state, self.user.id, session.id.0).await?;
        let run_id = match uuid_param(params, "runId")? {
            Some(run) => RunId(run),
            None => conversation
                .runs
                .first()
                .map(|slot| slot.run_id)
                .ok_or_else(|| Refusal("run_not_active".into(), "no run is going on".into()))?,
        };
        self.state
            .commands
            .conversations
            .execute(
                &session.id.to_string(),
                ConversationCommand::RequestCancel { run_id },
                &self.meta(),
            )
            .await
            .map_err(ApiError::from)?;
        Ok(json!({"runId": run_id, "message": "Cancellation requested"}))
    }

    /// `sessions.list {limit?, offset?}`, most recently active first.
    async fn list(&mut self, params: &Value) -> Result<Value, Refusal> {
        let limit = int_param(params, "limit", 10, 200)?.max(1);
        let offset = int_param(params, "offset", 0, i64::MAX)?;
        let (page, total) =
            views::conversations_page(&self.state.db, self.user.id, limit, offset).await?;
        self.listed = page.iter().map(|c| ConversationId(c.id)).collect();
        let sessions: Vec<Value> = page
            .iter()
            .map(|c| {
                json!({
                    "id": c.id, "agentId": c.agent_id, "title": c.title,
                    "lastActivity": c.last_activity_at, "messageCount": c.message_count,
                    "activeRun": c.active_run_id,
                })
            })
            .collect();
        Ok(json!({"sessions": sessions, "total": total}))
    }

    async fn start_session(
        &mut self,
        agent: AgentId,
        title: Option<String>,
    ) -> Result<Value, Refusal> {
        self.require_approved()?;
        let (agent, _) = crate::agents::owned_agent_of(&self.state, self.user.id, agent.0).await?;
        let id = ConversationId::new();
        let committed = self
            .state
            .commands
            .conversations
            .execute(
                &id.to_string(),
                ConversationCommand::StartConversation {
                    conversation_id: id,
                    user_id: self.user.id,
                    agent_id: agent,
                    title: title.clone(),
                },
                &self.meta(),
            )
            .await
            .map_err(ApiError::from)?;
        crate::consistency::caught_up(
            &self.state.db,
            crate::consistency::projection::CONVERSATIONS,
            committed.sequence,
        )
        .await
        .map_err(ApiError::from)?;
        self.follow_session(id.0, Some(committed.sequence)).await?;
        let created_at = committed.events.first().map(|e| e.occurred_at);
        Ok(json!({
            "sessionId": id, "agentId": agent, "title": title.unwrap_or_default(),
            "createdAt": created_at,
        }))
    }

    /// `sessions.new {agentId?, title?}`: with the current session's agent if none is named.
    async fn new_session(&mut self, params: &Value) -> Result<Value, Refusal> {
        let agent = match uuid_param(params, "agentId")? {
            Some(agent) => AgentId(agent),
            None => self
                .session
                .as_ref()
                .map(|s| s.agent_id)
                .ok_or_else(|| bad_params("params.agentId is required"))?,
        };
        let title = params["title"].as_str().map(str::to_owned);
        self.start_session(agent, title).await
    }

    /// `sessions.switch {sessionId, after?}`.
    async fn switch(&mut self, params: &Value) -> Result<Value, Refusal> {
        let id = uuid_param(params, "sessionId")?
            .ok_or_else(|| bad_params("params.sessionId is required"))?;
        let after = match &params["after"] {
            Value::Null => None,
            value => Some(
                value
                    .as_u64()
                    .ok_or_else(|| bad_params("params.after must be a cursor (seq)"))?,
            ),
        };
        let recent = self.follow_session(id, after).await?;
        let view = views::conversation(&self.state.db, self.user.id, id).await?;
        Ok(json!({
            "sessionId": id,
            "title": view.as_ref().map(|v| v.title.clone()),
            "agentId": view.as_ref().map(|v| v.agent_id),
            "recentMessages": recent,
        }))
    }

    /// `sessions.history {sessionId?, limit?, before?}`, oldest first.
    async fn history(&mut self, params: &Value) -> Result<Value, Refusal> {
        let id = match uuid_param(params, "sessionId")? {
            Some(id) => id,
            None => self
                .session
                .as_ref()
                .map(|s| s.id.0)
                .ok_or_else(|| bad_params("params.sessionId is required"))?,
        };
        owned_conversation(&self.state, self.user.id, id).await?;
        let limit = int_param(params, "limit", 20, 200)?.max(1);
        let before = uuid_param(params, "before")?;
        let mut page = views::messages(&self.state.db, id, before, limit + 1).await?;
        let has_more = page.len() as i64 > limit;
        if has_more {
            page.remove(0);
        }
        let messages: Vec<Value> = page.iter().map(message_view).collect();
        Ok(json!({"sessionId": id, "messages": messages, "hasMore": has_more}))
    }

    /// `status {sessionId?}`.
    async fn status(&mut self, params: &Value) -> Result<Value, Refusal> {
        let uptime = STARTED.get().map_or(0, |t| t.elapsed().as_secs());
        let mut answer = json!({"gateway": {
            "version": protocol::GATEWAY_VERSION,
            "uptime": uptime,
            "activeConnections": CONNECTIONS.load(Ordering::Relaxed),
        }});
        let id = uuid_param(params, "sessionId")?.or(self.session.as_ref().map(|s| s.id.0));
        if let Some(id) = id {
            let conversation = owned_conversation(&self.state, self.user.id, id).await?;
            let view = views::conversation(&self.state.db, self.user.id, id).await?;
            answer["session"] = json!({
                "id": id,
                "agentId": conversation.agent_id,
                "messageCount": view.map(|v| v.message_count),
                "queuedRequests": conversation.runs.iter().filter(|r| !r.is_running()).count(),
                "activeRun": conversation.running().map(|r| r.run_id),
            });
        }
        Ok(answer)
    }

    /// A gateway slash command sent as a message.
    async fn command(&mut self, line: &str) -> Result<Value, Refusal> {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or("");
        let arg = words.next();
        let (payload, text) = match name {
            "/new" => {
                let answer = self.new_session(&json!({})).await?;
                let text = format!(
                    "✓ New session {}",
                    answer["sessionId"].as_str().unwrap_or("")
                );
                (answer, text)
            }
            "/sessions" => {
                let answer = self.list(&json!({"limit": 10})).await?;
                let mut text = String::from("📋 Recent sessions:\n");
                for (n, s) in answer["sessions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let title = s["title"]
                        .as_str()
                        .filter(|t| !t.is_empty())
                        .unwrap_or("(untitled)");
                    text.push_str(&format!(
                        "  {}. [{}] {title}\n",
                        n + 1,
                        s["lastActivity"].as_str().unwrap_or("")
                    ));
                }
                text.push_str("\nReply with /session <number> to switch");
                (answer, text)
            }
            "/session" => {
                let target = arg.ok_or_else(|| bad_params("usage: /session <number|uuid>"))?;
                let id = match target.parse::<usize>() {
                    Ok(n) => self
                        .listed
                        .get(n.wrapping_sub(1))
                        .map(|c| c.0)
                        .ok_or_else(|| bad_params("no such session number: run /sessions first"))?,
                    Err(_) => target
                        .parse::<Uuid>()
                        .map_err(|_| bad_params("usage: /session <number|uuid>"))?,
                };
                let answer = self.switch(&json!({"sessionId": id})).await?;
                (answer, format!("✓ Switched to session {id}"))
            }
            "/history" => {
                let limit = arg.map_or(Ok(20), |n| {
                    n.parse::<i64>()
                        .map_err(|_| bad_params("usage: /history [count]"))
                })?;
                let answer = self.history(&json!({"limit": limit})).await?;
                let mut text = String::new();
                for m in answer["messages"].as_array().into_iter().flatten() {
                    text.push_str(&format!(
                        "{}: {}\n",
                        m["role"].as_str().unwrap_or(""),
                        m["content"].as_str().unwrap_or("")
                    ));
                }
                (answer, text)
            }
            "/status" => {
                let answer = self.status(&json!({})).await?;
                let text = format!(
                    "Gateway {} · {}",
                    protocol::GATEWAY_VERSION,
                    answer["session"]
                );
                (answer, text)
            }
            "/cancel" => {
                let answer = self.cancel(&json!({})).await?;
                (answer, "✓ Cancellation requested".to_owned())
            }
            "/help" => (
                json!({}),
                "/new · /sessions · /session <n|uuid> · /history [n] · /status · /cancel · /help"
                    .to_owned(),
            ),
            other => {
                return Err(Refusal(
                    "unknown_command".into(),
                    format!("unknown command {other}; /help lists them"),
                ));
            }
        };
        Ok(json!({"command": name.trim_start_matches('/'), "text": text, "result": payload}))
    }
}
