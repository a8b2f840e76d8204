//! The local gateway (envoy.yaml) in front of llm-d-inference-sim, the simulator the seed's
//! pools run, as `./build.sh run --backend llm-d` starts it.

use crate::chat_body;
use testkit::client::{request, send, Frames, Protocol};
use testkit::envoy::LocalGateway;
use testkit::llm_d::{LlmdPool, POD_HEADER};
use testkit::process::free_port;
use testkit::scenario::BACKENDS;
use testkit::{ensure, Outcome};

testkit::standalone_cases!(local_gateway_routes_the_scenario_to_llm_d_replicas);

fn local_gateway_routes_the_scenario_to_llm_d_replicas() -> Outcome {
    let mut pools = Vec::new();
    let mut ports = Vec::new();
    for backend in &BACKENDS {
        let bound: Vec<u16> = (0..backend.replicas).map(|_| free_port()).collect();
        ports.extend(backend.ports().zip(bound.iter().copied()));
        pools.push(LlmdPool::start(
            &testkit::process::required_file("LLM_D_SIM_BIN"),
            backend,
            bound,
        )?);
    }
    let envoy = LocalGateway::with_ports(&ports)?.start()?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    for pool in &pools {
        let model = pool.backend.model;
        let body = chat_body(model).to_string();
        let headers = [("content-type", "application/json")];
        let request = request(
            "POST",
            "/v1/chat/completions",
            &headers,
            Frames::new([bytes::Bytes::from(body)]),
        );
        let reply = runtime.block_on(send(envoy.listener, Protocol::Http1, request))?;
        reply.expect_answer_of(model)?;
        let answer = reply.json()?;
        ensure!(
            answer["choices"][0]["message"]["content"] == "Hi. Say this is a test",
            "llm-d-inference-sim in echo mode answered {answer}"
        );
        let pod = reply.header(POD_HEADER).unwrap_or_default();
        ensure!(
            pool.has(pod),
            "{model} served by {pod:?}, not by {}",
            pool.backend.name
        );
    }
    Ok(())
}
