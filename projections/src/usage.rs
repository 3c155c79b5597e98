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
use crate::schema::quote_ident;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
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
        keep(tx, &events, Self::ledger, Write::Insert).await
    }

    async fn apply_many(
        tx: &mut PgConnection,
        events: &[(u64, Envelope<AgentEvent>)],
    ) -> Result<(), sqlx::Error> {
        keep(tx, events, Self::ledger, Write::Copy).await
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
        keep(tx, &events, Self::ledger, Write::Insert).await
    }

    async fn apply_many(
        tx: &mut PgConnection,
        events: &[(u64, Envelope<ConversationEvent>)],
    ) -> Result<(), sqlx::Error> {
        keep(tx, events, Self::ledger, Write::Copy).await
    }
}

/// A usage projection's reading of one event: the owner it teaches and the fact it records.
pub trait Usage: Projection<Event: Clone> {
    /// [`usage::of_agent_event`] or [`usage::of_conversation_event`].
    fn ledger(envelope: &Envelope<Self::Event>, owner: Option<&Owner>) -> Ledger;
}

impl Usage for UsageAgents {
    fn ledger(envelope: &Envelope<AgentEvent>, owner: Option<&Owner>) -> Ledger {
        usage::of_agent_event(envelope, owner)
    }
}

impl Usage for UsageConversations {
    fn ledger(envelope: &Envelope<ConversationEvent>, owner: Option<&Owner>) -> Ledger {
        usage::of_conversation_event(envelope, owner)
    }
}

/// A usage projection as a rebuild runs it before the facts are keyed ([`crate::replay`]):
/// every batch, and every commit of a refused batch, is copied into a `usage_events` without its
/// primary key ([`unkey_facts`]). The key is then built in one pass ([`index_facts`],
/// [`key_facts`]), which costs the database far less than keeping it up to date row by row. A
/// fact the log holds twice is counted twice meanwhile: if the key finds one, the later copies
/// are dropped ([`drop_repeats`]) and the day counters summed again ([`sum_days`]).
pub struct Unkeyed<P>(PhantomData<P>);

impl<P: Usage> Projection for Unkeyed<P> {
    const NAME: &'static str = P::NAME;
    const STREAM: &'static str = P::STREAM;
    const FILTER: &'static str = P::FILTER;
    const BULK: bool = true;
    type Event = P::Event;

    fn authority(event: &P::Event) -> Authority {
        P::authority(event)
    }

    fn subject(
        tx: &mut PgConnection,
        envelope: &Envelope<P::Event>,
    ) -> impl Future<Output = Result<Option<Uuid>, sqlx::Error>> + Send {
        P::subject(tx, envelope)
    }

    async fn apply(
        tx: &mut PgConnection,
        seq: u64,
        envelope: &Envelope<P::Event>,
    ) -> Result<(), sqlx::Error> {
        let events = [(seq, envelope.clone())];
        keep(tx, &events, P::ledger, Write::Copy).await
    }

    async fn apply_many(
        tx: &mut PgConnection,
        events: &[(u64, Envelope<P::Event>)],
    ) -> Result<(), sqlx::Error> {
        keep(tx, events, P::ledger, Write::Copy).await
    }
}

/// Drops the primary key of `usage_events` for [`Unkeyed`] (on a pool bound to a rebuild
/// schema, whose table is empty). Returns its name, for [`index_facts`] and [`key_facts`].
pub async fn unkey_facts(pool: &PgPool) -> Result<String, sqlx::Error> {
    let name: String = sqlx::query_scalar(
        "SELECT conname::text FROM pg_constraint \
         WHERE conrelid = 'usage_events'::regclass AND contype = 'p'",
    )
    .fetch_one(pool)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE usage_events DROP CONSTRAINT {}",
        quote_ident(&name)
    )))
    .execute(pool)
    .await
    .map(|_| name)
}

