//! [`Store`]: a `cqrs_es::EventStore` on JetStream, with an in-memory aggregate cache and the
//! bounded-retry command loop every adapter calls.
//!
//! One command's events are one message on the aggregate's subject. The append carries
//! `Nats-Expected-Last-Subject-Sequence` (0 for a new aggregate) and `Nats-Msg-Id` = command id.
//! The cache is trusted optimistically: a command is decided on the cached state and appended in one
//! round trip; if another writer moved the subject, the append fails with a conflict, the entry
//! catches up from its last sequence (never from zero) and the command is decided again.
//!
//! Within one process, commands on the same aggregate are serialized by the entry's lock, so local
//! writers never conflict with each other; conflicts only come from other processes.

use crate::codec::{self, HEADER_ACTOR, HEADER_EVENT_TYPES, HEADER_MSG_ID, HEADER_TRACEPARENT};
use crate::error::{CommandError, StoreError};
use crate::{metrics, trace};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage, stream::DirectGetErrorKind};
use chrono::Utc;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{
    Aggregate, AggregateContext, AggregateError, DomainEvent, EventEnvelope, EventStore,
};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OwnedMutexGuard;
use warren_domain::ids::{CommandId, EventId};
use warren_domain::{Actor, Envelope};

/// Metadata key: the command id (also the message's dedupe id).
pub const META_COMMAND_ID: &str = "command_id";
/// Metadata key: the actor, in [`Actor::to_header`] form.
pub const META_ACTOR: &str = "actor";
/// Metadata key: the W3C `traceparent`.
pub const META_TRACEPARENT: &str = "traceparent";
/// Metadata key set on loaded envelopes: the commit's stream sequence.
pub const META_STREAM_SEQUENCE: &str = "stream_sequence";

/// How many recent command ids each cached aggregate remembers for idempotent retries. Older
/// repeats are still caught by the stream's dedupe window.
const RECENT_COMMANDS: usize = 256;

/// An aggregate that lives in the log: which stream holds it and on which subject.
pub trait Stored: Aggregate<Services = ()> + Clone + 'static
where
    Self::Command: Clone + Send + Sync,
{
    /// The stream holding this aggregate type.
    const STREAM: &'static str;
    /// The subject of one aggregate's commits.
    fn subject(aggregate_id: &str) -> String;
}

/// One stored commit, as read back.
struct Commit<E> {
    sequence: u64,
    msg_id: Option<String>,
    envelopes: Vec<Envelope<E>>,
}

/// Who issued a command and why it can be traced; carried onto every event it produces.
#[derive(Clone, Debug)]
pub struct CommandMeta {
    /// The command id: a retry with the same id is stored once.
    pub command_id: CommandId,
    /// Who issued the command.
    pub actor: Actor,
    /// W3C trace context of the request; unset, the task's current one ([`trace::current`]),
    /// else a new trace.
    pub traceparent: Option<String>,
}

impl CommandMeta {
    /// A new command id issued by `actor`.
    pub fn new(actor: Actor) -> Self {
        Self {
            command_id: CommandId::new(),
            actor,
            traceparent: None,
        }
    }

    fn stamp(&self) -> Stamp {
        Stamp {
            command_id: self.command_id,
            actor: self.actor.clone(),
            traceparent: self
                .traceparent
                .clone()
                .or_else(trace::current)
                .unwrap_or_else(trace::fresh),
        }
    }
}

/// What a commit carries besides its events: from a [`CommandMeta`] directly, or from the
/// metadata map of the `cqrs_es` interface.
struct Stamp {
    command_id: CommandId,
    actor: Actor,
    traceparent: String,
}

impl Stamp {
    fn of_metadata(metadata: &HashMap<String, String>) -> Result<Self, StoreError> {
        Ok(Self {
            command_id: metadata
                .get(META_COMMAND_ID)
                .and_then(|id| id.parse().ok())
                .ok_or(StoreError::MissingMetadata(META_COMMAND_ID))?,
            actor: metadata
                .get(META_ACTOR)
                .and_then(|a| Actor::from_header(a))
                .ok_or(StoreError::MissingMetadata(META_ACTOR))?,
            traceparent: metadata
                .get(META_TRACEPARENT)
                .cloned()
                .unwrap_or_else(trace::fresh),
        })
    }
}

