//! Anthropic Messages: the request body and the streaming decoder (`message_start`,
//! `content_block_start` / `_delta` / `_stop`, `message_delta`, `message_stop`, `ping`,
//! `error`). A tool call is emitted when its block stops; usage when the message stops.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Decode, Message, ModelError, ModelEvent, ToolCall, ToolSpec, Usage, parse_arguments};
use crate::config::ModelSettings;

/// The `anthropic-version` header sent.
pub const API_VERSION: &str = "2023-06-01";

/// The streaming request body. Consecutive tool results become one `user` message of
/// `tool_result` blocks, as the API requires.
pub fn request_body(settings: &ModelSettings, history: &[Message], tools: &[ToolSpec]) -> Value {
    let mut messages: Vec<Value> = Vec::with_capacity(history.len());
    for message in history {
        match message {
            Message::User { content } => {
                messages.push(json!({"role": "user", "content": content}));
            }
            Message::Assistant { text, tool_calls } => {
                let mut content = Vec::new();
                if !text.is_empty() {
                    content.push(json!({"type": "text", "text": text}));
                }
                for call in tool_calls {
                    let input = if call.input.is_object() {
                        call.input.clone()
                    } else {
                        json!({})
                    };
                    content.push(json!({
                        "type": "tool_use", "id": call.id, "name": call.name, "input": input,
                    }));
                }
                // An empty assistant turn is refused by the API; it carries nothing anyway.
                if !content.is_empty() {
                    messages.push(json!({"role": "assistant", "content": content}));
                }
            }
            Message::Tool {
                call_id,
                output,
                ok,
                ..
            } => {
                let block = json!({
                    "type": "tool_result", "tool_use_id": call_id, "content": output,
                    "is_error": !ok,
                });
                let previous = messages.last_mut().filter(|m| {
                    m["role"] == "user"
                        && m["content"][0]["type"] == "tool_result"
                        && m["content"].is_array()
                });
                match previous.and_then(|m| m["content"].as_array_mut()) {
                    Some(blocks) => blocks.push(block),
                    None => messages.push(json!({"role": "user", "content": [block]})),
                }
            }
        }
    }
    let mut body = json!({
        "model": settings.model,
        "max_tokens": settings.max_tokens,
        "messages": messages,
        "stream": true,
    });
    if !settings.system_prompt.is_empty() {
        body["system"] = json!(settings.system_prompt);
    }
    if !tools.is_empty() {
        body["tools"] = tools
            .iter()
            .map(|tool| {
                json!({
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": tool.parameters,
                })
            })
            .collect();
    }
    body
}

/// A content block being received.
enum Block {
    Text,
    ToolUse {
        id: String,
        name: String,
        initial: Value,
        json: String,
    },
    /// Thinking and server-side blocks: not ours to interpret.
    Other,
}

/// Decodes Messages stream events.
#[derive(Default)]
pub struct Decoder {
    blocks: BTreeMap<u64, Block>,
    usage: Usage,
    done: bool,
}

