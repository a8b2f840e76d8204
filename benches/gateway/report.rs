//! The report: every variant's median over the interleaved rounds, each ratio to header
//! routing with its spread (lowest and highest round), the targets, and the chart.

use crate::load::{Latency, Throughput, Workload, CONCURRENCY, LATENCY_RATE, LATENCY_RATE_1MIB};
use crate::variants::Variant;
use std::fmt::Write as _;
use std::process::Command;

/// One variant on one workload in one round.
#[derive(Default, Clone)]
pub struct Run {
    pub throughput: Throughput,
    pub latency: Latency,
}

/// `runs[round][workload][variant]`.
pub type Runs = Vec<Vec<Vec<Run>>>;

/// The median of a value over the rounds, with the lowest and highest round.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut values: Vec<f64> = values.into_iter().collect();
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Self {
            median,
            min: values[0],
            max: values[n - 1],
        }
    }

    /// `1.23 (1.10-1.31)`, with `digits` decimals.
    pub fn show(&self, digits: usize) -> String {
        format!(
            "{:.digits$} ({:.digits$}-{:.digits$})",
            self.median, self.min, self.max
        )
    }
}

/// What the report reads from the runs.
pub struct Summary<'a> {
    pub workloads: &'a [Workload],
    pub runs: &'a Runs,
}

impl Summary<'_> {
    /// A value of `variant` on workload `w` over the rounds.
    pub fn value(&self, w: usize, variant: Variant, value: fn(&Run) -> f64) -> Spread {
        Spread::of(
            self.runs
                .iter()
                .map(|round| value(&round[w][variant.index()])),
        )
    }

    /// `variant`'s value over `base`'s, round by round.
    pub fn ratio(
        &self,
        w: usize,
        variant: Variant,
        base: Variant,
        value: fn(&Run) -> f64,
    ) -> Spread {
        self.compare(w, variant, base, value, |a, b| a / b)
    }

    /// `variant`'s value minus `base`'s, round by round.
    pub fn difference(
        &self,
        w: usize,
        variant: Variant,
        base: Variant,
        value: fn(&Run) -> f64,
    ) -> Spread {
        self.compare(w, variant, base, value, |a, b| a - b)
    }

    fn compare(
        &self,
        w: usize,
        variant: Variant,
        base: Variant,
        value: fn(&Run) -> f64,
        combine: fn(f64, f64) -> f64,
    ) -> Spread {
        Spread::of(self.runs.iter().map(|round| {
            combine(
                value(&round[w][variant.index()]),
                value(&round[w][base.index()]),
            )
        }))
    }

    fn workload(&self, size: usize, model_last: bool) -> usize {
        self.workloads
            .iter()
            .position(|w| w.size == size && w.model_last == model_last)
            .expect("every size runs with the model first and last")
    }
}

fn rps(run: &Run) -> f64 {
    run.throughput.rps
}
fn p99(run: &Run) -> f64 {
    run.throughput.p99_us
}
fn cpu(run: &Run) -> f64 {
    run.throughput.cpu_ms_per_1k
}

fn first_line(command: &str, args: &[&str]) -> String {
    Command::new(command)
        .args(args)
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout);
            text.lines().next().unwrap_or("").trim().to_owned()
        })
        .unwrap_or_default()
}

/// What the filter asks of Envoy per 1 KiB request, read off src/filter/ (the SDK makes no
/// host call of its own per request): the difference the counts and CPU must explain.
const HOST_CALLS: &str = "\
| per request (1 KiB body in one read, HTTP/1.1) | 2a: path not scanned | 2: routing | 2: response side (default) |
|---|---|---|---|
| VM entries by Envoy (context, headers, body x2, response headers and body, log, done, delete) | all | all | all |
| header map read in one call (`proxy_get_header_map_pairs`), answer allocated in the VM | 1 | 1 | +1 (response) |
| body read (`proxy_get_buffer_bytes`), answer allocated in the VM | 0 | 1 | +1 per response chunk |
| routing header set (`proxy_replace_header_map_value`), Envoy re-matches the route | 0 | 1 | 0 |
| counters and histograms (`proxy_increment_metric`, `proxy_record_metric`) | 1 | 1 | +4 to 6 |
| clock (`proxy_get_current_time_nanoseconds`) | 0 | 0 | +2 or 3 |
| filter state (`proxy_set_property`) | 0 | 0 | one per `response.filter_state` key (none by default) |
| bytes scanned in the VM | 0 | 1,024 | the answer's |

Every host call whose answer Envoy copies into the VM (a header map, a body) costs Envoy about
8,000 instructions whatever its size: proxy-wasm-cpp-host's `WasmBase::allocMemory` calls into
the VM's allocator and, around it, builds a set of five allowed host-call names each time. A
routed request needs two (its headers and its body), the do-nothing filter one; the response
side two more (its headers and each body chunk). A filter state value costs about 10,000.
";

