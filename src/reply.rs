//! Replies the filter sends in place of a backend's: one type for every local reply, the error
//! codes that name them (and the counters and response-code details derived from the codes),
//! and the small JSON writer that builds their bodies.

use std::fmt::Write;

/// A reply Envoy sends instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    /// Envoy response-code detail (`%RESPONSE_CODE_DETAILS%`): no whitespace, as Envoy requires.
    pub detail: String,
    pub content_type: &'static str,
    pub body: String,
}

/// The machine-readable name of every error the filter answers itself: the error body's
/// `code`, the suffix of the response-code detail `model_router_<code>` and of the counter
/// `model_router.requests_rejected_<code>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    MalformedJson,
    MalformedMultipart,
    NotAnObject,
    MissingModel,
    DuplicateModel,
    ModelNotString,
    EmptyModel,
    ModelTooLong,
    InvalidModel,
    ModelNotFound,
    BodyTooLarge,
    UnsupportedEncoding,
    RewriteFailed,
    PoolSaturated,
}

impl ErrorCode {
    /// Every code, in declaration order: `ALL[code.index()] == code`.
    pub const ALL: [Self; 14] = [
        Self::MalformedJson,
        Self::MalformedMultipart,
        Self::NotAnObject,
        Self::MissingModel,
        Self::DuplicateModel,
        Self::ModelNotString,
        Self::EmptyModel,
        Self::ModelTooLong,
        Self::InvalidModel,
        Self::ModelNotFound,
        Self::BodyTooLarge,
        Self::UnsupportedEncoding,
        Self::RewriteFailed,
        Self::PoolSaturated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::MalformedMultipart => "malformed_multipart",
            Self::NotAnObject => "not_an_object",
            Self::MissingModel => "missing_model",
            Self::DuplicateModel => "duplicate_model",
            Self::ModelNotString => "model_not_string",
            Self::EmptyModel => "empty_model",
            Self::ModelTooLong => "model_too_long",
            Self::InvalidModel => "invalid_model",
            Self::ModelNotFound => "model_not_found",
            Self::BodyTooLarge => "body_too_large",
            Self::UnsupportedEncoding => "unsupported_encoding",
            Self::RewriteFailed => "rewrite_failed",
            Self::PoolSaturated => "pool_saturated",
        }
    }

    /// Position in [`ErrorCode::ALL`], for per-code tables such as counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The OpenAI error `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// The client's request is at fault (4xx).
    InvalidRequest,
    /// The gateway failed (5xx).
    Server,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request_error",
            Self::Server => "server_error",
        }
    }
}

/// What an OpenAI-style error reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply<'a> {
    pub status: u32,
    pub code: ErrorCode,
    pub error_type: ErrorType,
    pub message: &'a str,
    /// The request field at fault, when there is one.
    pub param: Option<&'a str>,
}

impl ErrorReply<'_> {
    /// `{"error":{"message","type","param","code"}}` with the detail `model_router_<code>`.
    pub fn to_local_reply(&self) -> LocalReply {
        let mut body = JsonWriter::new();
        body.raw("{\"error\":{\"message\":");
        body.string(self.message);
        body.raw(",\"type\":");
        body.string(self.error_type.as_str());
        body.raw(",\"param\":");
        match self.param {
            Some(param) => body.string(param),
            None => body.raw("null"),
        }
        body.raw(",\"code\":");
        body.string(self.code.as_str());
        body.raw("}}");
        LocalReply {
            status: self.status,
            detail: format!("model_router_{}", self.code.as_str()),
            content_type: "application/json",
            body: body.finish(),
        }
    }
}

/// Builds JSON text by appending: structure is written raw, strings are escaped.
#[derive(Debug, Default)]
pub struct JsonWriter(String);

impl JsonWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends JSON structure or a literal as it is.
    pub fn raw(&mut self, text: &str) {
        self.0.push_str(text);
    }

    /// Appends `text` as a JSON string, quoted and escaped.
    pub fn string(&mut self, text: &str) {
        self.0.push('"');
        for ch in text.chars() {
            match ch {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                c if c < ' ' || c == '\u{7f}' => {
                    let _ = write!(self.0, "\\u{:04x}", u32::from(c));
                }
                c => self.0.push(c),
            }
        }
        self.0.push('"');
    }

    /// Appends an unsigned integer.
    pub fn number(&mut self, value: u64) {
        let _ = write!(self.0, "{value}");
    }

    pub fn finish(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_listed_in_index_order_with_distinct_names() {
        for (index, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.index(), index);
        }
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn strings_are_escaped_into_valid_json() {
        let text = "quote \" backslash \\ newline \n nul \0 del \u{7f} é 模型";
        let mut writer = JsonWriter::new();
        writer.string(text);
        let json = writer.finish();
        assert_eq!(serde_json::from_str::<String>(&json).unwrap(), text);
        assert!(!json.contains('\n') && !json.contains('\0'));
    }

    #[test]
    fn error_replies_have_the_openai_shape() {
        let reply = ErrorReply {
            status: 400,
            code: ErrorCode::DuplicateModel,
            error_type: ErrorType::InvalidRequest,
            message: "two \"model\" keys",
            param: Some("model"),
        }
        .to_local_reply();
        assert_eq!(reply.status, 400);
        assert_eq!(reply.detail, "model_router_duplicate_model");
        assert_eq!(reply.content_type, "application/json");
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {
                "message": "two \"model\" keys",
                "type": "invalid_request_error",
                "param": "model",
                "code": "duplicate_model",
            }})
        );
        let no_param = ErrorReply {
            status: 415,
            code: ErrorCode::UnsupportedEncoding,
            error_type: ErrorType::InvalidRequest,
            message: "m",
            param: None,
        }
        .to_local_reply();
        let body: serde_json::Value = serde_json::from_str(&no_param.body).unwrap();
        assert!(body["error"]["param"].is_null());
    }
}
