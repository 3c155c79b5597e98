//! Answering one follow request: the router makes the response, this writes it.
//!
//! The response goes out as HTTP/1.1 with `connection: close`. A body of known length (an error
//! envelope, say) gets its `content-length`; a stream has none and ends when the connection
//! closes (RFC 9112 §6.3), so each frame is written as the router made it, shared bytes and all,
//! with no chunk framing. While the stream is open the lane reads from the socket only to see
//! the client leave, into a few bytes on the stack. A write the client does not take for 30 s
//! ends the connection.

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::http::response::Parts;
use axum::http::{Request, header};
use futures::StreamExt;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long a stream may keep writing after shutdown (its last frame says the server closes).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A write the client does not take for this long ends the connection (as on the gateway).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

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

async fn respond(
    mut tcp: TcpStream,
    request: Request<Body>,
    router: Router,
) -> std::io::Result<()> {
    let Ok(response) = router.oneshot(request).await;
    let (parts, body) = response.into_parts();
    write(&mut tcp, &encode_head(&parts, body.size_hint().exact())).await?;
    let mut frames = body.into_data_stream();
    let mut probe = [0u8; 16];
    loop {
        tokio::select! {
            biased;
            frame = frames.next() => match frame {
                Some(Ok(bytes)) => write(&mut tcp, &bytes).await?,
                Some(Err(_)) | None => break,
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

async fn write(tcp: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    // The timer is only armed when the write does not complete at once.
    tokio::time::timeout(WRITE_TIMEOUT, tcp.write_all(bytes))
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)?
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
