//! The model-router filter as Envoy configuration: the Wasm filter block the benchmarks put in
//! their listeners, and the extension config discovery files envoy.yaml watches.

use crate::envoy::root;
use crate::process::required_file;
use std::path::Path;
use std::process::Command;

/// The filter's `envoy.extensions.filters.http.wasm.v3.Wasm` configuration, as YAML lines at
/// indent 0 (a mapping with one key, `config`).
pub fn wasm_config(wasm: &Path, plugin_config: &str) -> String {
    let plugin_config = serde_json::to_string(plugin_config).expect("a string");
    format!(
        r#"config:
  name: model-router
  root_id: model-router
  # Without it Envoy never hands the filter the body it holds the headers for.
  allow_on_headers_stop_iteration: true
  failure_policy: FAIL_CLOSED
  vm_config:
    vm_id: model-router
    runtime: envoy.wasm.runtime.v8
    code: {{ local: {{ filename: "{}" }} }}
  configuration:
    "@type": type.googleapis.com/google.protobuf.StringValue
    value: {plugin_config}
"#,
        wasm.display()
    )
}

/// An `http_filters` entry running the filter, at indent 0.
pub fn http_filter(wasm: &Path, plugin_config: &str) -> String {
    format!(
        "- name: model-router\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm\n{}",
        indent(&wasm_config(wasm, plugin_config), 4)
    )
}

/// An extension config discovery file holding the filter, as envoy.yaml's `model-router`
/// filter reads from its watched directory.
pub fn discovery_file(wasm: &Path, plugin_config: &str) -> String {
    format!(
        "resources:\n- \"@type\": type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig\n  name: model-router\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm\n{}",
        indent(&wasm_config(wasm, plugin_config), 4)
    )
}

/// The discovery file a watched filter directory starts with: the `model-router` filter's
/// `default_config` from `envoy_yaml`, so that Envoy starts on the configuration it already
/// runs (an empty file would be logged as a rejected update). Derived by tools/filter-seed.yq,
/// as `./build.sh` derives target/filter/model-router.yaml from envoy.yaml.
pub fn discovery_seed(envoy_yaml: &Path) -> Result<String, String> {
    let output = Command::new(required_file("YQ_BIN"))
        .arg("--from-file")
        .arg(root().join("tools/filter-seed.yq"))
        .arg(envoy_yaml)
        .output()
        .map_err(|e| format!("yq: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "yq could not seed the filter directory from {}: {}",
            envoy_yaml.display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8(output.stdout).map_err(|e| e.to_string())
}

/// Indents every line of `text` by `spaces`.
pub fn indent(text: &str, spaces: usize) -> String {
    text.lines()
        .map(|line| format!("{}{line}\n", " ".repeat(spaces)))
        .collect()
}
