//! Endpoint picking inside the filter: GIE v1.0's endpoint picker (queue, kv-cache and
//! prefix-cache scorers, max-score picker) for pools of model-server replicas, without a
//! cluster, an EPP deployment or a gRPC round trip.
//!
//! The parts, each plain Rust: [`config`] (pools, validated once), [`prompt`] (the chat
//! template, built from the strings the request scanner decodes, and its block hashes),
//! [`xxhash`], [`prefix`] (the per-endpoint LRU of block hashes), [`scorers`] (scores, the
//! picker, its randomness), [`recent`] (picks the metrics do not show yet), [`metrics_text`] (the model servers' Prometheus text), [`snapshot`]
//! (what crosses Envoy's shared data), [`poller`] (the metrics singleton's schedule), [`hints`]
//! (where the workers sent new prefix groups) and
//! [`Picker`] below (a worker's view of the pools, and the pick).
//!
//! How it runs in Envoy (`src/filter/`): a singleton VM (the `envoy.bootstrap.wasm` extension
//! with `singleton: true`, same module and `vm_id`, root id [`POLLER_ROOT_ID`]) polls every
//! endpoint once per period through an ORIGINAL_DST cluster and writes the [`Snapshot`] to
//! shared data; the filter's VM on each worker copies it on its own timer, so a request reads
//! a snapshot in its own memory: no host call, no network. The pick reaches Envoy as an
//! ordered `ip:port` list in [`config::PickerConfig::destination_header`], read by the pool
//! cluster's `override_host` load balancing policy (the first entry, then the next on each
//! retry; least request when there is no list).
//!
//! Shared data rather than a shared queue or per-worker polling: shared data holds the latest
//! value (a late worker reads the current snapshot, never a backlog), compare-and-swap is not
//! even needed with one writer, and polling from every worker would multiply the model
//! servers' scrapes by the number of workers. The prefix index stays per worker: looking it
//! up through shared data would cost host calls per block, and each worker's picks are what
//! it knows. So that a prefix group reaching several workers does not warm a replica per
//! worker, a worker that sends a new group somewhere tells the others through the singleton
//! ([`hints`]: a shared queue in, a table in shared data out, tens of milliseconds behind),
//! and ties are broken by rendezvous hashing of the request's first block ([`scorers`]), so
//! that workers meeting a group at the same moment with the same snapshot agree anyway.

pub mod config;
pub mod hints;
pub mod metrics_text;
pub mod poller;
pub mod prefix;
pub mod prompt;
pub mod recent;
pub mod scorers;
pub mod snapshot;
pub mod xxhash;

use config::{Pool, Shedding};
use hints::{GroupHints, NewGroup};
use prefix::PrefixIndex;
use recent::RecentPicks;
use scorers::{max_score_order, rendezvous, totals, Candidate, Rng};
pub use snapshot::Snapshot;

/// The root id of the metrics singleton (`envoy.bootstrap.wasm`, `singleton: true`).
pub const POLLER_ROOT_ID: &str = "model-router-metrics";

/// What a worker knows of one endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct EndpointState {
    queue: u32,
    kv_cache: f64,
    fetched_at_ms: u64,
    ok: bool,
    /// Age of the metrics at the last refresh, `None` when never fetched or not trusted.
    age_ms: Option<u64>,
}

/// One pool as a worker sees it.
#[derive(Debug)]
pub struct PoolPicker {
    pub pool: Pool,
    endpoints: Vec<EndpointState>,
    index: PrefixIndex,
    /// This worker's picks the metrics may not show yet.
    recent: RecentPicks,
    /// Scratch for the prefix matches, one per endpoint.
    matched: Vec<u32>,
}

