//! An OpenAI-compatible inference server good enough to stand in for vLLM replicas and plain
//! model backends in the gateway's tests and local runs.
//!
//! Each replica answers `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
//! `/v1/models`, `/health` and `/metrics` (with vLLM's load gauges), streams with SSE when
//! asked, echoes the model it received, names itself in the `x-sim-replica` header and the
//! `served_by` field, and records every request it sees so tests can prove what reached it.
//! [`picker`] is the endpoint picker that InferencePools put in front of such replicas.

pub mod body_router;
pub mod picker;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Response header naming the replica that served a request.
pub const REPLICA_HEADER: &str = "x-sim-replica";
/// Request header a test sends to inject a fault: `reset` closes the connection without an
/// answer once the request is in, as a crashing server would.
pub const FAULT_HEADER: &str = "x-sim-fault";

/// How one pool of replicas behaves.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Pool name; replica `i` is called `<name>-<i>`.
    pub name: String,
    /// Models served; any other model gets 404.
    pub models: Vec<String>,
    /// Delay before the first token.
    pub time_to_first_token: Duration,
    /// Delay between tokens.
    pub time_per_output_token: Duration,
    /// Requests run at once before the rest count as waiting in `/metrics`.
    pub max_num_seqs: usize,
    /// Keep every request for [`Replica::seen`] (tests); a long-running server must not.
    pub record_requests: bool,
}

impl PoolConfig {
    pub fn new(name: &str, models: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            time_to_first_token: Duration::ZERO,
            time_per_output_token: Duration::ZERO,
            max_num_seqs: 256,
            record_requests: true,
        }
    }
}

/// One request as a replica saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub replica: String,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl SeenRequest {
    /// Every value of a header, in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A running replica.
#[derive(Debug)]
pub struct Replica {
    pub id: String,
    pub addr: SocketAddr,
    config: Arc<PoolConfig>,
    in_flight: AtomicUsize,
    /// Completions answered so far, numbering their ids.
    served: AtomicUsize,
    recording: AtomicBool,
    seen: Mutex<Vec<SeenRequest>>,
    /// The accept loop, while the replica is up.
    accepting: Mutex<Option<JoinHandle<()>>>,
    /// Bumped when the replica goes down: its open connections close.
    generation: watch::Sender<u64>,
}

impl Replica {
    /// Takes the replica down as a crash would: it stops listening (connections are refused)
    /// and every open connection closes, requests in flight included.
    pub fn stop(&self) {
        if let Some(accepting) = self.accepting.lock().expect("accept loop").take() {
            accepting.abort();
        }
        self.generation.send_modify(|generation| *generation += 1);
    }

    /// Brings a stopped replica back on the same address.
    pub async fn restart(self: &Arc<Self>) -> std::io::Result<()> {
        let listener = TcpListener::bind(self.addr).await?;
        let accepting = tokio::spawn(serve(listener, Arc::clone(self)));
        *self.accepting.lock().expect("accept loop") = Some(accepting);
        Ok(())
    }

    /// Every request this replica received, health checks excluded.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().expect("request log").clone()
    }
}

/// Replicas of one pool, each on its own listener.
#[derive(Debug, Clone)]
pub struct Pool {
    pub config: Arc<PoolConfig>,
    pub replicas: Vec<Arc<Replica>>,
}

impl Pool {
    /// Starts one replica per listener on the current tokio runtime.
    pub fn start(config: PoolConfig, listeners: Vec<TcpListener>) -> std::io::Result<Self> {
        let config = Arc::new(config);
        let mut replicas = Vec::new();
        for (index, listener) in listeners.into_iter().enumerate() {
            let replica = Arc::new(Replica {
                id: format!("{}-{index}", config.name),
                addr: listener.local_addr()?,
                config: Arc::clone(&config),
                in_flight: AtomicUsize::new(0),
                served: AtomicUsize::new(0),
                recording: AtomicBool::new(config.record_requests),
                seen: Mutex::new(Vec::new()),
                accepting: Mutex::new(None),
                generation: watch::Sender::new(0),
            });
            let accepting = tokio::spawn(serve(listener, Arc::clone(&replica)));
            *replica.accepting.lock().expect("accept loop") = Some(accepting);
            replicas.push(replica);
        }
        Ok(Self { config, replicas })
    }

    /// Binds `count` listeners on `host`, from `first_port` up (0: any free ports), and starts.
    pub async fn bind(
        config: PoolConfig,
        host: &str,
        first_port: u16,
        count: usize,
    ) -> std::io::Result<Self> {
        let mut listeners = Vec::new();
        for index in 0..count {
            let port = if first_port == 0 {
                0
            } else {
                first_port + index as u16
            };
            listeners.push(TcpListener::bind((host, port)).await?);
        }
        Self::start(config, listeners)
    }

    /// Turns the request log of every replica on or off (a soak must not keep its traffic).
    pub fn set_recording(&self, on: bool) {
        for replica in &self.replicas {
            replica.recording.store(on, Ordering::SeqCst);
        }
    }

    /// Every request any replica of the pool received.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.replicas.iter().flat_map(|r| r.seen()).collect()
    }
}

