//! The model catalogue: aliases route as their model and reach the backend under the name it
//! serves (body bytes and content-length), wherever the model stands in the body and however
//! the body is framed; `GET /v1/models` is the filter's; strict mode answers unknown models
//! with no backend consulted; a model's headers (a LoRA adapter's base model) route it.

use crate::World;
use bytes::Bytes;
use serde_json::{json, Value};
use testkit::client::{request, Connection, Frames, Protocol, Reply};
use testkit::envoy::{Envoy, LocalGateway};
use testkit::scenario::{ALIASES, LLAMA, MISTRAL, MODELS, PLAIN, ROUTING_HEADER, TAG_HEADER};
use testkit::{ensure, Outcome};

testkit::cases!(World;
    aliases_reach_the_backend_under_the_model_name,
    rewrites_anywhere_in_a_large_body_keep_every_other_byte,
    escaped_aliases_are_replaced_whole,
    names_the_backend_serves_are_forwarded_byte_for_byte,
    the_model_list_is_answered_from_the_catalogue,
    one_model_is_answered_by_name_alias_or_encoded_id,
    strict_mode_answers_unknown_models_without_any_backend,
    base_model_headers_route_lora_adapters,
    without_a_catalogue_models_are_routed_as_sent,
);

/// `body` with its first `"model":"<from>"` naming `to` instead.
fn renamed(body: &str, from: &str, to: &str) -> String {
    let old = format!(r#""model":"{from}""#);
    assert!(body.contains(&old), "no {old} in the body");
    body.replacen(&old, &format!(r#""model":"{to}""#), 1)
}

/// Checks what the backend received for `tag`: exactly `expected`, with a content-length that
/// says so when it has one (and it must when the client sent one).
fn expect_backend_body(world: &World, tag: &str, expected: &[u8], declared: bool) -> Outcome {
    let seen = world.seen_once(tag)?;
    ensure!(
        seen.body == expected,
        "the backend got {} bytes, not the {} expected{}",
        seen.body.len(),
        expected.len(),
        if seen.body.len() < 300 {
            format!(": {:?}", String::from_utf8_lossy(&seen.body))
        } else {
            String::new()
        }
    );
    let lengths = seen.header_values("content-length");
    let want = expected.len().to_string();
    ensure!(
        lengths.iter().all(|l| *l == want),
        "the backend got content-length {lengths:?} for {want} bytes"
    );
    ensure!(
        !declared || lengths == [want.as_str()],
        "the backend got content-length {lengths:?}, want [{want}]"
    );
    Ok(())
}

fn aliases_reach_the_backend_under_the_model_name(world: &World) -> Outcome {
    let rewritten = world.envoy.counter("requests_rewritten");
    let mut sent = 0;
    for (alias, model) in ALIASES {
        for (path, body) in [
            (
                "/v1/chat/completions",
                json!({"model": alias, "messages": [{"role": "user", "content": "Say this is a test"}]}),
            ),
            (
                "/v1/completions",
                json!({"model": alias, "prompt": "Say this is a test"}),
            ),
            ("/v1/embeddings", json!({"model": alias, "input": "a"})),
        ] {
            let body = body.to_string();
            let (reply, tag) = world.post(path, body.as_bytes(), &[])?;
            world.expect_routed(&reply, &tag, model)?;
            expect_backend_body(world, &tag, renamed(&body, alias, model).as_bytes(), true)?;
            // The answer names the model as the backend does (README: the response's model).
            ensure!(
                reply.json()?["model"] == model,
                "{path} for {alias} answered as {}",
                reply.json()?["model"]
            );
            sent += 1;
        }
    }
    world.envoy.wait_stat(
        "wasmcustom.model_router.requests_rewritten",
        rewritten + sent,
    )
}

fn rewrites_anywhere_in_a_large_body_keep_every_other_byte(world: &World) -> Outcome {
    // Warm both workers' VMs, then compare the filter's memory after the large bodies.
    for _ in 0..4 {
        let (reply, tag) = world.chat(&json!({"model": "gpt-4o", "messages": []}))?;
        world.expect_routed(&reply, &tag, LLAMA)?;
    }
    let memory_before = world
        .envoy
        .stat("wasmcustom.model_router.wasm_memory_bytes");
    let text = "lorem ipsum ".repeat((1 << 20) / 12);
    let content = format!(r#"[{{"role":"user","content":"{text}"}}]"#);
    let bodies = [
        format!(r#"{{"model":"gpt-4o","messages":{content}}}"#),
        format!(
            r#"{{"messages":{content},"model":"gpt-4o","stream":false,"messages2":{content}}}"#
        ),
        format!(r#"{{"messages":{content},"model":"gpt-4o"}}"#),
    ];
    for body in &bodies {
        let expected = renamed(body, "gpt-4o", LLAMA);
        let frames = || -> Vec<Bytes> {
            body.as_bytes()
                .chunks(50_000)
                .map(Bytes::copy_from_slice)
                .collect()
        };
        let length = body.len().to_string();
        // Declared length, chunked HTTP/1.1, and h2c frames without a length.
        let declared = [("content-length", length.as_str())];
        for (protocol, headers, declares) in [
            (Protocol::Http1, &declared[..], true),
            (Protocol::Http1, &[][..], false),
            (Protocol::H2c, &[][..], false),
        ] {
            let (reply, tag) =
                world.exchange(protocol, "POST", "/v1/chat/completions", headers, frames())?;
            world.expect_routed(&reply, &tag, LLAMA)?;
            expect_backend_body(world, &tag, expected.as_bytes(), declares).map_err(|e| {
                format!(
                    "{protocol:?}, model at {}: {e}",
                    body.find("gpt-4o").unwrap()
                )
            })?;
        }
    }
    let memory_after = world
        .envoy
        .stat("wasmcustom.model_router.wasm_memory_bytes");
    ensure!(
        memory_after <= memory_before + 128 * 1024,
        "filter memory grew from {memory_before} to {memory_after} bytes rewriting 2 MiB bodies"
    );
    Ok(())
}

fn escaped_aliases_are_replaced_whole(world: &World) -> Outcome {
    let body = r#"{"mod\u0065l" : "gpt\u002d4\u006f","messages":[]}"#;
    let (reply, tag) = world.post("/v1/chat/completions", body.as_bytes(), &[])?;
    world.expect_routed(&reply, &tag, LLAMA)?;
    let expected = format!(r#"{{"mod\u0065l" : "{LLAMA}","messages":[]}}"#);
    expect_backend_body(world, &tag, expected.as_bytes(), true)
}

fn names_the_backend_serves_are_forwarded_byte_for_byte(world: &World) -> Outcome {
    let rewritten = world.envoy.counter("requests_rewritten");
    for body in [
        format!(r#"{{"model":"{PLAIN}","messages":[]}}"#),
        r#"{"model":"mistral\u003alatest","messages":[]}"#.to_owned(),
    ] {
        let (reply, tag) = world.post("/v1/chat/completions", body.as_bytes(), &[])?;
        ensure!(reply.status == 200, "{}: {}", reply.status, reply.text());
        expect_backend_body(world, &tag, body.as_bytes(), true)?;
    }
    let now = world.envoy.counter("requests_rewritten");
    ensure!(now == rewritten, "{} bodies rewritten", now - rewritten);
    Ok(())
}

fn get(world: &World, envoy: &Envoy, path: &str) -> Result<(Reply, String), String> {
    world.exchange_at(envoy.listener, Protocol::Http1, "GET", path, &[], vec![])
}

fn the_model_list_is_answered_from_the_catalogue(world: &World) -> Outcome {
    let answered = world.envoy.counter("models_answered");
    let (reply, tag) = get(world, &world.envoy, "/v1/models")?;
    ensure!(
        reply.status == 200,
        "GET /v1/models: {} {}",
        reply.status,
        reply.text()
    );
    ensure!(
        reply.header("content-type") == Some("application/json"),
        "content-type {:?}",
        reply.header("content-type")
    );
    let owners = [
        "vllm-llama3-8b-instruct",
        "mistral",
        "some-cool-self-hosted-model",
    ];
    let data: Vec<Value> = MODELS
        .iter()
        .zip(owners)
        .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    let want = json!({"object": "list", "data": data});
    ensure!(reply.json()? == want, "list {}", reply.text());
    ensure!(
        world.backends.saw(&tag).is_empty(),
        "GET /v1/models reached a backend"
    );
    let line = world
        .envoy
        .wait_access_log("GET /v1/models HTTP/1.1\" 200")?;
    ensure!(line.contains("model_router_models"), "access log: {line}");
    ensure!(
        world.envoy.counter("models_answered") > answered,
        "models_answered not counted"
    );
    Ok(())
}

fn one_model_is_answered_by_name_alias_or_encoded_id(world: &World) -> Outcome {
    for (path, id) in [
        (format!("/v1/models/{LLAMA}"), LLAMA),
        ("/v1/models/mistral:latest".to_owned(), MISTRAL),
        ("/v1/models/mistral%3Alatest?x=1".to_owned(), MISTRAL),
        ("/v1/models/gpt-4o".to_owned(), LLAMA),
        (format!("/v1/models/{PLAIN}"), PLAIN),
    ] {
        let (reply, tag) = get(world, &world.envoy, &path)?;
        ensure!(
            reply.status == 200,
            "{path}: {} {}",
            reply.status,
            reply.text()
        );
        ensure!(reply.json()?["id"] == id, "{path}: {}", reply.text());
        ensure!(
            reply.json()?["object"] == "model",
            "{path}: {}",
            reply.text()
        );
        ensure!(
            world.backends.saw(&tag).is_empty(),
            "{path} reached a backend"
        );
    }
    // envoy.yaml has Envoy redirect an encoded slash to its decoded form (Envoy's
    // path_with_escaped_slashes_action) before any filter: the client follows, the filter
    // answers the decoded path.
    let encoded = "/v1/models/meta-llama%2FLlama-3.1-8B-Instruct";
    let (reply, _) = get(world, &world.envoy, encoded)?;
    ensure!(
        matches!(reply.status, 301 | 302 | 307 | 308)
            && reply
                .header("location")
                .is_some_and(|l| l.ends_with(&format!("/v1/models/{LLAMA}"))),
        "{encoded}: {} {:?}",
        reply.status,
        reply.headers
    );
    for path in [
        "/v1/models/gpt-5",
        "/v1/models/GPT-4o",
        "/v1/models/mistral%zz",
    ] {
        let (reply, tag) = get(world, &world.envoy, path)?;
        world
            .expect_refused(&reply, &tag, 404, "model_not_found")
            .map_err(|e| format!("{path}: {e}"))?;
        let message = reply.json()?["error"]["message"].to_string();
        ensure!(
            path.ends_with("zz") || message.contains(path.rsplit('/').next().unwrap()),
            "{path}: {message}"
        );
    }
    Ok(())
}

/// Requests Envoy sent to any cluster of envoy.yaml.
fn upstream_requests(envoy: &Envoy) -> u64 {
    [
        "vllm-llama3-8b-instruct",
        "mistral",
        "some-cool-self-hosted-model",
    ]
    .iter()
    .map(|cluster| envoy.stat(&format!("cluster.{cluster}.upstream_rq_total")))
    .sum()
}

fn strict_mode_answers_unknown_models_without_any_backend(world: &World) -> Outcome {
    let envoy = LocalGateway::new(&world.backends)?
        .edit(
            r#""unknown_models": "pass_through""#,
            r#""unknown_models": "reject""#,
        )?
        .start()?;
    let tag = world.tag();
    let headers = [
        (TAG_HEADER, tag.as_str()),
        ("content-type", "application/json"),
    ];
    let unknown = br#"{"messages":[{"role":"user","content":"hi"}],"model":"gpt-5"}"#;
    let known = br#"{"model":"mistral","messages":[]}"#;
    let upstream_before = upstream_requests(&envoy);
    // On one HTTP/1.1 connection, in small frames: the 404 waits for the body's end, so the
    // connection serves the next request.
    let replies = world.runtime.block_on(async {
        let mut connection = Connection::open(envoy.listener, Protocol::Http1).await?;
        let mut replies = Vec::new();
        for body in [&unknown[..], &known[..]] {
            let frames = Frames::new(body.chunks(9).map(Bytes::copy_from_slice));
            replies.push(
                connection
                    .send(request("POST", "/v1/chat/completions", &headers, frames))
                    .await?,
            );
        }
        Ok::<_, String>(replies)
    })?;
    world.expect_refused(&replies[0], "none", 404, "model_not_found")?;
    ensure!(
        replies[0].json()?["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("gpt-5")),
        "message {}",
        replies[0].text()
    );
    ensure!(
        replies[1].status == 200,
        "the alias after it: {}",
        replies[1].text()
    );
    let seen = world.backends.saw(&tag);
    ensure!(
        seen.len() == 1
            && seen[0].body.as_ref()
                == renamed(std::str::from_utf8(known).unwrap(), "mistral", MISTRAL).as_bytes(),
        "backends saw {} requests: {:?}",
        seen.len(),
        seen.iter()
            .map(|s| String::from_utf8_lossy(&s.body))
            .collect::<Vec<_>>()
    );
    envoy.wait_stat(
        "wasmcustom.model_router.requests_rejected_model_not_found",
        1,
    )?;
    let line = envoy.wait_access_log("\" 404 model_router_model_not_found")?;
    ensure!(
        line.contains("upstream=-/-"),
        "the 404 went upstream: {line}"
    );
    envoy.wait_stat("http.gateway.downstream_rq_completed", 2)?;
    let upstream = upstream_requests(&envoy) - upstream_before;
    ensure!(
        upstream == 1,
        "Envoy sent {upstream} upstream requests for the two"
    );
    Ok(())
}

fn base_model_headers_route_lora_adapters(world: &World) -> Outcome {
    const ADAPTER: &str = "llama-3.1-8b-sql-lora";
    const BASE: &str = "x-gateway-base-model-name";
    // A vLLM replica serving the base model and its adapter behind the llama route, which
    // matches the base model header instead of the routing header.
    let lora = world
        .runtime
        .block_on(llm_sim::Pool::bind(
            llm_sim::PoolConfig::new("lora", &[LLAMA, ADAPTER]),
            "127.0.0.1",
            0,
            1,
        ))
        .map_err(|e| e.to_string())?;
    let port = lora.replicas[0].addr.port();
    let ports: Vec<(u16, u16)> = world
        .backends
        .port_map()
        .into_iter()
        .map(|(written, bound)| {
            (
                written,
                if (18001..=18003).contains(&written) {
                    port
                } else {
                    bound
                },
            )
        })
        .collect();
    let plugin = json!({
        "models": [
            {"name": LLAMA, "headers": {BASE: LLAMA}},
            {"name": ADAPTER, "headers": {BASE: LLAMA}},
            {"name": MISTRAL},
        ],
    });
    let envoy = LocalGateway::with_ports(&ports)?
        .edit(
            &format!(
                "- name: {ROUTING_HEADER}\n                    string_match: {{ exact: {LLAMA} }}"
            ),
            &format!("- name: {BASE}\n                    string_match: {{ exact: {LLAMA} }}"),
        )?
        .plugin_config(&plugin.to_string())?
        .start()?;
    let send = |model: &str, spoofed: &str| -> Result<(Reply, String), String> {
        let body = crate::chat_body(model).to_string();
        let length = body.len().to_string();
        let headers = [(BASE, spoofed), ("content-length", length.as_str())];
        world.exchange_at(
            envoy.listener,
            Protocol::Http1,
            "POST",
            "/v1/chat/completions",
            &headers,
            vec![Bytes::from(body)],
        )
    };
    for model in [ADAPTER, LLAMA] {
        let (reply, tag) = send(model, MISTRAL)?;
        reply.expect_answer_of(model)?;
        let seen: Vec<_> = lora
            .seen()
            .into_iter()
            .filter(|s| s.header_values(TAG_HEADER) == [tag.as_str()])
            .collect();
        ensure!(
            seen.len() == 1,
            "the adapter's replica saw {} requests",
            seen.len()
        );
        ensure!(
            seen[0].header_values(BASE) == [LLAMA]
                && seen[0].header_values(ROUTING_HEADER) == [model],
            "{model}: the replica saw {BASE} {:?} and {ROUTING_HEADER} {:?}",
            seen[0].header_values(BASE),
            seen[0].header_values(ROUTING_HEADER)
        );
    }
    // A model without headers: a client's copy is removed all the same.
    let (reply, tag) = send(MISTRAL, LLAMA)?;
    world.expect_routed(&reply, &tag, MISTRAL)?;
    let seen = world.seen_once(&tag)?;
    ensure!(
        seen.header_values(BASE).is_empty(),
        "a client-sent {BASE} reached the backend: {:?}",
        seen.header_values(BASE)
    );
    Ok(())
}

fn without_a_catalogue_models_are_routed_as_sent(world: &World) -> Outcome {
    let envoy = LocalGateway::new(&world.backends)?
        .plugin_config(r#"{"missing_model": "reject"}"#)?
        .start()?;
    // The filter does not answer the list: the route table's catch-all does.
    let (reply, tag) = get(world, &envoy, "/v1/models")?;
    world.expect_refused(&reply, &tag, 404, "model_not_found")?;
    let line = envoy.wait_access_log("GET /v1/models")?;
    ensure!(
        line.contains("direct_response"),
        "not the route table's answer: {line}"
    );
    // An alias is just another name, which no route matches.
    let (reply, tag) = world.chat_at(
        envoy.listener,
        crate::chat_body("gpt-4o").to_string().as_bytes(),
    )?;
    world.expect_refused(&reply, &tag, 404, "model_not_found")?;
    let body = crate::chat_body(MISTRAL).to_string();
    let (reply, tag) = world.chat_at(envoy.listener, body.as_bytes())?;
    world.expect_routed(&reply, &tag, MISTRAL)?;
    expect_backend_body(world, &tag, body.as_bytes(), false)
}
