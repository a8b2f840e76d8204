//! Response side: every API's answers, JSON and streamed, give the token counts, latency
//! histograms and access-log fields of what the backend actually sent, per model; answers
//! are counted by status class; model labels are bounded.

use crate::gen_ai::{
    expect_tokens, grew, labels, log_field, problem, reported, Reported, DURATION, RESPONSES, TPOT,
    TTFT,
};
use crate::{chat_body, World};
use serde_json::{json, Value};
use testkit::client::{Protocol, Reply};
use testkit::envoy::{Envoy, LocalGateway};
use testkit::scenario::{LLAMA, MISTRAL, PLAIN};
use testkit::{ensure, Outcome};

/// The filter-state keys envoy.yaml's access log prints, which the cases that start their own
/// gateway ask for too.
pub const ACCESS_LOG_STATE: [&str; 5] = [
    "response_model",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "time_to_first_token_ms",
];

testkit::cases!(World;
    every_api_counts_tokens_per_model_in_both_modes,
    streams_without_include_usage_count_latency_but_no_tokens,
    cached_tokens_are_counted_in_every_api,
    answers_are_counted_by_status_class,
    unlisted_models_share_the_other_label,
    without_a_model_list_answered_models_become_labels,
);

/// A request body for `path` naming `model`, streamed or not.
pub fn api_body(path: &str, model: &str, stream: bool) -> Value {
    let prompt = "Say this is a test of the usage counters";
    let mut body = match path {
        "/v1/completions" => json!({"model": model, "prompt": prompt}),
        "/v1/embeddings" => json!({"model": model, "input": [prompt, "and another one"]}),
        "/v1/responses" => json!({"model": model, "input": prompt}),
        "/v1/messages" => json!({"model": model, "max_tokens": 64,
            "messages": [{"role": "user", "content": prompt}]}),
        _ => json!({"model": model, "messages": [{"role": "user", "content": prompt}]}),
    };
    if stream {
        body["stream"] = json!(true);
        if matches!(path, "/v1/chat/completions" | "/v1/completions") {
            body["stream_options"] = json!({"include_usage": true});
        }
    }
    body
}

/// The `gen_ai.operation.name` of an API.
pub fn operation(path: &str) -> &'static str {
    match path {
        "/v1/completions" => "text_completion",
        "/v1/embeddings" => "embeddings",
        _ => "chat",
    }
}