/// The markdown report. `memory` is the filter's linear memory after bodies of growing size.
pub fn markdown(
    summary: &Summary,
    memory: &[(String, u64)],
    instructions: &str,
    seconds: u64,
    versions: &[(&str, String)],
) -> String {
    let mut out = String::new();
    let rounds = summary.runs.len();
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name\t: ").map(str::to_owned))
        .unwrap_or_default();
    let _ = writeln!(out, "# Gateway benchmark\n");
    let _ = writeln!(
        out,
        "- date: {}",
        first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
    );
    let _ = writeln!(
        out,
        "- machine: {} cores, {cpu_model}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for (name, version) in versions {
        let _ = writeln!(out, "- {name}: {version}");
    }
    let _ = writeln!(out, "- load: wrk -t1 -c{CONCURRENCY} -d{seconds}s (HTTP/1.1 keep-alive); latency: {LATENCY_RATE} requests/s ({LATENCY_RATE_1MIB} with 1 MiB bodies) for {seconds}s over 4 keep-alive connections, open loop, each request timed from when it was sent, or from when it was due if its connection was still waiting for the previous answer");
    let _ = writeln!(out, "- backend: llm-sim, zero latency, `max_tokens: 1`; everything on this machine's loopback; every Envoy with 2 workers");
    let _ = writeln!(out, "- {rounds} rounds; in each, every variant runs every workload, the variants' order rotating from round to round. Values are medians over the rounds; `x` is the ratio to variant 1 (header routing) in the same round, as `median (lowest-highest)` over the rounds. CPU is that of the proxy's processes (Envoy, plus the processor's process for ext_proc and Envoy AI Gateway), in us per request\n");
    for (w, workload) in summary.workloads.iter().enumerate() {
        let _ = writeln!(out, "## {}\n", workload.label);
        let _ = writeln!(out, "| variant | req/s | x | p99 us | x | CPU us / req | x | fixed-rate p50 us | fixed-rate p99 us |");
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for variant in Variant::ALL {
            let median = |value: fn(&Run) -> f64| summary.value(w, variant, value).median;
            let ratio = |value: fn(&Run) -> f64| summary.ratio(w, variant, Variant::Header, value);
            let _ = writeln!(
                out,
                "| {} | {:.0} | {} | {:.0} | {} | {:.1} | {} | {:.0} | {:.0} |",
                variant.name(),
                median(rps),
                ratio(rps).show(2),
                median(p99),
                ratio(p99).show(2),
                median(cpu),
                ratio(cpu).show(2),
                median(|r| r.latency.p50_us),
                median(|r| r.latency.p99_us),
            );
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "## The filter's own price at 1 KiB\n");
    let _ = writeln!(out, "Envoy CPU per request of this filter (2) and of the same filter scanning no path (2a), round by round, and what each does per request:\n");
    let _ = writeln!(out, "| workload | 2 CPU us / req | 2a CPU us / req | 2 minus 2a, us | 2a minus 1, us |\n|---|---:|---:|---:|---:|");
    for model_last in [false, true] {
        let w = summary.workload(1024, model_last);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            summary.workloads[w].label,
            summary.value(w, Variant::Wasm, cpu).show(1),
            summary.value(w, Variant::WasmFloor, cpu).show(1),
            summary
                .difference(w, Variant::Wasm, Variant::WasmFloor, cpu)
                .show(1),
            summary
                .difference(w, Variant::WasmFloor, Variant::Header, cpu)
                .show(1),
        );
    }
    let _ = writeln!(out, "\n{instructions}\n{HOST_CALLS}");
    let _ = writeln!(out, "## The filter's memory\n\n| body (model last, 20 requests) | wasm linear memory |\n|---|---:|");
    for (label, bytes) in memory {
        let _ = writeln!(out, "| {label} | {bytes} bytes |");
    }
    let _ = writeln!(
        out,
        "\n## Targets\n\n| target | met | measured (median, lowest-highest round) |\n|---|---|---|"
    );
    for (target, met, measured) in targets(summary, memory) {
        let _ = writeln!(
            out,
            "| {target} | {} | {measured} |",
            if met { "yes" } else { "**no**" }
        );
    }
    out
}

