//! Refusals: every body the filter cannot route gets its own status, OpenAI error code,
//! counter and response-code detail, and reaches no backend; a bad plugin configuration
//! never loads.

use crate::{chat_body, World};
use bytes::Bytes;
use testkit::client::{request, Connection, Frames, Protocol, Reply};
use testkit::envoy::LocalGateway;
use testkit::scenario::{MISTRAL, TAG_HEADER};
use testkit::{ensure, Outcome};

testkit::cases!(World;
    each_refusal_has_its_status_and_code_and_reaches_no_backend,
    refusals_carry_a_response_code_detail,
    refusals_keep_the_connection_once_the_body_is_read,
    without_the_http1_option_only_a_400_closes_the_connection,
    body_over_the_limit_gets_413,
    bad_plugin_configuration_refuses_to_load,
);

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
    world
        .envoy
        .wait_access_log(" 400 model_router_duplicate_model ")
        .map(drop)
}

/// A request's extra headers and its body frames.
type Request<'a> = (&'a [(&'a str, &'a str)], Vec<Bytes>);

/// Sends `requests` one after another on one HTTP/1.1 connection to `listener`; each reply
/// with its tag.
fn on_one_connection(
    world: &World,
    listener: std::net::SocketAddr,
    requests: Vec<Request>,
) -> Result<Vec<(Reply, String)>, String> {
    let tagged: Vec<_> = requests
        .into_iter()
        .map(|(headers, frames)| (world.tag(), headers.to_vec(), frames))
        .collect();
    world.runtime.block_on(async {
        let mut connection = Connection::open(listener, Protocol::Http1).await?;
        let mut replies = Vec::new();
        for (tag, mut headers, frames) in tagged {
            headers.push((TAG_HEADER, &tag));
            headers.push(("content-type", "application/json"));
            let request = request(
                "POST",
                "/v1/chat/completions",
                &headers,
                Frames::new(frames),
            );
            replies.push((connection.send(request).await?, tag.clone()));
        }
        Ok(replies)
    })
}

fn refusals_keep_the_connection_once_the_body_is_read(world: &World) -> Outcome {
    // Refused on the first bytes of a 4 MiB body that is still arriving: the rest is read
    // and dropped, then the refusal is sent and the connection serves the next request.
    let mut duplicate = br#"{"model":"a","model":"b","messages":""#.to_vec();
    duplicate.extend(std::iter::repeat_n(b'x', 4 << 20));
    duplicate.extend_from_slice(br#""}"#);
    let frames: Vec<Bytes> = duplicate
        .chunks(64 << 10)
        .map(Bytes::copy_from_slice)
        .collect();
    let routed = || vec![Bytes::from(chat_body(MISTRAL).to_string())];
    let replies = on_one_connection(
        world,
        world.envoy.listener,
        vec![
            (&[], frames),
            (&[], routed()),
            (&[], vec![Bytes::from_static(b"{\"model\": 7}")]),
            (
                &[("content-encoding", "gzip")],
                vec![Bytes::from_static(b"\x1f\x8b...")],
            ),
            (&[], routed()),
        ],
    )?;
    let expected = [
        Some((400, "duplicate_model")),
        None,
        Some((400, "model_not_string")),
        Some((415, "unsupported_encoding")),
        None,
    ];
    for ((reply, tag), expected) in replies.iter().zip(expected) {
        match expected {
            Some((status, code)) => world.expect_refused(reply, tag, status, code)?,
            None => world.expect_routed(reply, tag, MISTRAL)?,
        }
        ensure!(
            reply.header("connection").is_none(),
            "{} answered with connection: {:?}",
            reply.status,
            reply.header("connection")
        );
    }
    Ok(())
}

fn without_the_http1_option_only_a_400_closes_the_connection(world: &World) -> Outcome {
    // Envoy closes an HTTP/1.1 connection after any local 400 unless the listener sets
    // override_stream_error_on_invalid_http_message, as envoy.yaml does; other refusals keep it.
    let envoy = LocalGateway::new(&world.backends)?
        .edit(
            "http_protocol_options: { override_stream_error_on_invalid_http_message: true }",
            "",
        )?
        .start()?;
    let replies = on_one_connection(
        world,
        envoy.listener,
        vec![
            (
                &[("content-encoding", "gzip")],
                vec![Bytes::from_static(b"\x1f\x8b...")],
            ),
            (&[], vec![Bytes::from_static(b"{\"model\": 7}")]),
        ],
    )?;
    let (unsupported, tag) = &replies[0];
    world.expect_refused(unsupported, tag, 415, "unsupported_encoding")?;
    ensure!(
        unsupported.header("connection").is_none(),
        "the 415 closed the connection"
    );
    let (bad, tag) = &replies[1];
    world.expect_refused(bad, tag, 400, "model_not_string")?;
    ensure!(
        bad.header("connection") == Some("close"),
        "the 400 kept the connection without the option: envoy.yaml's comment is out of date"
    );
    Ok(())
}

fn body_over_the_limit_gets_413(world: &World) -> Outcome {
    let body = vec![b' '; (8 << 20) + 1];
    // Declared up front: refused on the headers, and the connection closes rather than read
    // a body the limit refuses.
    let (reply, tag) = world.post("/v1/chat/completions", &body, &[])?;
    world.expect_refused(&reply, &tag, 413, "body_too_large")?;
    ensure!(
        reply.header("connection") == Some("close"),
        "a 413 kept the connection"
    );
    // Streamed without a length: refused once the received bytes pass the limit.
    let mut frames: Vec<Bytes> = vec![Bytes::from_static(b"{\"messages\":\"")];
    frames.extend(body.chunks(256 * 1024).map(Bytes::copy_from_slice));
    let (reply, tag) =
        world.exchange(Protocol::Http1, "POST", "/v1/chat/completions", &[], frames)?;
    world.expect_refused(&reply, &tag, 413, "body_too_large")
}

fn bad_plugin_configuration_refuses_to_load(world: &World) -> Outcome {
    // Fail closed (envoy.yaml), and fail open too: a filter that cannot start is refused at
    // load whatever the failure policy, which only governs a VM failing at run time.
    for policy in ["FAIL_CLOSED", "FAIL_OPEN"] {
        let started = LocalGateway::new(&world.backends)?
            .edit(
                "failure_policy: FAIL_CLOSED",
                &format!("failure_policy: {policy}"),
            )?
            .plugin_config(r#"{"max_model_bytes": 0}"#)?
            .start();
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
