//! End to end: the built filter in Envoy 1.40, running the repository's envoy.yaml in front
//! of simulated vLLM pools and a plain backend, driven with real HTTP/1.1 and h2c traffic.
//!
//! One file per behaviour; each case is a function named after what it proves, listed once
//! in its file's `cases!` (testkit::cases). Cases share one running gateway (started on first use) and never
//! depend on one another; a case that changes the gateway starts its own Envoy. Run with
//! `./build.sh test`; a substring selects cases: `cargo test --test gateway -- refus`.

mod bad_responses;
mod catalogue;
mod envoy_gateway_shaped;
mod gen_ai;
mod hardening;
mod include_usage;
mod llm_d;
mod multipart;
mod openai_sdk;
mod picker;
mod refusals;
mod reload;
mod routing;
mod sdk;
mod soak;
mod token_budget;
mod usage;

use bytes::Bytes;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use testkit::client::{request, send, Frames, Protocol, Reply};
use testkit::envoy::{Envoy, LocalGateway};
use testkit::scenario::{Backends, ROUTING_HEADER, TAG_HEADER};
use testkit::{ensure, Outcome};

/// The running gateway every case talks to: envoy.yaml in Envoy, with the scenario's backends.
pub struct World {
    pub runtime: tokio::runtime::Runtime,
    pub backends: Backends,
    pub envoy: Envoy,
    next_tag: AtomicU64,
}

impl testkit::cases::World for World {
    fn start() -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let backends = runtime
            .block_on(Backends::start())
            .map_err(|e| e.to_string())?;
        let envoy = {
            let _guard = runtime.enter();
            LocalGateway::new(&backends)?.start()?
        };
        Ok(Self {
            runtime,
            backends,
            envoy,
            next_tag: AtomicU64::new(0),
        })
    }

    fn context(&self) -> String {
        format!("Envoy stderr (last lines):\n{}", self.envoy.stderr_tail())
    }
}

impl World {
    /// A tag no other request carries.
    pub fn tag(&self) -> String {
        format!("t{}", self.next_tag.fetch_add(1, Ordering::SeqCst))
    }

    /// Sends `body` in `frames` pieces to the shared gateway with a fresh tag; returns the
    /// reply and the tag.
    pub fn exchange(
        &self,
        protocol: Protocol,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        frames: Vec<Bytes>,
    ) -> Result<(Reply, String), String> {
        self.exchange_at(self.envoy.listener, protocol, method, path, headers, frames)
    }

    /// [`World::exchange`] with another gateway.
    pub fn exchange_at(
        &self,
        listener: SocketAddr,
        protocol: Protocol,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        frames: Vec<Bytes>,
    ) -> Result<(Reply, String), String> {
        let tag = self.tag();
        let mut all = vec![(TAG_HEADER, tag.as_str())];
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        {
            all.push(("content-type", "application/json"));
        }
        all.extend_from_slice(headers);
        let request = request(method, path, &all, Frames::new(frames));
        let reply = self.runtime.block_on(send(listener, protocol, request))?;
        Ok((reply, tag))
    }

    /// POSTs `body` over HTTP/1.1 with its content-length.
    pub fn post(
        &self,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<(Reply, String), String> {
        let length = body.len().to_string();
        let mut headers = headers.to_vec();
        headers.push(("content-length", &length));
        self.exchange(
            Protocol::Http1,
            "POST",
            path,
            &headers,
            vec![Bytes::copy_from_slice(body)],
        )
    }

    pub fn chat(&self, body: &Value) -> Result<(Reply, String), String> {
        self.post("/v1/chat/completions", body.to_string().as_bytes(), &[])
    }

    /// POSTs `body` to another gateway's /v1/chat/completions over HTTP/1.1.
    pub fn chat_at(&self, listener: SocketAddr, body: &[u8]) -> Result<(Reply, String), String> {
        self.exchange_at(
            listener,
            Protocol::Http1,
            "POST",
            "/v1/chat/completions",
            &[],
            vec![Bytes::copy_from_slice(body)],
        )
    }

    /// Checks that the reply came from a replica of `model`'s pool, which saw exactly one
    /// routing header equal to `model`, and that no other backend saw the request.
    pub fn expect_routed(&self, reply: &Reply, tag: &str, model: &str) -> Outcome {
        ensure!(
            reply.status == 200,
            "status {} for {model}: {}",
            reply.status,
            reply.text()
        );
        let pool = self.backends.pool_of(model);
        let replica = reply.header(llm_sim::REPLICA_HEADER).unwrap_or_default();
        ensure!(
            pool.replicas.iter().any(|r| r.id == replica),
            "{model} served by {replica:?}, not by pool {}",
            pool.config.name
        );
        let seen = self.backends.saw(tag);
        ensure!(
            seen.len() == 1,
            "{} backend requests carry tag {tag}",
            seen.len()
        );
        let headers = seen[0].header_values(ROUTING_HEADER);
        ensure!(
            headers == [model],
            "backend saw {ROUTING_HEADER} {headers:?}, want [{model:?}]"
        );
        Ok(())
    }

    /// Whether `reply` is a 200 from a replica of `model`'s pool that echoes `model`.
    pub fn answered_by_its_pool(&self, model: &str, reply: &Reply) -> bool {
        let pool = self.backends.pool_of(model);
        let replica = reply.header(llm_sim::REPLICA_HEADER).unwrap_or_default();
        reply.status == 200
            && pool.replicas.iter().any(|r| r.id == replica)
            && reply.json().is_ok_and(|body| body["model"] == model)
    }

    /// The one request a backend saw carrying `tag`.
    pub fn seen_once(&self, tag: &str) -> Result<llm_sim::SeenRequest, String> {
        let mut seen = self.backends.saw(tag);
        ensure!(
            seen.len() == 1,
            "{} backend requests carry tag {tag}",
            seen.len()
        );
        Ok(seen.remove(0))
    }

    /// Checks an OpenAI-style client error that no backend saw.
    pub fn expect_refused(&self, reply: &Reply, tag: &str, status: u16, code: &str) -> Outcome {
        testkit::openai::expect_error(reply, status, "invalid_request_error", Some(code))?;
        let seen = self.backends.saw(tag);
        ensure!(
            seen.is_empty(),
            "a refused request reached {}",
            seen[0].replica
        );
        Ok(())
    }
}

pub use testkit::scenario::chat_body;

fn main() -> std::process::ExitCode {
    let cases = [
        routing::cases(),
        catalogue::cases(),
        multipart::cases(),
        openai_sdk::cases(),
        refusals::cases(),
        hardening::cases(),
        reload::cases(),
        envoy_gateway_shaped::cases(),
        soak::cases(),
        usage::cases(),
        include_usage::cases(),
        bad_responses::cases(),
        sdk::cases(),
        llm_d::cases(),
        token_budget::cases(),
        picker::cases(),
    ];
    testkit::cases::run(cases.into_iter().flatten().collect(), vec![])
}
