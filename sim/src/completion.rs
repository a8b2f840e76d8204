//! Completions and chat completions: the prompt echoed back one word per token, as one JSON
//! answer or as SSE chunks (with the usage chunk when `stream_options.include_usage` asks),
//! at the pool's configured pace.

use crate::api::{json_response, Ask, ResponseBody};
use crate::generate::{prompt_text, Answer};
use crate::stream::Events;
use hyper::Response;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub async fn completion(ask: &Ask<'_>, chat: bool) -> Response<ResponseBody> {
    let request = ask.request;
    let answer = Answer::echo(&prompt_text(request), request, ask.cached);
    let usage = ask.fault.usage(answer.openai_usage());
    let id = format!(
        "{}-{}",
        if chat { "chatcmpl" } else { "cmpl" },
        ask.replica.served.fetch_add(1, Ordering::SeqCst)
    );
    if request["stream"].as_bool() == Some(true) {
        let include_usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
        let stream = Stream {
            replica_id: ask.replica.id.clone(),
            id,
            model: ask.model.to_owned(),
            chat,
            usage: include_usage.then_some(usage),
        };
        return Events::respond(ask.replica, ask.fault, move |events| {
            stream.send(answer.tokens, events)
        });
    }
    ask.answer_delay(answer.tokens.len()).await;
    let text = answer.text();
    let body = if chat {
        json!({
            "id": id, "object": "chat.completion", "created": now(), "model": ask.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage, "served_by": ask.replica.id,
        })
    } else {
        json!({
            "id": id, "object": "text_completion", "created": now(), "model": ask.model,
            "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
            "usage": usage, "served_by": ask.replica.id,
        })
    };
    json_response(ask.replica, &body)
}

/// One streamed answer, sent as SSE chunks ending in `data: [DONE]`.
struct Stream {
    replica_id: String,
    id: String,
    model: String,
    chat: bool,
    usage: Option<Value>,
}

impl Stream {
    fn chunk(&self, delta: Option<&str>, role: bool, finish: bool) -> Value {
        let choice = if self.chat {
            let mut delta_object = json!({});
            if role {
                delta_object["role"] = json!("assistant");
                delta_object["content"] = json!("");
            }
            if let Some(text) = delta {
                delta_object["content"] = json!(text);
            }
            json!({"index": 0, "delta": delta_object, "finish_reason": if finish { json!("stop") } else { Value::Null }})
        } else {
            json!({"index": 0, "text": delta.unwrap_or(""), "finish_reason": if finish { json!("stop") } else { Value::Null }})
        };
        json!({
            "id": self.id,
            "object": if self.chat { "chat.completion.chunk" } else { "text_completion" },
            "created": now(), "model": self.model, "choices": [choice], "served_by": self.replica_id,
        })
    }

    async fn send(self, tokens: Vec<String>, mut events: Events) {
        for (index, token) in tokens.iter().enumerate() {
            events.pace_token().await;
            if index == 0 && self.chat && !events.send(None, &self.chunk(None, true, false)).await {
                return;
            }
            if !events
                .send(None, &self.chunk(Some(token), false, false))
                .await
            {
                return;
            }
        }
        if !events.send(None, &self.chunk(None, false, true)).await {
            return;
        }
        if let Some(usage) = &self.usage {
            let mut chunk = self.chunk(None, false, false);
            chunk["choices"] = json!([]);
            chunk["usage"] = usage.clone();
            if !events.send(None, &chunk).await {
                return;
            }
        }
        events.done().await;
    }
}
