//! A replica's `/metrics`: vLLM's load gauges, live from the requests in flight or as a test
//! sets them ([`Replica::set_metrics`]), and a count of the polls it answered, so a test can
//! see what an endpoint picker read and how often it asked.

use crate::api::{full, ResponseBody};
use crate::Replica;
use bytes::Bytes;
use hyper::{Response, StatusCode};
use std::sync::atomic::Ordering;

/// What a replica's `/metrics` reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Metrics {
    /// Computed from the requests in flight and `max_num_seqs` (the default).
    #[default]
    Live,
    /// These values, whatever the replica is doing.
    Fixed { waiting: u32, kv_cache_usage: f64 },
    /// An error status instead of metrics.
    Failing(u16),
}

impl Replica {
    /// Sets what `/metrics` reports from now on.
    pub fn set_metrics(&self, metrics: Metrics) {
        *self.metrics.lock().expect("metrics") = metrics;
    }

    /// `/metrics` requests answered so far.
    pub fn metrics_polls(&self) -> usize {
        self.metrics_polls.load(Ordering::SeqCst)
    }
}

/// Answers a `/metrics` request (not recorded as a request seen: pollers ask many times a second).
pub fn answer(replica: &Replica) -> Response<ResponseBody> {
    replica.metrics_polls.fetch_add(1, Ordering::SeqCst);
    let (running, waiting, usage) = match *replica.metrics.lock().expect("metrics") {
        Metrics::Failing(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return full(
                status,
                "text/plain",
                Bytes::from_static(b"failing\n"),
                replica,
            );
        }
        Metrics::Fixed {
            waiting,
            kv_cache_usage,
        } => (0, waiting as usize, kv_cache_usage),
        Metrics::Live => {
            let in_flight = replica.in_flight.load(Ordering::SeqCst);
            let running = in_flight.min(replica.config.max_num_seqs);
            let usage = running as f64 / replica.config.max_num_seqs as f64;
            (running, in_flight - running, usage)
        }
    };
    let mut text = String::new();
    for (name, help, value) in [
        (
            "vllm:num_requests_running",
            "Number of requests currently running.",
            running as f64,
        ),
        (
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            waiting as f64,
        ),
        (
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            usage,
        ),
    ] {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for model in &replica.config.models {
            text.push_str(&format!("{name}{{model_name=\"{model}\"}} {value}\n"));
        }
    }
    full(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        Bytes::from(text),
        replica,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::InFlight;
    use crate::{Pool, PoolConfig};
    use http_body_util::BodyExt;

    async fn text(replica: &Replica) -> (u16, String) {
        let response = answer(replica);
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn metrics_report_requests_in_flight_or_what_the_test_sets() {
        let mut config = PoolConfig::new("p", &["m"]);
        config.max_num_seqs = 2;
        let pool = Pool::bind(config, "127.0.0.1", 0, 1).await.unwrap();
        let replica = &pool.replicas[0];
        let held: Vec<InFlight> = (0..4).map(|_| InFlight::new(replica)).collect();
        let (_, live) = text(replica).await;
        for line in [
            "vllm:num_requests_running{model_name=\"m\"} 2\n",
            "vllm:num_requests_waiting{model_name=\"m\"} 2\n",
            "vllm:kv_cache_usage_perc{model_name=\"m\"} 1\n",
        ] {
            assert!(live.contains(line), "{live}");
        }
        drop(held);
        replica.set_metrics(Metrics::Fixed {
            waiting: 7,
            kv_cache_usage: 0.25,
        });
        let (_, fixed) = text(replica).await;
        assert!(fixed.contains("vllm:num_requests_waiting{model_name=\"m\"} 7\n"));
        assert!(fixed.contains("vllm:kv_cache_usage_perc{model_name=\"m\"} 0.25\n"));
        replica.set_metrics(Metrics::Failing(500));
        assert_eq!(text(replica).await.0, 500);
        assert_eq!(replica.metrics_polls(), 3);
    }
}
