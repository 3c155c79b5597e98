//! Shell commands in their own process group: `bash -c` in the workspace, output streamed in
//! chunks, a timeout, and cancellation that SIGKILLs the whole group (so `sleep` under a
//! pipeline or a subshell dies with it).
//!
//! After bash exits, output is still read until the pipes close, for at most [`DRAIN_GRACE`]:
//! a background job that kept stdout open is left running but no longer read.

use std::io;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long output is still read after the shell itself exited.
pub const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// A piece of output.
#[derive(Debug)]
pub enum Chunk {
    /// From stdout.
    Stdout(Bytes),
    /// From stderr.
    Stderr(Bytes),
}

/// How a command ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, if it exited normally.
    pub code: Option<i32>,
    /// The signal that ended it, if any.
    pub signal: Option<i32>,
    /// The timeout fired and the group was killed.
    pub timed_out: bool,
    /// Cancellation fired and the group was killed.
    pub cancelled: bool,
}

/// Kills the process group on drop unless the leader was already reaped: a dropped future (a
/// client gone, a run aborted) never leaves the command running. While the leader is unreaped
/// its pid cannot be reused, so the group id is still ours.
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pid) = self.0.take() {
            // ESRCH (already gone) is fine.
            let _ = kill_process_group(pid, Signal::KILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `command` with `bash -c` in `cwd`, sending output to `chunks` as it arrives, until it
/// exits, `timeout` passes or `cancel` fires (then the group is SIGKILLed and reaped).
pub async fn run_shell(
    command: &str,
    cwd: &Path,
    timeout: Duration,
    cancel: &CancellationToken,
    chunks: mpsc::Sender<Chunk>,
) -> io::Result<Exit> {
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(command)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let mut guard = GroupGuard(
        child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .and_then(Pid::from_raw),
    );
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        readers.push(tokio::spawn(pump(stdout, chunks.clone(), Chunk::Stdout)));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(tokio::spawn(pump(stderr, chunks.clone(), Chunk::Stderr)));
    }
    drop(chunks);

    let mut exit = Exit::default();
    let status = tokio::select! {
        status = child.wait() => status?,
        _ = tokio::time::sleep(timeout) => {
            exit.timed_out = true;
            guard.kill();
            child.wait().await?
        }
        _ = cancel.cancelled() => {
            exit.cancelled = true;
            guard.kill();
            child.wait().await?
        }
    };
    // Reaped: the pid may be reused from here on, so never signal the group again.
    guard.0 = None;
    exit.code = status.code();
    exit.signal = std::os::unix::process::ExitStatusExt::signal(&status);

    let drained = tokio::time::timeout(DRAIN_GRACE, async {
        for reader in &mut readers {
            let _ = reader.await;
        }
    })
    .await;
    if drained.is_err() {
        readers.iter().for_each(|reader| reader.abort());
    }
    Ok(exit)
}

async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    chunks: mpsc::Sender<Chunk>,
    wrap: fn(Bytes) -> Chunk,
) {
    let mut buffer = vec![0u8; 8192];
    loop {
        match pipe.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if chunks
                    .send(wrap(Bytes::copy_from_slice(&buffer[..n])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Turns byte chunks into text without breaking a UTF-8 sequence split across chunks
/// (invalid bytes become U+FFFD).
#[derive(Default)]
pub struct Utf8Decoder {
    pending: Vec<u8>,
}

impl Utf8Decoder {
    /// The text decodable so far; an incomplete trailing sequence waits for the next chunk.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let complete = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(err) if err.error_len().is_none() => err.valid_up_to(),
            Err(_) => self.pending.len(),
        };
        let rest = self.pending.split_off(complete);
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = rest;
        text
    }

    /// Whatever is left (an incomplete sequence becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// Output kept up to a byte cap; the rest is counted, not stored.
pub struct CappedText {
    cap: usize,
    text: String,
    total: usize,
}

impl CappedText {
    /// Keeps at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            text: String::new(),
            total: 0,
        }
    }

    /// Appends what still fits (cut at a character boundary).
    pub fn push(&mut self, text: &str) {
        self.total += text.len();
        let room = self.cap.saturating_sub(self.text.len());
        self.text.push_str(prefix_within(text, room));
    }

    /// Whether anything was dropped.
    pub fn truncated(&self) -> bool {
        self.total > self.text.len()
    }

    /// The kept text, with a note naming the full size if something was dropped.
    pub fn finish(self) -> (String, bool) {
        let truncated = self.truncated();
        let mut text = self.text;
        if truncated {
            text.push_str(&format!(
                "\n[output truncated: {} of {} bytes shown]",
                text.len(),
                self.total
            ));
        }
        (text, truncated)
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn prefix_within(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_across_chunks_is_decoded_whole() {
        let bytes = "héllo".as_bytes();
        let mut decoder = Utf8Decoder::default();
        let first = decoder.push(&bytes[..2]);
        let second = decoder.push(&bytes[2..]);
        assert_eq!(first, "h");
        assert_eq!(format!("{first}{second}"), "héllo");
        assert_eq!(decoder.finish(), "");
    }

    #[test]
    fn capped_text_keeps_the_prefix_and_says_how_much_was_dropped() {
        let mut text = CappedText::new(4);
        text.push("ab");
        text.push("cdéf");
        let (kept, truncated) = text.finish();
        assert!(truncated);
        assert!(kept.starts_with("abcd\n[output truncated: 4 of 7 bytes shown]"));
    }

    #[tokio::test]
    async fn a_command_streams_its_output_and_exit_code() {
        let (tx, mut rx) = mpsc::channel(16);
        let cwd = std::env::temp_dir();
        let exit = run_shell(
            "echo out; echo err >&2; exit 3",
            &cwd,
            Duration::from_secs(10),
            &CancellationToken::new(),
            tx,
        )
        .await
        .expect("run");
        assert_eq!(exit.code, Some(3));
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        while let Some(chunk) = rx.recv().await {
            match chunk {
                Chunk::Stdout(b) => stdout.extend_from_slice(&b),
                Chunk::Stderr(b) => stderr.extend_from_slice(&b),
            }
        }
        assert_eq!(stdout, b"out\n");
        assert_eq!(stderr, b"err\n");
    }

    #[tokio::test]
    async fn a_timeout_kills_the_group() {
        let (tx, _rx) = mpsc::channel(16);
        let exit = run_shell(
            "sleep 30 | cat",
            &std::env::temp_dir(),
            Duration::from_millis(100),
            &CancellationToken::new(),
            tx,
        )
        .await
        .expect("run");
        assert!(exit.timed_out);
        assert_eq!(exit.signal, Some(9));
    }
}
