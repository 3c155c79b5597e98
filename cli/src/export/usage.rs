//! `warren export usage`: every usage fact of the log in a time window, one row each, as CSV,
//! JSON Lines or Parquet, read from the log itself (not the read model) through the same
//! [`warren_domain::usage`] functions the usage read model uses, and priced by the price table.
//!
//! The agents stream is read, then the conversations stream, each from its first commit: a
//! fact's owner is taught by its aggregate's creation, which may lie before the window.

use super::lines::{self, Layout, Lines, Resume};
use super::parquet_file::ParquetFile;
use super::read::{Commits, Progress, Source, Start, source};
use anyhow::Context;
use async_nats::jetstream;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use warren_commands::codec;
use warren_commands::topology::{AGENTS, CONVERSATIONS};
use warren_domain::Envelope;
use warren_domain::agent::AgentEvent;
use warren_domain::conversation::ConversationEvent;
use warren_domain::usage::{self, Ledger, Owner, PriceTable, UsageFact, UsageKind};

/// The CSV header: the columns of every format, in order.
pub const CSV_HEADER: &str = "stream,seq,event_id,at,user_id,agent_id,kind,provider,model,\
input_tokens,output_tokens,cached_tokens,tools,tool_calls,duration_ms,outcome,bytes,sandbox,cost_usd";

/// The file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Comma-separated values with a header; tools joined by commas.
    Csv,
    /// One JSON object per line; tools an array.
    Jsonl,
    /// Apache Parquet; tools joined by commas, `at` a UTC timestamp.
    Parquet,
}

/// What to export, and where.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// Facts at or after this instant (all when `None`).
    pub from: Option<DateTime<Utc>>,
    /// Facts before this instant (all when `None`).
    pub to: Option<DateTime<Utc>>,
    /// The file format.
    pub format: Format,
    /// The file.
    pub output: &'a Path,
    /// Go on with an export that stopped (CSV and JSON Lines).
    pub resume: bool,
    /// Draw a progress line on stderr.
    pub progress: bool,
}

/// One row: a fact, the commit it comes from, and its cost.
pub struct Row<'a> {
    /// The commit's stream (`AGENTS`).
    pub stream: &'a str,
    /// The commit's stream sequence.
    pub seq: u64,
    /// The fact.
    pub fact: &'a UsageFact,
    /// USD, for a priced model call.
    pub cost_usd: Option<f64>,
}

impl Row<'_> {
    fn at(&self) -> String {
        self.fact.at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }

    /// The row as a CSV line, line break included.
    fn write_csv(&self, out: &mut impl Write) -> std::io::Result<()> {
        let fact = self.fact;
        write!(
            out,
            "{},{},{},{},{},",
            self.stream,
            self.seq,
            fact.event_id,
            self.at(),
            fact.user_id
        )?;
        match fact.agent_id {
            Some(agent) => write!(out, "{agent},")?,
            None => out.write_all(b",")?,
        }
        write!(out, "{},", fact.kind.as_str())?;
        field(out, fact.provider.as_deref())?;
        field(out, fact.model.as_deref())?;
        write!(
            out,
            "{},{},{},",
            fact.input_tokens, fact.output_tokens, fact.cached_tokens
        )?;
        field(out, Some(&fact.tools.join(",")))?;
        write!(out, "{},{},", fact.tools.len(), fact.duration_ms)?;
        field(out, fact.outcome.as_deref())?;
        write!(out, "{},", fact.bytes)?;
        field(out, fact.sandbox.as_deref())?;
        if let Some(cost) = self.cost_usd {
            write!(out, "{cost}")?;
        }
        out.write_all(b"\n")
    }
}

/// Writes one CSV field and its separator (an absent value is empty).
fn field(out: &mut impl Write, value: Option<&str>) -> std::io::Result<()> {
    lines::csv_field(out, value.unwrap_or_default())?;
    out.write_all(b",")
}

impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fact = self.fact;
        let mut row = serializer.serialize_struct("Row", 19)?;
        row.serialize_field("stream", self.stream)?;
        row.serialize_field("seq", &self.seq)?;
        row.serialize_field("event_id", &fact.event_id)?;
        row.serialize_field("at", &self.at())?;
        row.serialize_field("user_id", &fact.user_id)?;
        row.serialize_field("agent_id", &fact.agent_id)?;
        row.serialize_field("kind", fact.kind.as_str())?;
        row.serialize_field("provider", &fact.provider)?;
        row.serialize_field("model", &fact.model)?;
        row.serialize_field("input_tokens", &fact.input_tokens)?;
        row.serialize_field("output_tokens", &fact.output_tokens)?;
        row.serialize_field("cached_tokens", &fact.cached_tokens)?;
        row.serialize_field("tools", &fact.tools)?;
        row.serialize_field("tool_calls", &fact.tools.len())?;
        row.serialize_field("duration_ms", &fact.duration_ms)?;
        row.serialize_field("outcome", &fact.outcome)?;
        row.serialize_field("bytes", &fact.bytes)?;
        row.serialize_field("sandbox", &fact.sandbox)?;
        row.serialize_field("cost_usd", &self.cost_usd)?;
        row.end()
    }
}

/// Where rows go.
enum Sink {
    Csv(Lines),
    Jsonl(Lines),
    Parquet(Box<ParquetFile>),
}

impl Sink {
    fn push(&mut self, row: &Row<'_>) -> anyhow::Result<()> {
        match self {
            Sink::Csv(lines) => row.write_csv(lines.writer())?,
            Sink::Jsonl(lines) => {
                let out = lines.writer();
                serde_json::to_writer(&mut *out, row)?;
                out.write_all(b"\n")?;
            }
            Sink::Parquet(file) => file.push(row)?,
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        match self {
            Sink::Csv(lines) | Sink::Jsonl(lines) => lines.finish(),
            Sink::Parquet(file) => file.finish(),
        }
    }
}

/// What an export did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Rows written by this run.
    pub rows: u64,
    /// For each stream read: its name and the last sequence read (0: empty).
    pub read: Vec<(String, u64)>,
    /// Commits that did not decode: stream, sequence, why.
    pub skipped: Vec<(String, u64, String)>,
    /// When resumed: the commit the export went on from.
    pub resumed: Option<Resume>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exported {} rows from ", self.rows)?;
        for (i, (stream, last)) in self.read.iter().enumerate() {
            let separator = if i == 0 { "" } else { ", " };
            match last {
                0 => write!(f, "{separator}{stream} (empty)")?,
                last => write!(f, "{separator}{stream} 1..{last}")?,
            }
        }
        if let Some(resume) = &self.resumed {
            write!(
                f,
                " (resumed at {} {})",
                resume.stream.to_lowercase(),
                resume.seq
            )?;
        }
        if !self.skipped.is_empty() {
            write!(
                f,
                "; skipped {} commits that do not decode",
                self.skipped.len()
            )?;
            for (stream, seq, why) in self.skipped.iter().take(3) {
                write!(f, " ({} {seq}: {why})", stream.to_lowercase())?;
            }
        }
        Ok(())
    }
}

/// The two streams usage is read from, in order.
fn sources() -> anyhow::Result<[Source; 2]> {
    let get = |name| source(name).with_context(|| format!("no stream {name}"));
    Ok([get(AGENTS)?, get(CONVERSATIONS)?])
}

