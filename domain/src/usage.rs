//! Usage as facts: what each event of the log stands for in an analyst's ledger, and the price
//! table that costs it (docs/adr/0042-usage-analytics.md).
//!
//! The usage read model and the exports both read facts through [`of_agent_event`] and
//! [`of_conversation_event`], so a total from the API and a row count from an export can only
//! agree. Facts need to know whose aggregate an event is about; only creations say so, so the
//! caller remembers the [`Owner`] a creation teaches and hands it back for later events.
//!
//! Prices are data ([`PriceTable`]): a fact stores tokens, never money, and cost is computed when
//! it is read, so a changed price re-prices all of history.

use crate::agent::AgentEvent;
use crate::conversation::ConversationEvent;
use crate::envelope::Envelope;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a usage fact counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageKind {
    /// A user's message to an agent.
    Message,
    /// A run that ended (completed, failed or cancelled), with its runtime's token report.
    Run,
    /// A model call the platform's model proxy metered: the provider's own numbers, priced.
    ModelCall,
    /// A deployment requested (a first deploy, a repair or a redeploy).
    Deployment,
    /// The agent's sandbox started running.
    Up,
    /// The agent's sandbox stopped running (stopped, paused, failed, deleted).
    Down,
    /// Bytes uploaded into the agent's workspace.
    FileIn,
    /// Bytes downloaded out of the agent's workspace.
    FileOut,
}

impl UsageKind {
    /// The stable name stored in the read model and the exports.
    pub fn as_str(self) -> &'static str {
        match self {
            UsageKind::Message => "message",
            UsageKind::Run => "run",
            UsageKind::ModelCall => "model_call",
            UsageKind::Deployment => "deployment",
            UsageKind::Up => "up",
            UsageKind::Down => "down",
            UsageKind::FileIn => "file_in",
            UsageKind::FileOut => "file_out",
        }
    }
}

/// One usage fact, keyed by the event it comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageFact {
    /// The event (with [`UsageFact::kind`], unique: an event yields at most one fact).
    pub event_id: Uuid,
    /// Whose usage it is.
    pub user_id: Uuid,
    /// The agent, when there is one.
    pub agent_id: Option<Uuid>,
    /// What it counts.
    pub kind: UsageKind,
    /// When it happened (the event's time).
    pub at: DateTime<Utc>,
    /// The provider that served a model call or run, when known.
    pub provider: Option<String>,
    /// The model of a model call or run, when known.
    pub model: Option<String>,
    /// Tokens read (a model call: the provider's number; a run: its runtime's).
    pub input_tokens: u64,
    /// Tokens written.
    pub output_tokens: u64,
    /// Of `input_tokens`, those read from the provider's prompt cache.
    pub cached_tokens: u64,
    /// A run's tool calls, by name, in order.
    pub tools: Vec<String>,
    /// A run's wall time.
    pub duration_ms: u64,
    /// A run's outcome: `completed`, `failed` or `cancelled`.
    pub outcome: Option<String>,
    /// File bytes moved (`file_in`, `file_out`).
    pub bytes: u64,
    /// The sandbox kind of an agent's deployment facts (`docker`, `firecracker`, `ssh`, …).
    pub sandbox: Option<String>,
}

impl UsageFact {
    fn new(envelope_id: Uuid, at: DateTime<Utc>, owner: &Owner, kind: UsageKind) -> Self {
        Self {
            event_id: envelope_id,
            user_id: owner.user_id,
            agent_id: owner.agent_id,
            kind,
            at,
            provider: None,
            model: None,
            input_tokens: 0,
            output_tokens: 0,
            cached_tokens: 0,
            tools: Vec::new(),
            duration_ms: 0,
            outcome: None,
            bytes: 0,
            sandbox: owner.sandbox.clone(),
        }
    }
}

/// Whose an aggregate is, as its creation said: remembered by the reader of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The user its usage counts for.
    pub user_id: Uuid,
    /// The agent (an agent itself, or a conversation's agent).
    pub agent_id: Option<Uuid>,
    /// An agent's sandbox kind.
    pub sandbox: Option<String>,
}

/// What one event means for usage: an owner to remember (from a creation) and the facts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ledger {
    /// The aggregate's owner, when this event is its creation.
    pub learned: Option<Owner>,
    /// The event's usage fact, if it has one.
    pub fact: Option<UsageFact>,
}