async fn serve(listener: TcpListener, replica: Arc<Replica>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let replica = Arc::clone(&replica);
        let mut down = replica.generation.subscribe();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let replica = Arc::clone(&replica);
                async move {
                    let fault = request
                        .headers()
                        .get(FAULT_HEADER)
                        .is_some_and(|v| v == "reset");
                    let response = handle(request, replica).await;
                    // An error from the service makes hyper drop the connection unanswered.
                    if fault {
                        Err(ResetConnection)
                    } else {
                        Ok(response)
                    }
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // A client that goes away mid-request is not the server's error; a replica that
            // goes down drops the connection.
            tokio::select! {
                _ = builder.serve_connection(TokioIo::new(stream), service) => {}
                _ = down.changed() => {}
            }
        });
    }
}

/// The injected `reset` fault.
#[derive(Debug)]
struct ResetConnection;

impl std::fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by fault injection")
    }
}

impl std::error::Error for ResetConnection {}

type ResponseBody = BoxBody<Bytes, Infallible>;

/// Counts a request as in flight until dropped (at the end of a streamed answer too).
struct InFlight(Arc<Replica>);

impl InFlight {
    fn new(replica: &Arc<Replica>) -> Self {
        replica.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(replica))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(request: Request<Incoming>, replica: Arc<Replica>) -> Response<ResponseBody> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
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
    if replica.recording.load(Ordering::SeqCst) {
        replica.seen.lock().expect("request log").push(SeenRequest {
            replica: replica.id.clone(),
            method: method.to_string(),
            path: path.clone(),
            headers,
            body: body.clone(),
        });
    }
    let _in_flight = InFlight::new(&replica);
    match (method, path.as_str()) {
        (Method::GET, "/v1/models") => models(&replica),
        (Method::GET, "/metrics") => metrics(&replica),
        (Method::POST, "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings") => {
            let request: Value = match serde_json::from_slice(&body) {
                Ok(Value::Object(object)) => Value::Object(object),
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "body must be a JSON object",
                        "bad_request",
                    )
                }
            };
            let Some(model) = request["model"].as_str().map(str::to_owned) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "'model' is required",
                    "missing_model",
                );
            };
            if !replica.config.models.contains(&model) {
                return error(
                    StatusCode::NOT_FOUND,
                    &format!("The model `{model}` does not exist."),
                    "model_not_found",
                );
            }
            match path.as_str() {
                "/v1/embeddings" => embeddings(&replica, &model, &request),
                _ => completion(&replica, &model, &request, path == "/v1/chat/completions").await,
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            &format!("no route for {path}"),
            "not_found",
        ),
    }
}

fn full(
    status: StatusCode,
    content_type: &str,
    body: Bytes,
    replica: &Replica,
) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(body).boxed());
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

fn error(status: StatusCode, message: &str, code: &str) -> Response<ResponseBody> {
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}});
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn json_response(replica: &Replica, body: &Value) -> Response<ResponseBody> {
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

fn metrics(replica: &Replica) -> Response<ResponseBody> {
    // This request is itself in flight; the gauges describe the others.
    let in_flight = replica.in_flight.load(Ordering::SeqCst).saturating_sub(1);
    let running = in_flight.min(replica.config.max_num_seqs);
    let waiting = in_flight - running;
    let usage = running as f64 / replica.config.max_num_seqs as f64;
    let mut text = String::new();
    for (name, help, value) in [
        (
            "vllm:num_requests_running",
            "Number of requests currently running.",
            running as f64,
        ),
        (
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            waiting as f64,
        ),
        (
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            usage,
        ),
    ] {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for model in &replica.config.models {
            text.push_str(&format!("{name}{{model_name=\"{model}\"}} {value}\n"));
        }
    }
    full(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        Bytes::from(text),
        replica,
    )
}

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

async fn completion(
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

fn embeddings(replica: &Replica, model: &str, request: &Value) -> Response<ResponseBody> {
    let inputs: Vec<String> = match &request["input"] {
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
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}, "served_by": replica.id,
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
    fn chat_answers_echo_the_last_message_text() {
        let request = json!({"messages": [
            {"role": "user", "content": "first"},
            {"role": "user", "content": [{"type": "text", "text": "Say"}, {"type": "image_url"}, {"type": "text", "text": "this"}]}
        ]});
        assert_eq!(prompt_text(&request, true), "Say this");
        assert_eq!(prompt_text(&json!({"prompt": "a b"}), false), "a b");
        assert_eq!(prompt_text(&json!({}), true), "");
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embedding("hello");
        assert_eq!(a, embedding("hello"));
        assert_ne!(a, embedding("hellp"));
        let norm: f64 = a.iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-9);
    }

    #[tokio::test]
    async fn metrics_report_requests_in_flight_as_vllm_gauges() {
        let mut config = PoolConfig::new("p", &["m"]);
        config.max_num_seqs = 2;
        let pool = Pool::bind(config, "127.0.0.1", 0, 1).await.unwrap();
        let replica = &pool.replicas[0];
        let held: Vec<InFlight> = (0..4).map(|_| InFlight::new(replica)).collect();
        // The metrics request itself is in flight while it is answered.
        let _scrape = InFlight::new(replica);
        let body = metrics(replica)
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            text.contains("vllm:num_requests_running{model_name=\"m\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("vllm:num_requests_waiting{model_name=\"m\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("vllm:kv_cache_usage_perc{model_name=\"m\"} 1\n"),
            "{text}"
        );
        drop(held);
        assert_eq!(replica.in_flight.load(Ordering::SeqCst), 1);
    }
}
