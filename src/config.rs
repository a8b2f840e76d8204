//! Plugin configuration: the JSON an operator writes, validated once into [`Settings`].
//!
//! An empty configuration means every default. Unknown fields and bad values are refused
//! with an error that names the field, so a bad configuration never loads.

use crate::catalogue::{Catalogue, DEFAULT_OWNED_BY};
use crate::picker::config::{validate_picker, validate_pools, PickerConfig, Pool, PoolConfig};
use crate::response::labels::{check_label, ModelLabels};
use crate::response::StateKeys;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// Header set from the body, the one Envoy AI Gateway's route rules match on.
pub const DEFAULT_HEADER: &str = "x-ai-eg-model";
/// The OpenAI- and Anthropic-style APIs whose bodies name a model (the audio ones in a
/// `multipart/form-data` field).
pub const DEFAULT_PATHS: [&str; 7] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
    "/v1/audio/transcriptions",
    "/v1/audio/translations",
];
pub const DEFAULT_MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;
pub const DEFAULT_MAX_MODEL_BYTES: usize = 256;
/// Longest model name that may be configured; Envoy's header size limits are far above it.
pub const MAX_MODEL_BYTES_LIMIT: usize = 4096;
/// Largest body limit that may be configured: Envoy must buffer the whole body.
pub const MAX_BODY_BYTES_LIMIT: u64 = 1 << 30;

/// The configuration as written, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    header: Option<String>,
    paths: Option<Vec<String>>,
    max_body_bytes: Option<u64>,
    max_model_bytes: Option<usize>,
    missing_model: Option<MissingModel>,
    models: Option<Vec<ModelEntry>>,
    unknown_models: Option<UnknownModels>,
    response: Option<ResponseSettings>,
    pools: Option<Vec<PoolConfig>>,
    picker: Option<PickerConfig>,
}

/// One model of the catalogue, as configured (see [`Catalogue`] for what is checked).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// The canonical name: the routing header's value, the id in `/v1/models`.
    pub name: String,
    /// Other names a body may use for this model; they route as the name does.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The name the backend knows the model by, written into the body when the body names
    /// the model otherwise (by an alias, or by `name` when this differs). Default: `name`.
    #[serde(default)]
    pub upstream_name: Option<String>,
    /// Headers set on the upstream request of this model (e.g. a LoRA adapter's base model).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `owned_by` in `/v1/models`.
    #[serde(default = "default_owned_by")]
    pub owned_by: String,
    /// `created` in `/v1/models`, Unix seconds.
    #[serde(default)]
    pub created: u64,
}

fn default_owned_by() -> String {
    DEFAULT_OWNED_BY.to_owned()
}

/// What the filter does with responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseSettings {
    /// Read token usage, the answering model and timings from responses (default true): it
    /// never changes a byte of the response, and costs little.
    pub usage: bool,
    /// Add `stream_options: {"include_usage": true}` to streaming chat and completions
    /// requests without `stream_options` (default false): their clients then receive one more
    /// chunk, with the usage and no choices, that they did not ask for.
    pub add_include_usage: bool,
    /// The per-request values published as filter state (default none: each key costs Envoy
    /// about as much as the rest of the response side together).
    pub filter_state: StateKeys,
}

impl Default for ResponseSettings {
    fn default() -> Self {
        Self {
            usage: true,
            add_include_usage: false,
            filter_state: StateKeys::default(),
        }
    }
}

/// What to do with a body whose model is not in the catalogue.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownModels {
    /// Route by the name as sent; the route table decides (default).
    #[default]
    PassThrough,
    /// Refuse with 404 `model_not_found`: no route or backend is consulted.
    Reject,
}

/// What to do with a scanned body whose top-level object has no `model` key.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingModel {
    /// Refuse with 400 (default).
    #[default]
    Reject,
    /// Forward the request without the routing header; the route table decides.
    PassThrough,
}

