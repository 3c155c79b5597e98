//! The usage read model (docs/adr/0042-usage-analytics.md): two projections, one per stream,
//! that write each usage fact of the log ([`warren_domain::usage`]) as one `usage_events` row
//! (keyed by the event, so a fact is never counted twice) and bump that day's `daily_usage`
//! counters, which the tiers' quotas read.
//!
//! They keep their own memory of whose each agent and conversation is (`usage_owners`), so the
//! usage read model can be rebuilt on its own ([`crate::replay::replay_usage`]).
//!
//! A run's tokens (what its runtime reported) and metered tokens (what the provider said through
//! the model proxy, which the token quota counts: ADR 23) are kept in columns of their own.

use crate::Projection;
use crate::copy::CopyRows;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgConnection;
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;
use warren_commands::topology;
use warren_domain::agent::AgentEvent;
use warren_domain::conversation::ConversationEvent;
use warren_domain::ids::UserId;
use warren_domain::usage::{self, Ledger, Owner, UsageFact};
use warren_domain::{Authority, Envelope};

/// Usage facts of the agents stream: deployments, sandboxes up and down, file bytes, metered
/// model calls.
pub struct UsageAgents;

/// Usage facts of the conversations stream: messages and runs.
pub struct UsageConversations;

/// The names of the usage projections (their checkpoints).
pub const NAMES: [&str; 2] = [UsageAgents::NAME, UsageConversations::NAME];

/// The tables the usage projections own.
pub const TABLES: [&str; 3] = ["usage_events", "daily_usage", "usage_owners"];

impl Projection for UsageAgents {
    const NAME: &'static str = "usage_agents";
    const STREAM: &'static str = topology::AGENTS;
    const FILTER: &'static str = "agent.*";
    const BULK: bool = true;
    type Event = AgentEvent;

    fn authority(event: &AgentEvent) -> Authority {
        event.authority()
    }

    async fn subject(
        tx: &mut PgConnection,
        envelope: &Envelope<AgentEvent>,
    ) -> Result<Option<Uuid>, sqlx::Error> {
        subject_of(tx, &envelope.aggregate_id, envelope.event.owner()).await
    }

    async fn apply(
        tx: &mut PgConnection,
        seq: u64,
        envelope: &Envelope<AgentEvent>,
    ) -> Result<(), sqlx::Error> {
        let events = [(seq, envelope.clone())];
        keep(tx, &events, usage::of_agent_event, Write::Insert).await
    }

    async fn apply_many(
        tx: &mut PgConnection,
        events: &[(u64, Envelope<AgentEvent>)],
    ) -> Result<(), sqlx::Error> {
        keep(tx, events, usage::of_agent_event, Write::Copy).await
    }
}

impl Projection for UsageConversations {
    const NAME: &'static str = "usage_conversations";
    const STREAM: &'static str = topology::CONVERSATIONS;
    const FILTER: &'static str = "conv.*.ev";
    const BULK: bool = true;
    type Event = ConversationEvent;

    fn authority(event: &ConversationEvent) -> Authority {
        event.authority()
    }

    async fn subject(
        tx: &mut PgConnection,
        envelope: &Envelope<ConversationEvent>,
    ) -> Result<Option<Uuid>, sqlx::Error> {
        subject_of(tx, &envelope.aggregate_id, envelope.event.owner()).await
    }

    async fn apply(
        tx: &mut PgConnection,
        seq: u64,
        envelope: &Envelope<ConversationEvent>,
    ) -> Result<(), sqlx::Error> {
        let events = [(seq, envelope.clone())];
        keep(tx, &events, usage::of_conversation_event, Write::Insert).await
    }

    async fn apply_many(
        tx: &mut PgConnection,
        events: &[(u64, Envelope<ConversationEvent>)],
    ) -> Result<(), sqlx::Error> {
        keep(tx, events, usage::of_conversation_event, Write::Copy).await
    }
}

/// The owner this read model remembers for the aggregate, else the one the event names.
async fn subject_of(
    tx: &mut PgConnection,
    aggregate_id: &str,
    named: Option<UserId>,
) -> Result<Option<Uuid>, sqlx::Error> {
    let Ok(aggregate_id) = aggregate_id.parse::<Uuid>() else {
        return Ok(named.map(|owner| owner.0));
    };
    let stored: Option<Uuid> =
        sqlx::query_scalar("SELECT user_id FROM usage_owners WHERE aggregate_id = $1")
            .bind(aggregate_id)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(stored.or(named.map(|owner| owner.0)))
}

/// How facts are written.
#[derive(Clone, Copy)]
enum Write {
    /// A batch: one binary `COPY` (the fastest way in). A fact recorded already (the same event
    /// in the log twice) breaks the key and the database refuses the batch, which the runner
    /// then applies again commit by commit, each with [`Write::Insert`].
    Copy,
    /// One commit: `INSERT … ON CONFLICT DO NOTHING`, so a fact recorded already is skipped.
    Insert,
}

