//! The scanner on client-written, unusual and broken forms, each split at every byte.

use super::*;

const BOUNDARY: &[u8] = b"XyZ";

fn scan_chunks(chunks: &[&[u8]], max: usize) -> Result<Option<FoundModel>, MultipartError> {
    let mut scanner = MultipartScanner::new(BOUNDARY, max);
    for chunk in chunks {
        scanner.feed(chunk)?;
    }
    scanner.finish()
}

/// The outcome of `body`, checked to be the same however it is split in two or fed byte
/// by byte.
fn scan(body: &[u8]) -> Result<Option<FoundModel>, MultipartError> {
    let whole = scan_chunks(&[body], 16);
    for at in 0..=body.len() {
        assert_eq!(
            scan_chunks(&[&body[..at], &body[at..]], 16),
            whole,
            "split at {at}: {:?}",
            String::from_utf8_lossy(body)
        );
    }
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(scan_chunks(&bytes, 16), whole, "byte by byte");
    whole
}

fn model(body: &[u8]) -> Option<String> {
    let found = scan(body).unwrap_or_else(|e| panic!("{e:?}"))?;
    let value = &body[found.value.start as usize..found.value.end as usize];
    assert_eq!(value, found.name, "the span is the value");
    Some(String::from_utf8(found.name).unwrap())
}

fn malformed(body: &[u8]) -> (u64, Malformed) {
    match scan(body) {
        Err(MultipartError::Malformed { offset, kind }) => (offset, kind),
        other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(body)),
    }
}

