//! The user-wide feed: every change to a user's agents (creation, configuration, each deployment
//! step, deployed, failed, stopped, deleted) and conversations (started, messages, runs and their
//! outcomes) as it is committed, for dashboards. `GET /api/v1/events` serves it as SSE; the
//! gateway's `feed.subscribe` as `feed` events.
//!
//! While anybody here follows it, the edge process holds one read of the agents' log and one of
//! the conversations' facts (not their live deltas) and routes each commit to its owner's
//! subscribers; each owner is learnt from the commit (`AgentCreated`, `ConversationStarted`,
//! `MessagePosted`) or read once from the projections. The feed is live only: it opens with a
//! `ready` frame once it is subscribed, and a client that reconnects reloads what it shows through
//! the REST routes. Frames are the feed's own, versioned ([`crate::frame::feed`]):
//! `{"type": "agent" | "conversation", "v": 1, "id", "seq", "change": {"type", …}}`, then
//! `keepalive`, and a last `error` (`slow_consumer`, `stream_interrupted`).

use crate::chat::KEEPALIVE;
use crate::error::ApiError;
use crate::extract::AuthUser;
use crate::follow::{CLIENT_BUFFER, Item};
use crate::frame::Frame;
use crate::frame::feed::{Change, FeedFrame};
use crate::openapi::resp;
use crate::routes::ApiRouter;
use crate::state::AppState;
use async_nats::jetstream::{self, consumer};
use axum::extract::State;
use axum::response::Response;
use futures::StreamExt;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{OnceCell, broadcast};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use warren_commands::{codec, topology};
use warren_domain::agent::AgentEvent;
use warren_domain::conversation::ConversationEvent;
use warren_domain::ids::UserId;

/// Owners remembered by the upstream read before it starts over.
const OWNERS_CACHED: usize = 100_000;

/// Routes.
pub fn routes() -> ApiRouter {
    ApiRouter::new().get("/events", events)
}

/// Follow every change to the caller's agents and conversations, live (no cursor: reload with
/// the REST routes after reconnecting).
#[utoipa::path(get, path = "/api/v1/events", operation_id = "get_events", tag = "conversations", security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "SSE: `ready` once subscribed, then `agent` and `conversation` frames (`v`: 1, `id`, `seq`, `change`: what changed, with a `type` such as `deployed` or `run_completed`) and `keepalive` frames; a last `error` frame if the client falls behind or the server closes."),
        resp::Unauthorized))]
pub(crate) async fn events(
    State(state): State<AppState>,
    caller: AuthUser,
) -> Result<Response, ApiError> {
    let follower = state.feed.subscribe(caller.id).await?;
    Ok(sse(&state, &caller, follower))
}

/// The feed of one edge process. Cheap to clone.
#[derive(Clone)]
pub struct Feed {
    inner: Arc<Inner>,
}

struct Inner {
    js: jetstream::Context,
    db: PgPool,
    closing: CancellationToken,
    state: Mutex<Subscribers>,
}

#[derive(Default)]
struct Subscribers {
    users: HashMap<UserId, broadcast::Sender<Item>>,
    upstream: Option<Arc<Upstream>>,
}

/// The read of the logs while anybody follows the feed.
struct Upstream {
    opened: OnceCell<()>,
    stop: CancellationToken,
}

impl Feed {
    /// A feed reading `js`, learning owners from `db`; it ends when `closing` fires.
    pub fn new(js: jetstream::Context, db: PgPool, closing: CancellationToken) -> Self {
        Self {
            inner: Arc::new(Inner {
                js,
                db,
                closing,
                state: Mutex::default(),
            }),
        }
    }

    /// Follows `user`'s feed from now on.
    pub async fn subscribe(&self, user: UserId) -> Result<FeedFollower, ApiError> {
        let (frames, upstream) = {
            let mut state = self.lock();
            let frames = state
                .users
                .entry(user)
                .or_insert_with(|| broadcast::channel(CLIENT_BUFFER).0)
                .subscribe();
            let upstream = state
                .upstream
                .get_or_insert_with(|| {
                    Arc::new(Upstream {
                        opened: OnceCell::new(),
                        stop: CancellationToken::new(),
                    })
                })
                .clone();
            (frames, upstream)
        };
        // Made before opening, so a client that goes meanwhile still unsubscribes.
        let follower = FeedFollower {
            feed: self.clone(),
            user,
            frames: Some(frames),
            ended: false,
        };
        upstream
            .opened
            .get_or_try_init(|| self.open(&upstream))
            .await?;
        Ok(follower)
    }