/// Reads the facts of `events` (in order, remembering what creations teach) and writes them, and
/// the owners learned, in a few statements whatever their number.
async fn keep<E>(
    tx: &mut PgConnection,
    events: &[(u64, Envelope<E>)],
    ledger_of: fn(&Envelope<E>, Option<&Owner>) -> Ledger,
    write: Write,
) -> Result<(), sqlx::Error> {
    // The owners the events' aggregates already have, in one query.
    let mut ids: Vec<Uuid> = events
        .iter()
        .filter_map(|(_, envelope)| envelope.aggregate_id.parse().ok())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let rows: Vec<(Uuid, Uuid, Option<Uuid>, Option<String>)> = sqlx::query_as(
        "SELECT aggregate_id, user_id, agent_id, sandbox FROM usage_owners \
         WHERE aggregate_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut owners: HashMap<Uuid, Owner> = rows
        .into_iter()
        .map(|(id, user_id, agent_id, sandbox)| {
            (
                id,
                Owner {
                    user_id,
                    agent_id,
                    sandbox,
                },
            )
        })
        .collect();
    let mut learned = Vec::new();
    let mut facts = Vec::new();
    for (seq, envelope) in events {
        let id = envelope.aggregate_id.parse::<Uuid>().ok();
        let ledger = ledger_of(envelope, id.and_then(|id| owners.get(&id)));
        if let (Some(owner), Some(id)) = (ledger.learned, id)
            && let std::collections::hash_map::Entry::Vacant(entry) = owners.entry(id)
        {
            learned.push((id, owner.clone()));
            entry.insert(owner);
        }
        if let Some(fact) = ledger.fact {
            facts.push((*seq, fact));
        }
    }
    if !learned.is_empty() {
        sqlx::query(
            "INSERT INTO usage_owners (aggregate_id, user_id, agent_id, sandbox) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[]) \
             ON CONFLICT (aggregate_id) DO NOTHING",
        )
        .bind(learned.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(learned.iter().map(|(_, o)| o.user_id).collect::<Vec<_>>())
        .bind(learned.iter().map(|(_, o)| o.agent_id).collect::<Vec<_>>())
        .bind(
            learned
                .iter()
                .map(|(_, o)| o.sandbox.clone())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
    }
    record(tx, &facts, write).await
}

/// Records facts (each with its commit's sequence) and bumps, for those that are new, their days'
/// counters, in a few statements whatever their number.
async fn record(
    tx: &mut PgConnection,
    facts: &[(u64, UsageFact)],
    write: Write,
) -> Result<(), sqlx::Error> {
    if facts.is_empty() {
        return Ok(());
    }
    match write {
        Write::Copy => {
            copy_facts(tx, facts).await?;
            let new = facts.iter().map(|(_, f)| {
                let (input, output) = (clamp(f.input_tokens), clamp(f.output_tokens));
                (f.user_id, f.at, f.kind.as_str(), input, output)
            });
            bump_days(tx, new).await
        }
        Write::Insert => {
            let new = insert_facts(tx, facts).await?;
            let new = new.iter().map(|(user, at, kind, input, output)| {
                (*user, *at, kind.as_str(), *input, *output)
            });
            bump_days(tx, new).await
        }
    }
}

/// The columns of `usage_events` a fact fills, in [`copy_facts`]' order.
const COLUMNS: &str = "event_id, user_id, agent_id, kind, input_tokens, output_tokens, created_at, \
     provider, model, cached_tokens, tools, duration_ms, outcome, bytes, sandbox, seq";

async fn copy_facts(tx: &mut PgConnection, facts: &[(u64, UsageFact)]) -> Result<(), sqlx::Error> {
    let mut rows = CopyRows::new(16);
    for (seq, f) in facts {
        rows.row()
            .uuid(f.event_id)
            .uuid(f.user_id)
            .opt_uuid(f.agent_id)
            .text(f.kind.as_str())
            .int8(clamp(f.input_tokens))
            .int8(clamp(f.output_tokens))
            .timestamptz(f.at)
            .opt_text(f.provider.as_deref())
            .opt_text(f.model.as_deref())
            .int8(clamp(f.cached_tokens))
            .text_array(&f.tools)
            .int8(clamp(f.duration_ms))
            .opt_text(f.outcome.as_deref())
            .int8(clamp(f.bytes))
            .opt_text(f.sandbox.as_deref())
            .int8(clamp(*seq));
    }
    let statement = format!("COPY usage_events ({COLUMNS}) FROM STDIN (FORMAT binary)");
    let mut copy = tx.copy_in_raw(&statement).await?;
    if let Err(err) = copy.send(rows.finish()).await {
        copy.abort("sending the rows failed").await.ok();
        return Err(err);
    }
    copy.finish().await.map(drop)
}

/// Inserts the facts not recorded yet; returns those (user, time, kind, input, output).
async fn insert_facts(
    tx: &mut PgConnection,
    facts: &[(u64, UsageFact)],
) -> Result<Vec<(Uuid, DateTime<Utc>, String, i64, i64)>, sqlx::Error> {
    let column = |get: fn(&UsageFact) -> i64| facts.iter().map(|(_, f)| get(f)).collect::<Vec<_>>();
    // Tools travel as one text per fact, names joined by U+001F (a control character the text
    // rules keep out of tool names), since PostgreSQL arrays of arrays must be rectangular.
    let tools: Vec<String> = facts.iter().map(|(_, f)| f.tools.join("\u{1f}")).collect();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO usage_events ({COLUMNS}) \
         SELECT event_id, user_id, agent_id, kind, input_tokens, output_tokens, created_at, provider, \
           model, cached_tokens, CASE WHEN tools = '' THEN '{{}}'::text[] \
             ELSE string_to_array(tools, chr(31)) END, duration_ms, outcome, bytes, sandbox, seq \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::int8[], $6::int8[], \
           $7::timestamptz[], $8::text[], $9::text[], $10::int8[], $11::text[], $12::int8[], \
           $13::text[], $14::int8[], $15::text[], $16::int8[]) \
           AS f(event_id, user_id, agent_id, kind, input_tokens, output_tokens, created_at, provider, \
             model, cached_tokens, tools, duration_ms, outcome, bytes, sandbox, seq) \
         ON CONFLICT (event_id) DO NOTHING \
         RETURNING user_id, created_at, kind, input_tokens, output_tokens"
    )))
    .bind(facts.iter().map(|(_, f)| f.event_id).collect::<Vec<_>>())
    .bind(facts.iter().map(|(_, f)| f.user_id).collect::<Vec<_>>())
    .bind(facts.iter().map(|(_, f)| f.agent_id).collect::<Vec<_>>())
    .bind(facts.iter().map(|(_, f)| f.kind.as_str()).collect::<Vec<_>>())
    .bind(column(|f| clamp(f.input_tokens)))
    .bind(column(|f| clamp(f.output_tokens)))
    .bind(facts.iter().map(|(_, f)| f.at).collect::<Vec<_>>())
    .bind(facts.iter().map(|(_, f)| f.provider.clone()).collect::<Vec<_>>())
    .bind(facts.iter().map(|(_, f)| f.model.clone()).collect::<Vec<_>>())
    .bind(column(|f| clamp(f.cached_tokens)))
    .bind(tools)
    .bind(column(|f| clamp(f.duration_ms)))
    .bind(facts.iter().map(|(_, f)| f.outcome.clone()).collect::<Vec<_>>())
    .bind(column(|f| clamp(f.bytes)))
    .bind(facts.iter().map(|(_, f)| f.sandbox.clone()).collect::<Vec<_>>())
    .bind(facts.iter().map(|(seq, _)| clamp(*seq)).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await
}

