//! Replay throughput: how fast `warren replay --projection usage` rebuilds the usage read model
//! from the log, next to a raw ordered-consumer read of the same stream in the same run (the
//! ceiling: what the log hands out with nothing done to it).
//!
//! The log: 1,000 agents, each created and then metered for 199 model calls (200,000 events, one
//! commit each, on the `AGENTS` stream of a real nats-server), every one a usage fact. The
//! rebuild is the real one: a fresh schema, the projection's checkpoint transactions, the swap.
//!
//! `cargo bench -p warren-projections --bench replay` (target: at least 100k events/s and at
//! least 50% of the raw read).

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use std::time::Instant;
use warren_commands::codec;
use warren_commands::topology::{self, LogSettings};
use warren_domain::agent::{AgentEvent, Backend, RuntimeKind};
use warren_domain::ids::{AgentId, CommandId, EventId, UserId};
use warren_domain::user::Provider;
use warren_domain::{Actor, Envelope};
use warren_projections::Projection;
use warren_projections::usage::UsageAgents;
use warren_testkit::{TestDb, TestNats};

const AGENTS: usize = 1_000;
const CALLS_PER_AGENT: usize = 199;
const EVENTS: u64 = (AGENTS * (CALLS_PER_AGENT + 1)) as u64;
/// Publishes awaited at once while seeding.
const IN_FLIGHT: usize = 4_096;

fn commit(agent: AgentId, event: AgentEvent, n: i64) -> Vec<u8> {
    let envelope = Envelope {
        id: EventId::new(),
        version: event.event_version().to_owned(),
        aggregate_id: agent.to_string(),
        command_id: CommandId::new(),
        actor: Actor::System("edge".into()),
        occurred_at: chrono::Utc::now() - chrono::Duration::seconds(n),
        event,
    };
    codec::encode(&[envelope]).expect("encodes")
}

async fn seed(js: &jetstream::Context) {
    let mut acks = Vec::with_capacity(IN_FLIGHT);
    for a in 0..AGENTS {
        let (agent, owner) = (AgentId::new(), UserId::new());
        let subject = topology::agent_subject(&agent.to_string());
        let mut events = vec![AgentEvent::AgentCreated {
            agent_id: agent,
            owner_id: owner,
            name: format!("agent {a}"),
            system_prompt: String::new(),
            model: "gpt-4o".into(),
            runtime: RuntimeKind::Warren,
            backend: Backend::Docker,
            host: None,
        }];
        events.extend((0..CALLS_PER_AGENT).map(|n| AgentEvent::ModelUsageMetered {
            agent_id: agent,
            user_id: owner,
            provider: Provider::Openai,
            model: "gpt-4o".into(),
            own_key: false,
            input_tokens: 1_000 + n as u64,
            output_tokens: 100,
            cached_input_tokens: 0,
        }));
        for (n, event) in events.into_iter().enumerate() {
            let body = commit(agent, event, (CALLS_PER_AGENT - n) as i64);
            acks.push(
                js.publish(subject.clone(), body.into())
                    .await
                    .expect("publish"),
            );
            if acks.len() == IN_FLIGHT {
                for ack in acks.drain(..) {
                    ack.await.expect("stored");
                }
            }
        }
    }
    for ack in acks {
        ack.await.expect("stored");
    }
}

/// Reads the whole stream with an ordered consumer, doing nothing with it: messages/s.
async fn raw_read(js: &jetstream::Context) -> f64 {
    let stream = js.get_stream(UsageAgents::STREAM).await.expect("stream");
    let started = Instant::now();
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: UsageAgents::FILTER.to_owned(),
            ..Default::default()
        })
        .await
        .expect("ordered consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut read = 0u64;
    let mut bytes = 0usize;
    while read < EVENTS {
        let message = messages
            .next()
            .await
            .expect("the stream has every event")
            .expect("a message");
        bytes += message.payload.len();
        read += 1;
    }
    let rate = read as f64 / started.elapsed().as_secs_f64();
    println!(
        "raw ordered read:            {read} messages ({bytes} bytes) at {rate:>9.0} messages/s"
    );
    rate
}

#[tokio::main]
async fn main() {
    let nats = TestNats::start().await;
    let db = TestDb::create().await;
    let js = nats.jetstream().await;
    topology::ensure(&js, &LogSettings::default())
        .await
        .expect("topology");
    let seeding = Instant::now();
    seed(&js).await;
    println!(
        "seeded {EVENTS} events ({AGENTS} agents x {} commits) in {:.1} s",
        CALLS_PER_AGENT + 1,
        seeding.elapsed().as_secs_f64()
    );

    let raw = raw_read(&js).await;
    let started = Instant::now();
    let report = warren_projections::replay::replay_usage(&js, db.url(), None, &|_| {})
        .await
        .expect("replay");
    let secs = started.elapsed().as_secs_f64();
    let applied: u64 = report
        .applied
        .iter()
        .filter(|(name, _)| *name == UsageAgents::NAME)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(applied, EVENTS, "every commit was applied");
    let facts: i64 = sqlx::query_scalar("SELECT count(*) FROM warren.usage_events")
        .fetch_one(db.pool())
        .await
        .expect("count");
    assert_eq!(
        facts as u64,
        EVENTS - AGENTS as u64,
        "one fact per model call"
    );
    let rate = applied as f64 / secs;
    println!(
        "replay --projection usage:   {applied} events in {secs:.2} s at {rate:>9.0} events/s \
         = {:.0}% of the raw read (target: >= 100000 events/s and >= 50%)",
        100.0 * rate / raw
    );
}
