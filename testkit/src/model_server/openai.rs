//! The OpenAI chat completions wire format: `chat.completion.chunk` SSE and `chat.completion` JSON.

use super::{Ending, Reply, Script, Shared, argument_fragments, frame};
use axum::Json;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The answer to one request, streamed if the request asked for it.
pub(super) fn respond(shared: &Shared, reply: &Reply, request: &Value) -> Response {
    if let Ending::Status(status, message) = &reply.ending {
        return error_response(*status, message);
    }
    let model = request["model"].as_str().unwrap_or("scripted").to_owned();
    let id = format!("chatcmpl-{}", shared.next_id());
    let calls: Vec<(String, &str, &Value)> = reply
        .tool_calls
        .iter()
        .map(|(name, input)| (format!("call_{}", shared.next_id()), name.as_str(), input))
        .collect();
    let (input_tokens, output_tokens) = reply.usage_for(request);
    let usage = json!({
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    });
    let finish_reason = if calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };

    if request["stream"] != json!(true) {
        return match reply.ending {
            Ending::Complete => {
                let tool_calls: Vec<Value> = calls
                    .iter()
                    .map(|(call_id, name, input)| {
                        json!({
                            "id": call_id,
                            "type": "function",
                            "function": {"name": name, "arguments": input.to_string()},
                        })
                    })
                    .collect();
                let mut message = json!({"role": "assistant", "content": reply.text});
                if !tool_calls.is_empty() {
                    message["tool_calls"] = Value::Array(tool_calls);
                }
                Json(json!({
                    "id": id,
                    "object": "chat.completion",
                    "created": 1_700_000_000,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
                    "usage": usage,
                }))
                .into_response()
            }
            Ending::StreamError(ref message) => error_response(500, message),
            _ => Script {
                frames: Vec::new(),
                delay: reply.chunk_delay,
                ending: reply.ending.clone(),
            }
            .into_response(shared.stop.clone()),
        };
    }

    let include_usage = request["stream_options"]["include_usage"] == json!(true);
    let chunk = |delta: Value, finish: Value| {
        let mut chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        frame(None, &chunk.to_string())
    };
    let mut frames: Vec<Bytes> = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for piece in reply.text_pieces() {
        frames.push(chunk(json!({"content": piece}), Value::Null));
    }
    for (index, (call_id, name, input)) in calls.iter().enumerate() {
        frames.push(chunk(
            json!({"tool_calls": [{
                "index": index,
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }]}),
            Value::Null,
        ));
        for fragment in argument_fragments(input) {
            frames.push(chunk(
                json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}),
                Value::Null,
            ));
        }
    }
    match &reply.ending {
        Ending::Complete => {
            frames.push(chunk(json!({}), json!(finish_reason)));
            if include_usage {
                let last = json!({
                    "id": id,
                    "object": "chat.completion.chunk",
                    "created": 1_700_000_000,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                });
                frames.push(frame(None, &last.to_string()));
            }
            frames.push(frame(None, "[DONE]"));
        }
        Ending::StreamError(message) => {
            let error =
                json!({"error": {"message": message, "type": "server_error", "code": null}});
            frames.push(frame(None, &error.to_string()));
        }
        Ending::Hang | Ending::Drop | Ending::Status(..) => {}
    }
    Script {
        frames,
        delay: reply.chunk_delay,
        ending: reply.ending.clone(),
    }
    .into_response(shared.stop.clone())
}

/// The OpenAI error envelope: `{"error": {"message", "type", "code"}}`.
pub(super) fn error_response(status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        429 => "rate_limit_error",
        _ => "server_error",
    };
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
    (status, Json(body)).into_response()
}
