//! Native throughput of the body scanners: the JSON scanner against serde_json on the same
//! bodies (serde_json parsing the whole `Value`, and deserializing a struct with only
//! `model`), and the multipart scanner against multer (the parser llm-sim reads forms with).
//!
//! `cargo bench --bench scanner` (via `./build.sh bench`) writes benches/results/scanner.md;
//! `--smoke` measures briefly and writes nothing.

use bytes::Bytes;
use model_router::request::json::ModelScanner;
use model_router::request::multipart::MultipartScanner;
use serde::Deserialize;
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};
use testkit::form::{audio, audio_form, content_type, BOUNDARY};

#[derive(Deserialize)]
struct ModelOnly {
    #[allow(dead_code)]
    model: String,
}

type Parser = fn(&[u8]) -> bool;

const PARSERS: [(&str, Parser); 3] = [
    ("ModelScanner", |body| {
        let mut scanner = ModelScanner::new(256);
        scanner.feed(body).is_ok() && scanner.finish().is_ok_and(|m| m.is_some())
    }),
    ("serde_json Value", |body| {
        serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v["model"].is_string())
    }),
    ("serde_json struct {model}", |body| {
        serde_json::from_slice::<ModelOnly>(body).is_ok()
    }),
];

/// A chat request of about `size` bytes whose message is `text` repeated, model last.
fn chat(size: usize, text: &str) -> Vec<u8> {
    let content: String = text.chars().cycle().take(size).collect();
    let body = serde_json::json!({
        "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": content}],
        "temperature": 0.2,
        "model": "meta-llama/Llama-3.1-8B-Instruct",
    });
    body.to_string().into_bytes()
}

/// A request dominated by structure: many small tool definitions.
fn tools(count: usize) -> Vec<u8> {
    let tools: Vec<serde_json::Value> = (0..count)
        .map(|i| {
            serde_json::json!({"type": "function", "function": {"name": format!("tool_{i}"), "description": "Look something up",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}, "limit": {"type": "integer", "minimum": 1, "maximum": 100}}, "required": ["q"]}}})
        })
        .collect();
    serde_json::json!({"tools": tools, "messages": [{"role": "user", "content": "hi"}], "model": "m"})
        .to_string()
        .into_bytes()
}

/// Bytes per second of `parser` on `body`: the best of several rounds of `budget` each.
fn measure(parser: impl Fn(&[u8]) -> bool, body: &[u8], budget: Duration) -> f64 {
    assert!(parser(body), "parser refused the benchmark body");
    let mut best = 0.0f64;
    for _ in 0..5 {
        let started = Instant::now();
        let mut bytes = 0usize;
        while started.elapsed() < budget {
            black_box(parser(black_box(body)));
            bytes += body.len();
        }
        best = best.max(bytes as f64 / started.elapsed().as_secs_f64());
    }
    best
}

/// The multipart scanner, fed the body in 64 KiB chunks as the filter reads it.
fn multipart_scanner(body: &[u8]) -> bool {
    let mut scanner = MultipartScanner::new(BOUNDARY.as_bytes(), 256);
    body.chunks(64 * 1024)
        .all(|chunk| scanner.feed(chunk).is_ok())
        && scanner.finish().is_ok_and(|m| m.is_some())
}

