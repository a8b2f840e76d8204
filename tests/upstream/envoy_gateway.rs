//! k8s/ in the real Envoy Gateway: the scenario routed through the filter Envoy Gateway pulled
//! from the registry, aliases and the model list from its catalogue, refusals that reach no
//! backend, bodies past Envoy Gateway's default buffer, the body-access patch in Envoy's
//! configuration, and a configuration change under traffic.

use crate::{chat_body, Deployment};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::client::{request, send, Frames, Protocol};
use testkit::scenario::{ALIASES, LLAMA, MISTRAL, MODELS};
use testkit::{ensure, Outcome};

testkit::cases!(Deployment;
    scenario_requests_reach_their_backends,
    aliases_and_the_model_list_are_answered_from_the_catalogue,
    unknown_model_gets_the_catch_all_404,
    duplicate_model_is_refused_and_reaches_no_backend,
    body_over_the_default_buffer_is_routed_within_the_traffic_policy,
    the_patch_lets_the_generated_filter_read_bodies,
    plugin_configuration_changes_while_traffic_flows,
);

fn scenario_requests_reach_their_backends(deployment: &Deployment) -> Outcome {
    for model in MODELS {
        let (reply, tag) = deployment.post(&chat_body(model).to_string())?;
        deployment.expect_served(&reply, &tag, model)?;
    }
    Ok(())
}

fn aliases_and_the_model_list_are_answered_from_the_catalogue(deployment: &Deployment) -> Outcome {
    // llm-d-inference-sim answers only the names it serves: an alias reaches it rewritten.
    for (alias, model) in ALIASES {
        let (reply, tag) = deployment.post(&chat_body(alias).to_string())?;
        deployment.expect_served(&reply, &tag, model)?;
    }
    let before = deployment.upstream_requests()?;
    let get = |path: &str| {
        let request = request("GET", path, &[], Frames::new([]));
        deployment
            .runtime
            .block_on(send(deployment.gateway.listener, Protocol::Http1, request))
    };
    let reply = get("/v1/models")?;
    ensure!(
        reply.status == 200,
        "GET /v1/models: {} {}",
        reply.status,
        reply.text()
    );
    let list = reply.json()?;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str())
        .collect();
    ensure!(
        ids == MODELS && list["object"] == "list",
        "GET /v1/models: {list}"
    );
    let reply = get("/v1/models/gpt-4o")?;
    ensure!(
        reply.status == 200 && reply.json()?["id"] == LLAMA,
        "GET /v1/models/gpt-4o: {} {}",
        reply.status,
        reply.text()
    );
    let after = deployment.upstream_requests()?;
    ensure!(
        after == before,
        "the model list took {} upstream requests",
        after - before
    );
    Ok(())
}

fn unknown_model_gets_the_catch_all_404(deployment: &Deployment) -> Outcome {
    let (reply, _) = deployment.post(&chat_body("gpt-unknown").to_string())?;
    // The HTTPRouteFilter's direct response, as k8s/routing.yaml writes it.
    testkit::openai::expect_error(
        &reply,
        404,
        "invalid_request_error",
        Some("model_not_found"),
    )
}

