//! The model catalogue: the models the gateway serves, each found by its name or an alias,
//! with the name its backend knows it by and the headers its upstream requests carry.
//!
//! Built once from the plugin configuration's `models` ([`ModelEntry`]) and validated then;
//! [`models_api`] answers `GET /v1/models` from it.

pub mod models_api;

use crate::config::ModelEntry;
use std::collections::BTreeMap;
use std::fmt;

/// Most models a catalogue may list.
pub const MAX_MODELS: usize = 256;
/// Most extra headers one model may set.
pub const MAX_HEADERS: usize = 16;
/// Default `owned_by` of a model in `/v1/models`.
pub const DEFAULT_OWNED_BY: &str = "model-router";

/// Headers a model may not set: the framing of the request, which Envoy owns.
const RESERVED_HEADERS: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "content-type",
    "content-encoding",
    "host",
    "connection",
    "te",
    "upgrade",
];

/// The validated catalogue; empty when the configuration lists no models.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalogue {
    models: Vec<ModelEntry>,
    /// Every name and alias, to the index of its model.
    index: BTreeMap<Box<[u8]>, usize>,
}

/// A catalogue that cannot load: the field at fault (`models[2].aliases[0]`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogueError {
    pub field: String,
    pub reason: String,
}

impl fmt::Display for CatalogueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field `{}`: {}", self.field, self.reason)
    }
}

fn error(field: String, reason: impl Into<String>) -> CatalogueError {
    CatalogueError {
        field,
        reason: reason.into(),
    }
}