/// The multipart bodies, with the scanner's and multer's throughput in MB/s; the scanner's
/// on random audio.
fn multipart_table(out: &mut String, budget: Duration) -> f64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let multer = |body: &[u8]| {
        runtime
            .block_on(llm_sim::audio::model_field(
                &content_type(BOUNDARY),
                Bytes::copy_from_slice(body),
            ))
            .is_ok_and(|m| m.is_some())
    };
    // The model field last: the scanner reads the whole file part.
    let form = |file: Vec<u8>| audio_form("whisper-1", file, true);
    // Text with CRLF lines and dashes: the delimiter's first bytes everywhere.
    const CRLF_DASHES: &[u8] = b"--\r\n-- line of text\r\n";
    let crlf_dashes: Vec<u8> = CRLF_DASHES.iter().copied().cycle().take(1 << 20).collect();
    let bodies = [
        ("form 64 KiB, random audio", form(audio(64 << 10))),
        ("form 1 MiB, random audio", form(audio(1 << 20))),
        ("form 1 MiB, CRLF and dashes", form(crlf_dashes)),
        ("form 4 MiB, random audio", form(audio(4 << 20))),
    ];
    let _ = writeln!(
        out,
        "\n## Multipart scanner\n\nModel field last, the body fed in 64 KiB chunks; multer \
         (async, whole body as one chunk) reads every field.\n\n\
         | body | bytes | MultipartScanner MB/s | multer MB/s | scanner / multer |\n|---|---:|---:|---:|---:|"
    );
    let mut one_mib_random = 0.0;
    for (name, body) in &bodies {
        let scanner = measure(multipart_scanner, body, budget) / 1e6;
        let multer = measure(multer, body, budget) / 1e6;
        if *name == "form 1 MiB, random audio" {
            one_mib_random = scanner;
        }
        let _ = writeln!(
            out,
            "| {name} | {} | {scanner:.0} | {multer:.0} | {:.1}x |",
            body.len(),
            scanner / multer
        );
    }
    one_mib_random
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let budget = Duration::from_millis(if smoke { 10 } else { 400 });
    let english = "The quick brown fox jumps over the lazy dog. Summarise the following report in three bullet points. ";
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("chat 1 KiB, ASCII", chat(1 << 10, english)),
        ("chat 64 KiB, ASCII", chat(64 << 10, english)),
        ("chat 1 MiB, ASCII (string-heavy)", chat(1 << 20, english)),
        (
            "chat 1 MiB, escapes (\\n, \\\", \\u)",
            chat(1 << 20, "line one\nsaid \"hi\"\t\u{1} end "),
        ),
        (
            "chat 1 MiB, CJK and accents",
            chat(1 << 20, "模型の回答は、éèà ü 🙂 "),
        ),
        ("200 tool definitions (structure-heavy)", tools(200)),
        (
            "corpus: image as data URL",
            std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/corpus/openai_vision_data_url.json"
            ))
            .unwrap(),
        ),
    ];
    let mut out = String::from("# Scanner throughput (native)\n\n");
    let _ = writeln!(
        out,
        "Best of 5 rounds of {budget:?} per cell, one core, release build. MB/s = 10^6 bytes/s.\n"
    );
    let _ = writeln!(
        out,
        "| body | bytes | {} | scanner / Value |",
        PARSERS.map(|(n, _)| format!("{n} MB/s")).join(" | ")
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    let mut string_heavy = 0.0;
    let mut worst_ratio = f64::INFINITY;
    for (name, body) in &bodies {
        let rates: Vec<f64> = PARSERS
            .iter()
            .map(|(_, parser)| measure(*parser, body, budget) / 1e6)
            .collect();
        let ratio = rates[0] / rates[1];
        worst_ratio = worst_ratio.min(ratio);
        if name.contains("string-heavy") {
            string_heavy = rates[0];
        }
        let cells: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {ratio:.1}x |",
            body.len(),
            cells.join(" | ")
        );
    }
    let multipart = multipart_table(&mut out, budget);
    let _ = writeln!(
        out,
        "\n## Targets\n\n| target | met | measured |\n|---|---|---|"
    );
    let _ = writeln!(
        out,
        "| >= 1.5 GB/s on string-heavy bodies | {} | {:.2} GB/s |",
        if string_heavy >= 1500.0 {
            "yes"
        } else {
            "**no**"
        },
        string_heavy / 1e3
    );
    let _ = writeln!(
        out,
        "| >= 5x serde_json `Value` | {} | {worst_ratio:.1}x at worst |",
        if worst_ratio >= 5.0 { "yes" } else { "**no**" }
    );
    let _ = writeln!(
        out,
        "| multipart >= 1 GB/s (1 MiB form, random audio) | {} | {:.2} GB/s |",
        if multipart >= 1000.0 { "yes" } else { "**no**" },
        multipart / 1e3
    );
    println!("{out}");
    if !smoke {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results/scanner.md");
        std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
        std::fs::write(path, &out).unwrap();
        println!("written: benches/results/scanner.md");
    }
    println!(
        "scanner bench {}: {} passed, 0 failed",
        if smoke { "smoke" } else { "full" },
        bodies.len() + 4
    );
}
