//! Picking's price counted rather than timed: the instructions Envoy (one worker, under
//! callgrind) executes per shared-prefix request with the picker and with least request, on
//! replicas that answer at once. The picker's pool is polled once a minute here, and Envoy's
//! instructions at rest over as long are taken out, so that the count holds the requests' work
//! and not the polling or the timers (which the timed runs show apart, as idle CPU).

use crate::cluster::{envoy_config, Policy, MODEL};
use crate::load::Rng;
use crate::Bench;
use std::net::SocketAddr;
use std::time::Instant;
use testkit::callgrind::{Callgrind, Counts};
use testkit::client::{request, Connection, Frames, Protocol};
use testkit::llm_d::LlmdReplica;
use testkit::process::user_cpu_seconds;

/// Instructions per request, in all and by where they ran ([`Counts`]).
#[derive(Debug, Clone, Copy)]
pub struct PerRequest {
    pub total: f64,
    pub generated: f64,
    pub libc: f64,
}

impl PerRequest {
    fn of(counts: Counts, requests: usize) -> Self {
        let per = |n: u64| n as f64 / requests as f64;
        Self {
            total: per(counts.total),
            generated: per(counts.generated),
            libc: per(counts.libc),
        }
    }
}

/// What was counted, per request.
#[derive(Debug, Clone, Copy)]
pub struct Counted {
    pub least_request: PerRequest,
    pub picker: PerRequest,
    /// The picker with 256-byte blocks (64 of them: the same 16 KiB of prompt).
    pub picker_coarse: PerRequest,
    /// Least request's requests timed outside callgrind, Envoy's user-space CPU in us per
    /// request: callgrind counts user-space instructions only, so this is what turns them
    /// into time on this machine (Envoy's CPU in all, kernel included, beside it).
    pub least_request_user_us: f64,
    pub least_request_us: f64,
}

/// Instructions per request with least request and with the picker, and least request timed.
pub fn count(bench: &Bench, requests: usize) -> Result<Counted, String> {
    let replicas: Vec<LlmdReplica> = (0..crate::cluster::REPLICAS)
        .map(|i| {
            LlmdReplica::start_on_free_port(
                &bench.sim,
                &format!("c{i}"),
                MODEL,
                &["--mode", "random"],
            )
        })
        .collect::<Result<_, _>>()?;
    let dir = std::env::temp_dir().join(format!("model-router-picker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut rng = Rng::new(5);
    let workload = bench.plan.shared;
    let bodies: Vec<Vec<u8>> = (0..requests)
        .map(|n| workload.body(MODEL, bench.plan.sizes, n, &mut rng))
        .collect();
    let mut counts = Vec::new();
    let polled_once = r#", "refresh_ms": 60000, "stale_after_ms": 120000"#;
    let coarse = format!(r#"{polled_once}, "prefix": {{"block_bytes": 256, "max_blocks": 64}}"#);
    for (policy, pool_extra) in [
        (Policy::LeastRequest, polled_once),
        (Policy::Picker, polled_once),
        (Policy::Picker, coarse.as_str()),
    ] {
        let config = envoy_config(policy, &bench.wasm, &replicas, pool_extra);
        let mut envoy = Callgrind::start(&config, &dir)?;
        let listener = envoy.listener;
        // Warm-up (V8's first calls, the picker's first poll and its index), then counted.
        send(bench, listener, &bodies)?;
        let mut result = Ok(());
        let started = Instant::now();
        let busy = envoy.count_by_object(|| result = send(bench, listener, &bodies))?;
        result?;
        // What Envoy's timers cost over as long at rest (the picker's copy of the snapshot,
        // its singleton's ticks): under callgrind a request takes far longer than outside it,
        // so they would otherwise be charged to the requests.
        let span = started.elapsed();
        let idle = envoy.count_by_object(|| std::thread::sleep(span))?;
        counts.push(PerRequest::of(busy.saturating_sub(idle), requests));
    }
    let _ = std::fs::remove_dir_all(&dir);
    // The same requests to least request's Envoy, timed, many times over: user-space CPU
    // is read in ticks of 10 ms.
    let envoy = testkit::envoy::Envoy::launch(&envoy_config(
        Policy::LeastRequest,
        &bench.wasm,
        &replicas,
        "",
    ))?;
    send(bench, envoy.listener, &bodies)?;
    let pid = envoy.pid();
    let window = std::time::Duration::from_secs(2);
    let (idle_start, idle_user_start) = (crate::cpu_seconds(pid), user_cpu_seconds(pid));
    // A measuring window, not a wait for something to happen.
    std::thread::sleep(window);
    let idle_rate = (crate::cpu_seconds(pid) - idle_start) / window.as_secs_f64();
    let idle_user_rate = (user_cpu_seconds(pid) - idle_user_start) / window.as_secs_f64();
    let (cpu_start, user_start) = (crate::cpu_seconds(pid), user_cpu_seconds(pid));
    let started = std::time::Instant::now();
    for _ in 0..TIMED_PASSES {
        send(bench, envoy.listener, &bodies)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let timed = (requests * TIMED_PASSES) as f64;
    let cpu = crate::cpu_seconds(pid) - cpu_start - idle_rate * elapsed;
    let user = user_cpu_seconds(pid) - user_start - idle_user_rate * elapsed;
    Ok(Counted {
        least_request: counts[0],
        picker: counts[1],
        picker_coarse: counts[2],
        least_request_user_us: user * 1e6 / timed,
        least_request_us: cpu * 1e6 / timed,
    })
}

/// How many times the counted requests are sent again to be timed.
const TIMED_PASSES: usize = 20;

/// Sends every body in turn on one connection; each must be answered 200.
fn send(bench: &Bench, listener: SocketAddr, bodies: &[Vec<u8>]) -> Result<(), String> {
    bench.runtime.block_on(async {
        let mut connection = Connection::open(listener, Protocol::Http1).await?;
        for body in bodies {
            let headers = [("content-type", "application/json")];
            let frames = Frames::new([bytes::Bytes::from(body.clone())]);
            let reply = connection
                .send(request("POST", "/v1/chat/completions", &headers, frames))
                .await?;
            if reply.status != 200 {
                return Err(format!("status {}: {}", reply.status, reply.text()));
            }
        }
        Ok(())
    })
}
