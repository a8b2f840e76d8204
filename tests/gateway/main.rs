//! End to end: the built filter in Envoy 1.40, running the repository's envoy.yaml in front
//! of simulated vLLM pools and a plain backend, driven with real HTTP/1.1 and h2c traffic.
//!
//! Each case is named after the behaviour it proves. Run with `./build.sh test`; pass a
//! substring to run only the matching cases: `cargo test --test gateway -- refus`.

mod client;
mod harness;

use bytes::Bytes;
use client::{raw_exchange, request, send, Connection, Frames, Protocol, Reply};
use harness::{Backends, Envoy, LLAMA, MISTRAL, PLAIN, TAG_HEADER};
use llm_sim::picker::Picker;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

type Outcome = Result<(), String>;

macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!($($message)+));
        }
    };
}

/// The running gateway every case talks to.
struct World {
    runtime: tokio::runtime::Runtime,
    backends: Backends,
    envoy: Envoy,
    next_tag: AtomicU64,
}

impl World {
    fn tag(&self) -> String {
        format!("t{}", self.next_tag.fetch_add(1, Ordering::SeqCst))
    }

    /// Sends `body` in `frames` pieces with a fresh tag; returns the reply and the tag.
    fn exchange(
        &self,
        protocol: Protocol,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        frames: Vec<Bytes>,
    ) -> Result<(Reply, String), String> {
        self.exchange_at(self.envoy.listener, protocol, method, path, headers, frames)
    }

    /// [`World::exchange`] with another gateway.
    fn exchange_at(
        &self,
        listener: std::net::SocketAddr,
        protocol: Protocol,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        frames: Vec<Bytes>,
    ) -> Result<(Reply, String), String> {
        let tag = self.tag();
        let mut all = vec![
            (TAG_HEADER, tag.as_str()),
            ("content-type", "application/json"),
        ];
        all.extend_from_slice(headers);
        let request = request(method, path, &all, Frames::new(frames));
        let reply = self.runtime.block_on(send(listener, protocol, request))?;
        Ok((reply, tag))
    }

    fn post(
        &self,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<(Reply, String), String> {
        let mut headers = headers.to_vec();
        let length = body.len().to_string();
        headers.push(("content-length", &length));
        self.exchange(
            Protocol::Http1,
            "POST",
            path,
            &headers,
            vec![Bytes::copy_from_slice(body)],
        )
    }

    fn chat(&self, body: &Value) -> Result<(Reply, String), String> {
        self.post("/v1/chat/completions", body.to_string().as_bytes(), &[])
    }

    /// Checks that the reply came from a replica of `model`'s pool, which saw exactly one
    /// routing header equal to `model`, and that no other backend saw the request.
    fn expect_routed(&self, reply: &Reply, tag: &str, model: &str) -> Outcome {
        ensure!(
            reply.status == 200,
            "status {} for {model}: {}",
            reply.status,
            reply.text()
        );
        let pool = self.backends.pool_of(model);
        let replica = reply.header(llm_sim::REPLICA_HEADER).unwrap_or_default();
        ensure!(
            pool.replicas.iter().any(|r| r.id == replica),
            "{model} served by {replica:?}, not by pool {}",
            pool.config.name
        );
        let seen = self.backends.saw(tag);
        ensure!(
            seen.len() == 1,
            "{} backend requests carry tag {tag}",
            seen.len()
        );
        let headers = seen[0].header_values("x-ai-eg-model");
        ensure!(
            headers == [model],
            "backend saw x-ai-eg-model {headers:?}, want [{model:?}]"
        );
        Ok(())
    }

    /// Whether `reply` is a 200 from a replica of `model`'s pool that echoes `model`.
    fn answered_by_its_pool(&self, model: &str, reply: &Reply) -> bool {
        let pool = self.backends.pool_of(model);
        let replica = reply.header(llm_sim::REPLICA_HEADER).unwrap_or_default();
        reply.status == 200
            && pool.replicas.iter().any(|r| r.id == replica)
            && reply.json().is_ok_and(|body| body["model"] == model)
    }

    /// Checks an OpenAI-style refusal that no backend saw.
    fn expect_refused(&self, reply: &Reply, tag: &str, status: u16, code: &str) -> Outcome {
        ensure!(
            reply.status == status,
            "status {} (want {status}): {}",
            reply.status,
            reply.text()
        );
        ensure!(
            reply.header("content-type") == Some("application/json"),
            "content-type {:?}",
            reply.header("content-type")
        );
        let body = reply.json()?;
        ensure!(
            body["error"]["code"] == code,
            "error code {} (want {code})",
            body["error"]["code"]
        );
        ensure!(
            body["error"]["type"] == "invalid_request_error",
            "error type {}",
            body["error"]["type"]
        );
        ensure!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "no error message"
        );
        let seen = self.backends.saw(tag);
        ensure!(
            seen.is_empty(),
            "a refused request reached {}",
            seen[0].replica
        );
        Ok(())
    }
}

fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hi. Say this is a test"}]})
}

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
    let (reply, tag) = world.exchange(Protocol::Http1, "GET", "/v1/models", &[], vec![])?;
    ensure!(reply.status == 200, "GET /v1/models: {}", reply.status);
    let models: Vec<Value> = reply.json()?["data"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ids: Vec<&str> = models.iter().filter_map(|m| m["id"].as_str()).collect();
    ensure!(ids == [LLAMA, MISTRAL, PLAIN], "models {ids:?}");
    ensure!(
        world.backends.saw(&tag).is_empty(),
        "GET /v1/models reached a backend"
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

/// A body the filter must refuse, with the status and error code it must refuse it with.
struct Refusal {
    name: &'static str,
    body: Vec<u8>,
    headers: &'static [(&'static str, &'static str)],
    status: u16,
    code: &'static str,
}

fn refusals() -> Vec<Refusal> {
    let refusal = |name, body: &[u8], status, code| Refusal {
        name,
        body: body.to_vec(),
        headers: &[],
        status,
        code,
    };
    let long_model = format!(r#"{{"model":"{}"}}"#, "m".repeat(257));
    vec![
        refusal(
            "truncated JSON",
            br#"{"model":"mistral:latest""#,
            400,
            "malformed_json",
        ),
        refusal(
            "missing colon",
            br#"{"model" "mistral:latest"}"#,
            400,
            "malformed_json",
        ),
        refusal(
            "trailing garbage",
            br#"{"model":"mistral:latest"} x"#,
            400,
            "malformed_json",
        ),
        refusal("empty body text", b"   ", 400, "malformed_json"),
        refusal(
            "invalid UTF-8",
            b"{\"model\":\"mistral\xff\"}",
            400,
            "malformed_json",
        ),
        refusal(
            "array at top level",
            br#"[{"model":"mistral:latest"}]"#,
            400,
            "not_an_object",
        ),
        refusal(
            "string at top level",
            br#""mistral:latest""#,
            400,
            "not_an_object",
        ),
        refusal("no model", br#"{"messages":[]}"#, 400, "missing_model"),
        refusal("number model", br#"{"model":7}"#, 400, "model_not_string"),
        refusal("null model", br#"{"model":null}"#, 400, "model_not_string"),
        refusal(
            "array model",
            br#"{"model":["mistral:latest"]}"#,
            400,
            "model_not_string",
        ),
        refusal("empty model", br#"{"model":""}"#, 400, "empty_model"),
        refusal(
            "model over 256 bytes",
            long_model.as_bytes(),
            400,
            "model_too_long",
        ),
        refusal(
            "CRLF injection",
            br#"{"model":"mistral:latest\r\nx-evil: 1"}"#,
            400,
            "invalid_model",
        ),
        refusal(
            "NUL in model",
            br#"{"model":"mistral\u0000"}"#,
            400,
            "invalid_model",
        ),
        refusal(
            "padded model",
            br#"{"model":" mistral:latest"}"#,
            400,
            "invalid_model",
        ),
        refusal(
            "duplicate model",
            br#"{"model":"some-cool-self-hosted-model","model":"mistral:latest"}"#,
            400,
            "duplicate_model",
        ),
        refusal(
            "escaped duplicate model",
            br#"{"model":"mistral:latest","mod\u0065l":"x"}"#,
            400,
            "duplicate_model",
        ),
        Refusal {
            name: "gzip body",
            body: br#"{"model":"mistral:latest"}"#.to_vec(),
            headers: &[("content-encoding", "gzip")],
            status: 415,
            code: "unsupported_encoding",
        },
    ]
}

fn each_refusal_has_its_status_and_code_and_reaches_no_backend(world: &World) -> Outcome {
    for case in refusals() {
        let counter = format!("requests_rejected_{}", case.code);
        let before = world.envoy.counter(&counter);
        let (reply, tag) = world.post("/v1/chat/completions", &case.body, case.headers)?;
        world
            .expect_refused(&reply, &tag, case.status, case.code)
            .map_err(|e| format!("{}: {e}", case.name))?;
        let after = world.envoy.counter(&counter);
        ensure!(
            after == before + 1,
            "{}: counter {counter} went {before} -> {after}",
            case.name
        );
    }
    Ok(())
}

fn refusals_carry_a_response_code_detail(world: &World) -> Outcome {
    let (reply, tag) = world.post("/v1/chat/completions", br#"{"model":"a","model":"b"}"#, &[])?;
    world.expect_refused(&reply, &tag, 400, "duplicate_model")?;
    // Envoy flushes the access log every 50 ms here (--file-flush-interval-msec): poll it.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while Instant::now() < deadline {
        if world
            .envoy
            .access_log()
            .contains(" 400 model_router_duplicate_model ")
        {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Err("no access log line with response code detail model_router_duplicate_model".into())
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
    // Warm both workers' VMs with small bodies, then compare the filter's memory.
    for _ in 0..4 {
        let (reply, tag) = world.chat(&chat_body(LLAMA))?;
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

fn body_over_the_limit_gets_413(world: &World) -> Outcome {
    let body = vec![b' '; (8 << 20) + 1];
    // Declared up front: refused on the headers.
    let (reply, tag) = world.post("/v1/chat/completions", &body, &[])?;
    world.expect_refused(&reply, &tag, 413, "body_too_large")?;
    // Streamed without a length: refused once the received bytes pass the limit.
    let mut frames: Vec<Bytes> = vec![Bytes::from_static(b"{\"messages\":\"")];
    frames.extend(body.chunks(256 * 1024).map(Bytes::copy_from_slice));
    let (reply, tag) =
        world.exchange(Protocol::Http1, "POST", "/v1/chat/completions", &[], frames)?;
    world.expect_refused(&reply, &tag, 413, "body_too_large")
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
                let mut conn = Connection::open(listener).await?;
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
    let envoy = Envoy::start(
        &world.backends,
        Some(r#"{"missing_model": "pass_through"}"#),
    )?;
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

fn bad_plugin_configuration_refuses_to_load(world: &World) -> Outcome {
    // Fail closed (envoy.yaml), and fail open too: a filter that cannot start is refused at
    // load whatever the failure policy, which only governs a VM failing at run time.
    for policy in ["FAIL_CLOSED", "FAIL_OPEN"] {
        let started = Envoy::start_edited(
            &world.backends,
            "failure_policy: FAIL_CLOSED",
            &format!("failure_policy: {policy}"),
            Some(r#"{"max_model_bytes": 0}"#),
        );
        match started {
            Ok(_) => return Err(format!("Envoy started with max_model_bytes 0 and {policy}")),
            Err(error) => ensure!(
                error.contains("field `max_model_bytes`: must be between 1 and 4096, got 0"),
                "{policy}: the failure does not name the field:\n{error}"
            ),
        }
    }
    Ok(())
}

fn envoy_gateway_shaped_data_plane_routes_through_the_right_picker(world: &World) -> Outcome {
    let backends = &world.backends;
    let start_picker = |pool: &llm_sim::Pool| {
        let endpoints = pool.replicas.iter().map(|r| r.addr).collect();
        world.runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            Picker::start(listener, endpoints)
        })
    };
    let llama_picker = start_picker(&backends.llama).map_err(|e| e.to_string())?;
    let mistral_picker = start_picker(&backends.mistral).map_err(|e| e.to_string())?;
    let ports = [
        (18021, backends.plain.replicas[0].addr.port()),
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

/// A hostile body and what the gateway must do with it: route to a model, or refuse.
struct Hostile {
    name: &'static str,
    body: Vec<u8>,
    outcome: Result<&'static str, (u16, &'static str)>,
}

fn hostile_bodies() -> Vec<Hostile> {
    let routed = |name, body: Vec<u8>| Hostile {
        name,
        body,
        outcome: Ok(MISTRAL),
    };
    let refused = |name, body: Vec<u8>, status, code| Hostile {
        name,
        body,
        outcome: Err((status, code)),
    };
    let mut many_keys = String::from("{");
    for key in 0..100_000 {
        many_keys.push_str(&format!("\"k{key}\":{key},"));
    }
    many_keys.push_str("\"model\":\"mistral:latest\"}");
    let megabyte = "a".repeat(1 << 20);
    vec![
        refused("invalid UTF-8 in the model", b"{\"model\":\"mistral\xc3\x28latest\"}".to_vec(), 400, "malformed_json"),
        refused("UTF-8 byte order mark", b"\xef\xbb\xbf{\"model\":\"mistral:latest\"}".to_vec(), 400, "malformed_json"),
        routed(
            "every JSON whitespace",
            b" \t\n\r{ \t\n\r\"model\" \t\n\r: \t\n\r\"mistral:latest\" \t\n\r, \"n\" :\t[ 1 ,\n2 ] } \t\n\r".to_vec(),
        ),
        routed(
            "exponents and huge digits",
            br#"{"a":1e308,"b":-2.5E-400,"c":12345678901234567890123456789012345678901234567890,"d":[0.0e+0,-0,1E+2],"model":"mistral:latest"}"#.to_vec(),
        ),
        refused("null model", br#"{"model":null}"#.to_vec(), 400, "model_not_string"),
        refused("array model", br#"{"model":["mistral:latest"]}"#.to_vec(), 400, "model_not_string"),
        refused("object model", br#"{"model":{"name":"mistral:latest"}}"#.to_vec(), 400, "model_not_string"),
        routed(
            "1 MB string",
            format!(r#"{{"messages":[{{"role":"user","content":"{megabyte}"}}],"model":"mistral:latest"}}"#).into_bytes(),
        ),
        refused("1 MB model", format!(r#"{{"model":"{megabyte}"}}"#).into_bytes(), 400, "model_too_long"),
        routed("100,000 top-level keys", many_keys.into_bytes()),
        refused(
            "1,000,000-deep nesting",
            format!("{{\"a\":{}", "[".repeat(1_000_000)).into_bytes(),
            400,
            "malformed_json",
        ),
        refused("a second object", br#"{"model":"mistral:latest"}{"model":"x"}"#.to_vec(), 400, "malformed_json"),
        routed("escaped key and value", br#"{"mod\u0065l":"mistral\u003Alatest"}"#.to_vec()),
    ]
}

fn hostile_bodies_are_refused_or_routed_as_documented(world: &World) -> Outcome {
    for case in hostile_bodies() {
        let (reply, tag) = world.post("/v1/chat/completions", &case.body, &[])?;
        let checked = match case.outcome {
            Ok(model) => world.expect_routed(&reply, &tag, model),
            Err((status, code)) => world.expect_refused(&reply, &tag, status, code),
        };
        checked.map_err(|e| format!("{}: {e}", case.name))?;
    }
    Ok(())
}

/// Polls an Envoy stat until it passes `target` (Envoy counts asynchronously to the client).
fn wait_stat(envoy: &Envoy, name: &str, target: u64) -> Outcome {
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while envoy.stat(name) < target {
        ensure!(Instant::now() < deadline, "{name} never reached {target}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

fn half_a_body_then_disconnect_reaches_no_backend(world: &World) -> Outcome {
    use std::io::Write;
    let stat = "http.gateway.downstream_cx_destroy_remote_active_rq";
    let before = world.envoy.stat(stat);
    let tag = world.tag();
    let body = chat_body(MISTRAL).to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n{TAG_HEADER}: {tag}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut stream =
        std::net::TcpStream::connect(world.envoy.listener).map_err(|e| e.to_string())?;
    stream
        .write_all(head.as_bytes())
        .map_err(|e| e.to_string())?;
    stream
        .write_all(&body.as_bytes()[..body.len() / 2])
        .map_err(|e| e.to_string())?;
    drop(stream);
    wait_stat(&world.envoy, stat, before + 1)?;
    let seen = world.backends.saw(&tag);
    ensure!(seen.is_empty(), "half a body reached {}", seen[0].replica);
    Ok(())
}

fn slow_client_times_out_without_blocking_others(world: &World) -> Outcome {
    use std::io::{Read, Write};
    let envoy = Envoy::start_edited(
        &world.backends,
        "request_timeout: 300s",
        "request_timeout: 2s",
        None,
    )?;
    let tag = world.tag();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n{TAG_HEADER}: {tag}\r\n\
         content-type: application/json\r\ncontent-length: 100000\r\n\r\n{{\"model\":\"mistral:latest\","
    );
    let mut slow = std::net::TcpStream::connect(envoy.listener).map_err(|e| e.to_string())?;
    slow.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    // The slow client trickles a byte now and then, far short of its content-length.
    let trickle = {
        let mut slow = slow.try_clone().map_err(|e| e.to_string())?;
        std::thread::spawn(move || {
            for _ in 0..50 {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if slow.write_all(b" ").is_err() {
                    return;
                }
            }
        })
    };
    // Meanwhile every worker keeps serving.
    for model in [LLAMA, MISTRAL, PLAIN].repeat(10) {
        let (reply, other) = world.exchange_at(
            envoy.listener,
            Protocol::Http1,
            "POST",
            "/v1/chat/completions",
            &[],
            vec![Bytes::from(chat_body(model).to_string())],
        )?;
        world.expect_routed(&reply, &other, model)?;
    }
    slow.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    let _ = slow.read_to_end(&mut response);
    let _ = trickle.join();
    let reply = client::parse_response(&response)?;
    ensure!(
        reply.status == 408,
        "slow client got {} {}",
        reply.status,
        reply.text()
    );
    ensure!(
        world.backends.saw(&tag).is_empty(),
        "the slow request reached a backend"
    );
    Ok(())
}

fn many_concurrent_h2_streams_on_one_connection_route_independently(world: &World) -> Outcome {
    const STREAMS: usize = 300;
    let listener = world.envoy.listener;
    let tags: Vec<String> = (0..STREAMS).map(|_| world.tag()).collect();
    let replies = world.runtime.block_on(async {
        let connection = client::H2Connection::open(listener).await?;
        let mut tasks = Vec::new();
        for (index, tag) in tags.iter().cloned().enumerate() {
            let mut connection = connection.clone();
            tasks.push(tokio::spawn(async move {
                let body = if index % 10 == 9 {
                    Bytes::from_static(br#"{"model":"a","model":"b"}"#)
                } else {
                    Bytes::from(chat_body([LLAMA, MISTRAL, PLAIN][index % 3]).to_string())
                };
                let headers = [
                    (TAG_HEADER, tag.as_str()),
                    ("content-type", "application/json"),
                ];
                connection
                    .send(request(
                        "POST",
                        "/v1/chat/completions",
                        &headers,
                        Frames::new([body]),
                    ))
                    .await
            }));
        }
        let mut replies = Vec::new();
        for task in tasks {
            replies.push(task.await.map_err(|e| e.to_string())??);
        }
        Ok::<_, String>(replies)
    })?;
    for (index, (reply, tag)) in replies.iter().zip(&tags).enumerate() {
        let checked = if index % 10 == 9 {
            world.expect_refused(reply, tag, 400, "duplicate_model")
        } else {
            world.expect_routed(reply, tag, [LLAMA, MISTRAL, PLAIN][index % 3])
        };
        checked.map_err(|e| format!("stream {index}: {e}"))?;
    }
    Ok(())
}

/// Checks Envoy's own 5xx answer: the OpenAI error shape from envoy.yaml's local_reply_config.
fn expect_server_error(reply: &Reply, status: u16) -> Outcome {
    ensure!(
        reply.status == status,
        "status {} (want {status}): {}",
        reply.status,
        reply.text()
    );
    ensure!(
        reply.header("content-type") == Some("application/json"),
        "not JSON: {}",
        reply.text()
    );
    let body = reply.json()?;
    ensure!(
        body["error"]["type"] == "server_error",
        "error {}",
        body["error"]
    );
    ensure!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "no message"
    );
    Ok(())
}

fn backend_faults_get_a_json_503_and_other_models_keep_working(world: &World) -> Outcome {
    // A backend that drops the connection once it has the request.
    let body = chat_body(PLAIN).to_string();
    let (reply, _) = world.post(
        "/v1/chat/completions",
        body.as_bytes(),
        &[(llm_sim::FAULT_HEADER, "reset")],
    )?;
    expect_server_error(&reply, 503)?;
    // A backend that is down: the plain model fails cleanly, the pools keep serving.
    let plain = &world.backends.plain.replicas[0];
    plain.stop();
    let (reply, _) = world.chat(&chat_body(PLAIN))?;
    expect_server_error(&reply, 503)?;
    for model in [LLAMA, MISTRAL] {
        let (reply, tag) = world.chat(&chat_body(model))?;
        world.expect_routed(&reply, &tag, model)?;
    }
    world
        .runtime
        .block_on(plain.restart())
        .map_err(|e| e.to_string())?;
    let (reply, tag) = world.chat(&chat_body(PLAIN))?;
    world.expect_routed(&reply, &tag, PLAIN)?;
    // One replica of a pool down: connect failures are retried on the others.
    let replica = &world.backends.mistral.replicas[0];
    replica.stop();
    for _ in 0..30 {
        let (reply, tag) = world.chat(&chat_body(MISTRAL))?;
        world.expect_routed(&reply, &tag, MISTRAL)?;
    }
    world
        .runtime
        .block_on(replica.restart())
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Mixed models, body sizes and HTTP versions at saturation for SOAK_SECONDS (default 20;
/// `./build.sh soak` runs 600) while one llama replica is stopped and restarted every few
/// seconds. Every answer is checked.
fn soak_mixed_traffic_while_a_replica_restarts(world: &World) -> Outcome {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
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
    wait_stat(&world.envoy, "wasmcustom.model_router.wasm_memory_bytes", 1)?;
    let memory_before = world
        .envoy
        .stat("wasmcustom.model_router.wasm_memory_bytes");
    let pools = [
        &world.backends.llama,
        &world.backends.mistral,
        &world.backends.plain,
    ];
    // Every answer is checked here; the backends need not keep the traffic.
    pools.iter().for_each(|pool| pool.set_recording(false));
    let stop = Arc::new(AtomicBool::new(false));
    let restarted = Arc::clone(&world.backends.llama.replicas[0]);
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
                let mut h1 = Connection::open(listener).await?;
                let mut h2 = client::H2Connection::open(listener).await?;
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
                        Err(_) => h1 = Connection::open(listener).await?,
                    }
                }
                Ok::<_, String>(answers)
            }));
        }
        tokio::time::sleep(std::time::Duration::from_secs(seconds)).await;
        stop.store(true, Ordering::SeqCst);
        let mut answers = Vec::new();
        for task in tasks {
            answers.extend(task.await.map_err(|e| e.to_string())??);
        }
        let restarts = restarter.await.map_err(|e| e.to_string())??;
        Ok::<_, String>((answers, restarts))
    });
    pools.iter().for_each(|pool| pool.set_recording(true));
    let (answers, restarts) = result?;
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
    let memory_after = world
        .envoy
        .stat("wasmcustom.model_router.wasm_memory_bytes");
    println!(
        "    soak {:.0?}: {} answers, {restarts} replica restarts, {misrouted} misrouted, {failed_llama} llama 5xx, {failed_other} other 5xx, filter memory {memory_before} -> {memory_after} bytes",
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
        memory_after <= memory_before + 64 * 1024,
        "filter memory grew {memory_before} -> {memory_after}"
    );
    Ok(())
}

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

/// Moves a new filter configuration into the directory Envoy watches (envoy.yaml's ECDS).
fn install_filter(envoy: &Envoy, wasm: &std::path::Path, plugin_config: &str) -> Outcome {
    let resource = format!(
        r#"resources:
- "@type": type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig
  name: model-router
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
    config:
      name: model-router
      root_id: model-router
      allow_on_headers_stop_iteration: true
      vm_config:
        vm_id: model-router
        runtime: envoy.wasm.runtime.v8
        code: {{ local: {{ filename: {} }} }}
      configuration:
        "@type": type.googleapis.com/google.protobuf.StringValue
        value: '{plugin_config}'
"#,
        wasm.display()
    );
    let dir = envoy.dir.join("filter");
    let staging = envoy.dir.join("model-router.yaml.new");
    std::fs::write(&staging, resource).map_err(|e| e.to_string())?;
    std::fs::rename(&staging, dir.join("model-router.yaml")).map_err(|e| e.to_string())
}

fn filter_is_replaced_while_traffic_flows(world: &World) -> Outcome {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let envoy = Envoy::start(&world.backends, None)?;
    let reloads = "extension_config_discovery.http_filter.model-router.config_reload";
    let failures = "extension_config_discovery.http_filter.model-router.config_fail";
    let missing_model = |envoy: &Envoy| {
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
                let mut connection = Connection::open(listener).await?;
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
    install_filter(&envoy, &wasm, r#"{"missing_model":"pass_through"}"#)?;
    wait_stat(&envoy, reloads, 1)?;
    let (reply, tag) = missing_model(&envoy)?;
    world.expect_refused(&reply, &tag, 404, "model_not_found")?;

    // A configuration that cannot load is refused; the running filter keeps serving.
    install_filter(&envoy, &wasm, r#"{"max_model_bytes":0}"#)?;
    wait_stat(&envoy, failures, 1)?;
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

fn gateway_still_serves_after_everything(world: &World) -> Outcome {
    // Envoy must not have crashed along the way.
    let ready =
        harness::admin_get(world.envoy.admin, "/ready").is_ok_and(|(status, _)| status == 200);
    ensure!(ready, "Envoy is no longer ready");
    scenario_routes_each_model_to_its_pool_or_backend(world)
}

type Case = (&'static str, fn(&World) -> Outcome);

const CASES: &[Case] = &[
    (
        "scenario_routes_each_model_to_its_pool_or_backend",
        scenario_routes_each_model_to_its_pool_or_backend,
    ),
    (
        "pool_requests_are_spread_over_replicas",
        pool_requests_are_spread_over_replicas,
    ),
    (
        "model_key_after_messages_routes",
        model_key_after_messages_routes,
    ),
    (
        "nested_model_keys_are_ignored",
        nested_model_keys_are_ignored,
    ),
    (
        "escaped_and_unicode_models_are_decoded",
        escaped_and_unicode_models_are_decoded,
    ),
    (
        "client_routing_header_is_replaced_by_the_body_model",
        client_routing_header_is_replaced_by_the_body_model,
    ),
    (
        "client_routing_header_is_removed_when_the_filter_does_not_route",
        client_routing_header_is_removed_when_the_filter_does_not_route,
    ),
    (
        "bodiless_and_other_requests_pass_untouched",
        bodiless_and_other_requests_pass_untouched,
    ),
    (
        "query_string_is_ignored_when_matching_paths",
        query_string_is_ignored_when_matching_paths,
    ),
    (
        "completions_and_embeddings_are_routed",
        completions_and_embeddings_are_routed,
    ),
    (
        "streamed_answers_pass_through_to_done",
        streamed_answers_pass_through_to_done,
    ),
    (
        "unknown_model_gets_the_catch_all_404",
        unknown_model_gets_the_catch_all_404,
    ),
    (
        "each_refusal_has_its_status_and_code_and_reaches_no_backend",
        each_refusal_has_its_status_and_code_and_reaches_no_backend,
    ),
    (
        "refusals_carry_a_response_code_detail",
        refusals_carry_a_response_code_detail,
    ),
    (
        "chunked_upload_in_one_byte_chunks_routes",
        chunked_upload_in_one_byte_chunks_routes,
    ),
    (
        "h2c_uploads_in_many_frames_route",
        h2c_uploads_in_many_frames_route,
    ),
    (
        "four_mib_body_with_model_last_routes",
        four_mib_body_with_model_last_routes,
    ),
    ("body_over_the_limit_gets_413", body_over_the_limit_gets_413),
    (
        "two_thousand_concurrent_requests_are_never_misrouted",
        two_thousand_concurrent_requests_are_never_misrouted,
    ),
    (
        "missing_model_passes_through_when_configured",
        missing_model_passes_through_when_configured,
    ),
    (
        "bad_plugin_configuration_refuses_to_load",
        bad_plugin_configuration_refuses_to_load,
    ),
    (
        "envoy_gateway_shaped_data_plane_routes_through_the_right_picker",
        envoy_gateway_shaped_data_plane_routes_through_the_right_picker,
    ),
    (
        "hostile_bodies_are_refused_or_routed_as_documented",
        hostile_bodies_are_refused_or_routed_as_documented,
    ),
    (
        "half_a_body_then_disconnect_reaches_no_backend",
        half_a_body_then_disconnect_reaches_no_backend,
    ),
    (
        "slow_client_times_out_without_blocking_others",
        slow_client_times_out_without_blocking_others,
    ),
    (
        "many_concurrent_h2_streams_on_one_connection_route_independently",
        many_concurrent_h2_streams_on_one_connection_route_independently,
    ),
    (
        "backend_faults_get_a_json_503_and_other_models_keep_working",
        backend_faults_get_a_json_503_and_other_models_keep_working,
    ),
    (
        "soak_mixed_traffic_while_a_replica_restarts",
        soak_mixed_traffic_while_a_replica_restarts,
    ),
    (
        "filter_is_replaced_while_traffic_flows",
        filter_is_replaced_while_traffic_flows,
    ),
    (
        "gateway_still_serves_after_everything",
        gateway_still_serves_after_everything,
    ),
];

fn main() -> std::process::ExitCode {
    // libtest-style arguments: a free argument filters cases by substring; flags are ignored.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let selected: Vec<&Case> = CASES
        .iter()
        .filter(|(name, _)| filter.as_ref().is_none_or(|f| name.contains(f.as_str())))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let backends = runtime.block_on(Backends::start());
    let envoy = {
        let _guard = runtime.enter();
        Envoy::start(&backends, None).unwrap_or_else(|e| panic!("gateway did not start: {e}"))
    };
    let world = World {
        runtime,
        backends,
        envoy,
        next_tag: AtomicU64::new(0),
    };
    println!(
        "\nrunning {} gateway cases (Envoy on {})",
        selected.len(),
        world.envoy.listener
    );
    let (mut passed, mut failed) = (0, Vec::new());
    for (name, case) in selected {
        let started = Instant::now();
        match case(&world) {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({:.2?})", started.elapsed());
            }
            Err(error) => {
                println!("test {name} ... FAILED\n    {error}");
                failed.push(*name);
            }
        }
    }
    if !failed.is_empty() {
        println!(
            "\nEnvoy stderr (last lines):\n{}",
            world.envoy.stderr_tail()
        );
        println!("\nfailed: {}", failed.join(", "));
    }
    println!("\ngateway: {passed} passed, {} failed", failed.len());
    if failed.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