/// The result of a command that was accepted.
#[derive(Debug)]
pub struct Committed<E> {
    /// The events it produced (empty for a duplicate or a no-op).
    pub events: Vec<Envelope<E>>,
    /// Stream sequence of the commit (of the earlier commit, for a duplicate).
    pub sequence: u64,
    /// True when this command id had already been stored; nothing was appended again.
    pub duplicate: bool,
}

/// One cached aggregate.
struct Entry<A> {
    aggregate: A,
    version: usize,
    last_seq: u64,
    /// Loaded at least once, and not known to be behind the log.
    fresh: bool,
    recent: VecDeque<(String, u64)>,
}

impl<A: Default> Default for Entry<A> {
    fn default() -> Self {
        Self {
            aggregate: A::default(),
            version: 0,
            last_seq: 0,
            fresh: false,
            recent: VecDeque::new(),
        }
    }
}

impl<A> Entry<A> {
    fn remember(&mut self, command_id: String, seq: u64) {
        if self.recent.len() == RECENT_COMMANDS {
            self.recent.pop_front();
        }
        self.recent.push_back((command_id, seq));
    }

    fn seen(&self, command_id: &str) -> Option<u64> {
        self.recent
            .iter()
            .rev()
            .find(|(id, _)| id == command_id)
            .map(|(_, seq)| *seq)
    }
}

/// The loaded state handed to `cqrs_es`; holds the entry's lock until committed or dropped.
pub struct StoreContext<A: Aggregate> {
    aggregate_id: String,
    aggregate: A,
    entry: OwnedMutexGuard<Entry<A>>,
}

impl<A: Aggregate> AggregateContext<A> for StoreContext<A> {
    fn aggregate(&mut self) -> &mut A {
        &mut self.aggregate
    }
}

/// Cached aggregates by id, each behind its own async lock (held across decide and append).
type Cache<A> = Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<Entry<A>>>>>>;

/// The JetStream event store for aggregate type `A`. Cheap to clone.
pub struct Store<A: Stored>
where
    A::Command: Clone + Send + Sync,
{
    js: jetstream::Context,
    stream: jetstream::stream::Stream<()>,
    cache: Cache<A>,
    capacity: usize,
    max_attempts: u32,
}

impl<A: Stored> Clone for Store<A>
where
    A::Command: Clone + Send + Sync,
{
    fn clone(&self) -> Self {
        Self {
            js: self.js.clone(),
            stream: self.stream.clone(),
            cache: self.cache.clone(),
            capacity: self.capacity,
            max_attempts: self.max_attempts,
        }
    }
}

