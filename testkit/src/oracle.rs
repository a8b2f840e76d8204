//! The scanner's specification, executable: serde_json's reading of a body, stated as what
//! the scanner must report for it (the model, and the prompt template the endpoint picker
//! hashes). Shared by tests/scanner.rs and the fuzz targets.

use model_router::request::json::{ModelScanner, ScanError};
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

pub const MAX_MODEL: usize = 256;
/// The prompt template kept by [`check`]: small, so that generated bodies reach it.
pub const PROMPT_LIMIT: usize = 96;

/// What the scanner should report for a body serde_json accepts, following the scanner's
/// rule that the first problem in byte order decides.
#[derive(Debug, PartialEq, Eq)]
pub enum Expected {
    Model(Option<Vec<u8>>),
    Refused(ScanError),
}

/// serde_json's reading of the top-level object, entry by entry; `None` when serde_json
/// refuses the body or its top level is not an object.
pub fn oracle(body: &[u8]) -> Option<Expected> {
    struct TopLevel;
    impl<'de> Visitor<'de> for TopLevel {
        type Value = Expected;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Expected, A::Error> {
            let mut outcome: Option<Expected> = None;
            while let Some(key) = map.next_key::<String>()? {
                if key != "model" || matches!(outcome, Some(Expected::Refused(_))) {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
                if outcome.is_some() {
                    outcome = Some(Expected::Refused(ScanError::DuplicateModel));
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
                outcome = Some(match map.next_value::<Value>()? {
                    Value::String(model) if model.len() > MAX_MODEL => {
                        Expected::Refused(ScanError::ModelTooLong { limit: MAX_MODEL })
                    }
                    Value::String(model) => Expected::Model(Some(model.into_bytes())),
                    _ => Expected::Refused(ScanError::ModelNotString),
                });
            }
            Ok(outcome.unwrap_or(Expected::Model(None)))
        }
    }
    // The whole body must be valid JSON (lone surrogates included), as the scanner demands.
    serde_json::from_slice::<Value>(body).ok()?.as_object()?;
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let expected = deserializer.deserialize_map(TopLevel).ok()?;
    deserializer.end().ok()?;
    Some(expected)
}

/// The prompt GIE v1.0.2 reads from a body (`ExtractPromptFromRequestBody`), cut to `limit`
/// bytes: with a top-level `messages` key, `<|im_start|>{role}\n{content}<|im_end|>\n` for
/// each message whose role and content are strings (the last of duplicate keys winning, as
/// in serde_json's map and Go's), else the `prompt` string; `None` when neither is usable.
pub fn prompt_oracle(body: &[u8], limit: usize) -> Option<Vec<u8>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    let mut text = match object.get("messages") {
        Some(messages) => {
            let mut text = String::new();
            for message in messages.as_array()? {
                let Some(message) = message.as_object() else {
                    continue;
                };
                if let (Some(Value::String(role)), Some(Value::String(content))) =
                    (message.get("role"), message.get("content"))
                {
                    text.push_str(&format!("<|im_start|>{role}\n{content}<|im_end|>\n"));
                }
            }
            text.into_bytes()
        }
        None => object.get("prompt")?.as_str()?.as_bytes().to_vec(),
    };
    text.truncate(limit);
    Some(text)
}

pub fn scan(chunks: &[&[u8]]) -> Expected {
    scan_with_prompt(chunks, None).0
}

/// Scans `chunks`, building the prompt template when `prompt_limit` is given; the outcome and
/// the template (when the body was accepted).
pub fn scan_with_prompt(
    chunks: &[&[u8]],
    prompt_limit: Option<usize>,
) -> (Expected, Option<Vec<u8>>) {
    let mut scanner = match prompt_limit {
        Some(limit) => ModelScanner::with_prompt(MAX_MODEL, limit),
        None => ModelScanner::new(MAX_MODEL),
    };
    for chunk in chunks {
        if let Err(error) = scanner.feed(chunk) {
            return (Expected::Refused(error), None);
        }
    }
    let prompt = scanner.take_prompt();
    match scanner.finish() {
        Ok(found) => (Expected::Model(found.map(|found| found.name)), prompt),
        Err(error) => (Expected::Refused(error), None),
    }
}

/// Checks the prompt template of an accepted `body`, whole and in `chunks`, against
/// [`prompt_oracle`]; building it must not change the scanner's outcome.
pub fn check_prompt(body: &[u8], chunks: &[&[u8]], limit: usize) {
    let (outcome, whole) = scan_with_prompt(&[body], Some(limit));
    let (split_outcome, split) = scan_with_prompt(chunks, Some(limit));
    let text = || String::from_utf8_lossy(body);
    assert_eq!(
        outcome,
        scan(&[body]),
        "the prompt changed the outcome: {:?}",
        text()
    );
    assert_eq!(
        outcome,
        split_outcome,
        "chunking changed the outcome: {:?}",
        text()
    );
    assert_eq!(whole, split, "chunking changed the prompt: {:?}", text());
    if matches!(outcome, Expected::Model(_)) && oracle(body).is_some() {
        assert_eq!(whole, prompt_oracle(body, limit), "prompt of {:?}", text());
    }
}

/// Checks that the model value the scanner reports for `body` is where it says: the raw
/// string content between two quotes, which decodes to the name.
fn check_value_span(body: &[u8]) {
    let mut scanner = ModelScanner::new(MAX_MODEL);
    scanner.feed(body).expect("accepted before");
    let found = scanner.finish().expect("accepted before").expect("a model");
    let (start, end) = (found.value.start as usize, found.value.end as usize);
    assert!(start >= 1 && end < body.len(), "value {start}..{end}");
    let quoted = &body[start - 1..=end];
    let decoded: String = serde_json::from_slice(quoted).unwrap_or_else(|e| {
        panic!(
            "value {:?} is not a JSON string: {e}",
            String::from_utf8_lossy(quoted)
        )
    });
    assert_eq!(decoded.as_bytes(), found.name, "the value's span");
}

/// Checks one body, whole and in the given chunks, against serde_json's reading.
pub fn check(body: &[u8], chunks: &[&[u8]]) {
    let whole = scan(&[body]);
    let split = scan(chunks);
    assert_eq!(
        whole,
        split,
        "chunking changed the outcome for {:?}",
        String::from_utf8_lossy(body)
    );
    if matches!(whole, Expected::Model(Some(_))) {
        check_value_span(body);
    }
    check_prompt(body, chunks, PROMPT_LIMIT);
    match oracle(body) {
        Some(expected) => assert_eq!(whole, expected, "body {:?}", String::from_utf8_lossy(body)),
        None => {
            // serde_json refuses: so must the scanner, but for numbers serde_json cannot
            // represent (the scanner checks the grammar only) and nesting between serde_json's
            // limit and the scanner's.
            let serde_error = serde_json::from_slice::<Value>(body).err();
            let tolerated = serde_error.as_ref().is_some_and(|e| {
                let text = e.to_string();
                text.contains("number out of range") || text.contains("recursion limit")
            });
            if !tolerated {
                assert!(
                    matches!(whole, Expected::Refused(_)),
                    "scanner accepted {:?} which serde_json refuses ({serde_error:?})",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }
}
