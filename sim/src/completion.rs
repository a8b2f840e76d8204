//! Completions and chat completions: the prompt echoed back one word per token, as one JSON
//! answer or as SSE chunks (with the usage chunk when asked), at the pool's configured pace.

use crate::api::{json_response, InFlight, ResponseBody};
use crate::{Replica, REPLICA_HEADER};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Response;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// The text a request asks to be answered: the last message, or the prompt, echoed back.
fn prompt_text(request: &Value, chat: bool) -> String {
    fn text_of(content: &Value) -> String {
        match content {
            Value::String(text) => text.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|part| part["text"].as_str())
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        }
    }
    if chat {
        request["messages"]
            .as_array()
            .and_then(|messages| messages.last())
            .map(|message| text_of(&message["content"]))
            .unwrap_or_default()
    } else {
        text_of(&request["prompt"])
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub async fn completion(
    replica: &Arc<Replica>,
    model: &str,
    request: &Value,
    chat: bool,
) -> Response<ResponseBody> {
    let prompt = prompt_text(request, chat);
    let max_tokens = request["max_completion_tokens"]
        .as_u64()
        .or_else(|| request["max_tokens"].as_u64())
        .unwrap_or(u64::MAX) as usize;
    let tokens: Vec<String> = prompt
        .split_inclusive(' ')
        .take(max_tokens.max(1))
        .map(str::to_owned)
        .collect();
    let prompt_tokens = prompt.split_whitespace().count().max(1);
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": tokens.len(),
        "total_tokens": prompt_tokens + tokens.len(),
    });
    let id = format!(
        "{}-{}",
        if chat { "chatcmpl" } else { "cmpl" },
        replica.served.fetch_add(1, Ordering::SeqCst)
    );
    let config = &replica.config;
    if request["stream"].as_bool() == Some(true) {
        let include_usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
        let (sender, receiver) = mpsc::channel(16);
        let stream = Stream {
            replica_id: replica.id.clone(),
            id,
            model: model.to_owned(),
            chat,
            usage: include_usage.then_some(usage),
            ttft: config.time_to_first_token,
            tpot: config.time_per_output_token,
        };
        tokio::spawn(stream.send(tokens, sender, InFlight::new(replica)));
        let mut response = Response::new(ChannelBody(receiver).boxed());
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(
            REPLICA_HEADER,
            HeaderValue::from_str(&replica.id).expect("replica id"),
        );
        return response;
    }
    let delay = config.time_to_first_token
        + config.time_per_output_token * tokens.len().saturating_sub(1) as u32;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let text: String = tokens.concat();
    let body = if chat {
        json!({
            "id": id, "object": "chat.completion", "created": now(), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage, "served_by": replica.id,
        })
    } else {
        json!({
            "id": id, "object": "text_completion", "created": now(), "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
            "usage": usage, "served_by": replica.id,
        })
    };
    json_response(replica, &body)
}

/// One streamed answer, sent as SSE events ending in `data: [DONE]`.
struct Stream {
    replica_id: String,
    id: String,
    model: String,
    chat: bool,
    usage: Option<Value>,
    ttft: Duration,
    tpot: Duration,
}

impl Stream {
    fn chunk(&self, delta: Option<&str>, role: bool, finish: bool) -> Value {
        let choice = if self.chat {
            let mut delta_object = json!({});
            if role {
                delta_object["role"] = json!("assistant");
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

    async fn send(self, tokens: Vec<String>, sender: mpsc::Sender<Bytes>, _in_flight: InFlight) {
        tokio::time::sleep(self.ttft).await;
        if self.chat && !emit(&sender, &self.chunk(None, true, false)).await {
            return;
        }
        for (index, token) in tokens.iter().enumerate() {
            if index > 0 && !self.tpot.is_zero() {
                tokio::time::sleep(self.tpot).await;
            }
            if !emit(&sender, &self.chunk(Some(token), false, false)).await {
                return;
            }
        }
        if !emit(&sender, &self.chunk(None, false, true)).await {
            return;
        }
        if let Some(usage) = &self.usage {
            let mut chunk = self.chunk(None, false, false);
            chunk["choices"] = json!([]);
            chunk["usage"] = usage.clone();
            if !emit(&sender, &chunk).await {
                return;
            }
        }
        let _ = sender.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
    }
}

/// Sends one SSE event; false once the client has gone.
async fn emit(sender: &mpsc::Sender<Bytes>, value: &Value) -> bool {
    sender
        .send(Bytes::from(format!("data: {value}\n\n")))
        .await
        .is_ok()
}

/// A response body fed by a channel, one frame per message.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|data| data.map(|data| Ok(Frame::data(data))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_answers_echo_the_last_message_text() {
        let request = json!({"messages": [
            {"role": "user", "content": "first"},
            {"role": "user", "content": [{"type": "text", "text": "Say"}, {"type": "image_url"}, {"type": "text", "text": "this"}]}
        ]});
        assert_eq!(prompt_text(&request, true), "Say this");
        assert_eq!(prompt_text(&json!({"prompt": "a b"}), false), "a b");
        assert_eq!(prompt_text(&json!({}), true), "");
    }
}
