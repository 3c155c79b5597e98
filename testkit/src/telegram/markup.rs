//! Text formatting as Telegram parses it: `MarkdownV2` (strict: reserved characters outside an
//! entity must be escaped), legacy `Markdown`, `HTML`, or plain text. The result is the plain
//! text a user sees and the entities, with offsets and lengths in UTF-16 code units.

use serde_json::{Value, json};

/// A parsed text: what the user sees and its formatting.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Rendered {
    /// The plain text, markup and escapes removed.
    pub(crate) text: String,
    /// Bot API `MessageEntity` objects.
    pub(crate) entities: Vec<Value>,
}

/// The parse modes Telegram accepts (case-insensitive; empty means none).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum ParseMode {
    MarkdownV2,
    Markdown,
    Html,
}

impl ParseMode {
    /// `Ok(None)` for a missing or empty parse mode, `Err` for one Telegram does not know.
    pub(crate) fn parse(name: Option<&str>) -> Result<Option<Self>, ()> {
        match name.map(str::to_ascii_lowercase).as_deref() {
            None | Some("") => Ok(None),
            Some("markdownv2") => Ok(Some(Self::MarkdownV2)),
            Some("markdown") => Ok(Some(Self::Markdown)),
            Some("html") => Ok(Some(Self::Html)),
            Some(_) => Err(()),
        }
    }
}

/// Parses `text` in `mode`; the error is what follows `"Bad Request: can't parse entities: "`.
pub(crate) fn render(text: &str, mode: Option<ParseMode>) -> Result<Rendered, String> {
    match mode {
        None => Ok(Rendered {
            text: text.to_owned(),
            entities: Vec::new(),
        }),
        Some(ParseMode::MarkdownV2) => markdown_v2(text),
        Some(ParseMode::Markdown) => markdown_legacy(text),
        Some(ParseMode::Html) => html(text),
    }
}

/// The length Telegram counts: UTF-16 code units.
pub(crate) fn utf16_len(text: &str) -> usize {
    text.encode_utf16().count()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Bold,
    Italic,
    Underline,
    Strike,
    Spoiler,
    Code,
    Pre,
    TextUrl,
    CustomEmoji,
}

struct Open {
    kind: Kind,
    /// Where the entity's markup starts in the source, for error messages.
    byte_offset: usize,
    /// Where its text starts in the output, in UTF-16 units and in bytes.
    utf16_start: usize,
    out_start: usize,
    language: Option<String>,
}

/// Output being built from source bytes: the bytes and the UTF-16 length so far. Only ASCII
/// markup bytes are ever dropped, so the output stays valid UTF-8.
#[derive(Default)]
struct Out {
    bytes: Vec<u8>,
    utf16: usize,
}

impl Out {
    fn push(&mut self, byte: u8) {
        // Count a code point at its first byte; four-byte sequences are surrogate pairs.
        if byte & 0xC0 != 0x80 {
            self.utf16 += if byte >= 0xF0 { 2 } else { 1 };
        }
        self.bytes.push(byte);
    }

    fn push_str(&mut self, text: &str) {
        text.bytes().for_each(|b| self.push(b));
    }

    fn text_from(&self, start: usize) -> String {
        String::from_utf8_lossy(&self.bytes[start..]).into_owned()
    }

    fn finish(self, entities: Vec<Value>) -> Rendered {
        Rendered {
            text: String::from_utf8(self.bytes).expect("markup: output of valid UTF-8 input"),
            entities,
        }
    }
}

fn entity(kind: &str, offset: usize, length: usize) -> Value {
    json!({"type": kind, "offset": offset, "length": length})
}

fn reserved(c: u8) -> String {
    format!(
        "Character '{}' is reserved and must be escaped with the preceding '\\'",
        c as char
    )
}

fn unclosed(byte_offset: usize) -> String {
    format!("Can't find end of the entity starting at byte offset {byte_offset}")
}

const RESERVED_V2: &[u8] = b"_*[]()~`>#+-=|{}.!";

