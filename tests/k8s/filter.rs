//! The filter's policy loads (its configuration parsed by the filter's own parser, Envoy's
//! buffer large enough for it), the patch selects its filter by the policy's wasm name, and
//! the Envoy Gateway-shaped configuration the gateway tests run agrees with both.

use crate::{documents, manifests, root, Cluster, NAMESPACE};
use model_router::config::Settings;
use regex::Regex;
use serde_json::Value;

/// The wasm filter name Envoy Gateway generates for the `index`-th wasm of a policy.
fn wasm_filter_name(policy: &Value, index: usize) -> String {
    format!(
        "envoy.filters.http.wasm/envoyextensionpolicy/{}/{}/wasm/{index}",
        policy["metadata"]["namespace"].as_str().unwrap(),
        policy["metadata"]["name"].as_str().unwrap()
    )
}

#[test]
fn the_filter_policy_loads_and_the_patch_selects_its_filter() {
    let cluster = Cluster(manifests());
    let policy = cluster.get("EnvoyExtensionPolicy", "model-router");
    let wasm = &policy["spec"]["wasm"][0];
    assert_eq!(wasm["code"]["type"], "Image");
    let digest = wasm["code"]["image"]["sha256"].as_str().unwrap();
    assert!(
        Regex::new("^[a-f0-9]{64}$").unwrap().is_match(digest),
        "sha256 {digest}"
    );
    // The configuration is the filter's own: parsed by the filter's parser.
    let config = serde_json::to_vec(&wasm["config"]).unwrap();
    let settings = Settings::parse(&config).unwrap_or_else(|e| panic!("{e}"));

    // Envoy's buffer must hold the largest body the filter accepts.
    let limit = cluster.get("ClientTrafficPolicy", "llm-gateway-buffer")["spec"]["connection"]
        ["bufferLimit"]
        .as_str()
        .unwrap();
    let mebibytes: u64 = limit
        .strip_suffix("Mi")
        .expect("bufferLimit in Mi")
        .parse()
        .unwrap();
    assert!(
        mebibytes << 20 > settings.max_body_bytes,
        "bufferLimit {limit} <= max_body_bytes"
    );

    let patch =
        &cluster.get("EnvoyPatchPolicy", "model-router-body-access")["spec"]["jsonPatches"][0];
    let gateway = cluster.get("Gateway", "llm-gateway");
    let listener = format!(
        "{NAMESPACE}/llm-gateway/{}",
        gateway["spec"]["listeners"][0]["name"].as_str().unwrap()
    );
    assert_eq!(patch["name"], listener.as_str());
    assert_eq!(
        patch["type"],
        "type.googleapis.com/envoy.config.listener.v3.Listener"
    );
    let operation = &patch["operation"];
    assert_eq!(operation["op"], "add");
    assert_eq!(operation["path"], "/allow_on_headers_stop_iteration");
    assert_eq!(operation["value"], true);
    let json_path = operation["jsonPath"].as_str().unwrap();
    assert!(
        !Regex::new(r"\[\d+\]").unwrap().is_match(json_path),
        "selected by index: {json_path}"
    );
    assert!(
        json_path.contains(&format!(
            "[?(@.typed_config.config.name=='{}')]",
            wasm["name"].as_str().unwrap()
        )),
        "the patch does not select the policy's filter by its wasm name: {json_path}"
    );
}

#[test]
fn the_envoy_gateway_shaped_configuration_matches_the_manifests() {
    let cluster = Cluster(manifests());
    let shaped = &documents(&root().join("tests/gateway/envoy-gateway-shaped.yaml"))[0];
    let listener = &shaped["static_resources"]["listeners"][0];
    let patch =
        &cluster.get("EnvoyPatchPolicy", "model-router-body-access")["spec"]["jsonPatches"][0];
    assert_eq!(listener["name"], patch["name"]);
    let hcm = &listener["default_filter_chain"]["filters"][0]["typed_config"];
    let filters = hcm["http_filters"].as_array().unwrap();
    let policy = cluster.get("EnvoyExtensionPolicy", "model-router");
    let name = wasm_filter_name(policy, 0);
    let wasm = filters
        .iter()
        .find(|f| f["name"] == name.as_str())
        .expect("the policy's wasm filter");
    assert_eq!(
        wasm["disabled"], true,
        "Envoy Gateway adds wasm filters disabled"
    );
    let config = &wasm["typed_config"]["config"];
    assert_eq!(
        config["allow_on_headers_stop_iteration"], true,
        "as the patch sets it"
    );
    let plugin: Value =
        serde_json::from_str(config["configuration"]["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        plugin, policy["spec"]["wasm"][0]["config"],
        "plugin configuration differs from the policy's"
    );
    assert_eq!(config["name"], policy["spec"]["wasm"][0]["name"]);

    // The wasm filter runs first, the pickers right before the router.
    let names: Vec<&str> = filters
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&name.as_str()));
    assert_eq!(names.last(), Some(&"envoy.filters.http.router"));
    let pools: Vec<&str> = cluster
        .all("InferencePool")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    for pool in &pools {
        let picker = format!("envoy.filters.http.ext_proc/endpointpicker/{NAMESPACE}/{pool}");
        let at = names
            .iter()
            .position(|n| *n == picker)
            .unwrap_or_else(|| panic!("no picker for {pool}"));
        assert!(
            at > 0 && at >= names.len() - 1 - pools.len(),
            "{picker} is not just before the router"
        );
    }

    // Every route enables the wasm filter, the catch-all included; the bytes Envoy buffers
    // match the ClientTrafficPolicy.
    let routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
        .as_array()
        .unwrap();
    for route in routes {
        assert_eq!(
            route["typed_per_filter_config"][name.as_str()]["config"],
            Value::Object(Default::default())
        );
    }
    assert_eq!(
        routes.len(),
        cluster.get("HTTPRoute", "llm-route")["spec"]["rules"]
            .as_array()
            .unwrap()
            .len()
    );
    assert_eq!(listener["per_connection_buffer_limit_bytes"], 9 << 20);
}
