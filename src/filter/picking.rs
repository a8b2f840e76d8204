//! The endpoint picker on a worker: publishes the pools for the metrics singleton, copies the
//! singleton's snapshot into the VM on its timer (a request never calls the host for it), and
//! picks for each routed request of a pool, with the counters that show it.

use crate::config::Settings;
use crate::picker::hints::{HINTS_KEY, NEW_GROUPS_QUEUE};
use crate::picker::scorers::Rng;
use crate::picker::snapshot::{Snapshot, Targets, SNAPSHOT_KEY, TARGETS_KEY};
use crate::picker::{prompt::block_hashes, Picker};
use crate::request::Routed;
use log::warn;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MetricType, Status};
use std::cell::{Cell, RefCell};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Counters of one pool.
#[derive(Debug)]
struct PoolStats {
    /// Per endpoint.
    picks: Vec<u32>,
    /// Requests routed without a pick: no endpoint had fresh metrics (Envoy's fallback chose).
    unscored: u32,
    prefix_blocks: u32,
    prefix_blocks_matched: u32,
}

#[derive(Debug)]
pub struct WorkerPicker {
    picker: RefCell<Picker>,
    stats: Vec<PoolStats>,
    /// The snapshot version last copied.
    snapshot_cas: Cell<Option<u32>>,
    /// The version of the group hints last copied (the snapshot says the latest).
    hints_version: Cell<u64>,
    /// The singleton's queue of new groups, once resolved; this VM's id names it.
    new_groups: Cell<Option<u32>>,
    vm_id: String,
    /// Whether the missing snapshot was reported.
    warned: Cell<bool>,
    pub destination_header: String,
    /// The header naming a request's objective, when shedding is configured.
    pub objective_header: Option<String>,
}

/// What the filter does with a request of a pool.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Set the destination header to this value.
    Pick(String),
    /// No endpoint has fresh metrics: leave the choice to Envoy's fallback policy.
    Unscored,
    /// Refuse with 429: sheddable, and the pool is saturated.
    Shed(String),
}

impl WorkerPicker {
    /// The picker of `settings`' pools, if it has any; defines its counters.
    pub fn new(settings: &Settings) -> Result<Option<Self>, Status> {
        if settings.pools.is_empty() {
            return Ok(None);
        }
        let counter = |name: String| hostcalls::define_metric(MetricType::Counter, &name);
        let mut stats = Vec::new();
        for pool in &settings.pools {
            let name = &pool.name;
            stats.push(PoolStats {
                picks: pool
                    .endpoints
                    .iter()
                    .map(|endpoint| {
                        counter(format!(
                            "model_router.picker.picks.pool={name}.endpoint={endpoint}"
                        ))
                    })
                    .collect::<Result<_, _>>()?,
                unscored: counter(format!("model_router.picker.picks_unscored.pool={name}"))?,
                prefix_blocks: counter(format!("model_router.picker.prefix_blocks.pool={name}"))?,
                prefix_blocks_matched: counter(format!(
                    "model_router.picker.prefix_blocks_matched.pool={name}"
                ))?,
            });
        }
        let picker = Picker::new(
            settings.pools.clone(),
            settings.picker.shedding.clone(),
            Rng::seed_from_host(),
        );
        Ok(Some(Self {
            picker: RefCell::new(picker),
            stats,
            snapshot_cas: Cell::new(None),
            hints_version: Cell::new(0),
            new_groups: Cell::new(None),
            vm_id: hostcalls::get_property(vec!["plugin_vm_id"])
                .ok()
                .flatten()
                .and_then(|id| String::from_utf8(id.to_vec()).ok())
                .unwrap_or_default(),
            warned: Cell::new(false),
            destination_header: settings.picker.destination_header.clone(),
            objective_header: settings
                .picker
                .shedding
                .as_ref()
                .map(|s| s.objective_header.clone()),
        }))
    }

    /// Publishes the pools for the metrics singleton (every worker writes the same value).
    pub fn publish_targets(settings: &Settings) {
        let targets = Targets::of(&settings.picker.metrics_cluster, &settings.pools);
        let json = serde_json::to_vec(&targets).expect("targets serialize");
        if let Err(status) = hostcalls::set_shared_data(TARGETS_KEY, Some(&json), None) {
            warn!("cannot publish the pools to shared data: {status:?}");
        }
    }