impl<A: Stored> Store<A>
where
    A::Command: Clone + Send + Sync,
{
    /// Opens the store on an existing stream (see [`crate::topology::ensure`]).
    pub async fn open(js: jetstream::Context) -> Result<Self, jetstream::context::GetStreamError> {
        let stream = js.get_stream_no_info(A::STREAM).await?;
        Ok(Self {
            js,
            stream,
            cache: Arc::default(),
            capacity: 100_000,
            max_attempts: 5,
        })
    }

    /// Sets how many times a conflicting command is decided again before giving up.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sets how many aggregates the cache keeps.
    pub fn with_cache_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Executes a command: decide on the (cached) state, append, and on conflict catch up and
    /// decide again, at most `max_attempts` times. A command id already stored is not stored again.
    #[tracing::instrument(level = "debug", skip_all, fields(aggregate = A::STREAM, aggregate_id))]
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        meta: &CommandMeta,
    ) -> Result<Committed<A::Event>, CommandError<A::Error>> {
        // The append is a span of its own: the commit's `traceparent` is its context, so the
        // work the commit causes continues from here.
        let result = trace::child("append", trace::SpanKind::Producer, async {
            trace::attribute("warren.aggregate", A::STREAM);
            self.execute_once(aggregate_id, command, meta).await
        })
        .await;
        let outcome = match &result {
            Ok(committed) if committed.duplicate => "duplicate",
            Ok(committed) if committed.events.is_empty() => "unchanged",
            Ok(_) => "committed",
            Err(CommandError::Rejected(_)) => "rejected",
            Err(CommandError::Conflict { .. }) => "conflict",
            Err(_) => "error",
        };
        metrics::global().command(A::STREAM, outcome);
        result
    }

    async fn execute_once(
        &self,
        aggregate_id: &str,
        command: A::Command,
        meta: &CommandMeta,
    ) -> Result<Committed<A::Event>, CommandError<A::Error>> {
        let command_id = meta.command_id.to_string();
        let mut refreshed_after_rejection = false;
        for attempt in 1..=self.max_attempts {
            let mut ctx = self.lock_loaded(aggregate_id).await?;
            if let Some(sequence) = ctx.entry.seen(&command_id) {
                return Ok(Committed {
                    events: Vec::new(),
                    sequence,
                    duplicate: true,
                });
            }
            let sink = EventSink::default();
            if let Err(rejection) = ctx.aggregate.handle(command.clone(), &(), &sink).await {
                // A rejection decided on a cached state may be stale: catch up once and decide again.
                if !refreshed_after_rejection {
                    refreshed_after_rejection = true;
                    let before = ctx.entry.last_seq;
                    self.catch_up(aggregate_id, &mut ctx.entry).await?;
                    if ctx.entry.last_seq != before {
                        continue;
                    }
                }
                return Err(CommandError::Rejected(rejection));
            }
            let events = sink.collect().await;
            if events.is_empty() {
                return Ok(Committed {
                    events: Vec::new(),
                    sequence: ctx.entry.last_seq,
                    duplicate: false,
                });
            }
            let appending = Instant::now();
            let appended = self.append(events, ctx, meta.stamp()).await;
            metrics::global()
                .append_duration
                .observe(appending.elapsed().as_secs_f64());
            match appended {
                Ok(committed) => return Ok(committed),
                Err(StoreError::Conflict) => {
                    metrics::global().append_retries.inc();
                    tracing::debug!(aggregate_id, attempt, "append conflict, retrying");
                }
                Err(StoreError::Ambiguous(source)) => {
                    tracing::warn!(aggregate_id, attempt, error = %source, "append outcome unknown, checking the log");
                }
                Err(other) => return Err(other.into()),
            }
            // Jitter so racing processes do not collide again in lockstep.
            let jitter = rand::random_range(0..(2u64 << attempt.min(6)));
            tokio::time::sleep(Duration::from_millis(jitter)).await;
        }
        Err(CommandError::Conflict {
            aggregate_id: aggregate_id.to_owned(),
            attempts: self.max_attempts,
        })
    }

    /// The aggregate's current state and the stream sequence of its last commit (0 if none),
    /// always caught up with the log: one direct get when nothing changed. For callers that must
    /// see other processes' writes at once (e.g. an authorization check after a revoke).
    pub async fn load(&self, aggregate_id: &str) -> Result<(A, u64), StoreError> {
        let mut ctx = self.lock_loaded(aggregate_id).await?;
        self.catch_up(aggregate_id, &mut ctx.entry).await?;
        Ok((ctx.entry.aggregate.clone(), ctx.entry.last_seq))
    }

    /// Locks the aggregate's cache entry and brings it up to date if it is not known fresh.
    async fn lock_loaded(&self, aggregate_id: &str) -> Result<StoreContext<A>, StoreError> {
        let slot = {
            let mut cache = self
                .cache
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match cache.get(aggregate_id) {
                Some(slot) => slot.clone(),
                None => {
                    if cache.len() >= self.capacity {
                        // Drop every entry nobody is using; simple, and a miss only costs a
                        // catch-up.
                        cache.retain(|_, slot| Arc::strong_count(slot) > 1);
                    }
                    cache.entry(aggregate_id.to_owned()).or_default().clone()
                }
            }
        };
        let mut entry = slot.lock_owned().await;
        if !entry.fresh {
            self.catch_up(aggregate_id, &mut entry).await?;
        }
        let aggregate = entry.aggregate.clone();
        Ok(StoreContext {
            aggregate_id: aggregate_id.to_owned(),
            aggregate,
            entry,
        })
    }

    /// Applies every commit after the entry's last sequence.
    async fn catch_up(&self, aggregate_id: &str, entry: &mut Entry<A>) -> Result<(), StoreError> {
        let subject = A::subject(aggregate_id);
        while let Some(commit) = self.next_commit(&subject, entry.last_seq + 1).await? {
            for envelope in &commit.envelopes {
                entry.aggregate.apply(envelope.event.clone());
            }
            entry.version += commit.envelopes.len();
            entry.last_seq = commit.sequence;
            if let Some(id) = commit.msg_id {
                entry.remember(id, commit.sequence);
            }
        }
        entry.fresh = true;
        Ok(())
    }

    /// The aggregate's commits with a stream sequence below `below` (all of them without one),
    /// oldest first, each as its sequence and events: for readers that need the log's order
    /// rather than the folded state (a conversation's history, `crate::history`).
    pub async fn commits(
        &self,
        aggregate_id: &str,
        below: Option<u64>,
    ) -> Result<Vec<(u64, Vec<A::Event>)>, StoreError> {
        let subject = A::subject(aggregate_id);
        let mut commits = Vec::new();
        let mut next = 1;
        while let Some(commit) = self.next_commit(&subject, next).await? {
            if below.is_some_and(|below| commit.sequence >= below) {
                break;
            }
            next = commit.sequence + 1;
            let events = commit.envelopes.into_iter().map(|e| e.event).collect();
            commits.push((commit.sequence, events));
        }
        Ok(commits)
    }

    /// The first commit on `subject` at or after stream sequence `from`, if any.
    async fn next_commit(
        &self,
        subject: &str,
        from: u64,
    ) -> Result<Option<Commit<A::Event>>, StoreError> {
        let message = match self
            .stream
            .direct_get_next_for_subject(subject, Some(from))
            .await
        {
            Ok(message) => message,
            Err(err) if err.kind() == DirectGetErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(StoreError::ReadFailed {
                    subject: subject.to_owned(),
                    source: Box::new(err),
                });
            }
        };
        let envelopes =
            codec::decode::<A::Event>(&message.payload).map_err(|source| StoreError::Decode {
                subject: subject.to_owned(),
                sequence: message.sequence,
                source,
            })?;
        Ok(Some(Commit {
            sequence: message.sequence,
            msg_id: codec::header(&message.headers, HEADER_MSG_ID).map(str::to_owned),
            envelopes,
        }))
    }

    /// Appends one commit with the expected-sequence check. On success the cache takes the new state;
    /// on any failure the entry is marked stale so the next load catches up.
    async fn append(
        &self,
        events: Vec<A::Event>,
        mut ctx: StoreContext<A>,
        stamp: Stamp,
    ) -> Result<Committed<A::Event>, StoreError> {
        let Stamp {
            command_id,
            actor,
            traceparent,
        } = stamp;
        let occurred_at = Utc::now();
        let envelopes: Vec<Envelope<A::Event>> = events
            .into_iter()
            .map(|event| Envelope {
                id: EventId::new(),
                version: event.event_version(),
                aggregate_id: ctx.aggregate_id.clone(),
                command_id,
                actor: actor.clone(),
                occurred_at,
                event,
            })
            .collect();
        let body = codec::encode(&envelopes).map_err(StoreError::Encode)?;
        let types: Vec<String> = envelopes.iter().map(|e| e.event.event_type()).collect();
        let command_text = command_id.to_string();
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_ACTOR, actor.to_header().as_str());
        headers.insert(HEADER_TRACEPARENT, traceparent.as_str());
        headers.insert(HEADER_EVENT_TYPES, types.join(",").as_str());
        let publish = PublishMessage::build()
            .headers(headers)
            .message_id(command_text.clone())
            .expected_last_subject_sequence(ctx.entry.last_seq)
            .payload(body.into());

        let subject = A::subject(&ctx.aggregate_id);
        let ack = async { self.js.send_publish(subject, publish).await?.await }.await;
        let ack = match ack {
            Ok(ack) => ack,
            Err(err) => {
                ctx.entry.fresh = false;
                return Err(err.into());
            }
        };
        if ack.duplicate {
            // Stored before, outside our memory of recent commands: the log is unchanged.
            ctx.entry.fresh = false;
            return Ok(Committed {
                events: Vec::new(),
                sequence: ack.sequence,
                duplicate: true,
            });
        }
        let entry = &mut ctx.entry;
        entry.aggregate = ctx.aggregate;
        entry.version += envelopes.len();
        entry.last_seq = ack.sequence;
        entry.remember(command_text, ack.sequence);
        Ok(Committed {
            events: envelopes,
            sequence: ack.sequence,
            duplicate: false,
        })
    }
}

