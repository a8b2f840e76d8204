//! The endpoint picker's part of the plugin configuration: the pools (`pools`) and what applies
//! to all of them (`picker`), validated once. Defaults reproduce GIE v1.0's endpoint picker with
//! the seed's plugin configuration (queue 2, kv-cache 2, prefix 3; 64-byte blocks, 256 blocks,
//! 31,250 hashes per endpoint; metrics every 50 ms).

use super::metrics_text::MetricSpec;
use super::prefix::MAX_ENDPOINTS;
use crate::config::check_header_name;
use crate::response::labels::check_label;
use serde::Deserialize;
use std::net::SocketAddr;

pub const DEFAULT_DESTINATION_HEADER: &str = "x-gateway-destination-endpoint";
pub const DEFAULT_METRICS_CLUSTER: &str = "model-router-metrics";
pub const DEFAULT_OBJECTIVE_HEADER: &str = "x-gateway-inference-objective";

/// One InferencePool-like set of replicas, as configured.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// The pool's name, in metric labels and logs.
    pub name: String,
    /// The models routed to it (catalogue names when there is a catalogue).
    pub models: Vec<String>,
    /// The replicas, `ip:port` exactly as the pool's Envoy cluster lists its hosts.
    pub endpoints: Vec<String>,
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
    #[serde(default)]
    pub metrics: MetricNames,
    #[serde(default)]
    pub weights: Weights,
    /// How often each endpoint's metrics are fetched.
    #[serde(default = "default_refresh_ms")]
    pub refresh_ms: u64,
    /// Metrics older than this (or whose last fetch failed) are not trusted: the endpoint is
    /// scored after every endpoint with fresh metrics.
    #[serde(default = "default_stale_after_ms")]
    pub stale_after_ms: u64,
    #[serde(default)]
    pub prefix: PrefixConfig,
    /// Count this worker's picks since an endpoint's metrics were fetched as waiting there
    /// ([`super::recent`]); false is GIE v1.0's queue scorer exactly, which herds requests
    /// arriving within one refresh period onto one endpoint.
    #[serde(default = "default_count_unseen_picks")]
    pub count_unseen_picks: bool,
}

fn default_metrics_path() -> String {
    "/metrics".to_owned()
}
fn default_count_unseen_picks() -> bool {
    true
}
fn default_refresh_ms() -> u64 {
    50
}
fn default_stale_after_ms() -> u64 {
    1000
}

/// The Prometheus series the scorers read, GIE's metric spec syntax (`name` or
/// `name{label=value,...}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricNames {
    /// Waiting requests (GIE's `--total-queued-requests-metric`).
    pub queue: String,
    /// KV-cache usage from 0 to 1 (GIE's `--kv-cache-usage-percentage-metric`; vLLM before
    /// 0.10 called it `vllm:gpu_cache_usage_perc`).
    pub kv_cache: String,
}

impl Default for MetricNames {
    fn default() -> Self {
        Self {
            queue: "vllm:num_requests_waiting".to_owned(),
            kv_cache: "vllm:kv_cache_usage_perc".to_owned(),
        }
    }
}

/// Scorer weights: the total score is the sum of each score (0 to 1) times its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    pub queue: u32,
    pub kv_cache: u32,
    pub prefix: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            queue: 2,
            kv_cache: 2,
            prefix: 3,
        }
    }
}

/// GIE's default block size, in bytes of prompt.
pub const DEFAULT_BLOCK_BYTES: usize = 64;

/// The prefix-cache scorer's parameters (GIE's `prefix-cache-scorer` plugin parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrefixConfig {
    /// Bytes of prompt per hashed block.
    pub block_bytes: usize,
    /// Blocks hashed at most: the rest of the prompt is not looked at.
    pub max_blocks: usize,
    /// Hashes remembered per endpoint.
    pub lru_capacity: usize,
}

impl Default for PrefixConfig {
    fn default() -> Self {
        Self {
            block_bytes: DEFAULT_BLOCK_BYTES,
            max_blocks: 256,
            lru_capacity: 31_250,
        }
    }
}

impl PrefixConfig {
    /// Bytes of prompt template ever needed.
    pub fn prompt_bytes(&self) -> usize {
        self.block_bytes * self.max_blocks
    }
}

/// What applies to every pool.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PickerConfig {
    /// The request header carrying the pick (and the endpoints to retry on, in order), read by
    /// the pool cluster's `override_host` load balancing policy. A client's copy is removed.
    pub destination_header: String,
    /// The ORIGINAL_DST cluster (`use_http_header`) metrics are fetched through.
    pub metrics_cluster: String,
    /// Saturation shedding (off when absent).
    pub shedding: Option<Shedding>,
}

