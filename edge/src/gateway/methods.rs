//! What each gateway method and slash command does. Every answer is a `res` frame; a refusal
//! carries the same stable code the REST surface uses.

use super::params::{self, parse};
use super::protocol::{self, Req};
use super::{CONNECTIONS, Conn, STARTED, Session};
use crate::app::access::ApprovedUser;
use crate::app::chat::{Client, Target};
use crate::app::limits;
use crate::auth::tokens::TokenError;
use crate::conversations::owned_conversation;
use crate::error::ApiError;
use crate::follow::{Expired, Follow, Item, Start, follow};
use crate::frame::Frame;
use crate::frame::gateway::message_view;
use crate::idempotency::{Begin, IdempotencyKey, request_hash};
use crate::input::check_json;
use crate::views;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use uuid::Uuid;
use warren_domain::conversation::PostMode;
use warren_domain::ids::{AgentId, CommandId, ConversationId, RunId};

/// Messages `sessions.switch` answers with.
const RECENT_MESSAGES: i64 = 20;

/// A refusal: its stable code, what to tell the client, and (for limits) when to retry.
pub(super) struct Refusal(
    pub(super) String,
    pub(super) String,
    pub(super) Option<u64>,
    pub(super) Option<Value>,
);

impl Refusal {
    fn new(code: &str, message: impl Into<String>) -> Self {
        Refusal(code.to_owned(), message.into(), None, None)
    }

    /// A refusal with `details` (e.g. the fields refused).
    pub(super) fn with_details(code: &str, message: String, details: Value) -> Self {
        Refusal(code.to_owned(), message, None, Some(details))
    }
}

impl From<ApiError> for Refusal {
    fn from(err: ApiError) -> Self {
        if let ApiError::Internal(source) = &err {
            tracing::error!(error = %source, "gateway request failed");
        }
        let retry_after = match &err {
            ApiError::TooMany {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        };
        let body = err.body();
        Refusal(body.code, body.message, retry_after, body.details)
    }
}

/// The methods that change something: counted against the caller's write limit, and the ones an
/// `idempotencyKey` applies to.
const WRITES: [&str; 4] = ["agent", "agent.cancel", "sessions.new", "sessions.fork"];

fn bad_params(message: &str) -> Refusal {
    Refusal::new("invalid_params", message)
}

/// A refusal as the `res` frame: `errorCode`, `error`, and `retryAfter` (seconds) for limits.
pub(super) fn refused(id: &str, Refusal(code, message, retry_after, details): Refusal) -> Value {
    let mut frame = protocol::fail(id, &code, &message);
    if let Some(secs) = retry_after {
        frame["retryAfter"] = secs.into();
    }
    if let Some(details) = details {
        frame["details"] = details;
    }
    frame
}

/// Whether an `agent` request is a gateway slash command (answered here, not a write).
fn is_slash_command(params: &Value) -> bool {
    params["message"]
        .as_str()
        .is_some_and(|m| m.trim_start().starts_with('/'))
}

/// `params.idempotencyKey`, checked like the REST header.
fn idempotency_key(params: &Value) -> Result<Option<String>, Refusal> {
    match &params["idempotencyKey"] {
        Value::Null => Ok(None),
        Value::String(key) => IdempotencyKey::parse(Some(key))
            .map(|key| key.0)
            .map_err(|_| {
                bad_params("params.idempotencyKey must be 1 to 255 visible ASCII characters")
            }),
        _ => Err(bad_params("params.idempotencyKey must be a string")),
    }
}

impl Conn {
    /// Answers one request, as of now: the caller is checked again first (a logout, revocation
    /// or expiry since the last request ends the connection: see [`Conn::ending`]), writes count
    /// against the caller's write limit, and a write with an `idempotencyKey` is answered once.
    pub(super) async fn handle(&mut self, req: Req) -> Value {
        // Before any method runs: no string in the params may carry a control character.
        if let Err(refused) = check_json(&req.params, protocol::text_params(&req.method)) {
            return protocol::invalid_field(&req.id, &refused.field, refused.reason);
        }
        if let Err(refusal) = self.still_allowed().await {
            return refused(&req.id, refusal.into());
        }
        let is_write = WRITES.contains(&req.method.as_str())
            && !(req.method == "agent" && is_slash_command(&req.params));
        let key = match idempotency_key(&req.params) {
            Ok(key) => key,
            Err(refusal) => return refused(&req.id, refusal),
        };
        let claim = match (&key, is_write) {
            (Some(key), true) => {
                let mut params = req.params.clone();
                if let Some(map) = params.as_object_mut() {
                    map.remove("idempotencyKey");
                }
                let hash = request_hash(&req.method, "gateway", params.to_string().as_bytes());
                let scope = format!("gateway:{}", self.user.id);
                match self.state.idempotency.begin(&scope, key, &hash).await {
                    Err(err) => return refused(&req.id, err.into()),
                    Ok(Begin::Replay(_, _, payload)) => {
                        let payload = serde_json::from_str(&payload).unwrap_or(Value::Null);
                        let mut answer = protocol::ok(&req.id, payload);
                        answer["replayed"] = true.into();
                        return answer;
                    }
                    Ok(Begin::Reused) => {
                        return refused(
                            &req.id,
                            Refusal::new(
                                "idempotency_key_reused",
                                "this idempotencyKey was used for a different request",
                            ),
                        );
                    }
                    Ok(Begin::InProgress) => {
                        return refused(
                            &req.id,
                            Refusal(
                                "idempotency_in_progress".into(),
                                "a request with this idempotencyKey is still running".into(),
                                Some(1),
                                None,
                            ),
                        );
                    }
                    Ok(Begin::Again) => None,
                    Ok(Begin::Fresh(claim)) => Some(claim),
                }
            }
            _ => None,
        };
        // A replayed write was counted when it first ran.
        if is_write && let Err(limited) = limits::user_write(&self.state, self.user.id).await {
            if let Some(claim) = claim {
                self.state.idempotency.abandon(claim).await;
            }
            return refused(&req.id, limited.into());
        }
        self.command_id = IdempotencyKey(key).command_id(self.user.id);
        let outcome = self.dispatch(&req.method, &req.params).await;
        if let Some(claim) = claim {
            match &outcome {
                Ok(payload) => {
                    let kept = Some((200, None, payload.to_string()));
                    self.state.idempotency.finish(claim, kept).await;
                }
                Err(_) => self.state.idempotency.abandon(claim).await,
            }
        }
        match outcome {
            Ok(payload) => protocol::ok(&req.id, payload),
            Err(refusal) => refused(&req.id, refusal),
        }
    }

