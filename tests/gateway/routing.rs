//! Routing: every scenario request reaches its model's backend, whatever the body's shape,
//! size, framing or protocol, and only the body decides the routing header.

use crate::{chat_body, World};
use bytes::Bytes;
use serde_json::{json, Value};
use std::time::Instant;
use testkit::client::{raw_exchange, request, send, Connection, Frames, Protocol};
use testkit::envoy::LocalGateway;
use testkit::scenario::{LLAMA, MISTRAL, PLAIN, TAG_HEADER};
use testkit::{ensure, Outcome};

testkit::cases!(World;
    scenario_routes_each_model_to_its_pool_or_backend,
    pool_requests_are_spread_over_replicas,
    model_key_after_messages_routes,
    nested_model_keys_are_ignored,
    escaped_and_unicode_models_are_decoded,
    client_routing_header_is_replaced_by_the_body_model,
    client_routing_header_is_removed_when_the_filter_does_not_route,
    bodiless_and_other_requests_pass_untouched,
    query_string_is_ignored_when_matching_paths,
    completions_and_embeddings_are_routed,
    streamed_answers_pass_through_to_done,
    unknown_model_gets_the_catch_all_404,
    chunked_upload_in_one_byte_chunks_routes,
    h2c_uploads_in_many_frames_route,
    four_mib_body_with_model_last_routes,
    two_thousand_concurrent_requests_are_never_misrouted,
    missing_model_passes_through_when_configured,
);

fn scenario_routes_each_model_to_its_pool_or_backend(world: &World) -> Outcome {
    for model in [LLAMA, MISTRAL, PLAIN] {
        let (reply, tag) = world.chat(&chat_body(model))?;
        world.expect_routed(&reply, &tag, model)?;
        let body = reply.json()?;
        ensure!(
            body["object"] == "chat.completion",
            "object {}",
            body["object"]
        );
        ensure!(
            body["model"] == model,
            "answer names model {}",
            body["model"]
        );
        let message = &body["choices"][0]["message"];
        ensure!(message["role"] == "assistant", "message {message}");
        ensure!(
            message["content"] == "Hi. Say this is a test",
            "content {}",
            message["content"]
        );
        ensure!(
            body["usage"]["total_tokens"]
                .as_u64()
                .is_some_and(|t| t > 0),
            "usage {}",
            body["usage"]
        );
    }
    Ok(())
}

fn pool_requests_are_spread_over_replicas(world: &World) -> Outcome {
    let mut replicas = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let (reply, tag) = world.chat(&chat_body(MISTRAL))?;
        world.expect_routed(&reply, &tag, MISTRAL)?;
        replicas.insert(
            reply
                .header(llm_sim::REPLICA_HEADER)
                .unwrap_or_default()
                .to_owned(),
        );
    }
    ensure!(replicas.len() == 3, "30 requests reached only {replicas:?}");
    Ok(())
}

fn model_key_after_messages_routes(world: &World) -> Outcome {
    let body = format!(
        r#"{{"messages":[{{"role":"user","content":"{}"}}],"temperature":0.2,"model":"{MISTRAL}"}}"#,
        "x".repeat(10_000)
    );
    let (reply, tag) = world.post("/v1/chat/completions", body.as_bytes(), &[])?;
    world.expect_routed(&reply, &tag, MISTRAL)
}

fn nested_model_keys_are_ignored(world: &World) -> Outcome {
    let body = json!({
        "messages": [{"role": "user", "content": "hi", "model": MISTRAL}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"model": PLAIN}}}],
        "metadata": {"model": MISTRAL},
        "model": LLAMA,
    });
    let (reply, tag) = world.chat(&body)?;
    world.expect_routed(&reply, &tag, LLAMA)?;
    let only_nested = json!({"metadata": {"model": LLAMA}, "messages": []});
    let (reply, tag) = world.chat(&only_nested)?;
    world.expect_refused(&reply, &tag, 400, "missing_model")
}

