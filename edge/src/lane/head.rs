//! Reading a connection's first request head and deciding who answers it.

use crate::routes::API_PREFIX;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, Version, header};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The routes the lane answers, as the router writes them (checked against its table in the
/// tests below).
pub const FOLLOW_ROUTES: [&str; 2] = ["/api/v1/conversations/{id}/events", "/api/v1/events"];

/// The most the sniffer reads looking for a head; a longer one is hyper's to judge.
const MAX_HEAD: usize = 16 * 1024;
/// What the sniffer first reserves (a head with a bearer token fits).
const FIRST_READ: usize = 1024;
/// Headers beyond this many make the head hyper's.
const MAX_HEADERS: usize = 64;

/// Who answers a connection.
#[derive(Debug)]
pub enum Verdict {
    /// A follow stream, for the lane: the request, ready for the router.
    Follow(Box<Request<Body>>),
    /// Anything else, for hyper: the bytes read so far.
    Other(Vec<u8>),
    /// The client went away before sending anything.
    Closed,
    /// Nothing came within the idle timeout, or the head was not whole within the header
    /// timeout: close the connection.
    TimedOut,
}

impl Verdict {
    /// Whether this is a `GET /api/v1/health` (a follow stream never is).
    pub fn is_health(&self) -> bool {
        matches!(self, Verdict::Other(read) if is_health_request(read))
    }
}

/// How long a connection may take: to send a first byte (`idle`), and to finish the head
/// (`header`), both counted from accepting it.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// No byte by then: closed.
    pub idle: Duration,
    /// No whole head (for the lane) by then: closed.
    pub header: Duration,
}

/// Reads the first request head from `tcp` (sent by `peer`, accepted at `accepted`) and decides.
/// A head that is clearly not a follow stream goes to hyper as soon as that is clear, and hyper's
/// own header timeout bounds the rest of it.
pub async fn read(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    accepted: Instant,
    deadlines: Deadlines,
) -> Verdict {
    let mut read = Vec::with_capacity(FIRST_READ);
    let first = tokio::time::timeout_at(accepted + deadlines.idle, tcp.read_buf(&mut read)).await;
    match first {
        Err(_) => return Verdict::TimedOut,
        Ok(Ok(0) | Err(_)) => return Verdict::Closed,
        Ok(Ok(_)) => {}
    }
    match tokio::time::timeout_at(accepted + deadlines.header, fill(tcp, &mut read, peer)).await {
        Ok(verdict) => verdict.unwrap_or(Verdict::Other(read)),
        Err(_) => Verdict::TimedOut,
    }
}

