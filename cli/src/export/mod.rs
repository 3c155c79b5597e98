//! `warren export`: files for analysts, read from the log rather than the read model, so they
//! hold all of history as the log says it and need no database (docs/adr/0042).
//!
//! Layout:
//! - this module: the subcommands' arguments, connecting to NATS, the summary line;
//! - [`usage`]: `export usage`, usage facts as CSV, JSON Lines or Parquet;
//! - [`events`]: `export events`, a stream's raw envelopes as JSON Lines;
//! - [`read`]: reading a stream to its end with an ordered consumer, and the progress line;
//! - [`lines`]: CSV and JSON Lines files, and resuming them;
//! - [`parquet_file`]: the Parquet writer.
//!
//! Everything but this module is independent of the rest of the binary, so `benches/export.rs`
//! includes those files to time the export in process.

mod events;
mod lines;
mod parquet_file;
mod read;
mod usage;

use crate::config::Config;
use crate::roles::{Endpoints, connect_nats};
use anyhow::Context;
use chrono::{DateTime, Utc};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use warren_deploy::nats_auth::{NatsKeys, Role};

/// `warren export …`.
#[derive(clap::Args)]
pub struct ExportArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Every usage fact (messages, runs, model calls, deployments, ups and downs, file bytes)
    /// in a time window, one row each, with its cost from the config file's `[[prices]]`.
    Usage(UsageArgs),
    /// A stream's commits, one JSON line per envelope (upcast to its current version).
    Events(EventsArgs),
}

/// `warren export usage`.
#[derive(clap::Args)]
struct UsageArgs {
    #[command(flatten)]
    config: Config,
    /// Facts at or after this instant: RFC 3339 (`2026-03-01T12:00:00Z`) or a UTC day
    /// (`2026-03-01`, its midnight). Default: the log's start.
    #[arg(long, value_parser = instant)]
    from: Option<DateTime<Utc>>,
    /// Facts before this instant (same forms; a day means its midnight, so `--to 2026-04-01`
    /// ends with March). Default: none, the log as it is when the export starts.
    #[arg(long, value_parser = instant)]
    to: Option<DateTime<Utc>>,
    /// The file format (default: from the file's extension, `.csv`, `.jsonl` or `.parquet`).
    #[arg(long, value_enum)]
    format: Option<usage::Format>,
    /// The file to write (refused if it exists, unless resumed).
    #[arg(long)]
    output: PathBuf,
    /// Go on with an export that stopped (csv and jsonl): the file's last commit is written
    /// again, then the rest.
    #[arg(long)]
    resume: bool,
}

/// `warren export events`.
#[derive(clap::Args)]
struct EventsArgs {
    #[command(flatten)]
    config: Config,
    /// The stream: users, agents, conversations or hosts (or its stream name, e.g. AGENTS).
    #[arg(long)]
    stream: String,
    /// The first stream sequence to export (default: 1).
    #[arg(long, conflicts_with = "from_time")]
    from_seq: Option<u64>,
    /// Start at the first commit stored at or after this instant (RFC 3339 or a UTC day).
    #[arg(long, value_parser = instant)]
    from_time: Option<DateTime<Utc>>,
    /// The last stream sequence to export (default: the stream's last when the export starts).
    #[arg(long)]
    to_seq: Option<u64>,
    /// The file to write, or `-` for standard output.
    #[arg(long)]
    output: PathBuf,
    /// Go on with an export that stopped: from the file's last commit on.
    #[arg(long)]
    resume: bool,
}

/// An instant as RFC 3339, or a UTC day as its midnight.
fn instant(text: &str) -> Result<DateTime<Utc>, String> {
    warren_domain::usage::parse_instant(text).ok_or_else(|| {
        format!("{text:?} is neither RFC 3339 (2026-03-01T12:00:00Z) nor a day (2026-03-01)")
    })
}

/// Runs `warren export …`; the summary goes to stderr (stdout may be the export).
pub async fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let progress = std::io::stderr().is_terminal();
    let summary = match args.what {
        What::Usage(args) => {
            let format = match args.format {
                Some(format) => format,
                None => format_of(&args.output)?,
            };
            if let (Some(from), Some(to)) = (args.from, args.to) {
                anyhow::ensure!(from < to, "--from must come before --to");
            }
            let config = setup(args.config)?;
            let prices = crate::config::prices()?;
            let js = connect(&config, Role::Projector).await?;
            let request = usage::Request {
                from: args.from,
                to: args.to,
                format,
                output: &args.output,
                resume: args.resume,
                progress,
            };
            usage::export(&js, &prices, &request).await?.to_string()
        }
        What::Events(args) => {
            let source = events::source_named(&args.stream)?;
            let config = setup(args.config)?;
            // The projector follows the streams it projects; only the admin reads the hosts'.
            let role = if source.stream == warren_commands::topology::HOSTS {
                Role::Admin
            } else {
                Role::Projector
            };
            let js = connect(&config, role).await?;
            let output = match args.output.to_str() {
                Some("-") => events::Output::Stdout,
                _ => events::Output::File(&args.output),
            };
            let request = events::Request {
                source,
                start: match args.from_time {
                    Some(at) => read::Start::Time(at),
                    None => read::Start::Seq(args.from_seq.unwrap_or(1)),
                },
                to: args.to_seq,
                output,
                resume: args.resume,
                progress,
            };
            events::export(&js, &request).await?.to_string()
        }
    };
    eprintln!("{summary}");
    Ok(ExitCode::SUCCESS)
}

/// The format a file's extension names.
fn format_of(path: &std::path::Path) -> anyhow::Result<usage::Format> {
    match path.extension().and_then(|ext| ext.to_str()) {
        Some("csv") => Ok(usage::Format::Csv),
        Some("jsonl" | "ndjson") => Ok(usage::Format::Jsonl),
        Some("parquet") => Ok(usage::Format::Parquet),
        _ => anyhow::bail!(
            "pass --format csv, jsonl or parquet (the name {} does not say)",
            path.display()
        ),
    }
}

/// Validates the configuration and logs to stderr (stdout may be the export).
fn setup(config: Config) -> anyhow::Result<Config> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    config.validated()
}

/// Connects to NATS as `role`: an export reads the log only, so it needs no database.
async fn connect(config: &Config, role: Role) -> anyhow::Result<async_nats::jetstream::Context> {
    let endpoints = Endpoints {
        nats_url: config.require_nats()?.to_owned(),
        nats_keys: config.nats_credentials_dir.as_ref().map(NatsKeys::open),
        writer_url: String::new(),
        reader_url: String::new(),
    };
    let nats = connect_nats(config, &endpoints, role)
        .await
        .context("connecting to the log")?;
    Ok(async_nats::jetstream::new(nats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_rfc_3339_or_a_utc_day() {
        assert_eq!(
            instant("2026-03-01").map(|at| at.to_rfc3339()),
            Ok("2026-03-01T00:00:00+00:00".into())
        );
        assert_eq!(
            instant("2026-03-01T14:00:00+02:00").map(|at| at.to_rfc3339()),
            Ok("2026-03-01T12:00:00+00:00".into())
        );
        assert!(instant("March").is_err());
    }
}
