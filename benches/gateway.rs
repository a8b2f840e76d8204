//! The cost of body-based routing, every variant measured in one run against the same
//! zero-latency simulated backend:
//! 1. header: Envoy routes on a client-sent x-ai-eg-model, no filter (the floor);
//! 2. wasm: this filter (release .wasm, V8); 2a is the same filter scanning no path, which
//!    measures what any proxy-wasm filter costs before it does anything;
//! 3. lua: Envoy's Lua filter reads the whole body and finds the top-level model;
//! 4. ext_proc: Envoy's ext_proc filter sends the BUFFERED body to a Rust gRPC processor
//!    (a stand-in for the external-processor architecture);
//! 5. litellm: LiteLLM proxy routing the same model names.
//!
//! Throughput: wrk, HTTP/1.1 keep-alive at fixed concurrency. Latency: oha at a low fixed rate.
//!
//! `./build.sh bench` runs it in full and writes benches/results/; `--smoke` (part of
//! `./build.sh test`) runs every variant and workload for about a second, writing nothing.

#[allow(dead_code)]
#[path = "../tests/gateway/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "../tests/gateway/harness.rs"]
mod harness;

use harness::Envoy;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";
const MODELS: [&str; 3] = [MODEL, "mistral:latest", "some-cool-self-hosted-model"];
/// Connections kept busy by wrk: enough to saturate two cores through Envoy.
const CONCURRENCY: u32 = 16;
/// Requests per second of the latency run: far below saturation for every variant.
const LATENCY_RATE: u32 = 100;

fn required(variable: &str) -> PathBuf {
    let path = PathBuf::from(std::env::var_os(variable).unwrap_or_else(|| {
        panic!("{variable} is not set: run the benchmarks with ./build.sh bench")
    }));
    assert!(
        path.is_file(),
        "{variable}={} does not exist",
        path.display()
    );
    path
}

/// A child process stopped on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a program that prints its listening address on a line ending in `addr`.
fn spawn_listening(command: &mut Command, marker: &str) -> (Process, SocketAddr) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = lines
        .find(|l| l.as_ref().is_ok_and(|l| l.contains(marker)))
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no line with {marker:?}"));
    let addr = line
        .rsplit(|c: char| c.is_whitespace() || c == '/')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (Process(child), addr)
}

fn wait_http_ok(addr: SocketAddr, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !harness::admin_get(addr, path).is_ok_and(|(status, _)| status == 200) {
        assert!(Instant::now() < deadline, "{addr}{path} not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// CPU seconds used so far by `pid` and its descendants.
fn cpu_seconds(pid: u32) -> f64 {
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let mut total = 0u64;
    let mut pending = vec![pid];
    let stats: Vec<(u32, u32, u64)> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let parent = fields[1].parse().ok()?;
            let cpu = fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?;
            Some((p, parent, cpu))
        })
        .collect();
    while let Some(current) = pending.pop() {
        for (p, parent, cpu) in &stats {
            if *p == current {
                total += cpu;
            }
            if *parent == current {
                pending.push(*p);
            }
        }
    }
    total as f64 / ticks_per_second
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Header,
    WasmFloor,
    Wasm,
    Lua,
    ExtProc,
    LiteLlm,
}

impl Variant {
    const ALL: [Variant; 6] = [
        Self::Header,
        Self::WasmFloor,
        Self::Wasm,
        Self::Lua,
        Self::ExtProc,
        Self::LiteLlm,
    ];

    fn index(self) -> usize {
        Self::ALL.iter().position(|v| *v == self).unwrap()
    }

    /// The model header the client sends itself (variants that route without reading bodies).
    fn client_header(self) -> Option<&'static str> {
        matches!(self, Self::Header | Self::WasmFloor).then_some(MODEL)
    }

    fn name(self) -> &'static str {
        match self {
            Self::Header => "1 header (no filter)",
            Self::WasmFloor => "2a wasm, no path scanned",
            Self::Wasm => "2 wasm (this filter)",
            Self::Lua => "3 lua",
            Self::ExtProc => "4 ext_proc (stand-in)",
            Self::LiteLlm => "5 litellm",
        }
    }
}

