//! The response readers against serde_json (testkit's usage oracle): real answers of every
//! API split at every byte, and generated documents and event streams (known and unknown
//! keys, counts of every type, escapes, every line ending, comments, cuts, corruption) in
//! random chunks.

use std::fmt::Write;
use testkit::chunks::{self, Rng};
use testkit::random_json::{RandomJson, Shape, Style};
use testkit::usage_oracle::{
    check_document, check_stream, expected_events, oracle, read, read_events, EventView,
};

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/response_corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&path).unwrap(),
            )
        })
        .collect()
}

#[test]
fn real_answers_split_at_every_byte_agree_with_serde_json() {
    let corpus = corpus();
    assert!(
        corpus.len() >= 10,
        "the corpus has {} answers",
        corpus.len()
    );
    for (name, body) in corpus {
        if name.ends_with(".json") {
            let expected = oracle(&body)
                .ok()
                .flatten()
                .unwrap_or_else(|| panic!("{name} is not a JSON object"));
            assert!(expected.has_counts(), "{name} reports no usage");
            for at in 0..=body.len() {
                check_document(&body, &[&body[..at], &body[at..]]);
            }
            let bytes: Vec<&[u8]> = body.chunks(1).collect();
            assert_eq!(read(&bytes), Some(expected), "{name} byte by byte");
        } else {
            let (events, complete) = expected_events(&body);
            assert!(complete, "{name} is cut");
            assert!(
                events
                    .iter()
                    .any(|e| matches!(e, EventView::Document(d) if d.has_counts())),
                "{name} reports no usage"
            );
            assert!(
                events
                    .iter()
                    .any(|e| matches!(e, EventView::Document(d) if d.content)),
                "{name} carries no content"
            );
            for at in 0..=body.len() {
                check_stream(&body, &[&body[..at], &body[at..]]);
            }
            let bytes: Vec<&[u8]> = body.chunks(1).collect();
            assert_eq!(read_events(&bytes), (events, true), "{name} byte by byte");
        }
    }
}

/// Every key the readers know, and a few near misses.
const KEYS: &[&str] = &[
    "model",
    "usage",
    "response",
    "message",
    "choices",
    "delta",
    "text",
    "content",
    "reasoning_content",
    "refusal",
    "tool_calls",
    "partial_json",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "prompt_tokens_details",
    "input_tokens_details",
    "cached_tokens",
    "type",
    "id",
    "usag",
    "models",
    "prompt_tokens_details_and_more_than_thirty_two_bytes",
];

const STYLE: Style = Style {
    pieces: &[
        "", "a", "m/l:3.1", "é", "🙂", "\"", "\\", "\n", "x", "[DONE]",
    ],
    pieces_per_string: 4,
    numbers: &[
        "0",
        "7",
        "42",
        "1000000000",
        "1000000001",
        "18446744073709551615",
        "18446744073709551616",
        "-0",
        "-3",
        "2.5",
        "1e3",
        "1E+2",
    ],
    escape_percent: 8,
    space_percent: 12,
    one_line: false,
    container_depth: 6,
    array_items: 3,
};

/// Answers: known keys nested where they count (and elsewhere), counts of every type.
impl Shape for Role {
    /// An object whose keys are mostly the ones that count where it stands.
    fn object(&self, json: &mut RandomJson<'_>, depth: usize) {
        let role = *self;
        json.object(
            5,
            |json| {
                if json.rng.chance(70) && !role.keys().is_empty() {
                    (*json.rng.pick(role.keys())).to_owned()
                } else if json.rng.chance(80) {
                    (*json.rng.pick(KEYS)).to_owned()
                } else {
                    json.text()
                }
            },
            |json, key| value_of(json, key, depth),
        );
    }
}

/// A value for `key`, mostly of the type the key has in answers.
fn value_of(json: &mut RandomJson<'_>, key: &str, depth: usize) {
    let typical = json.rng.chance(75) && depth < 7;
    match key {
        _ if !typical => json.value(&Role::Any, depth),
        "model" => json.text_string(),
        "usage" => Role::Usage.object(json, depth + 1),
        "response" | "message" => Role::Scope.object(json, depth + 1),
        "prompt_tokens_details" | "input_tokens_details" => Role::Details.object(json, depth + 1),
        "choices" | "tool_calls" => {
            json.out.push('[');
            for index in 0..json.rng.below(3) {
                if index > 0 {
                    json.out.push(',');
                }
                Role::Choice.object(json, depth + 1);
            }
            json.out.push(']');
        }
        "delta" if json.rng.chance(50) => Role::Delta.object(json, depth + 1),
        k if k.ends_with("tokens") => json.number(),
        _ => json.text_string(),
    }
}

/// Where an object stands in an answer.
#[derive(Clone, Copy)]
enum Role {
    Any,
    Scope,
    Usage,
    Details,
    Choice,
    Delta,
}

