//! k8s/: every custom resource valid against its published schema (unknown fields refused),
//! every reference resolved, the filter's catalogue routed by the HTTPRoute (and envoy.yaml's
//! by its routes), and the Envoy Gateway-shaped configuration the gateway tests run in Envoy
//! consistent with what these manifests ask Envoy Gateway for.

mod catalogue;
mod filter;
mod references;
mod schemas;
mod telemetry;

use serde_json::Value;
use std::path::Path;
use testkit::k8s::{documents, manifest_files, manifests};

const NAMESPACE: &str = "llm-gateway";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
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
