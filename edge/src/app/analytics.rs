//! Usage over a time range, per bucket and group, with its cost (docs/adr/0042): the analyst API
//! (`GET /admin/usage`, every user) and a user's own report (`GET /usage/report`) are this one
//! query with a different scope.
//!
//! The usage read model holds facts, never money: metered model calls are priced here, per
//! provider, model and UTC day, with the price table in force ([`PriceTable`]), so a changed price
//! re-prices all of history. Sandbox running time is the time between an agent's `up` fact and
//! its next lifecycle fact (or the end of the range, or now), cut at bucket edges.

use crate::error::ApiError;
use crate::state::AppState;
use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, TimeZone, Timelike, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use utoipa::ToSchema;
use uuid::Uuid;
use warren_domain::ids::UserId;
use warren_domain::usage::{Picodollars, PriceTable, usd};

/// The most buckets one report spans.
pub const MAX_BUCKETS: i64 = 10_000;

/// How a report's time is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    /// UTC hours.
    Hour,
    /// UTC days.
    Day,
    /// UTC calendar months.
    Month,
}

impl Bucket {
    /// Parses `hour`, `day` or `month`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "hour" => Some(Bucket::Hour),
            "day" => Some(Bucket::Day),
            "month" => Some(Bucket::Month),
            _ => None,
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Hour => "hour",
            Bucket::Day => "day",
            Bucket::Month => "month",
        }
    }

    /// The start of the bucket holding `at`.
    pub fn start(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let day = at.date_naive();
        let naive = match self {
            Bucket::Hour => day.and_hms_opt(at.hour(), 0, 0),
            Bucket::Day => day.and_hms_opt(0, 0, 0),
            Bucket::Month => day.with_day(1).and_then(|first| first.and_hms_opt(0, 0, 0)),
        };
        naive.map_or(at, |naive| Utc.from_utc_datetime(&naive))
    }

    /// The start of the bucket after the one starting at `start`.
    pub fn next(self, start: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Bucket::Hour => start + Duration::hours(1),
            Bucket::Day => start + Duration::days(1),
            Bucket::Month => start
                .checked_add_months(Months::new(1))
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }

    /// About how many buckets `from..to` spans (months count as 28 days: an upper bound).
    pub fn count(self, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        let span = (to - from).num_seconds().max(0);
        let width = match self {
            Bucket::Hour => 3_600,
            Bucket::Day => 86_400,
            Bucket::Month => 28 * 86_400,
        };
        span / width + 1
    }
}

/// What a report's rows are grouped by, besides the bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    /// The user whose usage it is.
    User,
    /// The agent.
    Agent,
    /// The model (model calls and runs; other facts have none).
    Model,
    /// The user's tier as it is now.
    Tier,
}

impl GroupBy {
    /// Parses `user`, `agent`, `model` or `tier`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "user" => Some(GroupBy::User),
            "agent" => Some(GroupBy::Agent),
            "model" => Some(GroupBy::Model),
            "tier" => Some(GroupBy::Tier),
            _ => None,
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::User => "user",
            GroupBy::Agent => "agent",
            GroupBy::Model => "model",
            GroupBy::Tier => "tier",
        }
    }

    /// The SQL expression of the group, over `usage_events e LEFT JOIN users u`.
    fn column(self) -> &'static str {
        match self {
            GroupBy::User => "e.user_id::text",
            GroupBy::Agent => "e.agent_id::text",
            GroupBy::Model => "e.model",
            GroupBy::Tier => "u.tier",
        }
    }
}

/// What a report asks.
#[derive(Clone, Debug)]
pub struct Query {
    /// The first instant counted.
    pub from: DateTime<Utc>,
    /// The first instant not counted.
    pub to: DateTime<Utc>,
    /// How time is cut.
    pub bucket: Bucket,
    /// What rows are grouped by, if anything.
    pub group_by: Option<GroupBy>,
    /// Only this user's usage (a user's own report); `None`: everyone's.
    pub user: Option<UserId>,
}

/// The totals of one bucket and group (or of the whole report).
#[derive(Clone, Debug, Default, PartialEq, Serialize, ToSchema)]
pub struct UsageTotals {
    /// Messages users sent to agents.
    pub messages: u64,
    /// Runs that ended, whatever their outcome.
    pub runs: u64,
    /// Of those, runs that failed.
    pub failed_runs: u64,
    /// Of those, runs that were cancelled.
    pub cancelled_runs: u64,
    /// Tool calls the completed runs made.
    pub tool_calls: u64,
    /// The completed runs' wall time, in milliseconds.
    pub run_ms: u64,
    /// Tokens read, as the runs' runtimes reported them.
    pub reported_input_tokens: u64,
    /// Tokens written, as the runs' runtimes reported them.
    pub reported_output_tokens: u64,
    /// Model calls the platform's model proxy metered.
    pub model_calls: u64,
    /// Tokens those calls read (the providers' numbers; cached ones included).
    pub input_tokens: u64,
    /// Of those, tokens read from the providers' prompt caches.
    pub cached_tokens: u64,
    /// Tokens those calls wrote.
    pub output_tokens: u64,
    /// Deployments requested (first deploys, repairs, redeploys).
    pub deployments: u64,
    /// Seconds agents' sandboxes ran.
    pub running_seconds: f64,
    /// Bytes uploaded into workspaces.
    pub file_bytes_in: u64,
    /// Bytes downloaded out of workspaces.
    pub file_bytes_out: u64,
    /// What the metered calls cost at the prices in force on their days, in USD (rounded to
    /// the micro-dollar).
    pub cost_usd: f64,
    /// Metered calls no price covers (not in `cost_usd`).
    pub unpriced_model_calls: u64,
    /// The exact cost, in picodollars (kept for summing; not shown).
    #[serde(skip)]
    #[schema(ignore)]
    pub cost: Picodollars,
    /// The running time, in milliseconds (kept for summing; not shown).
    #[serde(skip)]
    #[schema(ignore)]
    pub running_ms: i64,
}