/// Builds, in one pass, the unique index on the facts' event ids that [`key_facts`] turns into
/// their primary key again. The database refuses it (a unique violation) if the log recorded a
/// fact twice: [`drop_repeats`] first, then.
pub async fn index_facts(pool: &PgPool, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE UNIQUE INDEX {} ON usage_events (event_id)",
        quote_ident(key)
    )))
    .execute(pool)
    .await
    .map(drop)
}

/// Whether `err` is the database's unique violation.
pub fn is_repeat(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|db| db.is_unique_violation())
}

/// Drops every copy of a fact but the one of the earliest commit, as `INSERT … ON CONFLICT DO
/// NOTHING` would have kept it.
pub async fn drop_repeats(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM usage_events later USING usage_events earlier \
         WHERE later.event_id = earlier.event_id \
           AND (later.seq, later.ctid) > (earlier.seq, earlier.ctid)",
    )
    .execute(pool)
    .await
    .map(drop)
}

/// Makes the unique index [`index_facts`] built the facts' primary key again, as it was before
/// [`unkey_facts`].
pub async fn key_facts(pool: &PgPool, key: &str) -> Result<(), sqlx::Error> {
    let key = quote_ident(key);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE usage_events ADD CONSTRAINT {key} PRIMARY KEY USING INDEX {key}"
    )))
    .execute(pool)
    .await
    .map(drop)
}

/// Sets the day counters to those of the facts, as [`bump_days`] would have added them fact by
/// fact (after [`drop_repeats`]).
pub async fn sum_days(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM daily_usage")
        .execute(&mut *tx)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO daily_usage (user_id, day, messages, input_tokens, output_tokens, \
           deployments, metered_input_tokens, metered_output_tokens) \
         SELECT user_id, (created_at AT TIME ZONE 'UTC')::date, \
           count(*) FILTER (WHERE kind = 'message'), \
           coalesce(sum(input_tokens) FILTER (WHERE kind NOT IN ({OWN_COUNTERS})), 0), \
           coalesce(sum(output_tokens) FILTER (WHERE kind NOT IN ({OWN_COUNTERS})), 0), \
           count(*) FILTER (WHERE kind = 'deployment'), \
           coalesce(sum(input_tokens) FILTER (WHERE kind = 'model_call'), 0), \
           coalesce(sum(output_tokens) FILTER (WHERE kind = 'model_call'), 0) \
         FROM usage_events GROUP BY 1, 2"
    )))
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// The kinds of fact counted in a day counter of their own rather than in its tokens
/// ([`bump_days`]).
const OWN_COUNTERS: &str = "'message', 'deployment', 'model_call'";

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
    /// then applies again commit by commit, each with [`Write::Insert`]. (For [`Unkeyed`], also
    /// each commit: there is no key to break.)
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
    // Each event's fact, remembering the owner its creation teaches.
    let mut fact_of = |envelope: &Envelope<E>| {
        let id = envelope.aggregate_id.parse::<Uuid>().ok();
        let ledger = ledger_of(envelope, id.and_then(|id| owners.get(&id)));
        if let (Some(owner), Some(id)) = (ledger.learned, id)
            && let std::collections::hash_map::Entry::Vacant(entry) = owners.entry(id)
        {
            learned.push((id, owner.clone()));
            entry.insert(owner);
        }
        ledger.fact
    };
    let new = match write {
        Write::Copy => copy_facts(tx, events, &mut fact_of).await?,
        Write::Insert => {
            let facts: Vec<(u64, UsageFact)> = events
                .iter()
                .filter_map(|(seq, envelope)| fact_of(envelope).map(|fact| (*seq, fact)))
                .collect();
            insert_facts(tx, &facts).await?
        }
    };
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
    bump_days(tx, &new).await
}

