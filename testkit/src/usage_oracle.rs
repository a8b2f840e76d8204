//! The response readers' specification, executable: serde_json's reading of a JSON document
//! (and a plain line-by-line reading of an event stream), stated as what
//! `model_router::response::usage` and `::sse` must report for it. Shared by tests/usage.rs
//! and the `response` fuzz target.

use model_router::response::sse::{Event, EventStream};
use model_router::response::usage::{
    Document, Field, ModelSlot, Scope, Slot, UsageReader, MAX_MODEL_BYTES, MAX_TOKENS,
};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value as serde_json reads it, keeping every object entry (duplicates included, in
/// order) and telling token counts from other numbers.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool,
    /// An integer serde_json reads as a `u64`.
    Count(u64),
    /// Any other number: negative, fractional, with an exponent, or beyond `u64`.
    OtherNumber,
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct JsonVisitor;
        impl<'de> Visitor<'de> for JsonVisitor {
            type Value = Json;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Json, E> {
                Ok(Json::Bool)
            }
            fn visit_u64<E>(self, n: u64) -> Result<Json, E> {
                Ok(Json::Count(n))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Json, E> {
                Ok(Json::OtherNumber)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Json, E> {
                Ok(Json::OtherNumber)
            }
            fn visit_str<E>(self, s: &str) -> Result<Json, E> {
                Ok(Json::String(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Json, E> {
                Ok(Json::String(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Json::Object(entries))
            }
        }
        deserializer.deserialize_any(JsonVisitor)
    }
}

impl Json {
    /// The value of the last entry named `key`, as serde_json's `Value` keeps it.
    fn last(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(entries) => entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The values of every entry named `key`.
    fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Json> + 'a {
        let entries: &[(String, Json)] = match self {
            Json::Object(entries) => entries,
            _ => &[],
        };
        entries
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v)
    }

    fn is_content(&self) -> bool {
        matches!(self, Json::String(s) if !s.is_empty())
    }
}

/// A model slot, with the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelView {
    Absent,
    Name(Vec<u8>),
    TooLong,
    Invalid,
}

/// What a document says, in a form both sides build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentView {
    pub scopes: Vec<(ModelView, bool, Vec<Slot>)>,
    pub content: bool,
}

impl DocumentView {
    pub fn of(document: &Document) -> Self {
        let scopes = Scope::ALL
            .iter()
            .map(|&scope| {
                let values = document.scope(scope);
                let model = match values.model {
                    ModelSlot::Absent => ModelView::Absent,
                    ModelSlot::Name => {
                        ModelView::Name(values.model_name().expect("a name").as_bytes().to_vec())
                    }
                    ModelSlot::TooLong => ModelView::TooLong,
                    ModelSlot::Invalid => ModelView::Invalid,
                };
                (model, values.usage_invalid, values.tokens.to_vec())
            })
            .collect();
        Self {
            scopes,
            content: document.content,
        }
    }

    /// Whether any count is a number.
    pub fn has_counts(&self) -> bool {
        self.scopes
            .iter()
            .any(|(_, _, tokens)| tokens.iter().any(|t| matches!(t, Slot::Count(_))))
    }
}

fn slot(value: Option<&Json>) -> Slot {
    match value {
        None | Some(Json::Null) => Slot::Absent,
        Some(Json::Count(n)) if *n <= MAX_TOKENS => Slot::Count(*n),
        Some(_) => Slot::Invalid,
    }
}

/// What the reader must report for a JSON object, read by serde_json.
pub fn expected_view(root: &Json) -> DocumentView {
    let scope_values = |object: Option<&Json>| {
        let Some(object @ Json::Object(_)) = object else {
            return (
                ModelView::Absent,
                false,
                vec![Slot::Absent; Field::ALL.len()],
            );
        };
        let model = match object.last("model") {
            None | Some(Json::Null) => ModelView::Absent,
            Some(Json::String(s)) if s.len() > MAX_MODEL_BYTES => ModelView::TooLong,
            Some(Json::String(s)) => ModelView::Name(s.as_bytes().to_vec()),
            Some(_) => ModelView::Invalid,
        };
        let (usage_invalid, tokens) = match object.last("usage") {
            None | Some(Json::Null) => (false, vec![Slot::Absent; Field::ALL.len()]),
            Some(usage @ Json::Object(_)) => {
                let tokens = Field::ALL
                    .iter()
                    .map(|field| {
                        let details = match field {
                            Field::PromptCachedTokens => "prompt_tokens_details",
                            Field::InputCachedTokens => "input_tokens_details",
                            _ => return slot(usage.last(field.key())),
                        };
                        match usage.last(details) {
                            None | Some(Json::Null) => Slot::Absent,
                            Some(details @ Json::Object(_)) => slot(details.last("cached_tokens")),
                            Some(_) => Slot::Invalid,
                        }
                    })
                    .collect();
                (false, tokens)
            }
            Some(_) => (true, vec![Slot::Absent; Field::ALL.len()]),
        };
        (model, usage_invalid, tokens)
    };
    let mut content = false;
    for choices in root.all("choices") {
        let Json::Array(choices) = choices else {
            continue;
        };
        for choice in choices.iter().filter(|c| matches!(c, Json::Object(_))) {
            content |= choice.all("text").any(Json::is_content);
            for delta in choice.all("delta") {
                content |= ["content", "reasoning_content", "reasoning", "refusal"]
                    .iter()
                    .any(|key| delta.all(key).any(Json::is_content));
                content |= delta
                    .all("tool_calls")
                    .any(|calls| matches!(calls, Json::Array(calls) if !calls.is_empty()));
            }
        }
    }
    for delta in root.all("delta") {
        content |= delta.is_content()
            || ["text", "partial_json", "thinking"]
                .iter()
                .any(|key| delta.all(key).any(Json::is_content));
    }
    DocumentView {
        scopes: vec![
            scope_values(Some(root)),
            scope_values(root.last("response")),
            scope_values(root.last("message")),
        ],
        content,
    }
}

/// What serde_json makes of a document: `Ok(Some)` for an object, `Ok(None)` for JSON that is
/// not an object, `Err(tolerated)` when it refuses it (`tolerated` when the reader may still
/// accept it: numbers beyond f64, nesting between serde_json's limit and the reader's).
pub fn oracle(body: &[u8]) -> Result<Option<DocumentView>, bool> {
    match serde_json::from_slice::<Json>(body) {
        Ok(root @ Json::Object(_)) => Ok(Some(expected_view(&root))),
        Ok(_) => Ok(None),
        Err(error) => {
            let text = error.to_string();
            Err(text.contains("number out of range") || text.contains("recursion limit"))
        }
    }
}

/// The reader's reading of a document fed in `chunks`: `None` if it refuses it.
pub fn read(chunks: &[&[u8]]) -> Option<DocumentView> {
    let mut reader = UsageReader::new();
    for chunk in chunks {
        reader.feed(chunk).ok()?;
    }
    reader.finish().ok().map(DocumentView::of)
}

/// Checks one document, whole and in the given chunks, against serde_json's reading.
pub fn check_document(body: &[u8], chunks: &[&[u8]]) {
    let whole = read(&[body]);
    assert_eq!(
        whole,
        read(chunks),
        "chunking changed the reading of {:?}",
        String::from_utf8_lossy(body)
    );
    match oracle(body) {
        Ok(Some(expected)) => assert_eq!(
            whole,
            Some(expected),
            "body {:?}",
            String::from_utf8_lossy(body)
        ),
        Ok(None) | Err(false) => assert!(
            whole.is_none(),
            "the reader accepted {:?}, which is no JSON object",
            String::from_utf8_lossy(body)
        ),
        Err(true) => {}
    }
}

/// One event of a stream, as either side reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventView {
    Document(DocumentView),
    Done,
    Malformed,
    /// serde_json refuses what the reader may accept (see [`oracle`]).
    Either,
}

/// The events of a stream read line by line by the WHATWG rules, each data read by
/// [`oracle`]; and whether the stream ended between events.
pub fn expected_events(stream: &[u8]) -> (Vec<EventView>, bool) {
    let stream = stream.strip_prefix(b"\xef\xbb\xbf").unwrap_or(stream);
    let mut events = Vec::new();
    let mut data = Vec::new();
    let mut data_lines = 0;
    let mut open = false;
    let mut rest = stream;
    loop {
        let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
            // A line without its end: the stream was cut.
            return (events, rest.is_empty() && !open);
        };
        let line = &rest[..end];
        let eol = if rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        rest = &rest[end + eol..];
        if line.is_empty() {
            if data_lines > 0 {
                events.extend(event_of(&data));
            }
            (open, data_lines) = (false, 0);
            data.clear();
            continue;
        }
        if line[0] == b':' {
            continue;
        }
        open = true;
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        if name == b"data" {
            if data_lines > 0 {
                data.push(b'\n');
            }
            data.extend_from_slice(value);
            data_lines += 1;
        }
    }
}

