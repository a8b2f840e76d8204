//! The scanner against serde_json: real request bodies split at every byte, and generated
//! documents (random structure, escapes, whitespace and corruption) in random chunks; with
//! them the prompt template it builds for the endpoint picker, against GIE's reading.

use std::fmt::Write;
use testkit::oracle::{check, check_prompt, oracle, prompt_oracle, scan, Expected};

#[test]
fn corpus_bodies_split_at_every_byte_agree_with_serde_json() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 8, "corpus has {} files", files.len());
    for path in files {
        let body = std::fs::read(&path).unwrap();
        let expected =
            oracle(&body).unwrap_or_else(|| panic!("{} is not valid JSON", path.display()));
        assert!(
            matches!(expected, Expected::Model(Some(_))),
            "{} should name a model",
            path.display()
        );
        for at in 0..=body.len() {
            check(&body, &[&body[..at], &body[at..]]);
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(
            scan(&bytes),
            expected,
            "{} fed byte by byte",
            path.display()
        );
    }
}

/// xorshift64*: deterministic, so a failure names its seed and replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// Writes random JSON text, sometimes escaping characters and padding with whitespace.
struct Writer<'a> {
    rng: &'a mut Rng,
    out: String,
}

impl Writer<'_> {
    fn space(&mut self) {
        while self.rng.chance(15) {
            self.out.push([' ', '\t', '\n', '\r'][self.rng.below(4)]);
        }
    }

    fn string(&mut self, text: &str) {
        self.out.push('"');
        for ch in text.chars() {
            let escape = self.rng.chance(10);
            match ch {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '/' if escape => self.out.push_str("\\/"),
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
            "model",
            "mod",
            "el",
            "a",
            " ",
            "é",
            "日本",
            "🙂",
            "\"",
            "\\",
            "/",
            "\n",
            "\t",
            "\u{1}",
            "mistral:latest",
            "x",
            "\u{7f}",
            "\u{ffff}",
        ];
        (0..self.rng.below(6))
            .map(|_| PIECES[self.rng.below(PIECES.len())])
            .collect()
    }

    fn number(&mut self) {
        const NUMBERS: &[&str] = &[
            "0",
            "-0",
            "7",
            "-12",
            "3.25",
            "1e5",
            "-2.5E-3",
            "1E+2",
            "123456789012",
        ];
        self.out.push_str(NUMBERS[self.rng.below(NUMBERS.len())]);
    }

    fn value(&mut self, depth: usize) {
        let kind = if depth > 6 {
            self.rng.below(4)
        } else {
            self.rng.below(6)
        };
        match kind {
            0 => {
                let text = self.text();
                self.string(&text)
            }
            1 => self.number(),
            2 => self
                .out
                .push_str(["true", "false", "null"][self.rng.below(3)]),
            3 => {
                let text = self.text();
                self.string(&text)
            }
            4 => self.array(depth + 1),
            _ => self.object(depth + 1, false),
        }
    }

    fn array(&mut self, depth: usize) {
        self.out.push('[');
        self.space();
        for index in 0..self.rng.below(4) {
            if index > 0 {
                self.out.push(',');
                self.space();
            }
            self.value(depth);
            self.space();
        }
        self.out.push(']');
    }

    fn object(&mut self, depth: usize, top: bool) {
        self.out.push('{');
        self.space();
        for index in 0..self.rng.below(if top { 6 } else { 4 }) {
            if index > 0 {
                self.out.push(',');
                self.space();
            }
            let key = if self.rng.chance(30) {
                "model".to_owned()
            } else {
                self.text()
            };
            self.string(&key);
            self.space();
            self.out.push(':');
            self.space();
            if key == "model" && self.rng.chance(70) {
                let model = self.text();
                self.string(&model);
            } else {
                self.value(depth);
            }
            self.space();
        }
        self.out.push('}');
    }
}

fn generate(rng: &mut Rng) -> Vec<u8> {
    let mut writer = Writer {
        rng,
        out: String::new(),
    };
    writer.space();
    if writer.rng.chance(95) {
        writer.object(1, true);
    } else {
        writer.value(1);
    }
    writer.space();
    writer.out.into_bytes()
}

/// Splits `body` at random points.
fn random_chunks<'a>(rng: &mut Rng, body: &'a [u8]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let size = 1 + rng.below(rest.len().min(16));
        let (chunk, tail) = rest.split_at(size);
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

#[test]
fn generated_documents_agree_with_serde_json_in_any_chunking() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut routed = 0;
    for _ in 0..20_000 {
        let body = generate(&mut rng);
        let chunks = random_chunks(&mut rng, &body);
        check(&body, &chunks);
        routed += usize::from(matches!(scan(&[&body]), Expected::Model(Some(_))));
    }
    // The generator must exercise the interesting outcome, not only refusals.
    assert!(
        routed > 2_000,
        "only {routed} generated bodies named a model"
    );
}

