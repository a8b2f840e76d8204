//! k8s/: every custom resource valid against its published schema (unknown fields refused),
//! every reference resolved, and the Envoy Gateway-shaped configuration the gateway tests run
//! in Envoy consistent with what these manifests ask Envoy Gateway for.

mod filter;
mod references;
mod schemas;
mod telemetry;

use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

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

/// The files `kubectl apply -k k8s/` applies, in kustomization order.
fn manifest_files() -> Vec<PathBuf> {
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
        .map(|file| root().join("k8s").join(file))
        .collect()
}

/// The manifests `kubectl apply -k k8s/` applies, in kustomization order.
fn manifests() -> Vec<Value> {
    manifest_files()
        .iter()
        .flat_map(|file| documents(file))
        .collect()
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
