//! `/api/v1/runtime/agents/{agent_id}/*`: the routes an agent runtime calls back on, for its
//! session tools (`sessions_search`, `sessions_get`; spec 002's `sessions.search`) and its model
//! (the model proxy, [`crate::model_proxy`]). The caller is the runtime, authenticated by its own
//! agent token ([`RuntimeCaller`]: `Authorization: Bearer <token>`, or `x-api-key: <token>` as
//! Anthropic clients send a key; the token the deployer gave it); it sees only the
//! conversations its owner has with this agent. A wrong token, an unknown or a deleted agent
//! are all 401; a conversation with another agent or user is 404.

use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery, bearer_token};
use crate::openapi::resp;
use crate::routes::ApiRouter;
use crate::state::AppState;
use crate::views::{self, MessageView, SessionMatch};
use axum::Json;
use axum::extract::State;
use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use chrono::{DateTime, Datelike, Days, Duration, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use warren_domain::ids::{AgentId, UserId};

/// Most sessions one search returns.
const MAX_RESULTS: i64 = 50;
/// Messages `sessions/{id}` returns (the newest).
const RECENT_MESSAGES: i64 = 20;
/// Longest search query accepted.
const MAX_QUERY_CHARS: usize = 200;

/// The runtime routes.
pub fn routes() -> ApiRouter {
    ApiRouter::new()
        .get("/runtime/agents/{agent_id}/sessions", search)
        .get("/runtime/agents/{agent_id}/sessions/{id}", get_session)
}

/// A runtime, authenticated by its agent's token: the agent and the user it works for.
pub struct RuntimeCaller {
    /// The agent.
    pub agent: AgentId,
    /// Its owner.
    pub owner: UserId,
    /// Its model, as its owner chose it (the model proxy sends no other).
    pub model: String,
}

fn invalid() -> ApiError {
    ApiError::unauthorized(
        "invalid_agent_token",
        "send the agent's own token: Authorization: Bearer <agent token> (or x-api-key)",
    )
}

/// The agent token a runtime presents: `Authorization: Bearer`, else `x-api-key` (how an
/// Anthropic client sends its key, so a runtime pointed at the model proxy works unchanged).
fn agent_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    bearer_token(headers).or_else(|| {
        headers
            .get("x-api-key")
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|token| !token.is_empty())
    })
}

impl FromRequestParts<AppState> for RuntimeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = agent_token(&parts.headers).ok_or_else(invalid)?.to_owned();
        // A malformed agent id is 401 like a bad token, so the route never tells which agents
        // exist.
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| invalid())?;
        let agent = params
            .iter()
            .find(|(key, _)| *key == "agent_id")
            .and_then(|(_, value)| value.parse::<Uuid>().ok())
            .map(AgentId)
            .ok_or_else(invalid)?;
        let stored = state
            .agent_tokens
            .get(agent)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(invalid)?;
        if !bool::from(stored.as_bytes().ct_eq(token.as_bytes())) {
            return Err(invalid());
        }
        let (record, _) = state
            .commands
            .agents
            .load(&agent.to_string())
            .await
            .map_err(ApiError::internal)?;
        if record.id.is_none() || record.destroyed {
            return Err(invalid());
        }
        Ok(Self {
            agent,
            owner: record.owner_id,
            model: record.model,
        })
    }
}

/// `GET /runtime/agents/{agent_id}/sessions`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Words that must each occur in the title or in a message (case-insensitive); none lists
    /// the most recent sessions.
    pub query: Option<String>,
    /// `today`, `yesterday`, `this_week` or `last_week` (UTC, weeks start on Monday): only
    /// sessions last active then.
    pub date_filter: Option<String>,
    /// How many (1 to 50, default 10).
    #[param(minimum = 1, maximum = 50)]
    pub limit: Option<i64>,
}

/// What a search found.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchAnswer {
    /// Matching sessions, most recently active first.
    pub sessions: Vec<SessionMatch>,
}

/// A session and its newest messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionAnswer {
    /// The session.
    pub session: SessionMatch,
    /// Its newest messages, oldest first.
    pub messages: Vec<MessageView>,
}

/// The half-open UTC interval a date filter names, relative to `now`.
fn date_range(
    filter: &str,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let midnight = now.date_naive().and_time(NaiveTime::MIN).and_utc();
    let monday = midnight - Duration::days(i64::from(now.weekday().num_days_from_monday()));
    let day = Days::new(1);
    let week = Days::new(7);
    let range = match filter {
        "today" => (midnight, midnight + day),
        "yesterday" => (midnight - day, midnight),
        "this_week" => (monday, monday + week),
        "last_week" => (monday - week, monday),
        _ => {
            return Err(ApiError::invalid_field(
                "date_filter",
                "must be today, yesterday, this_week or last_week",
            ));
        }
    };
    Ok(range)
}

