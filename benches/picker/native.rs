//! The picker's own work per request, natively on this machine: the body scan keeping the
//! prompt's first 16 KiB, its block hashes and the pick among six endpoints whose prefix
//! index is warm, against the same scan without a prompt. Beside Envoy's CPU per request,
//! which carries the noise of everything else a request costs Envoy.

use model_router::picker::config::{validate_pools, PoolConfig};
use model_router::picker::prompt::block_hashes;
use model_router::picker::snapshot::{Reading, Snapshot};
use model_router::picker::Picker;
use model_router::request::json::ModelScanner;
use std::hint::black_box;
use std::time::Instant;

/// Microseconds per request: (scan alone, scan with the prompt kept, hashed and picked).
pub fn cost_us(bodies: &[Vec<u8>], model: &str, iterations: usize) -> (f64, f64) {
    let endpoints: Vec<String> = (1..=6).map(|i| format!("10.0.0.{i}:8000")).collect();
    let config: PoolConfig = serde_json::from_value(serde_json::json!({
        "name": "pool", "models": [model], "endpoints": endpoints,
    }))
    .expect("a pool");
    let pools = validate_pools(vec![config], |_| Ok(())).expect("a valid pool");
    let prefix = pools[0].prefix;
    let mut picker = Picker::new(pools, None, 1);
    let snapshot = Snapshot {
        endpoints: endpoints
            .iter()
            .enumerate()
            .map(|(i, endpoint)| Reading {
                pool: "pool".into(),
                endpoint: endpoint.clone(),
                fetched_at_ms: 1_000,
                ok: true,
                queue: i as u32 % 3,
                kv_cache: 0.1 * i as f64,
            })
            .collect(),
        hints_version: 0,
    };
    picker.refresh(Some(&snapshot), 1_000);
    let scan = |body: &[u8]| {
        let mut scanner = ModelScanner::new(256);
        scanner.feed(body).expect("a valid body");
        scanner.finish().expect("a model")
    };
    let mut pick = |body: &[u8]| {
        let mut scanner = ModelScanner::with_prompt(256, prefix.prompt_bytes());
        scanner.feed(body).expect("a valid body");
        let prompt = scanner.take_prompt().unwrap_or_default();
        let hashes = block_hashes(
            model.as_bytes(),
            &prompt,
            prefix.block_bytes,
            prefix.max_blocks,
        );
        let decision = picker.pick(0, &hashes);
        (scanner.finish().expect("a model"), decision)
    };
    // Warm the index and the caches, then time each.
    for body in bodies {
        black_box(pick(body));
    }
    let timed = |f: &mut dyn FnMut(&[u8])| {
        let started = Instant::now();
        for n in 0..iterations {
            f(&bodies[n % bodies.len()]);
        }
        started.elapsed().as_secs_f64() * 1e6 / iterations as f64
    };
    let alone = timed(&mut |body| {
        black_box(scan(body));
    });
    let picked = timed(&mut |body| {
        black_box(pick(body));
    });
    (alone, picked)
}
