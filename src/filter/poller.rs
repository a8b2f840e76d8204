//! The metrics singleton: the same module run once per Envoy process by the
//! `envoy.bootstrap.wasm` extension (`singleton: true`, root id
//! [`crate::picker::POLLER_ROOT_ID`], the filter's `vm_id`). On its timer it polls every endpoint
//! the filter's pools list ([`Poller`] decides which are due) with `dispatch_http_call` through
//! the ORIGINAL_DST metrics cluster, and writes each new [`crate::picker::Snapshot`] to shared
//! data, where the filter's workers read it. It also takes the new prefix groups the workers
//! send on its shared queue and publishes where each went ([`crate::picker::hints`]).
//!
//! Why a singleton and shared data: shared data is process-wide per `vm_id` (proxy-wasm-cpp-host
//! keys it by the VM's configured `vm_id`), so one poller serves every worker, and a worker reads
//! the latest value whenever it likes, never a backlog; polling from each worker would multiply
//! the model servers' scrapes by the number of workers.

use crate::picker::hints::{GroupHints, NewGroup, HINTS_KEY, NEW_GROUPS_QUEUE};
use crate::picker::poller::Poller;
use crate::picker::snapshot::{Targets, SNAPSHOT_KEY, TARGETS_KEY};
use log::{debug, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::Context;
use proxy_wasm::types::MetricType;
use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

/// How often the singleton looks for targets before any filter has published them.
const IDLE_PERIOD: Duration = Duration::from_millis(100);
/// The header Envoy's ORIGINAL_DST cluster reads the address from (`use_http_header`).
const ORIGINAL_DST_HEADER: &str = "x-envoy-original-dst-host";

/// Stats of one polled endpoint.
struct EndpointStats {
    fetches: u32,
    failures: u32,
    age_ms: u32,
}

#[derive(Default)]
pub struct MetricsPoller {
    poller: Poller,
    /// The shared data version of the targets last read.
    targets_cas: Option<u32>,
    /// Poll in flight: call token to endpoint index.
    calls: HashMap<u32, usize>,
    stats: Vec<EndpointStats>,
    /// When the current targets were taken (for the age of endpoints never fetched).
    since_ms: u64,
    period: Option<Duration>,
    /// The workers' new groups come in on this queue; the table goes out in shared data.
    new_groups: Option<u32>,
    hints: GroupHints,
    /// Counter of the new groups recorded.
    new_groups_counter: u32,
    /// Bumped with each publication of the hints, carried by the snapshot.
    hints_version: u64,
}

impl MetricsPoller {
    pub fn start(&mut self, context: &dyn Context) {
        info!("metrics singleton started: polling the pools the model-router filter publishes");
        self.new_groups_counter = define(MetricType::Counter, "model_router.picker.new_groups");
        match hostcalls::register_shared_queue(NEW_GROUPS_QUEUE) {
            Ok(queue) => self.new_groups = Some(queue),
            Err(status) => warn!(
                "cannot register the shared queue {NEW_GROUPS_QUEUE} ({status:?}): each \
                 worker learns prefix groups on its own"
            ),
        }
        self.set_period(context, IDLE_PERIOD);
    }

    /// Records the new groups the workers sent, and publishes the table if any came.
    fn take_new_groups(&mut self, context: &dyn Context) {
        let Some(queue) = self.new_groups else {
            return;
        };
        let mut taken = false;
        while let Ok(Some(bytes)) = hostcalls::dequeue_shared_queue(queue) {
            if let Some(group) = NewGroup::from_bytes(&bytes) {
                self.hints.record(group);
                increment(self.new_groups_counter);
                taken = true;
            }
        }
        if taken {
            match context.set_shared_data(HINTS_KEY, Some(self.hints.as_bytes()), None) {
                Ok(()) => self.hints_version += 1,
                Err(status) => warn!("cannot write the group hints to shared data: {status:?}"),
            }
        }
    }

    fn set_period(&mut self, _context: &dyn Context, period: Duration) {
        if self.period != Some(period) {
            let _ = hostcalls::set_tick_period(period);
            self.period = Some(period);
        }
    }

    pub fn on_tick(&mut self, context: &dyn Context) {
        let now = now_ms(context);
        self.retarget(context, now);
        self.take_new_groups(context);
        for index in self.poller.due(now) {
            self.send(context, index);
        }
        for (index, stats) in self.stats.iter().enumerate() {
            let age = self
                .poller
                .age_ms(index, now)
                .unwrap_or(now.saturating_sub(self.since_ms));
            let _ = hostcalls::record_metric(stats.age_ms, age);
        }
    }

    /// Takes the targets the filter published, when they changed.
    fn retarget(&mut self, context: &dyn Context, now: u64) {
        let (data, cas) = context.get_shared_data(TARGETS_KEY);
        if cas == self.targets_cas {
            return;
        }
        self.targets_cas = cas;
        let Some(targets) = data.and_then(|d| serde_json::from_slice::<Targets>(&d).ok()) else {
            warn!("unreadable targets in shared data {TARGETS_KEY}; polling nothing");
            return;
        };
        self.poller.retarget(&targets);
        // Answers to polls sent for the old targets are dropped.
        self.calls.clear();
        self.since_ms = now;
        self.stats = self
            .poller
            .endpoints
            .iter()
            .map(|polled| {
                let name = |metric: &str| {
                    format!(
                        "model_router.picker.{metric}.pool={}.endpoint={}",
                        polled.pool, polled.endpoint
                    )
                };
                EndpointStats {
                    fetches: define(MetricType::Counter, &name("metrics_fetches")),
                    failures: define(MetricType::Counter, &name("metrics_fetch_failures")),
                    age_ms: define(MetricType::Gauge, &name("metrics_age_ms")),
                }
            })
            .collect();
        info!(
            "polling {} endpoints through cluster {} every {:?} ms",
            self.poller.endpoints.len(),
            targets.cluster,
            self.poller.period_ms()
        );
        let period = self.poller.period_ms().map_or(IDLE_PERIOD, |ms| {
            Duration::from_millis(ms.clamp(5, 1000) / 2)
        });
        self.set_period(context, period);
    }

    fn send(&mut self, context: &dyn Context, index: usize) {
        let polled = &self.poller.endpoints[index];
        let headers = vec![
            (":method", "GET"),
            (":path", polled.path.as_str()),
            (":authority", polled.endpoint.as_str()),
            (":scheme", "http"),
            (ORIGINAL_DST_HEADER, polled.endpoint.as_str()),
            ("user-agent", "model-router-metrics"),
        ];
        let timeout = Duration::from_millis(polled.timeout_ms);
        match context.dispatch_http_call(&self.poller.cluster, headers, None, Vec::new(), timeout) {
            Ok(token) => {
                self.calls.insert(token, index);
            }
            Err(status) => {
                warn!(
                    "cannot poll {} through cluster {:?} ({status:?}): is the metrics cluster defined?",
                    polled.endpoint, self.poller.cluster
                );
                self.poller.failed(index);
                increment(self.stats[index].failures);
            }
        }
    }

    pub fn on_http_call_response(
        &mut self,
        context: &dyn Context,
        token: u32,
        num_headers: usize,
        body_size: usize,
    ) {
        let Some(index) = self.calls.remove(&token) else {
            return;
        };
        increment(self.stats[index].fetches);
        let outcome = if num_headers == 0 {
            self.poller.failed(index);
            Err("no answer".to_owned())
        } else {
            let status = context
                .get_http_call_response_header(":status")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let body = context
                .get_http_call_response_body(0, body_size)
                .unwrap_or_default();
            self.poller
                .answered(index, now_ms(context), status, &body)
                .map_err(|e| e.to_string())
        };
        if let Err(reason) = outcome {
            increment(self.stats[index].failures);
            let polled = &self.poller.endpoints[index];
            debug!(
                "metrics of {} (pool {}) failed: {reason}",
                polled.endpoint, polled.pool
            );
        }
        let mut snapshot = self.poller.snapshot();
        snapshot.hints_version = self.hints_version;
        let snapshot = snapshot.to_json();
        if let Err(status) = context.set_shared_data(SNAPSHOT_KEY, Some(&snapshot), None) {
            warn!("cannot write the metrics snapshot to shared data: {status:?}");
        }
    }
}

fn now_ms(context: &dyn Context) -> u64 {
    context
        .get_current_time()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn define(kind: MetricType, name: &str) -> u32 {
    hostcalls::define_metric(kind, name).unwrap_or(u32::MAX)
}

fn increment(id: u32) {
    let _ = hostcalls::increment_metric(id, 1);
}
