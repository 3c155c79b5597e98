//! Following a conversation's log from a stream sequence, for SSE and WebSocket clients.
//!
//! - [`hub`] — one shared upstream read per followed conversation per edge process (its room),
//!   frames made once and broadcast to every live client of it.
//! - [`Follower`] — one client's view: its opening frames (snapshot or reset), the part of the
//!   log it is missing read by itself, then the room's live frames, each exactly once and in
//!   order. Every frame carries its message's stream sequence, the cursor a client resumes from.
//! - [`sse`] — a follower as an SSE response (each frame's bytes made once for all clients);
//!   the gateway formats the same [`Item`]s as events.

pub mod hub;

use crate::error::ApiError;
use crate::extract::AuthUser;
use crate::frame::{self, Frame, Interruption};
use crate::state::AppState;
use crate::views;
use async_nats::jetstream::{self, consumer, stream};
use axum::body::{Body, Bytes};
use axum::extract::ws::Utf8Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use hub::{Hub, Joined, Room};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::broadcast;
use uuid::Uuid;
use warren_commands::{codec, metrics, topology, trace};
use warren_domain::ids::{ConversationId, RunId};

/// Frames buffered per client. A live client this far behind is dropped with a `slow_consumer`
/// error frame (it resumes with its cursor); while it replays history it sets the pace.
pub const CLIENT_BUFFER: usize = 256;

/// What a client follows of a conversation's log.
pub struct Follow {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The first stream sequence to deliver.
    pub from_seq: u64,
    /// Only this run's frames, ending with its terminal frame; else everything, until the client
    /// goes.
    pub run: Option<RunId>,
    /// Frames sent before the log's (a snapshot or reset).
    pub opening: Vec<Item>,
    /// A `keepalive` frame this often, if the transport needs one.
    pub keepalive: Option<Duration>,
}

/// Where a client joining a conversation starts reading its log.
pub enum Start {
    /// Its cursor is still in the log: right after it.
    After(u64),
    /// No cursor, or one older than the log keeps (`expired`): the latest messages, consistent
    /// with the log up to `checkpoint`, then the log from `checkpoint + 1`.
    Snapshot {
        /// The log sequence the messages are consistent with.
        checkpoint: u64,
        /// The latest messages, oldest first.
        messages: Vec<views::MessageView>,
        /// The cursor that was too old, if one was given.
        expired: Option<Expired>,
    },
}

/// A cursor older than the log keeps.
#[derive(Clone, Copy, Debug)]
pub struct Expired {
    /// The cursor.
    pub after: u64,
    /// The oldest sequence the log still keeps.
    pub oldest: u64,
}

impl Start {
    /// Decides where a client with cursor `after` starts; snapshots hold `limit` messages.
    /// Only a cursor costs a look at the log's retention (one JetStream request).
    pub async fn of(
        state: &AppState,
        conversation: Uuid,
        after: Option<u64>,
        limit: i64,
    ) -> Result<Self, ApiError> {
        let expired = match after {
            None => None,
            Some(after) => {
                let oldest = state
                    .commands
                    .jetstream()
                    .get_stream(topology::CONVERSATIONS)
                    .await
                    .map_err(ApiError::internal)?
                    .cached_info()
                    .state
                    .first_sequence;
                if after.saturating_add(1) >= oldest {
                    return Ok(Start::After(after));
                }
                Some(Expired { after, oldest })
            }
        };
        let (checkpoint, messages) =
            views::message_snapshot(&state.db, conversation, limit).await?;
        Ok(Start::Snapshot {
            checkpoint,
            messages,
            expired,
        })
    }
}

/// One frame for clients and its cursor (none for keepalives and a stream's last frame),
/// encoded at most once per format however many clients it goes to. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Item(Arc<Encoded>);

#[derive(Debug)]
struct Encoded {
    seq: Option<u64>,
    frame: Frame,
    json: OnceLock<String>,
    /// The SSE event (`id:` and `data:` lines).
    sse: OnceLock<Bytes>,
    /// The gateway's `event` frame, for a client that sent the message and for any other.
    ws: [OnceLock<Option<Utf8Bytes>>; 2],
}