fn event_of(data: &[u8]) -> Option<EventView> {
    if data
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return None;
    }
    if data == b"[DONE]" {
        return Some(EventView::Done);
    }
    Some(match oracle(data) {
        Ok(Some(view)) => EventView::Document(view),
        Ok(None) | Err(false) => EventView::Malformed,
        Err(true) => EventView::Either,
    })
}

/// The splitter's reading of a stream fed in `chunks`.
pub fn read_events(chunks: &[&[u8]]) -> (Vec<EventView>, bool) {
    let mut stream = EventStream::new();
    let mut events = Vec::new();
    for chunk in chunks {
        stream.feed(chunk, &mut |event| {
            events.push(match event {
                Event::Document(document) => EventView::Document(DocumentView::of(document)),
                Event::Done => EventView::Done,
                Event::Malformed(_) => EventView::Malformed,
            })
        });
    }
    let complete = stream.finish();
    (events, complete)
}

/// Checks one stream, whole and in the given chunks, against the line-by-line reading.
pub fn check_stream(stream: &[u8], chunks: &[&[u8]]) {
    let whole = read_events(&[stream]);
    assert_eq!(
        whole,
        read_events(chunks),
        "chunking changed the events of {:?}",
        String::from_utf8_lossy(stream)
    );
    let (expected, complete) = expected_events(stream);
    assert_eq!(
        whole.1,
        complete,
        "completeness of {:?}",
        String::from_utf8_lossy(stream)
    );
    assert_eq!(
        whole.0.len(),
        expected.len(),
        "events of {:?}: {:?}",
        String::from_utf8_lossy(stream),
        whole.0
    );
    for (read, expected) in whole.0.iter().zip(&expected) {
        if *expected != EventView::Either {
            assert_eq!(
                read,
                expected,
                "an event of {:?}",
                String::from_utf8_lossy(stream)
            );
        }
    }
}