/// A new fact as the day counters see it: user, time, kind, input and output tokens.
type DayFact = (Uuid, DateTime<Utc>, &'static str, i64, i64);

/// The columns of `usage_events` a fact fills, in [`copy_facts`]' order.
const COLUMNS: &str = "event_id, user_id, agent_id, kind, input_tokens, output_tokens, created_at, \
     provider, model, cached_tokens, tools, duration_ms, outcome, bytes, sandbox, seq";

/// Facts encoded per `COPY` message: the database takes one in while the next is read and
/// encoded.
const COPY_CHUNK: usize = 1_024;

/// Reads the events' facts (`fact_of`) and copies them in with one `COPY`, begun at the first
/// fact, in messages sent as they are encoded. Returns the facts for the day counters.
async fn copy_facts<E>(
    tx: &mut PgConnection,
    events: &[(u64, Envelope<E>)],
    fact_of: &mut impl FnMut(&Envelope<E>) -> Option<UsageFact>,
) -> Result<Vec<DayFact>, sqlx::Error> {
    let mut new = Vec::new();
    let mut rows = CopyRows::new(16);
    let mut chunks = events.chunks(COPY_CHUNK);
    // Up to the first fact, there is nothing to copy.
    while rows.is_empty() {
        let Some(chunk) = chunks.next() else {
            return Ok(new);
        };
        encode(&mut rows, &mut new, chunk, fact_of);
    }
    let statement = format!("COPY usage_events ({COLUMNS}) FROM STDIN (FORMAT binary)");
    let mut copy = tx.copy_in_raw(&statement).await?;
    let sent = async {
        copy.send(rows.take()).await?;
        for chunk in chunks {
            encode(&mut rows, &mut new, chunk, fact_of);
            if !rows.is_empty() {
                copy.send(rows.take()).await?;
            }
        }
        copy.send(rows.finish()).await.map(drop)
    };
    if let Err(err) = sent.await {
        copy.abort("sending the rows failed").await.ok();
        return Err(err);
    }
    copy.finish().await?;
    Ok(new)
}

/// Appends the facts of `events` to `rows` (in [`COLUMNS`]' order) and to `new`.
fn encode<E>(
    rows: &mut CopyRows,
    new: &mut Vec<DayFact>,
    events: &[(u64, Envelope<E>)],
    fact_of: &mut impl FnMut(&Envelope<E>) -> Option<UsageFact>,
) {
    for (seq, envelope) in events {
        let Some(f) = fact_of(envelope) else { continue };
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
        new.push(day_fact(&f));
    }
}

/// Inserts the facts not recorded yet; returns those, for the day counters.
async fn insert_facts(
    tx: &mut PgConnection,
    facts: &[(u64, UsageFact)],
) -> Result<Vec<DayFact>, sqlx::Error> {
    if facts.is_empty() {
        return Ok(Vec::new());
    }
    let column = |get: fn(&UsageFact) -> i64| facts.iter().map(|(_, f)| get(f)).collect::<Vec<_>>();
    // Tools travel as one text per fact, names joined by U+001F (a control character the text
    // rules keep out of tool names), since PostgreSQL arrays of arrays must be rectangular.
    let tools: Vec<String> = facts.iter().map(|(_, f)| f.tools.join("\u{1f}")).collect();
    let inserted: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
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
         RETURNING event_id"
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
    .await?;
    let inserted: std::collections::HashSet<Uuid> = inserted.into_iter().collect();
    Ok(facts
        .iter()
        .filter(|(_, f)| inserted.contains(&f.event_id))
        .map(|(_, f)| day_fact(f))
        .collect())
}

fn day_fact(f: &UsageFact) -> DayFact {
    (
        f.user_id,
        f.at,
        f.kind.as_str(),
        clamp(f.input_tokens),
        clamp(f.output_tokens),
    )
}

/// Adds new facts to their days' counters: one statement, each (user, day) summed here first so
/// it is one row.
async fn bump_days(tx: &mut PgConnection, new: &[DayFact]) -> Result<(), sqlx::Error> {
    let mut days: BTreeMap<(Uuid, NaiveDate), [i64; 6]> = BTreeMap::new();
    for &(user_id, at, kind, input, output) in new {
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
