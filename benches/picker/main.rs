//! The endpoint picker against Envoy's own balancing, on the same six llm-d-inference-sim
//! replicas (KV cache and prefix hits simulated, per-token prefill): the filter's picker,
//! least request and round robin, each on fresh replicas and a fresh Envoy.
//!
//! Workloads: shared prefix (64 groups x 8 prompts, 2,048-token system prompts and 256-token
//! questions, Poisson arrivals stepped up toward saturation) and a no-reuse control (least
//! request measured twice: the difference is the noise). Measured: p50 and p90 time to first
//! token, p90 time per output token, throughput, the replicas' prefix-cache hit rate
//! (`vllm:prefix_cache_hits` / `vllm:prefix_cache_queries`), and Envoy's CPU per request, its
//! idle CPU (the picker's polling) taken out.
//!
//! `./build.sh bench` (or `./build.sh bench picker` alone) runs it in full, about 10 minutes,
//! and writes benches/results/picker.md; `--smoke` (part of `./build.sh test`) runs one short
//! step of each policy and workload, writing nothing.

mod cluster;
mod counted;
mod load;
mod native;
mod report;

use cluster::{Policy, MODEL};
use load::{Sizes, Step, Workload};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use testkit::process::required_file;

/// What one run measures.
struct Plan {
    sizes: Sizes,
    shared: Workload,
    shared_rates: Vec<f64>,
    control_rates: Vec<f64>,
    step: Duration,
    idle: Duration,
    /// Requests sent before measuring.
    warm_up: usize,
}

impl Plan {
    fn full() -> Self {
        Self {
            sizes: Sizes {
                system_tokens: 2048,
                question_tokens: 256,
            },
            shared: Workload::SharedPrefix {
                groups: 64,
                per_group: 8,
            },
            shared_rates: vec![10.0, 20.0, 40.0, 60.0, 80.0, 100.0],
            control_rates: vec![10.0, 20.0, 40.0],
            step: Duration::from_secs(12),
            idle: Duration::from_secs(5),
            warm_up: 24,
        }
    }

    fn smoke() -> Self {
        Self {
            sizes: Sizes {
                system_tokens: 256,
                question_tokens: 32,
            },
            shared: Workload::SharedPrefix {
                groups: 4,
                per_group: 2,
            },
            shared_rates: vec![4.0],
            control_rates: vec![4.0],
            step: Duration::from_secs(2),
            idle: Duration::from_millis(500),
            warm_up: 4,
        }
    }
}

/// One policy on one workload: a step per rate, and what Envoy spent.
pub struct Run {
    pub policy: Policy,
    pub steps: Vec<(Step, f64)>,
    /// Envoy's CPU per answered request with its idle CPU over the same time taken out, in us.
    pub cpu_us_per_request: f64,
    /// Envoy's CPU per second at rest (timers, and the picker's polling), in ms.
    pub idle_cpu_ms_per_s: f64,
}

fn main() -> std::process::ExitCode {
    let smoke = std::env::args().any(|a| a == "--smoke");
    // Only picking's price (native and counted), for work on the picker's hot path.
    let cost_only = std::env::args().any(|a| a == "--cost");
    let bench = Bench {
        runtime: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap(),
        plan: if smoke { Plan::smoke() } else { Plan::full() },
        sim: required_file("LLM_D_SIM_BIN"),
        wasm: required_file("MODEL_ROUTER_WASM"),
    };
    let plan = &bench.plan;
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut results = Vec::new();
    let workloads = [
        (
            plan.shared,
            &plan.shared_rates,
            vec![Policy::Picker, Policy::LeastRequest, Policy::RoundRobin],
        ),
        (
            Workload::Control,
            &plan.control_rates,
            vec![
                Policy::Picker,
                Policy::LeastRequest,
                Policy::LeastRequest,
                Policy::RoundRobin,
            ],
        ),
    ];
    let mut total = 0;
    let workloads = if cost_only {
        &workloads[..0]
    } else {
        &workloads[..]
    };
    for (w, (workload, rates, policies)) in workloads.iter().enumerate() {
        let mut runs = Vec::new();
        for policy in policies {
            total += 1;
            eprintln!("== {}: {}", workload.label(), policy.name());
            match run(&bench, *policy, *workload, rates, w) {
                Ok(run) => {
                    if let Some((step, _)) = run.steps.iter().find(|(s, _)| s.timings.is_empty()) {
                        failures.push(format!(
                            "{} / {}: no answer at {} req/s",
                            workload.label(),
                            policy.name(),
                            step.rate
                        ));
                    }
                    runs.push(run);
                }
                Err(e) => failures.push(format!("{} / {}: {e}", workload.label(), policy.name())),
            }
        }
        results.push((*workload, runs));
    }
    let bodies: Vec<Vec<u8>> = {
        let mut rng = load::Rng::new(99);
        (0..64)
            .map(|n| plan.shared.body(MODEL, plan.sizes, n, &mut rng))
            .collect()
    };
    let native = native::cost_us(&bodies, MODEL, if smoke { 200 } else { 20_000 });
    total += 1;
    let counted = counted::count(&bench, if smoke { 8 } else { 100 })
        .map_err(|e| failures.push(format!("instruction count: {e}")))
        .ok();
    if cost_only {
        println!("native us per request (scan alone, scan and pick): {native:.1?}");
        println!("counted instructions per request: {counted:?}");
        return testkit::bench::finish(smoke, total, failures);
    }
    let markdown = report::markdown(
        &results,
        plan,
        report::Cost { native, counted },
        started.elapsed(),
    );
    println!("{markdown}");
    if !smoke && failures.is_empty() {
        let results_dir = testkit::envoy::root().join("benches/results");
        std::fs::write(results_dir.join("picker.md"), &markdown).unwrap();
        let shared = &results[0].1;
        std::fs::write(results_dir.join("picker.svg"), report::chart(shared)).unwrap();
        eprintln!("written: benches/results/picker.md, benches/results/picker.svg");
    }
    testkit::bench::finish(smoke, total, failures)
}

