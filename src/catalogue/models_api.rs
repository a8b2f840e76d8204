//! `GET /v1/models` and `GET /v1/models/{id}` answered from the catalogue, in OpenAI's format.
//!
//! The list names each model once, by its name (aliases are accepted in requests but not
//! listed: they are other spellings of a listed model, often retired ones). `{id}` is the rest
//! of the path, query string dropped, percent-decoded once (`%2F` is `/`, `%3A` is `:`, `+`
//! stays `+`); it may be a name or an alias, and an alias answers its model's entry. An id
//! that names no model, or whose escapes are invalid, gets 404 `model_not_found`. `created`
//! is the entry's configured Unix time (0 when not configured): a catalogue has no truer one.

use super::Catalogue;
use crate::config::ModelEntry;
use crate::reply::{JsonWriter, LocalReply};
use crate::request::Rejection;

pub const MODELS_PATH: &str = "/v1/models";

/// What a request for the model list asks, if it asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelsRequest {
    List,
    /// One model, by the id in the path, decoded (`None`: undecodable).
    Retrieve(Option<Vec<u8>>),
}

impl ModelsRequest {
    /// Reads a request's `:method` and `:path`: `None` unless it is a GET (or HEAD) of the
    /// list or of one model.
    pub fn of(method: &[u8], path: &[u8]) -> Option<Self> {
        if method != b"GET" && method != b"HEAD" {
            return None;
        }
        let path = path.split(|&b| b == b'?').next().unwrap_or_default();
        let rest = path.strip_prefix(MODELS_PATH.as_bytes())?;
        if rest.is_empty() {
            return Some(Self::List);
        }
        let id = rest.strip_prefix(b"/")?;
        Some(Self::Retrieve(percent_decode(id)))
    }

    /// The reply from `catalogue`.
    pub fn answer(&self, catalogue: &Catalogue) -> LocalReply {
        match self {
            Self::List => {
                let mut body = JsonWriter::new();
                body.raw("{\"object\":\"list\",\"data\":[");
                for (at, model) in catalogue.models().iter().enumerate() {
                    if at > 0 {
                        body.raw(",");
                    }
                    write_model(&mut body, model);
                }
                body.raw("]}");
                ok(body)
            }
            Self::Retrieve(id) => match id.as_deref().and_then(|id| catalogue.lookup(id)) {
                Some(model) => {
                    let mut body = JsonWriter::new();
                    write_model(&mut body, model);
                    ok(body)
                }
                None => Rejection::ModelNotFound {
                    model: id.clone().unwrap_or_default(),
                }
                .local_reply(),
            },
        }
    }
}

fn ok(body: JsonWriter) -> LocalReply {
    LocalReply {
        status: 200,
        detail: "model_router_models".into(),
        content_type: "application/json",
        body: body.finish(),
    }
}

/// One OpenAI model object.
fn write_model(body: &mut JsonWriter, model: &ModelEntry) {
    body.raw("{\"id\":");
    body.string(&model.name);
    body.raw(",\"object\":\"model\",\"created\":");
    body.number(model.created);
    body.raw(",\"owned_by\":");
    body.string(&model.owned_by);
    body.raw("}");
}

