//! The filter's own price counted, not timed: the instructions Envoy executes per 1 KiB
//! request under valgrind's callgrind, for header routing, the do-nothing filter, the filter
//! routing only, and the filter with its response side (its default). Unlike CPU time on a
//! shared two-core machine, these counts repeat to within a tenth of a percent, so the small
//! differences the filter's share is made of can be told apart.

use crate::load::body;
use crate::variants::envoy_with_filter;
use std::net::SocketAddr;
use std::path::Path;
use testkit::callgrind::Callgrind;
use testkit::client::{request, Connection, Frames, Protocol};
use testkit::scenario::LLAMA as MODEL;
use testkit::wasm_filter::http_filter;

/// What is counted: a variant's Envoy configuration and whether the client sends the header.
pub struct Counted {
    pub name: &'static str,
    filter: Option<&'static str>,
    client_header: bool,
}

/// The variants counted, each against the one before it.
pub const COUNTED: [Counted; 4] = [
    Counted {
        name: "1 header (no filter)",
        filter: None,
        client_header: true,
    },
    Counted {
        name: "2a wasm, no path scanned",
        filter: Some(r#"{"header":"x-not-routed","paths":["/scanned-nowhere"]}"#),
        client_header: true,
    },
    Counted {
        name: "2 wasm, routing only",
        filter: Some(r#"{"response":{"usage":false}}"#),
        client_header: false,
    },
    Counted {
        name: "2 wasm, default (response side on)",
        filter: Some("{}"),
        client_header: false,
    },
];

/// Instructions per request of each [`COUNTED`] configuration, `requests` of them counted
/// after a warm-up, Envoy on one worker.
pub fn count(
    runtime: &tokio::runtime::Runtime,
    backend: SocketAddr,
    wasm: &Path,
    dir: &Path,
    requests: usize,
) -> Vec<(&'static str, f64)> {
    COUNTED
        .iter()
        .map(|counted| {
            let filter = counted
                .filter
                .map_or(String::new(), |c| http_filter(wasm, c));
            let config = envoy_with_filter(&filter, backend, None);
            let total = count_one(runtime, &config, counted.client_header, dir, requests);
            (counted.name, total as f64 / requests as f64)
        })
        .collect()
}

fn count_one(
    runtime: &tokio::runtime::Runtime,
    config: &str,
    client_header: bool,
    dir: &Path,
    requests: usize,
) -> u64 {
    let mut envoy = Callgrind::start(config, dir).unwrap();
    let listener = envoy.listener;
    let body = bytes::Bytes::from(body(1024, false));
    let send = |n: usize| {
        runtime.block_on(async {
            let mut connection = Connection::open(listener, Protocol::Http1).await.unwrap();
            for _ in 0..n {
                let mut headers = vec![("content-type", "application/json")];
                if client_header {
                    headers.push(("x-ai-eg-model", MODEL));
                }
                let frames = Frames::new([body.clone()]);
                let reply = connection
                    .send(request("POST", "/v1/chat/completions", &headers, frames))
                    .await
                    .unwrap();
                assert_eq!(reply.status, 200, "{}", reply.text());
            }
        })
    };
    send(200);
    envoy.count(|| send(requests)).unwrap()
}

/// The report's section: instructions per request, each against the row before it, and in
/// microseconds at the rate header routing ran in the same run.
pub fn markdown(counts: &[(&str, f64)], header_cpu_us: f64) -> String {
    let per_us = counts[0].1 / header_cpu_us;
    let mut out = String::from(
        "Instructions Envoy executes per 1 KiB request (callgrind, one worker, counted after a \
         warm-up; repeat runs agree to within 0.1%), and the same in microseconds at the rate \
         variant 1 ran at in this run:\n\n| configuration | instructions / request | more than the row above | ≈ us more |\n|---|---:|---:|---:|\n",
    );
    for (index, (name, count)) in counts.iter().enumerate() {
        let more = index.checked_sub(1).map(|i| count - counts[i].1);
        out.push_str(&format!(
            "| {name} | {count:.0} | {} | {} |\n",
            more.map_or("".into(), |m| format!("{m:+.0}")),
            more.map_or("".into(), |m| format!("{:+.1}", m / per_us)),
        ));
    }
    out
}
