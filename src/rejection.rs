//! Every reason the filter refuses a request, and the one place each maps to its HTTP
//! status, OpenAI-style error body, response-code detail and counter.

use crate::scanner::{ScanError, SyntaxError};
use std::fmt::Write;

/// A request refused before it reaches any backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The body is not valid JSON.
    MalformedJson { offset: u64, kind: SyntaxError },
    /// The body is JSON but not an object.
    NotAnObject,
    /// The object has no top-level `model` and the configuration refuses that.
    MissingModel,
    /// The top-level `model` key appears twice.
    DuplicateModel,
    /// The top-level `model` is not a string.
    ModelNotString,
    /// The model is the empty string.
    EmptyModel,
    /// The model is longer than `max_model_bytes`.
    ModelTooLong { limit: usize },
    /// The model holds bytes a header value cannot carry, or surrounding whitespace.
    InvalidModel,
    /// The body is longer than `max_body_bytes` (declared or received).
    BodyTooLarge { limit: u64 },
    /// The body is compressed; the filter reads only identity bodies.
    UnsupportedEncoding,
}

/// Every rejection's code, in the order of [`Rejection::code`]'s match; used to define one
/// counter per code up front.
pub const CODES: [&str; 10] = [
    "malformed_json",
    "not_an_object",
    "missing_model",
    "duplicate_model",
    "model_not_string",
    "empty_model",
    "model_too_long",
    "invalid_model",
    "body_too_large",
    "unsupported_encoding",
];

/// A local reply ready for the host: status, response-code detail, JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    /// Envoy response-code detail, `model_router_<code>` (no whitespace, as Envoy requires).
    pub detail: String,
    pub body: String,
}

impl From<ScanError> for Rejection {
    fn from(error: ScanError) -> Self {
        match error {
            ScanError::Syntax { offset, kind } => Self::MalformedJson { offset, kind },
            ScanError::NotAnObject => Self::NotAnObject,
            ScanError::DuplicateModel => Self::DuplicateModel,
            ScanError::ModelNotString => Self::ModelNotString,
            ScanError::ModelTooLong { limit } => Self::ModelTooLong { limit },
        }
    }
}

impl Rejection {
    /// Stable machine-readable name: the error body's `code`, the counter and detail suffix.
    pub fn code(&self) -> &'static str {
        CODES[self.index()]
    }

    /// Position of this rejection's code in [`CODES`].
    pub fn index(&self) -> usize {
        match self {
            Self::MalformedJson { .. } => 0,
            Self::NotAnObject => 1,
            Self::MissingModel => 2,
            Self::DuplicateModel => 3,
            Self::ModelNotString => 4,
            Self::EmptyModel => 5,
            Self::ModelTooLong { .. } => 6,
            Self::InvalidModel => 7,
            Self::BodyTooLarge { .. } => 8,
            Self::UnsupportedEncoding => 9,
        }
    }

    pub fn status(&self) -> u32 {
        match self {
            Self::BodyTooLarge { .. } => 413,
            Self::UnsupportedEncoding => 415,
            _ => 400,
        }
    }

    /// The OpenAI error `param`: the field at fault, when there is one.
    fn param(&self) -> Option<&'static str> {
        match self {
            Self::MissingModel
            | Self::DuplicateModel
            | Self::ModelNotString
            | Self::EmptyModel
            | Self::ModelTooLong { .. }
            | Self::InvalidModel => Some("model"),
            _ => None,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::MalformedJson { offset, kind } => {
                format!("The request body is not valid JSON: {kind} at byte {offset}.")
            }
            Self::NotAnObject => "The request body must be a JSON object.".into(),
            Self::MissingModel => "The request body has no top-level 'model' field.".into(),
            Self::DuplicateModel => {
                "The request body has more than one top-level 'model' field.".into()
            }
            Self::ModelNotString => "The 'model' field must be a string.".into(),
            Self::EmptyModel => "The 'model' field must not be empty.".into(),
            Self::ModelTooLong { limit } => {
                format!("The 'model' field is longer than {limit} bytes.")
            }
            Self::InvalidModel => "The 'model' field must not contain control characters \
                                   or start or end with a space."
                .into(),
            Self::BodyTooLarge { limit } => {
                format!("The request body is larger than {limit} bytes.")
            }
            Self::UnsupportedEncoding => "The request body must not be compressed \
                                          (content-encoding must be identity)."
                .into(),
        }
    }

    pub fn error_type(&self) -> &'static str {
        "invalid_request_error"
    }

    /// The reply Envoy sends instead of forwarding the request.
    pub fn local_reply(&self) -> LocalReply {
        let mut body = String::from("{\"error\":{\"message\":");
        push_json_string(&mut body, &self.message());
        body.push_str(",\"type\":");
        push_json_string(&mut body, self.error_type());
        body.push_str(",\"param\":");
        match self.param() {
            Some(param) => push_json_string(&mut body, param),
            None => body.push_str("null"),
        }
        body.push_str(",\"code\":");
        push_json_string(&mut body, self.code());
        body.push_str("}}");
        LocalReply {
            status: self.status(),
            detail: format!("model_router_{}", self.code()),
            body,
        }
    }
}