/// The outcome of a pick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Endpoint indices, the pick first, then where to retry: endpoints with fresh metrics by
    /// score, then the others. Empty when no endpoint has fresh metrics: Envoy's fallback
    /// policy chooses.
    pub order: Vec<usize>,
    /// Blocks of the request the pick held, and the request's blocks (the prefix-match ratio).
    pub matched_blocks: u32,
    pub total_blocks: u32,
    /// Set when no endpoint held the prompt's first block and no hint named one: what to tell
    /// the other workers ([`hints`]).
    pub new_group: Option<NewGroup>,
}

/// Every pool, as one worker sees them. See the module docs.
#[derive(Debug)]
pub struct Picker {
    pub pools: Vec<PoolPicker>,
    pub shedding: Option<Shedding>,
    rng: Rng,
    /// Where the other workers sent new prefix groups.
    hints: GroupHints,
}

impl Picker {
    pub fn new(pools: Vec<Pool>, shedding: Option<Shedding>, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let pools = pools
            .into_iter()
            .map(|pool| {
                let endpoints = pool.endpoints.len();
                let index = PrefixIndex::new(endpoints, pool.prefix.lru_capacity, rng.next_u64());
                PoolPicker {
                    pool,
                    endpoints: vec![EndpointState::default(); endpoints],
                    index,
                    recent: RecentPicks::new(endpoints),
                    matched: vec![0; endpoints],
                }
            })
            .collect();
        Self {
            pools,
            shedding,
            rng,
            hints: GroupHints::default(),
        }
    }

    /// Takes the latest published table of where the workers sent new prefix groups; false
    /// when `bytes` is not one.
    pub fn take_hints(&mut self, bytes: &[u8]) -> bool {
        self.hints.take(bytes)
    }

    /// The pool serving `model` (a routing header value), if any.
    pub fn pool_of(&self, model: &[u8]) -> Option<usize> {
        self.pools
            .iter()
            .position(|p| p.pool.models.iter().any(|m| m.as_bytes() == model))
    }

    /// Takes the latest snapshot (when it changed) and ages every endpoint's metrics to
    /// `now_ms`: an endpoint is trusted while its last fetch succeeded within `stale_after_ms`.
    pub fn refresh(&mut self, snapshot: Option<&Snapshot>, now_ms: u64) {
        for pool in &mut self.pools {
            pool.recent.advance(now_ms);
            for (endpoint, state) in pool.pool.endpoints.iter().zip(&mut pool.endpoints) {
                if let Some(reading) = snapshot.and_then(|s| {
                    s.endpoints
                        .iter()
                        .find(|r| r.pool == pool.pool.name && &r.endpoint == endpoint)
                }) {
                    state.queue = reading.queue;
                    state.kv_cache = reading.kv_cache;
                    state.fetched_at_ms = reading.fetched_at_ms;
                    state.ok = reading.ok;
                }
                let age = now_ms.saturating_sub(state.fetched_at_ms);
                state.age_ms = (state.ok && state.fetched_at_ms > 0).then_some(age);
            }
        }
    }

    /// Whether a pick for `pool` would use metrics: some endpoint's are fresh.
    pub fn has_fresh(&self, pool: usize) -> bool {
        let pool = &self.pools[pool];
        pool.endpoints.iter().any(|e| pool.fresh(e))
    }

    /// GIE's saturation detector: no endpoint of `pool` has metrics younger than the
    /// shedding's `stale_after_ms`, a queue within `queue_threshold` and a KV cache within
    /// `kv_cache_threshold`. False without shedding configured.
    pub fn saturated(&self, pool: usize) -> bool {
        let Some(shedding) = &self.shedding else {
            return false;
        };
        !self.pools[pool].endpoints.iter().any(|e| {
            e.age_ms.is_some_and(|age| age <= shedding.stale_after_ms)
                && e.queue <= shedding.queue_threshold
                && e.kv_cache <= shedding.kv_cache_threshold
        })
    }

    /// Whether a request naming `objective` (the shedding header's value) may be shed.
    pub fn sheddable(&self, objective: &[u8]) -> bool {
        self.shedding.as_ref().is_some_and(|s| {
            s.sheddable_objectives
                .iter()
                .any(|o| o.as_bytes() == objective)
        })
    }

