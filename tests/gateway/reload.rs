//! Replacing the filter without a restart: a new module and configuration moved into the
//! directory Envoy watches take over while traffic flows; a bad one is refused.

use crate::{chat_body, World};
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use testkit::client::{request, Connection, Frames, Protocol};
use testkit::envoy::LocalGateway;
use testkit::scenario::{LLAMA, MISTRAL, PLAIN};
use testkit::{ensure, Outcome};

testkit::cases!(World;
filter_is_replaced_while_traffic_flows,);

/// The wasm module with a custom section appended: the same filter, different bytes.
fn rebuilt_wasm() -> Result<Vec<u8>, String> {
    let path = std::env::var("MODEL_ROUTER_WASM").map_err(|e| e.to_string())?;
    let mut wasm = std::fs::read(path).map_err(|e| e.to_string())?;
    let name = b"model-router-swap";
    let payload = b"replaced while traffic flows";
    wasm.push(0); // custom section id
    wasm.push((1 + name.len() + payload.len()) as u8);
    wasm.push(name.len() as u8);
    wasm.extend_from_slice(name);
    wasm.extend_from_slice(payload);
    Ok(wasm)
}

fn filter_is_replaced_while_traffic_flows(world: &World) -> Outcome {
    let envoy = LocalGateway::new(&world.backends)?.start()?;
    let reloads = "extension_config_discovery.http_filter.model-router.config_reload";
    let failures = "extension_config_discovery.http_filter.model-router.config_fail";
    let missing_model = |envoy: &testkit::envoy::Envoy| {
        world.exchange_at(
            envoy.listener,
            Protocol::Http1,
            "POST",
            "/v1/chat/completions",
            &[],
            vec![Bytes::from_static(b"{}")],
        )
    };
    let (reply, tag) = missing_model(&envoy)?;
    world.expect_refused(&reply, &tag, 400, "missing_model")?;

    let stop = Arc::new(AtomicBool::new(false));
    let listener = envoy.listener;
    let traffic: Vec<_> = (0..6usize)
        .map(|worker| {
            let stop = Arc::clone(&stop);
            world.runtime.spawn(async move {
                let mut connection = Connection::open(listener, Protocol::Http1).await?;
                let mut answers = Vec::new();
                let mut round = worker;
                while !stop.load(Ordering::SeqCst) {
                    round += 1;
                    let model = [LLAMA, MISTRAL, PLAIN][round % 3];
                    let frames = Frames::new([Bytes::from(chat_body(model).to_string())]);
                    let headers = [("content-type", "application/json")];
                    answers.push((
                        model,
                        connection
                            .send(request("POST", "/v1/chat/completions", &headers, frames))
                            .await?,
                    ));
                }
                Ok::<_, String>(answers)
            })
        })
        .collect();

    // A new .wasm, with a configuration whose effect can be seen: bodies without a model
    // pass through unrouted instead of being refused.
    let wasm = envoy.dir.join("model_router-v2.wasm");
    std::fs::write(&wasm, rebuilt_wasm()?).map_err(|e| e.to_string())?;
    // Envoy loaded the seeded filter directory at startup: count from there.
    let (reloaded, failed) = (envoy.stat(reloads), envoy.stat(failures));
    envoy.install_filter(&wasm, r#"{"missing_model":"pass_through"}"#)?;
    envoy.wait_stat(reloads, reloaded + 1)?;
    let (reply, tag) = missing_model(&envoy)?;
    world.expect_refused(&reply, &tag, 404, "model_not_found")?;

    // A configuration that cannot load is refused; the running filter keeps serving.
    envoy.install_filter(&wasm, r#"{"max_model_bytes":0}"#)?;
    envoy.wait_stat(failures, failed + 1)?;
    let (reply, tag) = missing_model(&envoy)?;
    world.expect_refused(&reply, &tag, 404, "model_not_found")?;

    stop.store(true, Ordering::SeqCst);
    let mut answers = Vec::new();
    for task in traffic {
        answers.extend(world.runtime.block_on(task).map_err(|e| e.to_string())??);
    }
    let wrong: Vec<String> = answers
        .iter()
        .filter(|(model, reply)| !world.answered_by_its_pool(model, reply))
        .map(|(model, reply)| format!("{model}: {} {}", reply.status, reply.text()))
        .collect();
    println!(
        "    {} requests across two filter updates, {} dropped or misrouted",
        answers.len(),
        wrong.len()
    );
    ensure!(
        answers.len() > 10,
        "only {} requests during the swap",
        answers.len()
    );
    ensure!(
        wrong.is_empty(),
        "requests failed during the swap: {:?}",
        &wrong[..wrong.len().min(3)]
    );
    Ok(())
}
