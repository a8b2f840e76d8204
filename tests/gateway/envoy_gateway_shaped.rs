//! The data plane Envoy Gateway and the InferencePool extension build for k8s/
//! (tests/gateway/envoy-gateway-shaped.yaml): the filter on the catch-all route, one endpoint
//! picker per pool before the router, ORIGINAL_DST pool clusters.

use crate::{chat_body, World};
use bytes::Bytes;
use llm_sim::picker::Picker;
use testkit::client::Protocol;
use testkit::envoy::Envoy;
use testkit::scenario::{LLAMA, MISTRAL, PLAIN};
use testkit::{ensure, Outcome};

testkit::cases!(World;
envoy_gateway_shaped_data_plane_routes_through_the_right_picker,);

fn envoy_gateway_shaped_data_plane_routes_through_the_right_picker(world: &World) -> Outcome {
    let backends = &world.backends;
    let start_picker = |pool: &llm_sim::Pool| {
        let endpoints = pool.replicas.iter().map(|r| r.addr).collect();
        world.runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            Picker::start(listener, endpoints)
        })
    };
    let llama_picker = start_picker(backends.pool_of(LLAMA)).map_err(|e| e.to_string())?;
    let mistral_picker = start_picker(backends.pool_of(MISTRAL)).map_err(|e| e.to_string())?;
    let ports = [
        (18021, backends.pool_of(PLAIN).replicas[0].addr.port()),
        (19002, llama_picker.addr.port()),
        (19012, mistral_picker.addr.port()),
    ];
    let envoy = Envoy::start_file("tests/gateway/envoy-gateway-shaped.yaml", &ports)?;
    let post = |body: &[u8], method: &str| {
        world.exchange_at(
            envoy.listener,
            Protocol::Http1,
            method,
            "/v1/chat/completions",
            &[],
            if body.is_empty() {
                vec![]
            } else {
                vec![Bytes::copy_from_slice(body)]
            },
        )
    };
    let picked = || (llama_picker.seen_models(), mistral_picker.seen_models());
    for model in [LLAMA, MISTRAL, PLAIN] {
        let (reply, tag) = post(chat_body(model).to_string().as_bytes(), "POST")?;
        world
            .expect_routed(&reply, &tag, model)
            .map_err(|e| format!("{model}: {e}; pickers saw {:?}", picked()))?;
    }
    let (llama, mistral) = picked();
    ensure!(
        llama == [Some(LLAMA.to_owned())],
        "llama picker saw {llama:?}"
    );
    ensure!(
        mistral == [Some(MISTRAL.to_owned())],
        "mistral picker saw {mistral:?}"
    );
    let (reply, tag) = post(chat_body("gpt-unknown").to_string().as_bytes(), "POST")?;
    world.expect_refused(&reply, &tag, 404, "model_not_found")?;
    let (reply, tag) = post(b"", "POST")?;
    world.expect_refused(&reply, &tag, 404, "model_not_found")?;
    let (reply, tag) = post(br#"{"model":"mistral:latest","model":"x"}"#, "POST")?;
    world.expect_refused(&reply, &tag, 400, "duplicate_model")?;
    ensure!(
        picked() == (llama, mistral),
        "a picker ran for a request no pool serves"
    );
    Ok(())
}
