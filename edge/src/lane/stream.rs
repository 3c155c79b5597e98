//! Answering one follow request: the router makes the response, this writes it.
//!
//! The response goes out as HTTP/1.1 with `connection: close`. A body of known length (an error
//! envelope, say) gets its `content-length`; a stream has none and ends when the connection
//! closes (RFC 9112 §6.3), so each frame is written as the router made it, shared bytes and all,
//! with no chunk framing. While the stream is open the lane reads from the socket only to see
//! the client leave, into a few bytes on the stack. A write the client does not take for 30 s
//! ends the connection.

use axum::Router;
use axum::body::{Body, BodyDataStream, Bytes, HttpBody};
use axum::http::response::Parts;
use axum::http::{Request, header};
use bytes::Buf;
use futures::StreamExt;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long a stream may keep writing after shutdown (its last frame says the server closes).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A write the client does not take for this long ends the connection (as on the gateway).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames written in one go at most (as many as hyper's write queue holds).
const MAX_BATCH: usize = 16;

/// Answers `request` on `tcp` through `router`, then closes the connection.
pub async fn serve(
    tcp: TcpStream,
    request: Request<Body>,
    router: Router,
    shutdown: &CancellationToken,
) {
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        _ = deadline => {}
        _ = respond(tcp, request, router) => {}
    }
}

async fn respond(mut tcp: TcpStream, request: Request<Body>, router: Router) -> io::Result<()> {
    let Ok(response) = router.oneshot(request).await;
    let (parts, body) = response.into_parts();
    let head = Bytes::from(encode_head(&parts, body.size_hint().exact()));
    write(&mut tcp, vec![head]).await?;
    let mut frames = Frames::new(body);
    let mut probe = [0u8; 16];
    loop {
        tokio::select! {
            biased;
            batch = frames.ready() => match batch {
                Some(batch) => write(&mut tcp, batch).await?,
                None => break,
            },
            read = tcp.read(&mut probe) => match read {
                // Gone. (Anything it sends after the head is ignored: the connection ends with
                // this response.)
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => {}
            },
        }
    }
    tcp.shutdown().await
}

/// A body's frames, taken as many as are ready at a time (a client that fell behind a few
/// frames gets them in one write, as hyper's write queue would give them).
struct Frames {
    data: BodyDataStream,
    ended: bool,
}

impl Frames {
    fn new(body: Body) -> Self {
        Self {
            data: body.into_data_stream(),
            ended: false,
        }
    }

    /// The frames ready now, waiting for the first; `None` once the body has ended.
    async fn ready(&mut self) -> Option<Vec<Bytes>> {
        poll_fn(|cx| {
            let mut batch = Vec::new();
            while !self.ended && batch.len() < MAX_BATCH {
                match self.data.poll_next_unpin(cx) {
                    Poll::Ready(Some(Ok(bytes))) if bytes.is_empty() => {}
                    Poll::Ready(Some(Ok(bytes))) => batch.push(bytes),
                    Poll::Ready(Some(Err(_)) | None) => self.ended = true,
                    Poll::Pending => break,
                }
            }
            match (batch.is_empty(), self.ended) {
                (false, _) => Poll::Ready(Some(batch)),
                (true, true) => Poll::Ready(None),
                (true, false) => Poll::Pending,
            }
        })
        .await
    }
}

/// Writes `batch` whole, vectored; a client that takes none of it for [`WRITE_TIMEOUT`] ends
/// the connection. (The timer is only armed when the write does not complete at once.)
async fn write(tcp: &mut TcpStream, mut batch: Vec<Bytes>) -> io::Result<()> {
    let all = async {
        let mut first = 0;
        while first < batch.len() {
            let mut slices = [IoSlice::new(&[]); MAX_BATCH];
            let pending = &batch[first..batch.len().min(first + MAX_BATCH)];
            for (slice, bytes) in slices.iter_mut().zip(pending) {
                *slice = IoSlice::new(bytes);
            }
            let mut written = tcp.write_vectored(&slices[..pending.len()]).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            while written > 0 {
                let len = batch[first].len();
                if written >= len {
                    written -= len;
                    first += 1;
                } else {
                    batch[first].advance(written);
                    written = 0;
                }
            }
        }
        Ok(())
    };
    tokio::time::timeout(WRITE_TIMEOUT, all)
        .await
        .map_err(|_| io::ErrorKind::TimedOut)?
}

/// The status line and headers of `parts`, with the lane's own framing headers.
pub fn encode_head(parts: &Parts, length: Option<u64>) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(parts.status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if [
            header::CONNECTION,
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::DATE,
        ]
        .contains(name)
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT");
    head.extend_from_slice(format!("date: {date}\r\n").as_bytes());
    if let Some(length) = length {
        head.extend_from_slice(format!("content-length: {length}\r\n").as_bytes());
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, Response, StatusCode};
    use std::convert::Infallible;

    #[tokio::test]
    async fn ready_frames_come_in_batches_and_the_end_comes_once() {
        let items = (0..40u8).map(|i| Ok::<_, Infallible>(Bytes::from(vec![i; 3])));
        let with_empty = items.chain([Ok(Bytes::new())]);
        let mut frames = Frames::new(Body::from_stream(futures::stream::iter(with_empty)));
        let mut sizes = Vec::new();
        let mut seen = Vec::new();
        while let Some(batch) = frames.ready().await {
            sizes.push(batch.len());
            seen.extend(batch.iter().map(|bytes| bytes[0]));
        }
        assert_eq!(sizes, [16, 16, 8]);
        assert_eq!(seen, (0..40).collect::<Vec<u8>>());
        // Asking again after the end is not polling the body again.
        assert!(frames.ready().await.is_none());
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_socket_takes_is_written_whole_in_order() -> io::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let client = tokio::spawn(async move {
            let mut tcp = TcpStream::connect(addr).await?;
            let mut all = Vec::new();
            tcp.read_to_end(&mut all).await?;
            io::Result::Ok(all)
        });
        let (mut tcp, _) = listener.accept().await?;
        // 16 MiB in 16 frames: far more than one write takes, so most writes end mid-frame.
        let batch: Vec<Bytes> = (0..16u8).map(|i| Bytes::from(vec![i; 1 << 20])).collect();
        let expected: Vec<u8> = batch.iter().flat_map(|b| b.iter().copied()).collect();
        write(&mut tcp, batch).await?;
        drop(tcp);
        let received = client.await.map_err(io::Error::other)??;
        assert_eq!(received.len(), expected.len());
        assert!(received == expected, "bytes out of order");
        Ok(())
    }

    fn head_of(response: Response<()>, length: Option<u64>) -> String {
        let (parts, ()) = response.into_parts();
        String::from_utf8(encode_head(&parts, length)).unwrap_or_default()
    }

    #[test]
    fn a_stream_head_has_no_length_and_closes() {
        let mut response = Response::new(());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        response.headers_mut().insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let head = head_of(response, None);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("\r\ncontent-type: text/event-stream\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\ndate: "), "{head}");
        assert!(head.ends_with("\r\nconnection: close\r\n\r\n"), "{head}");
        assert!(!head.contains("transfer-encoding"), "{head}");
        assert!(!head.contains("content-length"), "{head}");
    }

    #[test]
    fn a_sized_body_gets_its_length() {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        let head = head_of(response, Some(42));
        assert!(head.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{head}");
        assert!(head.contains("\r\ncontent-length: 42\r\n"), "{head}");
        assert!(!head.contains("999"), "{head}");
    }
}
