//! Incremental JSON scanner that finds the top-level `"model"` string of a request body.
//!
//! [`ModelScanner`] is fed the body chunk by chunk, in order, and looks at every byte exactly
//! once; a key, a value, an escape or a UTF-8 sequence may be split at any byte. It keeps a
//! fixed amount of state whatever the body size: nesting is a depth counter plus one bit per
//! level (object or array), never recursion, and the only buffer is the decoded model name,
//! capped at the configured maximum.
//!
//! It accepts exactly RFC 8259 JSON whose top-level value is an object, with these limits:
//! - nesting deeper than [`MAX_DEPTH`] is refused (serde_json's own limit is 127);
//! - a UTF-8 byte order mark is refused, as serde_json does;
//! - numbers are checked against the grammar only: `1e999` is accepted;
//! - escapes must form valid Unicode: a lone surrogate (`"\ud800"`) is refused everywhere.
//!
//! Only a key of the top-level object counts as the model key, compared after escapes are
//! decoded (`"mod\u0065l"` is `model`). The first problem in byte order decides the error, so
//! a body is refused as soon as it is known to be unacceptable: a second top-level `model`
//! key, a model value that is not a string, a model longer than the limit, or a syntax error.
//!
//! On the way it notes what adding `stream_options` needs ([`StreamShape`]): where the object
//! starts, whether the top-level `stream` is `true` and whether a `stream_options` key exists.
//! When asked ([`ModelScanner::with_prompt`]), it also hands the endpoint picker's
//! [`PromptTemplate`] the decoded `role` and `content` strings of the top-level `messages`
//! array's objects, and the top-level `prompt` string, in the same single pass.

use super::FoundModel;
use crate::picker::prompt::{Field, PromptTemplate};
use std::fmt;
use std::ops::Range;

/// Deepest nesting of objects and arrays accepted, the top-level object included.
pub const MAX_DEPTH: u32 = 128;

/// Longest key the scanner compares (`stream_options`); longer ones match nothing.
const KEY_CAPACITY: usize = 16;
/// `key_len` once the key being read is longer than [`KEY_CAPACITY`].
const KEY_TOO_LONG: u8 = u8::MAX;

/// Why a body was refused by the scanner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    /// The body is not valid JSON; `offset` is the index of the offending byte (or the body
    /// length when it ends too early).
    Syntax { offset: u64, kind: SyntaxError },
    /// The body is valid up to a top-level value that is not an object.
    NotAnObject,
    /// The top-level object has a second `model` key.
    DuplicateModel,
    /// The top-level `model` value is not a string.
    ModelNotString,
    /// The decoded model name is longer than the limit, in bytes.
    ModelTooLong { limit: usize },
}

/// The kind of JSON syntax error, each with a message that names what was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntaxError {
    Empty,
    Truncated,
    Expected(&'static str),
    ControlCharacterInString,
    InvalidEscape,
    InvalidUnicodeEscape,
    InvalidUtf8,
    TooDeep,
    TrailingData,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("the body holds no JSON value"),
            Self::Truncated => f.write_str("the body ends before the JSON object does"),
            Self::Expected(what) => write!(f, "expected {what}"),
            Self::ControlCharacterInString => {
                f.write_str("control characters must be escaped in strings")
            }
            Self::InvalidEscape => f.write_str("invalid escape sequence in string"),
            Self::InvalidUnicodeEscape => {
                f.write_str("invalid \\u escape (bad hex digit or unpaired surrogate)")
            }
            Self::InvalidUtf8 => f.write_str("invalid UTF-8"),
            Self::TooDeep => write!(f, "nesting deeper than {MAX_DEPTH} levels"),
            Self::TrailingData => f.write_str("unexpected data after the JSON object"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the top-level value.
    Start,
    /// After `{`: a key or `}`.
    ObjectFirst,
    /// After `,` in an object: a key.
    ObjectNext,
    /// After a key: `:`.
    Colon,
    /// After `:`, or `,` in an array: a value.
    Value,
    /// After `[`: a value or `]`.
    ArrayFirst,
    /// After a value inside a container: `,` or the closing bracket.
    AfterValue,
    /// After the top-level object: whitespace only.
    Done,
    String,
    Escape,
    /// Inside `\uXXXX`, `hex_digits` read so far.
    Unicode,
    /// After a high-surrogate escape: expects `\`.
    LowSurrogateBackslash,
    /// After a high-surrogate escape and `\`: expects `u`.
    LowSurrogateU,
    /// Inside a multi-byte UTF-8 sequence, `utf8_pending` continuation bytes to go.
    Utf8,
    NumberMinus,
    NumberZero,
    NumberInt,
    NumberDot,
    NumberFraction,
    NumberExponent,
    NumberExponentSign,
    NumberExponentDigits,
    /// Inside `true`, `false` or `null`; `literal[literal_pos..]` is still to come.
    Literal,
}

/// What the string being read is, which decides what happens to its decoded bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StringRole {
    /// Any string whose content does not matter: validated, not decoded.
    Other,
    /// A key the scanner may care about (of the top-level object, or of a message), decoded
    /// into `key` to be compared once it ends.
    Key,
    /// The value of the top-level `model` key, decoded into `model`.
    Model,
    /// A string the prompt template takes (a message's role or content, the `prompt`).
    Prompt,
}

