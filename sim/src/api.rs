//! The HTTP surface of a replica: routing a request to its answer, the model list,
//! embeddings, faults on request, and the OpenAI error shape (`/metrics`: [`crate::metrics`]).

use crate::audio::transcription;
use crate::completion::completion;
use crate::faults::{Fault, NOT_JSON_BODY};
use crate::messages::messages;
use crate::responses::responses;
use crate::{Replica, SeenRequest, CACHED_TOKENS_HEADER, FAULT_HEADER, REPLICA_HEADER};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::body::{Body, Frame};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// Why a response body stopped short (only on purpose: [`Fault::ResetStream`]).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;
pub type ResponseBody = BoxBody<Bytes, BodyError>;

/// One model request, as every API's handler sees it.
pub struct Ask<'a> {
    pub replica: &'a Arc<Replica>,
    pub model: &'a str,
    pub request: &'a Value,
    pub fault: Fault,
    /// Prompt tokens to report as read from a cache.
    pub cached: Option<u64>,
}

impl Ask<'_> {
    /// Waits as long as generating `tokens` tokens takes at the pool's pace.
    pub async fn answer_delay(&self, tokens: usize) {
        let config = &self.replica.config;
        let delay = config.time_to_first_token
            + config.time_per_output_token * tokens.saturating_sub(1) as u32;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

fn boxed(body: Full<Bytes>) -> ResponseBody {
    body.map_err(|never: Infallible| match never {}).boxed()
}

/// Counts a request as in flight until dropped (at the end of a streamed answer too).
pub struct InFlight(Arc<Replica>);

impl InFlight {
    pub fn new(replica: &Arc<Replica>) -> Self {
        replica.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(replica))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub async fn handle(request: Request<Incoming>, replica: Arc<Replica>) -> Response<ResponseBody> {
    let fault = Fault::from_header(
        request
            .headers()
            .get(FAULT_HEADER)
            .and_then(|v| v.to_str().ok()),
    );
    let cached = request
        .headers()
        .get(CACHED_TOKENS_HEADER)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let headers = request
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "request body was cut short",
                "bad_request",
            )
        }
    };
    if path == "/health" {
        return full(StatusCode::OK, "text/plain", Bytes::new(), &replica);
    }
    if path == "/metrics" {
        return crate::metrics::answer(&replica);
    }
    if !replica.recording.load(Ordering::SeqCst) {
        return answer(&replica, method, &path, &content_type, &body, fault, cached).await;
    }
    let sent = Arc::new(Mutex::new(Vec::new()));
    replica.seen.lock().expect("request log").push(SeenRequest {
        replica: replica.id.clone(),
        method: method.to_string(),
        path: path.clone(),
        headers,
        body: body.clone(),
        sent: Arc::clone(&sent),
    });
    answer(&replica, method, &path, &content_type, &body, fault, cached)
        .await
        .map(|body| Tee { body, sent }.boxed())
}

/// A response body that keeps a copy of every byte it sends (for [`SeenRequest::sent`]).
struct Tee {
    body: ResponseBody,
    sent: Arc<Mutex<Vec<u8>>>,
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.sent
                    .lock()
                    .expect("sent bytes")
                    .extend_from_slice(data);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
}

