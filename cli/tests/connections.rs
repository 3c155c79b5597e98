//! Connections that hold the edge without asking for anything are closed, and no address can
//! take every connection: against the real `warren dev` over raw TCP, with short timeouts.
//!
//! Attacking connections come from other loopback addresses (127.0.0.2 and up: any 127/8
//! address is this host), so a test can be an attacker and a normal client at once.

mod common;
mod edge_support;

use edge_support::Platform;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The edge's timeouts in these tests.
const IDLE: Duration = Duration::from_secs(2);
const HEADER: Duration = Duration::from_secs(3);
/// What "closed within the timeout" allows on top of it (scheduling on a busy machine).
const SLACK: Duration = Duration::from_millis(1500);

fn edge_addr(platform: &Platform) -> SocketAddr {
    platform
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("edge address")
}

/// A TCP connection to the edge from `from`.
async fn connect_from(platform: &Platform, from: IpAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind");
    socket.connect(edge_addr(platform)).await.expect("connect")
}

/// Reads until the edge closes the connection; everything it wrote.
async fn until_closed(tcp: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut read = Vec::new();
    let closed = tokio::time::timeout(within, async {
        loop {
            match tcp.read_buf(&mut read).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    closed.ok().map(|()| read)
}

fn loopback(n: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, n])
}

/// A client's `GET /api/v1/health` on a connection of its own, timed.
async fn timed_health(platform: &Platform) -> (u16, Duration) {
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let status = client
        .get(format!("{}/api/v1/health", platform.base))
        .send()
        .await
        .map_or(0, |response| response.status().as_u16());
    (status, started.elapsed())
}

/// What a normal client saw while `attack` ran: each request's status and time.
async fn served_during<F: std::future::Future<Output = ()>>(
    platform: &Platform,
    attack: F,
) -> Vec<(u16, Duration)> {
    tokio::pin!(attack);
    let mut seen = Vec::new();
    loop {
        tokio::select! {
            _ = &mut attack => return seen,
            answer = async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                timed_health(platform).await
            } => seen.push(answer),
        }
    }
}

fn assert_served_quickly(seen: &[(u16, Duration)]) {
    assert!(seen.len() >= 10, "too few requests to tell: {}", seen.len());
    let worst = seen.iter().map(|(_, took)| *took).max().unwrap_or_default();
    assert!(
        seen.iter().all(|(status, _)| *status == 200),
        "a normal request failed: {seen:?}"
    );
    let mut times: Vec<Duration> = seen.iter().map(|(_, took)| *took).collect();
    times.sort();
    // A request held up by the attack would wait for the header timeout to clear it; a third
    // of that tells the two apart on a loaded machine too.
    assert!(
        worst < HEADER / 3,
        "a normal request took {worst:?} ({} requests; slowest {:?})",
        seen.len(),
        &times[times.len().saturating_sub(5)..]
    );
}

fn timeouts_env() -> Vec<(&'static str, String)> {
    vec![
        ("WARREN_HTTP_IDLE_TIMEOUT_SECS", IDLE.as_secs().to_string()),
        (
            "WARREN_HTTP_HEADER_TIMEOUT_SECS",
            HEADER.as_secs().to_string(),
        ),
    ]
}