fn targets(summary: &Summary, memory: &[(String, u64)]) -> Vec<(String, bool, String)> {
    use Variant::{AiGateway, ExtProc, Header, LiteLlm, Lua, Wasm, WasmFloor};
    let mut targets = Vec::new();
    let mut add =
        |target: String, met: bool, measured: String| targets.push((target, met, measured));
    for model_last in [false, true] {
        let w = summary.workload(1024, model_last);
        let ratio = summary.ratio(w, Wasm, Header, rps);
        add(
            format!(
                "{}: throughput >= 0.90x of variant 1",
                summary.workloads[w].label
            ),
            ratio.median >= 0.90,
            format!("{}x", ratio.show(2)),
        );
        let added = summary.difference(w, Wasm, WasmFloor, cpu);
        add(
            format!(
                "{}: Envoy CPU within 3 us per request of the do-nothing filter (2a)",
                summary.workloads[w].label
            ),
            added.median <= 3.0,
            format!("{} us", added.show(1)),
        );
    }
    for (w, workload) in summary.workloads.iter().enumerate() {
        let ratio = summary.ratio(w, Wasm, AiGateway, rps);
        let p99_ratio = summary.ratio(w, Wasm, AiGateway, p99);
        let cpu_ratio = summary.ratio(w, Wasm, AiGateway, cpu);
        add(
            format!(
                "{}: >= 2.5x Envoy AI Gateway's throughput, lower p99, less CPU",
                workload.label
            ),
            ratio.median >= 2.5 && p99_ratio.median < 1.0 && cpu_ratio.median < 1.0,
            format!(
                "{}x throughput, {}x p99, {}x CPU",
                ratio.show(2),
                p99_ratio.show(2),
                cpu_ratio.show(2)
            ),
        );
    }
    let mib = summary.workload(1 << 20, true);
    let added = summary.difference(mib, Wasm, Header, |r| r.latency.p50_us);
    add(
        "1 MiB, model last: added p50 <= 2 ms".into(),
        added.median <= 2000.0,
        format!("{} us", added.show(0)),
    );
    let k64 = summary.workload(64 << 10, true);
    for (other, factor) in [(Lua, 2.0), (ExtProc, 2.0), (LiteLlm, 20.0)] {
        let ratio = summary.ratio(k64, Wasm, other, rps);
        add(
            format!("64 KiB, model last: >= {factor}x {}", other.name()),
            ratio.median >= factor,
            format!("{}x", ratio.show(2)),
        );
    }
    let flat = memory
        .first()
        .zip(memory.last())
        .is_some_and(|(a, b)| b.1 <= a.1 + 65536);
    add(
        "filter memory flat from 1 KiB to 8 MiB bodies".into(),
        flat,
        format!(
            "{} -> {} bytes",
            memory.first().map_or(0, |m| m.1),
            memory.last().map_or(0, |m| m.1)
        ),
    );
    targets
}

/// Throughput and p99 by body size (model last), one bar per variant at its median, with a
/// whisker from the lowest to the highest round.
pub fn chart(summary: &Summary) -> String {
    let colors = [
        "#888888", "#9ecae1", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#d62728",
    ];
    let rows: Vec<usize> = (0..summary.workloads.len())
        .filter(|&w| summary.workloads[w].model_last)
        .collect();
    let (width, panel) = (960.0, 300.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        2.0 * panel + 100.0
    );
    type Panel = (&'static str, fn(&Run) -> f64);
    let panels: [Panel; 2] = [
        (
            "requests/s (log scale), model last; whiskers: lowest and highest round",
            rps,
        ),
        ("p99 latency at saturation, us (log scale), model last", p99),
    ];
    for (p, (title, value)) in panels.into_iter().enumerate() {
        let top = 30.0 + p as f64 * (panel + 30.0);
        let _ = writeln!(
            svg,
            "<text x=\"10\" y=\"{}\" font-size=\"14\">{title}</text>",
            top - 8.0
        );
        let max = rows
            .iter()
            .flat_map(|&w| Variant::ALL.map(|v| summary.value(w, v, value).max))
            .fold(1.0f64, f64::max)
            .log10()
            .ceil();
        let scale = |v: f64| (v.max(1.0).log10() / max) * (panel - 40.0);
        let group = (width - 60.0) / rows.len() as f64;
        let bars = Variant::ALL.len() as f64;
        for (g, &w) in rows.iter().enumerate() {
            let x0 = 50.0 + g as f64 * group;
            for (v, variant) in Variant::ALL.into_iter().enumerate() {
                let spread = summary.value(w, variant, value);
                let bar = (group - 20.0) / bars - 4.0;
                let x = x0 + 10.0 + v as f64 * (group - 20.0) / bars;
                let bottom = top + panel - 40.0;
                let _ = writeln!(
                    svg,
                    "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} {}: {}</title></rect>",
                    bottom - scale(spread.median), scale(spread.median), colors[v], variant.name(), summary.workloads[w].label, spread.show(0)
                );
                let middle = x + bar / 2.0;
                let _ = writeln!(
                    svg,
                    "<line x1=\"{middle:.1}\" x2=\"{middle:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>",
                    bottom - scale(spread.min), bottom - scale(spread.max)
                );
            }
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                x0 + group / 2.0 - 30.0,
                top + panel - 22.0,
                summary.workloads[w]
                    .label
                    .split(',')
                    .next()
                    .unwrap_or_default()
            );
        }
    }
    for (v, variant) in Variant::ALL.into_iter().enumerate() {
        let x = 20.0 + (v % 4) as f64 * 230.0;
        let y = 2.0 * panel + 60.0 + (v / 4) as f64 * 20.0;
        let _ = writeln!(svg, "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{y}\">{}</text>", y - 10.0, colors[v], x + 16.0, variant.name());
    }
    svg.push_str("</svg>\n");
    svg
}