impl Decode for Decoder {
    fn frame(&mut self, frame: super::sse::Frame) -> Result<Vec<ModelEvent>, ModelError> {
        if self.done {
            return Ok(Vec::new());
        }
        let data: Value = serde_json::from_str(&frame.data)
            .map_err(|err| ModelError::Protocol(format!("event data is not JSON: {err}")))?;
        let kind = frame
            .event
            .or_else(|| data["type"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let index = data["index"].as_u64().unwrap_or(0);
        let mut events = Vec::new();
        match kind.as_str() {
            "message_start" => {
                let usage = &data["message"]["usage"];
                self.usage.input_tokens = usage["input_tokens"].as_u64().unwrap_or(0);
                self.usage.output_tokens = usage["output_tokens"].as_u64().unwrap_or(0);
            }
            "content_block_start" => {
                let block = &data["content_block"];
                let started = match block["type"].as_str() {
                    Some("text") => {
                        if let Some(text) = block["text"].as_str().filter(|t| !t.is_empty()) {
                            events.push(ModelEvent::TextDelta(text.to_owned()));
                        }
                        Block::Text
                    }
                    Some("tool_use") => Block::ToolUse {
                        id: block["id"].as_str().unwrap_or_default().to_owned(),
                        name: block["name"].as_str().unwrap_or_default().to_owned(),
                        initial: block["input"].clone(),
                        json: String::new(),
                    },
                    _ => Block::Other,
                };
                self.blocks.insert(index, started);
            }
            "content_block_delta" => {
                let delta = &data["delta"];
                match (self.blocks.get_mut(&index), delta["type"].as_str()) {
                    (Some(Block::Text), Some("text_delta")) => {
                        if let Some(text) = delta["text"].as_str().filter(|t| !t.is_empty()) {
                            events.push(ModelEvent::TextDelta(text.to_owned()));
                        }
                    }
                    (Some(Block::ToolUse { json, .. }), Some("input_json_delta")) => {
                        json.push_str(delta["partial_json"].as_str().unwrap_or_default());
                    }
                    (None, _) => {
                        return Err(ModelError::Protocol(format!(
                            "delta for unknown block {index}"
                        )));
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                if let Some(Block::ToolUse {
                    id,
                    name,
                    initial,
                    json,
                }) = self.blocks.remove(&index)
                {
                    let input = if json.trim().is_empty() && initial.is_object() {
                        initial
                    } else {
                        parse_arguments(&json)
                    };
                    let id = if id.is_empty() {
                        format!("toolu_{index}")
                    } else {
                        id
                    };
                    events.push(ModelEvent::ToolCall(ToolCall { id, name, input }));
                }
            }
            "message_delta" => {
                let usage = &data["usage"];
                if let Some(output) = usage["output_tokens"].as_u64() {
                    self.usage.output_tokens = output;
                }
                if let Some(input) = usage["input_tokens"].as_u64() {
                    self.usage.input_tokens = input;
                }
            }
            "message_stop" => {
                self.done = true;
                events.push(ModelEvent::Usage(self.usage));
                events.push(ModelEvent::Finished);
            }
            "error" => {
                return Err(ModelError::Provider {
                    kind: data["error"]["type"]
                        .as_str()
                        .unwrap_or("api_error")
                        .to_owned(),
                    message: data["error"]["message"]
                        .as_str()
                        .unwrap_or("unknown")
                        .to_owned(),
                });
            }
            _ => {} // ping and future event types
        }
        Ok(events)
    }

    fn end(&mut self) -> Result<Vec<ModelEvent>, ModelError> {
        if self.done {
            Ok(Vec::new())
        } else {
            Err(ModelError::Truncated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::sse::Frame;
    use super::*;

    fn event(name: &str, data: Value) -> Frame {
        Frame {
            event: Some(name.into()),
            data: data.to_string(),
        }
    }

    #[test]
    fn a_text_and_tool_use_stream_decodes_to_deltas_a_call_and_usage() {
        let mut decoder = Decoder::default();
        let frames = [
            event(
                "message_start",
                json!({"type": "message_start", "message": {"usage": {"input_tokens": 12, "output_tokens": 1}}}),
            ),
            event("ping", json!({"type": "ping"})),
            event(
                "content_block_start",
                json!({"index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            event(
                "content_block_delta",
                json!({"index": 0, "delta": {"type": "text_delta", "text": "Let me"}}),
            ),
            event("content_block_stop", json!({"index": 0})),
            event(
                "content_block_start",
                json!({"index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "shell", "input": {}}}),
            ),
            event(
                "content_block_delta",
                json!({"index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"command\": "}}),
            ),
            event(
                "content_block_delta",
                json!({"index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"ls\"}"}}),
            ),
            event("content_block_stop", json!({"index": 1})),
            event(
                "message_delta",
                json!({"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 30}}),
            ),
            event("message_stop", json!({"type": "message_stop"})),
        ];
        let events: Vec<ModelEvent> = frames
            .into_iter()
            .flat_map(|f| decoder.frame(f).expect("frame"))
            .collect();
        assert_eq!(
            events,
            [
                ModelEvent::TextDelta("Let me".into()),
                ModelEvent::ToolCall(ToolCall {
                    id: "toolu_1".into(),
                    name: "shell".into(),
                    input: json!({"command": "ls"})
                }),
                ModelEvent::Usage(Usage {
                    input_tokens: 12,
                    output_tokens: 30
                }),
                ModelEvent::Finished,
            ]
        );
    }

    #[test]
    fn an_error_event_fails_the_turn_and_a_missing_stop_is_truncation() {
        let mut decoder = Decoder::default();
        let failed = decoder.frame(event(
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ));
        assert!(
            matches!(failed, Err(ModelError::Provider { ref kind, .. }) if kind == "overloaded_error")
        );
        assert!(matches!(
            Decoder::default().end(),
            Err(ModelError::Truncated)
        ));
    }

    #[test]
    fn tool_results_are_grouped_into_one_user_message() {
        let settings = crate::config::Config::new("/tmp", "t").model;
        let call = |id: &str| ToolCall {
            id: id.into(),
            name: "shell".into(),
            input: json!({}),
        };
        let result = |id: &str| Message::Tool {
            call_id: id.into(),
            name: "shell".into(),
            output: "out".into(),
            ok: false,
        };
        let history = [
            Message::User {
                content: "go".into(),
            },
            Message::Assistant {
                text: String::new(),
                tool_calls: vec![call("a"), call("b")],
            },
            result("a"),
            result("b"),
            Message::User {
                content: "next".into(),
            },
        ];
        let body = request_body(&settings, &history, &[]);
        let messages = body["messages"].as_array().expect("messages");
        assert_eq!(messages.len(), 4);
        assert_eq!(messages[2]["content"].as_array().expect("blocks").len(), 2);
        assert_eq!(messages[2]["content"][1]["tool_use_id"], "b");
        assert_eq!(messages[2]["content"][1]["is_error"], true);
        assert!(body["system"].is_string());
        assert_eq!(body["max_tokens"], 4096);
    }
}
