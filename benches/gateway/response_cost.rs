//! The cost of the response side: the same filter with `response.usage` on and off, in the
//! same run, rounds interleaved (on and off alternate which goes first), against the same
//! zero-latency llm-sim backend.
//!
//! - streamed: chat answers of 1,000 tokens (1,000 SSE chunks, plus role, finish, usage and
//!   `[DONE]`), `stream_options.include_usage` asked;
//! - JSON: short chat answers (the prompt echoed, about 10 tokens).
//!
//! For each, wrk at saturation gives throughput and Envoy's CPU per response; the difference
//! on minus off is the CPU the response side adds, per response and (streamed) per event.
//! Then the filter's memory after 100,000-token streams.

use crate::load::{run_wrk, Throughput, Workload, WRK_SCRIPT};
use crate::report::Spread;
use crate::variants::{start_filter, Proxy};
use serde_json::json;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use testkit::client::{request, send, Frames, Protocol, Reply};
use testkit::scenario::LLAMA as MODEL;

const ON: &str = r#"{"response":{"usage":true}}"#;
const OFF: &str = r#"{"response":{"usage":false}}"#;
/// Tokens of a streamed answer.
const STREAM_TOKENS: u64 = 1_000;
/// Tokens of each stream of the memory check, and how many such streams.
const LONG_STREAM_TOKENS: u64 = 100_000;
const LONG_STREAMS: usize = 3;

/// One workload's runs: `[round] -> (on, off)`.
struct Measured {
    label: &'static str,
    events: u64,
    rounds: Vec<(Throughput, Throughput)>,
}

/// What the report shows.
pub struct ResponseCost {
    measured: Vec<Measured>,
    /// The filter's linear memory before and after the long streams.
    memory: (u64, u64),
    seconds: u64,
    pub errors: Vec<String>,
}

fn chat(tokens: Option<u64>) -> String {
    let mut body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say this is a test of the response side"}],
    });
    if let Some(tokens) = tokens {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        body["min_tokens"] = json!(tokens);
        body["max_tokens"] = json!(tokens);
    }
    body.to_string()
}

fn workload(dir: &Path, name: &str, body: &str) -> Workload {
    let file = dir.join(format!("response-{name}.json"));
    std::fs::write(&file, body).unwrap();
    std::fs::write(file.with_extension("lua"), WRK_SCRIPT).unwrap();
    Workload {
        label: name.to_owned(),
        size: body.len(),
        model_last: false,
        content_type: "application/json".into(),
        file,
    }
}

/// POSTs a chat request to `addr`.
fn post(addr: SocketAddr, body: &str) -> Reply {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let length = body.len().to_string();
    let headers = [
        ("content-type", "application/json"),
        ("content-length", length.as_str()),
    ];
    let frames = Frames::new([bytes::Bytes::copy_from_slice(body.as_bytes())]);
    runtime
        .block_on(send(
            addr,
            Protocol::Http1,
            request("POST", "/v1/chat/completions", &headers, frames),
        ))
        .expect("an answer")
}

/// The events of one answer to `body`, counted by asking the backend directly.
fn events_per_answer(backend: SocketAddr, body: &str) -> u64 {
    post(backend, body).text().matches("\n\n").count() as u64
}

/// The filter's linear memory, as its gauge last recorded it.
fn memory(proxy: &Proxy) -> u64 {
    proxy
        .envoy
        .as_ref()
        .expect("our Envoy")
        .counter("wasm_memory_bytes")
}

