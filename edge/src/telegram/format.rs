//! What the bridge sends, fitted to Telegram: an agent's answer (markdown) as MarkdownV2
//! messages of at most 4096 characters, split on line boundaries, fenced code as `pre` blocks
//! (closed at a split and reopened in the next message), inline code as `code`, and every other
//! character MarkdownV2 reserves escaped, so Telegram never refuses a message for its markup.
//!
//! Lengths are counted in UTF-16 code units of the escaped source, as Telegram counts its
//! limit; the parsed text is never longer than its source, so a part that fits here fits there.

/// Telegram's limit on a message's text.
pub const LIMIT: usize = 4096;
/// The longest piece a single long line is cut into before escaping (escaping at most doubles
/// it, which keeps it well under [`LIMIT`]).
const LINE_PIECE: usize = 1500;

/// The longest language name kept on a code block.
const MAX_LANG: usize = 24;

/// Characters MarkdownV2 reserves outside entities.
const RESERVED: &str = "_*[]()~`>#+-=|{}.!\\";

/// `text` escaped for MarkdownV2, outside any entity.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for c in text.chars() {
        if RESERVED.contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `text` escaped for the inside of a `code` or `pre` entity (only `` ` `` and `\`).
pub fn escape_code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '`' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Length as Telegram counts it.
pub fn units(text: &str) -> usize {
    text.encode_utf16().count()
}

/// One line of text rendered: inline `` `code` `` spans (a backtick with a partner on the same
/// line) as code entities, everything else escaped.
fn render_inline(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(open) = rest.find('`') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('`') else {
            break;
        };
        out.push_str(&escape(&rest[..open]));
        let code = &after[..close];
        if code.is_empty() {
            out.push_str("\\`\\`");
        } else {
            out.push('`');
            out.push_str(&escape_code(code));
            out.push('`');
        }
        rest = &after[close + 1..];
    }
    out.push_str(&escape(rest));
    out
}

/// `line` cut into pieces of at most [`LINE_PIECE`] characters.
fn pieces(line: &str) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= LINE_PIECE {
        return vec![line.to_owned()];
    }
    chars
        .chunks(LINE_PIECE)
        .map(|chunk| chunk.iter().collect())
        .collect()
}

/// Messages being filled.
struct Parts {
    done: Vec<String>,
    current: String,
    /// The language of the `pre` block the current message is inside, if any.
    open_code: Option<String>,
}

impl Parts {
    fn new() -> Self {
        Self {
            done: Vec::new(),
            current: String::new(),
            open_code: None,
        }
    }

    fn close_code(&mut self) {
        if self.open_code.take().is_some() {
            self.current.push_str("```\n");
        }
    }

    fn flush(&mut self) {
        let code = self.open_code.clone();
        self.close_code();
        let part = std::mem::take(&mut self.current);
        let trimmed = part.trim_end_matches('\n');
        if !trimmed.is_empty() {
            self.done.push(trimmed.to_owned());
        }
        // The next message reopens a block that was cut.
        if let Some(lang) = code {
            self.open(lang);
        }
    }

    fn open(&mut self, lang: String) {
        self.current.push_str("```");
        self.current.push_str(&lang);
        self.current.push('\n');
        self.open_code = Some(lang);
    }

    /// Adds one rendered line, in a code block of `code` (its language) or as text.
    fn push(&mut self, code: Option<&str>, rendered: &str) {
        let opener = match (code, &self.open_code) {
            (Some(lang), Some(open)) if open == lang => 0,
            (Some(lang), _) => 4 + units(lang),
            (None, _) => 0,
        };
        let closer = if code.is_some() || self.open_code.is_some() {
            4
        } else {
            0
        };
        let cost = opener + units(rendered) + 1 + closer;
        if !self.current.is_empty() && units(&self.current) + cost > LIMIT {
            self.flush();
        }
        match code {
            Some(lang) if self.open_code.as_deref() != Some(lang) => {
                self.close_code();
                self.open(lang.to_owned());
            }
            Some(_) => {}
            None => self.close_code(),
        }
        self.current.push_str(rendered);
        self.current.push('\n');
    }

    fn finish(mut self) -> Vec<String> {
        self.close_code();
        let last = std::mem::take(&mut self.current);
        let trimmed = last.trim_end_matches('\n');
        if !trimmed.is_empty() {
            self.done.push(trimmed.to_owned());
        }
        self.done
    }
}

