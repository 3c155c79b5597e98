//! Reading a provider's own usage numbers from its answer as the answer streams through the
//! model proxy, without holding the stream back: every chunk is fed here after it is forwarded.
//!
//! - OpenAI streaming: the chunk whose `usage` is an object (the last one, which the proxy asks
//!   for with `stream_options.include_usage`); non-streaming: the body's `usage`
//!   (`prompt_tokens`, `completion_tokens`).
//! - Anthropic streaming: `message_start.message.usage`, then `message_delta.usage`, whose counts
//!   are cumulative and replace the earlier ones; non-streaming: the body's `usage`. Cache reads
//!   and writes count as input.
//!
//! A provider's answer is as hostile as anything else a model sends: lines and bodies are read
//! within caps, and an unreadable one only means that answer is not counted.

use serde_json::Value;
use warren_domain::user::ModelProtocol;

/// The longest SSE line parsed (a usage chunk is a few hundred bytes).
const MAX_LINE: usize = 1024 * 1024;
/// The largest non-streamed body parsed for its usage.
const MAX_JSON: usize = 8 * 1024 * 1024;

/// Tokens one model call used, as its provider counted them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Tokens read (prompt; cache reads and writes included).
    pub input_tokens: u64,
    /// Tokens written.
    pub output_tokens: u64,
    /// Of `input_tokens`, those read from the provider's prompt cache.
    pub cached_input_tokens: u64,
}

/// Reads one answer's usage as it passes.
#[derive(Debug)]
pub struct Meter {
    protocol: ModelProtocol,
    /// `true` for an event stream, read line by line; else a JSON body, read whole.
    event_stream: bool,
    /// The line (or the body) read so far.
    buffer: Vec<u8>,
    /// The current line passed [`MAX_LINE`] (or the body [`MAX_JSON`]): skipped.
    overflow: bool,
    usage: Option<Usage>,
}

impl Meter {
    /// A meter for an answer in `protocol`, an event stream or a JSON body.
    pub fn new(protocol: ModelProtocol, event_stream: bool) -> Self {
        Self {
            protocol,
            event_stream,
            buffer: Vec::new(),
            overflow: false,
            usage: None,
        }
    }

