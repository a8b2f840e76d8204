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

mod grammar;

pub use grammar::boundary;

use super::FoundModel;
use grammar::{disposition_names_model, is_token};
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

#[cfg(test)]
mod tests;
