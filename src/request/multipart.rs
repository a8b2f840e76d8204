//! Incremental scanner that finds the `model` form field of a `multipart/form-data` body
//! (RFC 7578 over RFC 2046 §5.1), as OpenAI's audio APIs take it.
//!
//! [`boundary`] reads the boundary from the request's content type; [`MultipartScanner`] is
//! then fed the body chunk by chunk, in order. A delimiter, a header line or the model value
//! may be split at any byte. Part contents are streamed past with a substring search for the
//! delimiter (`CRLF--boundary`) and never kept; what the scanner keeps is bounded whatever the
//! body size: the current header line (at most [`MAX_PART_HEADER_BYTES`] for a part's whole
//! header block) and the model value (at most the configured maximum).
//!
//! It accepts:
//! - a boundary of 1 to 70 characters of RFC 2046's `bchars` (no trailing space), as a token
//!   or a quoted string, given once;
//! - an optional preamble before the first delimiter and anything after the closing one;
//! - transport padding (spaces, tabs) after a delimiter;
//! - parts whose header block has exactly one `Content-Disposition: form-data` with exactly
//!   one `name` parameter (a token or a quoted string); other headers and parameters are
//!   read past.
//!
//! It refuses, as a broken body ([`MultipartError::Malformed`]): lines not ended by CRLF,
//! folded or colon-less header lines, a header block over the limit, a part without a
//! usable `Content-Disposition`, a body that ends before the closing delimiter; and, because
//! another parser could read them differently from this one and route by one field while
//! the backend reads another: `name*` parameters, backslashes in a field name, and a
//! `Content-Transfer-Encoding` other than 7bit, 8bit or binary on the `model` part. A second
//! `model` part is [`MultipartError::DuplicateModel`]. The field name is compared exactly
//! (`model`, case-sensitive, as form fields are); the value is taken as raw bytes. The first
//! problem in byte order decides the error.

use super::FoundModel;
use memchr::memmem::Finder;
use std::fmt;
use std::ops::Range;

/// Longest boundary RFC 2046 allows.
pub const MAX_BOUNDARY_BYTES: usize = 70;
/// Largest header block of one part, CRLFs included.
pub const MAX_PART_HEADER_BYTES: usize = 16 * 1024;

const MODEL_FIELD: &[u8] = b"model";

/// Why a multipart body (or its content type) was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultipartError {
    /// The body is not well-formed `multipart/form-data`; `offset` is the index of the
    /// offending byte (or the body length when it ends too early).
    Malformed { offset: u64, kind: Malformed },
    /// A second part is named `model`.
    DuplicateModel,
    /// The model value is longer than the limit, in bytes.
    ModelTooLong { limit: usize },
}

/// What is wrong with a multipart body or its content type, each with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// The content type has no `boundary`, more than one, or an invalid one.
    Boundary(&'static str),
    Empty,
    Truncated,
    /// Something other than `--`, padding or CRLF after a delimiter.
    AfterDelimiter,
    /// A CR not followed by LF, or a bare LF, in a header block.
    LineEnding,
    HeaderBlockTooLarge,
    FoldedHeader,
    HeaderName,
    Disposition(&'static str),
    TransferEncoding,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Boundary(what) => write!(f, "the content type's boundary {what}"),
            Self::Empty => f.write_str("the body is empty"),
            Self::Truncated => f.write_str("the body ends before the closing boundary"),
            Self::AfterDelimiter => {
                f.write_str("a boundary must be followed by CRLF, or by '--' to close the body")
            }
            Self::LineEnding => f.write_str("part header lines must end with CRLF"),
            Self::HeaderBlockTooLarge => {
                write!(f, "a part's headers exceed {MAX_PART_HEADER_BYTES} bytes")
            }
            Self::FoldedHeader => f.write_str("folded part header lines are not accepted"),
            Self::HeaderName => f.write_str("a part header line has no valid name and ':'"),
            Self::Disposition(what) => write!(f, "a part's Content-Disposition {what}"),
            Self::TransferEncoding => f.write_str(
                "the model part's Content-Transfer-Encoding must be 7bit, 8bit or binary",
            ),
        }
    }
}

