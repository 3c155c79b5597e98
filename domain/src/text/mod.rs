//! Text rules: which characters, and how many, each free-text field of a command may hold.
//!
//! Every string a command carries stays in the log for ever and lands in PostgreSQL `text` and
//! `jsonb` columns, which refuse U+0000 (one NUL once stopped every read model). Control
//! characters also rewrite terminals, logs and other clients' screens. So each aggregate checks
//! every free-text field of every command with that field's [`TextRule`], whoever sent it (an
//! edge, a worker, a script), and refuses with `invalid_input` naming the field
//! (`docs/adr/0015-text-rules.md`):
//!
//! - Never allowed: the Unicode control characters (category Cc: C0 U+0000–U+001F, DEL U+007F,
//!   C1 U+0080–U+009F), except tab, LF and CR in multi-line fields ([`Lines::Multi`]: message
//!   and reply text, prompts, reasons, error messages, tool output and arguments).
//! - Single-line fields ([`Lines::Single`]: names, titles, labels, emails, URLs, ids, codes) allow
//!   none of them, nor U+2028 / U+2029 (line and paragraph separators).
//! - Each field has a maximum length in characters (Unicode scalar values) of the text as stored,
//!   i.e. after trimming where the field is trimmed; the constants below are the table.
//!
//! Text from an agent runtime or a model is not refused but made to fit ([`escape`],
//! [`TextRule::fit`]): a hostile model must not be able to stop a run from being recorded.
//!
//! Layout: this file (rules, checks, the per-field table, the small trimming helpers);
//! `escape` (escaping, fitting, JSON values).

mod escape;

#[cfg(test)]
mod tests;

pub use escape::{JsonViolation, escape, escape_json, json_violation};

use thiserror::Error;

/// Whether a field may hold line breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lines {
    /// One line: no control character at all, no line or paragraph separator.
    Single,
    /// Several lines: tab, LF and CR allowed; every other control character refused.
    Multi,
}

/// Why a single-line text is refused for its characters.
const SINGLE_LINE_REASON: &str = "must be one line without control characters";
/// Why a multi-line text is refused for its characters.
const MULTI_LINE_REASON: &str =
    "must not contain control characters other than tab and line breaks";

impl Lines {
    /// Whether `c` may appear in such a field.
    pub fn allows(self, c: char) -> bool {
        match self {
            Lines::Multi => !c.is_control() || matches!(c, '\t' | '\n' | '\r'),
            Lines::Single => !c.is_control() && !matches!(c, '\u{2028}' | '\u{2029}'),
        }
    }

    /// Why `text` is refused for its characters, if it is.
    pub fn violation(self, text: &str) -> Option<&'static str> {
        text.chars().any(|c| !self.allows(c)).then_some(match self {
            Lines::Single => SINGLE_LINE_REASON,
            Lines::Multi => MULTI_LINE_REASON,
        })
    }
}

/// The rule of one command field: its name (as refusals report it), lines and maximum length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextRule {
    /// The field, as `invalid_input` names it.
    pub field: &'static str,
    /// One line or several.
    pub lines: Lines,
    /// The most characters (Unicode scalar values) the field may hold.
    pub max_chars: usize,
    /// Why a longer text is refused ("longer than N characters").
    too_long: &'static str,
}

/// A text refused by its field's rule; each aggregate's error turns it into its `InvalidInput`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidText {
    /// The field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl TextRule {
    /// Why `text` breaks the rule, if it does.
    pub fn violation(&self, text: &str) -> Option<&'static str> {
        self.lines
            .violation(text)
            .or_else(|| (text.chars().count() > self.max_chars).then_some(self.too_long))
    }

    /// `Ok` if `text` keeps the rule, else the refusal naming the field.
    pub fn check(&self, text: &str) -> Result<(), InvalidText> {
        match self.violation(text) {
            None => Ok(()),
            Some(reason) => Err(InvalidText {
                field: self.field,
                reason,
            }),
        }
    }

    /// [`TextRule::check`] of an optional text (absent is fine).
    pub fn check_optional(&self, text: Option<&str>) -> Result<(), InvalidText> {
        text.map_or(Ok(()), |text| self.check(text))
    }

    /// `text` made to keep the rule: what the rule refuses escaped ([`escape`]), then cut to
    /// the maximum with a trailing `…`. For text the platform records but did not write (model
    /// output, runtime errors), where refusing would lose the record.
    pub fn fit(&self, text: &str) -> String {
        let escaped = escape(text, self.lines);
        if escaped.chars().count() <= self.max_chars {
            return escaped.into_owned();
        }
        let mut cut: String = escaped
            .chars()
            .take(self.max_chars.saturating_sub(1))
            .collect();
        cut.push('…');
        cut
    }
}

