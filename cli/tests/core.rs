//! One core for every channel: the gateway obeys the rules REST does, as of now, across edge
//! processes. Against the real binary: open sockets and streams end within a second of a logout,
//! a revocation or a rejection; an expired token ends a socket unless renewed in-band; gateway
//! writes count against the REST write limit, shared by two edge processes; a write repeated
//! with one idempotency key happens once, on any edge; a create answers from the log when the
//! read side lags.

mod common;
mod edge_support;
mod gateway_support;

use edge_support::{Platform, Session};
use gateway_support::Ws;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use warren_testkit::{wait_for, wait_until};

/// How soon an open connection must hear that its caller lost access.
const WITHIN: Duration = Duration::from_secs(1);

/// An SSE stream's text until it ends (or `within` passes); the text and how long it took.
async fn read_to_end(response: reqwest::Response, within: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut response = response;
    let mut text = String::new();
    let ended = tokio::time::timeout(within, async {
        while let Ok(Some(chunk)) = response.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    (text, ended.ok().map(|()| started.elapsed()))
}

/// Waits for the socket's `error` event and close; the error code and how long it took.
async fn ended(ws: &mut Ws, since: Instant) -> (String, Duration, Option<u16>) {
    let mut code = String::new();
    loop {
        match ws.frame().await {
            Ok(frame) => {
                if frame["type"] == "event" && frame["event"] == "error" {
                    code = frame["payload"]["errorCode"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                }
            }
            Err(close) => {
                return (code, since.elapsed(), close.map(|c| u16::from(c.code)));
            }
        }
    }
}

async fn open_feed(platform: &Platform, base: &str, session: &Session) -> reqwest::Response {
    let mut feed = platform
        .http
        .get(format!("{base}/api/v1/events"))
        .bearer_auth(&session.access)
        .send()
        .await
        .expect("feed");
    assert_eq!(feed.status().as_u16(), 200);
    // The stream is open once its `ready` frame came.
    let first = feed.chunk().await.expect("ready").expect("a frame");
    assert!(String::from_utf8_lossy(&first).contains("ready"));
    feed
}

#[tokio::test]
async fn logging_out_ends_open_sockets_and_streams_within_a_second_and_nothing_more_is_accepted() {
    let platform = Platform::start(&[("WARREN_APPROVAL", "open")]).await;
    let me = platform.sign_in("leaver@example.com").await;
    let (mut ws, _) = Ws::connect(&platform.base, &me.access).await;
    let feed = open_feed(&platform, &platform.base, &me).await;

    let since = Instant::now();
    let out = platform
        .post("/api/v1/auth/logout", Some(&me.access), json!({}))
        .await;
    assert_eq!(out.status, 204, "{out:?}");
    let (code, took, close) = ended(&mut ws, since).await;
    assert_eq!(code, "session_revoked");
    assert!(took <= WITHIN, "the socket ended after {took:?}");
    assert_eq!(close, Some(1008));
    let (text, took) = read_to_end(feed, Duration::from_secs(10)).await;
    let took = took.expect("the feed stream ended");
    assert!(
        took <= WITHIN + Duration::from_millis(200),
        "the stream ended after {took:?}"
    );
    assert!(text.contains(r#""code":"session_revoked""#), "{text}");

    // Nothing more on that session: a new socket and a REST write are refused.
    let mut again = Ws::open(&platform.base).await;
    again
        .send_text(
            &json!({"type": "req", "id": "c", "method": "connect",
                "params": {"version": "1", "clientType": "cli", "token": me.access}})
            .to_string(),
        )
        .await;
    assert_eq!(again.closed().await.map(|c| u16::from(c.code)), Some(1008));
    let refused = platform
        .post("/api/v1/agents", Some(&me.access), json!({"name": "late"}))
        .await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.body["error"]["code"], "session_revoked");
}

#[tokio::test]
async fn an_admin_revoking_or_rejecting_a_user_ends_their_open_connections_within_a_second() {
    let platform = Platform::start(&[("WARREN_ADMIN_EMAILS", "boss@example.com")]).await;
    let admin = platform.sign_in("boss@example.com").await;
    let member = platform.sign_in("member@example.com").await;
    let applicant = platform.sign_in("applicant@example.com").await;
    let id_of = |session: &Session| {
        let (platform, access) = (&platform, session.access.clone());
        async move {
            platform.get("/api/v1/users/me", Some(&access)).await.body["id"]
                .as_str()
                .expect("id")
                .to_owned()
        }
    };
    let (member_id, applicant_id) = (id_of(&member).await, id_of(&applicant).await);
    let approved = platform
        .post(
            &format!("/api/v1/admin/users/{member_id}/approve"),
            Some(&admin.access),
            json!({}),
        )
        .await;
    assert_eq!(approved.status, 200, "{approved:?}");

    let (mut member_ws, _) = Ws::connect(&platform.base, &member.access).await;
    let member_feed = open_feed(&platform, &platform.base, &member).await;
    let (mut applicant_ws, _) = Ws::connect(&platform.base, &applicant.access).await;

    let since = Instant::now();
    let revoked = platform
        .post(
            &format!("/api/v1/admin/users/{member_id}/revoke"),
            Some(&admin.access),
            json!({"reason": "done"}),
        )
        .await;
    assert_eq!(revoked.status, 200, "{revoked:?}");
    let (code, took, _) = ended(&mut member_ws, since).await;
    assert_eq!(code, "access_revoked");
    assert!(
        took <= WITHIN,
        "the revoked user's socket ended after {took:?}"
    );
    let (text, took) = read_to_end(member_feed, Duration::from_secs(10)).await;
    assert!(
        took.is_some_and(|t| t <= WITHIN + Duration::from_millis(200)),
        "{took:?}"
    );
    assert!(text.contains(r#""code":"access_revoked""#), "{text}");

    let since = Instant::now();
    let rejected = platform
        .post(
            &format!("/api/v1/admin/users/{applicant_id}/reject"),
            Some(&admin.access),
            json!({}),
        )
        .await;
    assert_eq!(rejected.status, 200, "{rejected:?}");
    let (code, took, _) = ended(&mut applicant_ws, since).await;
    assert_eq!(code, "access_revoked");
    assert!(
        took <= WITHIN,
        "the rejected user's socket ended after {took:?}"
    );

    // A further `agent` request from the revoked user is refused.
    let (mut after, _) = Ws::connect(&platform.base, &member.access).await;
    let refused = after
        .call(
            "agent",
            json!({"message": "still here?", "agentId": uuid::Uuid::now_v7()}),
        )
        .await;
    assert_eq!(refused["ok"], false);
    assert_eq!(refused["errorCode"], "not_approved", "{refused}");
}

#[tokio::test]
async fn an_expired_token_ends_the_socket_unless_the_client_renews_it_in_band() {
    let platform = Platform::start(&[
        ("WARREN_APPROVAL", "open"),
        ("WARREN_ACCESS_TOKEN_TTL_SECS", "4"),
    ])
    .await;
    let me = platform.sign_in("short@example.com").await;
    let (mut lapsing, _) = Ws::connect(&platform.base, &me.access).await;
    let (mut renewing, _) = Ws::connect(&platform.base, &me.access).await;

    // One renews before its token expires, with a new access token from the REST refresh. It
    // renews halfway through the token's life, as a client would (not to wait for anything):
    // the new token then outlives the old one by that much.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let refreshed = platform
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": me.refresh}),
        )
        .await;
    assert_eq!(refreshed.status, 200, "{refreshed:?}");
    let renewed = renewing
        .call(
            "auth.refresh",
            json!({"token": refreshed.body["access_token"]}),
        )
        .await;
    assert_eq!(renewed["ok"], true, "{renewed}");

    let since = Instant::now();
    let (code, _, close) = ended(&mut lapsing, since).await;
    assert_eq!(code, "token_expired");
    assert_eq!(close, Some(1008));
    // The renewed socket is still served now that the first token has expired.
    let status = renewing.call("status", json!({})).await;
    assert_eq!(status["ok"], true, "{status}");
}

#[tokio::test]
async fn gateway_writes_count_against_the_rest_write_limit_on_every_edge_process() {
    let platform = Platform::start(&[
        ("WARREN_APPROVAL", "open"),
        ("WARREN_RATE_WRITES_PER_USER_PER_MINUTE", "4"),
    ])
    .await;
    // Every write below must land in the same minute's window.
    common::with_a_minute_window_left(Duration::from_secs(40)).await;
    let me = platform.sign_in("busy@example.com").await;
    // Write 1 (REST): an agent.
    let agent = platform
        .post(
            "/api/v1/agents",
            Some(&me.access),
            json!({"name": "Helper"}),
        )
        .await;
    assert_eq!(agent.status, 201, "{agent:?}");
    let agent_id = agent.body["id"].as_str().expect("id").to_owned();
    // Writes 2 and 3 (gateway, first edge): a session and a message.
    let (mut ws, _) = Ws::connect(&platform.base, &me.access).await;
    ws.new_session(&agent_id).await;
    let posted = ws.call("agent", json!({"message": "one"})).await;
    assert_eq!(posted["ok"], true, "{posted}");
    // Reads are not writes.
    assert_eq!(ws.call("sessions.list", json!({})).await["ok"], true);

    // Write 4 and 5 on the second edge process: the fourth passes, the fifth is over the limit.
    let (second, _edge) = platform
        .second_edge(&[("WARREN_RATE_WRITES_PER_USER_PER_MINUTE", "4")])
        .await;
    let (mut other, _) = Ws::connect(&second, &me.access).await;
    let session = ws.call("status", json!({})).await["payload"]["session"]["id"].clone();
    other.switch(session.as_str().expect("session")).await;
    let fourth = other.call("agent", json!({"message": "two"})).await;
    assert_eq!(fourth["ok"], true, "{fourth}");
    let fifth = other.call("agent", json!({"message": "three"})).await;
    assert_eq!(fifth["ok"], false, "{fifth}");
    assert_eq!(fifth["errorCode"], "rate_limited");
    assert!(
        fifth["retryAfter"]
            .as_u64()
            .is_some_and(|s| (1..=60).contains(&s)),
        "{fifth}"
    );
    // And REST on the first edge agrees.
    let rest = platform
        .patch(
            "/api/v1/users/me",
            Some(&me.access),
            json!({"display_name": "Busy"}),
        )
        .await;
    assert_eq!(rest.status, 429, "{rest:?}");
}

/// The agents the user has, as the read model lists them, once they settle.
async fn agent_ids(platform: &Platform, base: &str, session: &Session) -> Vec<String> {
    let listed: Value = platform
        .http
        .get(format!("{base}/api/v1/agents"))
        .bearer_auth(&session.access)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    listed
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|a| a["id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn one_idempotency_key_makes_one_agent_and_one_message_on_any_edge() {
    let platform = Platform::start(&[
        ("WARREN_APPROVAL", "open"),
        ("WARREN_TIER_FREE_MAX_AGENTS", "5"),
    ])
    .await;
    let me = platform.sign_in("careful@example.com").await;
    let (second, _edge) = platform.second_edge(&[]).await;
    let create = |base: String, key: &'static str, name: &'static str| {
        let (http, access) = (platform.http.clone(), me.access.clone());
        async move {
            http.post(format!("{base}/api/v1/agents"))
                .bearer_auth(access)
                .header("Idempotency-Key", key)
                .json(&json!({"name": name}))
                .send()
                .await
                .expect("create")
        }
    };
    let first = create(platform.base.clone(), "agent-1", "Once").await;
    assert_eq!(first.status().as_u16(), 201);
    let first: Value = first.json().await.expect("agent");
    // The retry, on the other edge process: the first answer, replayed.
    let retry = create(second.clone(), "agent-1", "Once").await;
    assert_eq!(retry.status().as_u16(), 201);
    assert_eq!(
        retry
            .headers()
            .get("idempotency-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    let retry: Value = retry.json().await.expect("agent");
    assert_eq!(retry["id"], first["id"]);
    // The same key for another request is refused.
    let other = create(platform.base.clone(), "agent-1", "Twice").await;
    assert_eq!(other.status().as_u16(), 422);
    let other: Value = other.json().await.expect("envelope");
    assert_eq!(other["error"]["code"], "idempotency_key_reused");
    assert_eq!(
        agent_ids(&platform, &platform.base, &me).await,
        vec![first["id"].as_str().expect("id").to_owned()]
    );

    // A message sent twice with one key is one message (the second answer streams the same run).
    let agent = first["id"].as_str().expect("id").to_owned();
    for base in [&platform.base, &second] {
        let sent = platform
            .http
            .post(format!("{base}/api/v1/chat/{agent}"))
            .bearer_auth(&me.access)
            .header("Idempotency-Key", "message-1")
            .json(&json!({"message": "only once"}))
            .send()
            .await
            .expect("chat");
        assert_eq!(sent.status().as_u16(), 200);
        let (text, _) = read_to_end(sent, Duration::from_secs(30)).await;
        assert!(
            text.contains("\"type\":\"error\""),
            "the run ends (no runtime): {text}"
        );
    }
    // The run has ended in the log; wait for the read side to show the conversation's
    // messages, then count them.
    let messages = wait_for(Duration::from_secs(10), || async {
        let conversations = platform
            .get("/api/v1/conversations", Some(&me.access))
            .await;
        let conversation = conversations.body[0]["id"].as_str()?.to_owned();
        let messages = platform
            .get(
                &format!("/api/v1/conversations/{conversation}/messages"),
                Some(&me.access),
            )
            .await;
        let list = messages.body.as_array()?;
        list.iter()
            .any(|m| m["role"] == "user")
            .then(|| list.clone())
    })
    .await;
    let mine = messages.iter().filter(|m| m["role"] == "user").count();
    assert_eq!(mine, 1, "{messages:?}");
}

#[tokio::test]
async fn a_create_answers_201_with_the_agent_while_the_read_side_is_paused() {
    let platform = Platform::start(&[("WARREN_APPROVAL", "open")]).await;
    let me = platform.sign_in("patient@example.com").await;
    // The schema swap's lock, held: no projector batch can commit meanwhile.
    let mut pause = platform.db.pool().acquire().await.expect("connection");
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(warren_projections::runner::SWAP_LOCK)
        .execute(&mut *pause)
        .await
        .expect("pause the projector");
    let created = platform
        .post("/api/v1/agents", Some(&me.access), json!({"name": "Early"}))
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body["name"], "Early");
    let id = created.body["id"].as_str().expect("id").to_owned();
    assert!(
        !agent_ids(&platform, &platform.base, &me)
            .await
            .contains(&id),
        "the read model had not seen it yet"
    );
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(warren_projections::runner::SWAP_LOCK)
        .execute(&mut *pause)
        .await
        .expect("resume");
    wait_until(Duration::from_secs(10), || async {
        agent_ids(&platform, &platform.base, &me)
            .await
            .contains(&id)
    })
    .await;
}

#[tokio::test]
async fn a_body_field_the_api_does_not_know_or_of_the_wrong_type_is_a_422_naming_it() {
    let platform = Platform::start(&[("WARREN_APPROVAL", "open")]).await;
    let me = platform.sign_in("typed@example.com").await;
    for (body, field) in [
        (json!({"name": "x", "sandbox": "ssh"}), "sandbox"),
        (json!({"name": "x", "backend": "vm"}), "backend"),
        (json!({"name": 5}), "name"),
        (json!({"system_prompt": "no name"}), "name"),
    ] {
        let refused = platform
            .post("/api/v1/agents", Some(&me.access), body.clone())
            .await;
        assert_eq!(refused.status, 422, "{body}: {refused:?}");
        assert_eq!(
            refused.body["error"]["details"]["fields"][0]["field"], field,
            "{body}: {refused:?}"
        );
    }
    assert_eq!(
        platform.get("/api/v1/agents", Some(&me.access)).await.body,
        json!([]),
        "nothing was created"
    );
}
