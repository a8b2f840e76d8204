//! The gateway's telemetry in Kubernetes matches the local gateway's: the EnvoyProxy bootstrap
//! carries envoy.yaml's stats_tags and histogram buckets (so the filter's metrics get their
//! labels), its access log the same fields, and the filter's own stat names come apart into
//! those labels.

use crate::{documents, manifests, root, Cluster};
use regex::Regex;
use serde_json::Value;

fn envoy_yaml() -> Value {
    documents(&root().join("envoy.yaml")).remove(0)
}

#[test]
fn the_envoy_proxy_bootstrap_has_envoy_yamls_stats_tags() {
    let cluster = Cluster(manifests());
    let proxy = cluster.get("EnvoyProxy", "llm-gateway");
    let bootstrap = &proxy["spec"]["bootstrap"];
    assert_eq!(bootstrap["type"], "Merge");
    let merged: Value = serde_yaml::from_str(bootstrap["value"].as_str().unwrap()).unwrap();
    let local = envoy_yaml();
    assert_eq!(
        merged["stats_config"], local["stats_config"],
        "k8s/gateway.yaml and envoy.yaml disagree on stats_config"
    );
    let tags = merged["stats_config"]["stats_tags"].as_array().unwrap();
    let names: Vec<&str> = tags
        .iter()
        .map(|t| t["tag_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, model_router::response::labels::TAGS);
    for tag in tags {
        let name = tag["tag_name"].as_str().unwrap();
        assert_eq!(
            tag["regex"].as_str().unwrap(),
            model_router::response::labels::tag_regex(name),
            "the regex of {name} is not the filter's"
        );
        Regex::new(tag["regex"].as_str().unwrap()).unwrap();
    }
}

#[test]
fn the_access_logs_carry_the_same_fields() {
    let cluster = Cluster(manifests());
    let proxy = cluster.get("EnvoyProxy", "llm-gateway");
    let format = proxy["spec"]["telemetry"]["accessLog"]["settings"][0]["format"]["text"]
        .as_str()
        .unwrap();
    let local = envoy_yaml();
    let hcm = &local["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"];
    let local_format = hcm["access_log"][0]["typed_config"]["log_format"]["text_format_source"]
        ["inline_string"]
        .as_str()
        .unwrap();
    assert_eq!(format, local_format);
    for key in [
        "response_model",
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "time_to_first_token_ms",
    ] {
        assert!(
            format.contains(&format!("%FILTER_STATE(wasm.model_router.{key}:PLAIN)%")),
            "no {key} in the access log"
        );
    }
}