/// What a request body says about streaming, for adding `stream_options` to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamShape {
    /// Offset of the top-level `{` (the whitespace before it).
    pub object_start: u64,
    /// The last top-level `stream` key has the value `true`.
    pub stream: bool,
    /// A top-level `stream_options` key exists, whatever its value.
    pub stream_options: bool,
}

/// The value about to be read, when it is one the scanner looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NextValue {
    Other,
    Model,
    Stream,
    /// The top-level `messages` and `prompt`, a message's `role` and `content`: read only for
    /// the prompt template.
    Messages,
    Prompt,
    Field(Field),
}

/// Finds the top-level `model` string of a JSON object fed in chunks. See the module docs.
#[derive(Debug)]
pub struct ModelScanner {
    state: State,
    role: StringRole,
    /// The string being read is an object key.
    in_key: bool,
    depth: u32,
    /// Bit `d` is set when the container at depth `d + 1` is an array.
    arrays: u128,
    /// The decoded key being read (`key_len` bytes, or `KEY_TOO_LONG`).
    key: [u8; KEY_CAPACITY],
    key_len: u8,
    /// The value being started, when it belongs to a key the scanner looks at.
    next_value: NextValue,
    /// The prompt template fed, when the endpoint picker wants one.
    prompt: Option<Box<PromptTemplate>>,
    /// Inside the array of a top-level `messages` key (at depth 2; messages at depth 3).
    in_messages: bool,
    shape: StreamShape,
    model_key_seen: bool,
    model: Option<Vec<u8>>,
    /// Offsets of the model string's raw content in the body: after its opening quote, then
    /// at its closing quote (the end is set once the string has ended).
    model_span: Range<u64>,
    max_model_bytes: usize,
    hex_digits: u8,
    code_unit: u32,
    high_surrogate: u32,
    utf8_pending: u8,
    utf8_low: u8,
    utf8_high: u8,
    literal: &'static [u8],
    literal_pos: u8,
    /// Bytes consumed by earlier chunks.
    consumed: u64,
}

impl ModelScanner {
    /// A scanner that refuses model names longer than `max_model_bytes` once decoded.
    pub fn new(max_model_bytes: usize) -> Self {
        Self {
            state: State::Start,
            role: StringRole::Other,
            in_key: false,
            depth: 0,
            arrays: 0,
            key: [0; KEY_CAPACITY],
            key_len: 0,
            next_value: NextValue::Other,
            prompt: None,
            in_messages: false,
            shape: StreamShape::default(),
            model_key_seen: false,
            model: None,
            model_span: 0..0,
            max_model_bytes,
            hex_digits: 0,
            code_unit: 0,
            high_surrogate: 0,
            utf8_pending: 0,
            utf8_low: 0,
            utf8_high: 0,
            literal: b"",
            literal_pos: 0,
            consumed: 0,
        }
    }

    /// A scanner that also builds the prompt template GIE's prefix scorer reads, keeping at
    /// most its first `limit` bytes.
    pub fn with_prompt(max_model_bytes: usize, limit: usize) -> Self {
        Self {
            prompt: Some(Box::new(PromptTemplate::new(limit))),
            ..Self::new(max_model_bytes)
        }
    }

    /// The prompt template, once the body has been fed whole (`None` when not asked for, or
    /// when the body has no prompt GIE reads).
    pub fn take_prompt(&mut self) -> Option<Vec<u8>> {
        self.prompt.take().and_then(|template| template.finish())
    }

    /// Bytes fed so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// What the body read so far says about streaming (complete once the body is).
    pub fn stream_shape(&self) -> StreamShape {
        self.shape
    }

