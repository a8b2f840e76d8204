//! The metrics singleton's bookkeeping, as plain Rust: which endpoint is due for a poll, what
//! each answer says, and the [`Snapshot`] the workers read. The host layer sends the polls and
//! hands the answers back.
//!
//! Each endpoint is polled once per `refresh_ms` at most, and never while its previous poll is
//! unanswered: however many Envoy workers run, a replica sees one poll per period.

use super::metrics_text::{find, MetricSpec};
use super::snapshot::{Reading, Snapshot, Targets};

/// One endpoint to poll and what is known of it.
#[derive(Debug, Clone)]
pub struct Polled {
    pub pool: String,
    pub endpoint: String,
    pub path: String,
    pub timeout_ms: u64,
    queue: MetricSpec,
    kv_cache: MetricSpec,
    refresh_ms: u64,
    next_due_ms: u64,
    in_flight: bool,
    reading: Reading,
}

/// Why a poll did not give metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollError {
    /// No answer (connection refused, reset, timeout): Envoy's reason, if any.
    NoAnswer,
    Status(u32),
    /// The answer lacks a configured series.
    Missing(String),
}

impl std::fmt::Display for PollError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoAnswer => f.write_str("no answer"),
            Self::Status(status) => write!(f, "status {status}"),
            Self::Missing(metric) => write!(f, "no series {metric}"),
        }
    }
}

/// Every endpoint of the targets. See the module docs.
#[derive(Debug, Default)]
pub struct Poller {
    pub cluster: String,
    pub endpoints: Vec<Polled>,
}

impl Poller {
    /// The endpoints of `targets`; what was known of an endpoint still polled the same way is
    /// kept. Specs that do not parse were refused by the filter's configuration already; such a
    /// pool is skipped.
    pub fn retarget(&mut self, targets: &Targets) {
        let mut endpoints = Vec::new();
        for target in &targets.pools {
            let (Ok(queue), Ok(kv_cache)) = (
                MetricSpec::parse(&target.queue),
                MetricSpec::parse(&target.kv_cache),
            ) else {
                continue;
            };
            for endpoint in &target.endpoints {
                let known = self.endpoints.iter().find(|p| {
                    p.pool == target.pool
                        && &p.endpoint == endpoint
                        && p.path == target.path
                        && p.queue == queue
                        && p.kv_cache == kv_cache
                });
                endpoints.push(Polled {
                    pool: target.pool.clone(),
                    endpoint: endpoint.clone(),
                    path: target.path.clone(),
                    timeout_ms: target.timeout_ms,
                    queue: queue.clone(),
                    kv_cache: kv_cache.clone(),
                    refresh_ms: target.refresh_ms,
                    next_due_ms: known.map_or(0, |k| k.next_due_ms),
                    in_flight: known.is_some_and(|k| k.in_flight),
                    reading: known.map_or_else(
                        || Reading {
                            pool: target.pool.clone(),
                            endpoint: endpoint.clone(),
                            fetched_at_ms: 0,
                            ok: false,
                            queue: 0,
                            kv_cache: 0.0,
                        },
                        |k| k.reading.clone(),
                    ),
                });
            }
        }
        self.cluster = targets.cluster.clone();
        self.endpoints = endpoints;
    }

    /// The shortest refresh period: how often the singleton's timer should fire.
    pub fn period_ms(&self) -> Option<u64> {
        self.endpoints.iter().map(|p| p.refresh_ms).min()
    }

    /// The endpoints to poll now, each marked in flight; `None` when nothing is due.
    pub fn due(&mut self, now_ms: u64) -> Vec<usize> {
        let mut due = Vec::new();
        for (index, polled) in self.endpoints.iter_mut().enumerate() {
            if !polled.in_flight && now_ms >= polled.next_due_ms {
                polled.in_flight = true;
                // Periods stay aligned to the schedule unless the poll was late by more than
                // a period (a slow main thread): then the next starts a full period from now.
                polled.next_due_ms = if polled.next_due_ms + polled.refresh_ms > now_ms {
                    polled.next_due_ms + polled.refresh_ms
                } else {
                    now_ms + polled.refresh_ms
                };
                due.push(index);
            }
        }
        due
    }

    /// A poll of endpoint `index` got `status` and `body` at `now_ms`; the error if it gave
    /// no metrics (the old values are then no longer trusted).
    pub fn answered(
        &mut self,
        index: usize,
        now_ms: u64,
        status: u32,
        body: &[u8],
    ) -> Result<(), PollError> {
        let polled = &mut self.endpoints[index];
        polled.in_flight = false;
        let outcome = if status != 200 {
            Err(PollError::Status(status))
        } else {
            match (find(body, &polled.queue), find(body, &polled.kv_cache)) {
                (Some(queue), Some(kv_cache)) => {
                    polled.reading.queue = if queue.is_finite() && queue > 0.0 {
                        queue.min(f64::from(u32::MAX)) as u32
                    } else {
                        0
                    };
                    polled.reading.kv_cache = if kv_cache.is_nan() { 1.0 } else { kv_cache };
                    polled.reading.fetched_at_ms = now_ms;
                    Ok(())
                }
                (None, _) => Err(PollError::Missing(polled.queue.to_string())),
                (_, None) => Err(PollError::Missing(polled.kv_cache.to_string())),
            }
        };
        polled.reading.ok = outcome.is_ok();
        outcome
    }

