//! Bad answers on request, for the tests of what the gateway does with them: a test sends
//! the [`crate::FAULT_HEADER`] header with one of these names.

use serde_json::Value;

/// A fault a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// `reset`: the connection closes without an answer once the request is in.
    Reset,
    /// `not-json`: a 200 `application/json` answer whose body is HTML.
    NotJson,
    /// `error-500`: a 500 with an OpenAI-style JSON error.
    Error500,
    /// `usage-wrong-type`: every token count is a string.
    UsageWrongType,
    /// `usage-absurd`: every token count is 10^15.
    UsageAbsurd,
    /// `cut-stream`: a stream ends cleanly in the middle of its third event.
    CutStream,
    /// `reset-stream`: a stream's connection is reset in the middle of its third event.
    ResetStream,
}

/// The body of [`Fault::NotJson`].
pub const NOT_JSON_BODY: &str = "<html><body><h1>502 Bad Gateway</h1></body></html>\n";
/// The token count [`Fault::UsageAbsurd`] reports.
pub const ABSURD_TOKENS: u64 = 1_000_000_000_000_000;

impl Fault {
    pub fn from_header(value: Option<&str>) -> Self {
        match value {
            Some("reset") => Self::Reset,
            Some("not-json") => Self::NotJson,
            Some("error-500") => Self::Error500,
            Some("usage-wrong-type") => Self::UsageWrongType,
            Some("usage-absurd") => Self::UsageAbsurd,
            Some("cut-stream") => Self::CutStream,
            Some("reset-stream") => Self::ResetStream,
            _ => Self::None,
        }
    }

    /// A usage object as this fault reports it: every number inside replaced.
    pub fn usage(self, mut usage: Value) -> Value {
        fn mangle(value: &mut Value, fault: Fault) {
            match value {
                Value::Number(number) => {
                    *value = match fault {
                        Fault::UsageWrongType => Value::String(number.to_string()),
                        _ => Value::from(ABSURD_TOKENS),
                    }
                }
                Value::Object(fields) => fields.values_mut().for_each(|v| mangle(v, fault)),
                _ => {}
            }
        }
        if matches!(self, Self::UsageWrongType | Self::UsageAbsurd) {
            mangle(&mut usage, self);
        }
        usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_faults_replace_every_count() {
        let usage = json!({"prompt_tokens": 3, "prompt_tokens_details": {"cached_tokens": 1}});
        assert_eq!(
            Fault::UsageWrongType.usage(usage.clone()),
            json!({"prompt_tokens": "3", "prompt_tokens_details": {"cached_tokens": "1"}})
        );
        assert_eq!(
            Fault::UsageAbsurd.usage(usage.clone())["prompt_tokens"],
            ABSURD_TOKENS
        );
        assert_eq!(Fault::None.usage(usage.clone()), usage);
        assert_eq!(Fault::from_header(Some("cut-stream")), Fault::CutStream);
        assert_eq!(Fault::from_header(Some("nonsense")), Fault::None);
    }
}
