//! How the client prints: for people, a conversation as it streams (tokens as they come, tool
//! calls and results, queue positions, failures on stderr); with `--json`, every event frame as
//! received, one per line, and each command's answer as one JSON document.

use super::events::{Event, HistoryMessage, Kind};
use serde::Serialize;
use std::io::Write;

/// Tool output longer than this is cut for people (the whole of it is in `--json`).
const TOOL_OUTPUT_CHARS: usize = 400;

/// Where the client's output goes, in which form.
#[derive(Clone, Copy)]
pub struct Printer {
    json: bool,
}

impl Printer {
    /// People's output, or JSON for scripts.
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    /// Whether the output is JSON.
    pub fn json(&self) -> bool {
        self.json
    }

    /// One command's answer: `value` as JSON, or `human` for people.
    pub fn answer<T: Serialize>(&self, value: &T, human: impl FnOnce() -> String) {
        if self.json {
            println!("{}", serde_json::to_string(value).unwrap_or_default());
        } else {
            println!("{}", human());
        }
    }

    /// A line for people only (nothing with `--json`).
    pub fn note(&self, line: &str) {
        if !self.json {
            eprintln!("{line}");
        }
    }

    /// A session event as it arrives.
    pub fn event(&self, event: &Event) {
        if self.json {
            println!("{}", event.raw);
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = match &event.kind {
            Kind::Message(m) if m.role == "assistant" => writeln!(out, "\n🤖 {}", m.content),
            Kind::Message(m) if !m.from_self => writeln!(out, "\n» {}", m.content),
            Kind::Queued(q) if q.position > 0 => {
                writeln!(out, "⏳ queued (position {})", q.position)
            }
            Kind::Status(s) if s.status == "resuming" => writeln!(out, "… resuming the agent"),
            Kind::Status(s) if s.status == "at_capacity" => {
                writeln!(out, "… waiting for room on the platform")
            }
            Kind::Token(t) => write!(out, "{}", t.content),
            Kind::ToolCall(call) => writeln!(out, "\n🔧 {} {}", call.tool_name, call.arguments),
            Kind::ToolResult(r) => {
                let mark = if r.result.success { "✓" } else { "✗" };
                writeln!(out, "{mark} {}", cut(r.result.content.trim_end()))
            }
            Kind::File(f) => writeln!(out, "📄 {} ({} bytes)", f.path, f.size),
            Kind::Final(_) => writeln!(out),
            Kind::Cancelled(c) => writeln!(out, "\n⏹ cancelled: {}", c.message),
            Kind::Error(e) => {
                let _ = out.flush();
                let hint = if e.retryable {
                    "; trying again may work"
                } else {
                    ""
                };
                eprintln!("\nerror: {} ({}){hint}", e.message, e.error_code);
                Ok(())
            }
            Kind::Reset(reset) => {
                let _ = writeln!(
                    out,
                    "(the log no longer has what was missed; recent messages:)"
                );
                self.history_to(&mut out, &reset.recent_messages);
                Ok(())
            }
            _ => Ok(()),
        };
        let _ = out.flush();
    }

    /// Stored messages, oldest first.
    pub fn history(&self, messages: &[HistoryMessage]) {
        let mut out = std::io::stdout().lock();
        self.history_to(&mut out, messages);
    }

    fn history_to(&self, out: &mut impl Write, messages: &[HistoryMessage]) {
        for m in messages {
            let text = match (&m.content, &m.status) {
                (Some(text), _) if !text.is_empty() => text.clone(),
                (_, Some(status)) => format!("({status})"),
                _ => String::new(),
            };
            let _ = writeln!(out, "{}: {text}", m.role);
        }
    }
}

fn cut(text: &str) -> String {
    match text.char_indices().nth(TOOL_OUTPUT_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}