fn content_type_error(what: &'static str) -> MultipartError {
    MultipartError::Malformed {
        offset: 0,
        kind: Malformed::Boundary(what),
    }
}

/// The boundary of a `multipart/form-data` content type; `Ok(None)` for any other media
/// type. Parameters are `;`-separated `name=value` pairs, names compared without case,
/// values a token or a quoted string (RFC 9110 §5.6.6).
pub fn boundary(content_type: &[u8]) -> Result<Option<Vec<u8>>, MultipartError> {
    let (media_type, mut rest) = match content_type.iter().position(|&b| b == b';') {
        Some(at) => (&content_type[..at], &content_type[at..]),
        None => (content_type, &b""[..]),
    };
    if !media_type
        .trim_ascii()
        .eq_ignore_ascii_case(b"multipart/form-data")
    {
        return Ok(None);
    }
    let mut boundary = None;
    loop {
        rest = rest.trim_ascii_start();
        let Some(after) = rest.strip_prefix(b";") else {
            if rest.is_empty() {
                break;
            }
            return Err(content_type_error("cannot be read: bad parameter syntax"));
        };
        rest = after.trim_ascii_start();
        if rest.is_empty() {
            break;
        }
        let name_len = rest.iter().take_while(|&&b| is_token(b)).count();
        let (name, after) = rest.split_at(name_len);
        let after = after
            .strip_prefix(b"=")
            .filter(|_| name_len > 0)
            .ok_or_else(|| content_type_error("cannot be read: bad parameter syntax"))?;
        let parameter = parameter_value(after)
            .ok_or_else(|| content_type_error("cannot be read: bad parameter value"))?;
        rest = parameter.rest;
        if name.eq_ignore_ascii_case(b"boundary") {
            if boundary.is_some() {
                return Err(content_type_error("is given twice"));
            }
            boundary = Some(parameter.value);
        }
    }
    let boundary = boundary.ok_or_else(|| content_type_error("is missing"))?;
    let valid_chars = boundary.iter().all(|&b| is_bchar(b));
    if boundary.is_empty()
        || boundary.len() > MAX_BOUNDARY_BYTES
        || !valid_chars
        || boundary.ends_with(b" ")
    {
        return Err(content_type_error(
            "must be 1 to 70 of RFC 2046's characters, not ending with a space",
        ));
    }
    Ok(Some(boundary))
}

/// A parameter value read from the start of `text`.
struct ParameterValue<'a> {
    /// The token, or the quoted string's content unescaped.
    value: Vec<u8>,
    /// The quoted string had backslash escapes.
    escaped: bool,
    rest: &'a [u8],
}

/// A parameter value at the start of `text`, a token or a quoted string; `None` when it is
/// neither.
fn parameter_value(text: &[u8]) -> Option<ParameterValue<'_>> {
    let Some(quoted) = text.strip_prefix(b"\"") else {
        let len = text.iter().take_while(|&&b| is_token(b)).count();
        return (len > 0).then(|| ParameterValue {
            value: text[..len].to_vec(),
            escaped: false,
            rest: &text[len..],
        });
    };
    let mut value = Vec::new();
    let mut escaped = false;
    let mut bytes = quoted.iter().enumerate();
    while let Some((at, &byte)) = bytes.next() {
        match byte {
            b'"' => {
                return Some(ParameterValue {
                    value,
                    escaped,
                    rest: &quoted[at + 1..],
                })
            }
            b'\\' => {
                escaped = true;
                value.push(*bytes.next()?.1);
            }
            b'\r' | b'\n' | 0 => return None,
            _ => value.push(byte),
        }
    }
    None
}