/// Validated configuration, handed to every request.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub header: String,
    pub paths: Vec<String>,
    pub max_body_bytes: u64,
    pub max_model_bytes: usize,
    pub missing_model: MissingModel,
    /// The models served; empty when the configuration lists none.
    pub catalogue: Catalogue,
    pub unknown_models: UnknownModels,
    pub response: ResponseSettings,
    /// The endpoint picker's pools; empty when the configuration lists none.
    pub pools: Vec<Pool>,
    pub picker: PickerConfig,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            header: DEFAULT_HEADER.to_owned(),
            paths: DEFAULT_PATHS.iter().map(|p| (*p).to_owned()).collect(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_model_bytes: DEFAULT_MAX_MODEL_BYTES,
            missing_model: MissingModel::Reject,
            catalogue: Catalogue::default(),
            unknown_models: UnknownModels::PassThrough,
            response: ResponseSettings::default(),
            pools: Vec::new(),
            picker: PickerConfig::default(),
        }
    }
}

/// A configuration that cannot load, with the field at fault where there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: Option<String>,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(
                f,
                "invalid plugin configuration: field `{field}`: {}",
                self.reason
            ),
            None => write!(f, "invalid plugin configuration: {}", self.reason),
        }
    }
}

impl std::error::Error for ConfigError {}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: Some(field.into()),
        reason: reason.into(),
    }
}

impl Settings {
    /// Parses and validates the plugin configuration. Empty (or blank) means all defaults.
    pub fn parse(config: &[u8]) -> Result<Self, ConfigError> {
        if config.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let unparsable = |e: serde_json::Error| ConfigError {
            field: None,
            reason: e.to_string(),
        };
        // Through a map first, so that only a JSON object is accepted (serde would also read
        // a struct from an array); serde names unknown fields and mistyped values itself.
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(config).map_err(unparsable)?;
        let raw = RawConfig::deserialize(serde_json::Value::Object(object)).map_err(unparsable)?;
        let defaults = Self::default();
        let mut settings = Self {
            header: raw.header.unwrap_or(defaults.header),
            paths: raw.paths.unwrap_or(defaults.paths),
            max_body_bytes: raw.max_body_bytes.unwrap_or(defaults.max_body_bytes),
            max_model_bytes: raw.max_model_bytes.unwrap_or(defaults.max_model_bytes),
            missing_model: raw.missing_model.unwrap_or(defaults.missing_model),
            catalogue: defaults.catalogue,
            unknown_models: raw.unknown_models.unwrap_or(defaults.unknown_models),
            response: raw.response.unwrap_or(defaults.response),
            pools: Vec::new(),
            picker: raw.picker.unwrap_or(defaults.picker),
        };
        settings.validate()?;
        // After the fields it is checked against.
        settings.catalogue = Catalogue::new(
            raw.models.unwrap_or_default(),
            settings.max_model_bytes,
            &settings.header,
        )
        .map_err(|e| invalid(e.field, e.reason))?;
        // The names, and the upstream names backends answer with, are the response
        // metrics' labels too.
        for (index, model) in settings.catalogue.models().iter().enumerate() {
            let names = [
                ("name", Some(&model.name)),
                ("upstream_name", model.upstream_name.as_ref()),
            ];
            for (field, name) in names {
                let Some(name) = name else { continue };
                check_label(name).map_err(|reason| {
                    invalid(
                        format!("models[{index}].{field}"),
                        format!("{name:?} is not usable as a metric label: {reason}"),
                    )
                })?;
            }
        }
        if settings.unknown_models == UnknownModels::Reject && settings.catalogue.is_empty() {
            return Err(invalid(
                "unknown_models",
                "\"reject\" needs a catalogue: list the served models in `models`",
            ));
        }
        validate_picker(&settings.picker).map_err(|(field, reason)| invalid(field, reason))?;
        if settings.picker.destination_header == settings.header {
            return Err(invalid(
                "picker.destination_header",
                "must differ from `header`, the routing header",
            ));
        }
        let catalogue = &settings.catalogue;
        let max_model_bytes = settings.max_model_bytes;
        settings.pools = validate_pools(raw.pools.unwrap_or_default(), |model| {
            if model.is_empty() || model.len() > max_model_bytes {
                return Err(format!(
                    "must be 1 to {max_model_bytes} bytes (max_model_bytes)"
                ));
            }
            if catalogue.is_empty() {
                return Ok(());
            }
            // The routing header carries the catalogue's name, never an alias.
            match catalogue.lookup(model.as_bytes()) {
                Some(entry) if entry.name == model => Ok(()),
                Some(entry) => Err(format!(
                    "{model:?} is an alias of {:?}: list the model's name",
                    entry.name
                )),
                None => Err(format!("{model:?} is not in the catalogue (`models`)")),
            }
        })
        .map_err(|(field, reason)| invalid(field, reason))?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_header_name(&self.header).map_err(|reason| invalid("header", reason))?;
        if self.paths.is_empty() {
            return Err(invalid("paths", "must list at least one path"));
        }
        for path in &self.paths {
            if !path.starts_with('/')
                || path.contains(['?', '#'])
                || path.contains(char::is_whitespace)
            {
                return Err(invalid(
                    "paths",
                    format!(
                        "{path:?} must be a path starting with '/', without query or whitespace"
                    ),
                ));
            }
        }
        if !(1..=MAX_BODY_BYTES_LIMIT).contains(&self.max_body_bytes) {
            return Err(invalid(
                "max_body_bytes",
                format!(
                    "must be between 1 and {MAX_BODY_BYTES_LIMIT}, got {}",
                    self.max_body_bytes
                ),
            ));
        }
        if !(1..=MAX_MODEL_BYTES_LIMIT).contains(&self.max_model_bytes) {
            return Err(invalid(
                "max_model_bytes",
                format!(
                    "must be between 1 and {MAX_MODEL_BYTES_LIMIT}, got {}",
                    self.max_model_bytes
                ),
            ));
        }
        Ok(())
    }

