//! k8s/: every custom resource valid against its published schema (unknown fields refused),
//! every reference resolved, and the Envoy Gateway-shaped configuration the gateway tests run
//! in Envoy consistent with what these manifests ask Envoy Gateway for.

use model_router::config::Settings;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

const NAMESPACE: &str = "llm-gateway";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every document of a multi-document YAML file, as JSON values.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The manifests `kubectl apply -k k8s/` applies, in kustomization order.
fn manifests() -> Vec<Value> {
    let kustomization = &documents(&root().join("k8s/kustomization.yaml"))[0];
    let listed: Vec<&str> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("resource path"))
        .collect();
    let mut on_disk = Vec::new();
    let mut pending = vec![root().join("k8s")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.file_name().unwrap() != "kustomization.yaml" {
                on_disk.push(
                    path.strip_prefix(root().join("k8s"))
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    on_disk.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(
        sorted, on_disk,
        "kustomization.yaml must list every file in k8s/"
    );
    listed
        .iter()
        .flat_map(|file| documents(&root().join("k8s").join(file)))
        .collect()
}

/// The openAPIV3Schema of every version of every vendored CRD, by (apiVersion, kind).
fn schemas() -> HashMap<(String, String), Value> {
    let mut schemas = HashMap::new();
    for entry in std::fs::read_dir(root().join("tests/crds")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        for crd in documents(&path) {
            let group = crd["spec"]["group"].as_str().unwrap_or_default();
            let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
            for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
                let name = version["name"].as_str().unwrap();
                let schema = version["schema"]["openAPIV3Schema"].clone();
                schemas.insert((format!("{group}/{name}"), kind.to_owned()), schema);
            }
        }
    }
    schemas
}

/// Kinds of the core Kubernetes API the manifests may use (no published schema here).
const BUILT_IN: &[(&str, &str)] = &[
    ("v1", "Namespace"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("v1", "ConfigMap"),
    ("apps/v1", "Deployment"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
];

/// Checks `value` against a Kubernetes structural schema. Fields a schema does not declare
/// are errors, as `kubectl apply --validate=strict` reports them. CEL rules
/// (x-kubernetes-validations) are not evaluated.
struct Validator {
    patterns: HashMap<String, Regex>,
}

impl Validator {
    fn check(&mut self, value: &Value, schema: &Value, path: &str, errors: &mut Vec<String>) {
        if schema["x-kubernetes-int-or-string"] == true {
            if !(value.is_i64() || value.is_u64() || value.is_string()) {
                errors.push(format!("{path}: must be an integer or a string"));
            }
            if let Some(text) = value.as_str() {
                for part in schema["allOf"].as_array().into_iter().flatten() {
                    self.string(text, part, path, errors);
                }
            }
            return;
        }
        for part in schema["allOf"].as_array().into_iter().flatten() {
            self.check(value, part, path, errors);
        }
        for (keyword, needed) in [("anyOf", 1..=usize::MAX), ("oneOf", 1..=1)] {
            if let Some(options) = schema[keyword].as_array() {
                let passing = options
                    .iter()
                    .filter(|option| {
                        let mut errs = Vec::new();
                        self.check(value, option, path, &mut errs);
                        errs.is_empty()
                    })
                    .count();
                if !needed.contains(&passing) {
                    errors.push(format!(
                        "{path}: {passing} of the {keyword} alternatives match"
                    ));
                }
            }
        }
        if let Some(allowed) = schema["enum"].as_array() {
            if !allowed.contains(value) {
                errors.push(format!("{path}: {value} is not one of {allowed:?}"));
            }
        }
        let Some(kind) = schema["type"].as_str() else {
            return;
        };
        match (kind, value) {
            ("object", Value::Object(object)) => self.object(object, schema, path, errors),
            ("array", Value::Array(items)) => {
                let (min, max) = (schema["minItems"].as_u64(), schema["maxItems"].as_u64());
                let count = items.len() as u64;
                if min.is_some_and(|m| count < m) || max.is_some_and(|m| count > m) {
                    errors.push(format!("{path}: {count} items, allowed {min:?}..{max:?}"));
                }
                for (index, item) in items.iter().enumerate() {
                    self.check(item, &schema["items"], &format!("{path}[{index}]"), errors);
                }
            }
            ("string", Value::String(text)) => self.string(text, schema, path, errors),
            ("integer", Value::Number(n)) if n.is_i64() || n.is_u64() => {
                self.range(n, schema, path, errors)
            }
            ("number", Value::Number(n)) => self.range(n, schema, path, errors),
            ("boolean", Value::Bool(_)) => {}
            _ => errors.push(format!("{path}: {value} is not of type {kind}")),
        }
    }

    fn object(
        &mut self,
        object: &serde_json::Map<String, Value>,
        schema: &Value,
        path: &str,
        errors: &mut Vec<String>,
    ) {
        let open = schema["x-kubernetes-preserve-unknown-fields"] == true;
        for (key, field) in object {
            let field_path = format!("{path}.{key}");
            if let Some(property) = schema["properties"].get(key) {
                self.check(field, property, &field_path, errors);
            } else if schema["additionalProperties"].is_object() {
                self.check(field, &schema["additionalProperties"], &field_path, errors);
            } else if !open && schema["additionalProperties"] != true {
                errors.push(format!("{field_path}: unknown field"));
            }
        }
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().unwrap();
            if !object.contains_key(name) {
                errors.push(format!("{path}: missing required field {name}"));
            }
        }
        let count = object.len() as u64;
        let (min, max) = (
            schema["minProperties"].as_u64(),
            schema["maxProperties"].as_u64(),
        );
        if min.is_some_and(|m| count < m) || max.is_some_and(|m| count > m) {
            errors.push(format!(
                "{path}: {count} properties, allowed {min:?}..{max:?}"
            ));
        }
    }

    fn string(&mut self, text: &str, schema: &Value, path: &str, errors: &mut Vec<String>) {
        let length = text.chars().count() as u64;
        let (min, max) = (schema["minLength"].as_u64(), schema["maxLength"].as_u64());
        if min.is_some_and(|m| length < m) || max.is_some_and(|m| length > m) {
            errors.push(format!("{path}: length {length}, allowed {min:?}..{max:?}"));
        }
        if let Some(pattern) = schema["pattern"].as_str() {
            let regex = self
                .patterns
                .entry(pattern.to_owned())
                .or_insert_with(|| Regex::new(pattern).expect("schema pattern"));
            if !regex.is_match(text) {
                errors.push(format!("{path}: {text:?} does not match {pattern}"));
            }
        }
    }

    fn range(&self, n: &serde_json::Number, schema: &Value, path: &str, errors: &mut Vec<String>) {
        let n = n.as_f64().unwrap();
        if schema["minimum"].as_f64().is_some_and(|m| n < m)
            || schema["maximum"].as_f64().is_some_and(|m| n > m)
        {
            errors.push(format!("{path}: {n} out of range"));
        }
    }
}

#[test]
fn every_resource_is_valid_against_its_published_schema() {
    let schemas = schemas();
    let mut validator = Validator {
        patterns: HashMap::new(),
    };
    let mut errors = Vec::new();
    let mut custom = 0;
    for doc in manifests() {
        let api_version = doc["apiVersion"].as_str().unwrap_or_default().to_owned();
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        let label = format!("{kind}/{name}");
        match schemas.get(&(api_version.clone(), kind.clone())) {
            Some(schema) => {
                custom += 1;
                // metadata is validated by the API server itself, not by the CRD schema.
                let mut body = doc.clone();
                body.as_object_mut().unwrap().remove("metadata");
                let mut schema = schema.clone();
                schema["properties"]
                    .as_object_mut()
                    .unwrap()
                    .remove("metadata");
                validator.check(&body, &schema, &label, &mut errors);
            }
            None if BUILT_IN.contains(&(api_version.as_str(), kind.as_str())) => {}
            None => errors.push(format!("{label}: no schema for {api_version} {kind}")),
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        {
            errors.push(format!("{label}: invalid name"));
        }
    }
    assert!(errors.is_empty(), "schema errors:\n{}", errors.join("\n"));
    assert_eq!(custom, 12, "custom resources validated");
}

#[test]
fn the_validator_refuses_what_the_schemas_refuse() {
    let schemas = schemas();
    let mut validator = Validator {
        patterns: HashMap::new(),
    };
    let route = manifests()
        .into_iter()
        .find(|d| d["kind"] == "HTTPRoute")
        .unwrap();
    let schema = &schemas[&(
        "gateway.networking.k8s.io/v1".to_owned(),
        "HTTPRoute".to_owned(),
    )];
    type Mutation = (&'static str, fn(&mut Value));
    let mutations: [Mutation; 4] = [
        ("unknown field", |r| r["spec"]["colour"] = "red".into()),
        ("bad enum", |r| {
            r["spec"]["rules"][0]["matches"][0]["headers"][0]["type"] = "Fuzzy".into()
        }),
        ("bad type", |r| {
            r["spec"]["rules"][0]["timeouts"]["request"] = 300.into()
        }),
        ("bad pattern", |r| {
            r["spec"]["rules"][0]["timeouts"]["request"] = "5 minutes".into()
        }),
    ];
    for (what, mutate) in mutations {
        let mut broken = route.clone();
        broken.as_object_mut().unwrap().remove("metadata");
        mutate(&mut broken);
        let mut errors = Vec::new();
        let mut schema = schema.clone();
        schema["properties"]
            .as_object_mut()
            .unwrap()
            .remove("metadata");
        validator.check(&broken, &schema, "route", &mut errors);
        assert!(!errors.is_empty(), "{what} passed validation");
    }
}

/// The manifests indexed by kind and name, all in one namespace.
struct Cluster(Vec<Value>);

impl Cluster {
    fn get(&self, kind: &str, name: &str) -> &Value {
        self.0
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} named {name}"))
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.0.iter().filter(|d| d["kind"] == kind).collect()
    }

    /// The Deployment whose pod labels a selector matches.
    fn deployment_selected_by(&self, selector: &Value) -> &Value {
        let selector = selector.as_object().expect("selector");
        let matching: Vec<&Value> = self
            .all("Deployment")
            .into_iter()
            .filter(|d| {
                let labels = &d["spec"]["template"]["metadata"]["labels"];
                selector.iter().all(|(k, v)| &labels[k] == v)
            })
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "selector {selector:?} matches {} deployments",
            matching.len()
        );
        matching[0]
    }
}

fn container_ports(deployment: &Value) -> Vec<(Option<&str>, u64)> {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .map(|p| (p["name"].as_str(), p["containerPort"].as_u64().unwrap()))
        .collect()
}

fn args(deployment: &Value) -> Vec<&str> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

fn flag<'a>(deployment: &'a Value, name: &str) -> &'a str {
    let args = args(deployment);
    let at = args
        .iter()
        .position(|a| *a == name)
        .unwrap_or_else(|| panic!("no {name} flag"));
    args[at + 1]
}

