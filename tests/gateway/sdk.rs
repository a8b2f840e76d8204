//! Real clients: the OpenAI Python SDK (chat, streaming chat with and without
//! `include_usage`, embeddings, Responses API JSON and streamed) and the Anthropic Python SDK
//! (messages JSON and streamed), run by tests/clients/sdk_clients.py against a gateway that
//! adds `include_usage`. Envoy's Prometheus counters and histograms and its access log must
//! match what the SDKs read, call by call and model by model.

use crate::gen_ai::{grew, labels, log_field, DURATION, TOKENS, TPOT, TTFT};
use crate::World;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::process::Command;
use testkit::envoy::{root, Envoy, LocalGateway};
use testkit::process::required_file;
use testkit::prometheus::Scrape;
use testkit::scenario::MISTRAL;
use testkit::{ensure, Outcome};

testkit::cases!(World;
openai_and_anthropic_sdks_see_what_envoy_counts);

/// One call of the script, as its SDK read the answer.
#[derive(Debug, Deserialize)]
pub struct Call {
    pub call: String,
    pub request_id: String,
    pub path: String,
    pub model: String,
    pub usage: Usage,
}

#[derive(Debug, Deserialize)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cached: u64,
}

/// The plugin configuration of a gateway that adds `include_usage` (for the SDK's plain
/// streaming call).
pub fn sdk_plugin_config(models: &[&str]) -> String {
    json!({
        "models": models.iter().map(|m| json!({"name": m})).collect::<Vec<_>>(),
        "response": {"usage": true, "add_include_usage": true, "filter_state": crate::usage::ACCESS_LOG_STATE},
    })
    .to_string()
}

/// Runs the SDK script against `envoy` for `model`; the calls it made.
pub fn run_sdk_clients(
    envoy: &Envoy,
    model: &str,
    run_id: &str,
    cached: Option<u64>,
) -> Result<Vec<Call>, String> {
    let python = required_file("SDK_PYTHON");
    let mut command = Command::new(python);
    command
        .arg(root().join("tests/clients/sdk_clients.py"))
        .arg(format!("http://{}", envoy.listener))
        .arg(model)
        .arg(run_id);
    if let Some(cached) = cached {
        command.arg(cached.to_string());
    }
    let output = command
        .output()
        .map_err(|e| format!("sdk_clients.py: {e}"))?;
    ensure!(
        output.status.success(),
        "sdk_clients.py failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).map_err(|e| format!("{line:?}: {e}")))
        .collect()
}

fn operation(path: &str) -> &'static str {
    crate::usage::operation(path)
}

/// Checks Envoy's metrics (grown from `before`) and access log against the SDKs' calls.
pub fn expect_sdk_calls_counted(
    envoy: &Envoy,
    before: &Scrape,
    calls: &[Call],
    model: &str,
) -> Outcome {
    ensure!(calls.len() == 8, "the script made {} calls", calls.len());
    let mut totals: BTreeMap<&str, [u64; 3]> = BTreeMap::new();
    let mut answers: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for call in calls {
        ensure!(
            call.model == model,
            "{}: the answer named {}",
            call.call,
            call.model
        );
        let op = operation(&call.path);
        let total = totals.entry(op).or_default();
        total[0] += call.usage.input;
        total[1] += call.usage.output;
        total[2] += call.usage.cached;
        let streamed = call.call.ends_with("stream") || call.call.contains("stream_");
        let (all, streams) = answers.entry(op).or_default();
        *all += 1.0;
        *streams += f64::from(u8::from(streamed && call.usage.output > 1));
        let line = envoy.wait_access_log(&format!("request_id={}", call.request_id))?;
        let field = |key| log_field(&line, key).unwrap_or("-");
        let number = |n: u64, reported: bool| if reported { n.to_string() } else { "-".into() };
        ensure!(
            field("input_tokens") == call.usage.input.to_string()
                && field("output_tokens") == number(call.usage.output, call.usage.output > 0)
                && (field("cached_tokens") == call.usage.cached.to_string()
                    || call.usage.cached == 0 && field("cached_tokens") == "-")
                && field("response_model") == model
                && field("ttft_ms").parse::<u64>().is_ok(),
            "{}: access log {line} for {:?}",
            call.call,
            call.usage
        );
    }
    let after = envoy.scrape_until(|s| {
        answers.iter().all(|(op, (all, _))| {
            grew(before, s, DURATION, &labels(op, model, Some(model))) >= *all
        })
    })?;
    for (op, total) in &totals {
        let model_labels = labels(op, model, Some(model));
        for (token_type, count) in ["input", "output", "cached"].iter().zip(total) {
            let mut with_type = model_labels.clone();
            with_type.push(("gen_ai_token_type", token_type));
            let counted = grew(before, &after, TOKENS, &with_type);
            ensure!(
                counted == *count as f64,
                "{op}: {token_type} tokens grew by {counted}, the SDKs read {count}"
            );
        }
        let (all, streams) = answers[op];
        for (histogram, expected) in [(TTFT, all), (DURATION, all), (TPOT, streams)] {
            let recorded = grew(before, &after, histogram, &model_labels);
            ensure!(
                recorded == expected,
                "{op}: {histogram} grew by {recorded}, expected {expected}"
            );
        }
    }
    ensure!(
        grew(
            before,
            &after,
            "model_router_requests_include_usage_added",
            &[]
        ) == 1.0,
        "include_usage was not added to exactly the one plain streaming call"
    );
    Ok(())
}

fn openai_and_anthropic_sdks_see_what_envoy_counts(world: &World) -> Outcome {
    let envoy = {
        let _guard = world.runtime.enter();
        LocalGateway::new(&world.backends)?
            .plugin_config(&sdk_plugin_config(&[MISTRAL]))?
            .start()?
    };
    let before = envoy.scrape()?;
    let run_id = format!("sdk-{}", world.tag());
    let calls = run_sdk_clients(&envoy, MISTRAL, &run_id, Some(2))?;
    ensure!(
        calls.iter().filter(|c| c.usage.cached == 2).count() == 7,
        "llm-sim's cached tokens did not reach the SDKs: {calls:?}"
    );
    expect_sdk_calls_counted(&envoy, &before, &calls, MISTRAL)
}
