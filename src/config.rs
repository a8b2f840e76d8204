//! Plugin configuration: the JSON an operator writes, validated once into [`Settings`].
//!
//! An empty configuration means every default. Unknown fields and bad values are refused
//! with an error that names the field, so a bad configuration never loads.

use crate::response::labels::{check_label, ModelLabels};
use crate::response::StateKeys;
use serde::Deserialize;
use std::fmt;

/// Header set from the body, the one Envoy AI Gateway's route rules match on.
pub const DEFAULT_HEADER: &str = "x-ai-eg-model";
/// The OpenAI- and Anthropic-style APIs whose bodies name a model.
pub const DEFAULT_PATHS: [&str; 5] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
];
pub const DEFAULT_MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;
pub const DEFAULT_MAX_MODEL_BYTES: usize = 256;
/// Longest model name that may be configured; Envoy's header size limits are far above it.
pub const MAX_MODEL_BYTES_LIMIT: usize = 4096;
/// Largest body limit that may be configured: Envoy must buffer the whole body.
pub const MAX_BODY_BYTES_LIMIT: u64 = 1 << 30;
/// Most models that may be listed: each is a metric label value, so a bound on the series.
pub const MAX_MODELS: usize = 256;

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
    response: Option<ResponseSettings>,
}

/// One model the gateway serves. For now only its name: the metric label it gets.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub name: String,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub header: String,
    pub paths: Vec<String>,
    pub max_body_bytes: u64,
    pub max_model_bytes: usize,
    pub missing_model: MissingModel,
    /// The models served, by name; empty when none is listed.
    pub models: Vec<ModelEntry>,
    pub response: ResponseSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            header: DEFAULT_HEADER.to_owned(),
            paths: DEFAULT_PATHS.iter().map(|p| (*p).to_owned()).collect(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_model_bytes: DEFAULT_MAX_MODEL_BYTES,
            missing_model: MissingModel::Reject,
            models: Vec::new(),
            response: ResponseSettings::default(),
        }
    }
}

/// A configuration that cannot load, with the field at fault where there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: Option<&'static str>,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
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

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: Some(field),
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
        let settings = Self {
            header: raw.header.unwrap_or(defaults.header),
            paths: raw.paths.unwrap_or(defaults.paths),
            max_body_bytes: raw.max_body_bytes.unwrap_or(defaults.max_body_bytes),
            max_model_bytes: raw.max_model_bytes.unwrap_or(defaults.max_model_bytes),
            missing_model: raw.missing_model.unwrap_or(defaults.missing_model),
            models: raw.models.unwrap_or(defaults.models),
            response: raw.response.unwrap_or(defaults.response),
        };
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.header.is_empty() {
            return Err(invalid("header", "must not be empty"));
        }
        if let Some(bad) = self
            .header
            .bytes()
            .find(|&b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)))
        {
            return Err(invalid(
                "header",
                format!(
                    "{:?} must be a lowercase header name (a-z, 0-9, '-', '_', '.'), found {:?}",
                    self.header,
                    char::from(bad)
                ),
            ));
        }
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
        if self.models.len() > MAX_MODELS {
            return Err(invalid(
                "models",
                format!("lists {} models, at most {MAX_MODELS}", self.models.len()),
            ));
        }
        for (index, model) in self.models.iter().enumerate() {
            check_label(&model.name).map_err(|reason| {
                invalid("models", format!("model name {:?} {reason}", model.name))
            })?;
            if model.name.len() > self.max_model_bytes {
                return Err(invalid(
                    "models",
                    format!(
                        "model name {:?} is longer than max_model_bytes ({})",
                        model.name, self.max_model_bytes
                    ),
                ));
            }
            if self.models[..index].iter().any(|m| m.name == model.name) {
                return Err(invalid(
                    "models",
                    format!("model name {:?} is listed twice", model.name),
                ));
            }
        }
        Ok(())
    }

    /// The metric labels of models: the listed names, or learned ones without a list.
    pub fn model_labels(&self) -> ModelLabels {
        if self.models.is_empty() {
            ModelLabels::learning()
        } else {
            ModelLabels::configured(self.models.iter().map(|m| m.name.clone()))
        }
    }

    /// Whether requests to this `:path` (query string ignored) have their body scanned.
    pub fn scans_path(&self, path: &[u8]) -> bool {
        let path = path.split(|&b| b == b'?').next().unwrap_or_default();
        self.paths.iter().any(|p| p.as_bytes() == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(defaults.paths.len(), 5);
        assert_eq!(defaults.max_body_bytes, 8 << 20);
        assert_eq!(defaults.max_model_bytes, 256);
        assert_eq!(defaults.missing_model, MissingModel::Reject);
        assert!(defaults.models.is_empty());
        assert!(defaults.response.usage);
        assert!(!defaults.response.add_include_usage);
        assert!(defaults.response.filter_state.is_empty());
    }

    #[test]
    fn every_field_can_be_set() {
        let settings = Settings::parse(
            br#"{"header":"x-model","paths":["/v2/chat"],"max_body_bytes":1024,
                 "max_model_bytes":64,"missing_model":"pass_through",
                 "models":[{"name":"a/b:c.d"},{"name":"e"}],
                 "response":{"usage":false,"add_include_usage":true,
                             "filter_state":["total_tokens","response_model"]}}"#,
        )
        .unwrap();
        assert_eq!(
            settings,
            Settings {
                header: "x-model".into(),
                paths: vec!["/v2/chat".into()],
                max_body_bytes: 1024,
                max_model_bytes: 64,
                missing_model: MissingModel::PassThrough,
                models: vec![
                    ModelEntry {
                        name: "a/b:c.d".into()
                    },
                    ModelEntry { name: "e".into() }
                ],
                response: ResponseSettings {
                    usage: false,
                    add_include_usage: true,
                    filter_state: [StateKey::TotalTokens, StateKey::ResponseModel]
                        .into_iter()
                        .collect(),
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
        assert!(error(r#"{"models":[{"name":"a","aliases":[]}]}"#)
            .reason
            .contains("unknown field `aliases`"));
        assert!(error(r#"{"models":["a"]}"#).reason.contains("invalid type"));
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
            (r#"{"models":[{"name":""}]}"#, "models"),
            (r#"{"models":[{"name":"other"}]}"#, "models"),
            (r#"{"models":[{"name":"a=b"}]}"#, "models"),
            (r#"{"models":[{"name":"a"},{"name":"a"}]}"#, "models"),
            (
                r#"{"max_model_bytes":3,"models":[{"name":"abcd"}]}"#,
                "models",
            ),
        ];
        for (config, field) in cases {
            let error = error(config);
            assert_eq!(error.field, Some(field), "{config}");
            assert!(error.to_string().contains(&format!("field `{field}`")));
        }
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