/// An agent event's usage. `owner` is what the agent's creation taught (`None` if unknown: then
/// only facts that name their user are counted).
pub fn of_agent_event(envelope: &Envelope<AgentEvent>, owner: Option<&Owner>) -> Ledger {
    use AgentEvent as E;
    let (id, at) = (envelope.id.0, envelope.occurred_at);
    let fact = |kind| owner.map(|owner| UsageFact::new(id, at, owner, kind));
    match &envelope.event {
        E::AgentCreated {
            agent_id,
            owner_id,
            backend,
            ..
        } => Ledger {
            learned: Some(Owner {
                user_id: owner_id.0,
                agent_id: Some(agent_id.0),
                sandbox: Some(backend.as_str().to_owned()),
            }),
            fact: None,
        },
        E::DeploymentRequested { .. } | E::RepairRequested { .. } | E::RedeployRequested { .. } => {
            Ledger {
                learned: None,
                fact: fact(UsageKind::Deployment),
            }
        }
        E::AgentDeployed { .. }
        | E::AgentStarted { .. }
        | E::AgentRestarted { .. }
        | E::AgentResumed { .. } => Ledger {
            learned: None,
            fact: fact(UsageKind::Up),
        },
        E::AgentStopped { .. }
        | E::AgentPaused { .. }
        | E::AgentFailed { .. }
        | E::DeploymentFailed { .. }
        | E::AgentDeleted { .. }
        | E::AgentDestroyed { .. } => Ledger {
            learned: None,
            fact: fact(UsageKind::Down),
        },
        E::FileUploaded {
            agent_id,
            user_id,
            size,
            ..
        }
        | E::FileDownloaded {
            agent_id,
            user_id,
            size,
            ..
        } => {
            let kind = match &envelope.event {
                E::FileUploaded { .. } => UsageKind::FileIn,
                _ => UsageKind::FileOut,
            };
            let named = Owner {
                user_id: user_id.0,
                agent_id: Some(agent_id.0),
                sandbox: owner.and_then(|owner| owner.sandbox.clone()),
            };
            let mut fact = UsageFact::new(id, at, &named, kind);
            fact.bytes = *size;
            Ledger {
                learned: None,
                fact: Some(fact),
            }
        }
        // The user the edge checked the quota of is named in the event.
        E::ModelUsageMetered {
            agent_id,
            user_id,
            provider,
            model,
            input_tokens,
            output_tokens,
            cached_input_tokens,
            ..
        } => {
            let named = Owner {
                user_id: user_id.0,
                agent_id: Some(agent_id.0),
                sandbox: owner.and_then(|owner| owner.sandbox.clone()),
            };
            let mut fact = UsageFact::new(id, at, &named, UsageKind::ModelCall);
            fact.provider = Some(provider.as_str().to_owned());
            fact.model = Some(model.clone());
            fact.input_tokens = *input_tokens;
            fact.output_tokens = *output_tokens;
            fact.cached_tokens = *cached_input_tokens;
            Ledger {
                learned: None,
                fact: Some(fact),
            }
        }
        E::AgentConfigUpdated { .. }
        | E::DeploymentStepCompleted { .. }
        | E::ExecRequested { .. }
        | E::ExecFinished { .. }
        | E::SandboxAlerted { .. } => Ledger::default(),
    }
}