    /// Runs one method with its params.
    async fn dispatch(&mut self, method: &str, params: &Value) -> Result<Value, Refusal> {
        match method {
            "agent" => self.agent(parse(params)?).await,
            "agent.cancel" => self.cancel(parse(params)?).await,
            "sessions.list" => self.list(parse(params)?).await,
            "sessions.new" => self.new_session(parse(params)?).await,
            "sessions.fork" => self.fork(parse(params)?).await,
            "sessions.switch" => self.switch(parse(params)?).await,
            "sessions.history" => self.history(parse(params)?).await,
            "status" => self.status(parse(params)?).await,
            "feed.subscribe" => {
                parse::<params::Nothing>(params)?;
                self.subscribe().await
            }
            "feed.unsubscribe" => {
                parse::<params::Nothing>(params)?;
                self.feed = None;
                Ok(json!({"subscribed": false}))
            }
            "auth.refresh" => self.refresh_token(parse(params)?).await,
            "connect" => Err(Refusal::new(
                "already_connected",
                "connect is the first frame only",
            )),
            other => Err(Refusal::new(
                "unknown_method",
                format!(
                    "unknown method `{other}`; supported: {}",
                    protocol::METHODS.join(", ")
                ),
            )),
        }
    }

    /// The caller as of now; a refusal also marks the connection as ending.
    pub(super) async fn still_allowed(&mut self) -> Result<(), ApiError> {
        if self.user.expires_at <= chrono::Utc::now().timestamp() {
            let expired = crate::app::access::token_error(TokenError::Expired);
            self.end_with(&expired);
            return Err(expired);
        }
        match crate::app::access::recheck(&self.state, &self.user).await {
            Ok(fresh) => {
                self.user = fresh;
                Ok(())
            }
            Err(refusal) => {
                self.end_with(&refusal);
                Err(refusal)
            }
        }
    }