/// Decodes every `%XX`; `None` when an escape is not two hex digits.
fn percent_decode(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.iter();
    while let Some(&byte) = bytes.next() {
        if byte != b'%' {
            out.push(byte);
            continue;
        }
        let hex = |b: Option<&u8>| char::from(*b?).to_digit(16);
        let (high, low) = (hex(bytes.next())?, hex(bytes.next())?);
        out.push((high * 16 + low) as u8);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::collections::BTreeMap;

    fn catalogue() -> Catalogue {
        let model = |name: &str, aliases: &[&str], owned_by: &str, created| ModelEntry {
            name: name.into(),
            aliases: aliases.iter().map(|a| (*a).into()).collect(),
            upstream_name: None,
            headers: BTreeMap::new(),
            owned_by: owned_by.into(),
            created,
        };
        Catalogue::new(
            vec![
                model(
                    "meta-llama/Llama-3.1-8B-Instruct",
                    &["gpt-4o"],
                    "vllm",
                    1_721_000_000,
                ),
                model("mistral:latest", &[], "model-router", 0),
                model("a+b %", &[], "x\"y", 0),
            ],
            256,
            "x-ai-eg-model",
        )
        .unwrap()
    }

    fn body(reply: &LocalReply) -> Value {
        serde_json::from_str(&reply.body).unwrap()
    }

    #[test]
    fn only_gets_of_the_list_or_one_model_are_answered() {
        let of = |method: &str, path: &str| ModelsRequest::of(method.as_bytes(), path.as_bytes());
        assert_eq!(of("GET", "/v1/models"), Some(ModelsRequest::List));
        assert_eq!(of("HEAD", "/v1/models?limit=2"), Some(ModelsRequest::List));
        assert_eq!(
            of("GET", "/v1/models/a/b:c"),
            Some(ModelsRequest::Retrieve(Some(b"a/b:c".to_vec())))
        );
        assert_eq!(of("POST", "/v1/models"), None);
        assert_eq!(of("GET", "/v1/modelsx"), None);
        assert_eq!(of("GET", "/v1/model"), None);
        assert_eq!(of("GET", "/v2/models"), None);
    }

    #[test]
    fn the_list_has_the_openai_shape_without_aliases() {
        let reply = ModelsRequest::List.answer(&catalogue());
        assert_eq!(reply.status, 200);
        assert_eq!(reply.content_type, "application/json");
        assert_eq!(
            body(&reply),
            json!({"object": "list", "data": [
                {"id": "meta-llama/Llama-3.1-8B-Instruct", "object": "model", "created": 1_721_000_000, "owned_by": "vllm"},
                {"id": "mistral:latest", "object": "model", "created": 0, "owned_by": "model-router"},
                {"id": "a+b %", "object": "model", "created": 0, "owned_by": "x\"y"},
            ]})
        );
        let empty = ModelsRequest::List.answer(&Catalogue::default());
        assert_eq!(body(&empty), json!({"object": "list", "data": []}));
    }

    #[test]
    fn one_model_by_name_alias_or_percent_encoded_id() {
        let catalogue = catalogue();
        let retrieve = |path: &str| {
            ModelsRequest::of(b"GET", path.as_bytes())
                .unwrap()
                .answer(&catalogue)
        };
        for path in [
            "/v1/models/meta-llama/Llama-3.1-8B-Instruct",
            "/v1/models/meta-llama%2FLlama-3.1-8B-Instruct",
            "/v1/models/meta-llama%2fLlama-3.1-8B-Instruct?x=1",
            "/v1/models/gpt-4o",
        ] {
            let reply = retrieve(path);
            assert_eq!(reply.status, 200, "{path}");
            assert_eq!(body(&reply)["id"], "meta-llama/Llama-3.1-8B-Instruct");
            assert_eq!(body(&reply)["object"], "model");
        }
        assert_eq!(
            body(&retrieve("/v1/models/mistral%3Alatest"))["id"],
            "mistral:latest"
        );
        assert_eq!(body(&retrieve("/v1/models/a+b%20%25"))["id"], "a+b %");
        for path in [
            "/v1/models/",
            "/v1/models/gpt-5",
            "/v1/models/mistral%3",
            "/v1/models/mistral%zzlatest",
            "/v1/models/GPT-4o",
        ] {
            let reply = retrieve(path);
            assert_eq!(reply.status, 404, "{path}");
            assert_eq!(reply.detail, "model_router_model_not_found");
            assert_eq!(body(&reply)["error"]["code"], "model_not_found");
        }
        assert!(body(&retrieve("/v1/models/gpt-5"))["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gpt-5"));
    }
}