/// `MarkdownV2`: every reserved character outside code must be escaped unless it is markup.
fn markdown_v2(source: &str) -> Result<Rendered, String> {
    let t = source.as_bytes();
    let at = |i: usize| t.get(i).copied().unwrap_or(0);
    let escapable = |b: u8| (1..=126).contains(&b);
    let mut out = Out::default();
    let mut stack: Vec<Open> = Vec::new();
    let mut entities = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let c = t[i];
        let next = at(i + 1);
        if c == b'\\' && escapable(next) {
            out.push(next);
            i += 2;
            continue;
        }
        let in_code = stack
            .last()
            .is_some_and(|o| matches!(o.kind, Kind::Code | Kind::Pre));
        let reserved_here: &[u8] = if in_code { b"`" } else { RESERVED_V2 };
        if !reserved_here.contains(&c) {
            out.push(c);
            i += 1;
            continue;
        }
        let closes = stack.last().is_some_and(|open| match open.kind {
            Kind::Bold => c == b'*',
            Kind::Italic => c == b'_' && next != b'_',
            Kind::Underline => c == b'_' && next == b'_',
            Kind::Strike => c == b'~',
            Kind::Spoiler => c == b'|' && next == b'|',
            Kind::Code => c == b'`',
            Kind::Pre => c == b'`' && next == b'`' && at(i + 2) == b'`',
            Kind::TextUrl | Kind::CustomEmoji => c == b']',
        });
        if !closes && in_code {
            return Err(reserved(c));
        }
        if !closes {
            // A quote line: '>' first on a line starts a block quote.
            if c == b'>' && (i == 0 || t[i - 1] == b'\n') {
                i += 1;
                continue;
            }
            let byte_offset = i;
            let mut language = None;
            let kind = match c {
                b'_' if next == b'_' => {
                    i += 1;
                    Kind::Underline
                }
                b'_' => Kind::Italic,
                b'*' => Kind::Bold,
                b'~' => Kind::Strike,
                b'|' if next == b'|' => {
                    i += 1;
                    Kind::Spoiler
                }
                b'[' => Kind::TextUrl,
                b'!' if next == b'[' => {
                    i += 1;
                    Kind::CustomEmoji
                }
                b'`' if next == b'`' && at(i + 2) == b'`' => {
                    i += 3;
                    let mut end = i;
                    while end < t.len() && !t[end].is_ascii_whitespace() && t[end] != b'`' {
                        end += 1;
                    }
                    if end != i && end < t.len() && t[end] != b'`' {
                        language = Some(source[i..end].to_owned());
                        i = end;
                    }
                    // One line break right after the opening (and language) is not content.
                    if matches!(at(i), b'\n' | b'\r') {
                        if matches!(at(i + 1), b'\n' | b'\r') && at(i) != at(i + 1) {
                            i += 2;
                        } else {
                            i += 1;
                        }
                    }
                    i -= 1;
                    Kind::Pre
                }
                b'`' => Kind::Code,
                _ => return Err(reserved(c)),
            };
            stack.push(Open {
                kind,
                byte_offset,
                utf16_start: out.utf16,
                out_start: out.bytes.len(),
                language,
            });
            i += 1;
            continue;
        }
        let open = stack.pop().expect("markup: closing an open entity");
        let mut url = None;
        match open.kind {
            Kind::Underline | Kind::Spoiler => i += 1,
            Kind::Pre => i += 2,
            Kind::TextUrl | Kind::CustomEmoji => {
                if at(i + 1) == b'(' {
                    i += 2;
                    let url_begin = i;
                    let mut target = Vec::new();
                    while i < t.len() && t[i] != b')' {
                        if t[i] == b'\\' && escapable(at(i + 1)) {
                            target.push(t[i + 1]);
                            i += 2;
                        } else {
                            target.push(t[i]);
                            i += 1;
                        }
                    }
                    if i >= t.len() {
                        return Err(format!(
                            "Can't find end of a URL at byte offset {url_begin}"
                        ));
                    }
                    url = Some(String::from_utf8_lossy(&target).into_owned());
                } else {
                    url = Some(out.text_from(open.out_start));
                }
            }
            _ => {}
        }
        let length = out.utf16 - open.utf16_start;
        if length > 0 {
            let mut e = match open.kind {
                Kind::Bold => entity("bold", open.utf16_start, length),
                Kind::Italic => entity("italic", open.utf16_start, length),
                Kind::Underline => entity("underline", open.utf16_start, length),
                Kind::Strike => entity("strikethrough", open.utf16_start, length),
                Kind::Spoiler => entity("spoiler", open.utf16_start, length),
                Kind::Code => entity("code", open.utf16_start, length),
                Kind::Pre => entity("pre", open.utf16_start, length),
                Kind::TextUrl => entity("text_link", open.utf16_start, length),
                Kind::CustomEmoji => entity("custom_emoji", open.utf16_start, length),
            };
            if let Some(language) = open.language {
                e["language"] = json!(language);
            }
            match (open.kind, url) {
                (Kind::TextUrl, Some(url)) => e["url"] = json!(url),
                (Kind::CustomEmoji, Some(url)) => {
                    let id = url.rsplit("id=").next().unwrap_or_default().to_owned();
                    e["custom_emoji_id"] = json!(id);
                }
                _ => {}
            }
            entities.push(e);
        }
        i += 1;
    }
    if let Some(open) = stack.last() {
        return Err(unclosed(open.byte_offset));
    }
    entities.sort_by_key(|e| e["offset"].as_u64());
    Ok(out.finish(entities))
}