    fn end_with(&mut self, refusal: &ApiError) {
        let body = refusal.body();
        self.ending = Some((body.code, body.message));
    }

    /// `auth.refresh {token}`: a new access token for the same user (from `POST /auth/refresh`),
    /// so the connection outlives the one it opened with.
    async fn refresh_token(&mut self, params: params::Refresh) -> Result<Value, Refusal> {
        let fresh = crate::app::access::authenticate(&self.state, &params.token).await?;
        if fresh.id != self.user.id {
            return Err(Refusal::new("invalid_token", "the token is another user's"));
        }
        self.user = fresh;
        Ok(json!({"expiresAt": self.user.expires_at}))
    }

    /// `feed.subscribe`: `feed` events for every change to the user's agents and conversations.
    async fn subscribe(&mut self) -> Result<Value, Refusal> {
        if self.feed.is_none() {
            self.feed = Some(self.state.feed.subscribe(self.user.id).await?);
        }
        Ok(json!({"subscribed": true}))
    }

    /// The caller as an approved user (cloned out: the connection itself is not `Sync`).
    fn approved(
        &self,
    ) -> impl std::future::Future<Output = Result<ApprovedUser, Refusal>> + Send + 'static {
        let (state, user) = (self.state.clone(), self.user.clone());
        async move { Ok(crate::app::access::approved(&state, user).await?) }
    }