/// RFC 9110 `tchar`.
fn is_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// RFC 2046 `bchars`.
fn is_bchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&byte)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a part's content (or the preamble), looking for the next delimiter.
    Data,
    /// Right after a delimiter: `--`, padding or CRLF.
    AfterDelimiter,
    /// After a delimiter and one `-`: expects the second.
    CloseDash,
    /// Transport padding after a delimiter, until CR.
    Padding,
    /// After a CR that ends a delimiter line: expects LF.
    DelimiterLf,
    /// Reading a part header line (possibly the empty one that ends the block).
    HeaderLine,
    /// After a CR in a header line: expects LF.
    HeaderLf,
    /// After the closing delimiter: the epilogue, ignored.
    Epilogue,
}

/// What the part being read is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The preamble before the first delimiter.
    Preamble,
    Other,
    /// The `model` field, whose content is kept.
    Model,
}

/// What the header block of the part being read said so far.
#[derive(Debug, Default)]
struct PartHeaders {
    /// Bytes of the block so far, CRLFs included.
    bytes: usize,
    disposition: bool,
    is_model: bool,
    /// A `Content-Transfer-Encoding` that changes the bytes (base64, quoted-printable...).
    encoded: bool,
}

/// Finds the `model` field of a multipart body fed in chunks. See the module docs.
#[derive(Debug)]
pub struct MultipartScanner {
    /// `CRLF--boundary`.
    delimiter: Vec<u8>,
    finder: Finder<'static>,
    state: State,
    /// Bytes of the delimiter matched at the end of what was fed, while in [`State::Data`].
    matched: usize,
    part: Part,
    headers: PartHeaders,
    /// The header line being read.
    line: Vec<u8>,
    model: Option<Vec<u8>>,
    /// Offsets of the model value: where its content starts, then where the delimiter after
    /// it starts (set once the value has ended).
    model_span: Range<u64>,
    max_model_bytes: usize,
    /// Bytes consumed by earlier chunks.
    consumed: u64,
}

