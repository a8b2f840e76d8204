//! The response side against llm-d's vLLM simulator (llm-d-inference-sim v0.10.2, the
//! backend of the Kubernetes pools) in place of the plain backend: every API's answers, JSON
//! and streamed, and the OpenAI and Anthropic SDKs, counted as it reports them.

use crate::sdk::{expect_sdk_calls_counted, run_sdk_clients, sdk_plugin_config};
use crate::usage::{api_body, ask, expect_counted};
use crate::World;
use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::envoy::{Envoy, LocalGateway};
use testkit::process::{free_port, required_file, wait_http_ok, Process};
use testkit::scenario::{backend_of, PLAIN};
use testkit::{ensure, Outcome};

testkit::cases!(World;
llm_d_inference_sim_answers_are_counted_per_api_and_by_the_sdks);

/// llm-d-inference-sim serving the plain backend's model, echoing prompts, and a gateway of
/// envoy.yaml sending that model to it.
fn start(world: &World, plugin_config: &str) -> Result<(Process, Envoy), String> {
    let port = free_port();
    let process = Process::spawn(
        Command::new(required_file("LLM_D_SIM_BIN"))
            .args([
                "--model",
                PLAIN,
                "--port",
                &port.to_string(),
                "--mode",
                "echo",
            ])
            .arg("--force-dummy-tokenizer")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    wait_http_ok(addr, "/health", Duration::from_secs(30))?;
    let plain = backend_of(PLAIN).first_port;
    let ports: Vec<(u16, u16)> = world
        .backends
        .port_map()
        .into_iter()
        .map(|(written, bound)| (written, if written == plain { port } else { bound }))
        .collect();
    let envoy = {
        let _guard = world.runtime.enter();
        LocalGateway::with_ports(&ports)?
            .plugin_config(plugin_config)?
            .start()?
    };
    Ok((process, envoy))
}

fn llm_d_inference_sim_answers_are_counted_per_api_and_by_the_sdks(world: &World) -> Outcome {
    let (_sim, envoy) = start(world, &sdk_plugin_config(&[PLAIN]))?;
    for path in [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/responses",
        "/v1/messages",
        "/v1/embeddings",
    ] {
        for stream in [false, true] {
            if stream && path == "/v1/embeddings" {
                continue;
            }
            let before = envoy.scrape()?;
            let (reply, id) = ask(world, &envoy, path, &api_body(path, PLAIN, stream), &[])?;
            ensure!(
                reply.header(llm_sim::REPLICA_HEADER).is_none(),
                "{path}: answered by llm-sim, not llm-d-inference-sim"
            );
            let answer = expect_counted(&envoy, &before, path, PLAIN, &reply, &id)
                .map_err(|e| format!("llm-d-inference-sim: {e} (stream: {stream})"))?;
            ensure!(answer.input > 0, "{path}: no usage in {}", reply.text());
        }
    }
    let before = envoy.scrape()?;
    let calls = run_sdk_clients(&envoy, PLAIN, &format!("llm-d-{}", world.tag()), None)?;
    expect_sdk_calls_counted(&envoy, &before, &calls, PLAIN)
}
