//! A user's usage today against their tier's limits, for REST (`GET /usage`) and the Telegram
//! bridge's `/usage` alike.

use super::access::AuthUser;
use crate::error::ApiError;
use crate::state::AppState;
use crate::usage::{Metered, UsageSummary};
use crate::views;
use chrono::Utc;

/// `caller`'s usage today (UTC) against their tier's limits.
pub async fn summary(state: &AppState, caller: &AuthUser) -> Result<UsageSummary, ApiError> {
    let day = Utc::now().date_naive();
    let limits = state.settings.tiers.of(caller.user.tier);
    let today = views::usage_on(&state.db, caller.id, day).await?;
    let agents = views::agent_count(&state.db, caller.id).await?;
    Ok(UsageSummary {
        day,
        tier: caller.user.tier.as_str().to_owned(),
        messages: Metered {
            used: today.messages.max(0) as u64,
            limit: limits.messages_per_day,
        },
        agents: Metered {
            used: agents,
            limit: limits.max_agents,
        },
        tokens: Metered {
            used: today.metered_tokens(),
            limit: limits.tokens_per_day,
        },
        input_tokens: today.input_tokens,
        output_tokens: today.output_tokens,
        deployments: today.deployments,
    })
}