impl MultipartScanner {
    /// A scanner for parts delimited by `boundary` (as [`boundary`] returns it) that refuses
    /// model values longer than `max_model_bytes`.
    pub fn new(boundary: &[u8], max_model_bytes: usize) -> Self {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary);
        Self {
            finder: Finder::new(&delimiter).into_owned(),
            delimiter,
            state: State::Data,
            // The body may start with the delimiter itself, without a CRLF before it: scan
            // as if a CRLF had been read, and the preamble is empty.
            matched: 2,
            part: Part::Preamble,
            headers: PartHeaders::default(),
            line: Vec::new(),
            model: None,
            model_span: 0..0,
            max_model_bytes,
            consumed: 0,
        }
    }

    /// Bytes fed so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Scans the next chunk of the body. After an error the scanner must not be fed again.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), MultipartError> {
        let mut i = 0;
        while i < chunk.len() {
            i = match self.state {
                State::Data => self.data(chunk, i)?,
                State::Epilogue => chunk.len(),
                _ => {
                    self.step(chunk[i], i)?;
                    i + 1
                }
            };
        }
        self.consumed += chunk.len() as u64;
        Ok(())
    }

    /// Ends the body: the model field's value and where it stands, if there was one.
    pub fn finish(mut self) -> Result<Option<FoundModel>, MultipartError> {
        if self.state != State::Epilogue {
            // Bytes held as the start of a delimiter that never came were content.
            if self.part == Part::Model && self.matched > 0 {
                let held = self.delimiter[..self.matched].to_vec();
                self.push_model(&held)?;
            }
            let kind = if self.consumed == 0 {
                Malformed::Empty
            } else {
                Malformed::Truncated
            };
            return Err(MultipartError::Malformed {
                offset: self.consumed,
                kind,
            });
        }
        Ok(self.model.map(|name| FoundModel {
            name,
            value: self.model_span,
        }))
    }

    fn malformed(&self, index: usize, kind: Malformed) -> MultipartError {
        MultipartError::Malformed {
            offset: self.consumed + index as u64,
            kind,
        }
    }

    /// Reads part content from `chunk[i..]` up to and including the next delimiter, or to the
    /// end of the chunk; returns the index after what was read.
    fn data(&mut self, chunk: &[u8], mut i: usize) -> Result<usize, MultipartError> {
        // A delimiter begun in an earlier chunk: the rest must follow now.
        while self.matched > 0 && i < chunk.len() {
            if chunk[i] == self.delimiter[self.matched] {
                self.matched += 1;
                i += 1;
                if self.matched == self.delimiter.len() {
                    self.end_part(i)?;
                    return Ok(i);
                }
            } else {
                // Not a delimiter after all: what was matched is content. The delimiter's
                // only CR is its first byte, so no later match can begin inside it.
                let matched = std::mem::take(&mut self.matched);
                let held = &self.delimiter[..matched];
                if self.part == Part::Model {
                    let held = held.to_vec();
                    self.push_model(&held)?;
                }
            }
        }
        if i == chunk.len() {
            return Ok(i);
        }
        let rest = &chunk[i..];
        let (content, next) = match self.finder.find(rest) {
            Some(at) => (&rest[..at], Some(at + self.delimiter.len())),
            None => {
                // The chunk may end with the start of a delimiter: hold it back.
                let tail = rest.len().saturating_sub(self.delimiter.len() - 1);
                let partial = memchr::memrchr(b'\r', &rest[tail..])
                    .map(|at| tail + at)
                    .filter(|&at| self.delimiter.starts_with(&rest[at..]));
                match partial {
                    Some(at) => {
                        self.matched = rest.len() - at;
                        (&rest[..at], None)
                    }
                    None => (rest, None),
                }
            }
        };
        if self.part == Part::Model {
            self.push_model(content)?;
        }
        match next {
            Some(after) => {
                self.end_part(i + after)?;
                Ok(i + after)
            }
            None => Ok(chunk.len()),
        }
    }

    fn push_model(&mut self, bytes: &[u8]) -> Result<(), MultipartError> {
        if let Some(model) = &mut self.model {
            if model.len() + bytes.len() > self.max_model_bytes {
                return Err(MultipartError::ModelTooLong {
                    limit: self.max_model_bytes,
                });
            }
            model.extend_from_slice(bytes);
        }
        Ok(())
    }

    /// A delimiter ended just before `chunk[end]`.
    fn end_part(&mut self, end: usize) -> Result<(), MultipartError> {
        if self.part == Part::Model {
            self.model_span.end = self.consumed + end as u64 - self.delimiter.len() as u64;
        }
        self.matched = 0;
        self.state = State::AfterDelimiter;
        Ok(())
    }

    /// Takes one byte outside part content, at `index` in the current chunk.
    fn step(&mut self, byte: u8, index: usize) -> Result<(), MultipartError> {
        match self.state {
            State::AfterDelimiter => match byte {
                b'-' => self.state = State::CloseDash,
                b' ' | b'\t' => self.state = State::Padding,
                b'\r' => self.state = State::DelimiterLf,
                _ => return Err(self.malformed(index, Malformed::AfterDelimiter)),
            },
            State::CloseDash => match byte {
                b'-' => self.state = State::Epilogue,
                _ => return Err(self.malformed(index, Malformed::AfterDelimiter)),
            },
            State::Padding => match byte {
                b' ' | b'\t' => {}
                b'\r' => self.state = State::DelimiterLf,
                _ => return Err(self.malformed(index, Malformed::AfterDelimiter)),
            },
            State::DelimiterLf => match byte {
                b'\n' => {
                    self.headers = PartHeaders::default();
                    self.line.clear();
                    self.state = State::HeaderLine;
                }
                _ => return Err(self.malformed(index, Malformed::AfterDelimiter)),
            },
            State::HeaderLine => {
                self.count_header_byte(index)?;
                match byte {
                    b'\r' => self.state = State::HeaderLf,
                    b'\n' => return Err(self.malformed(index, Malformed::LineEnding)),
                    _ => self.line.push(byte),
                }
            }
            State::HeaderLf => {
                self.count_header_byte(index)?;
                if byte != b'\n' {
                    return Err(self.malformed(index, Malformed::LineEnding));
                }
                if self.line.is_empty() {
                    self.start_content(index)?;
                } else {
                    let line = std::mem::take(&mut self.line);
                    let read = self.header_line(&line);
                    self.line = line;
                    self.line.clear();
                    read.map_err(|kind| self.malformed(index, kind))?;
                    self.state = State::HeaderLine;
                }
            }
            State::Data | State::Epilogue => unreachable!("handled by feed"),
        }
        Ok(())
    }

    fn count_header_byte(&mut self, index: usize) -> Result<(), MultipartError> {
        self.headers.bytes += 1;
        if self.headers.bytes > MAX_PART_HEADER_BYTES {
            return Err(self.malformed(index, Malformed::HeaderBlockTooLarge));
        }
        Ok(())
    }

    /// The header block ended with the LF at `index`: the part's content follows.
    fn start_content(&mut self, index: usize) -> Result<(), MultipartError> {
        if !self.headers.disposition {
            return Err(self.malformed(index, Malformed::Disposition("is missing")));
        }
        self.part = if self.headers.is_model {
            if self.model.is_some() {
                return Err(MultipartError::DuplicateModel);
            }
            if self.headers.encoded {
                return Err(self.malformed(index, Malformed::TransferEncoding));
            }
            self.model = Some(Vec::new());
            let start = self.consumed + index as u64 + 1;
            self.model_span = start..start;
            Part::Model
        } else {
            Part::Other
        };
        self.state = State::Data;
        Ok(())
    }

    /// Reads one complete header line of a part.
    fn header_line(&mut self, line: &[u8]) -> Result<(), Malformed> {
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(Malformed::FoldedHeader);
        }
        let name_len = line.iter().take_while(|&&b| is_token(b)).count();
        if name_len == 0 || line.get(name_len) != Some(&b':') {
            return Err(Malformed::HeaderName);
        }
        let name = &line[..name_len];
        let value = line[name_len + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-disposition") {
            if self.headers.disposition {
                return Err(Malformed::Disposition("is given twice"));
            }
            self.headers.disposition = true;
            self.headers.is_model = disposition_names_model(value)?;
        } else if name.eq_ignore_ascii_case(b"content-transfer-encoding") {
            self.headers.encoded = !["7bit", "8bit", "binary"]
                .iter()
                .any(|identity| value.eq_ignore_ascii_case(identity.as_bytes()));
        }
        Ok(())
    }
}

