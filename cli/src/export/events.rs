//! `warren export events`: a stream's commits as JSON Lines, one line per envelope,
//! `{"stream":…,"seq":…,"subject":…,"envelope":{…}}`, each envelope lifted to its type's
//! current version ([`warren_commands::codec::upcast`]) as every reader of the log sees it.

use super::lines::{Layout, Lines, Resume};
use super::read::{Commits, Progress, Source, Start};
use anyhow::Context;
use async_nats::jetstream;
use serde::Serialize;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use warren_commands::codec;

/// Where lines go.
#[derive(Clone, Copy, Debug)]
pub enum Output<'a> {
    /// A file.
    File(&'a Path),
    /// Standard output.
    Stdout,
}

/// What to export, and where.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// The stream.
    pub source: Source,
    /// Its first commit to export.
    pub start: Start,
    /// Its last commit to export (the stream's last when `None`).
    pub to: Option<u64>,
    /// Where.
    pub output: Output<'a>,
    /// Go on with an export that stopped.
    pub resume: bool,
    /// Draw a progress line on stderr.
    pub progress: bool,
}

/// One line.
#[derive(Serialize)]
struct Line<'a> {
    stream: &'a str,
    seq: u64,
    subject: &'a str,
    envelope: &'a Value,
}

/// What an export did.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The stream's short name (`agents`).
    pub stream: String,
    /// Envelopes written by this run.
    pub envelopes: u64,
    /// The first and last sequence read, if any commit was.
    pub read: Option<(u64, u64)>,
    /// Commits whose body is not a JSON array: sequence, why.
    pub skipped: Vec<(u64, String)>,
    /// When resumed: the commit the export went on from.
    pub resumed: Option<Resume>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exported {} events from {}", self.envelopes, self.stream)?;
        match self.read {
            Some((first, last)) => write!(f, " {first}..{last}")?,
            None => write!(f, " (nothing to read)")?,
        }
        if let Some(resume) = &self.resumed {
            write!(f, " (resumed at {})", resume.seq)?;
        }
        if !self.skipped.is_empty() {
            write!(
                f,
                "; skipped {} commits that are not JSON arrays",
                self.skipped.len()
            )?;
            for (seq, why) in self.skipped.iter().take(3) {
                write!(f, " ({seq}: {why})")?;
            }
        }
        Ok(())
    }
}

/// Exports the envelopes `request` asks for.
pub async fn export(js: &jetstream::Context, request: &Request<'_>) -> anyhow::Result<Report> {
    let source = request.source;
    let (mut lines, resumed) = match (request.output, request.resume) {
        (Output::Stdout, true) => anyhow::bail!("--resume needs an --output file"),
        (Output::Stdout, false) => (Lines::stdout(), None),
        (Output::File(path), true) => Lines::resume(path, Layout::Jsonl)?,
        (Output::File(path), false) => (Lines::create(path, Layout::Jsonl)?, None),
    };
    let start = match &resumed {
        None => request.start,
        Some(resume) => {
            anyhow::ensure!(
                resume.stream == source.stream,
                "the file holds events of the {} stream, not of {}",
                resume.stream,
                source.stream
            );
            Start::Seq(resume.seq)
        }
    };
    let mut report = Report {
        stream: source.short_name(),
        envelopes: 0,
        read: None,
        skipped: Vec::new(),
        resumed,
    };
    let mut progress = Progress::new(request.progress);
    let mut commits = Commits::open(js, source, start, request.to).await?;
    let end = commits.end();
    while let Some(commit) = commits.next().await? {
        let first = report.read.map_or(commit.seq, |(first, _)| first);
        report.read = Some((first, commit.seq));
        let envelopes: Vec<Value> = match serde_json::from_slice(&commit.payload) {
            Ok(envelopes) => envelopes,
            Err(err) => {
                tracing::warn!(
                    stream = source.stream,
                    seq = commit.seq,
                    error = %err,
                    "a commit is not a JSON array; skipped"
                );
                report.skipped.push((commit.seq, err.to_string()));
                continue;
            }
        };
        let out = lines.writer();
        for mut envelope in envelopes {
            codec::upcast(&mut envelope);
            let line = Line {
                stream: source.stream,
                seq: commit.seq,
                subject: &commit.subject,
                envelope: &envelope,
            };
            serde_json::to_writer(&mut *out, &line).context("writing the export")?;
            out.write_all(b"\n").context("writing the export")?;
            report.envelopes += 1;
        }
        progress.update(&report.stream, commit.seq, end, report.envelopes);
    }
    progress.clear();
    lines.finish()?;
    Ok(report)
}

/// A stream's source, by its name or short name.
pub fn source_named(name: &str) -> anyhow::Result<Source> {
    super::read::source(name).with_context(|| {
        let names: Vec<String> = super::read::SOURCES
            .iter()
            .map(Source::short_name)
            .collect();
        format!(
            "no stream {name:?}: one of {} (or its stream name)",
            names.join(", ")
        )
    })
}
