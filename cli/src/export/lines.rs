//! Line-oriented export files (CSV, JSON Lines): created new, or resumed after a crash.
//!
//! Every row starts with its commit's stream and sequence (`AGENTS,17,…` or
//! `{"stream":"AGENTS","seq":17,…`), and rows are written in log order, so a file says how far
//! an export got. A commit may yield several rows (one per envelope), and a crash may stop
//! between them: resuming cuts the file back to the first row of its last commit (dropping a
//! torn last line with it) and the export writes that commit again, so a resumed file is the
//! file one run would have written.

use anyhow::Context;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

/// How rows are laid out in lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// CSV with a header line; a quoted field may hold a line break.
    Csv {
        /// The header line, without its line break.
        header: &'static str,
    },
    /// One JSON object per line.
    Jsonl,
}

/// The commit a resumed export starts again from: rows of earlier commits are in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resume {
    /// Its stream's name, as the rows write it (`AGENTS`).
    pub stream: String,
    /// Its stream sequence.
    pub seq: u64,
}

/// Where rows go: a file, buffered.
pub struct Lines {
    out: BufWriter<Box<dyn Write + Send>>,
}

impl Lines {
    /// A new file at `path` (refused if one exists), starting with the layout's header.
    pub fn create(path: &Path, layout: Layout) -> anyhow::Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|err| match err.kind() {
                std::io::ErrorKind::AlreadyExists => {
                    anyhow::anyhow!("{} exists; pass --resume or remove it", path.display())
                }
                _ => anyhow::Error::new(err).context(format!("creating {}", path.display())),
            })?;
        let mut lines = Self::to(Box::new(file));
        lines.header(layout)?;
        Ok(lines)
    }

    /// Rows to standard output.
    pub fn stdout() -> Self {
        Self::to(Box::new(std::io::stdout()))
    }

    /// The file at `path` to go on with (created if missing), and the commit to write again
    /// from; `None` when the file had no row yet.
    pub fn resume(path: &Path, layout: Layout) -> anyhow::Result<(Self, Option<Resume>)> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Self::create(path, layout)?, None));
            }
            Err(err) => {
                return Err(err).with_context(|| format!("opening {}", path.display()));
            }
        };
        let tail = scan(&file, layout).with_context(|| format!("reading {}", path.display()))?;
        file.set_len(tail.cut)
            .with_context(|| format!("cutting {} back", path.display()))?;
        let mut file = file;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0))
            .with_context(|| format!("seeking to the end of {}", path.display()))?;
        let mut lines = Self::to(Box::new(file));
        if tail.cut == 0 {
            lines.header(layout)?;
        }
        Ok((lines, tail.resume))
    }

    fn to(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: BufWriter::with_capacity(256 * 1024, out),
        }
    }

    fn header(&mut self, layout: Layout) -> anyhow::Result<()> {
        if let Layout::Csv { header } = layout {
            self.out.write_all(header.as_bytes())?;
            self.out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// The writer to put one row on, line break included.
    pub fn writer(&mut self) -> &mut impl Write {
        &mut self.out
    }

    /// Writes out what is buffered.
    pub fn finish(mut self) -> anyhow::Result<()> {
        self.out.flush().context("writing the export")
    }
}

/// What a resumed file keeps.
struct Tail {
    /// Its length up to the first row of its last commit (or after its header).
    cut: u64,
    resume: Option<Resume>,
}

/// Reads a file written by [`Lines`] to its end: where its last commit's rows begin.
fn scan(file: &File, layout: Layout) -> anyhow::Result<Tail> {
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut record = Vec::new();
    // Where the record being read starts, and the first row of the last commit seen.
    let (mut start, mut group_start) = (0u64, 0u64);
    let mut last: Option<Resume> = None;
    let mut header_end = match layout {
        Layout::Csv { .. } => None,
        Layout::Jsonl => Some(0),
    };
    let mut number = 0u64;
    loop {
        let read = reader.read_until(b'\n', &mut record)?;
        // A last line without its line break is torn: it is cut off.
        if read == 0 || !record.ends_with(b"\n") {
            break;
        }
        // A CSV line break inside quotes is part of a field.
        if matches!(layout, Layout::Csv { .. })
            && record.iter().filter(|&&byte| byte == b'"').count() % 2 == 1
        {
            continue;
        }
        number += 1;
        let end = start + record.len() as u64;
        let line = &record[..record.len() - 1];
        match (layout, header_end) {
            (Layout::Csv { header }, None) => {
                anyhow::ensure!(
                    line == header.as_bytes(),
                    "its header is not this export's ({header}): is it another kind of export?"
                );
                header_end = Some(end);
            }
            _ => {
                let key = key(line, layout)
                    .with_context(|| format!("line {number} is not a row of this export"))?;
                if last.as_ref() != Some(&key) {
                    group_start = start;
                    last = Some(key);
                }
            }
        }
        start = end;
        record.clear();
    }
    Ok(match (last, header_end) {
        (Some(resume), _) => Tail {
            cut: group_start,
            resume: Some(resume),
        },
        (None, header_end) => Tail {
            cut: header_end.unwrap_or(0),
            resume: None,
        },
    })
}

/// A row's commit: its first two fields.
fn key(line: &[u8], layout: Layout) -> anyhow::Result<Resume> {
    match layout {
        Layout::Csv { .. } => {
            let line = std::str::from_utf8(line)?;
            let mut fields = line.splitn(3, ',');
            let stream = fields.next().unwrap_or_default();
            let seq = fields.next().context("no sequence")?.parse()?;
            Ok(Resume {
                stream: stream.to_owned(),
                seq,
            })
        }
        Layout::Jsonl => {
            #[derive(serde::Deserialize)]
            struct Key {
                stream: String,
                seq: u64,
            }
            let Key { stream, seq } = serde_json::from_slice(line)?;
            Ok(Resume { stream, seq })
        }
    }
}

/// Writes `field` as one CSV field: quoted when it holds a separator, a quote or a line break.
pub fn csv_field(out: &mut impl Write, field: &str) -> std::io::Result<()> {
    if field.contains([',', '"', '\n', '\r']) {
        out.write_all(b"\"")?;
        out.write_all(field.replace('"', "\"\"").as_bytes())?;
        out.write_all(b"\"")
    } else {
        out.write_all(field.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: Layout = Layout::Csv {
        header: "stream,seq,x",
    };

    fn resumed(layout: Layout, text: &str) -> (String, Option<Resume>) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("out");
        std::fs::write(&path, text).expect("written");
        let (lines, resume) = Lines::resume(&path, layout).expect("resumed");
        lines.finish().expect("flushed");
        (std::fs::read_to_string(&path).expect("read"), resume)
    }

    fn at(stream: &str, seq: u64) -> Option<Resume> {
        Some(Resume {
            stream: stream.into(),
            seq,
        })
    }

    #[test]
    fn a_resumed_csv_loses_its_torn_line_and_its_last_commits_rows() {
        let text = "stream,seq,x\nA,1,a\nA,2,\"two\nlines\"\nA,2,b\nA,3,c";
        assert_eq!(
            resumed(CSV, text),
            ("stream,seq,x\nA,1,a\n".into(), at("A", 2))
        );
        // A torn header is written again; a header alone resumes from the start.
        assert_eq!(resumed(CSV, "stream,s"), ("stream,seq,x\n".into(), None));
        assert_eq!(
            resumed(CSV, "stream,seq,x\n"),
            ("stream,seq,x\n".into(), None)
        );
        assert_eq!(resumed(CSV, ""), ("stream,seq,x\n".into(), None));
    }

    #[test]
    fn a_resumed_jsonl_file_goes_back_to_its_last_commit() {
        let text = "{\"stream\":\"B\",\"seq\":7}\n{\"stream\":\"B\",\"seq\":9}\n{\"str";
        assert_eq!(
            resumed(Layout::Jsonl, text),
            ("{\"stream\":\"B\",\"seq\":7}\n".into(), at("B", 9))
        );
    }

    #[test]
    fn another_kind_of_file_is_not_resumed() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("out");
        std::fs::write(&path, "name,age\nx,1\n").expect("written");
        assert!(Lines::resume(&path, CSV).is_err());
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "name,age\nx,1\n",
            "a refused file is left as it was"
        );
    }

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        let mut out = Vec::new();
        for field in ["plain", "a,b", "say \"hi\"", "two\nlines"] {
            csv_field(&mut out, field).expect("written");
            out.push(b'|');
        }
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "plain|\"a,b\"|\"say \"\"hi\"\"\"|\"two\nlines\"|"
        );
    }
}