/// Reads a `Content-Disposition` value: whether it is `form-data` named `model`.
fn disposition_names_model(value: &[u8]) -> Result<bool, Malformed> {
    let type_len = value.iter().take_while(|&&b| is_token(b)).count();
    if !value[..type_len].eq_ignore_ascii_case(b"form-data") {
        return Err(Malformed::Disposition("is not form-data"));
    }
    let mut rest = &value[type_len..];
    let mut name = None;
    loop {
        rest = rest.trim_ascii_start();
        if rest.is_empty() {
            break;
        }
        let after = rest
            .strip_prefix(b";")
            .ok_or(Malformed::Disposition("cannot be read"))?
            .trim_ascii_start();
        let param_len = after.iter().take_while(|&&b| is_token(b)).count();
        let (param, after) = after.split_at(param_len);
        let after = after
            .trim_ascii_start()
            .strip_prefix(b"=")
            .filter(|_| param_len > 0)
            .ok_or(Malformed::Disposition("cannot be read"))?
            .trim_ascii_start();
        let parameter = parameter_value(after).ok_or(Malformed::Disposition("cannot be read"))?;
        rest = parameter.rest;
        if param.eq_ignore_ascii_case(b"name*") {
            return Err(Malformed::Disposition("has a name* parameter"));
        }
        if param.eq_ignore_ascii_case(b"name") {
            if name.is_some() {
                return Err(Malformed::Disposition("has two names"));
            }
            // Parsers differ on backslashes in quoted strings (RFC 7578 leaves them out):
            // a name another parser could read differently is refused.
            if parameter.escaped {
                return Err(Malformed::Disposition("has a backslash in its name"));
            }
            name = Some(parameter.value);
        }
    }
    let name = name.ok_or(Malformed::Disposition("has no name"))?;
    Ok(name == MODEL_FIELD)
}