fn escaped_and_unicode_models_are_decoded(world: &World) -> Outcome {
    let body = br#"{"mod\u0065l":"mistral\u003alatest","messages":[]}"#;
    let (reply, tag) = world.post("/v1/chat/completions", body, &[])?;
    world.expect_routed(&reply, &tag, MISTRAL)?;
    // A UTF-8 model travels intact and, served by nobody, meets the catch-all.
    let (reply, tag) = world.chat(&json!({"model": "模型-ü", "messages": []}))?;
    world.expect_refused(&reply, &tag, 404, "model_not_found")
}

fn client_routing_header_is_replaced_by_the_body_model(world: &World) -> Outcome {
    let spoofed = [("x-ai-eg-model", MISTRAL)];
    let body = chat_body(LLAMA).to_string();
    let (reply, tag) = world.post("/v1/chat/completions", body.as_bytes(), &spoofed)?;
    world.expect_routed(&reply, &tag, LLAMA)?;
    // Two client values, sent raw so that nothing merges them, are both replaced.
    let tag = world.tag();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n{TAG_HEADER}: {tag}\r\n\
         x-ai-eg-model: {MISTRAL}\r\nx-ai-eg-model: {PLAIN}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let reply = raw_exchange(world.envoy.listener, &[head.as_bytes(), body.as_bytes()])?;
    world.expect_routed(&reply, &tag, LLAMA)?;
    ensure!(
        world.envoy.counter("client_header_removed") >= 2,
        "client_header_removed not counted"
    );
    Ok(())
}

fn client_routing_header_is_removed_when_the_filter_does_not_route(world: &World) -> Outcome {
    let spoofed = [("x-ai-eg-model", MISTRAL)];
    // Not an API path the filter reads: the spoofed header must not route it.
    let (reply, tag) = world.post("/v1/unknown", br#"{"model":"mistral:latest"}"#, &spoofed)?;
    world.expect_refused(&reply, &tag, 404, "model_not_found")?;
    // A bodiless request on an API path passes unscanned, and unrouted.
    let (reply, tag) = world.exchange(
        Protocol::Http1,
        "POST",
        "/v1/chat/completions",
        &spoofed,
        vec![],
    )?;
    world.expect_refused(&reply, &tag, 404, "model_not_found")
}

fn bodiless_and_other_requests_pass_untouched(world: &World) -> Outcome {
    let skipped = world.envoy.counter("requests_skipped");
    for (method, path) in [("GET", "/v1/files"), ("GET", "/v1/chat/completions")] {
        let (reply, tag) = world.exchange(Protocol::Http1, method, path, &[], vec![])?;
        // Unrouted, they meet the catch-all.
        world.expect_refused(&reply, &tag, 404, "model_not_found")?;
    }
    ensure!(
        world.envoy.counter("requests_skipped") >= skipped + 2,
        "requests_skipped not counted"
    );
    Ok(())
}

fn query_string_is_ignored_when_matching_paths(world: &World) -> Outcome {
    let body = chat_body(PLAIN).to_string();
    let (reply, tag) = world.post(
        "/v1/chat/completions?api-version=2024-10-21",
        body.as_bytes(),
        &[],
    )?;
    world.expect_routed(&reply, &tag, PLAIN)
}

fn completions_and_embeddings_are_routed(world: &World) -> Outcome {
    let body = json!({"model": MISTRAL, "prompt": "Say this is a test", "max_tokens": 3});
    let (reply, tag) = world.post("/v1/completions", body.to_string().as_bytes(), &[])?;
    world.expect_routed(&reply, &tag, MISTRAL)?;
    ensure!(
        reply.json()?["choices"][0]["text"] == "Say this is ",
        "completion {}",
        reply.text()
    );
    let body = json!({"model": PLAIN, "input": ["a", "b"]});
    let (reply, tag) = world.post("/v1/embeddings", body.to_string().as_bytes(), &[])?;
    world.expect_routed(&reply, &tag, PLAIN)?;
    ensure!(
        reply.json()?["data"].as_array().map(Vec::len) == Some(2),
        "embeddings {}",
        reply.text()
    );
    Ok(())
}

fn streamed_answers_pass_through_to_done(world: &World) -> Outcome {
    let mut body = chat_body(LLAMA);
    body["stream"] = json!(true);
    let (reply, tag) = world.chat(&body)?;
    world.expect_routed(&reply, &tag, LLAMA)?;
    ensure!(
        reply.header("content-type") == Some("text/event-stream"),
        "not SSE"
    );
    let text = reply.text();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    ensure!(
        events.last() == Some(&"data: [DONE]"),
        "stream ends with {:?}",
        events.last()
    );
    let content: String = events[..events.len() - 1]
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e.trim_start_matches("data: ")).ok())
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    ensure!(
        content == "Hi. Say this is a test",
        "streamed content {content:?}"
    );
    Ok(())
}

