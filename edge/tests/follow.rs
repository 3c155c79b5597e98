//! The conversation follower and its hub on a real nats-server: one shared read per
//! conversation, every client gets the log in order with cursors exactly once wherever it
//! joins, a live client that stops reading is dropped with a `slow_consumer` frame while the
//! others go on, and a long replay waits for its client.

use async_nats::jetstream;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use warren_commands::CommandService;
use warren_domain::conversation::LiveDelta;
use warren_domain::ids::{ConversationId, RunId};
use warren_edge::follow::hub::{Hub, RING};
use warren_edge::follow::{CLIENT_BUFFER, Follow, Follower, Item, follow};
use warren_testkit::{TestNats, wait_until};

const WAIT: Duration = Duration::from_secs(10);

async fn hub(nats: &TestNats) -> (jetstream::Context, Hub) {
    let js = nats.jetstream().await;
    CommandService::start(js.clone(), &Default::default())
        .await
        .expect("topology");
    let hub = Hub::new(js.clone(), CancellationToken::new());
    (js, hub)
}

/// Publishes `count` token deltas; returns their sequences.
async fn publish(js: &jetstream::Context, conversation: ConversationId, count: usize) -> Vec<u64> {
    let run_id = RunId::new();
    let subject = format!("conv.{conversation}.live");
    let mut seqs = Vec::with_capacity(count);
    for n in 0..count {
        let delta = LiveDelta::Token {
            run_id,
            text: format!("{n} "),
        };
        let ack = js
            .publish(
                subject.clone(),
                serde_json::to_vec(&delta).expect("json").into(),
            )
            .await
            .expect("publish")
            .await
            .expect("ack");
        seqs.push(ack.sequence);
    }
    seqs
}

async fn join(hub: &Hub, conversation: ConversationId, from_seq: u64) -> Follower {
    follow(
        hub,
        Follow {
            conversation_id: conversation,
            from_seq,
            run: None,
            opening: vec![],
            keepalive: None,
        },
    )
    .await
    .expect("follow")
}

async fn next(follower: &mut Follower) -> Item {
    tokio::time::timeout(WAIT, follower.next())
        .await
        .expect("a frame in time")
        .expect("not ended")
}

/// Reads `count` frames, asserting none is an error; returns their cursors.
async fn read(follower: &mut Follower, count: usize) -> Vec<u64> {
    let mut seqs = Vec::with_capacity(count);
    while seqs.len() < count {
        let item = next(follower).await;
        assert!(!item.frame().ends_stream(), "{}", item.json());
        seqs.push(item.seq().expect("cursor"));
    }
    seqs
}

#[tokio::test]
async fn clients_of_one_conversation_share_one_read_and_join_anywhere_without_gap_or_repeat() {
    let nats = TestNats::start().await;
    let (js, hub) = hub(&nats).await;
    let conversation = ConversationId::new();
    let history = publish(&js, conversation, 5).await;
    // From the start (reads the history itself, then joins the room).
    let mut first = join(&hub, conversation, 1).await;
    assert_eq!(read(&mut first, 5).await, history);
    let live = publish(&js, conversation, RING / 2).await;
    assert_eq!(read(&mut first, live.len()).await, live);
    // Others join at points the room's recent frames still hold, and at one they do not.
    let mut mid = join(&hub, conversation, live[10]).await;
    let mut old = join(&hub, conversation, history[2]).await;
    let mut now = join(&hub, conversation, live[live.len() - 1] + 1).await;
    assert_eq!(hub.rooms(), 1, "one shared read per conversation");
    let more = publish(&js, conversation, 3).await;
    assert_eq!(read(&mut first, 3).await, more);
    let after_mid: Vec<u64> = live[10..].iter().chain(&more).copied().collect();
    assert_eq!(read(&mut mid, after_mid.len()).await, after_mid);
    let after_old: Vec<u64> = history[2..]
        .iter()
        .chain(&live)
        .chain(&more)
        .copied()
        .collect();
    assert_eq!(read(&mut old, after_old.len()).await, after_old);
    assert_eq!(read(&mut now, 3).await, more);
    // The room closes when its last client goes.
    drop((first, mid, old, now));
    wait_until(WAIT, || async { hub.rooms() == 0 }).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_with_a_reason_while_the_others_go_on() {
    let nats = TestNats::start().await;
    let (js, hub) = hub(&nats).await;
    let conversation = ConversationId::new();
    let mut slow = join(&hub, conversation, 1).await;
    let mut fast = join(&hub, conversation, 1).await;
    // A run streams live while the slow client reads nothing; the fast one keeps up.
    let count = CLIENT_BUFFER * 2;
    let reader = tokio::spawn(async move {
        let seqs = read(&mut fast, count).await;
        (fast, seqs)
    });
    let seqs = publish(&js, conversation, count).await;
    let (mut fast, fast_seqs) = reader.await.expect("fast reader");
    assert_eq!(fast_seqs, seqs);
    // The slow one gets a prefix of the log, in order, then the reason it was dropped.
    let mut got = Vec::new();
    let reason = loop {
        let item = next(&mut slow).await;
        match item.seq() {
            Some(seq) => got.push(seq),
            None => break serde_json::from_str::<serde_json::Value>(item.json()).expect("json"),
        }
    };
    assert_eq!(got, seqs[..got.len()]);
    assert!(got.len() < seqs.len());
    assert_eq!(reason["code"], "slow_consumer");
    assert_eq!(reason["retryable"], true);
    assert!(slow.next().await.is_none(), "dropped after the reason");
    // It resumes after its last cursor and misses nothing.
    let resume = got.last().map_or(1, |seq| seq + 1);
    let mut again = join(&hub, conversation, resume).await;
    let rest = &seqs[got.len()..];
    assert_eq!(read(&mut again, rest.len()).await, rest);
    // The fast client was never held up.
    let more = publish(&js, conversation, 2).await;
    assert_eq!(read(&mut fast, 2).await, more);
}

#[tokio::test]
async fn replaying_a_long_history_waits_for_the_client_instead_of_dropping_it() {
    let nats = TestNats::start().await;
    let (js, hub) = hub(&nats).await;
    let conversation = ConversationId::new();
    let history = publish(&js, conversation, CLIENT_BUFFER * 3).await;
    let mut client = join(&hub, conversation, 1).await;
    let mut seqs = read(&mut client, 10).await;
    // Much more arrives live while the client is still replaying, more than any buffer holds.
    let live = publish(&js, conversation, CLIENT_BUFFER * 2).await;
    seqs.extend(read(&mut client, history.len() + live.len() - 10).await);
    let all: Vec<u64> = history.iter().chain(&live).copied().collect();
    assert_eq!(seqs, all);
}