/// A conversation event's usage. `owner` is what the conversation's start taught.
pub fn of_conversation_event(
    envelope: &Envelope<ConversationEvent>,
    owner: Option<&Owner>,
) -> Ledger {
    use ConversationEvent as E;
    let (id, at) = (envelope.id.0, envelope.occurred_at);
    let named = |user_id: Uuid, agent_id: Uuid| Owner {
        user_id,
        agent_id: Some(agent_id),
        sandbox: None,
    };
    match &envelope.event {
        E::ConversationStarted {
            user_id, agent_id, ..
        }
        | E::ConversationForked {
            user_id, agent_id, ..
        } => Ledger {
            learned: Some(named(user_id.0, agent_id.0)),
            fact: None,
        },
        E::MessagePosted {
            user_id, agent_id, ..
        } => Ledger {
            learned: None,
            fact: Some(UsageFact::new(
                id,
                at,
                &named(user_id.0, agent_id.0),
                UsageKind::Message,
            )),
        },
        E::RunCompleted {
            user_id,
            agent_id,
            tool_calls,
            usage,
            duration_ms,
            model,
            provider,
            ..
        } => {
            let mut fact = UsageFact::new(id, at, &named(user_id.0, agent_id.0), UsageKind::Run);
            fact.input_tokens = usage.input_tokens;
            fact.output_tokens = usage.output_tokens;
            fact.tools = tool_calls.iter().map(|call| call.name.clone()).collect();
            fact.duration_ms = *duration_ms;
            fact.outcome = Some("completed".into());
            fact.model = model.clone();
            fact.provider = provider.map(|provider| provider.as_str().to_owned());
            Ledger {
                learned: None,
                fact: Some(fact),
            }
        }
        E::RunFailed { .. } | E::RunCancelled { .. } => {
            let outcome = match &envelope.event {
                E::RunFailed { .. } => "failed",
                _ => "cancelled",
            };
            Ledger {
                learned: None,
                fact: owner.map(|owner| {
                    let mut fact = UsageFact::new(id, at, owner, UsageKind::Run);
                    fact.outcome = Some(outcome.into());
                    fact
                }),
            }
        }
        E::ConversationRenamed { .. }
        | E::RunQueued { .. }
        | E::RunStarted { .. }
        | E::CancelRequested { .. }
        | E::HistoryCleared { .. }
        | E::AgentMessagePosted { .. } => Ledger::default(),
    }
}

/// One price: USD per million tokens of `provider`'s `model`, from `from` (a UTC day) until the
/// next entry for the same model. As written in `warren.toml`:
///
/// ```toml
/// [[prices]]
/// provider = "anthropic"
/// model = "claude-sonnet-4"        # or "*": any model of the provider without its own entry
/// from = "2026-01-01"
/// input_per_million = 3.0
/// output_per_million = 15.0
/// cached_input_per_million = 0.3   # optional: cached input at the input price
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// The provider (`openai`, `anthropic`, …).
    pub provider: String,
    /// The model, or `*` for the provider's models without an entry of their own.
    pub model: String,
    /// The first UTC day this price applies to.
    pub from: NaiveDate,
    /// USD per million input tokens not read from the cache.
    pub input_per_million: f64,
    /// USD per million output tokens.
    pub output_per_million: f64,
    /// USD per million input tokens read from the cache (default: the input price).
    #[serde(default)]
    pub cached_input_per_million: Option<f64>,
}

/// Why a price table was refused.
#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    /// A price is negative or not a number.
    #[error("the price of {provider}/{model} from {from} must be a number of USD, at least 0")]
    Invalid {
        /// Its provider.
        provider: String,
        /// Its model.
        model: String,
        /// Its first day.
        from: NaiveDate,
    },
    /// Two entries for one model start the same day.
    #[error("{provider}/{model} has two prices from {from}")]
    Duplicate {
        /// Its provider.
        provider: String,
        /// Its model.
        model: String,
        /// The day.
        from: NaiveDate,
    },
}

/// A cost in picodollars (10⁻¹² USD): integer, so sums are exact whatever the order.
pub type Picodollars = i128;

/// The prices in force, by provider, model and day.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PriceTable {
    /// Per entry: provider, model, from, and picodollars per token for input, cached input and
    /// output; sorted by provider, model, then from.
    entries: Vec<(String, String, NaiveDate, [Picodollars; 3])>,
}

impl PriceTable {
    /// A table of `prices`, refusing negative or duplicate entries.
    pub fn new(prices: &[Price]) -> Result<Self, PriceError> {
        let mut entries = Vec::with_capacity(prices.len());
        for price in prices {
            let invalid = || PriceError::Invalid {
                provider: price.provider.clone(),
                model: price.model.clone(),
                from: price.from,
            };
            // USD per million tokens = 10⁶ pUSD per token.
            let per_token = |usd: f64| -> Result<Picodollars, PriceError> {
                if usd.is_finite() && usd >= 0.0 {
                    Ok((usd * 1e6).round() as Picodollars)
                } else {
                    Err(invalid())
                }
            };
            let input = per_token(price.input_per_million)?;
            let cached = per_token(
                price
                    .cached_input_per_million
                    .unwrap_or(price.input_per_million),
            )?;
            let output = per_token(price.output_per_million)?;
            entries.push((
                price.provider.clone(),
                price.model.clone(),
                price.from,
                [input, cached, output],
            ));
        }
        entries.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
        if let Some(pair) = entries
            .windows(2)
            .find(|pair| (&pair[0].0, &pair[0].1, pair[0].2) == (&pair[1].0, &pair[1].1, pair[1].2))
        {
            return Err(PriceError::Duplicate {
                provider: pair[0].0.clone(),
                model: pair[0].1.clone(),
                from: pair[0].2,
            });
        }
        Ok(Self { entries })
    }

