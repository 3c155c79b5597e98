//! OpenAI chat completions (and every OpenAI-compatible endpoint): the request body and the
//! `chat.completion.chunk` stream decoder. Tool calls arrive as `choices[0].delta.tool_calls[]`
//! fragments keyed by `index`; they are emitted whole when the stream ends (`[DONE]`), after
//! which the usage chunk (`stream_options.include_usage`) has already arrived.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Decode, Message, ModelError, ModelEvent, ToolCall, ToolSpec, Usage, parse_arguments};
use crate::config::ModelSettings;

/// The streaming request body.
pub fn request_body(settings: &ModelSettings, history: &[Message], tools: &[ToolSpec]) -> Value {
    let mut messages = Vec::with_capacity(history.len() + 1);
    if !settings.system_prompt.is_empty() {
        messages.push(json!({"role": "system", "content": settings.system_prompt}));
    }
    for message in history {
        messages.push(match message {
            Message::User { content } => json!({"role": "user", "content": content}),
            Message::Assistant { text, tool_calls } => {
                let mut entry = json!({"role": "assistant", "content": text});
                if !tool_calls.is_empty() {
                    if text.is_empty() {
                        entry["content"] = Value::Null;
                    }
                    entry["tool_calls"] = tool_calls
                        .iter()
                        .map(|call| {
                            let arguments = match &call.input {
                                Value::String(raw) => raw.clone(),
                                input => input.to_string(),
                            };
                            json!({
                                "id": call.id,
                                "type": "function",
                                "function": {"name": call.name, "arguments": arguments},
                            })
                        })
                        .collect();
                }
                entry
            }
            Message::Tool {
                call_id, output, ..
            } => json!({"role": "tool", "tool_call_id": call_id, "content": output}),
        });
    }
    let mut body = json!({
        "model": settings.model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if !tools.is_empty() {
        body["tools"] = tools
            .iter()
            .map(|tool| {
                json!({"type": "function", "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                }})
            })
            .collect();
    }
    body
}

/// A tool call being assembled from fragments.
#[derive(Default)]
struct PartialCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

/// Decodes `chat.completion.chunk` frames.
#[derive(Default)]
pub struct Decoder {
    calls: BTreeMap<u64, PartialCall>,
    finish_reason: Option<String>,
    done: bool,
}

impl Decoder {
    fn complete_calls(&mut self) -> Vec<ModelEvent> {
        std::mem::take(&mut self.calls)
            .into_iter()
            .map(|(index, call)| {
                ModelEvent::ToolCall(ToolCall {
                    id: call.id.unwrap_or_else(|| format!("call_{index}")),
                    name: call.name,
                    input: parse_arguments(&call.arguments),
                })
            })
            .collect()
    }
}

impl Decode for Decoder {
    fn frame(&mut self, frame: super::sse::Frame) -> Result<Vec<ModelEvent>, ModelError> {
        if self.done {
            return Ok(Vec::new());
        }
        if frame.data.trim() == "[DONE]" {
            self.done = true;
            let mut events = self.complete_calls();
            events.push(ModelEvent::Finished);
            return Ok(events);
        }
        let chunk: Value = serde_json::from_str(&frame.data)
            .map_err(|err| ModelError::Protocol(format!("chunk is not JSON: {err}")))?;
        if let Some(error) = chunk.get("error") {
            return Err(ModelError::Provider {
                kind: error["type"].as_str().unwrap_or("server_error").to_owned(),
                message: error["message"].as_str().unwrap_or("unknown").to_owned(),
            });
        }
        let mut events = Vec::new();
        if let Some(choice) = chunk["choices"].get(0) {
            let delta = &choice["delta"];
            if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
                events.push(ModelEvent::TextDelta(text.to_owned()));
            }
            if let Some(fragments) = delta["tool_calls"].as_array() {
                for (position, fragment) in fragments.iter().enumerate() {
                    let index = fragment["index"].as_u64().unwrap_or(position as u64);
                    let call = self.calls.entry(index).or_default();
                    if let Some(id) = fragment["id"].as_str().filter(|id| !id.is_empty()) {
                        call.id = Some(id.to_owned());
                    }
                    if let Some(name) = fragment["function"]["name"].as_str() {
                        call.name.push_str(name);
                    }
                    if let Some(arguments) = fragment["function"]["arguments"].as_str() {
                        call.arguments.push_str(arguments);
                    }
                }
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                self.finish_reason = Some(reason.to_owned());
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            events.push(ModelEvent::Usage(Usage {
                input_tokens: usage["prompt_tokens"].as_u64().unwrap_or(0),
                output_tokens: usage["completion_tokens"].as_u64().unwrap_or(0),
            }));
        }
        Ok(events)
    }

    fn end(&mut self) -> Result<Vec<ModelEvent>, ModelError> {
        if self.done {
            return Ok(Vec::new());
        }
        // Some compatible servers stop after the finish reason without `[DONE]`: complete.
        if self.finish_reason.is_some() {
            self.done = true;
            let mut events = self.complete_calls();
            events.push(ModelEvent::Finished);
            return Ok(events);
        }
        Err(ModelError::Truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::super::sse::Frame;
    use super::*;

    fn data(value: Value) -> Frame {
        Frame {
            event: None,
            data: value.to_string(),
        }
    }

    #[test]
    fn fragments_of_two_calls_are_reassembled_by_index() {
        let mut decoder = Decoder::default();
        let frames = [
            json!({"choices": [{"delta": {"content": "Hi"}, "finish_reason": null}]}),
            json!({"choices": [{"delta": {"tool_calls": [
                {"index": 0, "id": "call_a", "function": {"name": "shell", "arguments": "{\"comm"}},
                {"index": 1, "id": "call_b", "function": {"name": "list_files", "arguments": ""}}
            ]}}]}),
            json!({"choices": [{"delta": {"tool_calls": [
                {"index": 0, "function": {"arguments": "and\": \"ls\"}"}}
            ]}}]}),
            json!({"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}),
            json!({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}),
        ];
        let mut events = Vec::new();
        for frame in frames {
            events.extend(decoder.frame(data(frame)).expect("frame"));
        }
        events.extend(
            decoder
                .frame(Frame {
                    event: None,
                    data: "[DONE]".into(),
                })
                .expect("done"),
        );
        assert_eq!(
            events,
            [
                ModelEvent::TextDelta("Hi".into()),
                ModelEvent::Usage(Usage {
                    input_tokens: 9,
                    output_tokens: 4
                }),
                ModelEvent::ToolCall(ToolCall {
                    id: "call_a".into(),
                    name: "shell".into(),
                    input: json!({"command": "ls"})
                }),
                ModelEvent::ToolCall(ToolCall {
                    id: "call_b".into(),
                    name: "list_files".into(),
                    input: json!({})
                }),
                ModelEvent::Finished,
            ]
        );
    }

    #[test]
    fn a_body_ending_without_finish_or_done_is_truncated() {
        let mut decoder = Decoder::default();
        decoder
            .frame(data(json!({"choices": [{"delta": {"content": "Hi"}}]})))
            .expect("frame");
        assert!(matches!(decoder.end(), Err(ModelError::Truncated)));
    }

    #[test]
    fn history_becomes_system_user_assistant_and_tool_messages() {
        let settings = crate::config::Config::new("/tmp", "t").model;
        let history = [
            Message::User {
                content: "run ls".into(),
            },
            Message::Assistant {
                text: String::new(),
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "shell".into(),
                    input: json!({"command": "ls"}),
                }],
            },
            Message::Tool {
                call_id: "call_1".into(),
                name: "shell".into(),
                output: "a.txt".into(),
                ok: true,
            },
        ];
        let body = request_body(&settings, &history, &[]);
        let messages = body["messages"].as_array().expect("messages");
        assert_eq!(messages[0]["role"], "system");
        assert_eq!(messages[2]["content"], Value::Null);
        assert_eq!(
            messages[2]["tool_calls"][0]["function"]["arguments"],
            "{\"command\":\"ls\"}"
        );
        assert_eq!(messages[3]["tool_call_id"], "call_1");
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert!(body.get("tools").is_none());
    }
}