impl Item {
    /// A frame with a cursor (or none).
    pub fn new(seq: Option<u64>, frame: Frame) -> Self {
        Self(Arc::new(Encoded {
            seq,
            frame,
            json: OnceLock::new(),
            sse: OnceLock::new(),
            ws: Default::default(),
        }))
    }

    /// The stream sequence of the log message it came from.
    pub fn seq(&self) -> Option<u64> {
        self.0.seq
    }

    /// The frame.
    pub fn frame(&self) -> &Frame {
        &self.0.frame
    }

    /// The frame as LiberClaw SSE JSON text ([`frame::sse`]).
    pub fn json(&self) -> &str {
        self.0
            .json
            .get_or_init(|| frame::sse::to_json(&self.0.frame).to_string())
    }

    /// The frame as one SSE event: `id: <seq>` (if it has one) and `data: <json>`. JSON text
    /// has no raw newline, so one `data:` line carries it.
    pub fn sse(&self) -> Bytes {
        self.0
            .sse
            .get_or_init(|| {
                let json = self.json();
                let mut event = String::with_capacity(json.len() + 32);
                if let Some(seq) = self.0.seq {
                    event.push_str(&format!("id: {seq}\n"));
                }
                event.push_str("data: ");
                event.push_str(json);
                event.push_str("\n\n");
                Bytes::from(event)
            })
            .clone()
    }

    /// The frame in another encoding, made once per `variant` (0 or 1) by `encode`.
    pub fn encoded(
        &self,
        variant: bool,
        encode: impl FnOnce(&Self) -> Option<Utf8Bytes>,
    ) -> Option<Utf8Bytes> {
        self.0.ws[usize::from(variant)]
            .get_or_init(|| encode(self))
            .clone()
    }
}

fn interrupted(run: Option<RunId>) -> Item {
    Item::new(None, Frame::interrupted(run, Interruption::Interrupted))
}

fn slow_consumer(run: Option<RunId>) -> Item {
    Item::new(None, Frame::interrupted(run, Interruption::SlowConsumer))
}

/// Starts following through this process's hub.
pub async fn follow(hub: &Hub, follow: Follow) -> Result<Follower, ApiError> {
    let Follow {
        conversation_id,
        from_seq,
        run,
        opening,
        keepalive,
    } = follow;
    let room = hub
        .room(conversation_id)
        .await
        .map_err(ApiError::internal)?;
    let ticks = keepalive.map(|every| {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    let through = from_seq.saturating_sub(1);
    let joined = room.join(through);
    let mut follower = Follower {
        hub: hub.clone(),
        room,
        run,
        ticks,
        queue: opening.into(),
        through,
        phase: Phase::Joining,
    };
    // Live from now on if the room reaches back far enough; else the first `next` reads the log.
    if let Joined::Live(tail, frames) = joined {
        follower.go_live(tail, frames);
    }
    Ok(follower)
}

/// One client's frames of a conversation; [`Follower::next`] ends when the run ends (for one
/// run), the log read fails or the server closes (a last error frame), or the client is too slow
/// (a last `slow_consumer` frame).
pub struct Follower {
    hub: Hub,
    room: Arc<Room>,
    run: Option<RunId>,
    ticks: Option<tokio::time::Interval>,
    /// Frames ready to go, in order.
    queue: VecDeque<Item>,
    /// Every frame of the log up to this sequence is delivered or queued.
    through: u64,
    phase: Phase,
}

enum Phase {
    /// About to take the room's ring and live frames, or to find it must read the log first.
    Joining,
    /// Reading the log itself up to `bound` (the ring does not reach back that far).
    CatchUp(Box<CatchUp>),
    /// Reading the room's live frames; frames up to `skip` came from the log read already.
    Live {
        frames: broadcast::Receiver<Item>,
        skip: u64,
    },
    /// Nothing more after the queue.
    Ended,
}

struct CatchUp {
    messages: consumer::pull::Ordered,
    bound: u64,
    stream: stream::Stream<()>,
    name: String,
}

impl Drop for CatchUp {
    fn drop(&mut self) {
        // The server would drop the consumer only after its idle threshold: clients that come
        // and go quickly would pile them up until then.
        let (stream, name) = (self.stream.clone(), std::mem::take(&mut self.name));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(err) = stream.delete_consumer(&name).await {
                    tracing::debug!(consumer = name, error = %err, "deleting a catch-up consumer failed");
                }
            });
        }
    }
}