    /// The metric labels of models: the catalogue's names, or learned ones without one.
    pub fn model_labels(&self) -> ModelLabels {
        if self.catalogue.is_empty() {
            ModelLabels::learning()
        } else {
            // A backend answers with the name it serves: the upstream name's own label.
            let mut names: Vec<String> = Vec::new();
            for model in self.catalogue.models() {
                for name in std::iter::once(&model.name).chain(&model.upstream_name) {
                    if !names.contains(name) {
                        names.push(name.clone());
                    }
                }
            }
            ModelLabels::configured(names)
        }
    }

    /// Whether requests to this `:path` (query string ignored) have their body scanned.
    pub fn scans_path(&self, path: &[u8]) -> bool {
        let path = path.split(|&b| b == b'?').next().unwrap_or_default();
        self.paths.iter().any(|p| p.as_bytes() == path)
    }
}

/// A header name the filter may set: lowercase, so that Envoy's header map matches it.
pub fn check_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if let Some(bad) = name
        .bytes()
        .find(|&b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)))
    {
        return Err(format!(
            "{name:?} must be a lowercase header name (a-z, 0-9, '-', '_', '.'), found {:?}",
            char::from(bad)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::picker::config::{PrefixConfig, Shedding, Weights};
    use crate::picker::metrics_text::MetricSpec;
    use crate::response::StateKey;

    fn error(config: &str) -> ConfigError {
        Settings::parse(config.as_bytes()).expect_err(config)
    }

    #[test]
    fn empty_configuration_means_defaults() {
        for config in ["", "  \n", "{}"] {
            assert_eq!(Settings::parse(config.as_bytes()), Ok(Settings::default()));
        }
        let defaults = Settings::default();
        assert_eq!(defaults.header, "x-ai-eg-model");
        assert_eq!(defaults.paths.len(), 7);
        assert!(defaults.scans_path(b"/v1/audio/transcriptions"));
        assert!(defaults.scans_path(b"/v1/audio/translations"));
        assert_eq!(defaults.max_body_bytes, 8 << 20);
        assert_eq!(defaults.max_model_bytes, 256);
        assert_eq!(defaults.missing_model, MissingModel::Reject);
        assert!(defaults.catalogue.is_empty());
        assert_eq!(defaults.unknown_models, UnknownModels::PassThrough);
        assert!(defaults.response.usage);
        assert!(!defaults.response.add_include_usage);
        assert!(defaults.response.filter_state.is_empty());
    }

    #[test]
    fn every_field_can_be_set() {
        let settings = Settings::parse(
            br#"{"header":"x-model","paths":["/v2/chat"],"max_body_bytes":1024,
                 "max_model_bytes":64,"missing_model":"pass_through",
                 "models":[{"name":"gpt-4o","aliases":["gpt-4o-old"],"upstream_name":"llama",
                            "headers":{"x-gateway-base-model-name":"llama"},"owned_by":"me",
                            "created":1700000000},
                           {"name":"m"}],
                 "unknown_models":"reject",
                 "response":{"usage":false,"add_include_usage":true,
                             "filter_state":["total_tokens","response_model"]},
                 "pools":[{"name":"p","models":["m"],"endpoints":["10.0.0.1:8000","[fd00::1]:80"],
                           "metrics_path":"/stats","metrics":{"queue":"q{a=b}","kv_cache":"k"},
                           "weights":{"queue":1,"kv_cache":0,"prefix":5},"refresh_ms":20,
                           "stale_after_ms":100,
                           "prefix":{"block_bytes":16,"max_blocks":8,"lru_capacity":10},
                           "count_unseen_picks":false}],
                 "picker":{"destination_header":"x-dest","metrics_cluster":"mc",
                           "shedding":{"sheddable_objectives":["batch"],"objective_header":"x-o",
                                       "queue_threshold":1,"kv_cache_threshold":0.5,
                                       "stale_after_ms":9}}}"#,
        )
        .unwrap();
        let gpt = ModelEntry {
            name: "gpt-4o".into(),
            aliases: vec!["gpt-4o-old".into()],
            upstream_name: Some("llama".into()),
            headers: BTreeMap::from([("x-gateway-base-model-name".into(), "llama".into())]),
            owned_by: "me".into(),
            created: 1_700_000_000,
        };
        let m = ModelEntry {
            name: "m".into(),
            aliases: vec![],
            upstream_name: None,
            headers: BTreeMap::new(),
            owned_by: "model-router".into(),
            created: 0,
        };
        assert_eq!(
            settings,
            Settings {
                header: "x-model".into(),
                paths: vec!["/v2/chat".into()],
                max_body_bytes: 1024,
                max_model_bytes: 64,
                missing_model: MissingModel::PassThrough,
                catalogue: Catalogue::new(vec![gpt, m], 64, "x-model").unwrap(),
                unknown_models: UnknownModels::Reject,
                response: ResponseSettings {
                    usage: false,
                    add_include_usage: true,
                    filter_state: [StateKey::TotalTokens, StateKey::ResponseModel]
                        .into_iter()
                        .collect(),
                },
                pools: vec![Pool {
                    name: "p".into(),
                    models: vec!["m".into()],
                    endpoints: vec!["10.0.0.1:8000".into(), "[fd00::1]:80".into()],
                    metrics_path: "/stats".into(),
                    queue_metric: MetricSpec::parse("q{a=b}").unwrap(),
                    kv_cache_metric: MetricSpec::parse("k").unwrap(),
                    weights: Weights {
                        queue: 1,
                        kv_cache: 0,
                        prefix: 5
                    },
                    refresh_ms: 20,
                    stale_after_ms: 100,
                    prefix: PrefixConfig {
                        block_bytes: 16,
                        max_blocks: 8,
                        lru_capacity: 10
                    },
                    count_unseen_picks: false,
                }],
                picker: PickerConfig {
                    destination_header: "x-dest".into(),
                    metrics_cluster: "mc".into(),
                    shedding: Some(Shedding {
                        sheddable_objectives: vec!["batch".into()],
                        objective_header: "x-o".into(),
                        queue_threshold: 1,
                        kv_cache_threshold: 0.5,
                        stale_after_ms: 9,
                    }),
                },
            }
        );
        // A partial response section keeps the other defaults.
        let settings = Settings::parse(br#"{"response":{"add_include_usage":true}}"#).unwrap();
        assert!(settings.response.usage && settings.response.add_include_usage);
    }

    #[test]
    fn unknown_and_mistyped_fields_are_named() {
        assert!(error(r#"{"max_body":1}"#)
            .reason
            .contains("unknown field `max_body`"));
        assert!(error(r#"{"max_body_bytes":"1MiB"}"#)
            .reason
            .contains("invalid type"));
        assert!(error(r#"{"missing_model":"ignore"}"#)
            .reason
            .contains("unknown variant `ignore`"));
        assert!(error("[]")
            .reason
            .contains("invalid type: sequence, expected a map"));
        assert!(error("{").reason.contains("EOF"));
        assert!(error(r#"{"models":[{"name":"a","alias":["b"]}]}"#)
            .reason
            .contains("unknown field `alias`"));
        assert!(error(r#"{"models":["a"]}"#).reason.contains("invalid type"));
        assert!(error(r#"{"unknown_models":"drop"}"#)
            .reason
            .contains("unknown variant `drop`"));
        assert!(error(r#"{"response":{"tokens":true}}"#)
            .reason
            .contains("unknown field `tokens`"));
        assert!(error(r#"{"response":{"filter_state":["tokens"]}}"#)
            .reason
            .contains("unknown variant `tokens`"));
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (r#"{"header":""}"#, "header"),
            (r#"{"header":"X-Model"}"#, "header"),
            (r#"{"header":":path"}"#, "header"),
            (r#"{"header":"x model"}"#, "header"),
            (r#"{"paths":[]}"#, "paths"),
            (r#"{"paths":["v1/chat"]}"#, "paths"),
            (r#"{"paths":["/v1/chat?x=1"]}"#, "paths"),
            (r#"{"max_body_bytes":0}"#, "max_body_bytes"),
            (r#"{"max_body_bytes":2147483648}"#, "max_body_bytes"),
            (r#"{"max_model_bytes":0}"#, "max_model_bytes"),
            (r#"{"max_model_bytes":4097}"#, "max_model_bytes"),
            (r#"{"models":[{"name":"a"},{"name":""}]}"#, "models[1].name"),
            (
                r#"{"models":[{"name":"a"},{"name":"b","aliases":["a"]}]}"#,
                "models[1].aliases[0]",
            ),
            (
                r#"{"max_model_bytes":3,"models":[{"name":"abcd"}]}"#,
                "models[0].name",
            ),
            (
                r#"{"header":"x-m","models":[{"name":"a","headers":{"x-m":"b"}}]}"#,
                "models[0].headers.x-m",
            ),
            (r#"{"unknown_models":"reject"}"#, "unknown_models"),
            (
                r#"{"models":[{"name":"a"},{"name":"other"}]}"#,
                "models[1].name",
            ),
            (r#"{"models":[{"name":"a=b"}]}"#, "models[0].name"),
            (
                r#"{"models":[{"name":"a","upstream_name":"x..y"}]}"#,
                "models[0].upstream_name",
            ),
            (
                r#"{"pools":[{"name":"p","models":[],"endpoints":["1.2.3.4:5"]}]}"#,
                "pools[0].models",
            ),
            (
                r#"{"pools":[{"name":"p","models":["a"],"endpoints":["1.2.3.4:5","host:80"]}]}"#,
                "pools[0].endpoints[1]",
            ),
            (
                r#"{"pools":[{"name":"p","models":["a"],"endpoints":["1.2.3.4:5","1.2.3.4:5"]}]}"#,
                "pools[0].endpoints[1]",
            ),
            (
                r#"{"pools":[{"name":"p","models":["a"],"endpoints":["1.2.3.4:5"]},
                             {"name":"q","models":["b","a"],"endpoints":["1.2.3.4:6"]}]}"#,
                "pools[1].models[1]",
            ),
            (
                r#"{"pools":[{"name":"p","models":["a"],"endpoints":["1.2.3.4:5"]},
                             {"name":"p","models":["b"],"endpoints":["1.2.3.4:6"]}]}"#,
                "pools[1].name",
            ),
            (
                r#"{"models":[{"name":"a","aliases":["b"]}],
                    "pools":[{"name":"p","models":["b"],"endpoints":["1.2.3.4:5"]}]}"#,
                "pools[0].models[0]",
            ),
            (
                r#"{"models":[{"name":"a"}],
                    "pools":[{"name":"p","models":["c"],"endpoints":["1.2.3.4:5"]}]}"#,
                "pools[0].models[0]",
            ),
            (
                r#"{"pools":[{"name":"p","models":["a"],"endpoints":["1.2.3.4:5"],"metrics":{"queue":"a b"}}]}"#,
                "pools[0].metrics.queue",
            ),
            (
                r#"{"pools":[{"name":"p","models":["a"],"endpoints":["1.2.3.4:5"],"weights":{"queue":0,"kv_cache":0,"prefix":0}}]}"#,
                "pools[0].weights",
            ),
            (
                r#"{"pools":[{"name":"p","models":["a"],"endpoints":["1.2.3.4:5"],"refresh_ms":100,"stale_after_ms":100}]}"#,
                "pools[0].stale_after_ms",
            ),
            (
                r#"{"pools":[{"name":"p","models":["a"],"endpoints":["1.2.3.4:5"],"prefix":{"block_bytes":4}}]}"#,
                "pools[0].prefix.block_bytes",
            ),
            (
                r#"{"picker":{"destination_header":"X-Dest"}}"#,
                "picker.destination_header",
            ),
            (
                r#"{"picker":{"destination_header":"x-ai-eg-model"}}"#,
                "picker.destination_header",
            ),
            (
                r#"{"picker":{"shedding":{"sheddable_objectives":[]}}}"#,
                "picker.shedding.sheddable_objectives",
            ),
            (
                r#"{"picker":{"shedding":{"sheddable_objectives":["b"],"kv_cache_threshold":1.5}}}"#,
                "picker.shedding.kv_cache_threshold",
            ),
        ];
        for (config, field) in cases {
            let error = error(config);
            assert_eq!(error.field.as_deref(), Some(field), "{config}");
            assert!(error.to_string().contains(&format!("field `{field}`")));
        }
    }

    #[test]
    fn a_pool_needs_only_its_name_models_and_endpoints() {
        let settings = Settings::parse(
            br#"{"pools":[{"name":"llama","models":["m"],"endpoints":["127.0.0.1:8000"]}]}"#,
        )
        .unwrap();
        let pool = &settings.pools[0];
        assert_eq!(pool.metrics_path, "/metrics");
        assert_eq!(pool.queue_metric.to_string(), "vllm:num_requests_waiting");
        assert_eq!(pool.kv_cache_metric.to_string(), "vllm:kv_cache_usage_perc");
        assert_eq!(
            pool.weights,
            Weights {
                queue: 2,
                kv_cache: 2,
                prefix: 3
            }
        );
        assert_eq!((pool.refresh_ms, pool.stale_after_ms), (50, 1000));
        assert_eq!(
            pool.prefix,
            PrefixConfig {
                block_bytes: 64,
                max_blocks: 256,
                lru_capacity: 31_250
            }
        );
        assert_eq!(settings.picker, PickerConfig::default());
        assert_eq!(
            settings.picker.destination_header,
            "x-gateway-destination-endpoint"
        );
        assert!(error(
            r#"{"pools":[{"name":"p","models":["m"],"endpoints":["1.2.3.4:5"],"weight":{}}]}"#
        )
        .reason
        .contains("unknown field `weight`"));
    }

    #[test]
    fn backends_answering_with_an_upstream_name_keep_their_own_label() {
        let settings = Settings::parse(
            br#"{"models":[{"name":"qwen","upstream_name":"Qwen/Qwen2.5-7B-Instruct"},
                           {"name":"llama"},{"name":"llama-2","upstream_name":"llama"}]}"#,
        )
        .unwrap();
        let labels = settings.model_labels();
        let qwen = labels.label(b"qwen");
        let served = labels.label(b"Qwen/Qwen2.5-7B-Instruct");
        assert!(qwen != 0 && served != 0 && qwen != served);
        // An upstream name that is another model's name is one label, not two.
        assert_eq!(labels.label(b"llama"), 3);
        assert_eq!(labels.label(b"llama-2"), 4);
        assert_eq!(labels.label(b"mistral"), 0);
    }

    #[test]
    fn paths_match_exactly_with_the_query_ignored() {
        let settings = Settings::default();
        assert!(settings.scans_path(b"/v1/chat/completions"));
        assert!(settings.scans_path(b"/v1/chat/completions?api-version=1"));
        assert!(!settings.scans_path(b"/v1/chat/completions/"));
        assert!(!settings.scans_path(b"/v1/chat"));
        assert!(!settings.scans_path(b"/v1/models"));
        assert!(!settings.scans_path(b"/V1/CHAT/COMPLETIONS"));
    }
}