impl<A: Stored> EventStore<A> for Store<A>
where
    A::Command: Clone + Send + Sync,
{
    type AC = StoreContext<A>;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        let subject = A::subject(aggregate_id);
        let mut out = Vec::new();
        let mut next = 1;
        loop {
            let message = match self
                .stream
                .direct_get_next_for_subject(subject.as_str(), Some(next))
                .await
            {
                Ok(message) => message,
                Err(err) if err.kind() == DirectGetErrorKind::NotFound => break,
                Err(err) => return Err(AggregateError::DatabaseConnectionError(Box::new(err))),
            };
            let envelopes = codec::decode::<A::Event>(&message.payload)
                .map_err(|e| AggregateError::DeserializationError(Box::new(e)))?;
            for envelope in envelopes {
                out.push(EventEnvelope {
                    aggregate_id: aggregate_id.to_owned(),
                    sequence: out.len() + 1,
                    payload: envelope.event,
                    metadata: HashMap::from([
                        (META_COMMAND_ID.to_owned(), envelope.command_id.to_string()),
                        (META_ACTOR.to_owned(), envelope.actor.to_header()),
                        (
                            META_STREAM_SEQUENCE.to_owned(),
                            message.sequence.to_string(),
                        ),
                    ]),
                });
            }
            next = message.sequence + 1;
        }
        Ok(out)
    }

    async fn load_aggregate(
        &self,
        aggregate_id: &str,
    ) -> Result<StoreContext<A>, AggregateError<A::Error>> {
        self.lock_loaded(aggregate_id)
            .await
            .map_err(into_aggregate_error)
    }

    async fn commit(
        &self,
        events: Vec<A::Event>,
        context: StoreContext<A>,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let base = context.entry.version;
        let aggregate_id = context.aggregate_id.clone();
        let stamp = Stamp::of_metadata(&metadata).map_err(into_aggregate_error)?;
        let committed = self
            .append(events, context, stamp)
            .await
            .map_err(into_aggregate_error)?;
        Ok(committed
            .events
            .into_iter()
            .enumerate()
            .map(|(i, envelope)| EventEnvelope {
                aggregate_id: aggregate_id.clone(),
                sequence: base + i + 1,
                payload: envelope.event,
                metadata: metadata.clone(),
            })
            .collect())
    }
}

fn into_aggregate_error<E: std::error::Error>(err: StoreError) -> AggregateError<E> {
    match err {
        StoreError::Conflict => AggregateError::AggregateConflict,
        StoreError::Decode { .. } => AggregateError::DeserializationError(Box::new(err)),
        StoreError::ReadFailed { .. } | StoreError::Ambiguous(_) | StoreError::AppendFailed(_) => {
            AggregateError::DatabaseConnectionError(Box::new(err))
        }
        other => AggregateError::UnexpectedError(Box::new(other)),
    }
}