/// What every run uses.
struct Bench {
    runtime: tokio::runtime::Runtime,
    plan: Plan,
    sim: PathBuf,
    wasm: PathBuf,
}

/// One policy on one workload, on fresh replicas and a fresh Envoy.
fn run(
    bench: &Bench,
    policy: Policy,
    workload: Workload,
    rates: &[f64],
    seed: usize,
) -> Result<Run, String> {
    let Bench {
        runtime,
        plan,
        sim,
        wasm,
    } = bench;
    let replicas = cluster::start_replicas(sim)?;
    let envoy = cluster::start_envoy(policy, wasm, &replicas)?;
    if policy == Policy::Picker {
        // Ready once the singleton has read every replica.
        for replica in &replicas {
            envoy.wait_stat(
                &format!(
                    "wasmcustom.model_router.picker.metrics_fetches.pool=pool.endpoint={}",
                    replica.addr
                ),
                1,
            )?;
        }
    }
    // Warm-up: V8 compiles the filter's functions on their first calls on each worker, and
    // the steps measure the steady state: every group of the shared-prefix workload met once
    // (a control run warms up with prompts of its own, which leave nothing to reuse).
    let warm_up = match workload {
        Workload::SharedPrefix { groups, .. } => Workload::EachGroup { groups },
        other => other,
    };
    let count = match warm_up {
        Workload::EachGroup { groups } => groups,
        _ => plan.warm_up,
    };
    runtime.block_on(load::poisson(
        envoy.listener,
        MODEL,
        warm_up,
        plan.sizes,
        20.0,
        count,
        u64::MAX,
    ));
    let pid = envoy.pid();
    // Envoy's CPU per second at rest, before and after the load (measuring windows, not
    // waits for something to happen).
    let idle = || {
        let start = cpu_seconds(pid);
        std::thread::sleep(plan.idle);
        (cpu_seconds(pid) - start) / plan.idle.as_secs_f64()
    };
    let idle_before = idle();
    let (cpu_start, started) = (cpu_seconds(pid), Instant::now());
    let mut steps = Vec::new();
    let mut answered = 0;
    for (r, &rate) in rates.iter().enumerate() {
        let (hits, queries) = cluster::prefix_cache(&replicas)?;
        let count = (rate * plan.step.as_secs_f64()) as usize;
        let step = runtime.block_on(load::poisson(
            envoy.listener,
            MODEL,
            workload,
            plan.sizes,
            rate,
            count,
            (seed * 100 + r + 1) as u64,
        ));
        let (hits_after, queries_after) = cluster::prefix_cache(&replicas)?;
        let hit_rate = (hits_after - hits) / (queries_after - queries).max(1.0);
        eprintln!(
            "   {rate:>4} req/s: {:>6.1} answered/s, {} failed, TTFT p50 {:>6.0} ms p90 {:>6.0} ms, TPOT p90 {:>5.1} ms, prefix hits {:>5.1}%",
            step.throughput(),
            step.failed(),
            step.ttft_ms(0.5),
            step.ttft_ms(0.9),
            step.tpot_ms(0.9),
            hit_rate * 100.0
        );
        answered += step.timings.len();
        steps.push((step, hit_rate));
    }
    let (cpu_end, elapsed) = (cpu_seconds(pid), started.elapsed().as_secs_f64());
    let idle_rate = (idle_before + idle()) / 2.0;
    let cpu = cpu_end - cpu_start - idle_rate * elapsed;
    Ok(Run {
        policy,
        steps,
        cpu_us_per_request: cpu * 1e6 / answered.max(1) as f64,
        idle_cpu_ms_per_s: idle_rate * 1e3,
    })
}

/// CPU seconds `pid` has run, every thread counted, to the nanosecond (/proc/PID/task/*/
/// schedstat; /proc/PID/stat counts in 10 ms ticks, too coarse for a few microseconds per
/// request).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let nanoseconds: u64 = tasks
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum();
    nanoseconds as f64 / 1e9
}