/// Reads until the head is whole or clearly not a follow stream; `None` hands `read` to hyper.
async fn fill(tcp: &mut TcpStream, read: &mut Vec<u8>, peer: SocketAddr) -> Option<Verdict> {
    loop {
        match classify(read, peer) {
            Classified::Partial => {}
            Classified::Follow(request) => return Some(Verdict::Follow(request)),
            Classified::Other => return None,
        }
        if read.len() == read.capacity() {
            if read.len() >= MAX_HEAD {
                return None;
            }
            read.reserve(read.len());
        }
        match tcp.read_buf(read).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Whether `read` starts a `GET /api/v1/health` (all a connection in the health reserve may ask).
pub fn is_health_request(read: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    matches!(head.parse(read), Ok(httparse::Status::Complete(_)))
        && head.method == Some("GET")
        && head
            .path
            .is_some_and(|path| path.split('?').next() == Some("/api/v1/health"))
}

enum Classified {
    Partial,
    Follow(Box<Request<Body>>),
    Other,
}

fn classify(read: &[u8], peer: SocketAddr) -> Classified {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let status = match head.parse(read) {
        Ok(status) => status,
        Err(_) => return Classified::Other,
    };
    if head.method.is_some_and(|method| method != "GET")
        || head.path.is_some_and(|path| !is_follow_path(path))
    {
        return Classified::Other;
    }
    let httparse::Status::Complete(len) = status else {
        return Classified::Partial;
    };
    // Pipelined bytes after the head, a body, or an upgrade: hyper's.
    if len != read.len() {
        return Classified::Other;
    }
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(head.path.unwrap_or("/"))
        .version(match head.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        });
    for field in head.headers.iter() {
        let name = field.name;
        let body = (name.eq_ignore_ascii_case(header::CONTENT_LENGTH.as_str())
            && field.value != b"0")
            || name.eq_ignore_ascii_case(header::TRANSFER_ENCODING.as_str())
            || name.eq_ignore_ascii_case(header::UPGRADE.as_str());
        if body {
            return Classified::Other;
        }
        request = request.header(name, field.value);
    }
    match request.extension(ConnectInfo(peer)).body(Body::empty()) {
        Ok(request) => Classified::Follow(Box::new(request)),
        // A header hyper would refuse too; let it say so.
        Err(_) => Classified::Other,
    }
}

/// Whether `target` (path and query) names one of [`FOLLOW_ROUTES`].
pub fn is_follow_path(target: &str) -> bool {
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let Some(rest) = path.strip_prefix(API_PREFIX) else {
        return false;
    };
    if rest == "/events" {
        return true;
    }
    rest.strip_prefix("/conversations/")
        .and_then(|rest| rest.strip_suffix("/events"))
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9);

    #[test]
    fn the_follow_routes_are_routes_the_router_serves() {
        let table = crate::server::api().table();
        for route in FOLLOW_ROUTES {
            assert!(
                table.iter().any(|r| r.method == "get" && r.path == route),
                "{route} is not served: {table:?}"
            );
        }
    }

    #[test]
    fn only_follow_paths_are_follow_paths() {
        for yes in [
            "/api/v1/events",
            "/api/v1/events?after=3",
            "/api/v1/conversations/0b7e/events",
            "/api/v1/conversations/0b7e/events?after=12",
        ] {
            assert!(is_follow_path(yes), "{yes}");
        }
        for no in [
            "/api/v1/events/x",
            "/api/v1/conversations//events",
            "/api/v1/conversations/a/b/events",
            "/api/v1/conversations/a/messages",
            "/api/v2/events",
            "/ws",
            "/api/v1/eventsx",
        ] {
            assert!(!is_follow_path(no), "{no}");
        }
    }

    fn verdict(read: &[u8]) -> &'static str {
        match classify(read, PEER) {
            Classified::Partial => "partial",
            Classified::Follow(_) => "follow",
            Classified::Other => "other",
        }
    }

    #[test]
    fn a_whole_follow_get_is_the_lanes_and_keeps_its_headers() {
        let head = b"GET /api/v1/events?after=2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nLast-Event-ID: 7\r\n\r\n";
        let Classified::Follow(request) = classify(head, PEER) else {
            panic!("not the lane's");
        };
        assert_eq!(request.uri(), "/api/v1/events?after=2");
        assert_eq!(request.headers()["authorization"], "Bearer t");
        assert_eq!(request.headers()["last-event-id"], "7");
        assert_eq!(
            request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
            Some(PEER)
        );
    }

    #[test]
    fn everything_else_is_hypers_as_soon_as_it_shows() {
        assert_eq!(verdict(b"POST /api/v1/events HTTP/1.1\r\n"), "other");
        assert_eq!(verdict(b"GET /ws HTTP/1.1\r\nHost"), "other");
        assert_eq!(verdict(b"GET /api/v1/agents HTTP/1.1\r\n\r\n"), "other");
        assert_eq!(verdict(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), "other");
        assert_eq!(verdict(b"\x16\x03\x01\x02\x00"), "other");
        assert_eq!(
            verdict(b"GET /api/v1/events HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"),
            "other"
        );
        assert_eq!(
            verdict(b"GET /api/v1/events HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody"),
            "other"
        );
        // A second request pipelined behind the first.
        assert_eq!(
            verdict(b"GET /api/v1/events HTTP/1.1\r\n\r\nGET /api/v1/health HTTP/1.1\r\n\r\n"),
            "other"
        );
    }

    #[test]
    fn a_follow_head_cut_short_waits_for_the_rest() {
        assert_eq!(verdict(b"GET /api/v1/conversations/1/ev"), "partial");
        assert_eq!(
            verdict(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n"),
            "partial"
        );
    }
}
