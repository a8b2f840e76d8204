//! What the catalogue costs at 1 MiB: the same filter, with the scenario's catalogue, routing
//! bodies that name the model as the backend does (plain routing) and bodies that name it by
//! an alias (the model rewritten in Envoy's buffer), JSON and audio forms with the name first
//! (as the OpenAI SDKs send forms) and last (as they send JSON: messages, then model). One
//! Envoy, every workload in every round, rounds interleaved; the cost is Envoy's CPU per
//! request, whose spread over rounds is shown.

use crate::load::{run_wrk, Workload, WRK_SCRIPT};
use crate::report::Spread;
use crate::variants::start_filter;
use crate::Tools;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use testkit::form::{audio, audio_form, content_type, BOUNDARY};
use testkit::scenario::LLAMA as MODEL;

const ALIAS: &str = "gpt-4o";
const SIZE: usize = 1 << 20;

/// One comparison: the workload naming the model, and the same naming it by the alias.
struct Pair {
    label: &'static str,
    plain: Workload,
    rewritten: Workload,
}

fn workload(
    dir: &Path,
    name: &str,
    body: Vec<u8>,
    content_type: String,
    model_last: bool,
) -> Workload {
    let file = dir.join(format!("rewrite-{name}.body"));
    std::fs::write(&file, body).unwrap();
    std::fs::write(file.with_extension("lua"), WRK_SCRIPT).unwrap();
    Workload {
        label: name.to_owned(),
        size: SIZE,
        model_last,
        file,
        content_type,
    }
}