impl Follower {
    /// The next frame; cancel-safe.
    pub async fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Some(item);
            }
            match &mut self.phase {
                Phase::Ended => return None,
                Phase::Joining => match self.room.join(self.through) {
                    Joined::Live(tail, frames) => self.go_live(tail, frames),
                    // Boxed: opening a log read is a large future, and a client waiting here
                    // for live frames should not carry its size for its whole life.
                    Joined::Behind(bound) => match Box::pin(catch_up(
                        self.hub.jetstream(),
                        self.room.id(),
                        self.through + 1,
                        bound,
                    ))
                    .await
                    {
                        Ok(Some(catch_up)) => self.phase = Phase::CatchUp(Box::new(catch_up)),
                        Ok(None) => {
                            self.room.nothing_between(self.through, bound);
                            self.through = bound;
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "reading the conversation from the log failed");
                            self.end(interrupted(self.run));
                        }
                    },
                    Joined::Ended => self.end(interrupted(self.run)),
                },
                Phase::CatchUp(catch_up) => {
                    let next = tokio::select! {
                        _ = self.hub.closing().cancelled() => None,
                        _ = tick(&mut self.ticks) => {
                            self.queue.push_back(keepalive());
                            continue;
                        }
                        next = catch_up.messages.next() => next,
                    };
                    let message = match next {
                        Some(Ok(message)) => message,
                        other => {
                            if let Some(Err(err)) = other {
                                tracing::warn!(error = %err, "reading the conversation from the log failed");
                            }
                            self.end(interrupted(self.run));
                            continue;
                        }
                    };
                    let Ok(info) = message.info() else {
                        self.end(interrupted(self.run));
                        continue;
                    };
                    let (seq, pending) = (info.stream_sequence, info.pending);
                    let bound = catch_up.bound;
                    // This client's catching up is a delivery of the commit, in its trace.
                    let parent = message
                        .headers
                        .as_ref()
                        .and_then(|headers| codec::header(headers, trace::HEADER));
                    trace::record("deliver", trace::SpanKind::Producer, parent, || {
                        for frame in frame::of_message(message.subject.as_str(), &message.payload) {
                            self.accept(Item::new(Some(seq), frame));
                        }
                    });
                    if matches!(self.phase, Phase::Ended) {
                        continue;
                    }
                    self.through = seq;
                    if seq >= bound || pending == 0 {
                        // Everything up to the bound is read (it was in the log already).
                        self.through = seq.max(bound);
                        self.phase = Phase::Joining;
                    }
                }
                Phase::Live { frames, skip } => {
                    let skip = *skip;
                    // No watch on the server's closing here: the room's pump sees it and sends
                    // every live client its last frame (a watch per client would take and
                    // release the shared token's lock for every frame of every client).
                    let next = tokio::select! {
                        _ = tick(&mut self.ticks) => {
                            self.queue.push_back(keepalive());
                            continue;
                        }
                        next = frames.recv() => next,
                    };
                    match next {
                        Ok(item) if item.seq().is_some_and(|seq| seq <= skip) => {}
                        Ok(item) => {
                            let fatal = item.frame().ends_stream();
                            if fatal {
                                self.end(interrupted(self.run));
                            } else {
                                self.accept(item);
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            tracing::info!(conversation_id = %self.room.id(), "dropped a client that fell behind");
                            self.end(slow_consumer(self.run));
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            self.end(interrupted(self.run));
                        }
                    }
                }
            }
        }
    }

    /// Queues a log frame if this client wants it; a run's terminal frame ends a run's follower.
    fn accept(&mut self, item: Item) {
        match self.run {
            None => self.queue.push_back(item),
            Some(run) if item.0.frame.run_id() == Some(run) => {
                let terminal = item.0.frame.terminal();
                self.queue.push_back(item);
                if terminal {
                    self.phase = Phase::Ended;
                }
            }
            Some(_) => {}
        }
    }

    /// Takes the room's recent frames after `through` and its live frames from then on.
    fn go_live(&mut self, tail: Vec<Item>, frames: broadcast::Receiver<Item>) {
        let skip = self.through;
        tail.into_iter().for_each(|item| self.accept(item));
        if !matches!(self.phase, Phase::Ended) {
            self.phase = Phase::Live { frames, skip };
        }
    }

    /// Queues a last frame and ends.
    fn end(&mut self, last: Item) {
        self.queue.push_back(last);
        self.phase = Phase::Ended;
    }
}

