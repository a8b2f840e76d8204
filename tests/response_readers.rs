//! The response readers against serde_json (testkit's usage oracle): real answers of every
//! API split at every byte, and generated documents and event streams (known and unknown
//! keys, counts of every type, escapes, every line ending, comments, cuts, corruption) in
//! random chunks.

use std::fmt::Write;
use testkit::chunks::{self, Rng};
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

/// Writes random JSON text shaped like answers: known keys nested where they count (and
/// elsewhere), counts of every type, escaped keys and strings, whitespace.
struct Writer<'a> {
    rng: &'a mut Rng,
    out: String,
    /// No raw line breaks (for event data).
    one_line: bool,
}

impl Writer<'_> {
    fn space(&mut self) {
        while self.rng.chance(12) {
            let spaces: &[char] = if self.one_line {
                &[' ', '\t']
            } else {
                &[' ', '\t', '\n', '\r']
            };
            self.out.push(spaces[self.rng.below(spaces.len())]);
        }
    }

    fn string(&mut self, text: &str) {
        self.out.push('"');
        for ch in text.chars() {
            let escape = self.rng.chance(8);
            match ch {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                c if (c as u32) < 0x20 || escape => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        let _ = write!(self.out, "\\u{unit:04x}");
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }

    fn text(&mut self) -> String {
        const PIECES: &[&str] = &[
            "", "a", "m/l:3.1", "é", "🙂", "\"", "\\", "\n", "x", "[DONE]",
        ];
        (0..self.rng.below(4))
            .map(|_| PIECES[self.rng.below(PIECES.len())])
            .collect()
    }

    fn number(&mut self) {
        const NUMBERS: &[&str] = &[
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
        ];
        let number = self.rng.pick(NUMBERS);
        self.out.push_str(number);
    }

    fn value(&mut self, depth: usize) {
        match self.rng.below(if depth > 5 { 4 } else { 7 }) {
            0 | 1 => {
                let text = self.text();
                self.string(&text)
            }
            2 => self.number(),
            3 => self
                .out
                .push_str(["true", "false", "null"][self.rng.below(3)]),
            4 => self.array(depth + 1),
            _ => self.object(depth + 1),
        }
    }

    fn array(&mut self, depth: usize) {
        self.out.push('[');
        self.space();
        for index in 0..self.rng.below(3) {
            if index > 0 {
                self.out.push(',');
                self.space();
            }
            self.value(depth);
            self.space();
        }
        self.out.push(']');
    }

    fn object(&mut self, depth: usize) {
        self.object_as(depth, Role::Any);
    }

    /// An object whose keys are mostly the ones that count where it stands.
    fn object_as(&mut self, depth: usize, role: Role) {
        self.out.push('{');
        self.space();
        for index in 0..self.rng.below(5) {
            if index > 0 {
                self.out.push(',');
                self.space();
            }
            let key = if self.rng.chance(70) && !role.keys().is_empty() {
                (*self.rng.pick(role.keys())).to_owned()
            } else if self.rng.chance(80) {
                (*self.rng.pick(KEYS)).to_owned()
            } else {
                self.text()
            };
            self.string(&key);
            self.space();
            self.out.push(':');
            self.space();
            self.value_of(&key, depth);
            self.space();
        }
        self.out.push('}');
    }

    /// A value for `key`, mostly of the type the key has in answers.
    fn value_of(&mut self, key: &str, depth: usize) {
        let typical = self.rng.chance(75) && depth < 7;
        match key {
            _ if !typical => self.value(depth),
            "model" => {
                let text = self.text();
                self.string(&text)
            }
            "usage" => self.object_as(depth + 1, Role::Usage),
            "response" | "message" => self.object_as(depth + 1, Role::Scope),
            "prompt_tokens_details" | "input_tokens_details" => {
                self.object_as(depth + 1, Role::Details)
            }
            "choices" | "tool_calls" => {
                self.out.push('[');
                for index in 0..self.rng.below(3) {
                    if index > 0 {
                        self.out.push(',');
                    }
                    self.object_as(depth + 1, Role::Choice);
                }
                self.out.push(']');
            }
            "delta" if self.rng.chance(50) => self.object_as(depth + 1, Role::Delta),
            k if k.ends_with("tokens") => self.number(),
            _ => {
                let text = self.text();
                self.string(&text)
            }
        }
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
    let mut writer = Writer {
        rng,
        out: String::new(),
        one_line,
    };
    writer.space();
    if writer.rng.chance(95) {
        writer.object(1);
    } else {
        writer.value(1);
    }
    writer.space();
    writer.out
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