/// The Lua variant: buffer the body, find the top-level "model" by walking the JSON with
/// string.find (strings and nesting tracked, so nested "model" keys are skipped).
const LUA: &str = r#"
local function top_level_model(body)
  local depth, i, n = 0, 1, #body
  local expect_key, last_key = false, nil
  while i <= n do
    local s = string.find(body, '[{}%[%]",:]', i)
    if not s then return nil end
    local c = string.sub(body, s, s)
    if c == '"' then
      local j = s + 1
      while true do
        local q = string.find(body, '["\\]', j)
        if not q then return nil end
        if string.sub(body, q, q) == '\\' then j = q + 2 else j = q; break end
      end
      local text = string.sub(body, s + 1, j - 1)
      if depth == 1 and expect_key then
        last_key = text
        expect_key = false
      elseif depth == 1 and last_key == "model" then
        return text
      end
      i = j + 1
    else
      if c == '{' or c == '[' then
        depth = depth + 1
        if depth == 1 then expect_key = true end
      elseif c == '}' or c == ']' then
        depth = depth - 1
      elseif c == ',' and depth == 1 then
        expect_key, last_key = true, nil
      end
      i = s + 1
    end
  end
  return nil
end

function envoy_on_request(handle)
  handle:headers():remove("x-ai-eg-model")
  local body = handle:body()
  if body == nil then return end
  local model = top_level_model(body:getBytes(0, body:length()))
  if model == nil then
    handle:respond({[":status"] = "400", ["content-type"] = "application/json"},
      '{"error":{"message":"no model","type":"invalid_request_error","param":"model","code":"missing_model"}}')
    return
  end
  handle:headers():replace("x-ai-eg-model", model)
  handle:clearRouteCache()
end
"#;

fn indent(text: &str, spaces: usize) -> String {
    text.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(spaces)))
        .collect()
}

/// The Envoy configuration of a variant: the same listener, routes and backend for all.
fn envoy_config(
    variant: Variant,
    backend: SocketAddr,
    processor: Option<SocketAddr>,
    wasm: &Path,
) -> String {
    let filter = match variant {
        Variant::Header | Variant::LiteLlm => String::new(),
        Variant::Wasm | Variant::WasmFloor => format!(
            r#"- name: model-router
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
    config:
      name: model-router
      allow_on_headers_stop_iteration: true
      vm_config:
        runtime: envoy.wasm.runtime.v8
        code: {{ local: {{ filename: {} }} }}
      configuration:
        "@type": type.googleapis.com/google.protobuf.StringValue
        value: '{}'
"#,
            wasm.display(),
            if variant == Variant::Wasm {
                "{}"
            } else {
                r#"{"header":"x-not-routed","paths":["/scanned-nowhere"]}"#
            }
        ),
        Variant::Lua => format!(
            "- name: envoy.filters.http.lua\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua\n    default_source_code:\n      inline_string: |\n{}",
            indent(LUA, 8)
        ),
        Variant::ExtProc => r#"- name: envoy.filters.http.ext_proc
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
    grpc_service:
      envoy_grpc: { cluster_name: processor, authority: processor }
      timeout: 5s
    processing_mode:
      request_header_mode: SEND
      response_header_mode: SKIP
      request_body_mode: BUFFERED
      response_body_mode: NONE
"#
        .to_owned(),
    };
    let routes: String = MODELS
        .iter()
        .map(|m| {
            format!(
                "- match: {{ prefix: /, headers: [{{ name: x-ai-eg-model, string_match: {{ exact: \"{m}\" }} }}] }}\n  route: {{ cluster: backend, timeout: 60s }}\n"
            )
        })
        .collect();
    let processor_cluster = processor.map_or(String::new(), |addr| {
        format!(
            r#"  - name: processor
    type: STATIC
    connect_timeout: 2s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: processor
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }}] }}]
"#,
            addr.port()
        )
    });
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
  - name: bench
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    per_connection_buffer_limit_bytes: 9437184
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          http_filters:
{filters}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            virtual_hosts:
            - name: bench
              domains: ["*"]
              routes:
{routes}              - match: {{ prefix: / }}
                direct_response: {{ status: 404 }}
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: backend
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }} }}] }}]
{processor_cluster}"#,
        filters = indent(&filter, 10),
        routes = indent(&routes, 14),
        port = backend.port(),
    )
}