#[cfg(test)]
mod tests {
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
    fn boundaries_are_read_from_the_content_type() {
        let ok = |content_type: &str| {
            boundary(content_type.as_bytes())
                .unwrap()
                .map(|b| String::from_utf8(b).unwrap())
        };
        assert_eq!(
            ok("multipart/form-data; boundary=abc").as_deref(),
            Some("abc")
        );
        assert_eq!(
            ok("Multipart/Form-Data ;charset=utf-8; BOUNDARY=\"a b:c=d?\"").as_deref(),
            Some("a b:c=d?")
        );
        assert_eq!(
            ok("multipart/form-data; boundary=\"a\\bc\"").as_deref(),
            Some("abc")
        );
        assert_eq!(
            ok(&format!("multipart/form-data;boundary={}", "b".repeat(70))).map(|b| b.len()),
            Some(70)
        );
        for other in [
            "application/json",
            "",
            "multipart/mixed; boundary=a",
            "text/plain",
        ] {
            assert_eq!(ok(other), None, "{other}");
        }
        for bad in [
            "multipart/form-data",
            "multipart/form-data; charset=utf-8",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=\"\"",
            "multipart/form-data; boundary=a; boundary=b",
            "multipart/form-data; boundary=\"a \"",
            "multipart/form-data; boundary=\"a\"b",
            "multipart/form-data; boundary=\"a",
            "multipart/form-data; boundary=a{b",
            "multipart/form-data; boundary=\"a\rb\"",
            "multipart/form-data; =a",
        ] {
            assert!(
                matches!(
                    boundary(bad.as_bytes()),
                    Err(MultipartError::Malformed {
                        offset: 0,
                        kind: Malformed::Boundary(_)
                    })
                ),
                "{bad}"
            );
        }
        let long = format!("multipart/form-data; boundary={}", "b".repeat(71));
        assert!(boundary(long.as_bytes()).is_err());
    }

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
            (header_block("Content-Disposition: form-data; name=a\r\n folded"), 55, Malformed::FoldedHeader),
            (header_block("Content-Disposition : form-data; name=a"), 47, Malformed::HeaderName),
            (header_block("no colon"), 16, Malformed::HeaderName),
            (header_block("X-Other: 1"), 20, Malformed::Disposition("is missing")),
            (disposition("attachment; name=a"), 47, Malformed::Disposition("is not form-data")),
            (disposition("form-data"), 38, Malformed::Disposition("has no name")),
            (disposition("form-data; name=a; name=b"), 54, Malformed::Disposition("has two names")),
            (disposition("form-data; name*=UTF-8''model"), 58, Malformed::Disposition("has a name* parameter")),
            (disposition("form-data; name=\"mod\\el\""), 53, Malformed::Disposition("has a backslash in its name")),
            (disposition("form-data; name=\"model"), 51, Malformed::Disposition("cannot be read")),
            (disposition("form-data, name=model"), 50, Malformed::Disposition("cannot be read")),
            (
                header_block("Content-Disposition: form-data; name=a\r\nContent-Disposition: form-data; name=b"),
                86,
                Malformed::Disposition("is given twice"),
            ),
            (
                header_block("Content-Transfer-Encoding: base64\r\nContent-Disposition: form-data; name=model"),
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
}