/// Exports the usage facts `request` asks for.
pub async fn export(
    js: &jetstream::Context,
    prices: &PriceTable,
    request: &Request<'_>,
) -> anyhow::Result<Report> {
    let sources = sources()?;
    let (mut sink, resumed) = match (request.format, request.resume) {
        (Format::Parquet, true) => anyhow::bail!(
            "--resume works for csv and jsonl only: a parquet file is written whole \
             (to <FILE>.partial, renamed when complete); remove the partial file and export again"
        ),
        (Format::Parquet, false) => (
            Sink::Parquet(Box::new(ParquetFile::create(request.output)?)),
            None,
        ),
        (format, resume) => {
            let layout = match format {
                Format::Csv => Layout::Csv { header: CSV_HEADER },
                _ => Layout::Jsonl,
            };
            let (lines, resumed) = if resume {
                Lines::resume(request.output, layout)?
            } else {
                (Lines::create(request.output, layout)?, None)
            };
            let sink = match format {
                Format::Csv => Sink::Csv(lines),
                _ => Sink::Jsonl(lines),
            };
            (sink, resumed)
        }
    };
    // Rows of commits before this one (in stream order, then sequence) are in the file.
    let first = match &resumed {
        None => (0, 0),
        Some(resume) => {
            let stream = sources
                .iter()
                .position(|source| source.stream == resume.stream)
                .with_context(|| {
                    format!(
                        "{} ends with a row of the {} stream, which usage is not read from",
                        request.output.display(),
                        resume.stream
                    )
                })?;
            (stream, resume.seq)
        }
    };
    let mut report = Report {
        resumed,
        ..Report::default()
    };
    let mut progress = Progress::new(request.progress);
    let mut owners: HashMap<String, Owner> = HashMap::new();
    for (index, source) in sources.into_iter().enumerate() {
        // A stream whose rows are all written is not read again: the owners of its facts are
        // taught by its own creations (an agent's by `AgentCreated`, a conversation's by its
        // start), so the next stream needs nothing from it.
        if index < first.0 {
            continue;
        }
        let mut commits = Commits::open(js, source, Start::Seq(1), None).await?;
        let (name, end) = (source.short_name(), commits.end());
        let mut last = 0;
        while let Some(commit) = commits.next().await? {
            last = commit.seq;
            let written = (index, commit.seq) >= first;
            let ledgers = match ledgers(source, &commit.payload, &mut owners) {
                Ok(ledgers) => ledgers,
                Err(err) => {
                    tracing::warn!(
                        stream = source.stream,
                        seq = commit.seq,
                        error = format!("{err:#}"),
                        "a commit does not decode; skipped"
                    );
                    report
                        .skipped
                        .push((source.stream.to_owned(), commit.seq, format!("{err:#}")));
                    continue;
                }
            };
            for fact in ledgers {
                let in_window = request.from.is_none_or(|from| from <= fact.at)
                    && request.to.is_none_or(|to| fact.at < to);
                if !(written && in_window) {
                    continue;
                }
                let cost_usd = match (fact.kind, &fact.provider, &fact.model) {
                    (UsageKind::ModelCall, Some(provider), Some(model)) => prices
                        .cost(
                            provider,
                            model,
                            fact.at.date_naive(),
                            fact.input_tokens,
                            fact.cached_tokens,
                            fact.output_tokens,
                        )
                        .map(usage::usd),
                    _ => None,
                };
                sink.push(&Row {
                    stream: source.stream,
                    seq: commit.seq,
                    fact: &fact,
                    cost_usd,
                })?;
                report.rows += 1;
            }
            progress.update(&name, commit.seq, end, report.rows);
        }
        report.read.push((name, last));
    }
    progress.clear();
    sink.finish()
        .with_context(|| format!("writing {}", request.output.display()))?;
    Ok(report)
}

/// A commit's facts, remembering the owners its creations teach.
fn ledgers(
    source: Source,
    payload: &[u8],
    owners: &mut HashMap<String, Owner>,
) -> anyhow::Result<Vec<UsageFact>> {
    fn facts<E>(
        envelopes: Vec<Envelope<E>>,
        owners: &mut HashMap<String, Owner>,
        of: fn(&Envelope<E>, Option<&Owner>) -> Ledger,
    ) -> Vec<UsageFact> {
        let mut facts = Vec::new();
        for envelope in envelopes {
            let Ledger { learned, fact } = of(&envelope, owners.get(&envelope.aggregate_id));
            if let Some(owner) = learned {
                owners.insert(envelope.aggregate_id, owner);
            }
            facts.extend(fact);
        }
        facts
    }
    Ok(if source.stream == AGENTS {
        facts(
            codec::decode::<AgentEvent>(payload)?,
            owners,
            usage::of_agent_event,
        )
    } else {
        facts(
            codec::decode::<ConversationEvent>(payload)?,
            owners,
            usage::of_conversation_event,
        )
    })
}
