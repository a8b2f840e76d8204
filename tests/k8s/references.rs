//! Every reference in k8s/ resolves: the Gateway to its class and proxy, the policies to the
//! Gateway, the route to its listener, pools, services and filters, each pool to its servers
//! and endpoint picker (Service, Deployment, configuration, RBAC), each rule to a server of its
//! model.

use crate::{manifests, Cluster, NAMESPACE};
use serde_json::Value;

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
