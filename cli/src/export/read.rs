//! Reading one stream of the log, in order, from a start up to the last commit it held when the
//! read began (so an export of a live platform ends), with a progress line for people.
//!
//! An ordered consumer (ephemeral, unacknowledged, recreated by the client on a gap) is the
//! cheapest way to walk a stream; nothing is left behind but the consumer, deleted at the end.

use anyhow::Context;
use async_nats::jetstream::{self, consumer};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use std::io::Write;
use std::time::{Duration, Instant};

/// A stream of the log and the subjects of its durable commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    /// The JetStream stream, e.g. `AGENTS`.
    pub stream: &'static str,
    /// The subjects of its commits (`conv.*.ev`: a conversation's live deltas are no commits).
    pub filter: &'static str,
}

impl Source {
    /// The name people use: `agents` for `AGENTS`.
    pub fn short_name(&self) -> String {
        self.stream.to_lowercase()
    }
}

/// The log's streams of commits, in the order an export reads them.
pub const SOURCES: [Source; 4] = [
    Source {
        stream: warren_commands::topology::USERS,
        filter: "user.*",
    },
    Source {
        stream: warren_commands::topology::AGENTS,
        filter: "agent.*",
    },
    Source {
        stream: warren_commands::topology::HOSTS,
        filter: "host.*",
    },
    Source {
        stream: warren_commands::topology::CONVERSATIONS,
        filter: "conv.*.ev",
    },
];

/// The source of a stream's name (`agents` or `AGENTS`).
pub fn source(name: &str) -> Option<Source> {
    SOURCES
        .into_iter()
        .find(|source| source.stream.eq_ignore_ascii_case(name))
}

/// Where a read starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// At this stream sequence.
    Seq(u64),
    /// At the first commit stored at or after this time.
    Time(DateTime<Utc>),
}

/// One stored commit.
pub struct Commit {
    /// Its stream sequence.
    pub seq: u64,
    /// Its subject (`agent.<id>`).
    pub subject: String,
    /// Its body: a JSON array of envelopes.
    pub payload: bytes::Bytes,
}

/// The commits of a stream from a start to the stream's last sequence when the read began (or
/// an earlier end), in order.
pub struct Commits {
    stream: jetstream::stream::Stream,
    consumer: Option<(String, consumer::pull::Ordered)>,
    /// The last sequence this read returns.
    end: u64,
    done: bool,
}

impl Commits {
    /// Opens a read of `source` from `start`, ending at `to` if it comes before the stream's end.
    pub async fn open(
        js: &jetstream::Context,
        source: Source,
        start: Start,
        to: Option<u64>,
    ) -> anyhow::Result<Self> {
        let name = source.stream;
        let stream = js
            .get_stream(name)
            .await
            .with_context(|| format!("opening the stream {name}"))?;
        let last = stream.cached_info().state.last_sequence;
        let end = to.map_or(last, |to| to.min(last));
        let deliver_policy = match start {
            Start::Seq(seq) => consumer::DeliverPolicy::ByStartSequence {
                start_sequence: seq.max(1),
            },
            Start::Time(at) => {
                let nanos = at
                    .timestamp_nanos_opt()
                    .with_context(|| format!("{at} is out of range"))?;
                let start_time = async_nats::datetime::from_nanos(i128::from(nanos))
                    .map_err(|err| anyhow::anyhow!("{at} is out of range: {err}"))?;
                consumer::DeliverPolicy::ByStartTime { start_time }
            }
        };
        let past_end = matches!(start, Start::Seq(seq) if seq > end);
        let mut commits = Self {
            stream,
            consumer: None,
            end,
            done: true,
        };
        if end == 0 || past_end {
            return Ok(commits);
        }
        let ordered = commits
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: source.filter.to_owned(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .with_context(|| format!("reading the stream {name}"))?;
        // Nothing to read (no commit from the start on): no message would ever come.
        if ordered.cached_info().num_pending == 0 {
            let consumer_name = ordered.cached_info().name.clone();
            commits.delete(&consumer_name).await;
            return Ok(commits);
        }
        let consumer_name = ordered.cached_info().name.clone();
        let messages = ordered
            .messages()
            .await
            .with_context(|| format!("reading the stream {name}"))?;
        commits.consumer = Some((consumer_name, messages));
        commits.done = false;
        Ok(commits)
    }

    /// The last sequence this read returns (0: the stream is empty).
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The next commit, or `None` at the end.
    pub async fn next(&mut self) -> anyhow::Result<Option<Commit>> {
        if self.done {
            return Ok(None);
        }
        let Some((_, messages)) = &mut self.consumer else {
            return Ok(None);
        };
        let name = &self.stream.cached_info().config.name;
        let message = messages
            .next()
            .await
            .with_context(|| format!("the read of {name} stopped"))?
            .with_context(|| format!("reading the stream {name}"))?;
        let (seq, pending) = {
            let info = message
                .info()
                .map_err(|err| anyhow::anyhow!("a message of {name} has no sequence: {err}"))?;
            (info.stream_sequence, info.pending)
        };
        // A commit stored after the read began ends it; so does the last commit matching the
        // filter, which may come before the stream's last message (a live delta).
        if seq > self.end {
            self.close().await;
            return Ok(None);
        }
        if seq == self.end || pending == 0 {
            self.close().await;
        }
        let async_nats::Message {
            subject, payload, ..
        } = message.message;
        Ok(Some(Commit {
            seq,
            subject: subject.to_string(),
            payload,
        }))
    }

    /// Ends the read and deletes its consumer, rather than leave it to the server's idle timer.
    async fn close(&mut self) {
        self.done = true;
        if let Some((name, messages)) = self.consumer.take() {
            drop(messages);
            self.delete(&name).await;
        }
    }

    async fn delete(&self, consumer: &str) {
        if let Err(err) = self.stream.delete_consumer(consumer).await {
            tracing::debug!(consumer, error = %err, "deleting an export's consumer failed");
        }
    }
}

/// A progress line on stderr, redrawn at most every tenth of a second; silent unless stderr is
/// a terminal.
pub struct Progress {
    shown: bool,
    drawn: Option<Instant>,
}

impl Progress {
    /// A progress line, drawn when `shown`.
    pub fn new(shown: bool) -> Self {
        Self { shown, drawn: None }
    }

    /// Where the read is: `seq` of `end` in `stream`, `rows` written so far.
    pub fn update(&mut self, stream: &str, seq: u64, end: u64, rows: u64) {
        if !self.shown
            || self
                .drawn
                .is_some_and(|drawn| drawn.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.drawn = Some(Instant::now());
        let percent = (seq * 100).checked_div(end).unwrap_or(100);
        // `\x1b[K` clears what a longer line drawn before left on the right.
        let mut stderr = std::io::stderr().lock();
        let _ = write!(
            stderr,
            "\r{stream}: {seq}/{end} messages read ({percent}%), {rows} rows written\x1b[K"
        );
        let _ = stderr.flush();
    }

    /// Clears the line, before the summary.
    pub fn clear(&mut self) {
        if self.shown && self.drawn.take().is_some() {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[K");
            let _ = stderr.flush();
        }
    }
}
