//! The text rules themselves: which characters each kind of field refuses, lengths, escaping.

use super::*;
use serde_json::json;
use std::borrow::Cow;

#[test]
fn multi_line_text_refuses_every_control_character_but_tab_and_line_breaks() {
    assert_eq!(MESSAGE.violation("line one\n\tline two\r\n"), None);
    for c in [
        '\0', '\u{7}', '\u{8}', '\u{b}', '\u{c}', '\u{1b}', '\u{7f}', '\u{85}', '\u{9f}',
    ] {
        assert_eq!(
            MESSAGE.violation(&format!("a{c}b")),
            Some(MULTI_LINE_REASON),
            "{c:?}"
        );
    }
    // Not controls: separators, control pictures, emoji.
    assert_eq!(MESSAGE.violation("a\u{2028}b ␀ 👋"), None);
}

#[test]
fn single_line_text_refuses_line_breaks_and_tabs_too() {
    assert_eq!(TITLE.violation("Plans for Tuesday ✓"), None);
    for c in [
        '\n', '\r', '\t', '\0', '\u{1b}', '\u{7f}', '\u{85}', '\u{2028}', '\u{2029}',
    ] {
        assert_eq!(
            TITLE.violation(&format!("a{c}b")),
            Some(SINGLE_LINE_REASON),
            "{c:?}"
        );
    }
}

#[test]
fn lengths_count_characters_not_bytes() {
    assert_eq!(AGENT_NAME.violation(&"é".repeat(64)), None);
    assert_eq!(
        AGENT_NAME.violation(&"é".repeat(65)),
        Some("longer than 64 characters")
    );
    assert_eq!(
        AGENT_NAME.check(&"n".repeat(65)),
        Err(InvalidText {
            field: "name",
            reason: "longer than 64 characters"
        })
    );
    assert_eq!(KEY_LABEL.check_optional(None), Ok(()));
}

#[test]
fn escaping_turns_controls_into_visible_characters_one_for_one() {
    assert_eq!(escape("plain\ttext\n", Lines::Multi), "plain\ttext\n");
    assert!(matches!(escape("plain", Lines::Multi), Cow::Borrowed(_)));
    assert_eq!(
        escape("a\0b\u{1b}[1m\u{7}\u{7f}", Lines::Multi),
        "a␀b␛[1m␇␡"
    );
    assert_eq!(escape("a\tb\nc", Lines::Single), "a␉b␊c");
    assert_eq!(
        escape("a\u{85}b\u{2028}", Lines::Single),
        "a\\u{0085}b\\u{2028}"
    );
    let hostile = "\0".repeat(10);
    assert_eq!(escape(&hostile, Lines::Multi).chars().count(), 10);
}

#[test]
fn escaped_text_always_keeps_the_rule_and_escaping_again_changes_nothing() {
    let every_char: String = (0u32..0x3000).filter_map(char::from_u32).collect();
    for lines in [Lines::Single, Lines::Multi] {
        let escaped = escape(&every_char, lines);
        assert_eq!(lines.violation(&escaped), None);
        assert_eq!(escape(&escaped, lines), escaped);
    }
}

#[test]
fn fitting_escapes_then_cuts_to_the_maximum() {
    assert_eq!(FAILURE_CODE.fit("runtime\0error"), "runtime␀error");
    let long = FAILURE_CODE.fit(&"x".repeat(100));
    assert_eq!(long.chars().count(), 64);
    assert!(long.ends_with('…'));
    assert_eq!(FAILURE_CODE.violation(&long), None);
    let cut_escapes = CALL_ID.fit(&"\u{85}".repeat(100));
    assert_eq!(CALL_ID.violation(&cut_escapes), None);
}

#[test]
fn json_values_are_walked_with_a_path_to_the_first_offending_string_or_key() {
    let fine = json!({"message": "hi\nthere", "n": 1, "list": ["a", {"b": null}]});
    assert_eq!(json_violation(&fine, Lines::Multi), None);
    let nested = json!({"message": "ok", "list": ["a", {"b": "x\u{0}"}]});
    assert_eq!(
        json_violation(&nested, Lines::Multi),
        Some(JsonViolation {
            path: "list[1].b".into(),
            reason: MULTI_LINE_REASON
        })
    );
    let key = json!({"bad\u{1b}key": 1});
    assert_eq!(
        json_violation(&key, Lines::Multi).map(|v| v.path),
        Some("bad␛key".into())
    );
    assert_eq!(
        json_violation(&json!("\u{0}"), Lines::Multi).map(|v| v.path),
        Some(String::new())
    );
    let escaped = escape_json(&json!({"k\u{0}": ["\u{7}", 2, {"x": "\u{1b}"}]}));
    assert_eq!(escaped, json!({"k␀": ["␇", 2, {"x": "␛"}]}));
    assert_eq!(json_violation(&escaped, Lines::Multi), None);
}
