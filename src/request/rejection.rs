//! Every reason the filter refuses a request, and the one place each maps to its HTTP
//! status, error code (which names its counter and response-code detail) and message.

use super::json::{ScanError, SyntaxError};
use super::multipart::{Malformed, MultipartError};
use crate::reply::{ErrorCode, ErrorReply, ErrorType, LocalReply};

/// A request refused before it reaches any backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The body is not valid JSON.
    MalformedJson { offset: u64, kind: SyntaxError },
    /// The body is not well-formed `multipart/form-data` (or its content type has no usable
    /// boundary, `offset` 0).
    MalformedMultipart { offset: u64, kind: Malformed },
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
    /// The model is not in the catalogue, which the configuration makes strict.
    ModelNotFound { model: Vec<u8> },
    /// The body is longer than `max_body_bytes` (declared or received).
    BodyTooLarge { limit: u64 },
    /// The body is compressed; the filter reads only identity bodies.
    UnsupportedEncoding,
    /// Envoy gave fewer body bytes than it holds while the model was being rewritten: the
    /// body may be half rewritten and is not forwarded. Not seen with Envoy 1.40.
    RewriteFailed,
    /// The request may be shed (its objective is sheddable) and no endpoint of its pool has
    /// capacity (the endpoint picker's saturation shedding).
    PoolSaturated { pool: String },
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

impl From<MultipartError> for Rejection {
    fn from(error: MultipartError) -> Self {
        match error {
            MultipartError::Malformed { offset, kind } => Self::MalformedMultipart { offset, kind },
            MultipartError::DuplicateModel => Self::DuplicateModel,
            MultipartError::ModelTooLong { limit } => Self::ModelTooLong { limit },
        }
    }
}

impl Rejection {
    /// The error code: the body's `code`, the counter and response-code detail suffix.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::MalformedJson { .. } => ErrorCode::MalformedJson,
            Self::MalformedMultipart { .. } => ErrorCode::MalformedMultipart,
            Self::NotAnObject => ErrorCode::NotAnObject,
            Self::MissingModel => ErrorCode::MissingModel,
            Self::DuplicateModel => ErrorCode::DuplicateModel,
            Self::ModelNotString => ErrorCode::ModelNotString,
            Self::EmptyModel => ErrorCode::EmptyModel,
            Self::ModelTooLong { .. } => ErrorCode::ModelTooLong,
            Self::InvalidModel => ErrorCode::InvalidModel,
            Self::ModelNotFound { .. } => ErrorCode::ModelNotFound,
            Self::BodyTooLarge { .. } => ErrorCode::BodyTooLarge,
            Self::UnsupportedEncoding => ErrorCode::UnsupportedEncoding,
            Self::RewriteFailed => ErrorCode::RewriteFailed,
            Self::PoolSaturated { .. } => ErrorCode::PoolSaturated,
        }
    }

    pub fn status(&self) -> u32 {
        match self {
            Self::ModelNotFound { .. } => 404,
            Self::BodyTooLarge { .. } => 413,
            Self::UnsupportedEncoding => 415,
            Self::RewriteFailed => 500,
            Self::PoolSaturated { .. } => 429,
            _ => 400,
        }
    }

    /// The OpenAI error `type`: the client's fault, but for a failed rewrite or a full pool.
    fn error_type(&self) -> ErrorType {
        match self {
            Self::RewriteFailed | Self::PoolSaturated { .. } => ErrorType::Server,
            _ => ErrorType::InvalidRequest,
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
            | Self::InvalidModel
            | Self::ModelNotFound { .. } => Some("model"),
            _ => None,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::MalformedJson { offset, kind } => {
                format!("The request body is not valid JSON: {kind} at byte {offset}.")
            }
            Self::MalformedMultipart { offset, kind } => format!(
                "The request body is not valid multipart/form-data: {kind} at byte {offset}."
            ),
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
            Self::ModelNotFound { model } => format!(
                "The model `{}` does not exist.",
                String::from_utf8_lossy(model)
            ),
            Self::BodyTooLarge { limit } => {
                format!("The request body is larger than {limit} bytes.")
            }
            Self::UnsupportedEncoding => "The request body must not be compressed \
                                          (content-encoding must be identity)."
                .into(),
            Self::RewriteFailed => "The gateway could not rewrite the request's model.".into(),
            Self::PoolSaturated { pool } => format!(
                "Every replica of pool {pool} is saturated and this request may be shed; \
                 retry later."
            ),
        }
    }

    /// The reply Envoy sends instead of forwarding the request.
    pub fn local_reply(&self) -> LocalReply {
        ErrorReply {
            status: self.status(),
            code: self.code(),
            error_type: self.error_type(),
            message: &self.message(),
            param: self.param(),
        }
        .to_local_reply()
    }
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
            Rejection::MalformedMultipart {
                offset: 3,
                kind: Malformed::LineEnding,
            },
            Rejection::NotAnObject,
            Rejection::MissingModel,
            Rejection::DuplicateModel,
            Rejection::ModelNotString,
            Rejection::EmptyModel,
            Rejection::ModelTooLong { limit: 256 },
            Rejection::InvalidModel,
            Rejection::ModelNotFound {
                model: b"gpt-5".to_vec(),
            },
            Rejection::BodyTooLarge { limit: 1024 },
            Rejection::UnsupportedEncoding,
            Rejection::RewriteFailed,
            Rejection::PoolSaturated { pool: "p".into() },
        ]
    }

    #[test]
    fn every_rejection_has_its_own_code_and_a_valid_openai_error_body() {
        let rejections = all();
        let codes: Vec<_> = rejections.iter().map(Rejection::code).collect();
        assert_eq!(codes, ErrorCode::ALL);
        for rejection in rejections {
            let reply = rejection.local_reply();
            let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
            let error = &body["error"];
            assert_eq!(error["message"], rejection.message());
            assert_eq!(error["type"], rejection.error_type().as_str());
            assert_eq!(error["code"], rejection.code().as_str());
            assert_eq!(error["param"].as_str(), rejection.param());
            assert_eq!(
                reply.detail,
                format!("model_router_{}", rejection.code().as_str())
            );
            assert!(!reply.detail.contains(char::is_whitespace));
        }
    }

    #[test]
    fn statuses_follow_the_reason() {
        assert_eq!(Rejection::BodyTooLarge { limit: 1 }.status(), 413);
        assert_eq!(Rejection::UnsupportedEncoding.status(), 415);
        assert_eq!(Rejection::DuplicateModel.status(), 400);
        assert_eq!(Rejection::NotAnObject.status(), 400);
        assert_eq!(Rejection::RewriteFailed.status(), 500);
        assert_eq!(Rejection::RewriteFailed.error_type(), ErrorType::Server);
        assert_eq!(Rejection::PoolSaturated { pool: "p".into() }.status(), 429);
        let not_found = Rejection::ModelNotFound {
            model: b"gpt-5".to_vec(),
        };
        assert_eq!(not_found.status(), 404);
        assert_eq!(not_found.message(), "The model `gpt-5` does not exist.");
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
}
