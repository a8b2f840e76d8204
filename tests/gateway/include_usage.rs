//! `response.add_include_usage`: streaming chat and completions requests without
//! `stream_options` reach the backend asking for usage (prefix edited in Envoy's buffer, the
//! length fixed), so their tokens are counted and their clients get the usage chunk; every
//! other request reaches it byte for byte as sent.

use crate::gen_ai::{expect_tokens, grew, labels, reported, DURATION};
use crate::usage::api_body;
use crate::World;
use bytes::Bytes;
use serde_json::{json, Value};
use testkit::client::Protocol;
use testkit::envoy::{Envoy, LocalGateway};
use testkit::scenario::MISTRAL;
use testkit::{ensure, Outcome};

testkit::cases!(World;
    include_usage_is_added_to_streams_that_lack_it,
    requests_that_say_or_do_not_stream_reach_the_backend_unchanged,
);

fn gateway(world: &World) -> Result<Envoy, String> {
    let config = json!({
        "models": [{"name": MISTRAL}],
        "response": {"usage": true, "add_include_usage": true, "filter_state": crate::usage::ACCESS_LOG_STATE},
    });
    let _guard = world.runtime.enter();
    LocalGateway::new(&world.backends)?
        .plugin_config(&config.to_string())?
        .start()
}

/// Sends `body` as `frames` pieces (no content-length: chunked, or h2c DATA frames) or whole
/// with its length; returns the reply and what the backend received.
fn send(
    world: &World,
    envoy: &Envoy,
    path: &str,
    body: &str,
    protocol: Protocol,
    frames: Option<usize>,
) -> Result<(testkit::client::Reply, llm_sim::SeenRequest), String> {
    let length = body.len().to_string();
    let (headers, pieces): (Vec<(&str, &str)>, Vec<Bytes>) = match frames {
        None => (
            vec![("content-length", length.as_str())],
            vec![Bytes::copy_from_slice(body.as_bytes())],
        ),
        Some(n) => (
            vec![],
            body.as_bytes()
                .chunks(body.len().div_ceil(n))
                .map(Bytes::copy_from_slice)
                .collect(),
        ),
    };
    let (reply, tag) =
        world.exchange_at(envoy.listener, protocol, "POST", path, &headers, pieces)?;
    let seen = world.backends.saw(&tag);
    ensure!(seen.len() == 1, "{} backend requests for one", seen.len());
    Ok((reply, seen.into_iter().next().expect("one request")))
}

fn include_usage_is_added_to_streams_that_lack_it(world: &World) -> Outcome {
    let envoy = gateway(world)?;
    for (path, protocol, frames) in [
        ("/v1/chat/completions", Protocol::Http1, None),
        ("/v1/chat/completions", Protocol::Http1, Some(5)),
        ("/v1/chat/completions", Protocol::H2c, Some(3)),
        ("/v1/completions", Protocol::Http1, None),
    ] {
        let mut sent = api_body(path, MISTRAL, true);
        sent.as_object_mut()
            .expect("an object")
            .remove("stream_options");
        // Whitespace before the object is dropped with the `{` it precedes.
        let text = format!(" \n{sent}");
        let before = envoy.scrape()?;
        let (reply, seen) = send(world, &envoy, path, &text, protocol, frames)?;
        let context = format!("{path} over {protocol:?} in {frames:?} frames");
        let received: Value = serde_json::from_slice(&seen.body)
            .map_err(|e| format!("{context}: the backend got broken JSON ({e})"))?;
        ensure!(
            received["stream_options"] == json!({"include_usage": true}),
            "{context}: the backend got {received}"
        );
        let mut rest = received.clone();
        rest.as_object_mut()
            .expect("an object")
            .remove("stream_options");
        ensure!(
            rest == sent,
            "{context}: the rest of the body changed: {received}"
        );
        let declared = seen.header_values("content-length");
        ensure!(
            frames.is_some() || declared == [seen.body.len().to_string()],
            "{context}: content-length {declared:?} for {} bytes",
            seen.body.len()
        );
        let answer = reported(path, &reply.body)?;
        ensure!(
            answer.output > 0 && reply.text().contains("\"usage\""),
            "{context}: the client got no usage chunk: {}",
            reply.text()
        );
        let operation = crate::usage::operation(path);
        let model_labels = labels(operation, MISTRAL, Some(MISTRAL));
        let after = envoy.scrape_until(|s| grew(&before, s, DURATION, &model_labels) >= 1.0)?;
        expect_tokens(&before, &after, &model_labels, &answer)
            .map_err(|e| format!("{context}: {e}"))?;
        ensure!(
            grew(
                &before,
                &after,
                "model_router_requests_include_usage_added",
                &[]
            ) == 1.0,
            "{context}: the edit was not counted"
        );
    }
    Ok(())
}

fn requests_that_say_or_do_not_stream_reach_the_backend_unchanged(world: &World) -> Outcome {
    let envoy = gateway(world)?;
    let mut says_no = api_body("/v1/chat/completions", MISTRAL, true);
    says_no["stream_options"] = json!({"include_usage": false});
    let mut null_options = api_body("/v1/chat/completions", MISTRAL, true);
    null_options["stream_options"] = Value::Null;
    for (path, body) in [
        ("/v1/chat/completions", says_no.to_string()),
        ("/v1/chat/completions", null_options.to_string()),
        (
            "/v1/chat/completions",
            api_body("/v1/chat/completions", MISTRAL, false).to_string(),
        ),
        (
            "/v1/responses",
            api_body("/v1/responses", MISTRAL, true).to_string(),
        ),
        (
            "/v1/messages",
            api_body("/v1/messages", MISTRAL, true).to_string(),
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"mistral:latest","stream":false,"stream":true,"stream_options":{}}"#
                .to_owned(),
        ),
    ] {
        let (reply, seen) = send(world, &envoy, path, &body, Protocol::Http1, None)?;
        ensure!(
            reply.status == 200,
            "{path} {body}: status {}",
            reply.status
        );
        ensure!(
            seen.body == body.as_bytes(),
            "{path}: the backend got {:?} for {body}",
            String::from_utf8_lossy(&seen.body)
        );
    }
    let after = envoy.scrape()?;
    ensure!(
        after.sum("model_router_requests_include_usage_added", &[]) == 0.0,
        "an edit was counted"
    );
    Ok(())
}