/// Checks a decoded model name against what a header value can carry unchanged.
pub fn check_model(model: &[u8]) -> Result<(), Rejection> {
    if model.is_empty() {
        return Err(Rejection::EmptyModel);
    }
    let control = |b: &u8| *b < 0x20 || *b == 0x7f;
    if model.iter().any(control) || model.starts_with(b" ") || model.ends_with(b" ") {
        return Err(Rejection::InvalidModel);
    }
    Ok(())
}

fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c < ' ' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Rejection> {
        vec![
            Rejection::MalformedJson {
                offset: 7,
                kind: SyntaxError::Expected("':' after an object key"),
            },
            Rejection::NotAnObject,
            Rejection::MissingModel,
            Rejection::DuplicateModel,
            Rejection::ModelNotString,
            Rejection::EmptyModel,
            Rejection::ModelTooLong { limit: 256 },
            Rejection::InvalidModel,
            Rejection::BodyTooLarge { limit: 1024 },
            Rejection::UnsupportedEncoding,
        ]
    }

    #[test]
    fn every_rejection_has_its_own_code_and_a_valid_openai_error_body() {
        let rejections = all();
        let codes: Vec<_> = rejections.iter().map(Rejection::code).collect();
        assert_eq!(codes, CODES);
        for rejection in rejections {
            let reply = rejection.local_reply();
            let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
            let error = &body["error"];
            assert_eq!(error["message"], rejection.message());
            assert_eq!(error["type"], "invalid_request_error");
            assert_eq!(error["code"], rejection.code());
            assert_eq!(error["param"].as_str(), rejection.param());
            assert_eq!(reply.detail, format!("model_router_{}", rejection.code()));
            assert!(!reply.detail.contains(char::is_whitespace));
        }
    }

    #[test]
    fn statuses_follow_the_reason() {
        assert_eq!(Rejection::BodyTooLarge { limit: 1 }.status(), 413);
        assert_eq!(Rejection::UnsupportedEncoding.status(), 415);
        assert_eq!(Rejection::DuplicateModel.status(), 400);
        assert_eq!(Rejection::NotAnObject.status(), 400);
    }

    #[test]
    fn messages_are_escaped_in_the_body() {
        let reply = Rejection::MalformedJson {
            offset: 3,
            kind: SyntaxError::InvalidUnicodeEscape,
        }
        .local_reply();
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\\u escape"));
    }

    #[test]
    fn model_names_must_fit_a_header_value() {
        assert_eq!(check_model(b"meta-llama/Llama-3.1-8B-Instruct"), Ok(()));
        assert_eq!(check_model("模型 é".as_bytes()), Ok(()));
        assert_eq!(check_model(b""), Err(Rejection::EmptyModel));
        for bad in [&b"a\nb"[..], b"a\r", b"\0", b"a\tb", b"a\x7f", b" a", b"a "] {
            assert_eq!(check_model(bad), Err(Rejection::InvalidModel), "{bad:?}");
        }
    }
}
