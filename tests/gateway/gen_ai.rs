//! What the response-side checks share: the usage an answer reports, read from the bytes the
//! client got with serde_json (independently of the filter's own reader), and the filter's
//! metrics as Prometheus shows them.

use serde_json::Value;
use testkit::prometheus::Scrape;
use testkit::{ensure, Outcome};

pub const TOKENS: &str = "model_router_gen_ai_client_token_usage";
pub const TTFT: &str = "model_router_gen_ai_server_time_to_first_token_ms_count";
pub const TPOT: &str = "model_router_gen_ai_server_time_per_output_token_us_count";
pub const DURATION: &str = "model_router_gen_ai_server_request_duration_ms_count";
pub const RESPONSES: &str = "model_router_responses";

/// The counter of a response problem (`malformed`, `truncated`...).
pub fn problem(name: &str) -> String {
    format!("model_router_responses_{name}")
}

/// Tokens by type and the answering model, as an answer reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reported {
    pub input: u64,
    pub output: u64,
    pub cached: u64,
    pub model: Option<String>,
}

/// The usage of an answer to `path`, JSON or an event stream, as a client reads it.
pub fn reported(path: &str, body: &[u8]) -> Result<Reported, String> {
    let documents: Vec<Value> = if body.starts_with(b"{") {
        vec![serde_json::from_slice(body).map_err(|e| format!("answer: {e}"))?]
    } else {
        sse_data(body)?
    };
    let mut reported = Reported::default();
    let count = |value: &Value| value.as_u64().unwrap_or(0);
    for document in &documents {
        // Streams wrap the answer: Responses API events in `response`, Anthropic's first
        // event in `message`.
        let answer = if document["response"].is_object() {
            &document["response"]
        } else if document["message"].is_object() {
            &document["message"]
        } else {
            document
        };
        if let Some(model) = answer["model"].as_str() {
            reported.model = Some(model.to_owned());
        }
        let usage = &answer["usage"];
        if !usage.is_object() {
            continue;
        }
        match path {
            "/v1/messages" => {
                if usage.get("input_tokens").is_some() {
                    reported.cached = count(&usage["cache_read_input_tokens"]);
                    reported.input = count(&usage["input_tokens"])
                        + reported.cached
                        + count(&usage["cache_creation_input_tokens"]);
                }
                reported.output = count(&usage["output_tokens"]);
            }
            "/v1/responses" => {
                reported.input = count(&usage["input_tokens"]);
                reported.output = count(&usage["output_tokens"]);
                reported.cached = count(&usage["input_tokens_details"]["cached_tokens"]);
            }
            _ => {
                reported.input = count(&usage["prompt_tokens"]);
                reported.output = count(&usage["completion_tokens"]);
                reported.cached = count(&usage["prompt_tokens_details"]["cached_tokens"]);
            }
        }
    }
    Ok(reported)
}

/// The JSON data of every complete event of a stream (`[DONE]` left out).
pub fn sse_data(body: &[u8]) -> Result<Vec<Value>, String> {
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    // A stream cut short ends in part of an event, which counts for nothing.
    let complete = &text[..text.rfind("\n\n").map_or(0, |end| end + 2)];
    complete
        .split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            (!data.is_empty() && data != ["[DONE]"]).then(|| data.join("\n"))
        })
        .map(|data| serde_json::from_str(&data).map_err(|e| format!("event {data:?}: {e}")))
        .collect()
}

/// Labels of a model's metrics (`response` None for the responses counter).
pub fn labels<'a>(
    operation: &'a str,
    request: &'a str,
    response: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut labels = vec![
        ("gen_ai_operation_name", operation),
        ("gen_ai_request_model", request),
    ];
    if let Some(response) = response {
        labels.push(("gen_ai_response_model", response));
    }
    labels
}

/// A metric's growth between two scrapes.
pub fn grew(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.sum(name, labels) - before.sum(name, labels)
}

/// Checks that the token counters grew by what the answers reported.
pub fn expect_tokens(
    before: &Scrape,
    after: &Scrape,
    labels: &[(&str, &str)],
    expected: &Reported,
) -> Outcome {
    for (token_type, count) in [
        ("input", expected.input),
        ("output", expected.output),
        ("cached", expected.cached),
    ] {
        let mut with_type = labels.to_vec();
        with_type.push(("gen_ai_token_type", token_type));
        let counted = grew(before, after, TOKENS, &with_type);
        ensure!(
            counted == count as f64,
            "{token_type} tokens grew by {counted}, the answers reported {count} ({labels:?})"
        );
    }
    Ok(())
}

/// The value of `key=` in an access log line.
pub fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|field| field.strip_prefix(key)?.strip_prefix('='))
}
