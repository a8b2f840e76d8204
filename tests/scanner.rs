//! The scanner against serde_json: real request bodies split at every byte, and generated
//! documents (random structure, escapes, whitespace and corruption) in random chunks; with
//! them the prompt template it builds for the endpoint picker, against GIE's reading.

use testkit::chunks::{self, Rng};
use testkit::oracle::{check, check_prompt, oracle, prompt_oracle, scan, Expected};
use testkit::random_json::{RandomJson, Shape, Style};

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

const STYLE: Style = Style {
    pieces: &[
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
    ],
    pieces_per_string: 6,
    numbers: &[
        "0",
        "-0",
        "7",
        "-12",
        "3.25",
        "1e5",
        "-2.5E-3",
        "1E+2",
        "123456789012",
    ],
    escape_percent: 10,
    space_percent: 15,
    one_line: false,
    container_depth: 7,
    array_items: 4,
};

/// Request bodies: `model` keys (at the top and nested), often with string values.
struct Request;

impl Shape for Request {
    fn object(&self, json: &mut RandomJson<'_>, depth: usize) {
        json.object(
            if depth == 1 { 6 } else { 4 },
            |json| {
                if json.rng.chance(30) {
                    "model".to_owned()
                } else {
                    json.text()
                }
            },
            |json, key| {
                if key == "model" && json.rng.chance(70) {
                    json.text_string();
                } else {
                    json.value(self, depth);
                }
            },
        );
    }
}

fn generate(rng: &mut Rng) -> Vec<u8> {
    RandomJson::document(rng, &STYLE, &Request).into_bytes()
}

#[test]
fn generated_documents_agree_with_serde_json_in_any_chunking() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut routed = 0;
    for _ in 0..20_000 {
        let body = generate(&mut rng);
        let chunks = chunks::random(&mut rng, &body, 16);
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
        chunks::corrupt(&mut rng, &mut body, BYTES);
        let chunks = chunks::random(&mut rng, &body, 16);
        check(&body, &chunks);
    }
}

/// Chat-like bodies for the endpoint picker's prompt: `messages` (sometimes not an array),
/// messages with `role` and `content` in any order, duplicated, of any type, array content
/// parts, a `prompt`, other keys and noise around them.
struct Chat;

impl Chat {
    fn messages(&self, json: &mut RandomJson<'_>) {
        json.out.push('[');
        for index in 0..json.rng.below(5) {
            if index > 0 {
                json.out.push(',');
            }
            json.space();
            if json.rng.chance(10) {
                json.value(self, 3);
                continue;
            }
            const KEYS: &[&str] = &[
                "role",
                "content",
                "content",
                "role",
                "name",
                "tool_calls",
                "Role",
            ];
            json.object(
                5,
                |json| (*json.rng.pick(KEYS)).to_owned(),
                |json, _| match json.rng.below(8) {
                    0 => json.out.push_str(r#"[{"type":"text","text":"part"}]"#),
                    1 => json.value(self, 4),
                    _ => long_text(json),
                },
            );
        }
        json.out.push(']');
    }
}

/// Text of up to a few hundred bytes, to cross the template's limit.
fn long_text(json: &mut RandomJson<'_>) {
    let mut text = json.text();
    if json.rng.chance(30) {
        text.push_str(&"The quick brown fox. ".repeat(json.rng.below(12)));
    }
    json.string(&text);
}

impl Shape for Chat {
    fn object(&self, json: &mut RandomJson<'_>, depth: usize) {
        if depth > 1 {
            return json.object(4, |json| json.text(), |json, _| json.value(self, depth));
        }
        json.object(
            6,
            |json| match json.rng.below(6) {
                0..=2 => "messages".to_owned(),
                3 => "prompt".to_owned(),
                4 => "model".to_owned(),
                _ => json.text(),
            },
            |json, key| match key {
                "messages" if json.rng.chance(90) => self.messages(json),
                "prompt" if json.rng.chance(80) => long_text(json),
                "model" => json.out.push_str("\"m\""),
                _ => json.value(self, 2),
            },
        );
    }
}

#[test]
fn chat_bodies_give_gie_s_prompt_in_any_chunking() {
    let mut rng = Rng(0x0005_eed0_f9c1);
    let mut prompts = 0;
    let mut truncated = 0;
    for round in 0..20_000 {
        let body = RandomJson::document(&mut rng, &STYLE, &Chat).into_bytes();
        let chunks = chunks::random(&mut rng, &body, 16);
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
