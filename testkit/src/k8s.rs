//! The manifests of k8s/ as `kubectl apply -k k8s/` applies them: the files kustomization.yaml
//! lists (which must be every file there), read into JSON values.

use crate::envoy::root;
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Every document of a multi-document YAML file, as JSON values.
pub fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The files `kubectl apply -k k8s/` applies, in kustomization order; panics unless
/// kustomization.yaml lists every file in k8s/.
pub fn manifest_files() -> Vec<PathBuf> {
    let k8s = root().join("k8s");
    let kustomization = &documents(&k8s.join("kustomization.yaml"))[0];
    let listed: Vec<&str> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("resource path"))
        .collect();
    let mut on_disk = Vec::new();
    let mut pending = vec![k8s.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.file_name().unwrap() != "kustomization.yaml" {
                on_disk.push(
                    path.strip_prefix(&k8s)
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
    listed.iter().map(|file| k8s.join(file)).collect()
}

/// The manifests `kubectl apply -k k8s/` applies, in kustomization order.
pub fn manifests() -> Vec<Value> {
    manifest_files()
        .iter()
        .flat_map(|file| documents(file))
        .collect()
}
