//! The stream lane: long-lived SSE `GET`s are answered by the edge's own small HTTP/1 writer,
//! everything else by hyper (ADR 11).
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB write buffer for the whole life of every
//! HTTP/1 connection, with no setting to shrink them. An idle SSE client never sends another
//! byte and only ever receives small frames, so those 16 KiB are most of what it costs. The
//! [`Sniffer`] reads each new connection's first request head itself:
//! - a `GET` of a follow stream (`/api/v1/conversations/{id}/events`, `/api/v1/events`) is run
//!   through the same router, with the same layers and extractors, and its response is written
//!   by [`stream`]: the head, then each frame as it comes, the body ended by closing the
//!   connection;
//! - anything else (or a head it cannot read) is handed to hyper with the bytes already read put
//!   back in front ([`Rewound`]), so hyper sees the connection exactly as the client sent it.
//!
//! Modules:
//! - [`head`] — reading and classifying a connection's first request head.
//! - [`stream`] — answering one follow request and writing its response.

pub mod head;
pub mod stream;

use crate::conns::{self, Admission, Connections, Slot};
use axum::Router;
use axum::serve::Listener;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Connections waiting to be handed to hyper; the sniffing tasks wait when it is full.
const HANDOFF_QUEUE: usize = 256;

/// A listener that keeps follow streams for the lane and hands every other connection on,
/// within the connection caps and timeouts ([`crate::conns`]).
pub struct Sniffer {
    tcp: TcpListener,
    handed: mpsc::Receiver<(Rewound, SocketAddr)>,
    hand: mpsc::Sender<(Rewound, SocketAddr)>,
    lane: Lane,
}

/// What each sniffing task needs: the router to answer with, the shutdown, the tracker that
/// `serve` waits on, and the connection counts.
#[derive(Clone)]
pub struct Lane {
    router: Router,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    connections: Arc<Connections>,
}

impl Lane {
    /// A lane answering through `router` until `shutdown`, its tasks tracked by `tasks`, its
    /// connections counted by `connections`.
    pub fn new(
        router: Router,
        shutdown: CancellationToken,
        tasks: TaskTracker,
        connections: Arc<Connections>,
    ) -> Self {
        Self {
            router,
            shutdown,
            tasks,
            connections,
        }
    }
}

impl Sniffer {
    /// Sniffs the connections of `tcp`.
    pub fn new(tcp: TcpListener, lane: Lane) -> Self {
        let (hand, handed) = mpsc::channel(HANDOFF_QUEUE);
        Self {
            tcp,
            handed,
            hand,
            lane,
        }
    }

    fn admit(&self, tcp: TcpStream, peer: SocketAddr) {
        match self.lane.connections.admit(peer.ip()) {
            Admission::Serve(slot) => self.sniff(tcp, peer, slot, false),
            Admission::HealthOnly(slot) => self.sniff(tcp, peer, slot, true),
            Admission::Refuse(_) => refuse(tcp),
        }
    }

    /// Reads the connection's first head within the timeouts and hands it to whoever answers
    /// it; `health_only` connections (past the total cap) may only ask for health.
    fn sniff(&self, mut tcp: TcpStream, peer: SocketAddr, slot: Slot, health_only: bool) {
        // SSE frames are small writes: Nagle would hold one back until the client's delayed
        // ACK (measured: a 40 ms stall on the first delta of a run).
        let _ = tcp.set_nodelay(true);
        let lane = self.lane.clone();
        let hand = self.hand.clone();
        let accepted = tokio::time::Instant::now();
        let limits = lane.connections.limits();
        let deadlines = if health_only {
            head::Deadlines {
                idle: conns::HEALTH_HEAD_TIMEOUT,
                header: conns::HEALTH_HEAD_TIMEOUT,
            }
        } else {
            head::Deadlines {
                idle: limits.idle_timeout,
                header: limits.header_timeout,
            }
        };
        self.lane.tasks.spawn(async move {
            let shutdown = lane.shutdown.clone();
            tokio::select! {
                _ = shutdown.cancelled() => {}
                verdict = head::read(&mut tcp, peer, accepted, deadlines) => match verdict {
                    head::Verdict::Follow(_) | head::Verdict::Other(_) if health_only && !verdict.is_health() => {
                        let _ = tcp.try_write(conns::REFUSED);
                    }
                    head::Verdict::Follow(request) => {
                        let _slot = slot;
                        stream::serve(tcp, *request, lane.router, &lane.shutdown).await;
                    }
                    head::Verdict::Other(read) => {
                        // An error means the server stopped accepting: the connection closes.
                        let _ = hand.send((Rewound::new(read, tcp, slot), peer)).await;
                    }
                    head::Verdict::TimedOut => {
                        let _ = tcp.try_write(conns::TIMED_OUT);
                    }
                    head::Verdict::Closed => {}
                },
            }
        });
    }
}

impl Listener for Sniffer {
    type Io = Rewound;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Rewound, SocketAddr) {
        loop {
            tokio::select! {
                Some(handed) = self.handed.recv() => return handed,
                accepted = self.tcp.accept() => match accepted {
                    Ok((tcp, peer)) => self.admit(tcp, peer),
                    Err(err) if is_connection_error(&err) => {}
                    Err(err) => {
                        // Out of file descriptors, say: give the process a moment.
                        tracing::error!(%err, "accepting a connection");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// Writes the refusal once, without waiting, and drops the connection. On the plain socket: a
/// socket tokio has just registered has no readiness yet, so its `try_write` would not even try.
/// A fresh socket's send buffer takes the whole answer.
fn refuse(tcp: TcpStream) {
    if let Ok(tcp) = tcp.into_std() {
        let _ = std::io::Write::write(&mut &tcp, conns::REFUSED);
    }
}

fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A TCP connection with the bytes the sniffer already read put back in front of it, holding
/// its place under the connection caps for as long as it lives (upgraded to a WebSocket too).
pub struct Rewound {
    read: Vec<u8>,
    at: usize,
    tcp: TcpStream,
    _slot: Slot,
}

impl Rewound {
    fn new(read: Vec<u8>, tcp: TcpStream, slot: Slot) -> Self {
        Self {
            read,
            at: 0,
            tcp,
            _slot: slot,
        }
    }
}

impl AsyncRead for Rewound {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.read.len() {
            let n = buf.remaining().min(this.read.len() - this.at);
            buf.put_slice(&this.read[this.at..this.at + n]);
            this.at += n;
            if this.at == this.read.len() {
                this.read = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