    /// Scans the next chunk of the body. After an error the scanner must not be fed again.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ScanError> {
        let mut i = 0;
        while i < chunk.len() {
            if self.state == State::String {
                if self.role == StringRole::Other {
                    i += skip_string_content(&chunk[i..]);
                    if i == chunk.len() {
                        break;
                    }
                } else if self.role == StringRole::Prompt {
                    // Content needing no decoding is the prompt's bytes as they are.
                    let run = skip_string_content(&chunk[i..]);
                    if let Some(prompt) = &mut self.prompt {
                        prompt.push(&chunk[i..i + run]);
                    }
                    i += run;
                    if i == chunk.len() {
                        break;
                    }
                }
            }
            let byte = chunk[i];
            match self.step(byte, i) {
                Ok(Step::Next) => i += 1,
                Ok(Step::Again) => {}
                Err(error) => return Err(self.locate(error, i)),
            }
        }
        self.consumed += chunk.len() as u64;
        Ok(())
    }

    /// Ends the body: the decoded model name if the object had a top-level `model` key, with
    /// the offsets of the string's raw content (between the quotes, escapes as written).
    pub fn finish(self) -> Result<Option<FoundModel>, ScanError> {
        match self.state {
            State::Done => Ok(self.model.map(|name| FoundModel {
                name,
                value: self.model_span,
            })),
            State::Start => Err(ScanError::Syntax {
                offset: self.consumed,
                kind: SyntaxError::Empty,
            }),
            _ => Err(ScanError::Syntax {
                offset: self.consumed,
                kind: SyntaxError::Truncated,
            }),
        }
    }

    fn locate(&self, error: Error, index: usize) -> ScanError {
        match error {
            Error::Syntax(kind) => ScanError::Syntax {
                offset: self.consumed + index as u64,
                kind,
            },
            Error::Scan(error) => error,
        }
    }

    /// Takes one byte, at `index` in the current chunk.
    #[inline]
    fn step(&mut self, byte: u8, index: usize) -> Result<Step, Error> {
        match self.state {
            State::String => match byte {
                b'"' => self.end_string(index)?,
                b'\\' => self.state = State::Escape,
                0x00..=0x1f => return Err(SyntaxError::ControlCharacterInString.into()),
                0x80..=0xff => self.start_utf8(byte)?,
                _ => self.push(byte)?,
            },
            State::Value => {
                if !is_whitespace(byte) {
                    self.start_value(byte, index, "a JSON value")?;
                }
            }
            State::AfterValue => match byte {
                b',' if self.in_array() => self.state = State::Value,
                b',' => self.state = State::ObjectNext,
                b']' if self.in_array() => self.close(),
                b'}' if !self.in_array() => self.close(),
                _ if is_whitespace(byte) => {}
                _ if self.in_array() => return Err(SyntaxError::Expected("',' or ']'").into()),
                _ => return Err(SyntaxError::Expected("',' or '}'").into()),
            },
            State::ObjectFirst => match byte {
                b'"' => self.start_key(),
                b'}' => self.close(),
                _ if is_whitespace(byte) => {}
                _ => return Err(SyntaxError::Expected("a string key or '}'").into()),
            },
            State::ObjectNext => match byte {
                b'"' => self.start_key(),
                _ if is_whitespace(byte) => {}
                _ => return Err(SyntaxError::Expected("a string key").into()),
            },
            State::Colon => match byte {
                b':' => self.state = State::Value,
                _ if is_whitespace(byte) => {}
                _ => return Err(SyntaxError::Expected("':' after an object key").into()),
            },
            State::ArrayFirst => match byte {
                b']' => self.close(),
                _ if is_whitespace(byte) => {}
                _ => self.start_value(byte, index, "a JSON value or ']'")?,
            },
            State::Start => match byte {
                b'{' => self.open(false)?,
                b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                    return Err(ScanError::NotAnObject.into())
                }
                _ if is_whitespace(byte) => self.shape.object_start += 1,
                _ => return Err(SyntaxError::Expected("'{' to start the request object").into()),
            },
            State::Done => {
                if !is_whitespace(byte) {
                    return Err(SyntaxError::TrailingData.into());
                }
            }
            State::Escape => {
                let decoded = match byte {
                    b'"' | b'\\' | b'/' => byte,
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'u' => {
                        self.start_unicode();
                        return Ok(Step::Next);
                    }
                    _ => return Err(SyntaxError::InvalidEscape.into()),
                };
                self.state = State::String;
                self.push(decoded)?;
            }
            State::Unicode => {
                let digit = match byte {
                    b'0'..=b'9' => byte - b'0',
                    b'a'..=b'f' => byte - b'a' + 10,
                    b'A'..=b'F' => byte - b'A' + 10,
                    _ => return Err(SyntaxError::InvalidUnicodeEscape.into()),
                };
                self.code_unit = self.code_unit << 4 | u32::from(digit);
                self.hex_digits += 1;
                if self.hex_digits == 4 {
                    self.end_unicode()?;
                }
            }
            State::LowSurrogateBackslash => match byte {
                b'\\' => self.state = State::LowSurrogateU,
                _ => return Err(SyntaxError::InvalidUnicodeEscape.into()),
            },
            State::LowSurrogateU => match byte {
                b'u' => self.start_unicode(),
                _ => return Err(SyntaxError::InvalidUnicodeEscape.into()),
            },
            State::Utf8 => {
                if byte < self.utf8_low || byte > self.utf8_high {
                    return Err(SyntaxError::InvalidUtf8.into());
                }
                self.push(byte)?;
                self.utf8_low = 0x80;
                self.utf8_high = 0xbf;
                self.utf8_pending -= 1;
                if self.utf8_pending == 0 {
                    self.state = State::String;
                }
            }
            State::NumberMinus => match byte {
                b'0' => self.state = State::NumberZero,
                b'1'..=b'9' => self.state = State::NumberInt,
                _ => return Err(SyntaxError::Expected("a digit after '-'").into()),
            },
            State::NumberZero => return Ok(self.number_tail(byte, false)),
            State::NumberInt => return Ok(self.number_tail(byte, true)),
            State::NumberDot => match byte {
                b'0'..=b'9' => self.state = State::NumberFraction,
                _ => return Err(SyntaxError::Expected("a digit after '.'").into()),
            },
            State::NumberFraction => match byte {
                b'0'..=b'9' => {}
                b'e' | b'E' => self.state = State::NumberExponent,
                _ => return Ok(self.end_number()),
            },
            State::NumberExponent => match byte {
                b'+' | b'-' => self.state = State::NumberExponentSign,
                b'0'..=b'9' => self.state = State::NumberExponentDigits,
                _ => return Err(SyntaxError::Expected("a digit or sign in the exponent").into()),
            },
            State::NumberExponentSign => match byte {
                b'0'..=b'9' => self.state = State::NumberExponentDigits,
                _ => return Err(SyntaxError::Expected("a digit in the exponent").into()),
            },
            State::NumberExponentDigits => match byte {
                b'0'..=b'9' => {}
                _ => return Ok(self.end_number()),
            },
            State::Literal => {
                if byte != self.literal[usize::from(self.literal_pos)] {
                    return Err(SyntaxError::Expected("'true', 'false' or 'null'").into());
                }
                self.literal_pos += 1;
                if usize::from(self.literal_pos) == self.literal.len() {
                    self.end_value();
                }
            }
        }
        Ok(Step::Next)
    }

    fn in_array(&self) -> bool {
        self.arrays >> (self.depth - 1) & 1 == 1
    }

    fn open(&mut self, array: bool) -> Result<(), Error> {
        if self.depth == MAX_DEPTH {
            return Err(SyntaxError::TooDeep.into());
        }
        let bit = 1u128 << self.depth;
        if array {
            self.arrays |= bit;
        } else {
            self.arrays &= !bit;
        }
        self.depth += 1;
        self.state = if array {
            State::ArrayFirst
        } else {
            State::ObjectFirst
        };
        if self.in_messages && self.depth == 3 && !array {
            if let Some(prompt) = &mut self.prompt {
                prompt.message_start();
            }
        }
        Ok(())
    }

    fn close(&mut self) {
        if self.in_messages {
            if self.depth == 2 {
                self.in_messages = false;
            } else if self.depth == 3 && !self.in_array() {
                if let Some(prompt) = &mut self.prompt {
                    prompt.message_end();
                }
            }
        }
        self.depth -= 1;
        self.end_value();
    }

    fn end_value(&mut self) {
        self.state = if self.depth == 0 {
            State::Done
        } else {
            State::AfterValue
        };
    }

    fn start_value(&mut self, byte: u8, index: usize, expected: &'static str) -> Result<(), Error> {
        let next = std::mem::replace(&mut self.next_value, NextValue::Other);
        let is_model = next == NextValue::Model;
        match next {
            NextValue::Other | NextValue::Model => {}
            // Anything starting with `t` is `true` or a syntax error that refuses the body.
            NextValue::Stream => self.shape.stream = byte == b't',
            NextValue::Messages | NextValue::Prompt | NextValue::Field(_) => {
                if self.start_prompt_value(next, byte) {
                    self.start_string(StringRole::Prompt);
                    return Ok(());
                }
            }
        }
        match byte {
            b'"' if is_model => {
                self.model = Some(Vec::new());
                let start = self.consumed + index as u64 + 1;
                self.model_span = start..start;
                self.start_string(StringRole::Model);
                return Ok(());
            }
            b'"' => self.start_string(StringRole::Other),
            b'{' => self.open(false)?,
            b'[' => self.open(true)?,
            b'-' => self.state = State::NumberMinus,
            b'0' => self.state = State::NumberZero,
            b'1'..=b'9' => self.state = State::NumberInt,
            b't' => self.start_literal(b"true"),
            b'f' => self.start_literal(b"false"),
            b'n' => self.start_literal(b"null"),
            _ => return Err(SyntaxError::Expected(expected).into()),
        }
        if is_model {
            return Err(ScanError::ModelNotString.into());
        }
        Ok(())
    }

    fn start_literal(&mut self, literal: &'static [u8]) {
        self.literal = literal;
        self.literal_pos = 1;
        self.state = State::Literal;
    }

    /// Tells the prompt template about the value of one of its keys, starting with `byte`;
    /// whether that value is a string the template takes.
    fn start_prompt_value(&mut self, next: NextValue, byte: u8) -> bool {
        let Some(prompt) = &mut self.prompt else {
            return false;
        };
        let string = byte == b'"';
        match next {
            NextValue::Messages => {
                prompt.messages(byte == b'[');
                // The array opens next, at depth 2.
                self.in_messages = byte == b'[';
                false
            }
            NextValue::Prompt => {
                prompt.prompt(string);
                string
            }
            NextValue::Field(field) => {
                prompt.field(field, string);
                string
            }
            NextValue::Other | NextValue::Model | NextValue::Stream => false,
        }
    }

    fn start_key(&mut self) {
        self.in_key = true;
        if self.depth == 1 || (self.in_messages && self.depth == 3) {
            self.key_len = 0;
            self.start_string(StringRole::Key);
        } else {
            self.start_string(StringRole::Other);
        }
    }

    fn start_string(&mut self, role: StringRole) {
        self.role = role;
        self.state = State::String;
    }

    fn end_string(&mut self, index: usize) -> Result<(), Error> {
        let role = std::mem::replace(&mut self.role, StringRole::Other);
        match role {
            StringRole::Model => self.model_span.end = self.consumed + index as u64,
            StringRole::Prompt => {
                if let Some(prompt) = &mut self.prompt {
                    prompt.end_string();
                }
            }
            StringRole::Other | StringRole::Key => {}
        }
        if !std::mem::take(&mut self.in_key) {
            self.end_value();
            return Ok(());
        }
        if role == StringRole::Key {
            self.match_key()?;
        }
        self.state = State::Colon;
        Ok(())
    }

    /// Decides what the value of the key just read is to the scanner.
    fn match_key(&mut self) -> Result<(), Error> {
        let key = match self.key_len {
            KEY_TOO_LONG => return Ok(()),
            len => &self.key[..usize::from(len)],
        };
        let prompt = self.prompt.is_some();
        self.next_value = match key {
            _ if self.depth != 1 => match key {
                b"role" => NextValue::Field(Field::Role),
                b"content" => NextValue::Field(Field::Content),
                _ => NextValue::Other,
            },
            b"model" => {
                if self.model_key_seen {
                    return Err(ScanError::DuplicateModel.into());
                }
                self.model_key_seen = true;
                NextValue::Model
            }
            b"stream" => NextValue::Stream,
            b"stream_options" => {
                self.shape.stream_options = true;
                NextValue::Other
            }
            b"messages" if prompt => NextValue::Messages,
            b"prompt" if prompt => NextValue::Prompt,
            _ => NextValue::Other,
        };
        Ok(())
    }

    /// Takes one decoded byte of the current string.
    #[inline]
    fn push(&mut self, byte: u8) -> Result<(), Error> {
        match self.role {
            StringRole::Other => {}
            StringRole::Key => {
                let len = usize::from(self.key_len);
                if len < KEY_CAPACITY {
                    self.key[len] = byte;
                    self.key_len += 1;
                } else {
                    self.key_len = KEY_TOO_LONG;
                }
            }
            StringRole::Prompt => {
                if let Some(prompt) = &mut self.prompt {
                    prompt.push(&[byte]);
                }
            }
            StringRole::Model => {
                if let Some(model) = &mut self.model {
                    if model.len() == self.max_model_bytes {
                        return Err(ScanError::ModelTooLong {
                            limit: self.max_model_bytes,
                        }
                        .into());
                    }
                    model.push(byte);
                }
            }
        }
        Ok(())
    }

    fn start_utf8(&mut self, lead: u8) -> Result<(), Error> {
        let (pending, low, high) = match lead {
            0xc2..=0xdf => (1, 0x80, 0xbf),
            0xe0 => (2, 0xa0, 0xbf),
            0xe1..=0xec | 0xee..=0xef => (2, 0x80, 0xbf),
            0xed => (2, 0x80, 0x9f),
            0xf0 => (3, 0x90, 0xbf),
            0xf1..=0xf3 => (3, 0x80, 0xbf),
            0xf4 => (3, 0x80, 0x8f),
            _ => return Err(SyntaxError::InvalidUtf8.into()),
        };
        self.push(lead)?;
        self.utf8_pending = pending;
        self.utf8_low = low;
        self.utf8_high = high;
        self.state = State::Utf8;
        Ok(())
    }

    fn start_unicode(&mut self) {
        self.hex_digits = 0;
        self.code_unit = 0;
        self.state = State::Unicode;
    }

    fn end_unicode(&mut self) -> Result<(), Error> {
        let unit = self.code_unit;
        let high = std::mem::take(&mut self.high_surrogate);
        let scalar = match (high, unit) {
            (0, 0xd800..=0xdbff) => {
                self.high_surrogate = unit;
                self.state = State::LowSurrogateBackslash;
                return Ok(());
            }
            (0, 0xdc00..=0xdfff) => return Err(SyntaxError::InvalidUnicodeEscape.into()),
            (0, _) => unit,
            (_, 0xdc00..=0xdfff) => 0x10000 + ((high - 0xd800) << 10) + (unit - 0xdc00),
            _ => return Err(SyntaxError::InvalidUnicodeEscape.into()),
        };
        self.state = State::String;
        if self.role != StringRole::Other {
            // Every value reaching here is a Unicode scalar value: surrogates were paired above.
            let ch = char::from_u32(scalar).ok_or(SyntaxError::InvalidUnicodeEscape)?;
            let mut utf8 = [0; 4];
            for &byte in ch.encode_utf8(&mut utf8).as_bytes() {
                self.push(byte)?;
            }
        }
        Ok(())
    }

    /// Handles the byte after `0` (`digits` false) or after a digit of the integer part.
    fn number_tail(&mut self, byte: u8, digits: bool) -> Step {
        match byte {
            b'0'..=b'9' if digits => {}
            b'.' => self.state = State::NumberDot,
            b'e' | b'E' => self.state = State::NumberExponent,
            _ => return self.end_number(),
        }
        Step::Next
    }

    /// A number ends at the first byte that cannot continue it; that byte is scanned again.
    fn end_number(&mut self) -> Step {
        self.end_value();
        Step::Again
    }
}

