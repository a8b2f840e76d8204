//! Audio forms: `multipart/form-data` bodies on the audio APIs are routed by their `model`
//! field (aliases rewritten in the form the backend reads with multer), sent by curl or in
//! 4 MiB with the field last, and broken or ambiguous forms are refused before any backend.

use crate::World;
use bytes::Bytes;
use std::process::Command;
use testkit::client::Protocol;
use testkit::form::{audio, audio_form, content_type, encode, Part, BOUNDARY};
use testkit::scenario::{LLAMA, MISTRAL, PLAIN, TAG_HEADER};
use testkit::{ensure, Outcome};

testkit::cases!(World;
    audio_forms_are_routed_by_their_model_field,
    curl_form_uploads_are_routed,
    four_mib_audio_with_the_model_field_last_routes,
    broken_and_ambiguous_forms_are_refused,
);

const TRANSCRIPTIONS: &str = "/v1/audio/transcriptions";

/// Posts a form over HTTP/1.1 with its content-length, in frames of `frame` bytes.
fn post_form(
    world: &World,
    path: &str,
    body: &[u8],
    frame: usize,
) -> Result<(testkit::client::Reply, String), String> {
    let length = body.len().to_string();
    let content_type = content_type(BOUNDARY);
    let headers = [
        ("content-type", content_type.as_str()),
        ("content-length", length.as_str()),
    ];
    let frames = body.chunks(frame).map(Bytes::copy_from_slice).collect();
    world.exchange(Protocol::Http1, "POST", path, &headers, frames)
}

/// Checks the backend received `expected` exactly, with its length, and answered for `model`
/// with the file it read.
fn expect_form_served(
    world: &World,
    reply: &testkit::client::Reply,
    tag: &str,
    model: &str,
    expected: &[u8],
    file_bytes: usize,
) -> Outcome {
    world.expect_routed(reply, tag, model)?;
    let seen = world.seen_once(tag)?;
    ensure!(
        seen.body == expected,
        "the backend got a {} byte form, not the {} byte one expected",
        seen.body.len(),
        expected.len()
    );
    let length = expected.len().to_string();
    ensure!(
        seen.header_values("content-length") == [length.as_str()],
        "content-length {:?}, want {length}",
        seen.header_values("content-length")
    );
    let answer = reply.json()?;
    ensure!(
        answer["model"] == model && answer["file_bytes"] == file_bytes,
        "the backend read {answer}"
    );
    Ok(())
}

fn audio_forms_are_routed_by_their_model_field(world: &World) -> Outcome {
    let sound = audio(20_000);
    for path in [TRANSCRIPTIONS, "/v1/audio/translations"] {
        for (sent, model) in [
            (LLAMA, LLAMA),
            ("gpt-4o", LLAMA),
            ("mistral", MISTRAL),
            (PLAIN, PLAIN),
        ] {
            for model_last in [false, true] {
                let body = audio_form(sent, sound.clone(), model_last);
                let (reply, tag) = post_form(world, path, &body, 7_000)?;
                let expected = audio_form(model, sound.clone(), model_last);
                expect_form_served(world, &reply, &tag, model, &expected, sound.len())
                    .map_err(|e| format!("{path} {sent} (model last: {model_last}): {e}"))?;
                let task = if path == TRANSCRIPTIONS {
                    "transcribe"
                } else {
                    "translate"
                };
                ensure!(reply.json()?["task"] == task, "{}", reply.text());
            }
        }
    }
    Ok(())
}

fn curl_form_uploads_are_routed(world: &World) -> Outcome {
    let file = world.envoy.dir.join("curl-speech.wav");
    let sound = audio(300_000);
    std::fs::write(&file, &sound).map_err(|e| e.to_string())?;
    for (sent, model) in [("gpt-4o", LLAMA), (MISTRAL, MISTRAL)] {
        let tag = world.tag();
        let output = Command::new("curl")
            .args(["-sS", "--fail-with-body", "-H"])
            .arg(format!("{TAG_HEADER}: {tag}"))
            .args(["-F", &format!("model={sent}"), "-F"])
            .arg(format!("file=@{}", file.display()))
            .args(["-F", "response_format=json"])
            .arg(format!("http://{}{TRANSCRIPTIONS}", world.envoy.listener))
            .output()
            .map_err(|e| format!("curl: {e}"))?;
        ensure!(
            output.status.success(),
            "curl -F {sent}: {} {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let answer: serde_json::Value =
            serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())?;
        ensure!(
            answer["model"] == model
                && answer["file_bytes"] == sound.len()
                && answer["file_name"] == "curl-speech.wav",
            "curl -F model={sent}: {answer}"
        );
        let seen = world.seen_once(&tag)?;
        let pool = world.backends.pool_of(model);
        ensure!(
            pool.replicas.iter().any(|r| r.id == seen.replica),
            "{sent} reached {}",
            seen.replica
        );
        let field = format!("name=\"model\"\r\n\r\n{model}\r\n");
        ensure!(
            seen.body
                .windows(field.len())
                .any(|w| w == field.as_bytes()),
            "the backend's form has no model field {model:?}"
        );
        ensure!(
            seen.header_values("content-length") == [seen.body.len().to_string().as_str()],
            "content-length {:?} for {} bytes",
            seen.header_values("content-length"),
            seen.body.len()
        );
    }
    Ok(())
}