impl UsageTotals {
    fn add(&mut self, other: &UsageTotals) {
        self.messages += other.messages;
        self.runs += other.runs;
        self.failed_runs += other.failed_runs;
        self.cancelled_runs += other.cancelled_runs;
        self.tool_calls += other.tool_calls;
        self.run_ms += other.run_ms;
        self.reported_input_tokens += other.reported_input_tokens;
        self.reported_output_tokens += other.reported_output_tokens;
        self.model_calls += other.model_calls;
        self.input_tokens += other.input_tokens;
        self.cached_tokens += other.cached_tokens;
        self.output_tokens += other.output_tokens;
        self.deployments += other.deployments;
        self.file_bytes_in += other.file_bytes_in;
        self.file_bytes_out += other.file_bytes_out;
        self.unpriced_model_calls += other.unpriced_model_calls;
        self.cost += other.cost;
        self.running_ms += other.running_ms;
        self.seal();
    }

    /// Derives the shown figures from the exact ones.
    fn seal(&mut self) {
        self.cost_usd = usd(self.cost);
        self.running_seconds = self.running_ms as f64 / 1000.0;
    }
}

/// One bucket and group.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct UsageRow {
    /// The bucket's first instant (UTC).
    pub bucket: DateTime<Utc>,
    /// The group: a user or agent id, a model, a tier; `null` for facts without one (or when
    /// the report is not grouped).
    pub group: Option<String>,
    /// Its totals.
    #[serde(flatten)]
    pub totals: UsageTotals,
}

/// A usage report.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct UsageReport {
    /// The first instant counted.
    pub from: DateTime<Utc>,
    /// The first instant not counted.
    pub to: DateTime<Utc>,
    /// `hour`, `day` or `month`.
    pub bucket: String,
    /// `user`, `agent`, `model`, `tier`, or `null`.
    pub group_by: Option<String>,
    /// Buckets with usage, oldest first, then by group.
    pub rows: Vec<UsageRow>,
    /// The whole range's totals.
    pub totals: UsageTotals,
}

/// One grouped line of usage facts.
#[derive(sqlx::FromRow)]
struct Line {
    bucket: DateTime<Utc>,
    grp: Option<String>,
    kind: String,
    provider: Option<String>,
    model: Option<String>,
    day: NaiveDate,
    outcome: Option<String>,
    facts: i64,
    input_tokens: i64,
    output_tokens: i64,
    cached_tokens: i64,
    tool_calls: i64,
    duration_ms: i64,
    bytes: i64,
}

/// One lifecycle fact.
#[derive(sqlx::FromRow)]
struct Transition {
    agent_id: Option<Uuid>,
    user_id: Uuid,
    kind: String,
    created_at: DateTime<Utc>,
}

