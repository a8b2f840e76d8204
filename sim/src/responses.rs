//! OpenAI's Responses API (`/v1/responses`): the prompt echoed back as a `response` object,
//! or as its stream of typed events ending in `response.completed`, which carries the usage.

use crate::api::{json_response, Ask, ResponseBody};
use crate::completion::now;
use crate::generate::{prompt_text, Answer};
use crate::stream::Events;
use hyper::Response;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

pub async fn responses(ask: &Ask<'_>) -> Response<ResponseBody> {
    let request = ask.request;
    let answer = Answer::echo(&prompt_text(request), request, ask.cached);
    let served = ask.replica.served.fetch_add(1, Ordering::SeqCst);
    let shape = Shape {
        id: format!("resp_{served}"),
        message_id: format!("msg_{served}"),
        model: ask.model.to_owned(),
        replica_id: ask.replica.id.clone(),
        usage: ask.fault.usage(answer.responses_usage()),
    };
    if request["stream"].as_bool() == Some(true) {
        return Events::respond(ask.replica, ask.fault, move |events| {
            shape.stream(answer.tokens, events)
        });
    }
    ask.answer_delay(answer.tokens.len()).await;
    json_response(
        ask.replica,
        &shape.response("completed", Some(&answer.text())),
    )
}

/// What every event of one answer repeats.
struct Shape {
    id: String,
    message_id: String,
    model: String,
    replica_id: String,
    usage: Value,
}

impl Shape {
    /// The `response` object: `text` None while in progress (no output, no usage yet).
    fn response(&self, status: &str, text: Option<&str>) -> Value {
        let (output, usage) = match text {
            Some(text) => (json!([self.message(text)]), self.usage.clone()),
            None => (json!([]), Value::Null),
        };
        json!({
            "id": self.id, "object": "response", "created_at": now(), "status": status,
            "model": self.model, "output": output, "usage": usage, "served_by": self.replica_id,
        })
    }

    fn message(&self, text: &str) -> Value {
        json!({
            "type": "message", "id": self.message_id, "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        })
    }

    async fn stream(self, tokens: Vec<String>, mut events: Events) {
        let mut sequence = 0u64;
        let mut next = || {
            sequence += 1;
            sequence - 1
        };
        let in_progress = self.response("in_progress", None);
        let opening = [
            (
                "response.created",
                json!({"type": "response.created", "response": in_progress, "sequence_number": next()}),
            ),
            (
                "response.output_item.added",
                json!({"type": "response.output_item.added", "output_index": 0,
                "item": {"type": "message", "id": self.message_id, "status": "in_progress", "role": "assistant", "content": []},
                "sequence_number": next()}),
            ),
            (
                "response.content_part.added",
                json!({"type": "response.content_part.added", "item_id": self.message_id,
                "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []},
                "sequence_number": next()}),
            ),
        ];
        for (name, data) in &opening {
            if !events.send(Some(name), data).await {
                return;
            }
        }
        for token in &tokens {
            events.pace_token().await;
            let delta = json!({"type": "response.output_text.delta", "item_id": self.message_id,
                "output_index": 0, "content_index": 0, "delta": token, "sequence_number": next()});
            if !events
                .send(Some("response.output_text.delta"), &delta)
                .await
            {
                return;
            }
        }
        let text = tokens.concat();
        let closing = [
            (
                "response.output_text.done",
                json!({"type": "response.output_text.done", "item_id": self.message_id,
                "output_index": 0, "content_index": 0, "text": text, "sequence_number": next()}),
            ),
            (
                "response.output_item.done",
                json!({"type": "response.output_item.done", "output_index": 0,
                "item": self.message(&text), "sequence_number": next()}),
            ),
            (
                "response.completed",
                json!({"type": "response.completed",
                "response": self.response("completed", Some(&text)), "sequence_number": next()}),
            ),
        ];
        for (name, data) in &closing {
            if !events.send(Some(name), data).await {
                return;
            }
        }
    }
}