impl Default for PickerConfig {
    fn default() -> Self {
        Self {
            destination_header: DEFAULT_DESTINATION_HEADER.to_owned(),
            metrics_cluster: DEFAULT_METRICS_CLUSTER.to_owned(),
            shedding: None,
        }
    }
}

/// GIE's saturation detector and its admission check: a sheddable request to a saturated pool
/// (no endpoint with fresh metrics, a queue of at most `queue_threshold` and a KV cache at most
/// `kv_cache_threshold` full) is refused with 429.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shedding {
    /// The InferenceObjectives with a negative priority: a request naming one in
    /// `objective_header` may be shed.
    pub sheddable_objectives: Vec<String>,
    #[serde(default = "default_objective_header")]
    pub objective_header: String,
    #[serde(default = "default_queue_threshold")]
    pub queue_threshold: u32,
    #[serde(default = "default_kv_cache_threshold")]
    pub kv_cache_threshold: f64,
    /// Metrics older than this do not count as capacity.
    #[serde(default = "default_shedding_stale_after_ms")]
    pub stale_after_ms: u64,
}

fn default_objective_header() -> String {
    DEFAULT_OBJECTIVE_HEADER.to_owned()
}
fn default_queue_threshold() -> u32 {
    5
}
fn default_kv_cache_threshold() -> f64 {
    0.8
}
fn default_shedding_stale_after_ms() -> u64 {
    200
}

/// A validated pool: endpoints parsed, metric specs parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub name: String,
    pub models: Vec<String>,
    /// Canonical `ip:port` (as Envoy names hosts).
    pub endpoints: Vec<String>,
    pub metrics_path: String,
    pub queue_metric: MetricSpec,
    pub kv_cache_metric: MetricSpec,
    pub weights: Weights,
    pub refresh_ms: u64,
    pub stale_after_ms: u64,
    pub prefix: PrefixConfig,
    pub count_unseen_picks: bool,
}

/// A configuration error: the field (`pools[0].endpoints[2]`) and the reason.
pub type FieldError = (String, String);

/// Validates the pools; `check_model` says whether a model may be routed to a pool (a
/// catalogue name, when there is a catalogue) or why not.
pub fn validate_pools(
    pools: Vec<PoolConfig>,
    check_model: impl Fn(&str) -> Result<(), String>,
) -> Result<Vec<Pool>, FieldError> {
    let mut validated: Vec<Pool> = Vec::with_capacity(pools.len());
    for (p, pool) in pools.into_iter().enumerate() {
        let pool = validate_pool(pool, &validated, &check_model)
            .map_err(|(field, reason)| (format!("pools[{p}].{field}"), reason))?;
        validated.push(pool);
    }
    Ok(validated)
}