#[test]
fn corrupted_documents_are_refused_or_agree_with_serde_json() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    const BYTES: &[u8] = b"{}[]\",:\\u0aeE+-.  tfn\x00\x1f\x7f\x80\xc3\xed\xf4\xff";
    for _ in 0..20_000 {
        let mut body = generate(&mut rng);
        for _ in 0..1 + rng.below(3) {
            if body.is_empty() {
                break;
            }
            let at = rng.below(body.len());
            match rng.below(3) {
                0 => body[at] = BYTES[rng.below(BYTES.len())],
                1 => body.insert(at, BYTES[rng.below(BYTES.len())]),
                _ => {
                    body.remove(at);
                }
            }
        }
        let chunks = random_chunks(&mut rng, &body);
        check(&body, &chunks);
    }
}

impl Writer<'_> {
    /// A chat-like top level: `messages` (sometimes twice, sometimes not an array), messages
    /// with `role` and `content` in any order, duplicated, of any type, array content parts,
    /// a `prompt`, escaped keys, noise around them.
    fn chat(&mut self) {
        self.out.push('{');
        let mut first = true;
        for _ in 0..1 + self.rng.below(5) {
            if !first {
                self.out.push(',');
            }
            first = false;
            self.space();
            match self.rng.below(6) {
                0..=2 => {
                    self.string("messages");
                    self.out.push(':');
                    if self.rng.chance(90) {
                        self.messages();
                    } else {
                        self.value(2);
                    }
                }
                3 => {
                    self.string("prompt");
                    self.out.push(':');
                    if self.rng.chance(80) {
                        let text = self.long_text();
                        self.string(&text);
                    } else {
                        self.value(2);
                    }
                }
                4 => {
                    self.string("model");
                    self.out.push_str(":\"m\"");
                }
                _ => {
                    let key = self.text();
                    self.string(&key);
                    self.out.push(':');
                    self.value(2);
                }
            }
            self.space();
        }
        self.out.push('}');
    }

    fn messages(&mut self) {
        self.out.push('[');
        for index in 0..self.rng.below(5) {
            if index > 0 {
                self.out.push(',');
            }
            self.space();
            if self.rng.chance(10) {
                self.value(3);
                continue;
            }
            self.out.push('{');
            for field in 0..self.rng.below(5) {
                if field > 0 {
                    self.out.push(',');
                }
                let key = [
                    "role",
                    "content",
                    "content",
                    "role",
                    "name",
                    "tool_calls",
                    "Role",
                ][self.rng.below(7)];
                self.string(key);
                self.out.push(':');
                self.space();
                match self.rng.below(8) {
                    0 => self.out.push_str(r#"[{"type":"text","text":"part"}]"#),
                    1 => self.value(4),
                    _ => {
                        let text = self.long_text();
                        self.string(&text);
                    }
                }
            }
            self.out.push('}');
        }
        self.out.push(']');
    }

    /// Text of up to a few hundred bytes, to cross the template's limit.
    fn long_text(&mut self) -> String {
        let mut text = self.text();
        if self.rng.chance(30) {
            text.push_str(&"The quick brown fox. ".repeat(self.rng.below(12)));
        }
        text
    }
}

#[test]
fn chat_bodies_give_gie_s_prompt_in_any_chunking() {
    let mut rng = Rng(0x0005_eed0_f9c1);
    let mut prompts = 0;
    let mut truncated = 0;
    for round in 0..20_000 {
        let mut writer = Writer {
            rng: &mut rng,
            out: String::new(),
        };
        writer.chat();
        let body = writer.out.into_bytes();
        let chunks = random_chunks(&mut rng, &body);
        check(&body, &chunks);
        let limit = if round % 2 == 0 { 96 } else { 16 * 1024 };
        check_prompt(&body, &chunks, limit);
        let full = prompt_oracle(&body, usize::MAX);
        prompts += usize::from(full.as_ref().is_some_and(|p| !p.is_empty()));
        truncated += usize::from(full.is_some_and(|p| p.len() > 96));
    }
    assert!(
        prompts > 3_000 && truncated > 1_000,
        "{prompts} prompts, {truncated} over 96 bytes"
    );
}

#[test]
fn corpus_prompts_agree_with_gie_split_at_every_byte() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let body = std::fs::read(entry.unwrap().path()).unwrap();
        for at in 0..=body.len() {
            check_prompt(&body, &[&body[..at], &body[at..]], 16 * 1024);
        }
    }
}
