//! `multipart/form-data` for tests, benchmarks and fuzzing: a form encoder (as curl and the
//! OpenAI SDK write forms), and the multipart scanner's specification, executable: a
//! whole-body reading of a form written for clarity, not speed, that the incremental scanner
//! must agree with however the body is split.

use model_router::request::multipart::{
    Malformed, MultipartError, MultipartScanner, MAX_PART_HEADER_BYTES,
};
use model_router::request::FoundModel;

/// One part of a form.
#[derive(Debug, Clone)]
pub struct Part {
    pub name: String,
    pub file_name: Option<String>,
    pub content_type: Option<String>,
    pub data: Vec<u8>,
}

impl Part {
    /// A text field.
    pub fn field(name: &str, value: &str) -> Self {
        Self {
            name: name.to_owned(),
            file_name: None,
            content_type: None,
            data: value.as_bytes().to_vec(),
        }
    }

    /// A file, as `curl -F name=@file` sends it.
    pub fn file(name: &str, file_name: &str, content_type: &str, data: Vec<u8>) -> Self {
        Self {
            name: name.to_owned(),
            file_name: Some(file_name.to_owned()),
            content_type: Some(content_type.to_owned()),
            data,
        }
    }
}

/// The boundary of the forms tests and benchmarks send, in curl's style.
pub const BOUNDARY: &str = "------------------------a3f1c2d4e5b60718";