    /// Reads the next piece of the answer.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        if !self.event_stream {
            if self.buffer.len() + chunk.len() > MAX_JSON {
                self.overflow = true;
                self.buffer = Vec::new();
            }
            if !self.overflow {
                self.buffer.extend_from_slice(chunk);
            }
            return;
        }
        while let Some(end) = chunk.iter().position(|&b| b == b'\n') {
            self.take(&chunk[..end]);
            let line = std::mem::take(&mut self.buffer);
            if !std::mem::take(&mut self.overflow) {
                self.line(&line);
            }
            chunk = &chunk[end + 1..];
        }
        self.take(chunk);
    }

    /// The usage the answer reported, once it ended (or broke off): `None` if it said none.
    pub fn finish(mut self) -> Option<Usage> {
        let rest = std::mem::take(&mut self.buffer);
        if !self.overflow {
            if self.event_stream {
                self.line(&rest);
            } else if let Ok(body) = serde_json::from_slice::<Value>(&rest) {
                self.body(&body);
            }
        }
        self.usage
    }

    /// Appends part of a line, within the cap.
    fn take(&mut self, part: &[u8]) {
        if self.overflow {
            return;
        }
        if self.buffer.len() + part.len() > MAX_LINE {
            self.overflow = true;
            self.buffer = Vec::new();
            return;
        }
        self.buffer.extend_from_slice(part);
    }

    /// One whole SSE line: only `data:` lines holding JSON matter.
    fn line(&mut self, line: &[u8]) {
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.trim_ascii();
        if data.is_empty() || data == b"[DONE]" {
            return;
        }
        let Ok(event) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        match self.protocol {
            ModelProtocol::Openai => self.body(&event),
            ModelProtocol::Anthropic => match event["type"].as_str() {
                Some("message_start") => self.anthropic(&event["message"]["usage"]),
                Some("message_delta") => self.anthropic(&event["usage"]),
                _ => {}
            },
        }
    }

    /// A whole body, or an OpenAI chunk: its `usage`, if it has one.
    fn body(&mut self, body: &Value) {
        let usage = &body["usage"];
        if !usage.is_object() {
            return;
        }
        match self.protocol {
            ModelProtocol::Openai => {
                self.usage = Some(Usage {
                    input_tokens: usage["prompt_tokens"].as_u64().unwrap_or(0),
                    output_tokens: usage["completion_tokens"].as_u64().unwrap_or(0),
                    cached_input_tokens: usage["prompt_tokens_details"]["cached_tokens"]
                        .as_u64()
                        .unwrap_or(0),
                });
            }
            ModelProtocol::Anthropic => self.anthropic(usage),
        }
    }

    /// Anthropic's `usage`: each count it names replaces the one read before (a
    /// `message_delta`'s counts are cumulative).
    fn anthropic(&mut self, usage: &Value) {
        if !usage.is_object() {
            return;
        }
        let mut current = self.usage.unwrap_or_default();
        if usage.get("input_tokens").is_some() {
            current.input_tokens = [
                "input_tokens",
                "cache_creation_input_tokens",
                "cache_read_input_tokens",
            ]
            .iter()
            .filter_map(|field| usage[*field].as_u64())
            .fold(0, u64::saturating_add);
            current.cached_input_tokens = usage["cache_read_input_tokens"].as_u64().unwrap_or(0);
        }
        if let Some(output) = usage["output_tokens"].as_u64() {
            current.output_tokens = output;
        }
        self.usage = Some(current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `text` in pieces of `size` bytes.
    fn metered(protocol: ModelProtocol, stream: bool, text: &str, size: usize) -> Option<Usage> {
        let mut meter = Meter::new(protocol, stream);
        for piece in text.as_bytes().chunks(size) {
            meter.feed(piece);
        }
        meter.finish()
    }

    #[test]
    fn an_openai_stream_is_counted_from_its_usage_chunk_however_it_is_split() {
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\r\n\r\n\
                      data: {\"choices\":[],\"usage\":{\"prompt_tokens\":42,\"completion_tokens\":7}}\n\n\
                      data: [DONE]\n\n";
        for size in [1, 3, 17, stream.len()] {
            assert_eq!(
                metered(ModelProtocol::Openai, true, stream, size),
                Some(Usage {
                    input_tokens: 42,
                    output_tokens: 7,
                    cached_input_tokens: 0
                }),
                "pieces of {size}"
            );
        }
        let without = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n";
        assert_eq!(metered(ModelProtocol::Openai, true, without, 5), None);
    }

    #[test]
    fn an_anthropic_stream_is_counted_from_message_start_and_the_last_message_delta() {
        let stream = "event: message_start\n\
            data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":30,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n\
            event: content_block_delta\n\
            data: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"usage\"}}\n\n\
            event: message_delta\n\
            data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":12}}\n\n\
            event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        assert_eq!(
            metered(ModelProtocol::Anthropic, true, stream, 7),
            Some(Usage {
                input_tokens: 35,
                output_tokens: 12,
                cached_input_tokens: 5
            })
        );
        // Cut off after message_start: what was read so far still counts.
        let cut = &stream[..stream.find("event: content_block_delta").expect("delta")];
        assert_eq!(
            metered(ModelProtocol::Anthropic, true, cut, 9),
            Some(Usage {
                input_tokens: 35,
                output_tokens: 1,
                cached_input_tokens: 5
            })
        );
    }

    #[test]
    fn non_streamed_bodies_are_counted_from_their_usage() {
        let openai = r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4}}"#;
        assert_eq!(
            metered(ModelProtocol::Openai, false, openai, 4),
            Some(Usage {
                input_tokens: 9,
                output_tokens: 4,
                cached_input_tokens: 0
            })
        );
        let anthropic = r#"{"type":"message","usage":{"input_tokens":11,"output_tokens":3}}"#;
        assert_eq!(
            metered(ModelProtocol::Anthropic, false, anthropic, 4),
            Some(Usage {
                input_tokens: 11,
                output_tokens: 3,
                cached_input_tokens: 0
            })
        );
        assert_eq!(metered(ModelProtocol::Openai, false, "not json", 4), None);
    }

    #[test]
    fn an_overlong_line_is_skipped_and_the_next_one_still_read() {
        let long = format!("data: {}\n", "x".repeat(MAX_LINE + 10));
        let stream = format!(
            "{long}data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":1,\"completion_tokens\":2}}}}\n\n"
        );
        assert_eq!(
            metered(ModelProtocol::Openai, true, &stream, 64 * 1024),
            Some(Usage {
                input_tokens: 1,
                output_tokens: 2,
                cached_input_tokens: 0
            })
        );
    }
}
