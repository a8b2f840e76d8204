//! Metric labels: which model names may become a label value, and the Envoy stat names that
//! carry the labels.
//!
//! Envoy stats have no labels, only names; `stats_config.stats_tags` regexes cut tags out of
//! the names, and Prometheus shows them as labels. So each labelled stat is named
//! `model_router.<metric>.<label>=<value>...`, the value written as it is (dots, slashes and
//! colons included), and each tag is cut out by one regex of this shape:
//!
//! ```text
//! (\.gen_ai_request_model=([^=]*?))(?:\.[a-z_]+=|$)
//! ```
//!
//! It ends a value at the next `.<label>=` or at the end of the name, which is unambiguous
//! as long as no value holds `=`: label values are the configured model names (validated by
//! [`check_label`]) and fixed words. Any other model is `other`, so the number of label values
//! is bounded by the configuration.
//!
//! Without a configured list, a model becomes a label value once a backend has answered it
//! with a 2xx (so names a client invents never do), up to [`LEARNED_LABELS`] names per Envoy
//! worker; later names are `other`.

use std::fmt::Write;

/// The label value of every model that is not one of the label names.
pub const OTHER: &str = "other";
/// Most model names learned per worker when no list is configured.
pub const LEARNED_LABELS: usize = 16;
/// Longest model name usable as a label value.
pub const MAX_LABEL_BYTES: usize = 256;

/// The label names of the stats, as `stats_tags` names them (`tag_name` = the Prometheus
/// label).
/// `pool` and `endpoint` label the endpoint picker's stats (`src/filter/picking.rs`): pool
/// names are checked like model names, endpoints are `ip:port`.
pub const TAGS: [&str; 7] = [
    "gen_ai_operation_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
    "gen_ai_token_type",
    "status_class",
    "pool",
    "endpoint",
];

/// The `stats_tags` regex that cuts `tag` out of a stat name (see the module docs).
pub fn tag_regex(tag: &str) -> String {
    format!(r"(\.{tag}=([^=]*?))(?:\.[a-z_]+=|$)")
}

/// Why a name cannot be a label value, if it cannot.
pub fn check_label(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > MAX_LABEL_BYTES {
        return Err(format!("is longer than {MAX_LABEL_BYTES} bytes"));
    }
    if name == OTHER {
        return Err(format!("{OTHER:?} is the label of every other model"));
    }
    if let Some(bad) = name.chars().find(|c| c.is_control() || *c == '=') {
        return Err(format!("holds {bad:?}, which a metric name cannot carry"));
    }
    if name.starts_with(['.', ' ']) || name.ends_with(['.', ' ']) || name.contains("..") {
        return Err(
            "starts or ends with a dot or a space, or holds \"..\", which a metric name cannot carry"
                .into(),
        );
    }
    Ok(())
}

/// A label value: 0 is [`OTHER`], then the names in order.
pub type LabelId = u16;

/// The model names that are label values. See the module docs.
#[derive(Debug, Clone)]
pub struct ModelLabels {
    names: Vec<String>,
    /// Names are learned from answers (no configured list).
    learning: bool,
}

impl ModelLabels {
    /// The configured names, each checked with [`check_label`] beforehand.
    pub fn configured(names: impl IntoIterator<Item = String>) -> Self {
        Self {
            names: names.into_iter().collect(),
            learning: false,
        }
    }

    /// No list: names are learned from 2xx answers.
    pub fn learning() -> Self {
        Self {
            names: Vec::new(),
            learning: true,
        }
    }

    /// The label of `model`.
    pub fn label(&self, model: &[u8]) -> LabelId {
        self.names
            .iter()
            .position(|name| name.as_bytes() == model)
            .map_or(0, |index| index as LabelId + 1)
    }

    /// The label of `model`, which a backend has just answered with a 2xx: learned if names
    /// are learned, there is room, and it can be a label value.
    pub fn learn(&mut self, model: &[u8]) -> LabelId {
        let label = self.label(model);
        if label != 0 || !self.learning || self.names.len() == LEARNED_LABELS {
            return label;
        }
        match std::str::from_utf8(model) {
            Ok(name) if check_label(name).is_ok() => {
                self.names.push(name.to_owned());
                self.names.len() as LabelId
            }
            _ => 0,
        }
    }

