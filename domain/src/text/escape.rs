//! Escaping text the platform records but did not write, and walking JSON values.
//!
//! The escape is visible and one character for one where it can be: C0 controls become their
//! Unicode control pictures (U+0000 → `␀` U+2400, ESC → `␛` U+241B, …), DEL becomes `␡` U+2421,
//! so a length bound holds across escaping. C1 controls and the line/paragraph separators have no
//! picture and become `\u{0085}`-style text. Escaping is idempotent, so text escaped at the
//! runtime boundary may be fitted again when a command is built. It is not reversible for text
//! that already held control pictures: that is the price of keeping it readable.

use super::Lines;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt::Write;

/// `text` with every character `lines` refuses escaped; borrowed when nothing needed escaping.
pub fn escape(text: &str, lines: Lines) -> Cow<'_, str> {
    if text.chars().all(|c| lines.allows(c)) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if lines.allows(c) {
            escaped.push(c);
            continue;
        }
        match u32::from(c) {
            code @ 0x00..=0x1f => escaped.push(char::from_u32(0x2400 + code).unwrap_or('\u{fffd}')),
            0x7f => escaped.push('\u{2421}'),
            code => {
                // Writing to a String cannot fail.
                let _ = write!(escaped, "\\u{{{code:04X}}}");
            }
        }
    }
    Cow::Owned(escaped)
}

/// A JSON value with every string and every object key escaped as multi-line text.
pub fn escape_json(value: &Value) -> Value {
    match value {
        Value::String(text) => Value::String(escape(text, Lines::Multi).into_owned()),
        Value::Array(items) => Value::Array(items.iter().map(escape_json).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, value)| (escape(key, Lines::Multi).into_owned(), escape_json(value)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Where in a JSON value a string (or a key) breaks a [`Lines`] rule, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonViolation {
    /// The path from the root: `name`, `a.b`, `items[2].text`; empty for the root itself. Keys
    /// are escaped, so the path can be shown.
    pub path: String,
    /// What is wrong.
    pub reason: &'static str,
}

/// The first string or object key in `value`, depth first, that `lines` refuses.
pub fn json_violation(value: &Value, lines: Lines) -> Option<JsonViolation> {
    let mut path = String::new();
    walk(value, lines, &mut path)
}

fn walk(value: &Value, lines: Lines, path: &mut String) -> Option<JsonViolation> {
    match value {
        Value::String(text) => lines.violation(text).map(|reason| JsonViolation {
            path: path.clone(),
            reason,
        }),
        Value::Array(items) => items.iter().enumerate().find_map(|(index, item)| {
            let len = path.len();
            let _ = write!(path, "[{index}]");
            let found = walk(item, lines, path);
            path.truncate(len);
            found
        }),
        Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&escape(key, lines));
            let found = match lines.violation(key) {
                Some(reason) => Some(JsonViolation {
                    path: path.clone(),
                    reason,
                }),
                None => walk(item, lines, path),
            };
            path.truncate(len);
            found
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}
