//! The multipart scanner against its reference reading (testkit's `form`) and against multer,
//! a real parser: forms as clients write them split at every byte, and generated forms
//! (random parts, header spellings, delimiter look-alikes in the data, corruption) in random
//! chunks.

use bytes::Bytes;
use model_router::request::multipart::MultipartError;
use testkit::chunks::Rng;
use testkit::form::{check, content_type, encode, reference, Part};

const MAX_MODEL: usize = 64;

#[test]
fn client_forms_split_at_every_byte_agree_with_the_reference() {
    let audio: Vec<u8> = (0..3000u32).map(|i| (i * 7919 % 256) as u8).collect();
    let boundary = "------------------------d74496d66958873e";
    let forms = [
        vec![
            Part::file("file", "a.wav", "audio/wav", audio.clone()),
            Part::field("model", "whisper-1"),
        ],
        vec![
            Part::field("model", "gpt-4o"),
            Part::field("language", "en"),
            Part::file(
                "file",
                "speech.mp3",
                "application/octet-stream",
                audio[..500].to_vec(),
            ),
            Part::field("response_format", "json"),
        ],
        vec![Part::file(
            "file",
            "a.wav",
            "audio/wav",
            b"\r\n--\r\n-----\r".to_vec(),
        )],
    ];
    for parts in forms {
        let body = encode(boundary, &parts);
        for at in 0..=body.len() {
            check(
                boundary.as_bytes(),
                MAX_MODEL,
                &body,
                &[&body[..at], &body[at..]],
            );
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        check(boundary.as_bytes(), MAX_MODEL, &body, &bytes);
    }
}

/// A random form: parts named model (sometimes twice or not at all) and others, header
/// lines spelled every way the grammar allows (and some it does not), data full of
/// delimiter look-alikes; `plain` keeps to what every client writes.
fn random_form(rng: &mut Rng, boundary: &str, plain: bool) -> Vec<u8> {
    let mut body = Vec::new();
    if !plain && rng.chance(10) {
        body.extend_from_slice(b"preamble \r\n--not it\r\n");
    }
    let parts = if rng.chance(5) { 0 } else { 1 + rng.below(4) };
    for _ in 0..parts {
        body.extend_from_slice(format!("--{boundary}").as_bytes());
        if !plain && rng.chance(10) {
            let padding: [&[u8]; 4] = [b" ", b"\t ", b"x", b"-"];
            body.extend_from_slice(rng.pick::<&[u8]>(&padding));
        }
        body.extend_from_slice(b"\r\n");
        let name = *rng.pick(&["model", "model", "file", "language", "Model", "prompt"]);
        let header = if plain {
            "Content-Disposition"
        } else {
            *rng.pick(&[
                "Content-Disposition",
                "content-disposition",
                "CONTENT-DISPOSITION",
            ])
        };
        let value = if plain || rng.chance(92) {
            format!("form-data; name=\"{name}\"")
        } else {
            rng.pick(&[
                format!("form-data;name={name}"),
                format!("form-data ; name = \"{name}\" ; filename=\"a\\\"b.wav\""),
                format!("FORM-DATA; filename=\"x\"; NAME=\"{name}\""),
                format!("form-data; name=\"{name}\"; name=\"x\""),
                format!("form-data; name*=UTF-8''{name}"),
                "form-data; name=\"mo\\del\"".to_owned(),
                "form-data".to_owned(),
                format!("attachment; name={name}"),
                format!("form-data, name={name}"),
                format!("form-data; name=\"{name}"),
            ])
            .clone()
        };
        if !plain && rng.chance(2) {
            body.extend_from_slice(b"Content-Transfer-Encoding: base64\r\n");
        }
        body.extend_from_slice(format!("{header}: {value}\r\n").as_bytes());
        if rng.chance(30) {
            body.extend_from_slice(b"Content-Type: audio/wav\r\n");
        }
        if !plain && rng.chance(2) {
            let bad: [&[u8]; 3] = [b" folded\r\n", b"bad header\r\n", b"X: y\n"];
            body.extend_from_slice(rng.pick::<&[u8]>(&bad));
        }
        body.extend_from_slice(b"\r\n");
        let length = if name == "model" && rng.chance(90) {
            rng.below(60)
        } else {
            rng.below(400)
        };
        let pieces: [&[u8]; 9] = [
            b"\r",
            b"\n",
            b"-",
            b"\r\n",
            b"\r\n--",
            b"a",
            b"\x00\xff",
            boundary.as_bytes(),
            &boundary.as_bytes()[..boundary.len() / 2],
        ];
        let mut data = Vec::new();
        while data.len() < length {
            let piece = rng.pick::<&[u8]>(&pieces);
            data.extend_from_slice(piece);
        }
        // A complete delimiter in the data would end the part: the form writer's job is to
        // pick a boundary that does not occur, so keep the data free of it.
        let delimiter = format!("\r\n--{boundary}");
        while let Some(at) = data
            .windows(delimiter.len())
            .position(|w| w == delimiter.as_bytes())
        {
            data.remove(at + 1);
        }
        body.extend_from_slice(&data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--").as_bytes());
    if rng.chance(50) {
        body.extend_from_slice(b"\r\n");
    }
    if !plain && rng.chance(10) {
        body.extend_from_slice(format!("epilogue\r\n--{boundary}\r\n").as_bytes());
    }
    body
}

fn random_chunks<'a>(rng: &mut Rng, body: &'a [u8]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let most = if rng.chance(50) { 8 } else { 200 };
        let size = 1 + rng.below(rest.len().min(most));
        let (chunk, tail) = rest.split_at(size);
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

fn corrupt(rng: &mut Rng, body: &mut Vec<u8>) {
    if body.is_empty() {
        return;
    }
    let at = rng.below(body.len());
    match rng.below(4) {
        0 => body[at] = *rng.pick(&[b'\r', b'\n', b'-', b'"', b';', b' ', 0]),
        1 => {
            body.remove(at);
        }
        2 => body.insert(at, *rng.pick(b"\r\n-")),
        _ => body.truncate(at),
    }
}

#[test]
fn generated_forms_in_random_chunks_agree_with_the_reference() {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let boundaries = [
        "XyZ",
        "----WebKitFormBoundary7MA4YWxkTrZu0gW",
        "a",
        "b:c=d?",
    ];
    let (mut found, mut missing, mut refused) = (0, 0, 0);
    for case in 0..20_000 {
        let boundary = *rng.pick(&boundaries);
        let mut body = random_form(&mut rng, boundary, false);
        if rng.chance(30) {
            corrupt(&mut rng, &mut body);
        }
        let chunks = random_chunks(&mut rng, &body);
        let outcome =
            std::panic::catch_unwind(|| check(boundary.as_bytes(), MAX_MODEL, &body, &chunks));
        assert!(outcome.is_ok(), "case {case} (boundary {boundary:?})");
        match reference(boundary.as_bytes(), MAX_MODEL, &body) {
            Ok(Some(_)) => found += 1,
            Ok(None) => missing += 1,
            Err(_) => refused += 1,
        }
    }
    println!("found {found}, missing {missing}, refused {refused}");
    // The generator reaches every outcome, and often.
    assert!(
        found > 3000 && missing > 1000 && refused > 3000,
        "found {found}, missing {missing}, refused {refused}"
    );
}

#[test]
fn multer_reads_the_model_the_scanner_finds() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut rng = Rng(0xfeed_0042_dead_beef);
    let boundaries = ["XyZ", "----WebKitFormBoundary7MA4YWxkTrZu0gW", "a1"];
    let mut compared = 0;
    for case in 0..3000 {
        let boundary = *rng.pick(&boundaries);
        let body = random_form(&mut rng, boundary, true);
        let ours = reference(boundary.as_bytes(), MAX_MODEL, &body);
        let multer = runtime.block_on(llm_sim::audio::model_field(
            &content_type(boundary),
            Bytes::from(body.clone()),
        ));
        let body_text = String::from_utf8_lossy(&body);
        match ours {
            Ok(found) => {
                let ours = found.map(|f| String::from_utf8_lossy(&f.name).into_owned());
                assert_eq!(multer, Ok(ours), "case {case}: {body_text:?}");
                compared += 1;
            }
            // multer takes the first of two model fields; the filter refuses both.
            Err(MultipartError::DuplicateModel) => {
                assert!(multer.is_ok(), "case {case}: {body_text:?}");
            }
            Err(MultipartError::ModelTooLong { .. }) => {}
            Err(error) => panic!("case {case}: a plain form refused ({error:?}): {body_text:?}"),
        }
    }
    assert!(compared > 2000, "only {compared} forms compared");
}
