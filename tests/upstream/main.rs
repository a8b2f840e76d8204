//! The real upstream programs: Envoy Gateway v1.9 running the objects of k8s/ with the filter
//! pulled from an OCI registry on loopback, egctl translating k8s/, and llm-d-inference-sim
//! serving the scenario's pools, in Envoy Gateway and behind the local gateway's envoy.yaml.
//!
//! The Envoy Gateway cases share one running gateway (started on first use, as
//! [`Deployment`]); a case that changes it puts it back. `./build.sh test` runs them; they
//! need the Go programs it builds (ENVOY_GATEWAY_BIN, EGCTL_BIN, LLM_D_SIM_BIN).

mod envoy_gateway;
mod llm_d;
mod translate;

use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use testkit::client::{request, send, Frames, Protocol, Reply, Request};
use testkit::envoy_gateway::{standalone_resources, EnvoyGateway, Inputs};
use testkit::llm_d::{LlmdPool, POD_HEADER};
use testkit::process::free_port;
use testkit::registry::Registry;
use testkit::scenario::{backend_of, Backends, BACKENDS, PLAIN, TAG_HEADER};
use testkit::{ensure, Outcome};

/// k8s/ deployed on Envoy Gateway standalone: the pools on llm-d-inference-sim, the plain
/// backend on llm-sim (which records what reached it), the filter from the registry.
pub struct Deployment {
    pub runtime: tokio::runtime::Runtime,
    pub pools: Vec<LlmdPool>,
    /// llm-sim behind the plain backend.
    pub plain: Backends,
    /// The resources Envoy Gateway runs, by file, as generated from k8s/.
    pub resources: BTreeMap<String, Vec<Value>>,
    pub gateway: EnvoyGateway,
    _registry: Registry,
    next_tag: AtomicU64,
}

/// A chat request for `model`.
pub use testkit::scenario::chat_body;

impl testkit::cases::World for Deployment {
    fn start() -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("model-router-eg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let registry = Registry::start()?;
        let reference = format!("{}/llm-gateway/model-router:e2e", registry.addr);
        let digest = push(&reference)?;
        let mut pools = Vec::new();
        let mut endpoints = BTreeMap::new();
        for backend in BACKENDS.iter().filter(|b| b.is_pool()) {
            let ports: Vec<u16> = (0..backend.replicas).map(|_| free_port()).collect();
            let pool = LlmdPool::start(
                &testkit::process::required_file("LLM_D_SIM_BIN"),
                backend,
                ports,
            )?;
            endpoints.insert(
                backend.name.to_owned(),
                pool.replicas.iter().map(|r| r.addr).collect(),
            );
            pools.push(pool);
        }
        let plain = runtime
            .block_on(Backends::start())
            .map_err(|e| e.to_string())?;
        endpoints.insert(
            backend_of(PLAIN).name.to_owned(),
            plain
                .pool_of(PLAIN)
                .replicas
                .iter()
                .map(|r| r.addr)
                .collect(),
        );
        EnvoyGateway::certgen(&dir)?;
        let listener_port = free_port();
        let resources = standalone_resources(&Inputs {
            listener_port,
            backends: &endpoints,
            image: (&reference, &digest),
            certs: &EnvoyGateway::certs(&dir),
        })?;
        // A filter that cannot read bodies holds requests: give up on each after 5 s.
        let probe = |listener: SocketAddr| {
            let request = send(
                listener,
                Protocol::Http1,
                chat(&chat_body(PLAIN).to_string(), &[]),
            );
            runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), request).await })
                .is_ok_and(|reply| reply.is_ok_and(|reply| reply.status == 200))
        };
        let gateway = EnvoyGateway::start(&dir, &resources, listener_port, probe)?;
        Ok(Self {
            runtime,
            pools,
            plain,
            resources,
            gateway,
            _registry: registry,
            next_tag: AtomicU64::new(0),
        })
    }

    fn context(&self) -> String {
        format!(
            "Envoy Gateway log (last lines):\n{}",
            self.gateway.log_tail()
        )
    }
}

impl Deployment {
    /// POSTs `body` to /v1/chat/completions with a fresh tag; the reply and the tag.
    pub fn post(&self, body: &str) -> Result<(Reply, String), String> {
        let tag = format!("eg{}", self.next_tag.fetch_add(1, Ordering::SeqCst));
        let reply = self.runtime.block_on(send(
            self.gateway.listener,
            Protocol::Http1,
            chat(body, &[(TAG_HEADER, &tag)]),
        ))?;
        Ok((reply, tag))
    }

    /// Checks that `reply` is `model`'s answer from one of its own replicas, and that the
    /// backend saw the routing header the body decided.
    pub fn expect_served(&self, reply: &Reply, tag: &str, model: &str) -> Outcome {
        reply.expect_answer_of(model)?;
        if model == PLAIN {
            let seen = self.plain.saw(tag);
            ensure!(
                seen.len() == 1,
                "{} plain backend requests carry {tag}",
                seen.len()
            );
            let header = seen[0].header_values(testkit::scenario::ROUTING_HEADER);
            ensure!(
                header == [model],
                "the backend saw the routing header {header:?}"
            );
            return Ok(());
        }
        let pod = reply.header(POD_HEADER).unwrap_or_default();
        let pool = self
            .pools
            .iter()
            .find(|p| p.backend.model == model)
            .ok_or(format!("no pool serves {model}"))?;
        ensure!(
            pool.has(pod),
            "{model} served by {pod:?}, not by pool {}",
            pool.backend.name
        );
        Ok(())
    }

    /// Requests Envoy sent to any backend so far.
    pub fn upstream_requests(&self) -> Result<u64, String> {
        let admin = self.gateway.envoy_admin()?;
        let (_, body) = testkit::client::get(
            admin,
            "/stats?filter=^cluster\\..*\\.upstream_rq_total$&format=json",
        )?;
        let stats: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        Ok(stats["stats"]
            .as_array()
            .into_iter()
            .flatten()
            // wasm_cluster carries the module download, not traffic.
            .filter(|s| {
                !s["name"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("wasm_cluster")
            })
            .filter_map(|s| s["value"].as_u64())
            .sum())
    }
}

fn chat(body: &str, headers: &[(&str, &str)]) -> Request {
    let length = body.len().to_string();
    let mut all = vec![
        ("content-type", "application/json"),
        ("content-length", length.as_str()),
    ];
    all.extend_from_slice(headers);
    request(
        "POST",
        "/v1/chat/completions",
        &all,
        Frames::new([bytes::Bytes::from(body.to_owned())]),
    )
}

/// `./build.sh push REFERENCE`, as an operator publishes the filter: the pushed digest (hex).
fn push(reference: &str) -> Result<String, String> {
    let output = std::process::Command::new(testkit::envoy::root().join("build.sh"))
        .args(["push", reference])
        .output()
        .map_err(|e| format!("build.sh push: {e}"))?;
    ensure!(
        output.status.success(),
        "build.sh push failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("digest: sha256:"))
        .map(str::to_owned)
        .ok_or(format!("no digest in {text}"))
}

fn main() -> std::process::ExitCode {
    let standalone = translate::cases().into_iter().chain(llm_d::cases());
    testkit::cases::run(envoy_gateway::cases(), standalone.collect())
}