/// Legacy `Markdown`: `*bold*`, `_italic_`, `` `code` ``, ```` ```pre``` ````, `[text](url)`;
/// no nesting; `\` escapes only `_ * ` [`.
fn markdown_legacy(source: &str) -> Result<Rendered, String> {
    let t = source.as_bytes();
    let at = |i: usize| t.get(i).copied().unwrap_or(0);
    let special = |b: u8| matches!(b, b'_' | b'*' | b'`' | b'[');
    let mut out = Out::default();
    let mut entities = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let c = t[i];
        if c == b'\\' && special(at(i + 1)) {
            out.push(at(i + 1));
            i += 2;
            continue;
        }
        if !special(c) {
            out.push(c);
            i += 1;
            continue;
        }
        let start = i;
        let utf16_start = out.utf16;
        let out_start = out.bytes.len();
        let (kind, end_marker): (&str, &[u8]) = match c {
            b'*' => ("bold", b"*"),
            b'_' => ("italic", b"_"),
            b'[' => ("text_link", b"]"),
            b'`' if at(i + 1) == b'`' && at(i + 2) == b'`' => ("pre", b"```"),
            _ => ("code", b"`"),
        };
        i += if kind == "pre" { 3 } else { 1 };
        let mut language = None;
        if kind == "pre" {
            let line_end = t[i..].iter().position(|&b| b == b'\n' || b == b'`');
            if let Some(n) = line_end.filter(|&n| n > 0 && t[i + n] == b'\n') {
                language = Some(source[i..i + n].to_owned());
                i += n;
            }
            if at(i) == b'\n' {
                i += 1;
            }
        }
        let Some(len) = t[i..]
            .windows(end_marker.len())
            .position(|w| w == end_marker)
        else {
            return Err(unclosed(start));
        };
        t[i..i + len].iter().for_each(|&b| out.push(b));
        i += len + end_marker.len();
        let mut e = entity(kind, utf16_start, out.utf16 - utf16_start);
        if let Some(language) = language {
            e["language"] = json!(language);
        }
        if kind == "text_link" {
            let url = if at(i) == b'(' {
                let Some(close) = t[i..].iter().position(|&b| b == b')') else {
                    return Err(unclosed(start));
                };
                let url = source[i + 1..i + close].to_owned();
                i += close + 1;
                url
            } else {
                out.text_from(out_start)
            };
            e["url"] = json!(url);
        }
        if out.utf16 > utf16_start {
            entities.push(e);
        }
    }
    Ok(out.finish(entities))
}

/// HTML: the tags Telegram supports are stripped into entities, `&lt; &gt; &amp; &quot;`
/// (and numeric references) are unescaped; other tags are refused.
fn html(source: &str) -> Result<Rendered, String> {
    let mut out = Out::default();
    let mut entities = Vec::new();
    // Open tags: name, where the tag started (bytes), where its text starts (UTF-16), href.
    let mut stack: Vec<(String, usize, usize, Option<String>)> = Vec::new();
    let mut rest = source;
    while let Some(c) = rest.chars().next() {
        let offset = source.len() - rest.len();
        if c == '<' {
            let Some(close) = rest.find('>') else {
                return Err(format!("Unclosed start tag at byte offset {offset}"));
            };
            let tag = &rest[1..close];
            rest = &rest[close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let name = name.trim().to_ascii_lowercase();
                match stack.pop() {
                    Some((open, _, start, href)) if open == name => {
                        if let Some(kind) = html_entity_kind(&open, href.is_some()) {
                            let mut e = entity(kind, start, out.utf16 - start);
                            if let Some(href) = href {
                                e["url"] = json!(href);
                            }
                            if out.utf16 > start {
                                entities.push(e);
                            }
                        }
                    }
                    Some((open, ..)) => {
                        return Err(format!(
                            "Unmatched end tag at byte offset {offset}, expected \"</{open}>\", found \"</{name}>\""
                        ));
                    }
                    None => {
                        return Err(format!("Unexpected end tag at byte offset {offset}"));
                    }
                }
                continue;
            }
            let name_end = tag
                .find(|c: char| c.is_ascii_whitespace())
                .unwrap_or(tag.len());
            let name = tag[..name_end].to_ascii_lowercase();
            if !HTML_TAGS.contains(&name.as_str()) {
                return Err(format!(
                    "Unsupported start tag \"{name}\" at byte offset {offset}"
                ));
            }
            let href = (name == "a").then(|| attribute(&tag[name_end..], "href"));
            stack.push((name, offset, out.utf16, href.flatten()));
            continue;
        }
        if c == '&'
            && let Some(semi) = rest.bytes().take(12).position(|b| b == b';')
            && let Some(decoded) = html_unescape(&rest[1..semi])
        {
            let mut buf = [0u8; 4];
            out.push_str(decoded.encode_utf8(&mut buf));
            rest = &rest[semi + 1..];
            continue;
        }
        let mut buf = [0u8; 4];
        out.push_str(c.encode_utf8(&mut buf));
        rest = &rest[c.len_utf8()..];
    }
    if let Some((name, ..)) = stack.last() {
        return Err(format!(
            "Can't find end tag corresponding to start tag \"{name}\""
        ));
    }
    entities.sort_by_key(|e| e["offset"].as_u64());
    Ok(out.finish(entities))
}

