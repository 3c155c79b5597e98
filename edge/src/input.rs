//! Text input at the edge: every string a client or an agent runtime sends — in a JSON body, a
//! query string, a path or the gateway's params — is checked before any command is built, so a
//! NUL or another control character is a clear refusal naming the field (REST: 422
//! `validation_failed`; gateway: `invalid_params`), never a log entry the read side cannot store
//! (`docs/adr/0015-text-rules.md`).
//!
//! Two layers, both the domain's rules ([`warren_domain::text`]):
//! - every string and every object key of the input keeps the multi-line rule (no control
//!   character but tab, LF and CR), wherever it is — one walk, not a check per handler;
//! - a field that becomes a command field also keeps that field's rule (one line or several,
//!   maximum length), declared next to the request type with [`TextFields`] and checked on the
//!   trimmed value, as the aggregates store it.
//!
//! The aggregates check the same rules again, for commands from every other source.

use crate::error::ApiError;
use serde_json::Value;
use warren_domain::text::{self, Lines, TextRule};

/// An input field that breaks its rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRefusal {
    /// The field, as the client named it: `display_name`, `items[0].text`, `query`; `body` for
    /// a bare JSON string.
    pub field: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl From<FieldRefusal> for ApiError {
    fn from(refusal: FieldRefusal) -> Self {
        ApiError::invalid_field(&refusal.field, refusal.reason)
    }
}

/// A request type: which domain rule each of its top-level text fields follows, beyond the
/// check every string gets. Every JSON body implements it, so a new body has to say.
pub trait TextFields {
    /// `(field as the client names it, rule)`; none by default.
    const TEXT_FIELDS: &'static [(&'static str, TextRule)] = &[];
}

/// Checks every string and key of `value`, then each of `fields` that is a string.
pub fn check_json(value: &Value, fields: &[(&str, TextRule)]) -> Result<(), FieldRefusal> {
    if let Some(violation) = text::json_violation(value, Lines::Multi) {
        let field = match violation.path.as_str() {
            "" => "body".to_owned(),
            _ => violation.path,
        };
        return Err(FieldRefusal {
            field,
            reason: violation.reason,
        });
    }
    fields.iter().try_for_each(
        |(name, rule)| match value.get(name).and_then(Value::as_str) {
            Some(text) => check_field(name, text, rule),
            None => Ok(()),
        },
    )
}

/// Checks one field's text (trimmed, as stored) against its rule.
pub fn check_field(name: &str, text: &str, rule: &TextRule) -> Result<(), FieldRefusal> {
    match rule.violation(text.trim()) {
        None => Ok(()),
        Some(reason) => Err(FieldRefusal {
            field: name.to_owned(),
            reason,
        }),
    }
}

/// Checks every name and value of decoded query or path parameters.
pub fn check_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), FieldRefusal> {
    pairs.into_iter().try_for_each(|(name, value)| {
        let refused = |reason| FieldRefusal {
            field: text::escape(name, Lines::Single).into_owned(),
            reason,
        };
        match Lines::Multi
            .violation(name)
            .or(Lines::Multi.violation(value))
        {
            Some(reason) => Err(refused(reason)),
            None => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FIELDS: &[(&str, TextRule)] =
        &[("name", text::AGENT_NAME), ("prompt", text::SYSTEM_PROMPT)];

    fn refused(value: Value) -> Option<String> {
        check_json(&value, FIELDS)
            .err()
            .map(|refusal| refusal.field)
    }

    #[test]
    fn any_string_with_a_control_character_is_refused_by_its_path() {
        assert_eq!(refused(json!({"name": "Scout", "prompt": "a\nb"})), None);
        assert_eq!(
            refused(json!({"extra": {"list": ["ok", "x\u{0}"]}})),
            Some("extra.list[1]".into())
        );
        assert_eq!(
            refused(json!({"prompt": "a\u{1b}[2J"})),
            Some("prompt".into())
        );
        assert_eq!(refused(json!("\u{7}")), Some("body".into()));
    }

    #[test]
    fn declared_fields_keep_their_domain_rule_on_the_trimmed_text() {
        assert_eq!(refused(json!({"name": "Sc\nout"})), Some("name".into()));
        assert_eq!(
            refused(json!({"name": "n".repeat(65)})),
            Some("name".into())
        );
        assert_eq!(refused(json!({"name": " Scout\n"})), None);
        assert_eq!(
            refused(json!({"name": 5})),
            None,
            "a wrong type is serde's to refuse"
        );
    }

    #[test]
    fn query_and_path_pairs_are_checked_by_name() {
        assert_eq!(
            check_pairs([("query", "two words"), ("limit", "5")]),
            Ok(())
        );
        assert_eq!(
            check_pairs([("limit", "5"), ("query", "a\u{0}")]).map_err(|r| r.field),
            Err("query".into())
        );
        assert_eq!(
            check_pairs([("q\u{0}", "a")]).map_err(|r| r.field),
            Err("q␀".into())
        );
    }
}
