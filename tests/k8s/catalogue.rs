//! The filter's catalogue and the routes agree, in k8s/ and in envoy.yaml alike: every model
//! of the catalogue is routed by a rule on its name, every rule's model is in the catalogue,
//! and no rule names an alias (routes never need to know them); both are the scenario's.

use crate::{documents, manifests, root, Cluster};
use model_router::catalogue::Catalogue;
use model_router::config::Settings;
use testkit::scenario::{ALIASES, MODELS, ROUTING_HEADER};

/// What a catalogue must agree with: the models the rules route, in rule order.
fn check(catalogue: &Catalogue, rule_models: &[String]) -> Result<(), String> {
    for model in catalogue.models() {
        if !rule_models.contains(&model.name) {
            return Err(format!("catalogue model {:?} has no route", model.name));
        }
        if let Some(alias) = model.aliases.iter().find(|a| rule_models.contains(a)) {
            return Err(format!("a rule routes the alias {alias:?}"));
        }
    }
    for model in rule_models {
        match catalogue.lookup(model.as_bytes()) {
            Some(entry) if entry.name == *model => {}
            _ => return Err(format!("routed model {model:?} is not in the catalogue")),
        }
    }
    Ok(())
}

/// The scenario's models and aliases, as the catalogue has them.
fn check_scenario(catalogue: &Catalogue) {
    let names: Vec<&str> = catalogue.models().iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, MODELS);
    let mut aliases: Vec<(&str, &str)> = catalogue
        .models()
        .iter()
        .flat_map(|m| m.aliases.iter().map(|a| (a.as_str(), m.name.as_str())))
        .collect();
    aliases.sort_unstable();
    let mut scenario = ALIASES.to_vec();
    scenario.sort_unstable();
    assert_eq!(aliases, scenario);
}

#[test]
fn k8s_routes_every_catalogue_model_and_only_those() {
    let cluster = Cluster(manifests());
    let policy = cluster.get("EnvoyExtensionPolicy", "model-router");
    let config = serde_json::to_vec(&policy["spec"]["wasm"][0]["config"]).unwrap();
    let settings = Settings::parse(&config).unwrap_or_else(|e| panic!("{e}"));
    let route = cluster.get("HTTPRoute", "llm-route");
    let rule_models: Vec<String> = route["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|rule| rule["matches"][0]["headers"].as_array())
        .flat_map(|headers| headers.iter())
        .filter(|h| h["name"] == ROUTING_HEADER)
        .map(|h| h["value"].as_str().unwrap().to_owned())
        .collect();
    check(&settings.catalogue, &rule_models).unwrap();
    check_scenario(&settings.catalogue);
}

#[test]
fn envoy_yaml_routes_every_catalogue_model_and_only_those() {
    let envoy = &documents(&root().join("envoy.yaml"))[0];
    let hcm = &envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"];
    let filter = hcm["http_filters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "model-router")
        .expect("the model-router filter");
    let plugin = filter["config_discovery"]["default_config"]["config"]["configuration"]["value"]
        .as_str()
        .unwrap();
    let settings = Settings::parse(plugin.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
        .as_array()
        .unwrap();
    let rule_models: Vec<String> = routes
        .iter()
        .flat_map(|r| r["match"]["headers"].as_array().into_iter().flatten())
        .filter(|h| h["name"] == ROUTING_HEADER)
        .map(|h| h["string_match"]["exact"].as_str().unwrap().to_owned())
        .collect();
    check(&settings.catalogue, &rule_models).unwrap();
    check_scenario(&settings.catalogue);
    // The filter answers the model list: no route may answer it in its place.
    assert!(
        !routes.iter().any(|r| r["match"]["path"] == "/v1/models"),
        "envoy.yaml answers /v1/models itself"
    );
}

#[test]
fn a_catalogue_and_routes_that_disagree_are_refused() {
    let catalogue = |json: &str| {
        Settings::parse(format!(r#"{{"models":{json}}}"#).as_bytes())
            .unwrap()
            .catalogue
    };
    let rules = |models: &[&str]| models.iter().map(|m| (*m).to_owned()).collect::<Vec<_>>();
    let two = catalogue(r#"[{"name":"a","aliases":["x"]},{"name":"b"}]"#);
    assert!(check(&two, &rules(&["a", "b"])).is_ok());
    let cases = [
        (rules(&["a"]), "\"b\" has no route"),
        (rules(&["a", "b", "c"]), "\"c\" is not in the catalogue"),
        (rules(&["a", "b", "x"]), "routes the alias \"x\""),
    ];
    for (rules, error) in cases {
        let refused = check(&two, &rules).unwrap_err();
        assert!(refused.contains(error), "{refused}");
    }
}