/// The tags Telegram's HTML parse mode knows.
const HTML_TAGS: &[&str] = &[
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "tg-spoiler",
    "span",
    "code",
    "pre",
    "blockquote",
    "a",
    "tg-emoji",
];

fn html_entity_kind(tag: &str, has_href: bool) -> Option<&'static str> {
    Some(match tag {
        "b" | "strong" => "bold",
        "i" | "em" => "italic",
        "u" | "ins" => "underline",
        "s" | "strike" | "del" => "strikethrough",
        "tg-spoiler" | "span" => "spoiler",
        "code" => "code",
        "pre" => "pre",
        "blockquote" => "blockquote",
        "a" if has_href => "text_link",
        _ => return None,
    })
}

/// The value of `name="value"` (or single-quoted) in a tag's attribute text.
fn attribute(attributes: &str, name: &str) -> Option<String> {
    let start = attributes.find(&format!("{name}="))? + name.len() + 1;
    let rest = &attributes[start..];
    let quote = rest.chars().next().filter(|q| *q == '"' || *q == '\'')?;
    let end = rest[1..].find(quote)?;
    let raw = &rest[1..1 + end];
    Some(raw.replace("&amp;", "&").replace("&quot;", "\""))
}

fn html_unescape(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(text: &str) -> Result<String, String> {
        markdown_v2(text).map(|r| r.text)
    }

    #[test]
    fn markdown_v2_requires_escapes_outside_entities() {
        assert_eq!(
            v2("Done\\. *Bold* and _it_\\!").as_deref(),
            Ok("Done. Bold and it!")
        );
        assert_eq!(
            v2("Done."),
            Err("Character '.' is reserved and must be escaped with the preceding '\\'".into())
        );
        assert_eq!(
            v2("a-b"),
            Err("Character '-' is reserved and must be escaped with the preceding '\\'".into())
        );
    }

    #[test]
    fn markdown_v2_code_needs_only_backticks_escaped() {
        let r = markdown_v2("`a.b(c)` ```rust\nfn x() {}\n```").expect("parses");
        assert_eq!(r.text, "a.b(c) fn x() {}\n");
        assert_eq!(r.entities[0]["type"], "code");
        assert_eq!(r.entities[1]["type"], "pre");
        assert_eq!(r.entities[1]["language"], "rust");
    }

    #[test]
    fn markdown_v2_links_and_nesting() {
        let r = markdown_v2("[see *this*](https://x.y/a_(b\\))").expect("parses");
        assert_eq!(r.text, "see this");
        let link = r.entities.iter().find(|e| e["type"] == "text_link");
        assert_eq!(link.expect("a link")["url"], "https://x.y/a_(b)");
        assert_eq!(v2("__u__ ||s|| ~x~").as_deref(), Ok("u s x"));
    }

    #[test]
    fn markdown_v2_unclosed_entities_name_their_offset() {
        assert_eq!(
            v2("ab *bold"),
            Err("Can't find end of the entity starting at byte offset 3".into())
        );
    }

    #[test]
    fn utf16_offsets() {
        let r = markdown_v2("😀 *b*").expect("parses");
        assert_eq!(r.entities[0]["offset"], 3);
        assert_eq!(utf16_len("😀"), 2);
    }

    #[test]
    fn html_strips_tags_and_unescapes() {
        let r = html("<b>1 &lt; 2</b> &amp; <a href=\"https://x\">x</a>").expect("parses");
        assert_eq!(r.text, "1 < 2 & x");
        assert!(html("<b>open").is_err());
        assert!(html("<foo>x</foo>").is_err());
    }

    #[test]
    fn legacy_markdown_is_lenient() {
        let r = markdown_legacy("*b* 1.5 - x [l](http://a)").expect("parses");
        assert_eq!(r.text, "b 1.5 - x l");
        assert!(markdown_legacy("*open").is_err());
    }
}
