//! What a policy is measured on: six llm-d-inference-sim replicas (KV-cache simulation,
//! per-token prefill latency) started afresh for each run, so that no policy inherits another's
//! caches, and Envoy with the filter in front of them, choosing the replica by one policy.

use std::net::SocketAddr;
use std::path::Path;
use testkit::envoy::Envoy;
use testkit::llm_d::LlmdReplica;
use testkit::prometheus::Scrape;

pub const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";
pub const REPLICAS: usize = 6;

/// How Envoy chooses the replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The filter's endpoint picker (override_host, least request as its fallback).
    Picker,
    LeastRequest,
    RoundRobin,
}

impl Policy {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Picker => "in-filter picker",
            Self::LeastRequest => "least request",
            Self::RoundRobin => "round robin",
        }
    }
}

/// The replicas' flags: the KV cache and its prefix hits simulated, prefill time per prompt
/// token (a prefix hit skips the cached tokens), five sequences at a time as vLLM's default.
/// A replica's KV cache (4,096 blocks of 16 tokens, 65,536 tokens: a small GPU's) holds about
/// 28 of the workload's 64 prompt prefixes: all of them fit in the six caches only when each
/// replica keeps to its own groups (or two copies of each, one per Envoy worker).
/// Random answers (testkit starts replicas in echo mode, whose streams echo the whole last
/// message whatever `max_tokens` says; a later flag wins).
const REPLICA_FLAGS: [&str; 18] = [
    "--mode",
    "random",
    "--enable-kvcache",
    "--latency-calculator",
    "per-token",
    "--prefill-overhead",
    "5ms",
    "--prefill-time-per-token",
    "200us",
    "--inter-token-latency",
    "5ms",
    "--max-num-seqs",
    "5",
    "--kv-cache-size",
    "4096",
    "--block-size",
    "16",
    "--seed=7",
];

/// Six fresh replicas on free ports.
pub fn start_replicas(binary: &Path) -> Result<Vec<LlmdReplica>, String> {
    (0..REPLICAS)
        .map(|i| LlmdReplica::start_on_free_port(binary, &format!("r{i}"), MODEL, &REPLICA_FLAGS))
        .collect()
}

/// The replicas' prefix-cache counters summed: (hit tokens, queried tokens).
pub fn prefix_cache(replicas: &[LlmdReplica]) -> Result<(f64, f64), String> {
    let mut totals = (0.0, 0.0);
    for replica in replicas {
        let (status, text) = testkit::client::get(replica.addr, "/metrics")?;
        if status != 200 {
            return Err(format!("{} /metrics answered {status}", replica.name));
        }
        let scrape = Scrape::parse(&text)?;
        totals.0 += scrape.sum("vllm:prefix_cache_hits", &[]);
        totals.1 += scrape.sum("vllm:prefix_cache_queries", &[]);
    }
    Ok(totals)
}

/// Envoy (two workers) with the filter routing `MODEL` to the replicas by `policy`.
pub fn start_envoy(policy: Policy, wasm: &Path, replicas: &[LlmdReplica]) -> Result<Envoy, String> {
    Envoy::launch(&envoy_config(policy, wasm, replicas, ""))
}

/// The Envoy configuration of [`start_envoy`]; `pool_extra` adds fields to the picker's pool.
pub fn envoy_config(
    policy: Policy,
    wasm: &Path,
    replicas: &[LlmdReplica],
    pool_extra: &str,
) -> String {
    let endpoints: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    let listed: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    let plugin_config = match policy {
        Policy::Picker => format!(
            r#"{{"header": "x-ai-eg-model", "pools": [{{"name": "pool", "models": ["{MODEL}"], "endpoints": [{}]{pool_extra}}}]}}"#,
            listed.join(", ")
        ),
        _ => r#"{"header": "x-ai-eg-model"}"#.to_owned(),
    };
    let filter = testkit::wasm_filter::http_filter(wasm, &plugin_config);
    let lb = match policy {
        Policy::Picker => PICKED_ELSE_LEAST_REQUEST,
        Policy::LeastRequest => "    lb_policy: LEAST_REQUEST\n",
        Policy::RoundRobin => "    lb_policy: ROUND_ROBIN\n",
    };
    let hosts: String = endpoints
        .iter()
        .map(|a| {
            format!(
                "        - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}\n",
                a.ip(),
                a.port()
            )
        })
        .collect();
    let head = testkit::envoy::listener_head("gateway", None, &filter);
    let mut config = format!(
        r#"{head}              - match: {{ prefix: /, headers: [{{ name: x-ai-eg-model, string_match: {{ exact: "{MODEL}" }} }}] }}
                route: {{ cluster: pool, timeout: 120s, retry_policy: {{ retry_on: connect-failure, num_retries: 2 }} }}
  clusters:
  - name: pool
    type: STATIC
    connect_timeout: 2s
{lb}    load_assignment:
      cluster_name: pool
      endpoints:
      - lb_endpoints:
{hosts}"#
    );
    if policy == Policy::Picker {
        config.push_str(METRICS_CLUSTER);
        config.push_str(&singleton(wasm));
    }
    config
}

const PICKED_ELSE_LEAST_REQUEST: &str = r#"    load_balancing_policy:
      policies:
      - typed_extension_config:
          name: envoy.load_balancing_policies.override_host
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost
            override_host_sources: [{ header: x-gateway-destination-endpoint }]
            fallback_policy:
              policies:
              - typed_extension_config:
                  name: envoy.load_balancing_policies.least_request
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest
"#;

const METRICS_CLUSTER: &str = r#"  - name: model-router-metrics
    type: ORIGINAL_DST
    connect_timeout: 1s
    lb_policy: CLUSTER_PROVIDED
    original_dst_lb_config: { use_http_header: true }
"#;

/// The picker's metrics singleton, as envoy.yaml runs it.
fn singleton(wasm: &Path) -> String {
    format!(
        r#"bootstrap_extensions:
- name: envoy.bootstrap.wasm
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.wasm.v3.WasmService
    singleton: true
    config:
      name: model-router-metrics
      root_id: model-router-metrics
      vm_config:
        vm_id: model-router
        runtime: envoy.wasm.runtime.v8
        code: {{ local: {{ filename: "{}" }} }}
"#,
        wasm.display()
    )
}
