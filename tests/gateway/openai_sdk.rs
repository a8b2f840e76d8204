//! The OpenAI Python SDK (pinned in build.sh, run from `SDK_PYTHON`) through the gateway:
//! `models.list()` and `models.retrieve()` read the filter's catalogue, and
//! `audio.transcriptions.create()` and `audio.translations.create()` send forms routed by
//! their model field. tests/gateway/openai_sdk.py makes the calls; this file checks them.

use crate::World;
use serde_json::{json, Value};
use std::process::Command;
use testkit::process::required_file;
use testkit::scenario::{LLAMA, MISTRAL, MODELS};
use testkit::{ensure, Outcome};

testkit::cases!(World;
    the_openai_sdk_lists_and_retrieves_the_catalogue,
    the_openai_sdk_sends_audio_to_the_model_it_names,
);

/// Runs the SDK script with `args`; what it printed.
fn sdk(world: &World, tag: &str, args: &[&str]) -> Result<Value, String> {
    let script = testkit::envoy::root().join("tests/gateway/openai_sdk.py");
    let output = Command::new(required_file("SDK_PYTHON"))
        .arg(script)
        .arg(format!("http://{}", world.envoy.listener))
        .arg(tag)
        .args(args)
        .output()
        .map_err(|e| format!("SDK_PYTHON: {e}"))?;
    ensure!(
        output.status.success(),
        "the SDK failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).map_err(|e| format!("SDK output: {e}"))
}

fn the_openai_sdk_lists_and_retrieves_the_catalogue(world: &World) -> Outcome {
    let tag = world.tag();
    let out = sdk(world, &tag, &["models"])?;
    let ids: Vec<&str> = out["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str())
        .collect();
    ensure!(ids == MODELS, "models.list() gave {ids:?}");
    for model in out["list"].as_array().into_iter().flatten() {
        ensure!(
            model["object"] == "model" && model["created"] == 0 && model["owned_by"].is_string(),
            "models.list() entry {model}"
        );
    }
    ensure!(
        out["retrieved"] == out["list"],
        "models.retrieve() of each id: {}",
        out["retrieved"]
    );
    ensure!(
        out["alias"]["id"] == LLAMA,
        "retrieve(\"gpt-4o\"): {}",
        out["alias"]
    );
    ensure!(
        out["unknown"]["status"] == 404 && out["unknown"]["body"]["code"] == "model_not_found",
        "retrieve(\"gpt-5\"): {}",
        out["unknown"]
    );
    ensure!(
        world.backends.saw(&tag).is_empty(),
        "a models call reached a backend"
    );
    Ok(())
}

fn the_openai_sdk_sends_audio_to_the_model_it_names(world: &World) -> Outcome {
    let file = world.envoy.dir.join("sdk-speech.wav");
    let sound: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&file, &sound).map_err(|e| e.to_string())?;
    for (sent, model) in [("gpt-4o", LLAMA), (MISTRAL, MISTRAL)] {
        let tag = world.tag();
        let out = sdk(world, &tag, &["audio", &file.display().to_string(), sent])?;
        for (call, task) in [
            ("transcription", "transcribe"),
            ("translation", "translate"),
        ] {
            let answer = &out[call];
            let want = json!({
                "text": format!("{task}d {} bytes of sdk-speech.wav", sound.len()),
                "task": task, "model": model, "file_name": "sdk-speech.wav",
                "file_bytes": sound.len(),
            });
            for (key, value) in want.as_object().unwrap() {
                ensure!(&answer[key] == value, "{call} with {sent}: {answer}");
            }
        }
        ensure!(
            out["text"] == format!("transcribed {} bytes of sdk-speech.wav", sound.len()),
            "response_format=text: {}",
            out["text"]
        );
        let seen = world.backends.saw(&tag);
        let pool = world.backends.pool_of(model);
        ensure!(
            seen.len() == 3
                && seen
                    .iter()
                    .all(|s| pool.replicas.iter().any(|r| r.id == s.replica)),
            "{sent}: {} requests, served by {:?}",
            seen.len(),
            seen.iter().map(|s| &s.replica).collect::<Vec<_>>()
        );
        for request in &seen {
            ensure!(
                request.header_values("content-length")
                    == [request.body.len().to_string().as_str()],
                "{sent}: content-length {:?} for {} bytes",
                request.header_values("content-length"),
                request.body.len()
            );
        }
    }
    Ok(())
}
