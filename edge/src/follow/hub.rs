//! The fan-out hub: one upstream read of each followed conversation per edge process, shared by
//! all of the process's clients of it.
//!
//! A [`Room`] is a conversation somebody here follows. Its pump reads the conversation's log
//! (`conv.<id>.>`, an ordered consumer started at the stream's end when the room opens), turns
//! each message into frames once ([`Item`]), keeps the last [`RING`] of them and hands each to a
//! broadcast channel every live client of the room reads. A client joins with the sequence it has
//! everything up to: if the ring covers what comes after it, it takes the ring's tail and the
//! channel from the same instant (no gap, no repeat); otherwise it reads the missing part of the
//! log itself first ([`super::Follower`]). The room closes when its last client goes.

use super::Item;
use crate::frame;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use tokio::sync::{OnceCell, broadcast};
use tokio_util::sync::CancellationToken;
use warren_commands::{codec, topology, trace};
use warren_domain::ids::ConversationId;

/// Frames a room keeps for clients that join a little behind it.
pub const RING: usize = 128;

/// The rooms of one edge process. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    js: jetstream::Context,
    closing: CancellationToken,
    rooms: Mutex<HashMap<ConversationId, Weak<Room>>>,
}

/// Why a room could not open.
#[derive(Debug, thiserror::Error)]
#[error("opening the conversation's live read failed: {0}")]
pub struct OpenError(String);

impl Hub {
    /// A hub reading from `js`; its rooms end (with `stream_interrupted`) when `closing` fires.
    pub fn new(js: jetstream::Context, closing: CancellationToken) -> Self {
        Self {
            inner: Arc::new(Inner {
                js,
                closing,
                rooms: Mutex::default(),
            }),
        }
    }

    /// The JetStream context rooms and catching-up clients read from.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.js
    }

    /// Cancelled when the server shuts down.
    pub fn closing(&self) -> &CancellationToken {
        &self.inner.closing
    }

    /// How many conversations have an open room here.
    pub fn rooms(&self) -> usize {
        lock(&self.inner.rooms)
            .values()
            .filter(|room| room.strong_count() > 0)
            .count()
    }

    /// The open room of a conversation, opening it if needed.
    pub async fn room(&self, id: ConversationId) -> Result<Arc<Room>, OpenError> {
        let mut stale = None;
        let room = {
            let mut rooms = lock(&self.inner.rooms);
            match rooms.get(&id).and_then(Weak::upgrade) {
                Some(room) if !room.ended() => room,
                found => {
                    // An ended room is dropped outside the lock: its drop takes the lock.
                    stale = found;
                    let room = Arc::new(Room {
                        id,
                        hub: Arc::downgrade(&self.inner),
                        opened: OnceCell::new(),
                        state: Mutex::new(State {
                            ring: VecDeque::new(),
                            covered_from: u64::MAX,
                            ended: false,
                        }),
                        tx: broadcast::channel(super::CLIENT_BUFFER).0,
                        stop: CancellationToken::new(),
                    });
                    rooms.insert(id, Arc::downgrade(&room));
                    room
                }
            }
        };
        drop(stale);
        room.opened
            .get_or_try_init(|| room.open(&self.inner))
            .await?;
        Ok(room)
    }
}

/// One conversation followed by clients of this process.
pub struct Room {
    id: ConversationId,
    hub: Weak<Inner>,
    opened: OnceCell<()>,
    state: Mutex<State>,
    tx: broadcast::Sender<Item>,
    /// Stops the pump when the last client goes.
    stop: CancellationToken,
}

struct State {
    /// The latest frames, oldest first.
    ring: VecDeque<Item>,
    /// The ring holds every frame of the log messages after this sequence.
    covered_from: u64,
    /// The upstream read failed or the server is closing: no more frames.
    ended: bool,
}

/// What a client joining a room gets.
pub enum Joined {
    /// The ring's frames after its sequence, and the live frames from then on.
    Live(Vec<Item>, broadcast::Receiver<Item>),
    /// The ring does not reach back that far: read the log up to this sequence first.
    Behind(u64),
    /// The room has ended; its last frame says why.
    Ended,
}

