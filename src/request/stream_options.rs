//! Asking a streaming backend for its usage: `stream_options.include_usage` added to a
//! streaming chat or completions request that does not say, as one edit of the body's prefix.
//!
//! Envoy's proxy-wasm host can only replace a prefix of the buffered body (drain `n` bytes,
//! prepend new ones) or append to it, so the key goes right after the top-level `{`: the
//! bytes up to and including it are drained and `{"stream_options":{"include_usage":true},`
//! is prepended. The body is otherwise left where it is, in Envoy's buffer. A body that already
//! has a `stream_options` key, whatever it says, is never touched: a second key would be a
//! duplicate that backends may read either way.

use super::json::StreamShape;

/// The prefix that replaces everything up to and including the top-level `{`. A streaming
/// body has a `stream` key, so a comma always follows.
pub const INCLUDE_USAGE_PREFIX: &[u8] = br#"{"stream_options":{"include_usage":true},"#;

/// An edit of a body's prefix, in the form Envoy's buffer takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixEdit {
    /// Bytes to drain from the front of the body.
    pub drain: usize,
    /// Bytes to put in their place.
    pub prefix: &'static [u8],
    /// The body's length after the edit, for `content-length`.
    pub new_length: u64,
}

/// The edit that adds `include_usage` to a `body_length`-byte body of this shape, if it
/// streams and has no `stream_options`.
pub fn include_usage_edit(shape: StreamShape, body_length: u64) -> Option<PrefixEdit> {
    if !shape.stream || shape.stream_options {
        return None;
    }
    let drain = shape.object_start.checked_add(1)?;
    Some(PrefixEdit {
        drain: usize::try_from(drain).ok()?,
        prefix: INCLUDE_USAGE_PREFIX,
        new_length: body_length - drain + INCLUDE_USAGE_PREFIX.len() as u64,
    })
}

/// `body` with the edit applied, as Envoy's buffer holds it afterwards (for tests).
pub fn apply(edit: &PrefixEdit, body: &[u8]) -> Vec<u8> {
    let mut edited = edit.prefix.to_vec();
    edited.extend_from_slice(&body[edit.drain..]);
    edited
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::json::ModelScanner;
    use serde_json::Value;

    fn shape(body: &[u8]) -> StreamShape {
        let mut scanner = ModelScanner::new(256);
        scanner.feed(body).unwrap();
        let shape = scanner.stream_shape();
        scanner.finish().unwrap();
        shape
    }

    fn edited(body: &str) -> Option<Value> {
        let edit = include_usage_edit(shape(body.as_bytes()), body.len() as u64)?;
        let bytes = apply(&edit, body.as_bytes());
        assert_eq!(bytes.len() as u64, edit.new_length);
        Some(serde_json::from_slice(&bytes).expect("the edited body is JSON"))
    }

    #[test]
    fn streaming_requests_without_stream_options_gain_include_usage() {
        let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let value = edited(body).unwrap();
        assert_eq!(value["stream_options"]["include_usage"], true);
        assert_eq!(value["model"], "m");
        assert_eq!(value["messages"][0]["content"], "hi");
        // Whitespace before the object is drained with it.
        let value = edited(" \n\t{ \"stream\" : true }").unwrap();
        assert_eq!(value["stream_options"]["include_usage"], true);
    }

    #[test]
    fn other_requests_are_left_alone() {
        for body in [
            r#"{"model":"m"}"#,
            r#"{"model":"m","stream":false}"#,
            r#"{"model":"m","stream":"true"}"#,
            r#"{"model":"m","stream":null}"#,
            r#"{"model":"m","stream":true,"stream_options":null}"#,
            r#"{"model":"m","stream_options":{"include_usage":false},"stream":true}"#,
            r#"{"model":"m","stream_option\u0073":{},"stream":true}"#,
            r#"{"model":"m","metadata":{"stream":true}}"#,
            r#"{"model":"m","stream":true,"stream":false}"#,
        ] {
            assert_eq!(edited(body), None, "{body}");
        }
        // The last `stream` wins, as in the backends' JSON readers.
        assert!(edited(r#"{"stream":false,"model":"m","stream":true}"#).is_some());
        // Keys that only start like `stream` are other keys.
        assert!(edited(r#"{"streams":1,"stream_optionsx":1,"stream":true}"#).is_some());
    }

    #[test]
    fn the_shape_survives_any_chunking() {
        let body = br#"  {"stream_options":1,"model":"m","stream":true}"#;
        let whole = shape(body);
        assert_eq!(
            whole,
            StreamShape {
                object_start: 2,
                stream: true,
                stream_options: true
            }
        );
        for cut in 0..body.len() {
            let mut scanner = ModelScanner::new(256);
            scanner.feed(&body[..cut]).unwrap();
            scanner.feed(&body[cut..]).unwrap();
            assert_eq!(scanner.stream_shape(), whole, "cut at {cut}");
        }
    }
}