    fn lock(&self) -> MutexGuard<'_, Subscribers> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts reading both logs from their ends.
    async fn open(&self, upstream: &Upstream) -> Result<(), ApiError> {
        let js = &self.inner.js;
        let agents = Read::from_end(js, topology::AGENTS, "agent.>").await?;
        let conversations = Read::from_end(js, topology::CONVERSATIONS, "conv.*.ev").await?;
        let pump = Pump {
            feed: self.clone(),
            stop: upstream.stop.clone(),
            owners: HashMap::new(),
        };
        tokio::spawn(async move {
            let (mut agents, mut conversations) = (agents, conversations);
            pump.run(&mut agents.messages, &mut conversations.messages)
                .await;
            agents.close().await;
            conversations.close().await;
        });
        Ok(())
    }

    /// Sends `item` to `user`'s subscribers, if any.
    fn send(&self, user: UserId, item: Item) {
        if let Some(frames) = self.lock().users.get(&user) {
            let _ = frames.send(item);
        }
    }

    fn followed(&self, user: UserId) -> bool {
        self.lock().users.contains_key(&user)
    }

    /// Ends every subscription with `stream_interrupted` and forgets the upstream.
    fn interrupt(&self) {
        let mut state = self.lock();
        let item = Item::new(
            None,
            ended(
                "stream_interrupted",
                "the feed was interrupted; subscribe again",
            ),
        );
        for frames in state.users.values() {
            let _ = frames.send(item.clone());
        }
        state.upstream = None;
    }

    /// A subscriber of `user` left: forget the user without subscribers, and the upstream
    /// without users.
    fn left(&self, user: UserId) {
        let mut state = self.lock();
        if state
            .users
            .get(&user)
            .is_some_and(|frames| frames.receiver_count() == 0)
        {
            state.users.remove(&user);
        }
        if state.users.is_empty()
            && let Some(upstream) = state.upstream.take()
        {
            upstream.stop.cancel();
        }
    }
}

/// One client's feed.
pub struct FeedFollower {
    feed: Feed,
    user: UserId,
    frames: Option<broadcast::Receiver<Item>>,
    ended: bool,
}

impl FeedFollower {
    /// The next frame; none after the last (an `error`). Cancel-safe.
    pub async fn next(&mut self) -> Option<Item> {
        if self.ended {
            return None;
        }
        let frames = self.frames.as_mut()?;
        let item = match frames.recv().await {
            Ok(item) => item,
            Err(broadcast::error::RecvError::Lagged(_)) => Item::new(
                None,
                ended("slow_consumer", "this client fell behind; subscribe again"),
            ),
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        self.ended = item.frame().ends_stream();
        Some(item)
    }
}

impl Drop for FeedFollower {
    fn drop(&mut self) {
        drop(self.frames.take());
        self.feed.left(self.user);
    }
}

/// One of the feed's reads: an ordered consumer from a stream's end.
struct Read {
    messages: consumer::pull::Ordered,
    stream: jetstream::stream::Stream<()>,
    name: String,
}

impl Read {
    async fn from_end(
        js: &jetstream::Context,
        stream: &str,
        filter: &str,
    ) -> Result<Self, ApiError> {
        let stream = js
            .get_stream_no_info(stream)
            .await
            .map_err(ApiError::internal)?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: filter.to_owned(),
                deliver_policy: consumer::DeliverPolicy::New,
                ..Default::default()
            })
            .await
            .map_err(ApiError::internal)?;
        let name = consumer.cached_info().name.clone();
        let messages = consumer.messages().await.map_err(ApiError::internal)?;
        Ok(Self {
            messages,
            stream,
            name,
        })
    }

    /// Deletes the consumer now rather than after the server's idle threshold.
    async fn close(self) {
        if let Err(err) = self.stream.delete_consumer(&self.name).await {
            tracing::debug!(consumer = self.name, error = %err, "deleting a feed consumer failed");
        }
    }
}

/// Routes both logs' commits to their owners' subscribers.
struct Pump {
    feed: Feed,
    stop: CancellationToken,
    /// Who owns each agent and conversation seen.
    owners: HashMap<Uuid, UserId>,
}

