//! What crosses Envoy's shared data (process-wide, per `vm_id`) between the filter's workers
//! and the metrics singleton, serialized as JSON:
//! - the filter's workers publish the [`Targets`] (the pools' endpoints and how to read their
//!   metrics) under [`TARGETS_KEY`] when their configuration loads, so that the singleton
//!   needs no configuration of its own and follows filter updates;
//! - the singleton publishes the latest [`Snapshot`] of every endpoint's metrics under
//!   [`SNAPSHOT_KEY`]; each worker copies it into its own memory on its timer.

use super::config::Pool;
use serde::{Deserialize, Serialize};

pub const TARGETS_KEY: &str = "model_router.picker.targets";
pub const SNAPSHOT_KEY: &str = "model_router.picker.snapshot";

/// What the singleton polls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Targets {
    /// The ORIGINAL_DST cluster the polls go through.
    pub cluster: String,
    pub pools: Vec<Target>,
}

/// One pool's polling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub pool: String,
    pub endpoints: Vec<String>,
    pub path: String,
    /// Metric specs, as configured (`name{label=value}`).
    pub queue: String,
    pub kv_cache: String,
    pub refresh_ms: u64,
    /// A poll not answered by then has failed.
    pub timeout_ms: u64,
}

impl Targets {
    pub fn of(cluster: &str, pools: &[Pool]) -> Self {
        Self {
            cluster: cluster.to_owned(),
            pools: pools
                .iter()
                .map(|pool| Target {
                    pool: pool.name.clone(),
                    endpoints: pool.endpoints.clone(),
                    path: pool.metrics_path.clone(),
                    queue: pool.queue_metric.to_string(),
                    kv_cache: pool.kv_cache_metric.to_string(),
                    refresh_ms: pool.refresh_ms,
                    timeout_ms: pool.stale_after_ms,
                })
                .collect(),
        }
    }
}

/// The latest metrics of every polled endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub endpoints: Vec<Reading>,
    /// Bumped each time the singleton publishes new group hints ([`super::hints`]): a worker
    /// copies the 48 KiB table only when this changes.
    #[serde(default)]
    pub hints_version: u64,
}

/// One endpoint's latest metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub pool: String,
    pub endpoint: String,
    /// Host time of the last successful fetch, in ms since the Unix epoch (0: never).
    pub fetched_at_ms: u64,
    /// Whether the last fetch succeeded (a failed one makes the values untrusted at once).
    pub ok: bool,
    /// Waiting requests (the metric's value truncated, as GIE's `int(...)`).
    pub queue: u32,
    /// KV-cache usage, 0 to 1.
    pub kv_cache: f64,
}

impl Snapshot {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a snapshot serializes")
    }

    pub fn from_json(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_and_targets_round_trip() {
        let snapshot = Snapshot {
            endpoints: vec![Reading {
                pool: "p".into(),
                endpoint: "127.0.0.1:8000".into(),
                fetched_at_ms: 1_700_000_000_123,
                ok: true,
                queue: 4,
                kv_cache: 0.5,
            }],
            hints_version: 3,
        };
        assert_eq!(Snapshot::from_json(&snapshot.to_json()), Some(snapshot));
        assert_eq!(Snapshot::from_json(b"not json"), None);
        let targets = Targets {
            cluster: "c".into(),
            pools: vec![Target {
                pool: "p".into(),
                endpoints: vec!["127.0.0.1:8000".into()],
                path: "/metrics".into(),
                queue: "q".into(),
                kv_cache: "k{a=b}".into(),
                refresh_ms: 50,
                timeout_ms: 1000,
            }],
        };
        let json = serde_json::to_vec(&targets).unwrap();
        assert_eq!(serde_json::from_slice::<Targets>(&json).unwrap(), targets);
    }
}