fn unknown_model_gets_the_catch_all_404(world: &World) -> Outcome {
    let (reply, tag) = world.chat(&chat_body("gpt-unknown"))?;
    world.expect_refused(&reply, &tag, 404, "model_not_found")
}

fn chunked_upload_in_one_byte_chunks_routes(world: &World) -> Outcome {
    let body = chat_body(MISTRAL).to_string();
    let tag = world.tag();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n{TAG_HEADER}: {tag}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    let chunks: Vec<Vec<u8>> = body
        .bytes()
        .map(|b| [&b"1\r\n"[..], &[b], b"\r\n"].concat())
        .collect();
    let mut parts: Vec<&[u8]> = vec![head.as_bytes()];
    parts.extend(chunks.iter().map(Vec::as_slice));
    parts.push(b"0\r\n\r\n");
    let reply = raw_exchange(world.envoy.listener, &parts)?;
    world.expect_routed(&reply, &tag, MISTRAL)?;
    let seen = world.backends.saw(&tag);
    ensure!(
        seen[0].body == body.as_bytes(),
        "backend got a different body"
    );
    Ok(())
}

fn h2c_uploads_in_many_frames_route(world: &World) -> Outcome {
    for model in [LLAMA, PLAIN] {
        let body = chat_body(model).to_string();
        let frames: Vec<Bytes> = body
            .as_bytes()
            .chunks(7)
            .map(Bytes::copy_from_slice)
            .collect();
        let (reply, tag) =
            world.exchange(Protocol::H2c, "POST", "/v1/chat/completions", &[], frames)?;
        world.expect_routed(&reply, &tag, model)?;
    }
    let frames = vec![
        Bytes::from_static(br#"{"model":"a","#),
        Bytes::from_static(br#""model":"b"}"#),
    ];
    let (reply, tag) =
        world.exchange(Protocol::H2c, "POST", "/v1/chat/completions", &[], frames)?;
    world.expect_refused(&reply, &tag, 400, "duplicate_model")
}

fn four_mib_body_with_model_last_routes(world: &World) -> Outcome {
    // Warm both workers' VMs with 64 KiB bodies (a dozen connections: both workers get
    // some, but for one run in 2,000), then compare the filter's memory. The
    // warm-up's prompt starts as the 4 MiB one: the endpoint picker keeps the first 16 KiB of
    // a prompt, and its prefix index (bounded on its own: src/picker/prefix.rs) then holds
    // their blocks already, so what remains is what the body's size costs.
    for _ in 0..12 {
        let content = "lorem ipsum ".repeat(64 * 1024 / 12);
        let body = json!({"messages": [{"role": "user", "content": content}], "model": LLAMA});
        let (reply, tag) = world.chat(&body)?;
        world.expect_routed(&reply, &tag, LLAMA)?;
    }
    let memory_before = world
        .envoy
        .stat("wasmcustom.model_router.wasm_memory_bytes");
    let content = "lorem ipsum ".repeat(4 * 1024 * 1024 / 12);
    let body =
        json!({"messages": [{"role": "user", "content": content}], "model": LLAMA}).to_string();
    ensure!(body.len() > 4 << 20, "body only {} bytes", body.len());
    for _ in 0..2 {
        let frames: Vec<Bytes> = body
            .as_bytes()
            .chunks(64 * 1024)
            .map(Bytes::copy_from_slice)
            .collect();
        let (reply, tag) =
            world.exchange(Protocol::Http1, "POST", "/v1/chat/completions", &[], frames)?;
        world.expect_routed(&reply, &tag, LLAMA)?;
        let seen = world.backends.saw(&tag);
        ensure!(
            seen[0].body.len() == body.len(),
            "backend got {} of {} bytes",
            seen[0].body.len(),
            body.len()
        );
    }
    // Linear memory only grows; one 64 KiB read buffer of slack, not the 4 MiB body.
    let memory_after = world
        .envoy
        .stat("wasmcustom.model_router.wasm_memory_bytes");
    ensure!(memory_before > 0, "wasm_memory_bytes gauge not recorded");
    ensure!(
        memory_after <= memory_before + 64 * 1024,
        "filter memory grew from {memory_before} to {memory_after} bytes with 4 MiB bodies"
    );
    println!("    filter linear memory: {memory_before} bytes before, {memory_after} after two 4 MiB bodies");
    Ok(())
}

fn two_thousand_concurrent_requests_are_never_misrouted(world: &World) -> Outcome {
    const CONNECTIONS: usize = 64;
    const REQUESTS: usize = 2_000;
    let models = [LLAMA, MISTRAL, PLAIN];
    let listener = world.envoy.listener;
    let started = Instant::now();
    let results = world.runtime.block_on(async {
        let mut tasks = Vec::new();
        for connection in 0..CONNECTIONS {
            tasks.push(tokio::spawn(async move {
                let mut conn = Connection::open(listener, Protocol::Http1).await?;
                let mut answers = Vec::new();
                for index in (connection..REQUESTS).step_by(CONNECTIONS) {
                    let model = models[index % models.len()];
                    let body = chat_body(model).to_string();
                    let length = body.len().to_string();
                    let headers = [
                        ("content-type", "application/json"),
                        ("content-length", length.as_str()),
                    ];
                    let frames = Frames::new([Bytes::from(body)]);
                    let reply = conn
                        .send(request("POST", "/v1/chat/completions", &headers, frames))
                        .await?;
                    answers.push((model, reply));
                }
                Ok::<_, String>(answers)
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.map_err(|e| e.to_string())??);
        }
        Ok::<_, String>(all)
    })?;
    ensure!(
        results.len() == REQUESTS,
        "{} answers for {REQUESTS} requests",
        results.len()
    );
    let mut misrouted = 0;
    for (model, reply) in &results {
        misrouted += usize::from(!world.answered_by_its_pool(model, reply));
    }
    ensure!(
        misrouted == 0,
        "{misrouted} of {REQUESTS} requests misrouted or failed"
    );
    println!(
        "    {REQUESTS} requests over {CONNECTIONS} connections in {:?}",
        started.elapsed()
    );
    Ok(())
}

fn missing_model_passes_through_when_configured(world: &World) -> Outcome {
    let envoy = LocalGateway::new(&world.backends)?
        .plugin_config(r#"{"missing_model": "pass_through"}"#)?
        .start()?;
    let tag = world.tag();
    let headers = [
        (TAG_HEADER, tag.as_str()),
        ("x-ai-eg-model", MISTRAL),
        ("content-type", "application/json"),
    ];
    let frames = Frames::new([Bytes::from_static(br#"{"messages":[]}"#)]);
    let reply = world.runtime.block_on(send(
        envoy.listener,
        Protocol::Http1,
        request("POST", "/v1/chat/completions", &headers, frames),
    ))?;
    // Unrouted and with the spoofed header gone, it meets the catch-all.
    world.expect_refused(&reply, &tag, 404, "model_not_found")?;
    ensure!(
        envoy.counter("requests_unrouted") == 1,
        "requests_unrouted not counted"
    );
    Ok(())
}