pub fn measure(
    wasm: &Path,
    wrk: &Path,
    backend: SocketAddr,
    dir: &Path,
    rounds: usize,
    seconds: u64,
) -> ResponseCost {
    let stream_body = chat(Some(STREAM_TOKENS));
    let workloads = [
        (
            "streamed, 1,000 tokens",
            workload(dir, "stream", &stream_body),
            events_per_answer(backend, &stream_body),
        ),
        ("JSON, short answer", workload(dir, "json", &chat(None)), 1),
    ];
    let mut measured: Vec<Measured> = workloads
        .iter()
        .map(|(label, _, events)| Measured {
            label,
            events: *events,
            rounds: Vec::new(),
        })
        .collect();
    let mut errors = Vec::new();
    for round in 0..rounds {
        let mut results = vec![(Throughput::default(), Throughput::default()); workloads.len()];
        let order = if round % 2 == 0 { [ON, OFF] } else { [OFF, ON] };
        for config in order {
            let proxy = start_filter(backend, wasm, config);
            for (w, (label, workload, _)) in workloads.iter().enumerate() {
                proxy.wait_idle();
                run_wrk(wrk, &proxy.url, workload, None, 1, &proxy.pids);
                let run = run_wrk(wrk, &proxy.url, workload, None, seconds, &proxy.pids);
                let side = if config == ON { "on " } else { "off" };
                eprintln!(
                    "   response side {side} {label:<24} {:>8.0} responses/s  {:>8.1} CPU us/response",
                    run.rps, run.cpu_ms_per_1k
                );
                if run.errors > 0 {
                    errors.push(format!(
                        "round {}: {label}, response side {side}: {} errors",
                        round + 1,
                        run.errors
                    ));
                }
                if config == ON {
                    results[w].0 = run;
                } else {
                    results[w].1 = run;
                }
            }
        }
        for (m, result) in measured.iter_mut().zip(results) {
            m.rounds.push(result);
        }
    }
    // Memory: a few short answers (everything defined on first use is), then long streams.
    let proxy = start_filter(backend, wasm, ON);
    let addr = proxy.envoy.as_ref().expect("our Envoy").listener;
    let send = |body: &str| post(addr, body);
    for _ in 0..3 {
        send(&stream_body);
        send(&chat(None));
    }
    // The gauge is recorded when a request is routed: this one records the memory after
    // every answer before it.
    send(&chat(None));
    let before = memory(&proxy);
    let long = chat(Some(LONG_STREAM_TOKENS));
    for _ in 0..LONG_STREAMS {
        let reply = send(&long);
        assert!(
            reply.text().ends_with("data: [DONE]\n\n"),
            "a long stream broke"
        );
    }
    send(&chat(None));
    let after = memory(&proxy);
    ResponseCost {
        measured,
        memory: (before, after),
        seconds,
        errors,
    }
}

impl ResponseCost {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "## Response side: usage and metrics on vs off\n\nThe same filter with `response.usage` on and off, same run, {} rounds interleaved, wrk at saturation ({} s per run, 16 connections); median over the rounds (lowest-highest). CPU is Envoy's, per response.\n",
            self.measured.first().map_or(0, |m| m.rounds.len()),
            self.seconds
        );
        out.push_str("| answers | responses/s on | responses/s off | throughput on/off | CPU us/response on | off | added us/response | added us/SSE event |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for m in &self.measured {
            let on = Spread::of(m.rounds.iter().map(|(on, _)| on.rps));
            let off = Spread::of(m.rounds.iter().map(|(_, off)| off.rps));
            let ratio = Spread::of(m.rounds.iter().map(|(on, off)| on.rps / off.rps));
            let cpu_on = Spread::of(m.rounds.iter().map(|(on, _)| on.cpu_ms_per_1k));
            let cpu_off = Spread::of(m.rounds.iter().map(|(_, off)| off.cpu_ms_per_1k));
            let added = Spread::of(
                m.rounds
                    .iter()
                    .map(|(on, off)| on.cpu_ms_per_1k - off.cpu_ms_per_1k),
            );
            let per_event = if m.events > 1 {
                let per = Spread::of(
                    m.rounds
                        .iter()
                        .map(|(on, off)| (on.cpu_ms_per_1k - off.cpu_ms_per_1k) / m.events as f64),
                );
                format!(
                    "{:.2} ({:.2}-{:.2}), {} events",
                    per.median, per.min, per.max, m.events
                )
            } else {
                "-".to_owned()
            };
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.0} | {:.3} ({:.3}-{:.3}) | {:.0} | {:.0} | {:.1} ({:.1}-{:.1}) | {per_event} |",
                m.label,
                on.median,
                off.median,
                ratio.median,
                ratio.min,
                ratio.max,
                cpu_on.median,
                cpu_off.median,
                added.median,
                added.min,
                added.max,
            );
        }
        let (before, after) = self.memory;
        let _ = writeln!(
            out,
            "\nFilter memory (wasm linear memory): {before} bytes after 1,000-token streams, {after} bytes after {LONG_STREAMS} streams of {LONG_STREAM_TOKENS} tokens ({}).",
            if before == after { "flat" } else { "GREW" }
        );
        out
    }
}