/// Adds new facts (user, time, kind, input, output) to their days' counters: one statement, each
/// (user, day) summed here first so it is one row.
async fn bump_days<'a>(
    tx: &mut PgConnection,
    new: impl Iterator<Item = (Uuid, DateTime<Utc>, &'a str, i64, i64)>,
) -> Result<(), sqlx::Error> {
    let mut days: BTreeMap<(Uuid, NaiveDate), [i64; 6]> = BTreeMap::new();
    for (user_id, at, kind, input, output) in new {
        let day = days.entry((user_id, at.date_naive())).or_default();
        match kind {
            "message" => day[0] += 1,
            "deployment" => day[3] += 1,
            "model_call" => {
                day[4] += input;
                day[5] += output;
            }
            _ => {
                day[1] += input;
                day[2] += output;
            }
        }
    }
    if days.is_empty() {
        return Ok(());
    }
    let counter = |i: usize| days.values().map(|day| day[i]).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO daily_usage (user_id, day, messages, input_tokens, output_tokens, deployments, \
           metered_input_tokens, metered_output_tokens) \
         SELECT * FROM UNNEST($1::uuid[], $2::date[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], \
           $7::int8[], $8::int8[]) \
         ON CONFLICT (user_id, day) DO UPDATE SET messages = daily_usage.messages + EXCLUDED.messages, \
           input_tokens = daily_usage.input_tokens + EXCLUDED.input_tokens, \
           output_tokens = daily_usage.output_tokens + EXCLUDED.output_tokens, \
           deployments = daily_usage.deployments + EXCLUDED.deployments, \
           metered_input_tokens = daily_usage.metered_input_tokens + EXCLUDED.metered_input_tokens, \
           metered_output_tokens = daily_usage.metered_output_tokens + EXCLUDED.metered_output_tokens",
    )
    .bind(days.keys().map(|(user, _)| *user).collect::<Vec<_>>())
    .bind(days.keys().map(|(_, day)| *day).collect::<Vec<_>>())
    .bind(counter(0))
    .bind(counter(1))
    .bind(counter(2))
    .bind(counter(3))
    .bind(counter(4))
    .bind(counter(5))
    .execute(&mut *tx)
    .await
    .map(drop)
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
