//! Usage rows as a Parquet file, through the crate's low-level column writers (no Arrow):
//! rows are buffered by column and written as a row group of [`ROW_GROUP`] rows, so memory stays
//! flat however long the log.
//!
//! The file is written to `<FILE>.partial` and renamed when complete: a Parquet file is only
//! readable once its footer is written, so a crashed export leaves no file that looks whole.

use super::usage::Row;
use anyhow::Context;
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, DataType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Rows per row group.
pub const ROW_GROUP: usize = 64 * 1024;

/// The columns, in [`Columns`]' order. `at` is a UTC instant in microseconds; `tools` the tool
/// names joined by commas; an absent value (no agent, an unpriced call) is null.
const SCHEMA: &str = "
message usage {
    REQUIRED BYTE_ARRAY stream (STRING);
    REQUIRED INT64 seq;
    REQUIRED BYTE_ARRAY event_id (STRING);
    REQUIRED INT64 at (TIMESTAMP(MICROS,true));
    REQUIRED BYTE_ARRAY user_id (STRING);
    OPTIONAL BYTE_ARRAY agent_id (STRING);
    REQUIRED BYTE_ARRAY kind (STRING);
    OPTIONAL BYTE_ARRAY provider (STRING);
    OPTIONAL BYTE_ARRAY model (STRING);
    REQUIRED INT64 input_tokens;
    REQUIRED INT64 output_tokens;
    REQUIRED INT64 cached_tokens;
    REQUIRED BYTE_ARRAY tools (STRING);
    REQUIRED INT64 tool_calls;
    REQUIRED INT64 duration_ms;
    OPTIONAL BYTE_ARRAY outcome (STRING);
    REQUIRED INT64 bytes;
    OPTIONAL BYTE_ARRAY sandbox (STRING);
    OPTIONAL DOUBLE cost_usd;
}
";

/// A column's values, with a definition level per row when it is optional.
struct Column<T> {
    values: Vec<T>,
    /// `None` for a required column.
    defined: Option<Vec<i16>>,
}

impl<T> Column<T> {
    fn required() -> Self {
        Self {
            values: Vec::with_capacity(ROW_GROUP),
            defined: None,
        }
    }

    fn optional() -> Self {
        Self {
            values: Vec::new(),
            defined: Some(Vec::with_capacity(ROW_GROUP)),
        }
    }

    fn push(&mut self, value: T) {
        self.values.push(value);
    }

    fn push_option(&mut self, value: Option<T>) {
        let defined = self.defined.as_mut().expect("an optional column");
        defined.push(i16::from(value.is_some()));
        self.values.extend(value);
    }

    /// Writes the buffered values as the row group's next column.
    fn write<D>(&mut self, group: &mut SerializedRowGroupWriter<'_, File>) -> anyhow::Result<()>
    where
        D: DataType<T = T>,
    {
        let mut column = group
            .next_column()?
            .context("the schema has fewer columns than the rows")?;
        column
            .typed::<D>()
            .write_batch(&self.values, self.defined.as_deref(), None)?;
        column.close()?;
        self.values.clear();
        if let Some(defined) = &mut self.defined {
            defined.clear();
        }
        Ok(())
    }
}

/// A string column's value.
fn text(value: &str) -> ByteArray {
    ByteArray::from(value)
}

/// A count as Parquet's signed 64-bit integer (no count of the log comes near the limit).
fn count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// One row group's buffers, one per column of [`SCHEMA`].
struct Columns {
    rows: usize,
    stream: Column<ByteArray>,
    seq: Column<i64>,
    event_id: Column<ByteArray>,
    at: Column<i64>,
    user_id: Column<ByteArray>,
    agent_id: Column<ByteArray>,
    kind: Column<ByteArray>,
    provider: Column<ByteArray>,
    model: Column<ByteArray>,
    input_tokens: Column<i64>,
    output_tokens: Column<i64>,
    cached_tokens: Column<i64>,
    tools: Column<ByteArray>,
    tool_calls: Column<i64>,
    duration_ms: Column<i64>,
    outcome: Column<ByteArray>,
    bytes: Column<i64>,
    sandbox: Column<ByteArray>,
    cost_usd: Column<f64>,
}

impl Columns {
    fn new() -> Self {
        Self {
            rows: 0,
            stream: Column::required(),
            seq: Column::required(),
            event_id: Column::required(),
            at: Column::required(),
            user_id: Column::required(),
            agent_id: Column::optional(),
            kind: Column::required(),
            provider: Column::optional(),
            model: Column::optional(),
            input_tokens: Column::required(),
            output_tokens: Column::required(),
            cached_tokens: Column::required(),
            tools: Column::required(),
            tool_calls: Column::required(),
            duration_ms: Column::required(),
            outcome: Column::optional(),
            bytes: Column::required(),
            sandbox: Column::optional(),
            cost_usd: Column::optional(),
        }
    }