/// A Service's port forwards to a port its Deployment's pods declare.
fn assert_service_reaches_pods(cluster: &Cluster, service: &Value, port: u64) {
    let name = service["metadata"]["name"].as_str().unwrap();
    let service_port = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == port)
        .unwrap_or_else(|| panic!("Service {name} has no port {port}"));
    let deployment = cluster.deployment_selected_by(&service["spec"]["selector"]);
    let target = &service_port["targetPort"];
    let ports = container_ports(deployment);
    let found = match target {
        Value::String(named) => ports.iter().any(|(n, _)| *n == Some(named.as_str())),
        Value::Number(number) => ports.iter().any(|(_, p)| Some(*p) == number.as_u64()),
        _ => ports.iter().any(|(_, p)| *p == port),
    };
    assert!(
        found,
        "Service {name} port {port} targets {target}, which its pods do not expose"
    );
}

#[test]
fn every_reference_resolves() {
    let docs = manifests();
    for doc in &docs {
        let namespaced = !matches!(
            doc["kind"].as_str(),
            Some("Namespace" | "GatewayClass" | "ClusterRole" | "ClusterRoleBinding")
        );
        if namespaced {
            assert_eq!(
                doc["metadata"]["namespace"], NAMESPACE,
                "{} {}",
                doc["kind"], doc["metadata"]["name"]
            );
        }
    }
    let cluster = Cluster(docs);

    // Gateway -> GatewayClass -> EnvoyProxy.
    let gateway = cluster.get("Gateway", "llm-gateway");
    let class = cluster.get(
        "GatewayClass",
        gateway["spec"]["gatewayClassName"].as_str().unwrap(),
    );
    assert_eq!(
        class["spec"]["controllerName"],
        "gateway.envoyproxy.io/gatewayclass-controller"
    );
    let proxy = cluster.get(
        "EnvoyProxy",
        class["spec"]["parametersRef"]["name"].as_str().unwrap(),
    );
    assert_eq!(
        proxy["spec"]["provider"]["kubernetes"]["envoyService"]["type"],
        "NodePort"
    );

    // Policies -> the Gateway.
    for kind in ["ClientTrafficPolicy", "EnvoyExtensionPolicy"] {
        for policy in cluster.all(kind) {
            for target in policy["spec"]["targetRefs"].as_array().unwrap() {
                assert_eq!(target["kind"], "Gateway");
                cluster.get("Gateway", target["name"].as_str().unwrap());
            }
        }
    }
    for policy in cluster.all("EnvoyPatchPolicy") {
        cluster.get(
            "Gateway",
            policy["spec"]["targetRef"]["name"].as_str().unwrap(),
        );
    }

    // HTTPRoute -> Gateway listener, pools, services, filters; each model rule's backend
    // serves the model its header names; the catch-all comes last.
    let route = cluster.get("HTTPRoute", "llm-route");
    for parent in route["spec"]["parentRefs"].as_array().unwrap() {
        let gateway = cluster.get("Gateway", parent["name"].as_str().unwrap());
        let listeners = gateway["spec"]["listeners"].as_array().unwrap();
        assert!(
            listeners.iter().any(|l| l["name"] == parent["sectionName"]),
            "no listener {}",
            parent["sectionName"]
        );
    }
    let rules = route["spec"]["rules"].as_array().unwrap();
    let mut models = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        let headers = &rule["matches"][0]["headers"];
        let Some(header) = headers.as_array().and_then(|h| h.first()) else {
            assert_eq!(index, rules.len() - 1, "the catch-all rule must be last");
            let filter = &rule["filters"][0]["extensionRef"];
            let direct = &cluster.get("HTTPRouteFilter", filter["name"].as_str().unwrap())["spec"]
                ["directResponse"];
            assert_eq!(direct["statusCode"], 404);
            let body: Value =
                serde_json::from_str(direct["body"]["inline"].as_str().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "model_not_found");
            continue;
        };
        assert_eq!(
            (&header["type"], &header["name"]),
            (&"Exact".into(), &"x-ai-eg-model".into())
        );
        let model = header["value"].as_str().unwrap();
        models.push(model);
        let backend = &rule["backendRefs"][0];
        let name = backend["name"].as_str().unwrap();
        let serving = match backend["kind"].as_str().unwrap() {
            "InferencePool" => {
                let pool = cluster.get("InferencePool", name);
                let servers =
                    cluster.deployment_selected_by(&pool["spec"]["selector"]["matchLabels"]);
                let port = pool["spec"]["targetPorts"][0]["number"].as_u64().unwrap();
                assert!(
                    container_ports(servers).iter().any(|(_, p)| *p == port),
                    "pool {name} port {port}"
                );
                assert_eq!(servers["spec"]["replicas"], 3, "pool {name} replicas");
                // Endpoint picker: Service -> Deployment for this pool, its config, its RBAC.
                let picker_ref = &pool["spec"]["endpointPickerRef"];
                let picker_service = cluster.get("Service", picker_ref["name"].as_str().unwrap());
                let picker_port = picker_ref["port"]["number"].as_u64().unwrap();
                assert_service_reaches_pods(&cluster, picker_service, picker_port);
                let picker = cluster.deployment_selected_by(&picker_service["spec"]["selector"]);
                assert_eq!(flag(picker, "--pool-name"), name);
                assert_eq!(flag(picker, "--pool-namespace"), NAMESPACE);
                let image = picker["spec"]["template"]["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap();
                assert_eq!(
                    image,
                    "registry.k8s.io/gateway-api-inference-extension/epp:v1.0.1"
                );
                let config_file = flag(picker, "--config-file");
                let volume = &picker["spec"]["template"]["spec"]["volumes"][0];
                let config =
                    cluster.get("ConfigMap", volume["configMap"]["name"].as_str().unwrap());
                let file = config_file.rsplit('/').next().unwrap();
                let plugins = config["data"][file]
                    .as_str()
                    .unwrap_or_else(|| panic!("no {file} in the EPP ConfigMap"));
                for scorer in [
                    "queue-scorer",
                    "kv-cache-utilization-scorer",
                    "prefix-cache-scorer",
                ] {
                    assert!(
                        plugins.contains(&format!("type: {scorer}")),
                        "{name}'s picker lacks {scorer}"
                    );
                }
                let account = picker["spec"]["template"]["spec"]["serviceAccountName"]
                    .as_str()
                    .unwrap();
                cluster.get("ServiceAccount", account);
                let binding = cluster
                    .all("RoleBinding")
                    .into_iter()
                    .find(|b| b["subjects"][0]["name"] == account)
                    .unwrap_or_else(|| panic!("no RoleBinding for {account}"));
                let role = cluster.get("Role", binding["roleRef"]["name"].as_str().unwrap());
                let grants = serde_json::to_string(&role["rules"]).unwrap();
                assert!(
                    grants.contains("inferencepools") && grants.contains("pods"),
                    "{account} cannot read its pool"
                );
                let objective = cluster
                    .all("InferenceObjective")
                    .into_iter()
                    .find(|o| o["spec"]["poolRef"]["name"] == name);
                assert!(objective.is_some(), "no InferenceObjective for pool {name}");
                servers
            }
            "Service" => {
                let service = cluster.get("Service", name);
                let port = backend["port"].as_u64().unwrap();
                assert_service_reaches_pods(&cluster, service, port);
                cluster.deployment_selected_by(&service["spec"]["selector"])
            }
            other => panic!("unexpected backend kind {other}"),
        };
        assert_eq!(
            flag(serving, "--model"),
            model,
            "rule for {model} reaches a server of another model"
        );
    }
    assert_eq!(
        models,
        [
            "meta-llama/Llama-3.1-8B-Instruct",
            "mistral:latest",
            "some-cool-self-hosted-model"
        ]
    );
    for binding in cluster.all("ClusterRoleBinding") {
        cluster.get("ClusterRole", binding["roleRef"]["name"].as_str().unwrap());
        cluster.get(
            "ServiceAccount",
            binding["subjects"][0]["name"].as_str().unwrap(),
        );
    }
}

/// The wasm filter name Envoy Gateway generates for the `index`-th wasm of a policy.
fn wasm_filter_name(policy: &Value, index: usize) -> String {
    format!(
        "envoy.filters.http.wasm/envoyextensionpolicy/{}/{}/wasm/{index}",
        policy["metadata"]["namespace"].as_str().unwrap(),
        policy["metadata"]["name"].as_str().unwrap()
    )
}

#[test]
fn the_filter_policy_loads_and_the_patch_selects_its_filter_by_name() {
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
        json_path.contains(&format!("[?(@.name=='{}')]", wasm_filter_name(policy, 0))),
        "the patch does not select the policy's filter by name: {json_path}"
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
