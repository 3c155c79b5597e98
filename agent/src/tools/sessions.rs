//! The session tools (spec 002's `sessions.search` and `sessions.get`; providers allow no dots
//! in tool names): `sessions_search {query?, date_filter?, limit?}` finds the user's
//! conversations with this agent by words and by when they were last active;
//! `sessions_get {session_id}` shows one with its newest messages. Both ask the platform's
//! runtime API with this runtime's own token; they are offered only when the runtime knows its
//! platform ([`crate::config::Platform`]).

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::ToolOutcome;
use crate::config::{Platform, Secret};
use crate::model::ToolSpec;

/// The longest a platform call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Characters of a message shown in a listing.
const PREVIEW_CHARS: usize = 300;

/// The platform's runtime API for one agent.
#[derive(Clone)]
pub struct Sessions {
    http: reqwest::Client,
    /// `<platform>/api/v1/runtime/agents/<agent_id>/sessions`.
    base: String,
    token: Secret,
}

/// A session as the platform describes it.
#[derive(Debug, Deserialize)]
struct Session {
    id: String,
    title: String,
    message_count: i64,
    last_activity_at: String,
    #[serde(default)]
    snippet: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SearchAnswer {
    sessions: Vec<Session>,
}

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    text: String,
    created_at: String,
}

#[derive(Debug, Deserialize)]
struct SessionAnswer {
    session: Session,
    messages: Vec<Message>,
}

impl Sessions {
    /// The tools for `platform`, calling it with `token`.
    pub fn new(http: reqwest::Client, platform: &Platform, token: Secret) -> Self {
        Self {
            http,
            base: format!(
                "{}/api/v1/runtime/agents/{}/sessions",
                platform.url, platform.agent_id
            ),
            token,
        }
    }

    /// What is offered to the model.
    pub fn specs() -> [ToolSpec; 2] {
        [
            ToolSpec {
                name: "sessions_search",
                description: "Search the user's conversation sessions with you by words in \
                    their title or messages and by when they were last active. Without a query \
                    it lists the most recent sessions. The user switches with /session <id>.",
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "description": "Words that must all occur"},
                        "date_filter": {
                            "type": "string",
                            "enum": ["today", "yesterday", "this_week", "last_week"]
                        },
                        "limit": {"type": "integer", "description": "Most results (default 10, at most 50)"}
                    }
                }),
            },
            ToolSpec {
                name: "sessions_get",
                description: "Get one of the user's sessions with its most recent messages.",
                parameters: json!({
                    "type": "object",
                    "properties": {"session_id": {"type": "string", "description": "The session UUID"}},
                    "required": ["session_id"]
                }),
            },
        ]
    }

    /// `sessions_search`.
    pub async fn search(&self, input: &Value, cap: usize) -> ToolOutcome {
        let mut query: Vec<(&str, String)> = Vec::new();
        for field in ["query", "date_filter"] {
            match &input[field] {
                Value::Null => {}
                Value::String(text) => query.push((field, text.clone())),
                _ => return ToolOutcome::failed(format!("{field} must be a string")),
            }
        }
        match &input["limit"] {
            Value::Null => {}
            limit => match limit.as_i64() {
                Some(n) => query.push(("limit", n.to_string())),
                None => return ToolOutcome::failed("limit must be an integer"),
            },
        }
        let answer: SearchAnswer = match self.call(&self.base, &query).await {
            Ok(answer) => answer,
            Err(reason) => return ToolOutcome::failed(reason),
        };
        if answer.sessions.is_empty() {
            return ToolOutcome::ok("No sessions match.", cap);
        }
        let mut text = format!("{} session(s), most recent first:\n", answer.sessions.len());
        for (n, session) in answer.sessions.iter().enumerate() {
            text.push_str(&format!("{}. {}\n", n + 1, describe(session)));
            if let Some(snippet) = &session.snippet {
                text.push_str(&format!("   \"{}\"\n", preview(snippet)));
            }
        }
        ToolOutcome::ok(text, cap)
    }

    /// `sessions_get`.
    pub async fn get(&self, input: &Value, cap: usize) -> ToolOutcome {
        let Some(id) = input["session_id"].as_str() else {
            return ToolOutcome::failed("missing string field \"session_id\"");
        };
        let Ok(id) = id.trim().parse::<uuid::Uuid>() else {
            return ToolOutcome::failed("session_id must be a UUID");
        };
        let url = format!("{}/{id}", self.base);
        let answer: SessionAnswer = match self.call(&url, &[]).await {
            Ok(answer) => answer,
            Err(reason) => return ToolOutcome::failed(reason),
        };
        let mut text = format!("{}\n", describe(&answer.session));
        for message in &answer.messages {
            text.push_str(&format!(
                "[{}] {}: {}\n",
                message.created_at,
                message.role,
                preview(&message.text)
            ));
        }
        ToolOutcome::ok(text, cap)
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        query: &[(&str, String)],
    ) -> Result<T, String> {
        let url = reqwest::Url::parse_with_params(url, query)
            .map_err(|err| format!("bad platform URL {url}: {err}"))?;
        let response = self
            .http
            .get(url)
            .bearer_auth(self.token.expose())
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|err| format!("the platform is unreachable: {err}"))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err("no such session".into());
        }
        if !status.is_success() {
            // The platform's error envelope says why (a bad date filter, a bad limit).
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let message = body["error"]["message"].as_str().unwrap_or("");
            let details = match &body["error"]["details"] {
                Value::Null => String::new(),
                details => format!(" {details}"),
            };
            return Err(format!(
                "the platform refused ({status}): {message}{details}"
            ));
        }
        response
            .json()
            .await
            .map_err(|err| format!("the platform's answer is not understood: {err}"))
    }
}

fn describe(session: &Session) -> String {
    let title = if session.title.is_empty() {
        "(untitled)"
    } else {
        &session.title
    };
    format!(
        "{title} — id {}, {} message(s), last active {}",
        session.id, session.message_count, session.last_activity_at
    )
}

fn preview(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(PREVIEW_CHARS) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}
