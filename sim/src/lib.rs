//! An OpenAI-compatible inference server standing in for vLLM replicas and plain model
//! backends where the real simulator, llm-d-inference-sim (which the local gateway and the
//! Envoy Gateway tests also run), cannot do the job.
//!
//! What only this one does: it records every request it receives (headers and body bytes), so
//! a test can prove what reached a backend and what did not; it answers badly on request
//! ([`faults`]: a dropped connection, wrong-typed or absurd usage, non-JSON, a cut stream); it
//! names the replica in `x-sim-replica` and `served_by` whatever the deployment; it runs many
//! replicas in one process, cheap enough for the benchmark's zero-latency backend. Each replica
//! answers `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/responses`
//! (OpenAI's Responses API), `/v1/messages` (Anthropic's), `/v1/audio/transcriptions` and
//! `/v1/audio/translations` (`multipart/form-data`, read with multer), `/v1/models`, `/health`
//! and `/metrics` (vLLM's load gauges, or what a test sets, with a count of the polls:
//! [`metrics`]), streams with SSE when asked (each API's own events,
//! with usage), and echoes the model it received. [`picker`] is a stand-in endpoint picker for
//! the Envoy Gateway-shaped data plane (the real one needs a Kubernetes API server).

mod api;
pub mod audio;
pub mod body_router;
mod completion;
pub mod faults;
mod generate;
mod messages;
pub mod metrics;
pub mod picker;
mod responses;
mod stream;

use api::handle;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
pub use metrics::Metrics;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Response header naming the replica that served a request.
pub const REPLICA_HEADER: &str = "x-sim-replica";
/// Request header a test sends to inject a fault ([`faults::Fault`]): e.g. `reset` closes
/// the connection without an answer once the request is in, as a crashing server would.
pub const FAULT_HEADER: &str = "x-sim-fault";
/// Request header asking the answer to report this many prompt tokens as cached.
pub const CACHED_TOKENS_HEADER: &str = "x-sim-cached-tokens";

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
    /// The bytes of the answer, as sent so far.
    sent: Arc<Mutex<Vec<u8>>>,
}

impl SeenRequest {
    /// Every byte of the answer sent so far (all of it once the client has it).
    pub fn sent(&self) -> Vec<u8> {
        self.sent.lock().expect("sent bytes").clone()
    }

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
    /// What `/metrics` reports.
    metrics: Mutex<Metrics>,
    metrics_polls: AtomicUsize,
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
                metrics: Mutex::new(Metrics::Live),
                metrics_polls: AtomicUsize::new(0),
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