    /// A poll of endpoint `index` got no answer.
    pub fn failed(&mut self, index: usize) {
        let polled = &mut self.endpoints[index];
        polled.in_flight = false;
        polled.reading.ok = false;
    }

    /// What the workers read.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            endpoints: self.endpoints.iter().map(|p| p.reading.clone()).collect(),
            hints_version: 0,
        }
    }

    /// Milliseconds since the endpoint's last successful poll (`None`: never).
    pub fn age_ms(&self, index: usize, now_ms: u64) -> Option<u64> {
        let fetched = self.endpoints[index].reading.fetched_at_ms;
        (fetched > 0).then(|| now_ms.saturating_sub(fetched))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::picker::snapshot::Target;

    fn targets(endpoints: &[&str], refresh_ms: u64) -> Targets {
        Targets {
            cluster: "metrics".into(),
            pools: vec![Target {
                pool: "p".into(),
                endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
                path: "/metrics".into(),
                queue: "vllm:num_requests_waiting".into(),
                kv_cache: "vllm:kv_cache_usage_perc".into(),
                refresh_ms,
                timeout_ms: 1000,
            }],
        }
    }

    const METRICS: &[u8] =
        b"vllm:num_requests_waiting{model_name=\"m\"} 2.9\nvllm:kv_cache_usage_perc 0.5\n";

    #[test]
    fn each_endpoint_is_polled_once_per_period_and_never_twice_at_once() {
        let mut poller = Poller::default();
        poller.retarget(&targets(&["10.0.0.1:8000", "10.0.0.2:8000"], 50));
        assert_eq!(poller.period_ms(), Some(50));
        assert_eq!(poller.due(1000), [0, 1]);
        assert!(poller.due(1000).is_empty());
        // Answered at once: due again one period after the last poll was due.
        poller.answered(0, 1001, 200, METRICS).unwrap();
        assert!(poller.due(1049).is_empty());
        assert_eq!(poller.due(1050), [0]);
        // Endpoint 1's poll is still out: it is not polled again.
        assert!(poller.due(1200).is_empty());
        poller.failed(1);
        assert_eq!(poller.due(1200), [1]);
        // A late timer does not make the next polls bunch up.
        poller.answered(0, 1300, 200, METRICS).unwrap();
        assert_eq!(poller.due(1300), [0]);
        assert!(poller.due(1349).is_empty());
    }

    #[test]
    fn answers_become_the_snapshot_and_failures_untrust_it() {
        let mut poller = Poller::default();
        poller.retarget(&targets(&["10.0.0.1:8000"], 50));
        poller.due(0);
        assert_eq!(poller.answered(0, 7, 200, METRICS), Ok(()));
        let reading = &poller.snapshot().endpoints[0];
        assert_eq!(
            (
                reading.queue,
                reading.kv_cache,
                reading.ok,
                reading.fetched_at_ms
            ),
            (2, 0.5, true, 7)
        );
        assert_eq!(poller.age_ms(0, 57), Some(50));
        poller.due(100);
        assert_eq!(
            poller.answered(0, 101, 503, b""),
            Err(PollError::Status(503))
        );
        let reading = &poller.snapshot().endpoints[0];
        assert_eq!((reading.ok, reading.fetched_at_ms), (false, 7));
        poller.due(200);
        assert_eq!(
            poller.answered(0, 201, 200, b"vllm:num_requests_waiting 1\n"),
            Err(PollError::Missing("vllm:kv_cache_usage_perc".into()))
        );
        poller.due(300);
        poller.answered(0, 301, 200, METRICS).unwrap();
        assert!(poller.snapshot().endpoints[0].ok);
    }

    #[test]
    fn retargeting_keeps_what_is_known_of_the_same_endpoints() {
        let mut poller = Poller::default();
        poller.retarget(&targets(&["10.0.0.1:8000"], 50));
        poller.due(0);
        poller.answered(0, 5, 200, METRICS).unwrap();
        poller.retarget(&targets(&["10.0.0.1:8000", "10.0.0.3:8000"], 50));
        let snapshot = poller.snapshot();
        assert_eq!(snapshot.endpoints[0].fetched_at_ms, 5);
        assert_eq!(snapshot.endpoints[1].fetched_at_ms, 0);
        assert_eq!(poller.due(10), [1]);
        assert_eq!(poller.age_ms(1, 10), None);
    }
}
