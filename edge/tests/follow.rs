//! The conversation follower on a real nats-server: it delivers the log in order with cursors,
//! and a live client that stops reading is dropped with a `slow_consumer` frame instead of being
//! buffered without bound.

use std::time::Duration;
use tokio_util::sync::CancellationToken;
use warren_commands::CommandService;
use warren_domain::conversation::LiveDelta;
use warren_domain::ids::{ConversationId, RunId};
use warren_edge::follow::{CLIENT_BUFFER, Follow, follow};
use warren_testkit::{TestNats, wait_until};

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_with_a_reason_after_a_bounded_buffer() {
    let nats = TestNats::start().await;
    let js = nats.jetstream().await;
    CommandService::start(js.clone(), &Default::default())
        .await
        .expect("topology");
    let conversation = ConversationId::new();
    let run_id = RunId::new();
    let subject = format!("conv.{conversation}.live");
    let mut frames = follow(
        &js,
        CancellationToken::new(),
        Follow {
            conversation_id: conversation,
            from_seq: 1,
            run: None,
            opening: vec![],
            keepalive: None,
        },
    )
    .await
    .expect("follow");
    // A run streams live while the client reads nothing.
    for n in 0..CLIENT_BUFFER * 2 {
        let delta = LiveDelta::Token {
            run_id,
            text: format!("{n} "),
        };
        js.publish(
            subject.clone(),
            serde_json::to_vec(&delta).expect("json").into(),
        )
        .await
        .expect("publish")
        .await
        .expect("ack");
    }
    // The client reads nothing until its buffer is full…
    wait_until(Duration::from_secs(10), || async {
        frames.len() == CLIENT_BUFFER
    })
    .await;
    // … then finds everything up to where it fell behind, in order, and the reason it was dropped.
    let mut seqs = Vec::new();
    let mut last = None;
    while let Some(item) = frames.recv().await {
        match item.seq {
            Some(seq) => seqs.push(seq),
            None => last = Some(item.data),
        }
    }
    assert_eq!(seqs, (1..CLIENT_BUFFER as u64).collect::<Vec<_>>());
    let reason = last.expect("a closing frame");
    assert_eq!(reason["code"], "slow_consumer");
    assert_eq!(reason["retryable"], true);
}

#[tokio::test]
async fn replaying_a_long_history_waits_for_the_client_instead_of_dropping_it() {
    let nats = TestNats::start().await;
    let js = nats.jetstream().await;
    CommandService::start(js.clone(), &Default::default())
        .await
        .expect("topology");
    let conversation = ConversationId::new();
    let run_id = RunId::new();
    let subject = format!("conv.{conversation}.live");
    let total = CLIENT_BUFFER * 3;
    for n in 0..total {
        let delta = LiveDelta::Token {
            run_id,
            text: format!("{n} "),
        };
        js.publish(
            subject.clone(),
            serde_json::to_vec(&delta).expect("json").into(),
        )
        .await
        .expect("publish")
        .await
        .expect("ack");
    }
    let mut frames = follow(
        &js,
        CancellationToken::new(),
        Follow {
            conversation_id: conversation,
            from_seq: 1,
            run: None,
            opening: vec![],
            keepalive: None,
        },
    )
    .await
    .expect("follow");
    wait_until(Duration::from_secs(10), || async {
        frames.len() == CLIENT_BUFFER
    })
    .await;
    let mut seqs = Vec::new();
    while seqs.len() < total {
        let item = tokio::time::timeout(Duration::from_secs(10), frames.recv())
            .await
            .expect("history keeps coming")
            .expect("not dropped");
        assert_ne!(item.data["code"], "slow_consumer", "dropped during replay");
        seqs.push(item.seq.expect("cursor"));
    }
    assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>());
}