/// Opens a read of conversation `id`'s log from `from` up to `bound`; none if there is nothing.
async fn catch_up(
    js: &jetstream::Context,
    id: ConversationId,
    from: u64,
    bound: u64,
) -> Result<Option<CatchUp>, ApiError> {
    let stream = js
        .get_stream_no_info(topology::CONVERSATIONS)
        .await
        .map_err(ApiError::internal)?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: format!("conv.{id}.>"),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        })
        .await
        .map_err(ApiError::internal)?;
    let info = consumer.cached_info();
    let name = info.name.clone();
    let pending = info.num_pending;
    let messages = consumer.messages().await;
    let catch_up = |messages| CatchUp {
        messages,
        bound,
        stream: stream.clone(),
        name: name.clone(),
    };
    match messages {
        Ok(messages) if pending > 0 => Ok(Some(catch_up(messages))),
        Ok(messages) => {
            drop(catch_up(messages));
            Ok(None)
        }
        Err(err) => {
            let _ = stream.delete_consumer(&name).await;
            Err(ApiError::internal(err))
        }
    }
}

/// A `keepalive` frame (no cursor).
pub(crate) fn keepalive() -> Item {
    Item::new(None, Frame::Keepalive)
}

async fn tick(ticks: &mut Option<tokio::time::Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The follower as an SSE response: `id:` = the cursor, `data:` = the frame.
pub fn sse(follower: Follower) -> Response {
    sse_response(futures::stream::unfold(
        follower,
        |mut follower| async move {
            let item = follower.next().await?;
            Some((item, follower))
        },
    ))
}

/// The follower as an SSE response for `caller`, ended with an `error` frame (the refusal's
/// code: `session_revoked`, `access_revoked`, `role_changed`, …) as soon as their access ends.
pub fn sse_for(state: &AppState, caller: &AuthUser, follower: Follower) -> Response {
    let items = futures::stream::unfold(follower, |mut follower| async move {
        let item = follower.next().await?;
        Some((item, follower))
    });
    sse_response(guarded(state.clone(), caller.clone(), items))
}

/// `items` while `caller` may still have them: when the caller's access may have changed
/// ([`crate::app::revocation`]) they are re-checked, and a refusal ends the stream with an
/// `error` frame naming it (within a moment of the logout, revocation or role change).
pub fn guarded(
    state: AppState,
    caller: AuthUser,
    items: impl Stream<Item = Item> + Send + 'static,
) -> impl Stream<Item = Item> + Send + 'static {
    let watch = state.revocations.watch(caller.id);
    futures::stream::unfold(
        Some((Box::pin(items), watch, caller, state)),
        |open| async move {
            let (mut items, mut watch, mut caller, state) = open?;
            loop {
                tokio::select! {
                    item = items.next() => {
                        let item = item?;
                        return Some((item, Some((items, watch, caller, state))));
                    }
                    _ = watch.changed() => match crate::app::access::recheck(&state, &caller).await {
                        Ok(fresh) => caller = fresh,
                        Err(refusal) => {
                            let body = refusal.body();
                            let last = Item::new(None, Frame::End {
                                run_id: None,
                                code: body.code.to_string(),
                                message: body.message.to_string(),
                                retryable: false,
                            });
                            return Some((last, None));
                        }
                    },
                }
            }
        },
    )
}

/// An SSE response of `items`, each written as [`Item::sse`] (made once, shared by every client).
pub fn sse_response(items: impl Stream<Item = Item> + Send + 'static) -> Response {
    let metrics = metrics::global();
    let live = metrics.live("sse");
    let body = Body::from_stream(items.map(move |item| {
        let _counted = &live;
        metrics.frame_sent("sse");
        if item.frame().end_code() == Some("slow_consumer") {
            metrics.slow_client_dropped("sse");
        }
        Ok::<_, Infallible>(item.sse())
    }));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