    /// The label value of `label`.
    pub fn name(&self, label: LabelId) -> &str {
        match label {
            0 => OTHER,
            n => &self.names[usize::from(n) - 1],
        }
    }
}

/// Builds a labelled stat name: `model_router.<metric>.<tag>=<value>...`.
pub fn stat_name(metric: &str, labels: &[(&str, &str)]) -> String {
    let mut name = format!("model_router.{metric}");
    for (tag, value) in labels {
        let _ = write!(name, ".{tag}={value}");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    /// What Envoy does with `stats_tags`: each regex's first group is cut out of the name,
    /// its second is the tag's value.
    fn extract(name: &str) -> (String, Vec<(String, String)>) {
        let mut cut = vec![false; name.len()];
        let mut tags = Vec::new();
        for tag in TAGS {
            let regex = Regex::new(&tag_regex(tag)).unwrap();
            if let Some(captures) = regex.captures(name) {
                let whole = captures.get(1).unwrap();
                cut[whole.start()..whole.end()]
                    .iter_mut()
                    .for_each(|c| *c = true);
                tags.push((tag.to_owned(), captures[2].to_owned()));
            }
        }
        let rest = name
            .char_indices()
            .filter(|(i, _)| !cut[*i])
            .map(|(_, c)| c)
            .collect();
        (rest, tags)
    }

    #[test]
    fn every_label_comes_back_out_of_the_stat_name() {
        for model in [
            "meta-llama/Llama-3.1-8B-Instruct",
            "mistral:latest",
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
            "a.type",
            "x.status_class",
            "模型-é",
            OTHER,
        ] {
            let name = stat_name(
                "gen_ai.client.token.usage",
                &[
                    ("gen_ai_operation_name", "chat"),
                    ("gen_ai_request_model", model),
                    ("gen_ai_response_model", model),
                    ("gen_ai_token_type", "input"),
                ],
            );
            let (rest, tags) = extract(&name);
            assert_eq!(rest, "model_router.gen_ai.client.token.usage", "{name}");
            assert_eq!(
                tags,
                [
                    ("gen_ai_operation_name".to_owned(), "chat".to_owned()),
                    ("gen_ai_request_model".to_owned(), model.to_owned()),
                    ("gen_ai_response_model".to_owned(), model.to_owned()),
                    ("gen_ai_token_type".to_owned(), "input".to_owned()),
                ],
                "{name}"
            );
            // The model as the last label too.
            let name = stat_name("d", &[("gen_ai_request_model", model)]);
            assert_eq!(extract(&name).1[0].1, model);
        }
    }

    #[test]
    fn label_values_must_survive_a_stat_name() {
        assert!(check_label("meta-llama/Llama-3.1-8B-Instruct").is_ok());
        assert!(check_label("mistral:latest").is_ok());
        for bad in ["", "other", "a=b", "a\nb", ".a", "a.", "a..b", " a", "a "] {
            assert!(check_label(bad).is_err(), "{bad:?}");
        }
        assert!(check_label(&"x".repeat(MAX_LABEL_BYTES + 1)).is_err());
    }

    #[test]
    fn configured_names_are_the_only_labels() {
        let mut labels = ModelLabels::configured(["a".to_owned(), "b/c".to_owned()]);
        assert_eq!(labels.label(b"b/c"), 2);
        assert_eq!(labels.learn(b"d"), 0);
        assert_eq!(labels.name(0), OTHER);
        assert_eq!(labels.name(1), "a");
    }

    #[test]
    fn without_a_list_names_are_learned_up_to_a_bound() {
        let mut labels = ModelLabels::learning();
        assert_eq!(labels.label(b"m"), 0);
        assert_eq!(labels.learn(b"m"), 1);
        assert_eq!(labels.learn(b"m"), 1);
        assert_eq!(labels.learn(b"a=b"), 0);
        assert_eq!(labels.learn(b"\xff"), 0);
        for i in 1..LEARNED_LABELS {
            assert_eq!(labels.learn(format!("m{i}").as_bytes()), i as LabelId + 1);
        }
        assert_eq!(labels.learn(b"one too many"), 0);
        assert_eq!(labels.label(b"m3"), 4);
    }
}
