//! Bad answers: not JSON, usage of the wrong type or absurd size, streams cut inside an event
//! or reset, upstream resets, errors, a 100,000-token stream. Each reaches the client byte
//! for byte as the backend sent it, is counted, and leaves the filter's memory flat.

use crate::gen_ai::{
    expect_tokens, grew, labels, problem, reported, Reported, DURATION, RESPONSES, TOKENS, TPOT,
};
use crate::usage::{api_body, ask, ask_tagged, operation};
use crate::World;
use serde_json::json;
use testkit::scenario::MISTRAL;
use testkit::{ensure, Outcome};

testkit::cases!(World;
    bad_answers_pass_through_unchanged_and_are_counted,
    reset_streams_are_counted_as_incomplete,
    upstream_resets_are_counted_as_server_errors,
    hundred_thousand_token_streams_are_counted_with_flat_memory,
);

fn bad_answers_pass_through_unchanged_and_are_counted(world: &World) -> Outcome {
    for (fault, path, stream, counted) in [
        ("not-json", "/v1/chat/completions", false, "malformed"),
        (
            "usage-wrong-type",
            "/v1/chat/completions",
            false,
            "invalid_usage",
        ),
        (
            "usage-absurd",
            "/v1/chat/completions",
            true,
            "invalid_usage",
        ),
        ("usage-absurd", "/v1/embeddings", false, "invalid_usage"),
        ("usage-wrong-type", "/v1/responses", true, "invalid_usage"),
        ("usage-wrong-type", "/v1/messages", true, "invalid_usage"),
        ("cut-stream", "/v1/chat/completions", true, "truncated"),
        ("cut-stream", "/v1/messages", true, "truncated"),
    ] {
        let before = world.envoy.scrape()?;
        let headers = [(llm_sim::FAULT_HEADER, fault)];
        let body = api_body(path, MISTRAL, stream);
        let (reply, _, tag) = ask_tagged(world, &world.envoy, path, &body, &headers)?;
        ensure!(
            reply.status == 200,
            "{fault} {path}: status {}",
            reply.status
        );
        let seen = world.backends.saw(&tag);
        ensure!(
            seen.len() == 1,
            "{fault} {path}: {} backend requests",
            seen.len()
        );
        ensure!(
            seen[0].sent() == reply.body,
            "{fault} {path}: the client got {:?}, the backend sent {:?}",
            reply.text(),
            String::from_utf8_lossy(&seen[0].sent())
        );
        let after = world.envoy.scrape()?;
        ensure!(
            grew(&before, &after, &problem(counted), &[]) == 1.0,
            "{fault} {path}: {counted} did not grow by one"
        );
        // Usage of the wrong type or size counts for nothing; a cut stream counts what its
        // complete events reported (Anthropic's input, in its first event).
        let expected = if counted == "truncated" {
            reported(path, &reply.body)?
        } else {
            Reported::default()
        };
        let model_labels = labels(operation(path), MISTRAL, Some(MISTRAL));
        expect_tokens(&before, &after, &model_labels, &expected)
            .map_err(|e| format!("{fault} {path}: {e}"))?;
        ensure!(
            grew(&before, &after, TOKENS, &[])
                == (expected.input + expected.output + expected.cached) as f64,
            "{fault} {path}: tokens were counted under other labels"
        );
    }
    Ok(())
}

fn reset_streams_are_counted_as_incomplete(world: &World) -> Outcome {
    let before = world.envoy.scrape()?;
    let headers = [(llm_sim::FAULT_HEADER, "reset-stream")];
    let body = api_body("/v1/chat/completions", MISTRAL, true);
    // The client sees its stream break: an error, or a body cut short.
    if let Ok((reply, _)) = ask(world, &world.envoy, "/v1/chat/completions", &body, &headers) {
        ensure!(
            !reply.text().contains("[DONE]"),
            "a reset stream reached its end: {}",
            reply.text()
        );
    }
    let after = world
        .envoy
        .scrape_until(|s| grew(&before, s, &problem("incomplete"), &[]) >= 1.0)?;
    ensure!(
        grew(&before, &after, &problem("incomplete"), &[]) == 1.0,
        "the reset stream was not counted as incomplete"
    );
    ensure!(
        grew(&before, &after, DURATION, &[]) == 0.0,
        "a reset stream's duration was recorded"
    );
    Ok(())
}

fn upstream_resets_are_counted_as_server_errors(world: &World) -> Outcome {
    let before = world.envoy.scrape()?;
    let headers = [(llm_sim::FAULT_HEADER, "reset")];
    let body = api_body("/v1/chat/completions", MISTRAL, false);
    let (reply, _) = ask(world, &world.envoy, "/v1/chat/completions", &body, &headers)?;
    ensure!(reply.status == 503, "status {}", reply.status);
    let after = world.envoy.scrape()?;
    let mut server_errors = labels("chat", MISTRAL, None);
    server_errors.push(("status_class", "5xx"));
    ensure!(
        grew(&before, &after, RESPONSES, &server_errors) == 1.0,
        "the 503 was not counted"
    );
    Ok(())
}

fn hundred_thousand_token_streams_are_counted_with_flat_memory(world: &World) -> Outcome {
    let path = "/v1/chat/completions";
    let memory = || world.envoy.counter("wasm_memory_bytes");
    // A small stream first, so that everything defined on first use is.
    let small = api_body(path, MISTRAL, true);
    ask(world, &world.envoy, path, &small, &[])?;
    ask(world, &world.envoy, path, &small, &[])?;
    let memory_before = memory();
    let mut body = api_body(path, MISTRAL, true);
    body["min_tokens"] = json!(100_000);
    body["max_tokens"] = json!(100_000);
    let before = world.envoy.scrape()?;
    let (reply, _) = ask(world, &world.envoy, path, &body, &[])?;
    ensure!(reply.status == 200, "status {}", reply.status);
    let model_labels = labels("chat", MISTRAL, Some(MISTRAL));
    let after = world
        .envoy
        .scrape_until(|s| grew(&before, s, TPOT, &model_labels) >= 1.0)?;
    let mut output = model_labels.clone();
    output.push(("gen_ai_token_type", "output"));
    ensure!(
        grew(&before, &after, TOKENS, &output) == 100_000.0,
        "output tokens grew by {}",
        grew(&before, &after, TOKENS, &output)
    );
    ensure!(
        grew(&before, &after, TPOT, &model_labels) == 1.0,
        "no time per output token recorded"
    );
    // The gauge is taken when a request is routed: route one more.
    ask(world, &world.envoy, path, &small, &[])?;
    ensure!(
        memory() == memory_before,
        "filter memory went from {memory_before} to {} bytes",
        memory()
    );
    Ok(())
}