/// Bytes that look like audio: every byte value, CRs, LFs and dashes included.
pub fn audio(size: usize) -> Vec<u8> {
    (0..size as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect()
}

/// A transcription form (`language`, then the file) with the `model` field first, as the
/// OpenAI SDKs send it, or last, encoded with [`BOUNDARY`].
pub fn audio_form(model: &str, audio: Vec<u8>, model_last: bool) -> Vec<u8> {
    let mut parts = vec![
        Part::field("language", "en"),
        Part::file("file", "speech.wav", "audio/wav", audio),
    ];
    let model = Part::field("model", model);
    if model_last {
        parts.push(model);
    } else {
        parts.insert(0, model);
    }
    encode(BOUNDARY, &parts)
}

/// The content type of a form with this boundary.
pub fn content_type(boundary: &str) -> String {
    format!("multipart/form-data; boundary={boundary}")
}

/// The body of a form, written as curl writes it.
pub fn encode(boundary: &str, parts: &[Part]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let mut disposition = format!("Content-Disposition: form-data; name=\"{}\"", part.name);
        if let Some(file_name) = &part.file_name {
            disposition.push_str(&format!("; filename=\"{file_name}\""));
        }
        body.extend_from_slice(disposition.as_bytes());
        body.extend_from_slice(b"\r\n");
        if let Some(content_type) = &part.content_type {
            body.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(&part.data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

/// The scanner's reading of `body` fed in `chunks`.
pub fn scan(
    boundary: &[u8],
    max_model: usize,
    chunks: &[&[u8]],
) -> Result<Option<FoundModel>, MultipartError> {
    let mut scanner = MultipartScanner::new(boundary, max_model);
    for chunk in chunks {
        scanner.feed(chunk)?;
    }
    scanner.finish()
}

/// Checks one body, whole and in the given chunks, against [`reference`].
pub fn check(boundary: &[u8], max_model: usize, body: &[u8], chunks: &[&[u8]]) {
    let expected = reference(boundary, max_model, body);
    let whole = scan(boundary, max_model, &[body]);
    assert_eq!(
        whole,
        expected,
        "scanner and reference differ on {:?}",
        String::from_utf8_lossy(body)
    );
    assert_eq!(
        scan(boundary, max_model, chunks),
        expected,
        "chunking changed the outcome for {:?}",
        String::from_utf8_lossy(body)
    );
}

fn malformed(offset: usize, kind: Malformed) -> MultipartError {
    MultipartError::Malformed {
        offset: offset as u64,
        kind,
    }
}

/// The reading of a whole form the scanner must report (see its module docs): delimiters
/// found by a plain search, each header block split into lines, the first problem in byte
/// order deciding.
pub fn reference(
    boundary: &[u8],
    max_model: usize,
    body: &[u8],
) -> Result<Option<FoundModel>, MultipartError> {
    let delimiter = [b"\r\n--", boundary].concat();
    // The first delimiter may open the body without a CRLF: read as if one came first.
    let text = [b"\r\n", body].concat();
    let offset = |index: usize| index - 2;
    let end = text.len();
    let truncated = || {
        let kind = if body.is_empty() {
            Malformed::Empty
        } else {
            Malformed::Truncated
        };
        Err(malformed(body.len(), kind))
    };
    let find = |from: usize| {
        text[from..]
            .windows(delimiter.len())
            .position(|w| w == delimiter)
            .map(|at| from + at)
    };
    let Some(mut at) = find(0) else {
        return truncated();
    };
    let mut model: Option<FoundModel> = None;
    loop {
        let mut i = at + delimiter.len();
        // After the delimiter: "--" closes; else padding and CRLF.
        match text.get(i) {
            None => return truncated(),
            Some(b'-') => {
                return match text.get(i + 1) {
                    None => truncated(),
                    Some(b'-') => Ok(model),
                    Some(_) => Err(malformed(offset(i + 1), Malformed::AfterDelimiter)),
                }
            }
            Some(_) => {
                while i < end && (text[i] == b' ' || text[i] == b'\t') {
                    i += 1;
                }
                for expected in [b'\r', b'\n'] {
                    match text.get(i) {
                        None => return truncated(),
                        Some(&byte) if byte == expected => i += 1,
                        Some(_) => return Err(malformed(offset(i), Malformed::AfterDelimiter)),
                    }
                }
            }
        }
        // The header block, line by line; its bytes are counted from `i`.
        let too_large_at = i + MAX_PART_HEADER_BYTES;
        let mut headers = Headers::default();
        let content_start = loop {
            let line_end = text[i..]
                .iter()
                .position(|&b| b == b'\r' || b == b'\n')
                .map(|p| i + p);
            let Some(cr) = line_end else {
                return if too_large_at < end {
                    Err(malformed(
                        offset(too_large_at),
                        Malformed::HeaderBlockTooLarge,
                    ))
                } else {
                    truncated()
                };
            };
            if cr >= too_large_at {
                return Err(malformed(
                    offset(too_large_at),
                    Malformed::HeaderBlockTooLarge,
                ));
            }
            if text[cr] == b'\n' {
                return Err(malformed(offset(cr), Malformed::LineEnding));
            }
            let lf = cr + 1;
            if lf == end {
                return truncated();
            }
            if lf >= too_large_at {
                return Err(malformed(
                    offset(too_large_at),
                    Malformed::HeaderBlockTooLarge,
                ));
            }
            if text[lf] != b'\n' {
                return Err(malformed(offset(lf), Malformed::LineEnding));
            }
            let line = &text[i..cr];
            i = lf + 1;
            if line.is_empty() {
                if !headers.disposition {
                    return Err(malformed(offset(lf), Malformed::Disposition("is missing")));
                }
                if headers.is_model && model.is_some() {
                    return Err(MultipartError::DuplicateModel);
                }
                if headers.is_model && headers.encoded {
                    return Err(malformed(offset(lf), Malformed::TransferEncoding));
                }
                break i;
            }
            headers
                .read(line)
                .map_err(|kind| malformed(offset(lf), kind))?;
        };
        let next = find(content_start);
        let content_end = next.unwrap_or(end);
        if headers.is_model {
            if content_end - content_start > max_model {
                return Err(MultipartError::ModelTooLong { limit: max_model });
            }
            model = Some(FoundModel {
                name: text[content_start..content_end].to_vec(),
                value: offset(content_start) as u64..offset(content_end) as u64,
            });
        }
        match next {
            Some(next) => at = next,
            None => return truncated(),
        }
    }
}

/// What a header block said.
#[derive(Default)]
struct Headers {
    disposition: bool,
    is_model: bool,
    encoded: bool,
}

fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

impl Headers {
    fn read(&mut self, line: &[u8]) -> Result<(), Malformed> {
        if matches!(line[0], b' ' | b'\t') {
            return Err(Malformed::FoldedHeader);
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(Malformed::HeaderName)?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_token_byte(b)) {
            return Err(Malformed::HeaderName);
        }
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-disposition") {
            if self.disposition {
                return Err(Malformed::Disposition("is given twice"));
            }
            self.disposition = true;
            self.is_model = disposition_name(value)? == b"model";
        } else if name.eq_ignore_ascii_case(b"content-transfer-encoding") {
            let value = value.to_ascii_lowercase();
            self.encoded = !matches!(&value[..], b"7bit" | b"8bit" | b"binary");
        }
        Ok(())
    }
}

/// The `name` of a `form-data` disposition.
fn disposition_name(value: &[u8]) -> Result<Vec<u8>, Malformed> {
    let unreadable = Malformed::Disposition("cannot be read");
    let kind_end = value
        .iter()
        .position(|&b| !is_token_byte(b))
        .unwrap_or(value.len());
    if !value[..kind_end].eq_ignore_ascii_case(b"form-data") {
        return Err(Malformed::Disposition("is not form-data"));
    }
    let mut rest = &value[kind_end..];
    let mut name: Option<Vec<u8>> = None;
    while !rest.trim_ascii_start().is_empty() {
        rest = rest
            .trim_ascii_start()
            .strip_prefix(b";")
            .ok_or(unreadable)?
            .trim_ascii_start();
        let key_end = rest
            .iter()
            .position(|&b| !is_token_byte(b))
            .unwrap_or(rest.len());
        let key = rest[..key_end].to_ascii_lowercase();
        rest = rest[key_end..].trim_ascii_start();
        rest = rest
            .strip_prefix(b"=")
            .ok_or(unreadable)?
            .trim_ascii_start();
        if key.is_empty() {
            return Err(unreadable);
        }
        let (text, escaped);
        if let Some(quoted) = rest.strip_prefix(b"\"") {
            let mut out = Vec::new();
            let mut had_escape = false;
            let mut k = 0;
            let close = loop {
                match quoted.get(k) {
                    None | Some(b'\r' | b'\n' | 0) => return Err(unreadable),
                    Some(b'"') => break k,
                    Some(b'\\') => {
                        had_escape = true;
                        out.push(*quoted.get(k + 1).ok_or(unreadable)?);
                        k += 2;
                    }
                    Some(&b) => {
                        out.push(b);
                        k += 1;
                    }
                }
            };
            rest = &quoted[close + 1..];
            (text, escaped) = (out, had_escape);
        } else {
            let len = rest
                .iter()
                .position(|&b| !is_token_byte(b))
                .unwrap_or(rest.len());
            if len == 0 {
                return Err(unreadable);
            }
            (text, escaped) = (rest[..len].to_vec(), false);
            rest = &rest[len..];
        }
        match &key[..] {
            b"name*" => return Err(Malformed::Disposition("has a name* parameter")),
            b"name" if name.is_some() => return Err(Malformed::Disposition("has two names")),
            b"name" if escaped => {
                return Err(Malformed::Disposition("has a backslash in its name"))
            }
            b"name" => name = Some(text),
            _ => {}
        }
    }
    name.ok_or(Malformed::Disposition("has no name"))
}
