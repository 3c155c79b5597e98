//! Following a conversation's log: an ordered consumer on `conv.<id>.>` from a stream sequence,
//! its messages turned into frames ([`crate::chat::frames`]) and handed to one client through a
//! bounded channel. Every frame carries its message's stream sequence, the cursor a client
//! resumes from. SSE streams are built on it ([`sse`]), and so is the WebSocket gateway.

use crate::chat::frames;
use crate::error::ApiError;
use crate::state::AppState;
use crate::views;
use async_nats::jetstream::{self, consumer};
use axum::response::sse::Event;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use warren_commands::topology;
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
        expired: Option<u64>,
        /// The oldest sequence the log still keeps.
        oldest: u64,
    },
}

impl Start {
    /// Decides where a client with cursor `after` starts; snapshots hold `limit` messages.
    pub async fn of(
        state: &AppState,
        conversation: Uuid,
        after: Option<u64>,
        limit: i64,
    ) -> Result<Self, ApiError> {
        let oldest = state
            .commands
            .jetstream()
            .get_stream(topology::CONVERSATIONS)
            .await
            .map_err(ApiError::internal)?
            .cached_info()
            .state
            .first_sequence;
        if let Some(after) = after.filter(|after| after.saturating_add(1) >= oldest) {
            return Ok(Start::After(after));
        }
        let (checkpoint, messages) =
            views::message_snapshot(&state.db, conversation, limit).await?;
        Ok(Start::Snapshot {
            checkpoint,
            messages,
            expired: after,
            oldest,
        })
    }
}

/// One frame for the client: its cursor (none for keepalives) and its JSON.
#[derive(Clone, Debug)]
pub struct Item {
    /// The stream sequence of the log message it came from.
    pub seq: Option<u64>,
    /// The frame (with a `type`).
    pub data: Value,
}

/// Starts following; the receiver ends when the run ends (for one run), the log read fails (a
/// last `stream_interrupted` error frame), the server closes, or the client drops it.
pub async fn follow(
    js: &jetstream::Context,
    closing: CancellationToken,
    follow: Follow,
) -> Result<mpsc::Receiver<Item>, ApiError> {
    let Follow {
        conversation_id,
        from_seq,
        run,
        opening,
        keepalive,
    } = follow;
    let stream = js
        .get_stream_no_info(topology::CONVERSATIONS)
        .await
        .map_err(ApiError::internal)?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: format!("conv.{conversation_id}.>"),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from_seq.max(1),
            },
            ..Default::default()
        })
        .await
        .map_err(ApiError::internal)?;
    let name = consumer.cached_info().name.clone();
    let messages = consumer.messages().await.map_err(ApiError::internal)?;
    let (tx, rx) = mpsc::channel::<Item>(CLIENT_BUFFER);
    let pump = Pump {
        tx,
        closing,
        conversation_id,
        run,
    };
    tokio::spawn(async move {
        pump.run(messages, opening, keepalive).await;
        // The server would drop the consumer only after 30 s idle: clients that come and go
        // quickly would pile them up until then.
        if let Err(err) = stream.delete_consumer(&name).await {
            tracing::debug!(consumer = name, error = %err, "deleting a follower's consumer failed");
        }
    });
    Ok(rx)
}

/// Moves one follower's log into its client's channel.
struct Pump {
    tx: mpsc::Sender<Item>,
    closing: CancellationToken,
    conversation_id: ConversationId,
    run: Option<RunId>,
}

impl Pump {
    /// Until the client goes, the run ends, the server closes or the log read fails.
    async fn run(
        self,
        mut messages: consumer::pull::Ordered,
        opening: Vec<Item>,
        keepalive: Option<Duration>,
    ) {
        let Pump {
            tx,
            closing,
            conversation_id,
            run,
        } = self;
        for item in opening {
            if tx.send(item).await.is_err() {
                return;
            }
        }
        let mut ticks = keepalive.map(tokio::time::interval);
        if let Some(ticks) = &mut ticks {
            ticks.tick().await;
        }
        loop {
            let message = tokio::select! {
                _ = tx.closed() => return,
                _ = closing.cancelled() => None,
                _ = tick(&mut ticks) => {
                    let item = Item { seq: None, data: json!({"type": "keepalive"}) };
                    if tx.send(item).await.is_err() {
                        return;
                    }
                    continue;
                }
                next = messages.next() => next,
            };
            let message = match message {
                Some(Ok(message)) => message,
                other => {
                    if let Some(Err(err)) = other {
                        tracing::warn!(%conversation_id, error = %err, "reading the conversation from the log failed");
                    }
                    let message = "the live stream was interrupted; resume with the last cursor";
                    let data = json!({
                        "type": "error", "run_id": run, "code": "stream_interrupted",
                        "message": message, "content": message, "retryable": true,
                    });
                    let _ = tx.send(Item { seq: None, data }).await;
                    return;
                }
            };
            let info = message.info().ok();
            let seq = info.as_ref().map(|info| info.stream_sequence);
            // While replaying history the client sets the pace; once live, it must keep up.
            let live = info.is_none_or(|info| info.pending == 0);
            for frame in frames::of_message(message.subject.as_str(), &message.payload, run) {
                let ends = run.is_some() && frame.terminal;
                let item = Item {
                    seq,
                    data: frame.data,
                };
                if live && tx.capacity() == 1 {
                    // The client stopped reading: drop it (it resumes with its cursor) rather
                    // than hold its consumer and buffer without bound.
                    let message = "this client fell behind; resume after the last cursor it got";
                    let data = json!({
                        "type": "error", "run_id": run, "code": "slow_consumer",
                        "message": message, "content": message, "retryable": true,
                    });
                    let _ = tx.try_send(Item { seq: None, data });
                    tracing::info!(%conversation_id, "dropped a client that fell behind");
                    return;
                }
                if tx.send(item).await.is_err() || ends {
                    return;
                }
            }
        }
    }
}

async fn tick(ticks: &mut Option<tokio::time::Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The frames as SSE events: `id:` = the cursor, `data:` = the frame.
pub fn sse(
    mut frames: mpsc::Receiver<Item>,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    futures::stream::poll_fn(move |cx| frames.poll_recv(cx)).map(|item| {
        let event = Event::default().data(item.data.to_string());
        Ok(match item.seq {
            Some(seq) => event.id(seq.to_string()),
            None => event,
        })
    })
}
