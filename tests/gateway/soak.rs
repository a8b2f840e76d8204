//! Soak: mixed models, body sizes and HTTP versions at saturation while a replica restarts.

use crate::{chat_body, World};
use bytes::Bytes;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use testkit::client::{request, Connection, Frames, Protocol};
use testkit::scenario::{LLAMA, MISTRAL, PLAIN};
use testkit::{ensure, Outcome};

testkit::cases!(World;
soak_mixed_traffic_while_a_replica_restarts,);

/// Mixed models, body sizes and HTTP versions at saturation for SOAK_SECONDS (default 20;
/// `./build.sh soak` runs 600) while one llama replica is stopped and restarted every few
/// seconds. Every answer is checked.
fn soak_mixed_traffic_while_a_replica_restarts(world: &World) -> Outcome {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let listener = world.envoy.listener;
    for model in [LLAMA, MISTRAL, PLAIN].repeat(2) {
        let (reply, tag) = world.chat(&chat_body(model))?;
        world.expect_routed(&reply, &tag, model)?;
    }
    // The gauge is set as the warm-up requests finish: wait until Envoy shows it.
    world
        .envoy
        .wait_stat("wasmcustom.model_router.wasm_memory_bytes", 1)?;
    let memory = || {
        world
            .envoy
            .stat("wasmcustom.model_router.wasm_memory_bytes")
    };
    let memory_before = memory();
    let pools = [
        &world.backends.pool_of(LLAMA),
        &world.backends.pool_of(MISTRAL),
        &world.backends.pool_of(PLAIN),
    ];
    // Every answer is checked here; the backends need not keep the traffic.
    pools.iter().for_each(|pool| pool.set_recording(false));
    let stop = Arc::new(AtomicBool::new(false));
    let restarted = Arc::clone(&world.backends.pool_of(LLAMA).replicas[0]);
    let started = Instant::now();
    let result = world.runtime.block_on(async {
        // Requests in flight on the restarted replica may fail; count the restarts.
        let restarter = {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut restarts = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                    restarted.stop();
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    restarted.restart().await.map_err(|e| e.to_string())?;
                    restarts += 1;
                }
                Ok::<_, String>(restarts)
            })
        };
        let sizes = [256, 4 << 10, 64 << 10, 1 << 20];
        let mut tasks = Vec::new();
        for worker in 0..12usize {
            let stop = Arc::clone(&stop);
            tasks.push(tokio::spawn(async move {
                let mut h1 = Connection::open(listener, Protocol::Http1).await?;
                let mut h2 = Connection::open(listener, Protocol::H2c).await?;
                let mut answers = Vec::new();
                let mut round = worker;
                while !stop.load(Ordering::SeqCst) {
                    round += 1;
                    let model = [LLAMA, MISTRAL, PLAIN][round % 3];
                    let size = sizes[(round / 3) % if round % 17 == 0 { 4 } else { 3 }];
                    let mut body = chat_body(model);
                    body["messages"][0]["content"] = json!("x ".repeat(size / 2));
                    body["max_tokens"] = json!(4);
                    let headers = [("content-type", "application/json")];
                    let request = request(
                        "POST",
                        "/v1/chat/completions",
                        &headers,
                        Frames::new([Bytes::from(body.to_string())]),
                    );
                    let reply = if round % 2 == 0 {
                        h1.send(request).await
                    } else {
                        h2.send(request).await
                    };
                    match reply {
                        Ok(reply) => answers.push((model, reply)),
                        // The HTTP/1.1 connection is closed after a 5xx: open another.
                        Err(_) => h1 = Connection::open(listener, Protocol::Http1).await?,
                    }
                }
                Ok::<_, String>(answers)
            }));
        }
        // The picker's prefix indexes and the streams' prompt buffers (both bounded, see
        // README) fill up in the first seconds at this concurrency; growth after that would
        // be a leak.
        let total = std::time::Duration::from_secs(seconds);
        tokio::time::sleep(total / 4).await;
        let memory_warm = memory();
        tokio::time::sleep(total - total / 4).await;
        stop.store(true, Ordering::SeqCst);
        let mut answers = Vec::new();
        for task in tasks {
            answers.extend(task.await.map_err(|e| e.to_string())??);
        }
        let restarts = restarter.await.map_err(|e| e.to_string())??;
        Ok::<_, String>((answers, restarts, memory_warm))
    });
    pools.iter().for_each(|pool| pool.set_recording(true));
    let (answers, restarts, memory_warm) = result?;
    let (mut misrouted, mut failed_llama, mut failed_other) = (0, 0, 0);
    for (model, reply) in &answers {
        if reply.status >= 500 {
            if *model == LLAMA {
                failed_llama += 1
            } else {
                failed_other += 1
            }
            continue;
        }
        misrouted += usize::from(!world.answered_by_its_pool(model, reply));
    }
    let memory_after = memory();
    println!(
        "    soak {:.0?}: {} answers, {restarts} replica restarts, {misrouted} misrouted, {failed_llama} llama 5xx, {failed_other} other 5xx, filter memory {memory_before} -> {memory_warm} (warm) -> {memory_after} bytes",
        started.elapsed(),
        answers.len()
    );
    ensure!(answers.len() > 100, "only {} answers", answers.len());
    ensure!(misrouted == 0, "{misrouted} misrouted answers");
    ensure!(
        failed_other == 0,
        "{failed_other} 5xx for models whose backends stayed up"
    );
    // Only requests in flight on the stopped replica may fail: at most one per connection.
    ensure!(
        failed_llama <= restarts as usize * 24,
        "{failed_llama} llama 5xx over {restarts} restarts"
    );
    ensure!(
        memory_after <= memory_warm + 64 * 1024,
        "filter memory grew {memory_warm} (warm) -> {memory_after}"
    );
    Ok(())
}