impl Role {
    fn keys(self) -> &'static [&'static str] {
        match self {
            Role::Any => &["model", "usage", "response", "message", "choices", "delta"],
            Role::Scope => &["model", "usage"],
            Role::Usage => &[
                "prompt_tokens",
                "completion_tokens",
                "total_tokens",
                "input_tokens",
                "output_tokens",
                "cache_read_input_tokens",
                "cache_creation_input_tokens",
                "prompt_tokens_details",
                "input_tokens_details",
            ],
            Role::Details => &["cached_tokens", "audio_tokens"],
            Role::Choice => &["delta", "text", "index"],
            Role::Delta => &[
                "content",
                "reasoning_content",
                "refusal",
                "tool_calls",
                "text",
                "partial_json",
            ],
        }
    }
}

fn document(rng: &mut Rng, one_line: bool) -> String {
    RandomJson::document(rng, &Style { one_line, ..STYLE }, &Role::Any)
}

#[test]
fn generated_documents_agree_with_serde_json_in_any_chunking() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut counted, mut content) = (0, 0);
    for _ in 0..30_000 {
        let body = document(&mut rng, false);
        let chunks = chunks::random(&mut rng, body.as_bytes(), 24);
        check_document(body.as_bytes(), &chunks);
        if let Some(view) = read(&[body.as_bytes()]) {
            counted += usize::from(view.has_counts());
            content += usize::from(view.content);
        }
    }
    // The generator must reach the interesting readings, not only refusals and nothing.
    assert!(counted > 1_000, "only {counted} documents had counts");
    assert!(content > 500, "only {content} documents had content");
}

#[test]
fn corrupted_documents_are_refused_or_agree_with_serde_json() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    const BYTES: &[u8] = b"{}[]\",:\\u0aeE+-.  tfn\x00\x1f\x7f\x80\xc3\xed\xf4\xff";
    for _ in 0..30_000 {
        let mut body = document(&mut rng, false).into_bytes();
        chunks::corrupt(&mut rng, &mut body, BYTES);
        let chunks = chunks::random(&mut rng, &body, 24);
        check_document(&body, &chunks);
    }
}

/// A random event stream: documents split over `data` lines at their spaces, named events,
/// ids, comments, blank and `[DONE]` data, every line ending, a byte order mark, a cut.
fn stream(rng: &mut Rng) -> Vec<u8> {
    let mut out = String::new();
    if rng.chance(5) {
        out.push('\u{feff}');
    }
    for _ in 0..rng.below(6) {
        let eol = rng.pick(&["\n", "\r\n", "\r"]);
        if rng.chance(20) {
            let _ = write!(out, ": keep-alive{eol}");
        }
        if rng.chance(40) {
            let _ = write!(out, "event: {}{eol}", rng.pick(&["message_start", "x", ""]));
        }
        if rng.chance(10) {
            let _ = write!(out, "id: 7{eol}");
        }
        match rng.below(10) {
            0 => {
                let _ = write!(out, "data: [DONE]{eol}");
            }
            1 => {
                let _ = write!(out, "data{eol}");
            }
            2 => {
                let _ = write!(out, "data:{}{eol}", rng.pick(&["", " ", "nope", "[DONE] "]));
            }
            _ => {
                let document = document(rng, true);
                let separator = if rng.chance(50) { "data: " } else { "data:" };
                // Split over lines at spaces: the lines are joined again with LF.
                let lines: Vec<&str> = document.split(' ').collect();
                let mut line = String::new();
                for (index, piece) in lines.iter().enumerate() {
                    line.push_str(piece);
                    if index + 1 < lines.len() {
                        if rng.chance(30) {
                            let _ = write!(out, "{separator}{line}{eol}");
                            line.clear();
                        } else {
                            line.push(' ');
                        }
                    }
                }
                let _ = write!(out, "{separator}{line}{eol}");
            }
        }
        out.push_str(eol);
    }
    let mut bytes = out.into_bytes();
    if rng.chance(15) && !bytes.is_empty() {
        bytes.truncate(rng.below(bytes.len()));
    }
    bytes
}

#[test]
fn generated_streams_agree_with_a_line_by_line_reading_in_any_chunking() {
    let mut rng = Rng(0x5151_d00d_cafe_f00d);
    let (mut documents, mut cut) = (0, 0);
    for _ in 0..20_000 {
        let body = stream(&mut rng);
        let chunks = chunks::random(&mut rng, &body, 24);
        check_stream(&body, &chunks);
        let (events, complete) = expected_events(&body);
        documents += events
            .iter()
            .filter(|e| matches!(e, EventView::Document(_)))
            .count();
        cut += usize::from(!complete);
    }
    assert!(
        documents > 10_000,
        "only {documents} documents in the streams"
    );
    assert!(cut > 1_000, "only {cut} streams were cut");
}
