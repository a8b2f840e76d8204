//! The load: request bodies of a given size with the model first or last, wrk at saturation
//! (throughput, latency, the proxy's CPU per request) and a fixed low rate (latency without
//! queueing) from this process.

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use testkit::client::{request, Connection, Frames, Protocol};
use testkit::process::cpu_seconds;
use testkit::scenario::LLAMA as MODEL;

/// Connections kept busy by wrk: enough to saturate two cores through Envoy.
pub const CONCURRENCY: u32 = 16;
/// Requests per second of the latency run up to 64 KiB bodies, and at 1 MiB: far below
/// saturation for every variant (LiteLLM and Lua serve 1 MiB bodies at a few tens a second on
/// this machine, and an open-loop client counts the queue a rate above that builds).
pub const LATENCY_RATE: u32 = 100;
pub const LATENCY_RATE_1MIB: u32 = 10;

/// A chat request of about `size` bytes asking for one token, `model` first or last.
pub fn body(size: usize, model_last: bool) -> Vec<u8> {
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

pub struct Workload {
    pub label: String,
    pub size: usize,
    pub model_last: bool,
    pub file: PathBuf,
    pub content_type: String,
}

impl Workload {
    /// Requests per second of this workload's fixed-rate latency run.
    pub fn latency_rate(&self) -> u32 {
        if self.size >= 1 << 20 {
            LATENCY_RATE_1MIB
        } else {
            LATENCY_RATE
        }
    }

    /// 1 KiB, 64 KiB and 1 MiB chat requests, model first and last, written under `dir` with
    /// the wrk script that sends them.
    pub fn all(dir: &Path) -> Vec<Self> {
        let mut workloads = Vec::new();
        for (size, size_label) in [(1 << 10, "1 KiB"), (64 << 10, "64 KiB"), (1 << 20, "1 MiB")] {
            for model_last in [false, true] {
                let label = format!(
                    "{size_label}, model {}",
                    if model_last { "last" } else { "first" }
                );
                let file = dir.join(format!("body-{size}-{model_last}.json"));
                std::fs::write(&file, body(size, model_last)).unwrap();
                std::fs::write(file.with_extension("lua"), WRK_SCRIPT).unwrap();
                workloads.push(Workload {
                    label,
                    size,
                    model_last,
                    file,
                    content_type: "application/json".into(),
                });
            }
        }
        workloads
    }
}

/// Sends the body file named by BENCH_BODY as BENCH_CONTENT_TYPE, with the routing header when
/// BENCH_HEADER is set.
pub const WRK_SCRIPT: &str = r#"local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
local model = os.getenv("BENCH_HEADER")
if model ~= nil and model ~= "" then wrk.headers["x-ai-eg-model"] = model end
"#;

#[derive(Default, Clone)]
pub struct Throughput {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// CPU of the proxy's processes, ms per 1,000 requests (= us per request).
    pub cpu_ms_per_1k: f64,
    pub errors: u64,
}

#[derive(Default, Clone)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
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
pub fn run_wrk(
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
            // A slow answer is a measurement, not an error (wrk's default gives up at 2 s).
            "--timeout",
            "60s",
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(url)
        .env("BENCH_BODY", &workload.file)
        .env("BENCH_CONTENT_TYPE", &workload.content_type)
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

/// Connections the fixed-rate latency run spreads its requests over.
const LATENCY_CONNECTIONS: usize = 4;

/// Requests at a fixed low rate (open loop: each is due at its own time, whatever the others
/// do) over a few keep-alive connections, with their content-length as the SDKs send them;
/// latency percentiles without queueing. A request its connection could not send when due,
/// because the previous answer had not come, counts from when it was due, so a stall is not
/// hidden by the requests it delayed; one sent on time counts from when it was sent, so the
/// client's own timer (which wakes up to a millisecond late) is not counted.
pub fn fixed_rate(
    runtime: &tokio::runtime::Runtime,
    addr: SocketAddr,
    workload: &Workload,
    header: Option<&str>,
    seconds: u64,
) -> Latency {
    let body = bytes::Bytes::from(std::fs::read(&workload.file).expect("workload body"));
    let length = body.len().to_string();
    let rate = workload.latency_rate();
    let total = rate as usize * seconds as usize;
    let interval = Duration::from_secs(1) / rate;
    let header = header.map(str::to_owned);
    let content_type = workload.content_type.to_owned();
    let (mut latencies, errors) = runtime.block_on(async move {
        let start = tokio::time::Instant::now();
        let tasks: Vec<_> = (0..LATENCY_CONNECTIONS)
            .map(|connection| {
                let (body, header, content_type, length) = (
                    body.clone(),
                    header.clone(),
                    content_type.clone(),
                    length.clone(),
                );
                tokio::spawn(async move {
                    let mut client = Connection::open(addr, Protocol::Http1).await.ok();
                    let (mut latencies, mut errors) = (Vec::new(), 0u64);
                    let mut answered = start;
                    for index in (connection..total).step_by(LATENCY_CONNECTIONS) {
                        let due = start + interval * index as u32;
                        tokio::time::sleep_until(due).await;
                        let origin = if answered > due {
                            due
                        } else {
                            tokio::time::Instant::now()
                        };
                        let mut headers = vec![
                            ("content-type", content_type.as_str()),
                            ("content-length", length.as_str()),
                        ];
                        if let Some(model) = &header {
                            headers.push(("x-ai-eg-model", model));
                        }
                        let frames = Frames::new([body.clone()]);
                        let request = request("POST", "/v1/chat/completions", &headers, frames);
                        let reply = match client.as_mut() {
                            Some(connection) => connection.send(request).await,
                            None => Err("not connected".to_owned()),
                        };
                        answered = tokio::time::Instant::now();
                        match reply {
                            Ok(reply) if reply.status == 200 => {
                                latencies.push((answered - origin).as_secs_f64() * 1e6)
                            }
                            _ => {
                                errors += 1;
                                client = Connection::open(addr, Protocol::Http1).await.ok();
                            }
                        }
                    }
                    (latencies, errors)
                })
            })
            .collect();
        let (mut latencies, mut errors) = (Vec::new(), 0);
        for task in tasks {
            let (l, e) = task.await.expect("latency task");
            latencies.extend(l);
            errors += e;
        }
        (latencies, errors)
    });
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    Latency {
        p50_us: percentile(0.50),
        p99_us: percentile(0.99),
        errors,
    }
}