/// An agent's answer (markdown) as MarkdownV2 messages, each within [`LIMIT`].
pub fn render(text: &str) -> Vec<String> {
    let mut parts = Parts::new();
    let mut code: Option<String> = None;
    for line in text.lines() {
        let fence = line.trim_start().strip_prefix("```");
        match (fence, &code) {
            (Some(lang), None) => {
                code = Some(
                    lang.trim()
                        .chars()
                        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '_'))
                        .take(MAX_LANG)
                        .collect(),
                );
                continue;
            }
            (Some(_), Some(_)) => {
                code = None;
                continue;
            }
            _ => {}
        }
        for piece in pieces(line) {
            match &code {
                Some(lang) => parts.push(Some(lang), &escape_code(&piece)),
                None => parts.push(None, &render_inline(&piece)),
            }
        }
    }
    let rendered = parts.finish();
    if rendered.is_empty() {
        return vec![escape("(no text)")];
    }
    rendered
}

/// Plain text (no parse mode) in messages of at most [`LIMIT`], split on line boundaries.
pub fn split_plain(text: &str) -> Vec<String> {
    let mut done = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        for piece in pieces(line) {
            if !current.is_empty() && units(&current) + units(&piece) + 1 > LIMIT {
                done.push(std::mem::take(&mut current));
            }
            if !current.is_empty() {
                current.push('\n');
            }
            current.push_str(&piece);
        }
    }
    if !current.trim().is_empty() {
        done.push(current);
    }
    if done.is_empty() {
        done.push("(no text)".to_owned());
    }
    done
}

/// The end of `text` that fits one message, marked as cut when it is (a draft of a long answer
/// shows its newest part).
pub fn tail(text: &str) -> String {
    if units(text) <= LIMIT {
        return text.to_owned();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut start = chars.len();
    let mut length = 2;
    while start > 0 {
        let next = chars[start - 1].len_utf16();
        if length + next > LIMIT {
            break;
        }
        length += next;
        start -= 1;
    }
    format!("…\n{}", chars[start..].iter().collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_characters_are_escaped_outside_code() {
        assert_eq!(escape("1.5 * (a-b)!"), "1\\.5 \\* \\(a\\-b\\)\\!");
        assert_eq!(
            render("Done. `ls -la` lists files."),
            vec!["Done\\. `ls -la` lists files\\."]
        );
    }

    #[test]
    fn fenced_code_is_a_pre_block_escaped_for_code() {
        let parts = render("Run this:\n```bash\necho `date` \\ done.\n```\nThat's it!");
        assert_eq!(
            parts,
            vec!["Run this:\n```bash\necho \\`date\\` \\\\ done.\n```\nThat's it\\!"]
        );
    }

    #[test]
    fn long_answers_split_on_lines_within_the_limit_and_reopen_code() {
        let line = "x".repeat(100);
        let mut text = String::from("```rust\n");
        for _ in 0..100 {
            text.push_str(&line);
            text.push('\n');
        }
        text.push_str("```\nafter.");
        let parts = render(&text);
        assert!(parts.len() >= 3, "{} parts", parts.len());
        for part in &parts {
            assert!(units(part) <= LIMIT, "a part of {} units", units(part));
        }
        assert!(parts[0].starts_with("```rust\n") && parts[0].ends_with("```"));
        assert!(parts[1].starts_with("```rust\n") && parts[1].ends_with("```"));
        assert!(parts.last().is_some_and(|p| p.ends_with("after\\.")));
        let lines: usize = parts.iter().map(|p| p.matches(&line).count()).sum();
        assert_eq!(lines, 100, "every line is sent once");
    }

    #[test]
    fn one_huge_line_is_cut_into_pieces() {
        let parts = render(&"a.".repeat(5000));
        assert!(parts.len() >= 3);
        assert!(parts.iter().all(|p| units(p) <= LIMIT));
        assert_eq!(split_plain(&"b".repeat(9000)).len(), 3);
    }

    #[test]
    fn a_draft_shows_the_newest_part_of_a_long_answer() {
        let text = format!("{}END", "a".repeat(5000));
        let tail = tail(&text);
        assert!(units(&tail) <= LIMIT);
        assert!(tail.starts_with('…') && tail.ends_with("END"));
    }
}
