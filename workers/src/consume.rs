//! The loop every log-driven worker runs: a durable pull consumer (explicit acks, created or
//! reused by name), each message handled and then acked as the handler says — done, retry later,
//! or terminated as unreadable — until shutdown. Replicas of a worker share the consumer, so they
//! share the work.

use async_nats::jetstream::{self, AckKind, consumer};
use futures::StreamExt;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A durable consumer on one stream.
pub struct Durable {
    /// The stream.
    pub stream: &'static str,
    /// The consumer's (and the worker's) name.
    pub name: &'static str,
    /// Which subjects it reads.
    pub filter: &'static str,
    /// How long a handler may take before the message is redelivered.
    pub ack_wait: Duration,
}

/// What handling one message came to.
pub enum Handled {
    /// The side effect is committed: ack.
    Done,
    /// It failed for now (a dependency is down): redeliver after `after`.
    Retry {
        /// Why, for the log.
        reason: String,
        /// The redelivery delay.
        after: Duration,
    },
    /// It can never be handled (unreadable): terminate it, with the reason logged.
    Poison(String),
}

/// The consumer could not be set up or read.
#[derive(Debug, thiserror::Error)]
#[error("consumer {name} failed")]
pub struct ConsumeError {
    name: &'static str,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// Reads `durable` until `shutdown`, handing each message to `handle` and acking as it says,
/// one message at a time, in order.
pub async fn consume<F, Fut>(
    js: &jetstream::Context,
    durable: &Durable,
    shutdown: &CancellationToken,
    handle: F,
) -> Result<(), ConsumeError>
where
    F: Fn(async_nats::Message) -> Fut,
    Fut: Future<Output = Handled>,
{
    consume_concurrently(js, durable, shutdown, 1, handle).await
}

/// [`consume`] with up to `limit` messages handled at once (in any order: the handlers must
/// not depend on it, e.g. because each acts on the current state under a per-key lock). On
/// shutdown, messages in hand are finished and acked first.
pub async fn consume_concurrently<F, Fut>(
    js: &jetstream::Context,
    durable: &Durable,
    shutdown: &CancellationToken,
    limit: usize,
    handle: F,
) -> Result<(), ConsumeError>
where
    F: Fn(async_nats::Message) -> Fut,
    Fut: Future<Output = Handled>,
{
    let fail = |source: Box<dyn std::error::Error + Send + Sync>| ConsumeError {
        name: durable.name,
        source,
    };
    let stream = js
        .get_stream_no_info(durable.stream)
        .await
        .map_err(|e| fail(e.into()))?;
    let consumer = stream
        .get_or_create_consumer(
            durable.name,
            consumer::pull::Config {
                durable_name: Some(durable.name.to_owned()),
                filter_subject: durable.filter.to_owned(),
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: durable.ack_wait,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| fail(e.into()))?;
    let mut messages = consumer.messages().await.map_err(|e| fail(e.into()))?;
    warren_commands::metrics::watch_durable(js, durable.stream, durable.name);
    let handle = &handle;
    let mut in_hand = futures::stream::FuturesUnordered::new();
    let mut open = true;
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled(), if open => {
                open = false;
                continue;
            }
            Some(acked) = in_hand.next(), if !in_hand.is_empty() => {
                acked?;
                continue;
            }
            next = messages.next(), if open && in_hand.len() < limit.max(1) => match next {
                Some(message) => message.map_err(|e| fail(e.into()))?,
                None => {
                    open = false;
                    continue;
                }
            },
            else => return Ok(()),
        };
        let (message, acker) = message.split();
        in_hand.push(async move {
            let subject = message.subject.clone();
            let ack = match handle(message).await {
                Handled::Done => AckKind::Ack,
                Handled::Retry { reason, after } => {
                    tracing::warn!(consumer = durable.name, %subject, reason, "handling failed, retrying later");
                    AckKind::Nak(Some(after))
                }
                Handled::Poison(reason) => {
                    tracing::error!(consumer = durable.name, %subject, reason, "unreadable commit, skipped");
                    AckKind::Term
                }
            };
            acker.ack_with(ack).await.map_err(fail)
        });
    }
}