    /// Picks an endpoint of `pool` for a request whose prompt has these block `hashes`, and
    /// records the request's blocks as held by the pick.
    pub fn pick(&mut self, pool_index: usize, hashes: &[u64]) -> Decision {
        let rng = &mut self.rng;
        let pool = &mut self.pools[pool_index];
        let fresh: Vec<usize> = (0..pool.endpoints.len())
            .filter(|&e| pool.fresh(&pool.endpoints[e]))
            .collect();
        let total_blocks = hashes.len() as u32;
        if fresh.is_empty() {
            return Decision {
                order: Vec::new(),
                matched_blocks: 0,
                total_blocks,
                new_group: None,
            };
        }
        pool.index.match_prefix(hashes, &mut pool.matched);
        // A group this worker has not met: where another worker sent it, if the hint names
        // an endpoint with fresh metrics, is taken as holding the prompt.
        let mut new_group = None;
        if let Some(&first_block) = hashes.first() {
            if pool.matched.iter().all(|&m| m == 0) {
                match self.hints.lookup(pool_index as u16, first_block) {
                    Some(hinted) if fresh.contains(&hinted) => {
                        pool.index.add(hashes, hinted);
                        pool.index.match_prefix(hashes, &mut pool.matched);
                    }
                    _ => new_group = Some(first_block),
                }
            }
        }
        let candidates: Vec<Candidate> = fresh
            .iter()
            .map(|&e| Candidate {
                queue: pool.queue(e),
                kv_cache: pool.endpoints[e].kv_cache,
                matched_blocks: pool.matched[e],
            })
            .collect();
        let scores = totals(&candidates, hashes.len(), pool.pool.weights);
        let ties: Vec<u64> = fresh
            .iter()
            .map(|&e| {
                hashes
                    .first()
                    .map_or_else(|| rng.next_u64(), |&key| rendezvous(key, e))
            })
            .collect();
        let mut order: Vec<usize> = max_score_order(&scores, &ties)
            .into_iter()
            .map(|c| fresh[c])
            .collect();
        let mut stale: Vec<usize> = (0..pool.endpoints.len())
            .filter(|e| !fresh.contains(e))
            .collect();
        rng.shuffle(&mut stale);
        order.extend(stale);
        let chosen = order[0];
        pool.index.add(hashes, chosen);
        pool.recent.record(chosen);
        Decision {
            matched_blocks: pool.matched[chosen],
            order,
            total_blocks,
            new_group: new_group.map(|first_block| NewGroup {
                pool: pool_index as u16,
                endpoint: chosen as u16,
                first_block,
            }),
        }
    }

    /// The destination header's value for `decision`: `ip:port` entries, comma-separated.
    pub fn destination(&self, pool: usize, decision: &Decision) -> String {
        let endpoints = &self.pools[pool].pool.endpoints;
        let mut value = String::new();
        for (i, &e) in decision.order.iter().enumerate() {
            if i > 0 {
                value.push(',');
            }
            value.push_str(&endpoints[e]);
        }
        value
    }
}

impl PoolPicker {
    /// The queue the scorer sees for `endpoint`: its waiting requests, and (unless
    /// configured off) the picks its metrics cannot show yet.
    fn queue(&self, endpoint: usize) -> u32 {
        let state = &self.endpoints[endpoint];
        if self.pool.count_unseen_picks {
            let unseen = self.recent.unseen(endpoint, state.fetched_at_ms);
            state.queue.saturating_add(unseen)
        } else {
            state.queue
        }
    }

    fn fresh(&self, endpoint: &EndpointState) -> bool {
        endpoint
            .age_ms
            .is_some_and(|age| age <= self.pool.stale_after_ms)
    }

    /// Hashes the index holds for `endpoint` (its memory, for metrics and tests).
    pub fn held_blocks(&self, endpoint: usize) -> usize {
        self.index.len(endpoint)
    }
}

#[cfg(test)]
mod tests;
