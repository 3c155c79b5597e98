//! How many connections the edge holds: per client IP and in all, counted for each
//! connection's whole life (lane streams, hyper connections, upgraded WebSockets), and the
//! timeouts that close the ones that do not send a request (ADR 16).
//!
//! A connection over a cap is refused at once with a short `503` written without waiting, so
//! refusing costs no task and no buffer. Past the total cap a small reserve stays open to
//! `GET /api/v1/health` alone, so a platform at its limit can still say so.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The limits, from the binary's config.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// A connection that sends no byte of a request this long after accepting it is closed.
    pub idle_timeout: Duration,
    /// A request head not complete this long after the server started waiting for it (at
    /// accept for the first, after the previous response for later ones) closes the
    /// connection.
    pub header_timeout: Duration,
    /// Connections at once, in all.
    pub max_connections: usize,
    /// Connections at once from one client IP.
    pub max_connections_per_ip: usize,
    /// Addresses the per-IP cap does not apply to (a reverse proxy in front of the edge).
    pub uncapped_ips: Vec<IpAddr>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            max_connections: 50_000,
            max_connections_per_ip: 256,
            uncapped_ips: Vec::new(),
        }
    }
}

/// Connections kept for health checks beyond the total cap.
pub const HEALTH_RESERVE: usize = 32;
/// How long a reserved connection has to send its whole `GET /api/v1/health`.
pub const HEALTH_HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// What the edge may do with a new connection.
pub enum Admission {
    /// Serve it; the slot frees when dropped.
    Serve(Slot),
    /// The total cap is reached: serve it only if it asks for health.
    HealthOnly(Slot),
    /// Refuse it.
    Refuse(&'static str),
}

/// The live connection counts.
pub struct Connections {
    limits: HttpLimits,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    refused: AtomicU64,
    last_report: Mutex<Option<Instant>>,
}

impl Connections {
    /// Counts under `limits`.
    pub fn new(limits: HttpLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
            last_report: Mutex::new(None),
        })
    }

    /// The limits.
    pub fn limits(&self) -> &HttpLimits {
        &self.limits
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Decides about a connection from `ip`, counting it if admitted.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Admission {
        let capped = !self.limits.uncapped_ips.contains(&ip);
        {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let count = per_ip.entry(ip).or_insert(0);
            if capped && *count >= self.limits.max_connections_per_ip {
                drop(per_ip);
                return self.refuse("the per-IP connection cap is reached");
            }
            *count += 1;
        }
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        let slot = Slot {
            connections: self.clone(),
            ip,
        };
        if total <= self.limits.max_connections {
            Admission::Serve(slot)
        } else if total <= self.limits.max_connections + HEALTH_RESERVE {
            Admission::HealthOnly(slot)
        } else {
            drop(slot);
            self.refuse("the connection cap is reached")
        }
    }

    /// Counts a refusal and says so in the log, at most every 10 s.
    fn refuse(&self, reason: &'static str) -> Admission {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_report.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
            *last = Some(Instant::now());
            tracing::warn!(
                reason,
                refused_so_far = refused,
                open = self.open(),
                "refusing connections"
            );
        }
        Admission::Refuse(reason)
    }

    fn release(&self, ip: IpAddr) {
        self.total.fetch_sub(1, Ordering::Relaxed);
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&ip);
            }
        }
    }
}

/// One admitted connection; dropping it frees its place.
pub struct Slot {
    connections: Arc<Connections>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.release(self.ip);
    }
}

/// The answer a refused connection gets, written without waiting (it may not be read).
pub const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\n\
content-type: application/json\r\ncontent-length: 87\r\nconnection: close\r\n\r\n\
{\"error\":{\"code\":\"too_many_connections\",\"message\":\"too many connections; retry later\"}}";

/// The answer a connection gets that did not send its request head in time.
pub const TIMED_OUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n\
content-length: 88\r\nconnection: close\r\n\r\n\
{\"error\":{\"code\":\"request_timeout\",\"message\":\"the request head did not arrive in time\"}}";

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_ip: usize) -> HttpLimits {
        HttpLimits {
            max_connections: total,
            max_connections_per_ip: per_ip,
            uncapped_ips: vec!["10.0.0.9".parse().expect("ip")],
            ..HttpLimits::default()
        }
    }

    #[test]
    fn the_per_ip_cap_refuses_one_address_and_frees_with_its_slots() {
        let connections = Connections::new(limits(100, 2));
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let a = connections.admit(ip);
        let b = connections.admit(ip);
        assert!(matches!(a, Admission::Serve(_)) && matches!(b, Admission::Serve(_)));
        assert!(matches!(connections.admit(ip), Admission::Refuse(_)));
        assert!(matches!(
            connections.admit("10.0.0.2".parse().expect("ip")),
            Admission::Serve(_)
        ));
        drop(a);
        assert!(matches!(connections.admit(ip), Admission::Serve(_)));
        let proxy: IpAddr = "10.0.0.9".parse().expect("ip");
        let behind_the_proxy: Vec<Admission> = (0..5).map(|_| connections.admit(proxy)).collect();
        assert!(
            behind_the_proxy
                .iter()
                .all(|admission| matches!(admission, Admission::Serve(_))),
            "an uncapped address is not held to the per-IP cap"
        );
    }

    #[test]
    fn past_the_total_cap_a_reserve_is_kept_for_health_then_everything_is_refused() {
        let connections = Connections::new(limits(3, 1000));
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let mut held = Vec::new();
        for _ in 0..3 {
            match connections.admit(ip) {
                Admission::Serve(slot) => held.push(slot),
                _ => panic!("under the cap"),
            }
        }
        for _ in 0..HEALTH_RESERVE {
            match connections.admit(ip) {
                Admission::HealthOnly(slot) => held.push(slot),
                _ => panic!("in the reserve"),
            }
        }
        assert!(matches!(connections.admit(ip), Admission::Refuse(_)));
        assert_eq!(connections.open(), 3 + HEALTH_RESERVE);
        held.clear();
        assert_eq!(connections.open(), 0);
        assert!(matches!(connections.admit(ip), Admission::Serve(_)));
    }

    #[test]
    fn the_canned_answers_are_well_formed() {
        for answer in [REFUSED, TIMED_OUT] {
            let text = std::str::from_utf8(answer).expect("utf-8");
            let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .and_then(|n| n.parse().ok())
                .expect("length");
            assert_eq!(length, body.len(), "{text}");
            serde_json::from_str::<serde_json::Value>(body).expect("json body");
        }
    }
}