/// The report `query` asks for, priced with the edge's price table.
pub async fn report(state: &AppState, query: &Query) -> Result<UsageReport, ApiError> {
    let prices: &PriceTable = &state.settings.prices;
    let group = query.group_by.map_or("NULL::text", GroupBy::column);
    let lines: Vec<Line> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT date_trunc($3, e.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS bucket, \
           {group} AS grp, e.kind, e.provider, e.model, \
           (e.created_at AT TIME ZONE 'UTC')::date AS day, e.outcome, count(*) AS facts, \
           coalesce(sum(e.input_tokens), 0)::bigint AS input_tokens, \
           coalesce(sum(e.output_tokens), 0)::bigint AS output_tokens, \
           sum(e.cached_tokens)::bigint AS cached_tokens, \
           sum(cardinality(e.tools))::bigint AS tool_calls, \
           sum(e.duration_ms)::bigint AS duration_ms, sum(e.bytes)::bigint AS bytes \
         FROM usage_events e LEFT JOIN users u ON u.id = e.user_id \
         WHERE e.created_at >= $1 AND e.created_at < $2 AND e.kind NOT IN ('up', 'down') \
           AND ($4::uuid IS NULL OR e.user_id = $4) \
         GROUP BY 1, 2, 3, 4, 5, 6, 7"
    )))
    .bind(query.from)
    .bind(query.to)
    .bind(query.bucket.as_str())
    .bind(query.user.map(|user| user.0))
    .fetch_all(&state.db)
    .await?;

    let mut rows: BTreeMap<(DateTime<Utc>, Option<String>), UsageTotals> = BTreeMap::new();
    for line in lines {
        let totals = rows.entry((line.bucket, line.grp)).or_default();
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        match line.kind.as_str() {
            "message" => totals.messages += count(line.facts),
            "run" => {
                totals.runs += count(line.facts);
                match line.outcome.as_deref() {
                    Some("failed") => totals.failed_runs += count(line.facts),
                    Some("cancelled") => totals.cancelled_runs += count(line.facts),
                    _ => {}
                }
                totals.tool_calls += count(line.tool_calls);
                totals.run_ms += count(line.duration_ms);
                totals.reported_input_tokens += count(line.input_tokens);
                totals.reported_output_tokens += count(line.output_tokens);
            }
            "model_call" => {
                let (input, cached, output) = (
                    count(line.input_tokens),
                    count(line.cached_tokens),
                    count(line.output_tokens),
                );
                totals.model_calls += count(line.facts);
                totals.input_tokens += input;
                totals.cached_tokens += cached;
                totals.output_tokens += output;
                let provider = line.provider.as_deref().unwrap_or_default();
                let model = line.model.as_deref().unwrap_or_default();
                match prices.cost(provider, model, line.day, input, cached, output) {
                    Some(cost) => totals.cost += cost,
                    None => totals.unpriced_model_calls += count(line.facts),
                }
            }
            "deployment" => totals.deployments += count(line.facts),
            "file_in" => totals.file_bytes_in += count(line.bytes),
            "file_out" => totals.file_bytes_out += count(line.bytes),
            _ => {}
        }
    }
    running_time(state, query, &mut rows).await?;

    let mut totals = UsageTotals::default();
    let rows = rows
        .into_iter()
        .map(|((bucket, group), mut row)| {
            row.seal();
            totals.add(&row);
            UsageRow {
                bucket,
                group,
                totals: row,
            }
        })
        .collect();
    totals.seal();
    Ok(UsageReport {
        from: query.from,
        to: query.to,
        bucket: query.bucket.as_str().to_owned(),
        group_by: query.group_by.map(|group| group.as_str().to_owned()),
        rows,
        totals,
    })
}

/// Adds each agent's sandbox running time within the range, cut at bucket edges.
async fn running_time(
    state: &AppState,
    query: &Query,
    rows: &mut BTreeMap<(DateTime<Utc>, Option<String>), UsageTotals>,
) -> Result<(), ApiError> {
    let transitions: Vec<Transition> = sqlx::query_as(
        "SELECT agent_id, user_id, kind, created_at FROM usage_events \
         WHERE kind IN ('up', 'down') AND created_at < $1 AND ($2::uuid IS NULL OR user_id = $2) \
         ORDER BY agent_id, created_at, seq",
    )
    .bind(query.to)
    .bind(query.user.map(|user| user.0))
    .fetch_all(&state.db)
    .await?;
    if transitions.is_empty() {
        return Ok(());
    }
    let tiers: HashMap<Uuid, String> = match query.group_by {
        Some(GroupBy::Tier) => sqlx::query_as("SELECT id, tier FROM users")
            .fetch_all(&state.db)
            .await?
            .into_iter()
            .collect(),
        _ => HashMap::new(),
    };
    // The end of time for a sandbox still up: the range's end, or now if that is later.
    let end = query.to.min(Utc::now());
    for (i, up) in transitions.iter().enumerate() {
        if up.kind != "up" {
            continue;
        }
        let next = transitions
            .get(i + 1)
            .filter(|next| next.agent_id == up.agent_id)
            .map_or(end, |next| next.created_at.min(end));
        let (mut start, stop) = (up.created_at.max(query.from), next.min(query.to));
        let group = match query.group_by {
            Some(GroupBy::User) => Some(up.user_id.to_string()),
            Some(GroupBy::Agent) => up.agent_id.map(|agent| agent.to_string()),
            Some(GroupBy::Tier) => tiers.get(&up.user_id).cloned(),
            Some(GroupBy::Model) | None => None,
        };
        while start < stop {
            let bucket = query.bucket.start(start);
            let edge = query.bucket.next(bucket).min(stop);
            rows.entry((bucket, group.clone())).or_default().running_ms +=
                (edge - start).num_milliseconds();
            start = edge;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("an RFC 3339 time")
    }

    #[test]
    fn buckets_start_and_end_on_utc_edges() {
        let t = at("2026-03-31T17:45:10Z");
        assert_eq!(Bucket::Hour.start(t), at("2026-03-31T17:00:00Z"));
        assert_eq!(Bucket::Day.start(t), at("2026-03-31T00:00:00Z"));
        assert_eq!(Bucket::Month.start(t), at("2026-03-01T00:00:00Z"));
        assert_eq!(
            Bucket::Month.next(at("2026-01-01T00:00:00Z")),
            at("2026-02-01T00:00:00Z")
        );
        assert_eq!(
            Bucket::Day.next(at("2026-03-31T00:00:00Z")),
            at("2026-04-01T00:00:00Z")
        );
    }
}