async fn start(extra: &[(&'static str, String)]) -> Platform {
    let mut env = timeouts_env();
    env.extend(extra.iter().cloned());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let platform = Platform::start(&env).await;
    // Warm the edge's database pool: its first connections log in (SCRAM takes a while in a
    // debug build), and that is not what the bound measures.
    let warm_up: Vec<_> = (0..4).map(|_| timed_health(&platform)).collect();
    futures::future::join_all(warm_up).await;
    platform
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slowloris_connections_are_closed_in_time_while_a_client_is_served_quickly() {
    let platform = start(&[]).await;
    // 1,000 silent connections and 500 slowloris ones, from eight addresses (under the per-IP
    // cap of 256), half of the slow ones on a path the lane would answer, half on one hyper
    // answers.
    let mut attackers = tokio::task::JoinSet::new();
    for i in 0..1500usize {
        let mut tcp = connect_from(&platform, loopback(2 + (i % 8) as u8)).await;
        let opened = Instant::now();
        attackers.spawn(async move {
            if i < 1000 {
                let closed = until_closed(&mut tcp, IDLE + SLACK * 4).await;
                return ("silent", opened.elapsed(), closed.is_some());
            }
            let first = if i % 2 == 0 {
                "GET /api/v1/events HTTP/1.1\r\n"
            } else {
                "GET /api/v1/agents HTTP/1.1\r\n"
            };
            let (mut reader, mut writer) = tcp.into_split();
            let trickle = async move {
                let _ = writer.write_all(first.as_bytes()).await;
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if writer.write_all(b"X-Slow: 1\r\n").await.is_err() {
                        return;
                    }
                }
            };
            let closed = async {
                let mut sink = Vec::new();
                loop {
                    match reader.read_buf(&mut sink).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            };
            let closed = tokio::time::timeout(HEADER + SLACK * 4, async {
                tokio::select! {
                    _ = trickle => {}
                    _ = closed => {}
                }
            })
            .await;
            ("slowloris", opened.elapsed(), closed.is_ok())
        });
    }
    let mut outcomes = Vec::new();
    let seen = served_during(&platform, async {
        while let Some(outcome) = attackers.join_next().await {
            outcomes.push(outcome.expect("attacker task"));
        }
    })
    .await;
    assert_eq!(outcomes.len(), 1500);
    for (kind, took, closed) in &outcomes {
        let limit = if *kind == "silent" { IDLE } else { HEADER } + SLACK;
        assert!(closed, "a {kind} connection was never closed");
        assert!(
            *took <= limit,
            "a {kind} connection was closed after {took:?} (limit {limit:?})"
        );
    }
    assert_served_quickly(&seen);
}

#[tokio::test]
async fn two_hundred_half_sent_heads_are_closed_within_the_header_timeout() {
    let platform = start(&[]).await;
    let mut stalled = tokio::task::JoinSet::new();
    for i in 0..200usize {
        let mut tcp = connect_from(&platform, loopback(20 + (i % 4) as u8)).await;
        tcp.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: edge\r\n")
            .await
            .expect("half a head");
        let sent = Instant::now();
        stalled.spawn(async move {
            let answer = until_closed(&mut tcp, HEADER + SLACK * 4).await;
            (sent.elapsed(), answer)
        });
    }
    let mut outcomes = Vec::new();
    let seen = served_during(&platform, async {
        while let Some(outcome) = stalled.join_next().await {
            outcomes.push(outcome.expect("task"));
        }
    })
    .await;
    for (took, answer) in &outcomes {
        assert!(answer.is_some(), "a stalled connection stayed open");
        assert!(*took <= HEADER + SLACK, "closed after {took:?}");
    }
    assert_served_quickly(&seen);
}

#[tokio::test]
async fn a_keep_alive_connection_that_trickles_its_second_head_is_closed() {
    let platform = start(&[]).await;
    let mut tcp = connect_from(&platform, loopback(1)).await;
    tcp.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: edge\r\n\r\n")
        .await
        .expect("first request");
    // The whole first response (it is small), then a second head, a line a second.
    let mut first = vec![0u8; 4096];
    let n = tcp.read(&mut first).await.expect("first response");
    assert!(first[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &first[..n]);
    tcp.write_all(b"GET /api/v1/health HTTP/1.1\r\n")
        .await
        .expect("second head");
    let started = Instant::now();
    let (mut reader, mut writer) = tcp.into_split();
    let closed = tokio::time::timeout(HEADER + SLACK * 4, async {
        tokio::select! {
            _ = async {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if writer.write_all(b"X-Slow: 1\r\n").await.is_err() {
                        return;
                    }
                }
            } => {}
            _ = async {
                let mut sink = Vec::new();
                while matches!(reader.read_buf(&mut sink).await, Ok(n) if n > 0) {}
            } => {}
        }
    })
    .await;
    assert!(closed.is_ok(), "the trickling connection stayed open");
    assert!(
        started.elapsed() <= HEADER + SLACK,
        "closed after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn one_address_cannot_take_more_than_its_cap_while_another_is_served() {
    let platform = start(&[
        ("WARREN_HTTP_MAX_CONNECTIONS_PER_IP", "20".into()),
        ("WARREN_HTTP_IDLE_TIMEOUT_SECS", "60".into()),
    ])
    .await;
    let hog = loopback(30);
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(connect_from(&platform, hog).await);
    }
    // Accepted in order: by the time the 21st is refused, the 20 are counted.
    let mut extra = connect_from(&platform, hog).await;
    let answer = until_closed(&mut extra, Duration::from_secs(10))
        .await
        .expect("the 21st connection is closed at once");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 503") && text.contains("too_many_connections"),
        "{text}"
    );
    let other = reqwest::Client::builder()
        .local_address(loopback(31))
        .build()
        .expect("client");
    let served = other
        .get(format!("{}/api/v1/health", platform.base))
        .send()
        .await
        .expect("another address is served");
    assert_eq!(served.status().as_u16(), 200);
    // A freed place is free again.
    held.pop();
    let again = reqwest::Client::builder()
        .local_address(hog)
        .build()
        .expect("client");
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(response) = again
                .get(format!("{}/api/v1/health", platform.base))
                .send()
                .await
            {
                return response.status().as_u16();
            }
        }
    })
    .await
    .expect("served again");
    assert_eq!(status, 200);
}