impl Pump {
    async fn run(
        mut self,
        agents: &mut consumer::pull::Ordered,
        conversations: &mut consumer::pull::Ordered,
    ) {
        let closing = self.feed.inner.closing.clone();
        loop {
            let (kind, next) = tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = closing.cancelled() => (Kind::Agent, None),
                next = agents.next() => (Kind::Agent, next),
                next = conversations.next() => (Kind::Conversation, next),
            };
            let message = match next {
                Some(Ok(message)) => message,
                other => {
                    if let Some(Err(err)) = other {
                        tracing::warn!(error = %err, "reading the feed's logs failed");
                    }
                    self.feed.interrupt();
                    return;
                }
            };
            let seq = message.info().map_or(0, |info| info.stream_sequence);
            let Some(id) = message
                .subject
                .split('.')
                .nth(1)
                .and_then(|id| Uuid::parse_str(id).ok())
            else {
                continue;
            };
            let (owner, changes) = match kind {
                Kind::Agent => of_agent(&message.payload),
                Kind::Conversation => of_conversation(&message.payload),
            };
            if let Some(owner) = owner {
                self.remember(id, owner);
            }
            let Some(owner) = self.owner(kind, id).await else {
                continue;
            };
            if !self.feed.followed(owner) {
                continue;
            }
            for change in changes {
                let frame = FeedFrame { id, seq, change };
                self.feed.send(owner, Item::new(None, Frame::Feed(frame)));
            }
        }
    }

    fn remember(&mut self, id: Uuid, owner: UserId) {
        if self.owners.len() >= OWNERS_CACHED {
            self.owners.clear();
        }
        self.owners.insert(id, owner);
    }

    /// The owner of an agent or conversation: remembered, or read from the projections.
    async fn owner(&mut self, kind: Kind, id: Uuid) -> Option<UserId> {
        if let Some(owner) = self.owners.get(&id) {
            return Some(*owner);
        }
        let query = match kind {
            Kind::Agent => "SELECT owner_id FROM agents WHERE id = $1",
            Kind::Conversation => "SELECT user_id FROM conversations WHERE id = $1",
        };
        let owner: Option<(Uuid,)> = sqlx::query_as(query)
            .bind(id)
            .fetch_optional(&self.feed.inner.db)
            .await
            .inspect_err(|err| tracing::warn!(%id, error = %err, "looking up an owner failed"))
            .ok()
            .flatten();
        let owner = UserId(owner?.0);
        self.remember(id, owner);
        Some(owner)
    }
}

/// Which log a commit came from.
#[derive(Clone, Copy)]
enum Kind {
    Agent,
    Conversation,
}

/// The last frame of a feed that ends.
fn ended(code: &str, message: &str) -> Frame {
    Frame::End {
        run_id: None,
        code: code.to_owned(),
        message: message.to_owned(),
        retryable: true,
    }
}

/// An agent commit's changes, and its owner if it names one.
fn of_agent(payload: &[u8]) -> (Option<UserId>, Vec<Change>) {
    of_commit::<AgentEvent>(
        payload,
        |event| match event {
            AgentEvent::AgentCreated { owner_id, .. } => Some(*owner_id),
            _ => None,
        },
        |event| Change::Agent(event.into()),
    )
}

/// A conversation commit's changes, and its user if it names one.
fn of_conversation(payload: &[u8]) -> (Option<UserId>, Vec<Change>) {
    of_commit::<ConversationEvent>(
        payload,
        |event| match event {
            ConversationEvent::ConversationStarted { user_id, .. }
            | ConversationEvent::ConversationForked { user_id, .. }
            | ConversationEvent::MessagePosted { user_id, .. } => Some(*user_id),
            _ => None,
        },
        |event| Change::Conversation(event.into()),
    )
}

/// A commit's changes, and the owner the first event naming one names.
fn of_commit<E: serde::de::DeserializeOwned>(
    payload: &[u8],
    owner: impl Fn(&E) -> Option<UserId>,
    change: impl Fn(E) -> Change,
) -> (Option<UserId>, Vec<Change>) {
    let Ok(envelopes) = codec::decode::<E>(payload) else {
        return (None, vec![]);
    };
    let owner = envelopes.iter().find_map(|envelope| owner(&envelope.event));
    let changes = envelopes
        .into_iter()
        .map(|envelope| change(envelope.event))
        .collect();
    (owner, changes)
}

/// A feed as SSE: `ready`, then its frames and keepalives, until the caller's access ends.
fn sse(state: &AppState, caller: &AuthUser, follower: FeedFollower) -> Response {
    let ticks = tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    let ready = Item::new(None, Frame::Ready);
    let items = futures::stream::unfold(
        (follower, ticks, Some(ready)),
        |(mut follower, mut ticks, first)| async move {
            let item = match first {
                Some(first) => first,
                None => tokio::select! {
                    item = follower.next() => item?,
                    _ = ticks.tick() => crate::follow::keepalive(),
                },
            };
            Some((item, (follower, ticks, None)))
        },
    );
    crate::follow::sse_response(crate::follow::guarded(state.clone(), caller.clone(), items))
}