fn duplicate_model_is_refused_and_reaches_no_backend(deployment: &Deployment) -> Outcome {
    let before = deployment.upstream_requests()?;
    let (reply, tag) =
        deployment.post(r#"{"model":"mistral:latest","model":"some-cool-self-hosted-model"}"#)?;
    testkit::openai::expect_error(
        &reply,
        400,
        "invalid_request_error",
        Some("duplicate_model"),
    )?;
    ensure!(
        deployment.plain.saw(&tag).is_empty(),
        "the plain backend saw it"
    );
    let after = deployment.upstream_requests()?;
    ensure!(
        after == before,
        "Envoy sent {} upstream requests for it",
        after - before
    );
    Ok(())
}

fn body_over_the_default_buffer_is_routed_within_the_traffic_policy(
    deployment: &Deployment,
) -> Outcome {
    // 100 KiB, model last: over Envoy Gateway's 32 KiB default buffer, under max_body_bytes.
    let content = "the quick brown fox ".repeat(100 * 1024 / 20);
    let body =
        json!({"messages": [{"role": "user", "content": content}], "model": LLAMA}).to_string();
    ensure!(body.len() > 100 * 1024, "body only {} bytes", body.len());
    let (reply, tag) = deployment.post(&body)?;
    deployment.expect_served(&reply, &tag, LLAMA)?;
    // The ClientTrafficPolicy is what makes room for it.
    let dump = deployment.gateway.config_dump()?;
    let limit = listeners(&dump)
        .find_map(|l| l["per_connection_buffer_limit_bytes"].as_u64())
        .ok_or("no listener with a buffer limit")?;
    ensure!(limit == 9 << 20, "listener buffer limit {limit}, want 9Mi");
    Ok(())
}

fn the_patch_lets_the_generated_filter_read_bodies(deployment: &Deployment) -> Outcome {
    let dump = deployment.gateway.config_dump()?;
    let filters: Vec<&Value> = listeners(&dump)
        .flat_map(|l| {
            l["default_filter_chain"]["filters"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(
                    l["filter_chains"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(|c| c["filters"].as_array().into_iter().flatten()),
                )
        })
        .flat_map(|f| {
            f["typed_config"]["http_filters"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .filter(|f| f["typed_config"]["config"]["name"] == "model-router")
        .collect();
    ensure!(
        filters.len() == 1,
        "{} model-router filters in Envoy",
        filters.len()
    );
    let filter = filters[0];
    let name = filter["name"].as_str().unwrap_or_default();
    ensure!(
        name.starts_with("envoy.filters.http.wasm/"),
        "not Envoy Gateway's wasm filter: {name}"
    );
    let config = &filter["typed_config"]["config"];
    ensure!(
        config["allow_on_headers_stop_iteration"] == true,
        "the patch did not reach {name}: {config}"
    );
    // The module Envoy runs is the one built, as Envoy Gateway serves it from the image.
    let wasm = std::fs::read(testkit::process::required_file("MODEL_ROUTER_WASM"))
        .map_err(|e| e.to_string())?;
    let remote = &config["vm_config"]["code"]["remote"];
    ensure!(
        remote["sha256"] == sha256_hex(&wasm),
        "Envoy runs a module with sha256 {}, not the built one",
        remote["sha256"]
    );
    Ok(())
}

/// Every listener Envoy runs, from its /config_dump.
fn listeners(dump: &Value) -> impl Iterator<Item = &Value> {
    dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["dynamic_listeners"].as_array().into_iter().flatten())
        .map(|l| &l["active_state"]["listener"])
}

/// The EnvoyExtensionPolicy's file with the filter's plugin configuration changed.
fn with_plugin_config(
    deployment: &Deployment,
    key: &str,
    value: Value,
) -> Result<Vec<Value>, String> {
    let mut docs = deployment
        .resources
        .get("filter.yaml")
        .cloned()
        .ok_or("no filter.yaml")?;
    let policy = docs
        .iter_mut()
        .find(|d| d["kind"] == "EnvoyExtensionPolicy")
        .ok_or("no EnvoyExtensionPolicy")?;
    policy["spec"]["wasm"][0]["config"][key] = value;
    Ok(docs)
}

/// Polls until a body without a model gets `status`, the mark of the configuration in force.
fn wait_for_missing_model_status(deployment: &Deployment, status: u16) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        let (reply, _) = deployment.post(r#"{"messages":[]}"#)?;
        if reply.status == status {
            return Ok(started.elapsed());
        }
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "still {} after 60 s",
            reply.status
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn plugin_configuration_changes_while_traffic_flows(deployment: &Deployment) -> Outcome {
    wait_for_missing_model_status(deployment, 400)?;
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = Arc::clone(&stop);
        let listener = deployment.gateway.listener;
        deployment.runtime.spawn(async move {
            let mut answers = Vec::new();
            let mut round = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let model = [LLAMA, MISTRAL][round % 2];
                round += 1;
                let request = crate::chat(&chat_body(model).to_string(), &[]);
                let reply =
                    testkit::client::send(listener, testkit::client::Protocol::Http1, request)
                        .await;
                answers.push((model, reply));
            }
            answers
        })
    };
    // pass_through: a body without a model is forwarded unrouted and meets the catch-all 404.
    deployment.gateway.update(
        "filter.yaml",
        &with_plugin_config(deployment, "missing_model", json!("pass_through"))?,
    )?;
    let applied = wait_for_missing_model_status(deployment, 404);
    // Back to the configuration k8s/ has, whatever happened.
    deployment
        .gateway
        .update("filter.yaml", &deployment.resources["filter.yaml"])?;
    let restored = wait_for_missing_model_status(deployment, 400);
    stop.store(true, Ordering::SeqCst);
    let answers = deployment
        .runtime
        .block_on(traffic)
        .map_err(|e| e.to_string())?;
    let applied = applied?;
    restored?;
    let mut wrong = Vec::new();
    for (model, reply) in &answers {
        match reply {
            Ok(reply)
                if reply.status == 200 && reply.json().is_ok_and(|b| b["model"] == *model) => {}
            Ok(reply) => wrong.push(format!("{model}: {} {}", reply.status, reply.text())),
            Err(e) => wrong.push(format!("{model}: {e}")),
        }
    }
    println!(
        "    applied in {applied:.2?}; {} requests across two updates, {} failed or misrouted",
        answers.len(),
        wrong.len()
    );
    ensure!(
        answers.len() > 20,
        "only {} requests during the updates",
        answers.len()
    );
    ensure!(
        wrong.is_empty(),
        "requests failed during the update: {:?}",
        &wrong[..wrong.len().min(3)]
    );
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