fn json_body(model: &str, model_last: bool) -> Vec<u8> {
    let body = String::from_utf8(crate::load::body(SIZE, model_last)).unwrap();
    body.replacen(
        &format!(r#""model":"{MODEL}""#),
        &format!(r#""model":"{model}""#),
        1,
    )
    .into_bytes()
}

fn form_body(model: &str, model_last: bool) -> Vec<u8> {
    audio_form(model, audio(SIZE - 400), model_last)
}

fn pairs(dir: &Path) -> Vec<Pair> {
    let json = || "application/json".to_owned();
    let mut pairs = Vec::new();
    for (label, last) in [("JSON, model first", false), ("JSON, model last", true)] {
        let key = if last { "last" } else { "first" };
        pairs.push(Pair {
            label,
            plain: workload(
                dir,
                &format!("json-{key}-plain"),
                json_body(MODEL, last),
                json(),
                last,
            ),
            rewritten: workload(
                dir,
                &format!("json-{key}-alias"),
                json_body(ALIAS, last),
                json(),
                last,
            ),
        });
    }
    for (label, last) in [
        ("audio form, model first", false),
        ("audio form, model last", true),
    ] {
        let key = if last { "last" } else { "first" };
        let form = |name: &str, model| {
            let body = form_body(model, last);
            workload(
                dir,
                &format!("form-{key}-{name}"),
                body,
                content_type(BOUNDARY),
                last,
            )
        };
        pairs.push(Pair {
            label,
            plain: form("plain", MODEL),
            rewritten: form("alias", ALIAS),
        });
    }
    pairs
}

/// Workloads measured per round.
pub const WORKLOADS: usize = 8;

/// Envoy CPU per request (us) of each pair, plain and rewritten, per round.
pub struct Results {
    labels: Vec<&'static str>,
    /// `cpu[pair] = (plain, rewritten)` per round.
    cpu: Vec<(Vec<f64>, Vec<f64>)>,
    rps: Vec<(Vec<f64>, Vec<f64>)>,
    pub failures: Vec<String>,
}

/// Measures every pair `rounds` times for `seconds` each.
pub fn measure(
    backend: SocketAddr,
    tools: &Tools,
    dir: &Path,
    rounds: usize,
    seconds: u64,
) -> Results {
    let plugin = format!(
        r#"{{"models":[{{"name":"{MODEL}","aliases":["{ALIAS}"]}},{{"name":"mistral:latest"}},{{"name":"some-cool-self-hosted-model"}}]}}"#
    );
    let proxy = start_filter(backend, &tools.wasm, &plugin);
    let pairs = pairs(dir);
    let mut results = Results {
        labels: pairs.iter().map(|p| p.label).collect(),
        cpu: vec![Default::default(); pairs.len()],
        rps: vec![Default::default(); pairs.len()],
        failures: Vec::new(),
    };
    for round in 0..rounds {
        for (p, pair) in pairs.iter().enumerate() {
            // Alternate which runs first, so that neither always follows the other.
            let mut order = [(false, &pair.plain), (true, &pair.rewritten)];
            if round % 2 == 1 {
                order.reverse();
            }
            for (rewritten, workload) in order {
                let url = if workload.content_type.starts_with("multipart/") {
                    proxy
                        .url
                        .replace("/v1/chat/completions", "/v1/audio/transcriptions")
                } else {
                    proxy.url.clone()
                };
                proxy.wait_idle();
                run_wrk(&tools.wrk, &url, workload, None, 1, &proxy.pids);
                let run = run_wrk(&tools.wrk, &url, workload, None, seconds, &proxy.pids);
                eprintln!(
                    "   rewrite round {}: {:<32} {:>7.0} req/s {:>7.1} CPU us/req",
                    round + 1,
                    workload.label,
                    run.rps,
                    run.cpu_ms_per_1k
                );
                if run.errors > 0 {
                    results.failures.push(format!(
                        "rewrite / {}: {} errors",
                        workload.label, run.errors
                    ));
                }
                let (cpu, rps) = (&mut results.cpu[p], &mut results.rps[p]);
                if rewritten {
                    cpu.1.push(run.cpu_ms_per_1k);
                    rps.1.push(run.rps);
                } else {
                    cpu.0.push(run.cpu_ms_per_1k);
                    rps.0.push(run.rps);
                }
            }
        }
    }
    let envoy = proxy.envoy.as_ref().expect("the filter runs in Envoy");
    if envoy.counter("requests_rewritten") == 0 {
        results
            .failures
            .push("rewrite: no request was rewritten".into());
    }
    results
}

impl Results {
    /// The report section: CPU per request plain and rewritten, and what the rewrite adds.
    pub fn markdown(&self, rounds: usize, seconds: u64) -> String {
        let mut out = String::from("\n## The catalogue's model rewrite, 1 MiB bodies\n\n");
        let _ = writeln!(
            out,
            "The filter with a catalogue in one Envoy: each body names the model as the backend \
             does (plain routing) or by an alias (`{ALIAS}`, rewritten to `{MODEL}` in Envoy's \
             buffer). wrk, {} connections, {seconds} s per cell, {rounds} rounds interleaved; \
             median (lowest-highest round). Envoy CPU per request is the measure: throughput \
             here is bounded by the backend and the load generator on the same two cores.\n",
            crate::load::CONCURRENCY
        );
        let _ = writeln!(
            out,
            "| body | plain: CPU us/req | rewritten: CPU us/req | added CPU | plain req/s | rewritten req/s |\n|---|---:|---:|---:|---:|---:|"
        );
        for (p, label) in self.labels.iter().enumerate() {
            let (plain, rewritten) = &self.cpu[p];
            let added = Spread::of(
                plain
                    .iter()
                    .zip(rewritten)
                    .map(|(a, b)| (b - a) / a * 100.0),
            );
            let _ = writeln!(
                out,
                "| {label} | {} | {} | {}% | {} | {} |",
                Spread::of(plain.iter().copied()).show(0),
                Spread::of(rewritten.iter().copied()).show(0),
                added.show(1),
                Spread::of(self.rps[p].0.iter().copied()).show(0),
                Spread::of(self.rps[p].1.iter().copied()).show(0),
            );
        }
        out
    }
}