#[tokio::test]
async fn at_the_total_cap_health_answers_and_open_streams_and_connections_go_on() {
    let platform = start(&[
        ("WARREN_HTTP_MAX_CONNECTIONS", "30".into()),
        ("WARREN_HTTP_IDLE_TIMEOUT_SECS", "60".into()),
        ("WARREN_HTTP_HEADER_TIMEOUT_SECS", "60".into()),
        ("WARREN_APPROVAL", "open".into()),
    ])
    .await;
    let me = platform.sign_in("busy@example.com").await;
    // An open feed stream, and a client with a kept-alive connection.
    let mut feed = platform
        .http
        .get(format!("{}/api/v1/events", platform.base))
        .bearer_auth(&me.access)
        .send()
        .await
        .expect("feed");
    assert_eq!(feed.status().as_u16(), 200);
    let kept = reqwest::Client::new();
    let warm = kept
        .get(format!("{}/api/v1/users/me", platform.base))
        .bearer_auth(&me.access)
        .send()
        .await
        .expect("warm up a kept-alive connection");
    assert_eq!(warm.status().as_u16(), 200);

    // Fill every place that is left with silent connections from elsewhere.
    let mut held = Vec::new();
    for i in 0..40u8 {
        held.push(connect_from(&platform, loopback(40 + i % 4)).await);
    }
    let fresh = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client")
    };
    let refused = fresh()
        .get(format!("{}/api/v1/agents", platform.base))
        .bearer_auth(&me.access)
        .send()
        .await
        .expect("an answer");
    assert_eq!(refused.status().as_u16(), 503);
    let body: serde_json::Value = refused.json().await.expect("envelope");
    assert_eq!(body["error"]["code"], "too_many_connections");
    let health = fresh()
        .get(format!("{}/api/v1/health", platform.base))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status().as_u16(), 200, "health answers at the cap");

    // The kept-alive connection still works, and the open stream sees what it does.
    let created = kept
        .post(format!("{}/api/v1/agents", platform.base))
        .bearer_auth(&me.access)
        .json(&json!({ "name": "AtTheCap" }))
        .send()
        .await
        .expect("create on the kept-alive connection");
    assert_eq!(created.status().as_u16(), 201);
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        let mut text = String::new();
        while !text.contains("AtTheCap") {
            match feed.chunk().await {
                Ok(Some(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return false,
            }
        }
        true
    })
    .await;
    assert_eq!(seen, Ok(true), "the open feed stream saw the new agent");
    drop(held);
}