    /// The session `named` (switching to it), else the current one.
    async fn session_for(&mut self, named: Option<Uuid>) -> Result<Session, Refusal> {
        if let Some(id) = named
            && self.session.as_ref().is_none_or(|s| s.id.0 != id)
        {
            self.follow_session(id, None).await?;
        }
        self.session.clone().ok_or_else(|| {
            Refusal::new(
                "no_session",
                "no session yet: call sessions.new with an agentId (or send one with agentId)",
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
        let (from_seq, opening, recent) =
            match Start::of(&self.state, id, after, RECENT_MESSAGES).await? {
                Start::After(after) => (after + 1, vec![], vec![]),
                Start::Snapshot {
                    checkpoint,
                    messages,
                    expired,
                } => {
                    let recent: Vec<Value> = messages.iter().map(message_view).collect();
                    let opening = match expired {
                        Some(Expired { after, oldest }) => vec![Item::new(
                            Some(checkpoint),
                            Frame::Reset {
                                conversation_id: id,
                                after,
                                oldest,
                                messages,
                            },
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

    /// `agent {message, sessionId?, agentId?, mode?, idempotencyKey?}`.
    async fn agent(&mut self, params: params::Agent) -> Result<Value, Refusal> {
        let message = params.message;
        if message.trim().is_empty() {
            return Err(params::invalid("message", "must not be empty"));
        }
        if message.trim_start().starts_with('/') {
            // A slash command acts on the current session with its own words only.
            for (field, given) in [
                ("sessionId", params.session_id.is_some()),
                ("agentId", params.agent_id.is_some()),
                ("mode", params.mode.is_some()),
            ] {
                if given {
                    return Err(params::invalid(
                        field,
                        "is not taken by a slash command (it acts on the current session)",
                    ));
                }
            }
            return self.command(message.trim()).await;
        }
        let caller = self.approved().await?;
        if self.session.is_none()
            && params.session_id.is_none()
            && let Some(agent) = params.agent_id
        {
            self.start_session(AgentId(agent), None, CommandId::new())
                .await?;
        }
        let session = self.session_for(params.session_id).await?;
        if let Some(agent) = params.agent_id
            && agent != session.agent_id.0
        {
            return Err(params::invalid(
                "agentId",
                "is not the agent of the session the message goes to",
            ));
        }
        let mode = PostMode::from(params.mode.unwrap_or_default());
        let posted = crate::app::chat::post(
            &self.state,
            &caller,
            crate::app::chat::Message {
                target: Target::Conversation(session.id),
                text: message,
                mode,
                client: Client {
                    id: Some(self.client_id.clone()),
                    kind: self.client_type.clone(),
                },
                command_id: self.command_id,
            },
        )
        .await?;
        let status = if posted.position > 0 {
            "queued"
        } else {
            "accepted"
        };
        Ok(json!({
            "runId": posted.run_id, "sessionId": posted.conversation_id, "status": status,
            "position": posted.position, "seq": posted.seq,
        }))
    }

    /// `agent.cancel {runId?}`: the given run, or the current session's running one.
    async fn cancel(&mut self, params: params::Cancel) -> Result<Value, Refusal> {
        let caller = self.approved().await?;
        let session = self.session_for(params.session_id).await?;
        let run = params.run_id.map(RunId);
        let cancelled =
            crate::app::chat::cancel(&self.state, &caller, session.id, run, self.command_id)
                .await?;
        Ok(json!({"runId": cancelled.run_id, "message": "Cancellation requested"}))
    }

    /// `sessions.list {limit?, offset?}`, most recently active first.
    async fn list(&mut self, params: params::List) -> Result<Value, Refusal> {
        let limit = params::bounded(params.limit, "limit", 10, 200)?.max(1);
        let offset = params::bounded(params.offset, "offset", 0, i64::MAX)?;
        let (page, total) =
            views::conversations_page(&self.state.db, self.user.id, limit, offset).await?;
        self.listed = page.iter().map(|c| ConversationId(c.id)).collect();
        let sessions: Vec<Value> = page
            .iter()
            .map(|c| {
                json!({
                    "id": c.id, "agentId": c.agent_id, "title": c.title,
                    "lastActivity": c.last_activity_at, "messageCount": c.message_count,
                    "activeRun": c.active_run_id, "forkedFrom": c.forked_from,
                    "forkedAfter": c.forked_after,
                })
            })
            .collect();
        Ok(json!({"sessions": sessions, "total": total}))
    }

    async fn start_session(
        &mut self,
        agent: AgentId,
        title: Option<String>,
        command_id: CommandId,
    ) -> Result<Value, Refusal> {
        let caller = self.approved().await?;
        let started =
            crate::app::chat::start(&self.state, &caller, agent, title, command_id).await?;
        self.follow_session(started.conversation_id.0, Some(started.seq))
            .await?;
        Ok(json!({
            "sessionId": started.conversation_id, "agentId": started.agent_id,
            "title": started.title.unwrap_or_default(), "createdAt": started.created_at,
        }))
    }

    /// `sessions.new {agentId?, title?}`: with the current session's agent if none is named.
    async fn new_session(&mut self, params: params::New) -> Result<Value, Refusal> {
        let agent =
            match params.agent_id {
                Some(agent) => AgentId(agent),
                None => self.session.as_ref().map(|s| s.agent_id).ok_or_else(|| {
                    params::invalid("agentId", "is required (no current session)")
                })?,
            };
        let title = params.title;
        let command_id = self.command_id;
        self.start_session(agent, title, command_id).await
    }

    /// `sessions.fork {sessionId?, after, title?}`: a new session continuing the given (or
    /// current) one after its message at `after`, which becomes the current session.
    async fn fork(&mut self, params: params::Fork) -> Result<Value, Refusal> {
        let caller = self.approved().await?;
        let origin =
            match params.session_id {
                Some(id) => id,
                None => self.session.as_ref().map(|s| s.id.0).ok_or_else(|| {
                    params::invalid("sessionId", "is required (no current session)")
                })?,
            };
        let fork = crate::app::fork::Fork {
            origin_id: ConversationId(origin),
            after: params.after,
            title: params.title,
            command_id: self.command_id,
        };
        let forked = crate::app::fork::fork(&self.state, &caller, fork).await?;
        self.follow_session(forked.conversation_id.0, Some(forked.seq))
            .await?;
        Ok(json!({
            "sessionId": forked.conversation_id, "agentId": forked.agent_id,
            "title": forked.title.unwrap_or_default(), "forkedFrom": forked.origin_id,
            "forkedAfter": forked.after, "messageCount": forked.messages,
            "createdAt": forked.created_at, "seq": forked.seq,
        }))
    }

    /// `sessions.switch {sessionId, after?}`.
    async fn switch(&mut self, params: params::Switch) -> Result<Value, Refusal> {
        let id = params.session_id;
        let recent = self.follow_session(id, params.after).await?;
        let view = views::conversation(&self.state.db, self.user.id, id).await?;
        Ok(json!({
            "sessionId": id,
            "title": view.as_ref().map(|v| v.title.clone()),
            "agentId": view.as_ref().map(|v| v.agent_id),
            "recentMessages": recent,
        }))
    }

    /// `sessions.history {sessionId?, limit?, before?}`, oldest first.
    async fn history(&mut self, params: params::History) -> Result<Value, Refusal> {
        let id =
            match params.session_id {
                Some(id) => id,
                None => self.session.as_ref().map(|s| s.id.0).ok_or_else(|| {
                    params::invalid("sessionId", "is required (no current session)")
                })?,
            };
        owned_conversation(&self.state, self.user.id, id).await?;
        let limit = params::bounded(params.limit, "limit", 20, 200)?.max(1);
        let before = params.before;
        let mut page = views::messages(&self.state.db, id, before, limit + 1).await?;
        let has_more = page.len() as i64 > limit;
        if has_more {
            page.remove(0);
        }
        let messages: Vec<Value> = page.iter().map(message_view).collect();
        Ok(json!({"sessionId": id, "messages": messages, "hasMore": has_more}))
    }

    /// `status {sessionId?}`.
    async fn status(&mut self, params: params::Status) -> Result<Value, Refusal> {
        let uptime = STARTED.get().map_or(0, |t| t.elapsed().as_secs());
        let mut answer = json!({"gateway": {
            "version": protocol::GATEWAY_VERSION,
            "uptime": uptime,
            "activeConnections": CONNECTIONS.load(Ordering::Relaxed),
        }});
        let id = params.session_id.or(self.session.as_ref().map(|s| s.id.0));
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
        // Words a command does not take are refused, not dropped.
        let known = matches!(
            name,
            "/new" | "/sessions" | "/session" | "/history" | "/status" | "/cancel" | "/help"
        );
        let takes_an_argument = matches!(name, "/session" | "/history");
        if known && (words.next().is_some() || (arg.is_some() && !takes_an_argument)) {
            return Err(params::invalid(
                "message",
                &format!(
                    "{name} takes {}",
                    if takes_an_argument {
                        "one argument"
                    } else {
                        "no argument"
                    }
                ),
            ));
        }
        let (payload, text) = match name {
            "/new" => {
                limits::user_write(&self.state, self.user.id).await?;
                let answer = self.new_session(params::New::default()).await?;
                let text = format!(
                    "✓ New session {}",
                    answer["sessionId"].as_str().unwrap_or("")
                );
                (answer, text)
            }
            "/sessions" => {
                let answer = self
                    .list(params::List {
                        limit: Some(10),
                        offset: None,
                    })
                    .await?;
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
                let answer = self
                    .switch(params::Switch {
                        session_id: id,
                        after: None,
                    })
                    .await?;
                (answer, format!("✓ Switched to session {id}"))
            }
            "/history" => {
                let limit = arg.map_or(Ok(20), |n| {
                    n.parse::<i64>()
                        .map_err(|_| bad_params("usage: /history [count]"))
                })?;
                let answer = self
                    .history(params::History {
                        limit: Some(limit),
                        ..Default::default()
                    })
                    .await?;
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
                let answer = self.status(params::Status::default()).await?;
                let text = format!(
                    "Gateway {} · {}",
                    protocol::GATEWAY_VERSION,
                    answer["session"]
                );
                (answer, text)
            }
            "/cancel" => {
                limits::user_write(&self.state, self.user.id).await?;
                let answer = self.cancel(params::Cancel::default()).await?;
                (answer, "✓ Cancellation requested".to_owned())
            }
            "/help" => (
                json!({}),
                "/new · /sessions · /session <n|uuid> · /history [n] · /status · /cancel · /help"
                    .to_owned(),
            ),
            other => {
                return Err(Refusal::new(
                    "unknown_command",
                    format!("unknown command {other}; /help lists them"),
                ));
            }
        };
        Ok(json!({"command": name.trim_start_matches('/'), "text": text, "result": payload}))
    }
}
