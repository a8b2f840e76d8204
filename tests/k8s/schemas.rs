//! Every custom resource in k8s/ is valid against its published schema, as kubeconform judges
//! it against the CRDs vendored in tests/crds/, converted here to the JSON Schemas it reads:
//! unknown fields are refused by that conversion, duplicate keys by `-strict`. CEL rules
//! (`x-kubernetes-validations`) are not evaluated; the built-in kinds below are skipped, as no
//! schema for them can be had offline.

use crate::{documents, manifest_files, manifests, root};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use testkit::process::required_file;

/// Kinds of the core Kubernetes API the manifests may use, as kubeconform names them
/// (apiVersion/kind). Only these are skipped: any other kind without a schema is an error.
const BUILT_IN: &[&str] = &[
    "v1/Namespace",
    "v1/Service",
    "v1/ServiceAccount",
    "v1/ConfigMap",
    "apps/v1/Deployment",
    "rbac.authorization.k8s.io/v1/Role",
    "rbac.authorization.k8s.io/v1/RoleBinding",
    "rbac.authorization.k8s.io/v1/ClusterRole",
    "rbac.authorization.k8s.io/v1/ClusterRoleBinding",
];

/// Where kubeconform finds a resource's schema in the schema directory: the layout of Datree's
/// CRDs-catalog that its README documents, e.g. `gateway.networking.k8s.io/httproute_v1.json`.
const LAYOUT: &str = "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json";

/// How many custom resources k8s/ declares.
const CUSTOM_RESOURCES: u64 = 12;

/// Writes the openAPIV3Schema of every version of every CRD in tests/crds/ into `dir`, in
/// [`LAYOUT`], as kubeconform's strict JSON Schema.
fn write_json_schemas(dir: &Path) {
    for entry in std::fs::read_dir(root().join("tests/crds")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        for crd in documents(&path) {
            if crd["kind"] != "CustomResourceDefinition" {
                continue;
            }
            let group = crd["spec"]["group"].as_str().expect("spec.group");
            let kind = crd["spec"]["names"]["kind"]
                .as_str()
                .expect("spec.names.kind");
            for version in crd["spec"]["versions"].as_array().expect("spec.versions") {
                let name = version["name"].as_str().expect("version name");
                let mut schema = version["schema"]["openAPIV3Schema"].clone();
                assert!(schema.is_object(), "{kind} {name}: no openAPIV3Schema");
                strict(&mut schema);
                let file = dir
                    .join(group)
                    .join(format!("{}_{name}.json", kind.to_lowercase()));
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(&file, serde_json::to_vec(&schema).unwrap()).unwrap();
            }
        }
    }
}

/// kubeconform's openapi2jsonschema conversion in strict mode (with
/// DENY_ROOT_ADDITIONAL_PROPERTIES), keeping the meaning the API server gives the structural
/// schema and Kubernetes' extensions, which JSON Schema draft 4 does not know:
/// - an object schema with `properties` refuses other fields, unless it says what they may be
///   (`additionalProperties`) or keeps them (`x-kubernetes-preserve-unknown-fields: true`);
/// - only the structural schema (`properties`, `items`, `additionalProperties`) is closed so:
///   the branches of `allOf`, `anyOf`, `oneOf` and `not` are constraints on fields the structure
///   declares, and closing a branch that names some of them would refuse the others (the
///   Gateway's `addresses` has such a `oneOf`). kubeconform's script closes them too; the API
///   server does not;
/// - `x-kubernetes-int-or-string: true` accepts an integer or a string, its patterns applying
///   to strings only.
fn strict(schema: &mut Value) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    if object.contains_key("properties")
        && !object.contains_key("additionalProperties")
        && object.get("x-kubernetes-preserve-unknown-fields") != Some(&Value::Bool(true))
    {
        object.insert("additionalProperties".into(), false.into());
    }
    if object.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        object.insert("type".into(), json!(["integer", "string"]));
    }
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        properties.values_mut().for_each(strict);
    }
    for keyword in ["items", "additionalProperties"] {
        if let Some(schema) = object.get_mut(keyword) {
            strict(schema);
        }
    }
}

/// A directory of a test's own under Cargo's temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("k8s-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What kubeconform said of some files: whether it passed them, and its report on every
/// resource (apiVersion, kind, name, file, status, messages) with the totals.
struct Verdict {
    passed: bool,
    resources: Vec<Value>,
    summary: Value,
}