/// A chat request of about `size` bytes asking for one token, `model` first or last.
fn body(size: usize, model_last: bool) -> Vec<u8> {
    let skeleton = |filler: &str| {
        let messages = json!([{"role": "user", "content": filler}]);
        if model_last {
            format!(r#"{{"messages":{messages},"max_tokens":1,"model":"{MODEL}"}}"#)
        } else {
            format!(r#"{{"model":"{MODEL}","max_tokens":1,"messages":{messages}}}"#)
        }
    };
    let overhead = skeleton("").len();
    let words = "the quick brown fox jumps over the lazy dog ";
    let filler: String = words
        .chars()
        .cycle()
        .take(size.saturating_sub(overhead))
        .collect();
    let text = skeleton(&filler);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["model"],
        MODEL
    );
    text.into_bytes()
}

struct Workload {
    label: String,
    size: usize,
    model_last: bool,
    file: PathBuf,
}

#[derive(Default, Clone)]
struct Throughput {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_ms_per_1k: f64,
    errors: u64,
}

#[derive(Default, Clone)]
struct Latency {
    p50_us: f64,
    p99_us: f64,
    errors: u64,
}

fn micros(text: &str) -> f64 {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().unwrap_or(f64::NAN) * scale
}

/// wrk at saturation: requests/s, latency percentiles, and the proxy's CPU per 1,000 requests.
fn run_wrk(
    wrk: &Path,
    url: &str,
    workload: &Workload,
    header: Option<&str>,
    seconds: u64,
    proxy_pids: &[u32],
) -> Throughput {
    let script = workload.file.with_extension("lua");
    let cpu_before: f64 = proxy_pids.iter().map(|p| cpu_seconds(*p)).sum();
    let output = Command::new(wrk)
        .args([
            "-t1",
            &format!("-c{CONCURRENCY}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(url)
        .env("BENCH_BODY", &workload.file)
        .env("BENCH_HEADER", header.unwrap_or(""))
        .output()
        .expect("run wrk");
    let cpu = proxy_pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>() - cpu_before;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut result = Throughput::default();
    let mut total = 0u64;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", rps] => result.rps = rps.parse().unwrap_or(0.0),
            ["50%", value] => result.p50_us = micros(value),
            ["99%", value] => result.p99_us = micros(value),
            [count, "requests", "in", ..] => total = count.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", count] => {
                result.errors += count.parse::<u64>().unwrap_or(0)
            }
            ["Socket", "errors:", rest @ ..] => {
                result.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    if total == 0 {
        eprintln!(
            "wrk completed no request:\n{text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        result.errors += 1;
    }
    result.cpu_ms_per_1k = cpu * 1e3 / total.max(1) as f64 * 1e3;
    result
}

/// oha at a fixed low rate: latency percentiles without queueing.
fn run_oha(
    oha: &Path,
    url: &str,
    workload: &Workload,
    header: Option<&str>,
    seconds: u64,
) -> Latency {
    let mut command = Command::new(oha);
    command
        .args([
            "--no-tui",
            "--output-format",
            "json",
            "-z",
            &format!("{seconds}s"),
        ])
        .args(["-q", &LATENCY_RATE.to_string(), "-c", "4", "-m", "POST"])
        .args(["-H", "content-type: application/json", "-D"])
        .arg(&workload.file);
    if let Some(model) = header {
        command.args(["-H", &format!("x-ai-eg-model: {model}")]);
    }
    let output = command.arg(url).output().expect("run oha");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "oha output is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let percentile = |p: &str| report["latencyPercentiles"][p].as_f64().unwrap_or(f64::NAN) * 1e6;
    let statuses = report["statusCodeDistribution"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let errors = statuses
        .iter()
        .filter(|(code, _)| code.as_str() != "200")
        .map(|(_, n)| n.as_u64().unwrap_or(0))
        .sum::<u64>()
        + report["errorDistribution"].as_object().map_or(0, |errors| {
            errors
                .iter()
                // oha cuts the requests still in flight when the duration ends.
                .filter(|(kind, _)| kind.as_str() != "aborted due to deadline")
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        });
    let ok = statuses.get("200").and_then(Value::as_u64).unwrap_or(0);
    assert!(ok > 0, "oha got no 200: {}", report);
    Latency {
        p50_us: percentile("p50"),
        p99_us: percentile("p99"),
        errors,
    }
}

/// A running proxy of one variant, and the processes whose CPU it costs.
struct Proxy {
    url: String,
    pids: Vec<u32>,
    envoy: Option<Envoy>,
    _processes: Vec<Process>,
}

impl Proxy {
    /// Waits until Envoy has no request in flight (LiteLLM exposes no such gauge).
    fn wait_idle(&self) {
        let Some(envoy) = &self.envoy else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while envoy.stat("http.bench.downstream_rq_active") > 0 {
            assert!(Instant::now() < deadline, "Envoy still busy after 60 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn start_proxy(variant: Variant, backend: SocketAddr, tools: &Tools, dir: &Path) -> Proxy {
    if variant == Variant::LiteLlm {
        let config = dir.join("litellm.yaml");
        let models: String = MODELS
            .iter()
            .map(|m| format!("- model_name: \"{m}\"\n  litellm_params:\n    model: \"openai/{m}\"\n    api_base: http://{backend}/v1\n    api_key: none\n"))
            .collect();
        std::fs::write(
            &config,
            format!("model_list:\n{models}litellm_settings:\n  telemetry: false\n"),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&tools.litellm)
            .args(["--config"])
            .arg(&config)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--num_workers",
                "1",
            ])
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("LITELLM_LOG", "ERROR")
            .env("NO_PROXY", "*")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("litellm.log")).unwrap())
            .spawn()
            .expect("start litellm");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_http_ok(addr, "/health/liveliness");
        return Proxy {
            url: format!("http://{addr}/v1/chat/completions"),
            pids: vec![child.id()],
            envoy: None,
            _processes: vec![Process(child)],
        };
    }
    let mut processes = Vec::new();
    let mut pids = Vec::new();
    let processor = (variant == Variant::ExtProc).then(|| {
        let (process, addr) = spawn_listening(
            Command::new(&tools.body_router).args(["--port", "0"]),
            "listening on",
        );
        pids.push(process.0.id());
        processes.push(process);
        addr
    });
    let envoy = Envoy::launch(&envoy_config(variant, backend, processor, &tools.wasm))
        .unwrap_or_else(|e| panic!("{e}"));
    pids.push(envoy.pid());
    Proxy {
        url: format!("http://{}/v1/chat/completions", envoy.listener),
        pids,
        envoy: Some(envoy),
        _processes: processes,
    }
}

struct Tools {
    wasm: PathBuf,
    sim: PathBuf,
    body_router: PathBuf,
    litellm: PathBuf,
    wrk: PathBuf,
    oha: PathBuf,
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let (seconds, latency_seconds) = if smoke { (1, 1) } else { (10, 10) };
    let tools = Tools {
        wasm: required("MODEL_ROUTER_WASM"),
        sim: required("LLM_SIM_BIN"),
        body_router: required("BODY_ROUTER_BIN"),
        litellm: required("LITELLM_BIN"),
        wrk: required("WRK_BIN"),
        oha: required("OHA_BIN"),
    };
    let dir = std::env::temp_dir().join(format!("model-router-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let mut sim = Command::new(&tools.sim);
    sim.args(["--name", "backend", "--port", "0", "--max-num-seqs", "1024"]);
    for model in MODELS {
        sim.args(["--model", model]);
    }
    let (_backend, backend) = spawn_listening(&mut sim, "on http://");

    let mut workloads = Vec::new();
    for (size, size_label) in [
        (1024, "1 KiB"),
        (64 * 1024, "64 KiB"),
        (1024 * 1024, "1 MiB"),
    ] {
        for model_last in [false, true] {
            let label = format!(
                "{size_label}, model {}",
                if model_last { "last" } else { "first" }
            );
            let file = dir.join(format!("body-{size}-{model_last}.json"));
            std::fs::write(&file, body(size, model_last)).unwrap();
            std::fs::write(
                file.with_extension("lua"),
                "local f = io.open(os.getenv(\"BENCH_BODY\"), \"rb\")\nwrk.body = f:read(\"*a\")\nf:close()\nwrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nlocal model = os.getenv(\"BENCH_HEADER\")\nif model ~= nil and model ~= \"\" then wrk.headers[\"x-ai-eg-model\"] = model end\n",
            )
            .unwrap();
            workloads.push(Workload {
                label,
                size,
                model_last,
                file,
            });
        }
    }

    let mut throughput = vec![vec![Throughput::default(); Variant::ALL.len()]; workloads.len()];
    let mut latency = vec![vec![Latency::default(); Variant::ALL.len()]; workloads.len()];
    let mut memory = Vec::new();
    let mut failures = Vec::new();
    for (v, variant) in Variant::ALL.into_iter().enumerate() {
        let proxy = start_proxy(variant, backend, &tools, &dir);
        let header = variant.client_header();
        eprintln!("== {} at {}", variant.name(), proxy.url);
        for (w, workload) in workloads.iter().enumerate() {
            // Start from an idle proxy (the last run may have left requests in flight), then
            // warm up (connections, JIT) before measuring.
            proxy.wait_idle();
            run_wrk(&tools.wrk, &proxy.url, workload, header, 1, &proxy.pids);
            let t = run_wrk(
                &tools.wrk,
                &proxy.url,
                workload,
                header,
                seconds,
                &proxy.pids,
            );
            let l = run_oha(&tools.oha, &proxy.url, workload, header, latency_seconds);
            eprintln!(
                "   {:<22} {:>9.0} req/s  p50 {:>8.0} us  p99 {:>8.0} us  {:>6.2} CPU ms/1k  | fixed {LATENCY_RATE}/s: p50 {:>7.0} us  p99 {:>7.0} us",
                workload.label, t.rps, t.p50_us, t.p99_us, t.cpu_ms_per_1k, l.p50_us, l.p99_us
            );
            if t.errors + l.errors > 0 {
                failures.push(format!(
                    "{} / {}: {} errors",
                    variant.name(),
                    workload.label,
                    t.errors + l.errors
                ));
            }
            throughput[w][v] = t;
            latency[w][v] = l;
        }
        if variant == Variant::Wasm {
            let envoy = proxy
                .envoy
                .as_ref()
                .expect("the wasm variant runs in Envoy");
            memory = filter_memory(envoy, &proxy.url, &tools, &dir);
        }
    }

    let report = report(&workloads, &throughput, &latency, &memory, seconds);
    if smoke {
        println!("{report}");
    } else {
        let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results");
        std::fs::create_dir_all(&results).unwrap();
        std::fs::write(results.join("gateway.md"), &report).unwrap();
        std::fs::write(results.join("gateway.svg"), chart(&workloads, &throughput)).unwrap();
        println!("{report}\nwritten: benches/results/gateway.md, benches/results/gateway.svg");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let runs = workloads.len() * Variant::ALL.len();
    println!(
        "bench {}: {} passed, {} failed",
        if smoke { "smoke" } else { "full" },
        runs - failures.len(),
        failures.len()
    );
    if !failures.is_empty() {
        eprintln!("{}", failures.join("\n"));
        std::process::exit(1);
    }
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
        std::fs::write(&file, body(size, true)).unwrap();
        let status = Command::new(&tools.oha)
            .args([
                "--no-tui",
                "-n",
                "20",
                "-c",
                "2",
                "-m",
                "POST",
                "-H",
                "content-type: application/json",
                "-D",
            ])
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

fn report(
    workloads: &[Workload],
    throughput: &[Vec<Throughput>],
    latency: &[Vec<Latency>],
    memory: &[(String, u64)],
    seconds: u64,
) -> String {
    let mut out = String::new();
    let versions = |command: &str, args: &[&str]| {
        Command::new(command)
            .args(args)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned()
            })
            .unwrap_or_default()
    };
    let envoy_version = std::env::var("ENVOY_BIN")
        .ok()
        .and_then(|envoy| Command::new(envoy).arg("--version").output().ok())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .and_then(|text| text.split("version:").nth(1).map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name\t: ").map(str::to_owned))
        .unwrap_or_default();
    let _ = writeln!(out, "# Gateway benchmark\n");
    let _ = writeln!(
        out,
        "- date: {}",
        versions("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
    );
    let _ = writeln!(
        out,
        "- machine: {} cores, {cpu}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(out, "- envoy: {envoy_version}");
    let _ = writeln!(out, "- load: wrk -t1 -c{CONCURRENCY} -d{seconds}s (HTTP/1.1 keep-alive), latency: oha -q {LATENCY_RATE} -c 4 -z {seconds}s");
    let _ = writeln!(out, "- backend: llm-sim, zero latency, `max_tokens: 1`; all on this machine's loopback, Envoy with 2 workers");
    let _ = writeln!(
        out,
        "- ratios are to variant 1 (header routing, no filter) in the same run\n"
    );
    for (w, workload) in workloads.iter().enumerate() {
        let base = &throughput[w][0];
        let base_latency = &latency[w][0];
        let _ = writeln!(out, "## {}\n", workload.label);
        let _ = writeln!(out, "| variant | req/s | x | p50 us | x | p99 us | x | CPU ms / 1k req | fixed-rate p50 us | fixed-rate p99 us |");
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (v, variant) in Variant::ALL.into_iter().enumerate() {
            let t = &throughput[w][v];
            let l = &latency[w][v];
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.2} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} |",
                variant.name(),
                t.rps,
                t.rps / base.rps,
                t.p50_us,
                t.p50_us / base.p50_us,
                t.p99_us,
                t.p99_us / base.p99_us,
                t.cpu_ms_per_1k,
                l.p50_us,
                l.p99_us
            );
        }
        let wasm = Variant::Wasm.index();
        let added = latency[w][wasm].p50_us - base_latency.p50_us;
        let cpu_added = throughput[w][wasm].cpu_ms_per_1k - base.cpu_ms_per_1k;
        let _ = writeln!(
            out,
            "\nvariant 2 minus variant 1: p50 at a fixed rate {added:+.0} us; Envoy CPU {cpu_added:+.1} us per request\n"
        );
    }
    let _ = writeln!(out, "## The filter's memory\n\n| body (model last, 20 requests) | wasm linear memory |\n|---|---:|");
    for (label, bytes) in memory {
        let _ = writeln!(out, "| {label} | {bytes} bytes |");
    }
    let find = |size: usize, last: bool| {
        workloads
            .iter()
            .position(|w| w.size == size && w.model_last == last)
            .unwrap()
    };
    let (kib, kib_last, mib_last, k64) = (
        find(1024, false),
        find(1024, true),
        find(1 << 20, true),
        find(64 << 10, true),
    );
    let ratio = |w: usize, a: Variant, b: Variant| {
        throughput[w][a.index()].rps / throughput[w][b.index()].rps
    };
    let added = |w: usize| latency[w][Variant::Wasm.index()].p50_us - latency[w][0].p50_us;
    let cpu_added = |w: usize| {
        throughput[w][Variant::Wasm.index()].cpu_ms_per_1k - throughput[w][0].cpu_ms_per_1k
    };
    // Variant 1 does the same work whether the model comes first or last: the gap between
    // its two 1 KiB runs is this machine's run-to-run noise.
    let noise = (latency[kib][0].p50_us - latency[kib_last][0].p50_us).abs();
    use Variant::{ExtProc, Header, LiteLlm, Lua, Wasm};
    let flat = memory
        .first()
        .zip(memory.last())
        .is_some_and(|(a, b)| b.1 <= a.1 + 65536);
    let targets = [
        (
            "1 KiB (model first): throughput >= 0.90x of variant 1",
            ratio(kib, Wasm, Header) >= 0.90,
            format!("{:.2}x", ratio(kib, Wasm, Header)),
        ),
        (
            "1 KiB (model last): throughput >= 0.90x of variant 1",
            ratio(kib_last, Wasm, Header) >= 0.90,
            format!("{:.2}x", ratio(kib_last, Wasm, Header)),
        ),
        (
            "1 KiB: added p50 <= 30 us",
            added(kib) <= 30.0,
            format!(
                "{:+.0} us (variant 1's own p50 varies by {noise:.0} us between runs); Envoy CPU {:+.1} us per request",
                added(kib),
                cpu_added(kib)
            ),
        ),
        (
            "1 MiB, model last: added p50 <= 2 ms",
            added(mib_last) <= 2000.0,
            format!(
                "{:+.0} us; Envoy CPU {:+.0} us per request ({:.0} MB/s of body per added CPU second)",
                added(mib_last),
                cpu_added(mib_last),
                (1 << 20) as f64 / cpu_added(mib_last).max(1.0)
            ),
        ),
        (
            "64 KiB (model last): >= 2x Lua",
            ratio(k64, Wasm, Lua) >= 2.0,
            format!("{:.2}x", ratio(k64, Wasm, Lua)),
        ),
        (
            "64 KiB (model last): >= 2x ext_proc",
            ratio(k64, Wasm, ExtProc) >= 2.0,
            format!("{:.2}x", ratio(k64, Wasm, ExtProc)),
        ),
        (
            "64 KiB (model last): >= 20x LiteLLM",
            ratio(k64, Wasm, LiteLlm) >= 20.0,
            format!("{:.1}x", ratio(k64, Wasm, LiteLlm)),
        ),
        (
            "filter memory flat from 1 KiB to 8 MiB bodies",
            flat,
            format!(
                "{} -> {} bytes",
                memory.first().map_or(0, |m| m.1),
                memory.last().map_or(0, |m| m.1)
            ),
        ),
    ];
    let _ = writeln!(
        out,
        "\n## Targets\n\n| target | met | measured |\n|---|---|---|"
    );
    for (target, met, measured) in targets {
        let _ = writeln!(
            out,
            "| {target} | {} | {measured} |",
            if met { "yes" } else { "**no**" }
        );
    }
    out
}

/// Throughput and p99 by body size (model last), one bar per variant.
fn chart(workloads: &[Workload], throughput: &[Vec<Throughput>]) -> String {
    let colors = [
        "#888888", "#9ecae1", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
    ];
    let rows: Vec<usize> = (0..workloads.len())
        .filter(|&w| workloads[w].model_last)
        .collect();
    let (width, panel) = (900.0, 300.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        2.0 * panel + 80.0
    );
    for (p, (title, value)) in [
        (
            "requests/s (log scale), model last",
            (|t: &Throughput| t.rps) as fn(&Throughput) -> f64,
        ),
        (
            "p99 latency at saturation, us (log scale), model last",
            |t: &Throughput| t.p99_us,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let top = 30.0 + p as f64 * (panel + 30.0);
        let _ = writeln!(
            svg,
            "<text x=\"10\" y=\"{}\" font-size=\"14\">{title}</text>",
            top - 8.0
        );
        let max = rows
            .iter()
            .flat_map(|&w| throughput[w].iter().map(value))
            .fold(1.0f64, f64::max)
            .log10()
            .ceil();
        let group = (width - 60.0) / rows.len() as f64;
        for (g, &w) in rows.iter().enumerate() {
            let x0 = 50.0 + g as f64 * group;
            for (v, t) in throughput[w].iter().enumerate() {
                let height = (value(t).max(1.0).log10() / max) * (panel - 40.0);
                let bars = Variant::ALL.len() as f64;
                let x = x0 + 10.0 + v as f64 * (group - 20.0) / bars;
                let _ = writeln!(
                    svg,
                    "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{height:.1}\" fill=\"{}\"><title>{} {}: {:.0}</title></rect>",
                    top + panel - 40.0 - height, (group - 20.0) / bars - 4.0, colors[v], Variant::ALL[v].name(), workloads[w].label, value(t)
                );
            }
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                x0 + group / 2.0 - 30.0,
                top + panel - 22.0,
                workloads[w].label.split(',').next().unwrap()
            );
        }
    }
    for (v, variant) in Variant::ALL.into_iter().enumerate() {
        let x = 20.0 + v as f64 * 148.0;
        let y = 2.0 * panel + 60.0;
        let _ = writeln!(svg, "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{y}\">{}</text>", y - 10.0, colors[v], x + 16.0, variant.name());
    }
    svg.push_str("</svg>\n");
    svg
}