fn four_mib_audio_with_the_model_field_last_routes(world: &World) -> Outcome {
    // Warm both workers' VMs with small forms, then compare the filter's memory.
    for _ in 0..4 {
        let (reply, tag) = post_form(
            world,
            TRANSCRIPTIONS,
            &audio_form("mistral", b"x".to_vec(), true),
            64,
        )?;
        world.expect_routed(&reply, &tag, MISTRAL)?;
    }
    let sound = audio(4 << 20);
    let memory_before = world
        .envoy
        .stat("wasmcustom.model_router.wasm_memory_bytes");
    for (sent, model) in [(MISTRAL, MISTRAL), ("mistral", MISTRAL)] {
        let body = audio_form(sent, sound.clone(), true);
        let (reply, tag) = post_form(world, TRANSCRIPTIONS, &body, 64 * 1024)?;
        expect_form_served(
            world,
            &reply,
            &tag,
            model,
            &audio_form(model, sound.clone(), true),
            sound.len(),
        )
        .map_err(|e| format!("{sent}: {e}"))?;
    }
    let memory_after = world
        .envoy
        .stat("wasmcustom.model_router.wasm_memory_bytes");
    ensure!(
        memory_before > 0 && memory_after <= memory_before + 128 * 1024,
        "filter memory went from {memory_before} to {memory_after} bytes with 4 MiB forms"
    );
    Ok(())
}

fn broken_and_ambiguous_forms_are_refused(world: &World) -> Outcome {
    let form_of = |parts: &[Part]| encode(BOUNDARY, parts);
    let model = |value: &str| Part::field("model", value);
    let file = Part::file("file", "a.wav", "audio/wav", audio(1000));
    let mut truncated = form_of(&[model(MISTRAL), file.clone()]);
    truncated.truncate(truncated.len() - 10);
    let raw = |text: &str| text.replace("{b}", BOUNDARY).into_bytes();
    let cases: Vec<(&str, String, Vec<u8>, u16, &str)> = vec![
        ("no model field", content_type(BOUNDARY), form_of(std::slice::from_ref(&file)), 400, "missing_model"),
        ("two model fields", content_type(BOUNDARY), form_of(&[model(MISTRAL), file.clone(), model(LLAMA)]), 400, "duplicate_model"),
        ("empty model", content_type(BOUNDARY), form_of(&[model(""), file.clone()]), 400, "empty_model"),
        ("model with a CR", content_type(BOUNDARY), form_of(&[model("mistral\rx")]), 400, "invalid_model"),
        ("model not UTF-8", content_type(BOUNDARY), raw("--{b}\r\nContent-Disposition: form-data; name=model\r\n\r\nm\u{0}\r\n--{b}--").into_iter().map(|b| if b == 0 { 0xff } else { b }).collect(), 400, "invalid_model"),
        ("model too long", content_type(BOUNDARY), form_of(&[model(&"m".repeat(257))]), 400, "model_too_long"),
        ("truncated form", content_type(BOUNDARY), truncated, 400, "malformed_multipart"),
        ("LF line ends", content_type(BOUNDARY), raw("--{b}\nContent-Disposition: form-data; name=model\n\nm\n--{b}--\n"), 400, "malformed_multipart"),
        ("name* parameter", content_type(BOUNDARY), raw("--{b}\r\nContent-Disposition: form-data; name*=UTF-8''model\r\n\r\nm\r\n--{b}--"), 400, "malformed_multipart"),
        ("base64 model", content_type(BOUNDARY), raw("--{b}\r\nContent-Disposition: form-data; name=model\r\nContent-Transfer-Encoding: base64\r\n\r\nbWlzdHJhbA==\r\n--{b}--"), 400, "malformed_multipart"),
        ("no boundary", "multipart/form-data".into(), form_of(&[model(MISTRAL)]), 400, "malformed_multipart"),
        ("other boundary", content_type("other"), form_of(&[model(MISTRAL)]), 400, "malformed_multipart"),
    ];
    for (name, content_type, body, status, code) in cases {
        let counter = format!("requests_rejected_{code}");
        let before = world.envoy.counter(&counter);
        let length = body.len().to_string();
        let headers = [
            ("content-type", content_type.as_str()),
            ("content-length", length.as_str()),
        ];
        let frames = body.chunks(100).map(Bytes::copy_from_slice).collect();
        let (reply, tag) =
            world.exchange(Protocol::Http1, "POST", TRANSCRIPTIONS, &headers, frames)?;
        world
            .expect_refused(&reply, &tag, status, code)
            .map_err(|e| format!("{name}: {e}"))?;
        world
            .envoy
            .wait_stat(&format!("wasmcustom.model_router.{counter}"), before + 1)
            .map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}
