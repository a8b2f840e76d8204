//! Envoy Gateway's own translator (`egctl x translate`, offline, from files) over k8s/: a fast
//! check that it accepts every resource it can read. What it cannot take is named here, each
//! with its reason, and a new refusal fails the case.

use serde_json::Value;
use std::process::Command;
use testkit::k8s::manifests;
use testkit::process::required_file;
use testkit::{ensure, Outcome};

testkit::standalone_cases!(egctl_accepts_every_resource_of_k8s_it_can_read);

/// Kinds egctl cannot parse at all ("no kind is registered"): the Inference Extension's.
const UNREADABLE: [&str; 2] = ["InferencePool", "InferenceObjective"];

/// Conditions egctl reports false for reasons of its own, not of k8s/.
fn known_refusal(kind: &str, condition: &Value) -> Option<&'static str> {
    let message = condition["message"].as_str().unwrap_or_default();
    match (kind, condition["type"].as_str()) {
        ("HTTPRoute", Some("ResolvedRefs"))
            if condition["reason"] == "InvalidKind" && message.contains("Group is invalid") =>
        {
            Some("InferencePool backends need the AI Gateway extension server, which egctl does not run")
        }
        ("EnvoyExtensionPolicy", Some("Accepted")) if message.contains("wasm cache is not initialized") => {
            Some("egctl has no wasm cache to fetch the image into (the real Envoy Gateway test runs it)")
        }
        _ => None,
    }
}

fn egctl_accepts_every_resource_of_k8s_it_can_read() -> Outcome {
    let docs: Vec<Value> = manifests()
        .into_iter()
        .filter(|d| !UNREADABLE.iter().any(|kind| d["kind"] == *kind))
        .collect();
    let dir = std::env::temp_dir().join(format!("model-router-egctl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let input = dir.join("k8s.yaml");
    testkit::envoy_gateway::write_yaml(&input, &docs)?;
    let output = Command::new(required_file("EGCTL_BIN"))
        .args([
            "x",
            "translate",
            "--from",
            "gateway-api",
            "--to",
            "gateway-api",
        ])
        .args(["-t", "all", "-o", "json", "--add-missing-resources", "-f"])
        .arg(&input)
        .output()
        .map_err(|e| format!("egctl: {e}"))?;
    let _ = std::fs::remove_dir_all(&dir);
    ensure!(
        output.status.success(),
        "egctl refused k8s/: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())?;
    // Every object egctl reports on, with the conditions it gives it.
    let mut reported: Vec<(String, String, Vec<Value>)> = Vec::new();
    let mut add = |kind: &str, object: &Value, conditions: Vec<Value>| {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        reported.push((kind.to_owned(), name, conditions));
    };
    let conditions = |status: &Value| -> Vec<Value> {
        // Policies report per ancestor, gateways per listener too, classes directly.
        let mut all: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
        for nested in ["ancestors", "parents", "listeners"] {
            for entry in status[nested].as_array().into_iter().flatten() {
                all.extend(entry["conditions"].as_array().cloned().unwrap_or_default());
            }
        }
        all
    };
    add(
        "GatewayClass",
        &result["gatewayClass"],
        conditions(&result["gatewayClass"]["status"]),
    );
    add(
        "EnvoyProxy",
        &result["envoyProxyForGatewayClass"],
        conditions(&result["envoyProxyForGatewayClass"]["status"]),
    );
    for (key, kind) in [
        ("gateways", "Gateway"),
        ("httpRoutes", "HTTPRoute"),
        ("clientTrafficPolicies", "ClientTrafficPolicy"),
        ("envoyPatchPolicies", "EnvoyPatchPolicy"),
        ("envoyExtensionPolicies", "EnvoyExtensionPolicy"),
    ] {
        for object in result[key].as_array().into_iter().flatten() {
            add(kind, object, conditions(&object["status"]));
        }
    }
    for kind in [
        "GatewayClass",
        "EnvoyProxy",
        "Gateway",
        "HTTPRoute",
        "ClientTrafficPolicy",
        "EnvoyPatchPolicy",
        "EnvoyExtensionPolicy",
    ] {
        let expected = docs.iter().filter(|d| d["kind"] == kind).count();
        let got = reported.iter().filter(|(k, _, _)| k == kind).count();
        ensure!(
            got == expected,
            "egctl reports on {got} {kind}s, k8s/ has {expected}"
        );
    }
    let mut refusals = Vec::new();
    for (kind, name, conditions) in &reported {
        ensure!(
            !conditions.is_empty(),
            "egctl gave {kind} {name} no condition"
        );
        for condition in conditions.iter().filter(|c| c["status"] != "True") {
            match known_refusal(kind, condition) {
                Some(reason) => {
                    refusals.push(format!("{kind} {name}: {} ({reason})", condition["type"]))
                }
                None => return Err(format!("egctl refuses {kind} {name}: {condition}")),
            }
        }
    }
    println!("    egctl accepts k8s/ but for {UNREADABLE:?}, which it cannot read, and:");
    for refusal in &refusals {
        println!("      {refusal}");
    }
    Ok(())
}
