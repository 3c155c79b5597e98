//! Reading what an agent runtime sends, within bounds. A runtime is hostile: it may answer
//! without a length, lie about it, or stream one event that never ends, and none of that may
//! cost a reader (the edge, the chat worker) its memory.
//!
//! - [`read`] — a whole body, refused past a cap.
//! - [`events`] — an SSE byte stream in which no event (the bytes between two blank lines) may
//!   grow past a cap; the stream fails instead, before an SSE parser buffers it.

use bytes::Bytes;
use futures::{Stream, StreamExt};

/// A bounded read failed: the source did, or the runtime sent more than allowed.
#[derive(Debug, thiserror::Error)]
pub enum Bounded<E> {
    /// The underlying stream failed.
    #[error("{0}")]
    Source(E),
    /// More than the cap.
    #[error("the agent runtime sent more than {0} bytes at once")]
    TooLarge(usize),
}

/// The whole of `body`, or [`Bounded::TooLarge`] as soon as it passes `cap` bytes.
pub async fn read<S, E>(body: S, cap: usize) -> Result<Vec<u8>, Bounded<E>>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    let mut body = std::pin::pin!(body);
    let mut read = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(Bounded::Source)?;
        if read.len() + chunk.len() > cap {
            return Err(Bounded::TooLarge(cap));
        }
        read.extend_from_slice(&chunk);
    }
    Ok(read)
}

/// `stream` as it is, failing with [`Bounded::TooLarge`] once more than `max_event` bytes
/// arrive without a blank line (the end of an SSE event).
pub fn events<S, E>(stream: S, max_event: usize) -> impl Stream<Item = Result<Bytes, Bounded<E>>>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    let mut since_blank = 0usize;
    let mut after_newline = false;
    stream.map(move |chunk| {
        let chunk = chunk.map_err(Bounded::Source)?;
        for &byte in chunk.iter() {
            match byte {
                b'\n' if after_newline => since_blank = 0,
                b'\n' => after_newline = true,
                b'\r' => {}
                _ => after_newline = false,
            }
            since_blank += 1;
            if since_blank > max_event {
                return Err(Bounded::TooLarge(max_event));
            }
        }
        Ok(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&str]) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
        let parts: Vec<_> = parts
            .iter()
            .map(|p| Ok(Bytes::from(p.to_string())))
            .collect();
        futures::stream::iter(parts)
    }

    #[tokio::test]
    async fn many_small_events_pass_and_one_endless_event_fails() {
        let small: Vec<String> = (0..100).map(|n| format!("data: {n}\n\n")).collect();
        let small: Vec<&str> = small.iter().map(String::as_str).collect();
        let passed: Vec<_> = events(chunks(&small), 16).collect().await;
        assert!(passed.iter().all(Result::is_ok));
        let endless = ["data: ", "aaaaaaaa", "aaaaaaaa", "aaaaaaaa"];
        let failed: Vec<_> = events(chunks(&endless), 16).collect().await;
        assert!(matches!(failed.last(), Some(Err(Bounded::TooLarge(16)))));
        let crlf = ["data: 1\r\n\r\n", "data: 2\r\n\r\n", "data: 3\r\n\r\n"];
        let passed: Vec<_> = events(chunks(&crlf), 12).collect().await;
        assert!(passed.iter().all(Result::is_ok));
    }

    #[tokio::test]
    async fn a_body_is_read_up_to_its_cap() {
        assert_eq!(read(chunks(&["ab", "cd"]), 4).await.expect("read"), b"abcd");
        assert!(matches!(
            read(chunks(&["ab", "cde"]), 4).await,
            Err(Bounded::TooLarge(4))
        ));
    }
}