    /// Whether the table has no price at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Per-token picodollars (input, cached input, output) for `model` of `provider` on `day`:
    /// the model's own latest entry from on or before `day`, else the provider's `*` entry.
    fn rates(&self, provider: &str, model: &str, day: NaiveDate) -> Option<[Picodollars; 3]> {
        let latest = |model: &str| {
            self.entries
                .iter()
                .rfind(|(p, m, from, _)| p == provider && m == model && *from <= day)
                .map(|entry| entry.3)
        };
        latest(model).or_else(|| latest("*"))
    }

    /// The cost of a model call: `None` when no price covers it.
    pub fn cost(
        &self,
        provider: &str,
        model: &str,
        day: NaiveDate,
        input_tokens: u64,
        cached_tokens: u64,
        output_tokens: u64,
    ) -> Option<Picodollars> {
        let [input, cached, output] = self.rates(provider, model, day)?;
        let cached_tokens = cached_tokens.min(input_tokens);
        Some(
            Picodollars::from(input_tokens - cached_tokens) * input
                + Picodollars::from(cached_tokens) * cached
                + Picodollars::from(output_tokens) * output,
        )
    }
}

/// An instant as analysts write one: RFC 3339 (`2026-03-01T12:00:00Z`), or a UTC day
/// (`2026-03-01`) meaning its midnight. `None` for anything else.
pub fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .map(|day| day.and_time(chrono::NaiveTime::MIN).and_utc())
}

/// Picodollars as USD, rounded to the micro-dollar.
pub fn usd(cost: Picodollars) -> f64 {
    // Round to whole micro-dollars first, so the float is the nearest to a 6-decimal number.
    let micros = (cost + 500_000).div_euclid(1_000_000);
    micros as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(model: &str, from: &str, input: f64, output: f64) -> Price {
        Price {
            provider: "openai".into(),
            model: model.into(),
            from: from.parse().expect("a date"),
            input_per_million: input,
            output_per_million: output,
            cached_input_per_million: None,
        }
    }

    fn day(text: &str) -> NaiveDate {
        text.parse().expect("a date")
    }

    #[test]
    fn the_price_in_force_on_the_day_costs_the_call() {
        let mut cached = price("gpt-4o", "2026-03-01", 2.0, 8.0);
        cached.cached_input_per_million = Some(0.5);
        let table = PriceTable::new(&[
            price("gpt-4o", "2026-01-01", 2.5, 10.0),
            cached,
            price("*", "2026-01-01", 1.0, 1.0),
        ])
        .expect("valid");
        // 1M input and 1M output at the January price: 2.5 + 10 USD.
        let january = table.cost(
            "openai",
            "gpt-4o",
            day("2026-02-28"),
            1_000_000,
            0,
            1_000_000,
        );
        assert_eq!(january.map(usd), Some(12.5));
        // From March: 400k uncached at 2, 600k cached at 0.5, 1k output at 8.
        let march = table.cost(
            "openai",
            "gpt-4o",
            day("2026-03-01"),
            1_000_000,
            600_000,
            1_000,
        );
        assert_eq!(march.map(usd), Some(0.8 + 0.3 + 0.008));
        // Another model of the provider takes the `*` price; another provider has none.
        let other = table.cost("openai", "o3", day("2026-03-01"), 2_000_000, 0, 0);
        assert_eq!(other.map(usd), Some(2.0));
        assert_eq!(
            table.cost("anthropic", "gpt-4o", day("2026-03-01"), 1, 0, 1),
            None
        );
        // Before any entry, nothing is priced.
        assert_eq!(
            table.cost("openai", "gpt-4o", day("2025-12-31"), 1, 0, 1),
            None
        );
    }

    #[test]
    fn negative_and_duplicate_prices_are_refused() {
        assert!(matches!(
            PriceTable::new(&[price("m", "2026-01-01", -1.0, 1.0)]),
            Err(PriceError::Invalid { .. })
        ));
        assert!(matches!(
            PriceTable::new(&[
                price("m", "2026-01-01", 1.0, 1.0),
                price("m", "2026-01-01", 2.0, 1.0)
            ]),
            Err(PriceError::Duplicate { .. })
        ));
    }
}
