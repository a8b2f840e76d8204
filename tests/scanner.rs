//! The scanner against serde_json: real request bodies split at every byte, and generated
//! documents (random structure, escapes, whitespace and corruption) in random chunks.

use testkit::chunks::{self, Rng};
use testkit::oracle::{check, oracle, scan, Expected};
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
