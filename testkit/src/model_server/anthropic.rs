//! The Anthropic Messages wire format: named SSE events and `message` JSON.

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
    let id = format!("msg_{}", shared.next_id());
    let calls: Vec<(String, &str, &Value)> = reply
        .tool_calls
        .iter()
        .map(|(name, input)| (format!("toolu_{}", shared.next_id()), name.as_str(), input))
        .collect();
    let (input_tokens, output_tokens) = reply.usage_for(request);
    let stop_reason = if calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };

    if request["stream"] != json!(true) {
        return match &reply.ending {
            Ending::Complete => {
                let mut content = Vec::new();
                if let Some(text) = &reply.text {
                    content.push(json!({"type": "text", "text": text}));
                }
                for (call_id, name, input) in &calls {
                    content.push(
                        json!({"type": "tool_use", "id": call_id, "name": name, "input": input}),
                    );
                }
                Json(json!({
                    "id": id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": stop_reason,
                    "stop_sequence": null,
                    "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
                }))
                .into_response()
            }
            Ending::StreamError(message) => error_response(529, message),
            ending => Script {
                frames: Vec::new(),
                delay: reply.chunk_delay,
                ending: ending.clone(),
            }
            .into_response(shared.stop.clone()),
        };
    }

    let event = |name: &str, data: Value| frame(Some(name), &data.to_string());
    let mut frames: Vec<Bytes> = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1},
            }}),
        ),
        event("ping", json!({"type": "ping"})),
    ];
    let mut index = 0;
    if reply.text.is_some() {
        frames.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
                   "content_block": {"type": "text", "text": ""}}),
        ));
        for piece in reply.text_pieces() {
            frames.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                       "delta": {"type": "text_delta", "text": piece}}),
            ));
        }
        frames.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    for (call_id, name, input) in &calls {
        frames.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
                   "content_block": {"type": "tool_use", "id": call_id, "name": name, "input": {}}}),
        ));
        let fragments = std::iter::once(String::new()).chain(argument_fragments(input));
        for fragment in fragments {
            frames.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                       "delta": {"type": "input_json_delta", "partial_json": fragment}}),
            ));
        }
        frames.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    match &reply.ending {
        Ending::Complete => {
            frames.push(event(
                "message_delta",
                json!({"type": "message_delta",
                       "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                       "usage": {"output_tokens": output_tokens}}),
            ));
            frames.push(event("message_stop", json!({"type": "message_stop"})));
        }
        Ending::StreamError(message) => frames.push(event(
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": message}}),
        )),
        Ending::Hang | Ending::Drop | Ending::Status(..) => {}
    }
    Script {
        frames,
        delay: reply.chunk_delay,
        ending: reply.ending.clone(),
    }
    .into_response(shared.stop.clone())
}

/// The Anthropic error envelope: `{"type": "error", "error": {"type", "message"}}`.
pub(super) fn error_response(status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    (status, Json(body)).into_response()
}