/// One pool, against those before it; errors name the field within the pool.
fn validate_pool(
    pool: PoolConfig,
    before: &[Pool],
    check_model: impl Fn(&str) -> Result<(), String>,
) -> Result<Pool, FieldError> {
    let fail = |field: &str, reason: String| Err((field.to_owned(), reason));
    if let Err(reason) = check_label(&pool.name) {
        return fail(
            "name",
            format!("{:?} is not usable as a metric label: {reason}", pool.name),
        );
    }
    if let Some(other) = before.iter().position(|other| other.name == pool.name) {
        return fail(
            "name",
            format!("{:?} already names pools[{other}]", pool.name),
        );
    }
    if pool.models.is_empty() {
        return fail("models", "must list at least one model".into());
    }
    for (m, model) in pool.models.iter().enumerate() {
        let field = format!("models[{m}]");
        if let Err(reason) = check_model(model) {
            return fail(&field, reason);
        }
        if pool.models[..m].contains(model) {
            return fail(&field, format!("{model:?} is listed twice"));
        }
        if let Some(other) = before.iter().position(|p| p.models.contains(model)) {
            return fail(
                &field,
                format!("{model:?} is already routed to pools[{other}]"),
            );
        }
    }
    if pool.endpoints.is_empty() || pool.endpoints.len() > MAX_ENDPOINTS {
        return fail(
            "endpoints",
            format!(
                "must list 1 to {MAX_ENDPOINTS} endpoints, got {}",
                pool.endpoints.len()
            ),
        );
    }
    let mut endpoints: Vec<String> = Vec::new();
    for (e, endpoint) in pool.endpoints.iter().enumerate() {
        let field = format!("endpoints[{e}]");
        let Ok(address) = endpoint.parse::<SocketAddr>() else {
            return fail(
                &field,
                format!(
                    "{endpoint:?} is not ip:port (Envoy names a cluster's hosts by address, \
                     e.g. 10.0.0.7:8000 or [fd00::7]:8000)"
                ),
            );
        };
        let canonical = address.to_string();
        if endpoints.contains(&canonical) {
            return fail(&field, format!("{endpoint:?} is listed twice"));
        }
        endpoints.push(canonical);
    }
    if !pool.metrics_path.starts_with('/') || pool.metrics_path.contains(char::is_whitespace) {
        return fail(
            "metrics_path",
            format!("{:?} must be a path starting with '/'", pool.metrics_path),
        );
    }
    let queue_metric = match MetricSpec::parse(&pool.metrics.queue) {
        Ok(spec) => spec,
        Err(reason) => return fail("metrics.queue", reason),
    };
    let kv_cache_metric = match MetricSpec::parse(&pool.metrics.kv_cache) {
        Ok(spec) => spec,
        Err(reason) => return fail("metrics.kv_cache", reason),
    };
    let weights = pool.weights;
    for (field, weight) in [
        ("weights.queue", weights.queue),
        ("weights.kv_cache", weights.kv_cache),
        ("weights.prefix", weights.prefix),
    ] {
        if weight > 1000 {
            return fail(field, format!("must be between 0 and 1000, got {weight}"));
        }
    }
    if weights.queue + weights.kv_cache + weights.prefix == 0 {
        return fail("weights", "at least one weight must be above 0".into());
    }
    if !(10..=60_000).contains(&pool.refresh_ms) {
        return fail(
            "refresh_ms",
            format!("must be between 10 and 60000, got {}", pool.refresh_ms),
        );
    }
    if pool.stale_after_ms <= pool.refresh_ms || pool.stale_after_ms > 600_000 {
        return fail(
            "stale_after_ms",
            format!(
                "must be above refresh_ms ({}) and at most 600000, got {}",
                pool.refresh_ms, pool.stale_after_ms
            ),
        );
    }
    let prefix = pool.prefix;
    for (field, value, range) in [
        ("prefix.block_bytes", prefix.block_bytes, 8..=4096),
        ("prefix.max_blocks", prefix.max_blocks, 1..=1024),
        ("prefix.lru_capacity", prefix.lru_capacity, 1..=1_000_000),
    ] {
        if !range.contains(&value) {
            return fail(
                field,
                format!(
                    "must be between {} and {}, got {value}",
                    range.start(),
                    range.end()
                ),
            );
        }
    }
    if prefix.prompt_bytes() > 1 << 20 {
        return fail(
            "prefix",
            format!(
                "block_bytes x max_blocks must be at most 1 MiB, got {}",
                prefix.prompt_bytes()
            ),
        );
    }
    Ok(Pool {
        name: pool.name,
        models: pool.models,
        endpoints,
        metrics_path: pool.metrics_path,
        queue_metric,
        kv_cache_metric,
        weights,
        refresh_ms: pool.refresh_ms,
        stale_after_ms: pool.stale_after_ms,
        prefix,
        count_unseen_picks: pool.count_unseen_picks,
    })
}

/// Validates what applies to every pool.
pub fn validate_picker(picker: &PickerConfig) -> Result<(), FieldError> {
    let fail = |field: &str, reason: String| Err((format!("picker.{field}"), reason));
    if let Err(reason) = check_header_name(&picker.destination_header) {
        return fail("destination_header", reason);
    }
    if picker.metrics_cluster.is_empty() || picker.metrics_cluster.contains(char::is_whitespace) {
        return fail(
            "metrics_cluster",
            format!("{:?} must be a cluster name", picker.metrics_cluster),
        );
    }
    let Some(shedding) = &picker.shedding else {
        return Ok(());
    };
    if shedding.sheddable_objectives.is_empty()
        || shedding.sheddable_objectives.iter().any(String::is_empty)
    {
        return fail(
            "shedding.sheddable_objectives",
            "must list the objectives that may be shed, none empty".into(),
        );
    }
    if let Err(reason) = check_header_name(&shedding.objective_header) {
        return fail("shedding.objective_header", reason);
    }
    if !(shedding.kv_cache_threshold > 0.0 && shedding.kv_cache_threshold < 1.0) {
        return fail(
            "shedding.kv_cache_threshold",
            format!(
                "must be above 0 and below 1, got {}",
                shedding.kv_cache_threshold
            ),
        );
    }
    if !(1..=600_000).contains(&shedding.stale_after_ms) {
        return fail(
            "shedding.stale_after_ms",
            format!(
                "must be between 1 and 600000, got {}",
                shedding.stale_after_ms
            ),
        );
    }
    Ok(())
}