/// The query's words, as `ILIKE` patterns with `%`, `_` and `\` taken literally.
fn patterns(query: &str) -> Result<Vec<String>, ApiError> {
    if query.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::invalid_field(
            "query",
            format!("must be at most {MAX_QUERY_CHARS} characters"),
        ));
    }
    Ok(query
        .split_whitespace()
        .map(|word| {
            let mut pattern = String::with_capacity(word.len() + 2);
            pattern.push('%');
            for c in word.chars() {
                if matches!(c, '%' | '_' | '\\') {
                    pattern.push('\\');
                }
                pattern.push(c);
            }
            pattern.push('%');
            pattern
        })
        .collect())
}

/// The sessions the agent's user has with it, by words in their title or messages and by when
/// they were last active, most recently active first.
#[utoipa::path(get, path = "/api/v1/runtime/agents/{agent_id}/sessions", operation_id = "get_runtime_sessions", tag = "runtime", security(("agent_token" = [])),
    params(("agent_id" = Uuid, Path, description = "The calling runtime's agent"), SearchQuery),
    responses((status = 200, description = "Matching sessions.", body = SearchAnswer),
        resp::Unauthorized, resp::Validation))]
pub(crate) async fn search(
    State(state): State<AppState>,
    caller: RuntimeCaller,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> Result<Json<SearchAnswer>, ApiError> {
    let limit = match query.limit {
        None => 10,
        Some(n) if (1..=MAX_RESULTS).contains(&n) => n,
        Some(_) => return Err(ApiError::invalid_field("limit", "must be from 1 to 50")),
    };
    let words = patterns(query.query.as_deref().unwrap_or(""))?;
    let range = match query.date_filter.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(filter) => Some(date_range(filter, Utc::now())?),
    };
    let sessions =
        views::search_sessions(&state.db, caller.owner, caller.agent, &words, range, limit).await?;
    Ok(Json(SearchAnswer { sessions }))
}

/// One of the agent's sessions with its newest messages.
#[utoipa::path(get, path = "/api/v1/runtime/agents/{agent_id}/sessions/{id}", operation_id = "get_runtime_session", tag = "runtime", security(("agent_token" = [])),
    params(("agent_id" = Uuid, Path, description = "The calling runtime's agent"),
        ("id" = Uuid, Path, description = "Session (conversation) id")),
    responses((status = 200, description = "The session.", body = SessionAnswer),
        resp::Unauthorized, resp::NotFound, resp::Validation))]
pub(crate) async fn get_session(
    State(state): State<AppState>,
    caller: RuntimeCaller,
    ApiPath((_, id)): ApiPath<(Uuid, Uuid)>,
) -> Result<Json<SessionAnswer>, ApiError> {
    let session = views::agent_session(&state.db, caller.owner, caller.agent, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let messages = views::messages(&state.db, id, None, RECENT_MESSAGES).await?;
    Ok(Json(SessionAnswer { session, messages }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn date_filters_are_utc_days_and_monday_weeks() {
        // Wednesday 2026-12-02 15:30 UTC.
        let now = Utc
            .with_ymd_and_hms(2026, 12, 2, 15, 30, 0)
            .single()
            .expect("a time");
        let at = |d: u32, m: u32| {
            Utc.with_ymd_and_hms(2026, m, d, 0, 0, 0)
                .single()
                .expect("a time")
        };
        let range = |f| date_range(f, now).expect("a filter");
        assert_eq!(range("today"), (at(2, 12), at(3, 12)));
        assert_eq!(range("yesterday"), (at(1, 12), at(2, 12)));
        assert_eq!(range("this_week"), (at(30, 11), at(7, 12)));
        assert_eq!(range("last_week"), (at(23, 11), at(30, 11)));
        assert!(date_range("last_month", now).is_err());
    }

    #[test]
    fn query_words_become_literal_patterns() {
        assert_eq!(
            patterns("  Python  50%_off\\ ").expect("words"),
            vec!["%Python%".to_owned(), "%50\\%\\_off\\\\%".to_owned()]
        );
        assert!(patterns("").expect("no words").is_empty());
        assert!(patterns(&"x".repeat(201)).is_err());
    }
}