    /// How often the worker copies the snapshot: the shortest refresh period, at least once a
    /// second (the singleton's first polls may land after the worker was configured).
    pub fn period(&self) -> Duration {
        let picker = self.picker.borrow();
        let ms = picker.pools.iter().map(|p| p.pool.refresh_ms).min();
        Duration::from_millis(ms.unwrap_or(50).min(1000))
    }

    /// On the worker's timer: copies the snapshot if it changed, and ages the metrics.
    pub fn refresh(&self, now: SystemTime) {
        let (data, cas) = hostcalls::get_shared_data(SNAPSHOT_KEY).unwrap_or((None, None));
        let snapshot = if cas != self.snapshot_cas.get() {
            self.snapshot_cas.set(cas);
            data.and_then(|d| Snapshot::from_json(&d))
        } else {
            None
        };
        if cas.is_none() && !self.warned.replace(true) {
            warn!(
                "no metrics snapshot in shared data yet: is the metrics singleton \
                 (envoy.bootstrap.wasm, root_id model-router-metrics, same vm_id) configured? \
                 Until it publishes, Envoy's fallback policy picks"
            );
        }
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut picker = self.picker.borrow_mut();
        picker.refresh(snapshot.as_ref(), now_ms);
        let Some(version) = snapshot.map(|s| s.hints_version) else {
            return;
        };
        if version != self.hints_version.get() {
            let (data, _) = hostcalls::get_shared_data(HINTS_KEY).unwrap_or((None, None));
            if data.is_some_and(|d| picker.take_hints(&d)) {
                self.hints_version.set(version);
            }
        }
    }

    /// Tells the other workers, through the singleton's queue, where a new group went.
    fn announce(&self, group: crate::picker::hints::NewGroup) {
        let queue = match self.new_groups.get() {
            Some(queue) => queue,
            None => match hostcalls::resolve_shared_queue(&self.vm_id, NEW_GROUPS_QUEUE) {
                Ok(Some(queue)) => {
                    self.new_groups.set(Some(queue));
                    queue
                }
                // No singleton (yet): the other workers learn the group from their own picks.
                _ => return,
            },
        };
        let _ = hostcalls::enqueue_shared_queue(queue, Some(&group.to_bytes()));
    }

    /// Whether a request naming `objective` may be shed.
    pub fn sheddable(&self, objective: &[u8]) -> bool {
        self.picker.borrow().sheddable(objective)
    }

    /// Decides for a routed request: `None` when its model is in no pool.
    pub fn pick(&self, routed: &Routed, sheddable: bool) -> Option<Outcome> {
        let mut picker = self.picker.borrow_mut();
        let pool = picker.pool_of(&routed.model)?;
        if sheddable && picker.saturated(pool) {
            return Some(Outcome::Shed(picker.pools[pool].pool.name.clone()));
        }
        let stats = &self.stats[pool];
        if !picker.has_fresh(pool) {
            increment(stats.unscored, 1);
            return Some(Outcome::Unscored);
        }
        let prefix = picker.pools[pool].pool.prefix;
        let hashes = routed.prompt.as_deref().map_or_else(Vec::new, |prompt| {
            block_hashes(
                routed.upstream_model(),
                prompt,
                prefix.block_bytes,
                prefix.max_blocks,
            )
        });
        let decision = picker.pick(pool, &hashes);
        if let Some(group) = decision.new_group {
            self.announce(group);
        }
        increment(stats.picks[decision.order[0]], 1);
        if decision.total_blocks > 0 {
            increment(stats.prefix_blocks, u64::from(decision.total_blocks));
            increment(
                stats.prefix_blocks_matched,
                u64::from(decision.matched_blocks),
            );
        }
        Some(Outcome::Pick(picker.destination(pool, &decision)))
    }
}

fn increment(id: u32, by: u64) {
    let _ = hostcalls::increment_metric(id, by as i64);
}
