//! Anthropic's Messages API (`/v1/messages`): the prompt echoed back as a `message`, or as
//! its event stream (`message_start` with the input usage, `content_block_delta`s,
//! `message_delta` with the output usage, `message_stop`).

use crate::api::{json_response, Ask, ResponseBody};
use crate::generate::{prompt_text, Answer};
use crate::stream::Events;
use hyper::Response;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

pub async fn messages(ask: &Ask<'_>) -> Response<ResponseBody> {
    let request = ask.request;
    let answer = Answer::echo(&prompt_text(request), request, ask.cached);
    let id = format!("msg_{}", ask.replica.served.fetch_add(1, Ordering::SeqCst));
    let message = |content: Value, stop: Value, usage: Value| {
        json!({
            "id": id, "type": "message", "role": "assistant", "model": ask.model,
            "content": content, "stop_reason": stop, "stop_sequence": null,
            "usage": ask.fault.usage(usage), "served_by": ask.replica.id,
        })
    };
    if request["stream"].as_bool() == Some(true) {
        let start = message(json!([]), Value::Null, answer.anthropic_usage(1));
        let end_usage = ask
            .fault
            .usage(json!({"output_tokens": answer.completion_tokens()}));
        return Events::respond(ask.replica, ask.fault, move |events| {
            stream(start, answer.tokens, end_usage, events)
        });
    }
    ask.answer_delay(answer.tokens.len()).await;
    let usage = answer.anthropic_usage(answer.completion_tokens());
    let body = message(
        json!([{"type": "text", "text": answer.text()}]),
        json!("end_turn"),
        usage,
    );
    json_response(ask.replica, &body)
}

async fn stream(start: Value, tokens: Vec<String>, end_usage: Value, mut events: Events) {
    let opening = [
        (
            "message_start",
            json!({"type": "message_start", "message": start}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
    ];
    for (name, data) in &opening {
        if !events.send(Some(name), data).await {
            return;
        }
    }
    for token in &tokens {
        events.pace_token().await;
        let delta = json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": token}});
        if !events.send(Some("content_block_delta"), &delta).await {
            return;
        }
    }
    let closing = [
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": end_usage}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    for (name, data) in &closing {
        if !events.send(Some(name), data).await {
            return;
        }
    }
}