/// Runs kubeconform, strict, on `files` with the schemas in `schemas`, the built-in kinds
/// skipped.
fn kubeconform(schemas: &Path, files: &[PathBuf]) -> Verdict {
    let output = Command::new(required_file("KUBECONFORM_BIN"))
        .args(["-strict", "-summary", "-verbose", "-output", "json"])
        .args(["-skip", &BUILT_IN.join(",")])
        .arg("-schema-location")
        .arg(schemas.join(LAYOUT))
        .args(files)
        .output()
        .expect("kubeconform runs");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "kubeconform's report: {e}\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let resources = report["resources"]
        .as_array()
        .expect("resources")
        .iter()
        // Documents with nothing in them (a leading `---`) are reported with no status.
        .filter(|r| r["status"] != "")
        .cloned()
        .collect();
    Verdict {
        passed: output.status.success(),
        resources,
        summary: report["summary"].clone(),
    }
}

#[test]
fn every_resource_is_valid_against_its_published_schema() {
    let scratch = Scratch::new("valid");
    write_json_schemas(&scratch.0);
    let verdict = kubeconform(&scratch.0, &manifest_files());

    let mut expected = Vec::new();
    let mut errors = Vec::new();
    for doc in manifests() {
        let api_version = doc["apiVersion"].as_str().unwrap_or_default();
        let kind = doc["kind"].as_str().unwrap_or_default();
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        let status = if BUILT_IN.contains(&format!("{api_version}/{kind}").as_str()) {
            "statusSkipped"
        } else {
            "statusValid"
        };
        expected.push(format!("{api_version} {kind}/{name}: {status}"));
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        {
            errors.push(format!("{kind}/{name}: invalid name"));
        }
    }
    let mut judged: Vec<String> = verdict
        .resources
        .iter()
        .map(|r| {
            format!(
                "{} {}/{}: {}",
                r["version"].as_str().unwrap(),
                r["kind"].as_str().unwrap(),
                r["name"].as_str().unwrap(),
                r["status"].as_str().unwrap()
            )
        })
        .collect();
    expected.sort();
    judged.sort();
    for r in &verdict.resources {
        if r["status"] != "statusValid" && r["status"] != "statusSkipped" {
            errors.push(format!("{} {}: {}", r["kind"], r["name"], r["msg"]));
        }
    }
    assert!(errors.is_empty(), "schema errors:\n{}", errors.join("\n"));
    assert_eq!(judged, expected, "kubeconform's verdict on each resource");
    assert!(verdict.passed, "kubeconform failed: {:#}", verdict.summary);
    assert_eq!(
        verdict.summary,
        json!({
            "valid": CUSTOM_RESOURCES,
            "invalid": 0,
            "errors": 0,
            "skipped": expected.len() as u64 - CUSTOM_RESOURCES,
        }),
        "custom resources validated, built-in ones skipped"
    );
}