/// Sends one request to `envoy` with its own request id; returns the reply and its id.
pub fn ask(
    world: &World,
    envoy: &Envoy,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Result<(Reply, String), String> {
    ask_tagged(world, envoy, path, body, headers).map(|(reply, id, _)| (reply, id))
}

/// [`ask`], also returning the tag the backends saw.
pub fn ask_tagged(
    world: &World,
    envoy: &Envoy,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Result<(Reply, String, String), String> {
    let id = format!("usage-{}", world.tag());
    let bytes = body.to_string();
    let length = bytes.len().to_string();
    let mut all = vec![
        ("x-request-id", id.as_str()),
        ("content-length", length.as_str()),
    ];
    all.extend_from_slice(headers);
    let (reply, tag) = world.exchange_at(
        envoy.listener,
        Protocol::Http1,
        "POST",
        path,
        &all,
        vec![bytes.into()],
    )?;
    Ok((reply, id, tag))
}

/// Checks everything one 2xx answer to `model` should have left in `envoy`'s metrics (from
/// `before`) and access log: returns what it reported.
pub fn expect_counted(
    envoy: &Envoy,
    before: &testkit::prometheus::Scrape,
    path: &str,
    model: &str,
    reply: &Reply,
    id: &str,
) -> Result<Reported, String> {
    ensure!(
        reply.status == 200,
        "{path}: status {} {}",
        reply.status,
        reply.text()
    );
    let answer = reported(path, &reply.body)?;
    ensure!(
        answer.model.as_deref() == Some(model),
        "{path}: the answer names {:?}",
        answer.model
    );
    let streamed = reply
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/event-stream"));
    let op = operation(path);
    let model_labels = labels(op, model, Some(model));
    let after = envoy.scrape_until(|s| grew(before, s, DURATION, &model_labels) >= 1.0)?;
    let mut status = labels(op, model, None);
    status.push(("status_class", "2xx"));
    ensure!(
        grew(before, &after, RESPONSES, &status) == 1.0,
        "{path}: the 2xx responses counter did not grow by one"
    );
    expect_tokens(before, &after, &model_labels, &answer).map_err(|e| format!("{path}: {e}"))?;
    for (histogram, expected) in [
        (TTFT, 1.0),
        (DURATION, 1.0),
        (
            TPOT,
            if streamed && answer.output > 1 {
                1.0
            } else {
                0.0
            },
        ),
    ] {
        let recorded = grew(before, &after, histogram, &model_labels);
        ensure!(
            recorded == expected,
            "{path}: {histogram} grew by {recorded}, expected {expected}"
        );
    }
    let line = envoy.wait_access_log(&format!("request_id={id}"))?;
    let field = |key| log_field(&line, key).unwrap_or_default().to_owned();
    ensure!(
        field("response_model") == model,
        "{path}: access log {line}"
    );
    ensure!(
        field("input_tokens") == answer.input.to_string()
            && field("output_tokens")
                == if answer.output > 0 {
                    answer.output.to_string()
                } else {
                    "-".to_owned()
                },
        "{path}: access log {line} for {answer:?}"
    );
    ensure!(
        field("ttft_ms").parse::<u64>().is_ok(),
        "{path}: no time to first token in {line}"
    );
    Ok(answer)
}

fn every_api_counts_tokens_per_model_in_both_modes(world: &World) -> Outcome {
    let mut cases = vec![
        ("/v1/chat/completions", LLAMA, false),
        ("/v1/chat/completions", PLAIN, true),
    ];
    for path in [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/responses",
        "/v1/messages",
    ] {
        cases.push((path, MISTRAL, false));
        cases.push((path, MISTRAL, true));
    }
    cases.push(("/v1/embeddings", MISTRAL, false));
    for (path, model, stream) in cases {
        let before = world.envoy.scrape()?;
        let (reply, id) = ask(
            world,
            &world.envoy,
            path,
            &api_body(path, model, stream),
            &[],
        )?;
        let answer = expect_counted(&world.envoy, &before, path, model, &reply, &id)
            .map_err(|e| format!("{e} (stream: {stream})"))?;
        ensure!(
            answer.input > 0 && (answer.output > 0 || path == "/v1/embeddings"),
            "{path}: the answer reported no usage: {}",
            reply.text()
        );
    }
    Ok(())
}

fn streams_without_include_usage_count_latency_but_no_tokens(world: &World) -> Outcome {
    let mut body = chat_body(MISTRAL);
    body["stream"] = json!(true);
    let before = world.envoy.scrape()?;
    let (reply, id) = ask(world, &world.envoy, "/v1/chat/completions", &body, &[])?;
    ensure!(reply.status == 200, "status {}", reply.status);
    ensure!(
        !reply.text().contains("\"usage\""),
        "the client got a usage chunk it did not ask for"
    );
    let model_labels = labels("chat", MISTRAL, Some(MISTRAL));
    let after = world
        .envoy
        .scrape_until(|s| grew(&before, s, DURATION, &model_labels) >= 1.0)?;
    expect_tokens(&before, &after, &model_labels, &Reported::default())?;
    ensure!(
        grew(&before, &after, TTFT, &model_labels) == 1.0,
        "no time to first token recorded"
    );
    ensure!(
        grew(&before, &after, &problem("missing_usage"), &[]) == 1.0,
        "the missing usage was not counted"
    );
    let line = world.envoy.wait_access_log(&format!("request_id={id}"))?;
    ensure!(
        log_field(&line, "input_tokens") == Some("-"),
        "access log {line}"
    );
    Ok(())
}

fn cached_tokens_are_counted_in_every_api(world: &World) -> Outcome {
    let cached = [(llm_sim::CACHED_TOKENS_HEADER, "3")];
    for (path, stream) in [
        ("/v1/chat/completions", false),
        ("/v1/chat/completions", true),
        ("/v1/responses", true),
        ("/v1/messages", false),
        ("/v1/messages", true),
    ] {
        let before = world.envoy.scrape()?;
        let body = api_body(path, MISTRAL, stream);
        let (reply, id) = ask(world, &world.envoy, path, &body, &cached)?;
        let answer = expect_counted(&world.envoy, &before, path, MISTRAL, &reply, &id)?;
        ensure!(answer.cached == 3, "{path}: {answer:?}");
        let line = world.envoy.wait_access_log(&format!("request_id={id}"))?;
        ensure!(
            log_field(&line, "cached_tokens") == Some("3"),
            "{path}: access log {line}"
        );
    }
    Ok(())
}

fn answers_are_counted_by_status_class(world: &World) -> Outcome {
    let before = world.envoy.scrape()?;
    let (reply, _) = ask(
        world,
        &world.envoy,
        "/v1/chat/completions",
        &chat_body("no-such-model"),
        &[],
    )?;
    ensure!(
        reply.status == 404,
        "unknown model: status {}",
        reply.status
    );
    let fault = [(llm_sim::FAULT_HEADER, "error-500")];
    let (reply, _) = ask(
        world,
        &world.envoy,
        "/v1/chat/completions",
        &chat_body(MISTRAL),
        &fault,
    )?;
    ensure!(reply.status == 500, "error-500: status {}", reply.status);
    let class = |model, class| {
        let mut labels = labels("chat", model, None);
        labels.push(("status_class", class));
        labels
    };
    let after = world.envoy.scrape()?;
    ensure!(
        grew(&before, &after, RESPONSES, &class("other", "4xx")) == 1.0,
        "the 404 of an unknown model is not counted as other/4xx"
    );
    ensure!(
        grew(&before, &after, RESPONSES, &class(MISTRAL, "5xx")) == 1.0,
        "the backend's 500 is not counted"
    );
    ensure!(
        grew(&before, &after, crate::gen_ai::TOKENS, &[]) == 0.0,
        "error answers counted tokens"
    );
    Ok(())
}

/// A gateway whose filter lists only `models` (none: no list).
fn gateway_listing(world: &World, models: &[&str]) -> Result<Envoy, String> {
    let mut config = json!({"response": {"usage": true, "filter_state": ACCESS_LOG_STATE}});
    if !models.is_empty() {
        config["models"] = models.iter().map(|m| json!({"name": m})).collect();
    }
    let _guard = world.runtime.enter();
    LocalGateway::new(&world.backends)?
        .plugin_config(&config.to_string())?
        .start()
}

fn unlisted_models_share_the_other_label(world: &World) -> Outcome {
    let envoy = gateway_listing(world, &[LLAMA])?;
    for (model, label) in [(LLAMA, LLAMA), (MISTRAL, "other")] {
        let before = envoy.scrape()?;
        let path = "/v1/chat/completions";
        let (reply, _) = ask(world, &envoy, path, &chat_body(model), &[])?;
        let answer = reported(path, &reply.body)?;
        let model_labels = labels("chat", label, Some(label));
        let after = envoy.scrape_until(|s| grew(&before, s, DURATION, &model_labels) >= 1.0)?;
        expect_tokens(&before, &after, &model_labels, &answer)
            .map_err(|e| format!("{model}: {e}"))?;
    }
    let scrape = envoy.scrape()?;
    ensure!(
        scrape
            .matching(crate::gen_ai::TOKENS, &[("gen_ai_request_model", MISTRAL)])
            .count()
            == 0,
        "an unlisted model has a label of its own"
    );
    Ok(())
}

fn without_a_model_list_answered_models_become_labels(world: &World) -> Outcome {
    let envoy = gateway_listing(world, &[])?;
    let path = "/v1/chat/completions";
    let before = envoy.scrape()?;
    let (reply, _) = ask(world, &envoy, path, &chat_body(MISTRAL), &[])?;
    let answer = reported(path, &reply.body)?;
    let (reply, _) = ask(world, &envoy, path, &chat_body("invented-by-a-client"), &[])?;
    ensure!(reply.status == 404, "status {}", reply.status);
    let model_labels = labels("chat", MISTRAL, Some(MISTRAL));
    let after = envoy.scrape_until(|s| grew(&before, s, DURATION, &model_labels) >= 1.0)?;
    expect_tokens(&before, &after, &model_labels, &answer)?;
    let mut unknown = labels("chat", "other", None);
    unknown.push(("status_class", "4xx"));
    ensure!(
        grew(&before, &after, RESPONSES, &unknown) == 1.0,
        "a model no backend answered got a label of its own"
    );
    Ok(())
}
