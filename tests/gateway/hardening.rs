//! Hardening: hostile bodies, clients that stop or crawl, many streams on one connection,
//! and backends that fail.

use crate::{chat_body, World};
use bytes::Bytes;
use testkit::client::{get, parse_response, request, Connection, Frames, Protocol, Reply};
use testkit::envoy::LocalGateway;
use testkit::scenario::{LLAMA, MISTRAL, PLAIN, TAG_HEADER};
use testkit::{ensure, Outcome};

testkit::cases!(World;
    hostile_bodies_are_refused_or_routed_as_documented,
    half_a_body_then_disconnect_reaches_no_backend,
    slow_client_times_out_without_blocking_others,
    many_concurrent_h2_streams_on_one_connection_route_independently,
    backend_faults_get_a_json_503_and_other_models_keep_working,
);

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
    // None of them disturbed the gateway.
    let ready = get(world.envoy.admin, "/ready").is_ok_and(|(status, _)| status == 200);
    ensure!(ready, "Envoy is no longer ready");
    for model in [LLAMA, MISTRAL, PLAIN] {
        let (reply, tag) = world.chat(&chat_body(model))?;
        world.expect_routed(&reply, &tag, model)?;
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
    world.envoy.wait_stat(stat, before + 1)?;
    let seen = world.backends.saw(&tag);
    ensure!(seen.is_empty(), "half a body reached {}", seen[0].replica);
    Ok(())
}

fn slow_client_times_out_without_blocking_others(world: &World) -> Outcome {
    use std::io::{Read, Write};
    let envoy = LocalGateway::new(&world.backends)?
        .edit("request_timeout: 300s", "request_timeout: 2s")?
        .start()?;
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
        let (reply, other) =
            world.chat_at(envoy.listener, chat_body(model).to_string().as_bytes())?;
        world.expect_routed(&reply, &other, model)?;
    }
    slow.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    let _ = slow.read_to_end(&mut response);
    let _ = trickle.join();
    let reply = parse_response(&response)?;
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
        let connection = Connection::open(listener, Protocol::H2c).await?;
        let mut tasks = Vec::new();
        for (index, tag) in tags.iter().cloned().enumerate() {
            let mut connection = connection.stream().expect("h2c carries concurrent streams");
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
    testkit::openai::expect_error(reply, status, "server_error", None)
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
    let plain = &world.backends.pool_of(PLAIN).replicas[0];
    plain.stop();
    let down = (|| {
        let (reply, _) = world.chat(&chat_body(PLAIN))?;
        expect_server_error(&reply, 503)?;
        for model in [LLAMA, MISTRAL] {
            let (reply, tag) = world.chat(&chat_body(model))?;
            world.expect_routed(&reply, &tag, model)?;
        }
        Ok::<_, String>(())
    })();
    // Back up whatever happened, so that no other case meets a stopped backend.
    world
        .runtime
        .block_on(plain.restart())
        .map_err(|e| e.to_string())?;
    down?;
    let (reply, tag) = world.chat(&chat_body(PLAIN))?;
    world.expect_routed(&reply, &tag, PLAIN)
}