#[test]
fn the_validator_refuses_what_the_schemas_refuse() {
    let scratch = Scratch::new("refuses");
    let schemas = scratch.0.join("schemas");
    write_json_schemas(&schemas);
    let cluster = manifests();
    let resource = |kind: &str| cluster.iter().find(|d| d["kind"] == kind).unwrap().clone();
    type Mutation = fn(&mut Value);
    // (what, the kind changed, how, kubeconform's status, where, what its message says). The
    // valid cases show the refusals come from the changes, and that a `oneOf` branch naming
    // some of an object's fields does not refuse the others.
    let cases: [(&str, &str, Mutation, &str, &str, &str); 8] = [
        ("unchanged", "HTTPRoute", |_| {}, "statusValid", "", ""),
        (
            "unknown field",
            "HTTPRoute",
            |r| r["spec"]["colour"] = "red".into(),
            "statusInvalid",
            "/spec",
            "additional properties 'colour' not allowed",
        ),
        (
            "bad enum",
            "HTTPRoute",
            |r| r["spec"]["rules"][0]["matches"][0]["headers"][0]["type"] = "Fuzzy".into(),
            "statusInvalid",
            "/spec/rules/0/matches/0/headers/0/type",
            "value must be one of",
        ),
        (
            "bad type",
            "HTTPRoute",
            |r| r["spec"]["rules"][0]["timeouts"]["request"] = 300.into(),
            "statusInvalid",
            "/spec/rules/0/timeouts/request",
            "want string",
        ),
        (
            "bad pattern",
            "HTTPRoute",
            |r| r["spec"]["rules"][0]["timeouts"]["request"] = "5 minutes".into(),
            "statusInvalid",
            "/spec/rules/0/timeouts/request",
            "'5 minutes' does not match pattern",
        ),
        (
            "unknown kind",
            "HTTPRoute",
            |r| r["kind"] = "HTTPRoutes".into(),
            "statusError",
            "",
            "could not find schema for HTTPRoutes",
        ),
        (
            "hostname address",
            "Gateway",
            |g| g["spec"]["addresses"] = json!([{"type": "Hostname", "value": "llm.example"}]),
            "statusValid",
            "",
            "",
        ),
        (
            "bad IPv4 address",
            "Gateway",
            |g| g["spec"]["addresses"] = json!([{"type": "IPAddress", "value": "300.0.0.1"}]),
            "statusInvalid",
            "/spec/addresses/0",
            "'oneOf' failed, none matched",
        ),
    ];
    let files: Vec<PathBuf> = cases
        .iter()
        .map(|(what, kind, change, ..)| {
            let mut changed = resource(kind);
            change(&mut changed);
            let file = scratch.0.join(format!("{}.yaml", what.replace(' ', "-")));
            std::fs::write(&file, serde_yaml::to_string(&changed).unwrap()).unwrap();
            file
        })
        .collect();
    let verdict = kubeconform(&schemas, &files);
    assert!(!verdict.passed, "kubeconform passed broken manifests");
    assert_eq!(
        verdict.resources.len(),
        cases.len(),
        "{:#?}",
        verdict.resources
    );
    for ((what, _, _, status, path, message), file) in cases.iter().zip(&files) {
        let result = verdict
            .resources
            .iter()
            .find(|r| r["filename"] == file.to_str().unwrap())
            .unwrap_or_else(|| panic!("{what}: not in kubeconform's report"));
        assert_eq!(result["status"], *status, "{what}: {result:#}");
        let said = match result["validationErrors"].as_array() {
            Some(errors) => errors
                .iter()
                .any(|e| e["path"] == *path && e["msg"].as_str().unwrap().contains(message)),
            None => path.is_empty() && result["msg"].as_str().unwrap().contains(message),
        };
        assert!(said, "{what}: expected {path}: {message}, got {result:#}");
    }
}

#[test]
fn the_envoy_gateway_token_budget_is_valid_against_its_published_schema() {
    let scratch = Scratch::new("token-budget");
    write_json_schemas(&scratch.0);
    let file = root().join("ratelimit/envoy-gateway.yaml");
    let verdict = kubeconform(&scratch.0, std::slice::from_ref(&file));
    let statuses: Vec<String> = verdict
        .resources
        .iter()
        .map(|r| {
            format!(
                "{}/{}: {}",
                r["kind"].as_str().unwrap(),
                r["name"].as_str().unwrap(),
                r["status"].as_str().unwrap()
            )
        })
        .collect();
    assert!(verdict.passed, "{statuses:?}\n{:?}", verdict.resources);
    let mut statuses = statuses;
    statuses.sort();
    assert_eq!(
        statuses,
        [
            "BackendTrafficPolicy/token-budgets: statusValid",
            "EnvoyPatchPolicy/token-budgets-from-filter-state: statusValid"
        ]
    );
    // Its budgets are the local gateway's (ratelimit/config.yaml), model by model.
    let local = &documents(&root().join("ratelimit/config.yaml"))[0];
    let policy = &documents(&file)[0];
    let rules = policy["spec"]["rateLimit"]["global"]["rules"]
        .as_array()
        .unwrap();
    let descriptors = local["descriptors"].as_array().unwrap();
    assert_eq!(rules.len(), descriptors.len());
    for (rule, descriptor) in rules.iter().zip(descriptors) {
        assert_eq!(
            rule["clientSelectors"][0]["headers"][0]["value"],
            descriptor["value"]
        );
        assert_eq!(
            rule["limit"]["requests"],
            descriptor["rate_limit"]["requests_per_unit"]
        );
        assert_eq!(rule["cost"]["request"]["number"], 0);
    }
}