fn field(name: &str, value: &str) -> String {
    format!("--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
}

const CLOSE: &str = "--XyZ--\r\n";
#[test]
fn finds_the_model_field_wherever_it_stands() {
    let audio = "RIFF\0\0\r\n--Xy\r\n-\r\r\n--XyZZ not a delimiter?";
    let body = format!(
        "{}{}{}{CLOSE}",
        field("file", audio),
        field("model", "whisper-1"),
        field("language", "en")
    );
    // "--XyZZ" is a delimiter followed by a bad byte: not in this body's file part.
    assert_eq!(
        malformed(body.as_bytes()).1,
        Malformed::AfterDelimiter,
        "a boundary inside content is a delimiter"
    );
    let audio = "RIFF\0\0\r\n--Xy\r\n-\r\r\n--X\r\n";
    for fields in [
        [field("model", "whisper-1"), field("file", audio)],
        [field("file", audio), field("model", "whisper-1")],
    ] {
        let body = format!("{}{}{CLOSE}", fields[0], fields[1]);
        assert_eq!(model(body.as_bytes()).as_deref(), Some("whisper-1"));
    }
}

#[test]
fn reads_what_rfc_2046_allows_around_the_parts() {
    let body = "preamble\r\n--XyZ \t\r\ncontent-disposition:form-data;name=model\r\n\
         Content-Type: text/plain; charset=utf-8\r\ncontent-transfer-encoding: 8BIT\r\n\r\n\
         m1\r\n--XyZ--  epilogue\r\n--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nx";
    assert_eq!(model(body.as_bytes()).as_deref(), Some("m1"));
    // Values keep every byte: CR, LF, dashes, spaces (check_model judges them later).
    let body = format!("{}{CLOSE}", field("model", " a\r\nb--XyZ "));
    assert_eq!(model(body.as_bytes()).as_deref(), Some(" a\r\nb--XyZ "));
    let body = format!("{}{CLOSE}", field("model", ""));
    assert_eq!(model(body.as_bytes()).as_deref(), Some(""));
}

#[test]
fn no_model_field_is_no_model() {
    let body = format!("{}{}{CLOSE}", field("file", "x"), field("Model", "m"));
    assert_eq!(model(body.as_bytes()), None);
    assert_eq!(model(b"--XyZ--"), None);
    // A part with a filename is still a field by its name.
    let body = "--XyZ\r\nContent-Disposition: form-data; filename=\"model\"; name=file\r\n\r\nm\r\n--XyZ--";
    assert_eq!(model(body.as_bytes()), None);
}

#[test]
fn refuses_a_second_model_field() {
    let body = format!("{}{}{CLOSE}", field("model", "a"), field("model", "a"));
    assert_eq!(scan(body.as_bytes()), Err(MultipartError::DuplicateModel));
}

#[test]
fn refuses_a_model_over_the_limit_however_it_ends() {
    let body = format!("{}{CLOSE}", field("model", &"m".repeat(16)));
    assert_eq!(model(body.as_bytes()).map(|m| m.len()), Some(16));
    let body = format!("{}{CLOSE}", field("model", &"m".repeat(17)));
    assert_eq!(
        scan(body.as_bytes()),
        Err(MultipartError::ModelTooLong { limit: 16 })
    );
    // Cut off inside what could have been a delimiter: the held bytes were the value's.
    let body = format!(
        "--XyZ\r\nContent-Disposition: form-data; name=model\r\n\r\n{}\r\n--X",
        "m".repeat(12)
    );
    assert_eq!(
        scan(body.as_bytes()),
        Err(MultipartError::ModelTooLong { limit: 16 })
    );
}

#[test]
fn reports_each_malformation_with_its_offset() {
    let header_block = |headers: &str| format!("--XyZ\r\n{headers}\r\n\r\nv\r\n--XyZ--");
    let disposition = |value: &str| header_block(&format!("Content-Disposition: {value}"));
    let cases: Vec<(String, u64, Malformed)> = vec![
        (String::new(), 0, Malformed::Empty),
        ("no delimiter".into(), 12, Malformed::Truncated),
        ("--XyZ".into(), 5, Malformed::Truncated),
        (field("model", "m"), 58, Malformed::Truncated),
        ("--XyZx".into(), 5, Malformed::AfterDelimiter),
        ("--XyZ-x".into(), 6, Malformed::AfterDelimiter),
        ("--XyZ \r\r".into(), 7, Malformed::AfterDelimiter),
        ("--XyZ\ra".into(), 6, Malformed::AfterDelimiter),
        ("--XyZ\r\nname: v\n".into(), 14, Malformed::LineEnding),
        ("--XyZ\r\nname: v\rx".into(), 15, Malformed::LineEnding),
        (
            header_block("Content-Disposition: form-data; name=a\r\n folded"),
            55,
            Malformed::FoldedHeader,
        ),
        (
            header_block("Content-Disposition : form-data; name=a"),
            47,
            Malformed::HeaderName,
        ),
        (header_block("no colon"), 16, Malformed::HeaderName),
        (
            header_block("X-Other: 1"),
            20,
            Malformed::Disposition("is missing"),
        ),
        (
            disposition("attachment; name=a"),
            47,
            Malformed::Disposition("is not form-data"),
        ),
        (
            disposition("form-data"),
            38,
            Malformed::Disposition("has no name"),
        ),
        (
            disposition("form-data; name=a; name=b"),
            54,
            Malformed::Disposition("has two names"),
        ),
        (
            disposition("form-data; name*=UTF-8''model"),
            58,
            Malformed::Disposition("has a name* parameter"),
        ),
        (
            disposition("form-data; name=\"mod\\el\""),
            53,
            Malformed::Disposition("has a backslash in its name"),
        ),
        (
            disposition("form-data; name=\"model"),
            51,
            Malformed::Disposition("cannot be read"),
        ),
        (
            disposition("form-data, name=model"),
            50,
            Malformed::Disposition("cannot be read"),
        ),
        (
            header_block(
                "Content-Disposition: form-data; name=a\r\nContent-Disposition: form-data; name=b",
            ),
            86,
            Malformed::Disposition("is given twice"),
        ),
        (
            header_block(
                "Content-Transfer-Encoding: base64\r\nContent-Disposition: form-data; name=model",
            ),
            87,
            Malformed::TransferEncoding,
        ),
    ];
    for (body, offset, kind) in cases {
        assert_eq!(malformed(body.as_bytes()), (offset, kind), "{body:?}");
    }
    // Another part may say it is encoded: its content is never read.
    let body = header_block(
        "Content-Transfer-Encoding: base64\r\nContent-Disposition: form-data; name=file",
    );
    assert_eq!(model(body.as_bytes()), None);
}

#[test]
fn header_blocks_are_bounded() {
    let fill = "x".repeat(MAX_PART_HEADER_BYTES);
    let body = format!("--XyZ\r\nX-Fill: {fill}\r\n\r\n");
    assert_eq!(
        malformed(body.as_bytes()),
        (
            7 + MAX_PART_HEADER_BYTES as u64,
            Malformed::HeaderBlockTooLarge
        )
    );
    let fill = "x".repeat(MAX_PART_HEADER_BYTES - 60);
    let body = format!(
        "--XyZ\r\nContent-Disposition: form-data; name=model\r\nX: {fill}\r\n\r\nm\r\n--XyZ--"
    );
    let headers = body.find("\r\n\r\n").unwrap() + 4 - 7;
    assert!(headers <= MAX_PART_HEADER_BYTES);
    assert_eq!(model(body.as_bytes()).as_deref(), Some("m"));
}

#[test]
fn file_parts_of_any_size_are_streamed_past() {
    let mut body = field("file", "").into_bytes();
    body.truncate(body.len() - 2);
    let data: Vec<u8> = (0..1_000_000u32)
        .map(|i| [b'\r', b'\n', b'-', b'X', b'y', (i % 251) as u8][(i % 7 % 6) as usize])
        .collect();
    body.extend_from_slice(&data);
    body.extend_from_slice(format!("\r\n{}{CLOSE}", field("model", "m")).as_bytes());
    let mut scanner = MultipartScanner::new(BOUNDARY, 16);
    for chunk in body.chunks(65_536) {
        scanner.feed(chunk).unwrap();
    }
    let found = scanner.finish().unwrap().unwrap();
    assert_eq!(found.name, b"m");
    assert_eq!(
        &body[found.value.start as usize..found.value.end as usize],
        b"m"
    );
}