    fn push(&mut self, row: &Row<'_>) {
        let fact = row.fact;
        self.rows += 1;
        self.stream.push(text(row.stream));
        self.seq.push(count(row.seq));
        self.event_id.push(text(&fact.event_id.to_string()));
        self.at.push(fact.at.timestamp_micros());
        self.user_id.push(text(&fact.user_id.to_string()));
        self.agent_id
            .push_option(fact.agent_id.map(|id| text(&id.to_string())));
        self.kind.push(text(fact.kind.as_str()));
        self.provider
            .push_option(fact.provider.as_deref().map(text));
        self.model.push_option(fact.model.as_deref().map(text));
        self.input_tokens.push(count(fact.input_tokens));
        self.output_tokens.push(count(fact.output_tokens));
        self.cached_tokens.push(count(fact.cached_tokens));
        self.tools.push(text(&fact.tools.join(",")));
        self.tool_calls.push(count(fact.tools.len() as u64));
        self.duration_ms.push(count(fact.duration_ms));
        self.outcome.push_option(fact.outcome.as_deref().map(text));
        self.bytes.push(count(fact.bytes));
        self.sandbox.push_option(fact.sandbox.as_deref().map(text));
        self.cost_usd.push_option(row.cost_usd);
    }

    /// Writes the buffered rows as one row group.
    fn write(&mut self, file: &mut SerializedFileWriter<File>) -> anyhow::Result<()> {
        type B = ByteArrayType;
        type I = Int64Type;
        let mut group = file.next_row_group()?;
        let g = &mut group;
        self.stream.write::<B>(g)?;
        self.seq.write::<I>(g)?;
        self.event_id.write::<B>(g)?;
        self.at.write::<I>(g)?;
        self.user_id.write::<B>(g)?;
        self.agent_id.write::<B>(g)?;
        self.kind.write::<B>(g)?;
        self.provider.write::<B>(g)?;
        self.model.write::<B>(g)?;
        self.input_tokens.write::<I>(g)?;
        self.output_tokens.write::<I>(g)?;
        self.cached_tokens.write::<I>(g)?;
        self.tools.write::<B>(g)?;
        self.tool_calls.write::<I>(g)?;
        self.duration_ms.write::<I>(g)?;
        self.outcome.write::<B>(g)?;
        self.bytes.write::<I>(g)?;
        self.sandbox.write::<B>(g)?;
        self.cost_usd.write::<DoubleType>(g)?;
        group.close()?;
        self.rows = 0;
        Ok(())
    }
}

/// A Parquet file of usage rows being written.
pub struct ParquetFile {
    writer: SerializedFileWriter<File>,
    columns: Columns,
    partial: PathBuf,
    path: PathBuf,
}

impl ParquetFile {
    /// Starts `<path>.partial` (replacing a crashed export's), refusing if `path` exists.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !path.exists(),
            "{} exists; remove it (a parquet export cannot be resumed)",
            path.display()
        );
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file =
            File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
        let schema = parquet::schema::parser::parse_message_type(SCHEMA)
            .context("the usage schema parses")?;
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by(format!("warren {}", env!("CARGO_PKG_VERSION")))
            .build();
        let writer = SerializedFileWriter::new(file, Arc::new(schema), Arc::new(properties))?;
        Ok(Self {
            writer,
            columns: Columns::new(),
            partial,
            path: path.to_owned(),
        })
    }

    /// Adds a row, writing a row group when one is full.
    pub fn push(&mut self, row: &Row<'_>) -> anyhow::Result<()> {
        self.columns.push(row);
        if self.columns.rows == ROW_GROUP {
            self.columns
                .write(&mut self.writer)
                .with_context(|| format!("writing {}", self.partial.display()))?;
        }
        Ok(())
    }

    /// Writes the last row group and the footer, and renames the file to its name.
    pub fn finish(mut self) -> anyhow::Result<()> {
        if self.columns.rows > 0 {
            self.columns
                .write(&mut self.writer)
                .with_context(|| format!("writing {}", self.partial.display()))?;
        }
        let file = self
            .writer
            .into_inner()
            .with_context(|| format!("writing {}", self.partial.display()))?;
        file.sync_all()
            .with_context(|| format!("writing {}", self.partial.display()))?;
        std::fs::rename(&self.partial, &self.path).with_context(|| {
            format!(
                "renaming {} to {}",
                self.partial.display(),
                self.path.display()
            )
        })
    }
}