impl Catalogue {
    /// Validates `models`: every name and alias a usable model name no longer than
    /// `max_model_bytes` (else no body could name it) and unique across all models; upstream
    /// names usable; extra headers valid lowercase names other than `routing_header` and
    /// the request's framing, with values a header can carry.
    pub fn new(
        models: Vec<ModelEntry>,
        max_model_bytes: usize,
        routing_header: &str,
    ) -> Result<Self, CatalogueError> {
        if models.len() > MAX_MODELS {
            return Err(error(
                "models".into(),
                format!("lists {} models, at most {MAX_MODELS}", models.len()),
            ));
        }
        let mut index: BTreeMap<Box<[u8]>, usize> = BTreeMap::new();
        for (at, model) in models.iter().enumerate() {
            let names = std::iter::once((format!("models[{at}].name"), &model.name)).chain(
                model
                    .aliases
                    .iter()
                    .enumerate()
                    .map(|(a, alias)| (format!("models[{at}].aliases[{a}]"), alias)),
            );
            for (field, name) in names {
                check_name(name, max_model_bytes).map_err(|reason| error(field.clone(), reason))?;
                if let Some(&other) = index.get(name.as_bytes()) {
                    let what = if models[other].name == *name {
                        "the name"
                    } else {
                        "an alias"
                    };
                    let whose = if other == at {
                        "this model".to_owned()
                    } else {
                        format!("models[{other}]")
                    };
                    return Err(error(
                        field,
                        format!("{name:?} is already {what} of {whose}"),
                    ));
                }
                index.insert(name.as_bytes().into(), at);
            }
            if let Some(upstream) = &model.upstream_name {
                check_name(upstream, crate::config::MAX_MODEL_BYTES_LIMIT)
                    .map_err(|reason| error(format!("models[{at}].upstream_name"), reason))?;
            }
            if model.owned_by.is_empty() {
                return Err(error(format!("models[{at}].owned_by"), "must not be empty"));
            }
            if model.headers.len() > MAX_HEADERS {
                return Err(error(
                    format!("models[{at}].headers"),
                    format!(
                        "sets {} headers, at most {MAX_HEADERS}",
                        model.headers.len()
                    ),
                ));
            }
            for (name, value) in &model.headers {
                let field = format!("models[{at}].headers.{name}");
                crate::config::check_header_name(name)
                    .map_err(|reason| error(field.clone(), reason))?;
                if name == routing_header || RESERVED_HEADERS.contains(&name.as_str()) {
                    return Err(error(
                        field,
                        "is set by the filter or by Envoy and cannot be configured",
                    ));
                }
                check_header_value(value).map_err(|reason| error(field, reason))?;
            }
        }
        Ok(Self { models, index })
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The models, in configuration order.
    pub fn models(&self) -> &[ModelEntry] {
        &self.models
    }

    /// The model a body's `model` names, by its name or an alias.
    pub fn lookup(&self, name: &[u8]) -> Option<&ModelEntry> {
        self.index.get(name).map(|&at| &self.models[at])
    }

    /// Every header name some model sets: a client-sent copy is removed from every request.
    pub fn header_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .models
            .iter()
            .flat_map(|m| m.headers.keys().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

impl ModelEntry {
    /// The name its backend knows it by: `upstream_name`, else its name.
    pub fn upstream(&self) -> &str {
        self.upstream_name.as_deref().unwrap_or(&self.name)
    }
}

/// A name a body can carry and a header can hold: what [`crate::request::check_model`]
/// accepts, within `max` bytes.
fn check_name(name: &str, max: usize) -> Result<(), String> {
    if crate::request::check_model(name.as_bytes()).is_err() {
        return Err(format!(
            "{name:?} must be a non-empty name without control characters or surrounding spaces"
        ));
    }
    if name.len() > max {
        return Err(format!("{name:?} is longer than {max} bytes"));
    }
    Ok(())
}

fn check_header_value(value: &str) -> Result<(), String> {
    let control = |c: char| (c < ' ' && c != '\t') || c == '\u{7f}';
    if value.is_empty()
        || value.contains(control)
        || value.starts_with([' ', '\t'])
        || value.ends_with([' ', '\t'])
    {
        return Err(format!(
            "{value:?} must be a non-empty header value without control characters or surrounding spaces"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn entry(name: &str, aliases: &[&str]) -> ModelEntry {
        ModelEntry {
            name: name.into(),
            aliases: aliases.iter().map(|a| (*a).into()).collect(),
            upstream_name: None,
            headers: BTreeMap::new(),
            owned_by: DEFAULT_OWNED_BY.into(),
            created: 0,
        }
    }

    fn catalogue(models: Vec<ModelEntry>) -> Result<Catalogue, CatalogueError> {
        Catalogue::new(models, 256, "x-ai-eg-model")
    }

    #[test]
    fn names_and_aliases_find_their_model() {
        let mut llama = entry("meta-llama/Llama-3.1-8B-Instruct", &["gpt-4o", "llama3"]);
        llama.upstream_name = Some("llama-3.1-8b".into());
        let catalogue = catalogue(vec![llama, entry("mistral:latest", &[])]).unwrap();
        for name in ["meta-llama/Llama-3.1-8B-Instruct", "gpt-4o", "llama3"] {
            let model = catalogue.lookup(name.as_bytes()).unwrap();
            assert_eq!(model.name, "meta-llama/Llama-3.1-8B-Instruct");
            assert_eq!(model.upstream(), "llama-3.1-8b");
        }
        assert_eq!(
            catalogue.lookup(b"mistral:latest").unwrap().upstream(),
            "mistral:latest"
        );
        assert!(catalogue.lookup(b"GPT-4o").is_none());
        assert!(catalogue.lookup(b"llama").is_none());
    }

    #[test]
    fn names_are_unique_across_models_and_aliases() {
        let cases = [
            (
                vec![entry("a", &[]), entry("a", &[])],
                "models[1].name",
                "already the name of models[0]",
            ),
            (
                vec![entry("a", &[]), entry("b", &["a"])],
                "models[1].aliases[0]",
                "already the name of models[0]",
            ),
            (
                vec![entry("a", &["x"]), entry("x", &[])],
                "models[1].name",
                "already an alias of models[0]",
            ),
            (
                vec![entry("a", &["x", "x"])],
                "models[0].aliases[1]",
                "already an alias of this model",
            ),
            (
                vec![entry("a", &["a"])],
                "models[0].aliases[0]",
                "already the name of this model",
            ),
        ];
        for (models, field, reason) in cases {
            let error = catalogue(models).unwrap_err();
            assert_eq!(error.field, field);
            assert!(error.reason.contains(reason), "{error}");
        }
    }

    #[test]
    fn bad_names_headers_and_owners_name_their_field() {
        let long = "m".repeat(257);
        let mut upstream = entry("a", &[]);
        upstream.upstream_name = Some("b\n".into());
        let mut owner = entry("a", &[]);
        owner.owned_by = String::new();
        let with_header = |name: &str, value: &str| {
            let mut model = entry("a", &[]);
            model.headers.insert(name.into(), value.into());
            model
        };
        let cases = [
            (entry("", &[]), "models[0].name"),
            (entry(" a", &[]), "models[0].name"),
            (entry(&long, &[]), "models[0].name"),
            (entry("a", &["ok", "b\tc"]), "models[0].aliases[1]"),
            (upstream, "models[0].upstream_name"),
            (owner, "models[0].owned_by"),
            (with_header("X-Base", "v"), "models[0].headers.X-Base"),
            (
                with_header("x-ai-eg-model", "v"),
                "models[0].headers.x-ai-eg-model",
            ),
            (
                with_header("content-length", "1"),
                "models[0].headers.content-length",
            ),
            (with_header("x-base", ""), "models[0].headers.x-base"),
            (with_header("x-base", "a\r\nb"), "models[0].headers.x-base"),
        ];
        for (model, field) in cases {
            assert_eq!(catalogue(vec![model]).unwrap_err().field, field);
        }
        let too_many = (0..=MAX_MODELS)
            .map(|i| entry(&i.to_string(), &[]))
            .collect();
        assert_eq!(catalogue(too_many).unwrap_err().field, "models");
    }

    #[test]
    fn header_names_are_listed_once() {
        let mut a = entry("a", &[]);
        a.headers
            .insert("x-gateway-base-model-name".into(), "base".into());
        let mut b = entry("b", &[]);
        b.headers
            .insert("x-gateway-base-model-name".into(), "base".into());
        b.headers.insert("x-lora".into(), "1".into());
        let catalogue = catalogue(vec![a, b]).unwrap();
        assert_eq!(
            catalogue.header_names(),
            ["x-gateway-base-model-name", "x-lora"]
        );
    }
}