/// The answer to a request that is not a health check.
async fn answer(
    replica: &Arc<Replica>,
    method: Method,
    path: &str,
    content_type: &str,
    body: &Bytes,
    fault: Fault,
    cached: Option<u64>,
) -> Response<ResponseBody> {
    let replica = Arc::clone(replica);
    let path = path.to_owned();
    let _in_flight = InFlight::new(&replica);
    match (method, path.as_str()) {
        (Method::GET, "/v1/models") => models(&replica),
        (Method::POST, "/v1/audio/transcriptions" | "/v1/audio/translations") => {
            let translate = path.ends_with("translations");
            transcription(&replica, content_type, body.clone(), translate).await
        }
        (
            Method::POST,
            "/v1/chat/completions"
            | "/v1/completions"
            | "/v1/embeddings"
            | "/v1/responses"
            | "/v1/messages",
        ) => {
            let request: Value = match serde_json::from_slice(body) {
                Ok(Value::Object(object)) => Value::Object(object),
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "body must be a JSON object",
                        "bad_request",
                    )
                }
            };
            let model = match served_model(&replica, request["model"].as_str()) {
                Ok(model) => model.to_owned(),
                Err(refusal) => return *refusal,
            };
            match fault {
                Fault::NotJson => {
                    return full(
                        StatusCode::OK,
                        "application/json",
                        Bytes::from_static(NOT_JSON_BODY.as_bytes()),
                        &replica,
                    )
                }
                Fault::Error500 => {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the model crashed",
                        "internal_error",
                    )
                }
                _ => {}
            }
            let ask = Ask {
                replica: &replica,
                model: &model,
                request: &request,
                fault,
                cached,
            };
            match path.as_str() {
                "/v1/embeddings" => embeddings(&ask),
                "/v1/responses" => responses(&ask).await,
                "/v1/messages" => messages(&ask).await,
                _ => completion(&ask, path == "/v1/chat/completions").await,
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            &format!("no route for {path}"),
            "not_found",
        ),
    }
}

pub fn full(
    status: StatusCode,
    content_type: &str,
    body: Bytes,
    replica: &Replica,
) -> Response<ResponseBody> {
    let mut response = Response::new(boxed(Full::new(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_str(content_type).expect("content type"),
    );
    headers.insert(
        REPLICA_HEADER,
        HeaderValue::from_str(&replica.id).expect("replica id"),
    );
    response
}

/// The request's model when this replica serves it, else the refusal vLLM answers with.
pub fn served_model<'a>(
    replica: &Replica,
    model: Option<&'a str>,
) -> Result<&'a str, Box<Response<ResponseBody>>> {
    let Some(model) = model else {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "'model' is required",
            "missing_model",
        )));
    };
    if !replica.config.models.iter().any(|served| served == model) {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            &format!("The model `{model}` does not exist."),
            "model_not_found",
        )));
    }
    Ok(model)
}

pub fn error(status: StatusCode, message: &str, code: &str) -> Response<ResponseBody> {
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}});
    let mut response = Response::new(boxed(Full::new(Bytes::from(body.to_string()))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub fn json_response(replica: &Replica, body: &Value) -> Response<ResponseBody> {
    full(
        StatusCode::OK,
        "application/json",
        Bytes::from(body.to_string()),
        replica,
    )
}

fn models(replica: &Replica) -> Response<ResponseBody> {
    let data: Vec<Value> = replica
        .config
        .models
        .iter()
        .map(|m| json!({"id": m, "object": "model", "owned_by": replica.config.name}))
        .collect();
    json_response(replica, &json!({"object": "list", "data": data}))
}

fn embeddings(ask: &Ask<'_>) -> Response<ResponseBody> {
    let (replica, model) = (ask.replica, ask.model);
    let inputs: Vec<String> = match &ask.request["input"] {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().unwrap_or_default().to_owned())
            .collect(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "'input' must be a string or an array of strings",
                "bad_input",
            )
        }
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| json!({"object": "embedding", "index": index, "embedding": embedding(text)}))
        .collect();
    let tokens: usize = inputs
        .iter()
        .map(|text| text.split_whitespace().count())
        .sum();
    json_response(
        replica,
        &json!({
            "object": "list", "data": data, "model": model,
            "usage": ask.fault.usage(json!({"prompt_tokens": tokens, "total_tokens": tokens})),
            "served_by": replica.id,
        }),
    )
}

/// A deterministic unit vector derived from the text (FNV-1a seeded per dimension).
fn embedding(text: &str) -> Vec<f64> {
    let raw: Vec<f64> = (0u64..8)
        .map(|dimension| {
            let mut hash = 0xcbf2_9ce4_8422_2325u64 ^ dimension;
            for byte in text.bytes() {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
            }
            (hash % 2000) as f64 / 1000.0 - 1.0
        })
        .collect();
    let norm = raw
        .iter()
        .map(|v| v * v)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    raw.iter().map(|v| v / norm).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embedding("hello");
        assert_eq!(a, embedding("hello"));
        assert_ne!(a, embedding("hellp"));
        let norm: f64 = a.iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-9);
    }
}