/// What the scanner does after a byte.
enum Step {
    /// Move to the next byte.
    Next,
    /// Look at the same byte again in the new state.
    Again,
}

/// An error before its offset is known.
enum Error {
    Syntax(SyntaxError),
    Scan(ScanError),
}

impl From<SyntaxError> for Error {
    fn from(kind: SyntaxError) -> Self {
        Self::Syntax(kind)
    }
}

impl From<ScanError> for Error {
    fn from(error: ScanError) -> Self {
        Self::Scan(error)
    }
}

pub(crate) fn is_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

/// Length of the prefix of `bytes` that is string content needing no decoding: everything
/// before the next quote, backslash or control byte, less any UTF-8 sequence that is invalid
/// or cut off by the chunk's end, which the byte-wise path then reports or carries over.
#[inline]
pub(crate) fn skip_string_content(bytes: &[u8]) -> usize {
    let (run, non_ascii) = string_content_run(bytes);
    if !non_ascii {
        return run;
    }
    // A run starts on a character boundary, and a quote, backslash or control byte cannot sit
    // inside a UTF-8 sequence, so the run can be validated on its own.
    match std::str::from_utf8(&bytes[..run]) {
        Ok(_) => run,
        Err(error) => error.valid_up_to(),
    }
}

/// The length of the prefix of `bytes` free of `"`, `\\` and control bytes, and whether it
/// may hold non-ASCII bytes. Eight bytes at a time: string content is most of a request.
#[inline]
pub(crate) fn string_content_run(bytes: &[u8]) -> (usize, bool) {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_ne_bytes([b'\\'; 8]);
    const SPACES: u64 = u64::from_ne_bytes([0x20; 8]);

    // Sets the high bit of each byte that is zero; a false positive can only follow a true
    // one, so the lowest flagged byte is always right.
    #[inline]
    fn zero_bytes(v: u64) -> u64 {
        v.wrapping_sub(ONES) & !v & HIGHS
    }

    let mut i = 0;
    // May over-report (bytes after the stop are included): then UTF-8 is merely checked.
    let mut high = 0;
    while i + 8 <= bytes.len() {
        let word = u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8-byte slice"));
        high |= word;
        // Bytes below 0x20, excluding those with the high bit set.
        let control = word.wrapping_sub(SPACES) & !word & HIGHS;
        let special = zero_bytes(word ^ QUOTES) | zero_bytes(word ^ BACKSLASHES) | control;
        if special != 0 {
            return (
                i + (special.trailing_zeros() / 8) as usize,
                high & HIGHS != 0,
            );
        }
        i += 8;
    }
    let mut non_ascii = high & HIGHS != 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\\' | 0x00..=0x1f => return (i, non_ascii),
            byte => non_ascii |= byte >= 0x80,
        }
        i += 1;
    }
    (i, non_ascii)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(body: &[u8]) -> Result<Option<Vec<u8>>, ScanError> {
        let mut scanner = ModelScanner::new(256);
        scanner.feed(body)?;
        Ok(scanner.finish()?.map(|found| found.name))
    }

    fn model(body: &str) -> Option<String> {
        scan(body.as_bytes())
            .unwrap_or_else(|e| panic!("{body:?} refused: {e:?}"))
            .map(|m| String::from_utf8(m).unwrap())
    }

    fn syntax(body: &[u8]) -> SyntaxError {
        match scan(body) {
            Err(ScanError::Syntax { kind, .. }) => kind,
            other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(body)),
        }
    }

    #[test]
    fn finds_top_level_model_wherever_it_stands() {
        assert_eq!(model(r#"{"model":"a"}"#).as_deref(), Some("a"));
        assert_eq!(
            model(r#"{"messages":[{"role":"user","content":"hi"}],"model":"b"}"#).as_deref(),
            Some("b")
        );
        assert_eq!(
            model(" \r\n\t{ \"model\" :\t\"c\" } \n").as_deref(),
            Some("c")
        );
    }

    #[test]
    fn ignores_model_keys_below_the_top_level() {
        let body = r#"{"metadata":{"model":"x"},"tools":[{"model":"y"}],"messages":[]}"#;
        assert_eq!(model(body), None);
        let body = r#"{"a":{"model":"x"},"model":"top","b":[{"model":"z"}]}"#;
        assert_eq!(model(body).as_deref(), Some("top"));
    }

    #[test]
    fn model_appearing_as_a_value_or_prefix_is_not_the_key() {
        assert_eq!(model(r#"{"name":"model","models":"x","mode":"y"}"#), None);
    }

    #[test]
    fn decodes_escapes_in_keys_and_model() {
        assert_eq!(
            model(r#"{"mod\u0065l":"a\u003ab"}"#).as_deref(),
            Some("a:b")
        );
        assert_eq!(
            model(r#"{"model":"\ud83d\ude00 \u00e9\/\"\\"}"#).as_deref(),
            Some("😀 é/\"\\")
        );
        assert_eq!(model(r#"{"model":"模型-é"}"#).as_deref(), Some("模型-é"));
    }

    #[test]
    fn reports_where_the_raw_model_value_stands() {
        for body in [
            r#"{"model":"a"}"#,
            r#"{"messages":[{"model":"x"}],"model" : "mistral\u003alatest" }"#,
            r#"{"model":"","x":1}"#,
            r#"{"mod\u0065l":"\ud83d\ude00\"q\""}"#,
        ] {
            let mut scanner = ModelScanner::new(256);
            scanner.feed(body.as_bytes()).unwrap();
            let found = scanner.finish().unwrap().unwrap();
            let range = found.value.start as usize..found.value.end as usize;
            let raw = &body[range.clone()];
            // The raw content, quoted, is the JSON string that decodes to the name.
            let decoded: String = serde_json::from_str(&format!("\"{raw}\"")).unwrap();
            assert_eq!(decoded.as_bytes(), found.name, "{body}");
            assert_eq!(&body[range.start - 1..range.start], "\"");
            assert_eq!(&body[range.end..range.end + 1], "\"");
        }
    }

    #[test]
    fn refuses_a_second_model_key_even_when_escaped() {
        assert_eq!(
            scan(br#"{"model":"a","x":1,"mod\u0065l":"b"}"#),
            Err(ScanError::DuplicateModel)
        );
    }

    #[test]
    fn refuses_model_values_that_are_not_strings() {
        for value in ["1", "-1", "null", "true", "false", "[]", "{}", "[\"a\"]"] {
            let body = format!(r#"{{"model":{value}}}"#);
            assert_eq!(
                scan(body.as_bytes()),
                Err(ScanError::ModelNotString),
                "{body}"
            );
        }
    }

    #[test]
    fn refuses_models_over_the_limit_once_decoded() {
        let mut scanner = ModelScanner::new(4);
        assert!(scanner.feed(br#"{"model":"\u0061bcd"}"#).is_ok());
        assert_eq!(scanner.finish().unwrap().unwrap().name, b"abcd");
        let mut scanner = ModelScanner::new(4);
        assert_eq!(
            scanner.feed(br#"{"model":"abcde"}"#),
            Err(ScanError::ModelTooLong { limit: 4 })
        );
    }

    #[test]
    fn refuses_top_level_values_other_than_objects() {
        for body in [
            "[]",
            "\"model\"",
            "1",
            "-1",
            "true",
            "null",
            " [{\"model\":\"a\"}]",
        ] {
            assert_eq!(scan(body.as_bytes()), Err(ScanError::NotAnObject), "{body}");
        }
    }

    #[test]
    fn reports_each_syntax_error_with_its_offset() {
        let cases: &[(&[u8], u64, SyntaxError)] = &[
            (b"", 0, SyntaxError::Empty),
            (b"  \n", 3, SyntaxError::Empty),
            (b"{\"model\":\"a\"", 12, SyntaxError::Truncated),
            (
                b"{\"model\" \"a\"}",
                9,
                SyntaxError::Expected("':' after an object key"),
            ),
            (b"{\"a\":1,}", 7, SyntaxError::Expected("a string key")),
            (b"{\"a\":[1,]}", 8, SyntaxError::Expected("a JSON value")),
            (b"{\"a\":[1}", 7, SyntaxError::Expected("',' or ']'")),
            (b"{\"a\":1]", 6, SyntaxError::Expected("',' or '}'")),
            (b"{\"a\":01}", 6, SyntaxError::Expected("',' or '}'")),
            (b"{\"a\":1.}", 7, SyntaxError::Expected("a digit after '.'")),
            (
                b"{\"a\":1e}",
                7,
                SyntaxError::Expected("a digit or sign in the exponent"),
            ),
            (b"{\"a\":-}", 6, SyntaxError::Expected("a digit after '-'")),
            (
                b"{\"a\":tru}",
                8,
                SyntaxError::Expected("'true', 'false' or 'null'"),
            ),
            (b"{\"a\":\"\n\"}", 6, SyntaxError::ControlCharacterInString),
            (b"{\"a\":\"\\x\"}", 7, SyntaxError::InvalidEscape),
            (
                b"{\"a\":\"\\u12g4\"}",
                10,
                SyntaxError::InvalidUnicodeEscape,
            ),
            (
                b"{\"a\":\"\\ud800\"}",
                12,
                SyntaxError::InvalidUnicodeEscape,
            ),
            (
                b"{\"a\":\"\\udc00\"}",
                11,
                SyntaxError::InvalidUnicodeEscape,
            ),
            (
                b"{\"a\":\"\\ud800\\u0041\"}",
                17,
                SyntaxError::InvalidUnicodeEscape,
            ),
            (b"{\"a\":\"\xff\"}", 6, SyntaxError::InvalidUtf8),
            (b"{\"a\":\"\xc3\"}", 7, SyntaxError::InvalidUtf8),
            (b"{\"a\":\"\xed\xa0\x80\"}", 7, SyntaxError::InvalidUtf8),
            (b"{\"a\":\"\xe0\x80\xaf\"}", 7, SyntaxError::InvalidUtf8),
            (b"{\"a\":\"\xf4\x90\x80\x80\"}", 7, SyntaxError::InvalidUtf8),
            (b"{} x", 3, SyntaxError::TrailingData),
            (b"{}{}", 2, SyntaxError::TrailingData),
            (
                b"\xef\xbb\xbf{}",
                0,
                SyntaxError::Expected("'{' to start the request object"),
            ),
            (b"{'a':1}", 1, SyntaxError::Expected("a string key or '}'")),
        ];
        for &(body, offset, kind) in cases {
            assert_eq!(
                scan(body),
                Err(ScanError::Syntax { offset, kind }),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn nesting_is_limited_by_a_counter() {
        let deep = |levels: usize| {
            let mut body = String::from("{\"a\":");
            body.push_str(&"[".repeat(levels - 1));
            body.push_str(&"]".repeat(levels - 1));
            body.push('}');
            body
        };
        assert_eq!(model(&deep(MAX_DEPTH as usize)), None);
        assert_eq!(
            syntax(deep(MAX_DEPTH as usize + 1).as_bytes()),
            SyntaxError::TooDeep
        );
        // A million levels are refused at the limit without using stack or heap.
        let hostile = "[".repeat(1_000_000);
        assert_eq!(
            syntax(format!("{{\"a\":{hostile}").as_bytes()),
            SyntaxError::TooDeep
        );
    }

    #[test]
    fn containers_keep_their_kind_across_depths() {
        assert_eq!(
            model(r#"{"a":[{"b":[[],{}]},[{"c":{}}]],"model":"m"}"#).as_deref(),
            Some("m")
        );
        assert_eq!(
            syntax(br#"{"a":[{"b":[[],{}]},[{"c":{}]]]}"#),
            SyntaxError::Expected("',' or '}'")
        );
    }

    #[test]
    fn accepts_every_number_form_of_the_grammar() {
        let body = r#"{"a":[0,-0,1,-12,3.25,-0.5e10,1E+2,2e-3,1e999,123456789012345678901234567890],"model":"m"}"#;
        assert_eq!(model(body).as_deref(), Some("m"));
    }

    #[test]
    fn content_run_stops_at_every_special_byte() {
        for special in [b'"', b'\\', 0x00, 0x1f] {
            for at in 0..20 {
                let mut bytes = vec![b'a'; 20];
                bytes[at] = special;
                assert_eq!(
                    string_content_run(&bytes).0,
                    at,
                    "byte {special:#x} at {at}"
                );
            }
        }
        assert_eq!(string_content_run(&[b' '; 19]), (19, false));
        assert_eq!(
            string_content_run(b"~!#$%^&*()_+{}[]:;'<>,.?/|`"),
            (27, false)
        );
        assert_eq!(string_content_run("abcdefghé\"".as_bytes()), (10, true));
        assert_eq!(string_content_run("é".as_bytes()), (2, true));
    }

    #[test]
    fn skipping_stops_before_invalid_or_cut_utf8() {
        assert_eq!(skip_string_content("aé日🙂\"".as_bytes()), 10);
        assert_eq!(skip_string_content(b"abc\xff\""), 3);
        assert_eq!(skip_string_content(b"abcdefgh\xe6\x97"), 8);
        assert_eq!(skip_string_content(b"ab\xed\xa0\x80\""), 2);
    }
}