impl Room {
    /// Starts the pump at the end of the log.
    async fn open(self: &Arc<Self>, hub: &Inner) -> Result<(), OpenError> {
        let failed = |err: &dyn std::fmt::Display| OpenError(err.to_string());
        let stream = hub
            .js
            .get_stream(topology::CONVERSATIONS)
            .await
            .map_err(|e| failed(&e))?;
        let last = stream.cached_info().state.last_sequence;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: format!("conv.{}.>", self.id),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: last + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| failed(&e))?;
        let name = consumer.cached_info().name.clone();
        let messages = consumer.messages().await.map_err(|e| failed(&e))?;
        self.lock().covered_from = last;
        let pump = Pump {
            room: Arc::downgrade(self),
            stop: self.stop.clone(),
            closing: hub.closing.clone(),
            id: self.id,
        };
        tokio::spawn(async move {
            pump.run(messages).await;
            if let Err(err) = stream.delete_consumer(&name).await {
                tracing::debug!(consumer = name, error = %err, "deleting a room's consumer failed");
            }
        });
        Ok(())
    }

    /// The conversation.
    pub fn id(&self) -> ConversationId {
        self.id
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn ended(&self) -> bool {
        self.lock().ended
    }

    /// Joins a client that has every frame up to sequence `through`.
    pub fn join(&self, through: u64) -> Joined {
        let state = self.lock();
        if state.ended {
            return Joined::Ended;
        }
        if through < state.covered_from {
            return Joined::Behind(state.covered_from);
        }
        let start = state
            .ring
            .partition_point(|item| item.seq().is_some_and(|seq| seq <= through));
        let tail = state.ring.range(start..).cloned().collect();
        Joined::Live(tail, self.tx.subscribe())
    }

    /// A client read the log after `through` up to `bound` and found nothing of this
    /// conversation there: if the ring still starts at `bound`, it starts at `through` as well,
    /// and the next client with that cursor need not read the log.
    pub fn nothing_between(&self, through: u64, bound: u64) {
        let mut state = self.lock();
        if state.covered_from == bound {
            state.covered_from = through;
        }
    }

    /// One log message's frames, to the ring and to every live client.
    fn publish(&self, items: Vec<Item>) {
        let mut state = self.lock();
        for item in items {
            if state.ring.len() == RING
                && let Some(oldest) = state.ring.pop_front()
            {
                state.covered_from = oldest.seq().unwrap_or(state.covered_from);
            }
            state.ring.push_back(item.clone());
            // No receiver is not an error: clients come and go.
            let _ = self.tx.send(item);
        }
    }

    /// Ends the room: every client gets `stream_interrupted` and resumes with its cursor.
    fn interrupt(&self) {
        let mut state = self.lock();
        state.ended = true;
        let _ = self.tx.send(super::interrupted(None));
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(hub) = self.hub.upgrade() {
            let mut rooms = lock(&hub.rooms);
            if rooms
                .get(&self.id)
                .is_some_and(|room| room.strong_count() == 0)
            {
                rooms.remove(&self.id);
            }
        }
    }
}

/// Reads one room's log until its last client goes, the server closes or the read fails.
struct Pump {
    room: Weak<Room>,
    stop: CancellationToken,
    closing: CancellationToken,
    id: ConversationId,
}

impl Pump {
    async fn run(self, mut messages: consumer::pull::Ordered) {
        loop {
            let next = tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = self.closing.cancelled() => None,
                next = messages.next() => next,
            };
            let Some(room) = self.room.upgrade() else {
                return;
            };
            let message = match next {
                Some(Ok(message)) => message,
                other => {
                    if let Some(Err(err)) = other {
                        tracing::warn!(conversation_id = %self.id, error = %err, "reading the conversation from the log failed");
                    }
                    room.interrupt();
                    return;
                }
            };
            let seq = message.info().ok().map(|info| info.stream_sequence);
            let items = frame::of_message(message.subject.as_str(), &message.payload)
                .into_iter()
                .map(|frame| Item::new(seq, frame))
                .collect();
            // The edge's hop of the commit's trace: handing it to every client of the room.
            let parent = message
                .headers
                .as_ref()
                .and_then(|headers| codec::header(headers, trace::HEADER));
            trace::record("deliver", trace::SpanKind::Producer, parent, || {
                room.publish(items);
            });
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind: keep going with it.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