/// Declares the rule of a field: `NAME: "field", Lines, max chars;` (the maximum is a literal so
/// the refusal's reason can quote it).
macro_rules! rules {
    ($( $(#[$doc:meta])* $name:ident: $field:literal, $lines:ident, $max:literal; )+) => {$(
        $(#[$doc])*
        pub const $name: TextRule = TextRule {
            field: $field,
            lines: Lines::$lines,
            max_chars: $max,
            too_long: concat!("longer than ", stringify!($max), " characters"),
        };
    )+};
}

rules! {
    /// A user's contact address (RFC 5321 caps a path at 254).
    EMAIL: "email", Single, 254;
    /// The name a user shows.
    DISPLAY_NAME: "display_name", Single, 100;
    /// A user's picture URL.
    AVATAR_URL: "avatar_url", Single, 2048;
    /// A sign-in identity at its provider (address, subject id, wallet, Telegram id).
    EXTERNAL_ID: "external_id", Single, 256;
    /// An admin's explanation of a rejection or revocation.
    REASON: "reason", Multi, 1000;
    /// A user's name for a provider key.
    KEY_LABEL: "label", Single, 64;
    /// A provider key's endpoint override.
    BASE_URL: "base_url", Single, 2048;
    /// A provider key's masked form: short, so a whole key can never pass for one.
    FINGERPRINT: "fingerprint", Single, 16;
    /// An agent's display name.
    AGENT_NAME: "name", Single, 64;
    /// An agent's system prompt.
    SYSTEM_PROMPT: "system_prompt", Multi, 64000;
    /// A model identifier.
    MODEL: "model", Single, 200;
    /// A deployed runtime's base URL.
    ENDPOINT_URL: "endpoint_url", Single, 2048;
    /// A deployed runtime's workspace (a docker volume's name).
    WORKSPACE: "workspace", Single, 255;
    /// Why a deployment or a running agent failed (deployer and lifecycle output).
    AGENT_ERROR: "error", Multi, 2000;
    /// A conversation's title.
    TITLE: "title", Single, 200;
    /// A user's message.
    MESSAGE: "text", Multi, 32000;
    /// The posting client's connection id.
    CLIENT_ID: "client_id", Single, 128;
    /// The posting client's kind (`web`, `cli`, `telegram`, …).
    CLIENT_KIND: "client_kind", Single, 32;
    /// The chat worker running a run.
    WORKER_ID: "worker_id", Single, 256;
    /// A completed run's full reply.
    REPLY: "text", Multi, 100000;
    /// A tool call's id.
    CALL_ID: "tool_calls.call_id", Single, 128;
    /// A tool's name.
    TOOL_NAME: "tool_calls.name", Single, 128;
    /// A tool's output (the chat worker keeps at most 16 KiB of it, so never more characters).
    TOOL_OUTPUT: "tool_calls.output", Multi, 16384;
    /// A failed run's machine code.
    FAILURE_CODE: "code", Single, 64;
    /// A failed run's message.
    FAILURE_MESSAGE: "message", Multi, 2000;
    /// A shell command an owner runs in their agent's workspace (a script may span lines).
    EXEC_COMMAND: "command", Multi, 16000;
    /// An exec's workspace-relative working directory.
    EXEC_CWD: "cwd", Single, 1024;
    /// A workspace-relative file path (an upload's target).
    FILE_PATH: "path", Single, 1024;
}

/// The field of a tool call's arguments: every string in them (and every key) is multi-line
/// text; their size is bounded by the runtime's model loop, not here.
pub const TOOL_ARGS_FIELD: &str = "tool_calls.args";

/// The trimmed text, or `None` when it is blank.
pub(crate) fn non_blank(text: &str) -> Option<String> {
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// [`non_blank`] over an optional field.
pub(crate) fn optional(text: Option<&String>) -> Option<String> {
    text.and_then(|t| non_blank(t))
}

/// Whether `url` is an absolute http(s) URL with something after the scheme.
pub(crate) fn is_http_url(url: &str) -> bool {
    ["http://", "https://"].iter().any(|scheme| {
        url.strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty())
    }) && !url.chars().any(char::is_whitespace)
}
