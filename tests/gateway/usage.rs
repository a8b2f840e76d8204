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
use testkit::scenario::{LLAMA, MISTRAL, PLAIN, ROUTING_HEADER};
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
    latency_is_what_the_backend_took,
    unlisted_models_share_the_other_label,
    answers_under_an_upstream_name_keep_that_label,
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
    let (reply, _, tag) = ask_tagged(
        world,
        &world.envoy,
        "/v1/chat/completions",
        &chat_body(MISTRAL),
        &fault,
    )?;
    ensure!(reply.status == 500, "error-500: status {}", reply.status);
    // Observed, not altered: the error reaches the client as the backend wrote it.
    let sent = world.seen_once(&tag)?.sent();
    ensure!(
        !sent.is_empty() && reply.body == sent,
        "the client got {:?}, the backend sent {:?}",
        reply.text(),
        String::from_utf8_lossy(&sent)
    );
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

/// A catalogue model whose backend serves it under another name: the backend gets that name in
/// the body, and its answer is counted under it (the response model), not as `other`.
fn answers_under_an_upstream_name_keep_that_label(world: &World) -> Outcome {
    const PUBLIC: &str = "llama-public";
    let config = json!({
        "models": [{"name": PUBLIC, "upstream_name": LLAMA}, {"name": MISTRAL}],
        "response": {"usage": true, "filter_state": ACCESS_LOG_STATE},
    });
    let envoy = {
        let _guard = world.runtime.enter();
        LocalGateway::new(&world.backends)?
            .edit(
                &format!(
                    "- name: {ROUTING_HEADER}\n                    string_match: {{ exact: {LLAMA} }}"
                ),
                &format!(
                    "- name: {ROUTING_HEADER}\n                    string_match: {{ exact: {PUBLIC} }}"
                ),
            )?
            .plugin_config(&config.to_string())?
            .start()?
    };
    let path = "/v1/chat/completions";
    let before = envoy.scrape()?;
    let (reply, id, tag) = ask_tagged(world, &envoy, path, &chat_body(PUBLIC), &[])?;
    reply.expect_answer_of(LLAMA)?;
    let seen = world.seen_once(&tag)?;
    let sent = chat_body(LLAMA).to_string();
    ensure!(
        seen.body == sent.as_bytes() && seen.header_values(ROUTING_HEADER) == [PUBLIC],
        "the backend got {} with {ROUTING_HEADER} {:?}",
        String::from_utf8_lossy(&seen.body),
        seen.header_values(ROUTING_HEADER)
    );
    let answer = reported(path, &reply.body)?;
    let model_labels = labels("chat", PUBLIC, Some(LLAMA));
    let after = envoy.scrape_until(|s| grew(&before, s, DURATION, &model_labels) >= 1.0)?;
    expect_tokens(&before, &after, &model_labels, &answer)?;
    let line = envoy.wait_access_log(&format!("request_id={id}"))?;
    ensure!(
        log_field(&line, "response_model") == Some(LLAMA),
        "access log {line}"
    );
    Ok(())
}

/// The latency histograms and the access log's time to first token measure what a backend
/// that paces its answer took: its delay before the first token, then between tokens.
fn latency_is_what_the_backend_took(world: &World) -> Outcome {
    const TTFT_MS: u64 = 150;
    const TPOT_MS: u64 = 20;
    let mut config = llm_sim::PoolConfig::new("paced", &[PLAIN]);
    config.time_to_first_token = std::time::Duration::from_millis(TTFT_MS);
    config.time_per_output_token = std::time::Duration::from_millis(TPOT_MS);
    let paced = world
        .runtime
        .block_on(llm_sim::Pool::bind(config, "127.0.0.1", 0, 1))
        .map_err(|e| e.to_string())?;
    let plain_port = testkit::scenario::backend_of(PLAIN).first_port;
    let ports: Vec<(u16, u16)> = world
        .backends
        .port_map()
        .into_iter()
        .map(|(written, bound)| {
            let port = if written == plain_port {
                paced.replicas[0].addr.port()
            } else {
                bound
            };
            (written, port)
        })
        .collect();
    let config = json!({"response": {"usage": true, "filter_state": ACCESS_LOG_STATE}});
    let envoy = {
        let _guard = world.runtime.enter();
        LocalGateway::with_ports(&ports)?
            .plugin_config(&config.to_string())?
            .start()?
    };
    let path = "/v1/chat/completions";
    let before = envoy.scrape()?;
    let (reply, id) = ask(world, &envoy, path, &api_body(path, PLAIN, true), &[])?;
    let answer = reported(path, &reply.body)?;
    ensure!(
        reply.status == 200 && answer.output > 1,
        "status {}, {answer:?}",
        reply.status
    );
    let model_labels = labels("chat", PLAIN, Some(PLAIN));
    let after = envoy.scrape_until(|s| grew(&before, s, DURATION, &model_labels) >= 1.0)?;
    let sum = |histogram: &str| {
        grew(
            &before,
            &after,
            &histogram.replace("_count", "_sum"),
            &model_labels,
        )
    };
    let tokens = answer.output as f64;
    // Lower bounds are the backend's own pacing; upper bounds leave a second for a busy machine.
    let ttft = sum(TTFT);
    ensure!(
        (TTFT_MS as f64..TTFT_MS as f64 + 1000.0).contains(&ttft),
        "time to first token {ttft} ms, the backend waited {TTFT_MS} ms"
    );
    let tpot = sum(TPOT);
    ensure!(
        (TPOT_MS as f64 * 900.0..TPOT_MS as f64 * 1000.0 + 1e6 / (tokens - 1.0)).contains(&tpot),
        "time per output token {tpot} us, the backend paced {TPOT_MS} ms ({tokens} tokens)"
    );
    let duration = sum(DURATION);
    let paced_ms = (TTFT_MS + TPOT_MS * (answer.output - 1)) as f64;
    ensure!(
        (paced_ms * 0.95..paced_ms + 1000.0).contains(&duration),
        "duration {duration} ms, the backend took at least {paced_ms} ms"
    );
    let line = envoy.wait_access_log(&format!("request_id={id}"))?;
    let logged: u64 = log_field(&line, "ttft_ms")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no ttft_ms in {line}"))?;
    ensure!(
        (TTFT_MS..TTFT_MS + 1000).contains(&logged),
        "access log ttft_ms={logged}: {line}"
    );
    Ok(())
}
