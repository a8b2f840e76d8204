//! Incremental reader of what one JSON response document says about its cost: the token
//! counts, the model that answered, and whether it carries generated content.
//!
//! [`UsageReader`] is fed one document (a JSON body, or the data of one server-sent event) in
//! chunks split anywhere and looks at every byte once, with the request scanner's grammar and
//! limits ([`crate::request::json`]): RFC 8259 with a top-level object, nesting to
//! [`MAX_DEPTH`] kept as a counter, strings validated as UTF-8 and skipped a word at a time.
//! Its state is fixed whatever the document's size: the path to the current value is kept for
//! the few levels where known fields live, and the only buffers are the current key (up to
//! 32 bytes, all a known key needs) and one model name per [`Scope`].
//!
//! What it reads, in every API at once (anything else is validated and skipped):
//! - `model` and `usage` at the top level, and under a top-level `response` (Responses API
//!   stream events) or `message` (Anthropic `message_start`): each is a [`Scope`];
//! - in `usage`, every API's token counts ([`Field`]), with `cached_tokens` under
//!   `prompt_tokens_details` or `input_tokens_details`;
//! - content, for time to first token: a non-empty string at `choices[].text`,
//!   `choices[].delta.{content, reasoning_content, reasoning, refusal}`, a top-level `delta`
//!   (Responses API deltas) or `delta.{text, partial_json, thinking}` (Anthropic), or a
//!   non-empty `choices[].delta.tool_calls`.
//!
//! A token count must be a JSON integer from 0 to [`MAX_TOKENS`]: anything else there (a
//! string, a fraction, an exponent, a negative or absurd number, an object) is
//! [`Slot::Invalid`]; `null` means absent. `usage` and its `*_details` must be objects or null,
//! `model` a string or null. Duplicated keys behave as in serde_json's `Value`: the last one
//! wins, whatever the earlier ones said. Content is seen wherever it occurs.

use crate::request::json::{
    is_whitespace, skip_string_content, string_content_run, SyntaxError, MAX_DEPTH,
};

/// Largest token count accepted: a billion tokens is beyond any model's context, and is
/// Envoy's own limit on a rate limit's `hits_addend`.
pub const MAX_TOKENS: u64 = 1_000_000_000;
/// Longest model name kept, in bytes; longer ones are [`ModelSlot::TooLong`].
pub const MAX_MODEL_BYTES: usize = 256;
/// Containers deeper than this are never on a known path.
const NODE_DEPTH: usize = 6;
/// Longest key compared with the known ones (`cache_creation_input_tokens` has 27 bytes).
const KEY_BYTES: usize = 32;

/// The objects that hold a `model` and a `usage`, in the order their values count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The document itself (JSON answers, OpenAI chunks, Anthropic `message_delta`).
    Root = 0,
    /// A top-level `response` (Responses API stream events).
    Response = 1,
    /// A top-level `message` (Anthropic `message_start`).
    Message = 2,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Root, Scope::Response, Scope::Message];
}

/// A token count in `usage`, as each API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// OpenAI chat, completions, embeddings: `prompt_tokens`.
    PromptTokens = 0,
    CompletionTokens = 1,
    TotalTokens = 2,
    /// Responses API and Anthropic: `input_tokens`.
    InputTokens = 3,
    OutputTokens = 4,
    /// Anthropic: `cache_read_input_tokens` (not part of its `input_tokens`).
    CacheReadInputTokens = 5,
    CacheCreationInputTokens = 6,
    /// `prompt_tokens_details.cached_tokens`.
    PromptCachedTokens = 7,
    /// `input_tokens_details.cached_tokens`.
    InputCachedTokens = 8,
}

impl Field {
    pub const ALL: [Field; 9] = [
        Field::PromptTokens,
        Field::CompletionTokens,
        Field::TotalTokens,
        Field::InputTokens,
        Field::OutputTokens,
        Field::CacheReadInputTokens,
        Field::CacheCreationInputTokens,
        Field::PromptCachedTokens,
        Field::InputCachedTokens,
    ];

    /// The key naming it in `usage` (or in its details object for the cached counts).
    pub fn key(self) -> &'static str {
        match self {
            Self::PromptTokens => "prompt_tokens",
            Self::CompletionTokens => "completion_tokens",
            Self::TotalTokens => "total_tokens",
            Self::InputTokens => "input_tokens",
            Self::OutputTokens => "output_tokens",
            Self::CacheReadInputTokens => "cache_read_input_tokens",
            Self::CacheCreationInputTokens => "cache_creation_input_tokens",
            Self::PromptCachedTokens | Self::InputCachedTokens => "cached_tokens",
        }
    }
}

/// What a document says at one token count's path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Slot {
    #[default]
    Absent,
    Count(u64),
    /// A value of the wrong type or out of range.
    Invalid,
}

/// A model name as read: decoded, at most [`MAX_MODEL_BYTES`].
#[derive(Clone, Copy)]
pub struct ModelName {
    len: u16,
    bytes: [u8; MAX_MODEL_BYTES],
}

impl ModelName {
    pub const fn empty() -> Self {
        Self {
            len: 0,
            bytes: [0; MAX_MODEL_BYTES],
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Appends a byte; false once the name is full.
    fn push(&mut self, byte: u8) -> bool {
        if usize::from(self.len) == MAX_MODEL_BYTES {
            return false;
        }
        self.bytes[usize::from(self.len)] = byte;
        self.len += 1;
        true
    }

    pub fn copy_from(&mut self, bytes: &[u8]) {
        let len = bytes.len().min(MAX_MODEL_BYTES);
        self.bytes[..len].copy_from_slice(&bytes[..len]);
        self.len = len as u16;
    }
}

impl PartialEq for ModelName {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for ModelName {}

impl std::fmt::Debug for ModelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// What a document says at a `model` path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ModelSlot {
    #[default]
    Absent,
    /// A string; its bytes are in [`ScopeValues::model_name`].
    Name,
    /// A string longer than [`MAX_MODEL_BYTES`].
    TooLong,
    /// Not a string.
    Invalid,
}

/// The values of one [`Scope`].
#[derive(Clone, Copy)]
pub struct ScopeValues {
    pub model: ModelSlot,
    model_name: ModelName,
    /// `usage` is present but neither an object nor null.
    pub usage_invalid: bool,
    pub tokens: [Slot; Field::ALL.len()],
}

impl ScopeValues {
    const EMPTY: Self = Self {
        model: ModelSlot::Absent,
        model_name: ModelName::empty(),
        usage_invalid: false,
        tokens: [Slot::Absent; Field::ALL.len()],
    };

    /// The model name, when [`ScopeValues::model`] is [`ModelSlot::Name`].
    pub fn model_name(&self) -> Option<&ModelName> {
        (self.model == ModelSlot::Name).then_some(&self.model_name)
    }

    fn clear_usage(&mut self) {
        self.usage_invalid = false;
        self.tokens = [Slot::Absent; Field::ALL.len()];
    }
}

impl PartialEq for ScopeValues {
    fn eq(&self, other: &Self) -> bool {
        self.model == other.model
            && self.model_name() == other.model_name()
            && self.usage_invalid == other.usage_invalid
            && self.tokens == other.tokens
    }
}

impl Eq for ScopeValues {}

impl std::fmt::Debug for ScopeValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopeValues")
            .field("model", &self.model)
            .field("model_name", &self.model_name())
            .field("usage_invalid", &self.usage_invalid)
            .field("tokens", &self.tokens)
            .finish()
    }
}

/// Everything a document said, scope by scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub scopes: [ScopeValues; 3],
    /// Some content (see the module docs) was seen.
    pub content: bool,
}

impl Document {
    const EMPTY: Self = Self {
        scopes: [ScopeValues::EMPTY; 3],
        content: false,
    };

    pub fn scope(&self, scope: Scope) -> &ScopeValues {
        &self.scopes[scope as usize]
    }

    /// Whether any value at a known path has the wrong type or is out of range.
    pub fn invalid(&self) -> bool {
        self.scopes.iter().any(|scope| {
            scope.usage_invalid
                || scope.model == ModelSlot::Invalid
                || scope.tokens.contains(&Slot::Invalid)
        })
    }
}

/// Why a document could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// Not JSON: `offset` is that of the offending byte (or the length, when it ended early).
    Syntax { offset: u64, kind: SyntaxError },
    /// JSON whose top-level value is not an object.
    NotAnObject,
}

/// An open container, or the value about to start, on the path to known fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Other,
    Root,
    /// `response` or `message`.
    Scope(Scope),
    Usage(Scope),
    /// `prompt_tokens_details` or `input_tokens_details`, holding this field.
    Details(Scope, Field),
    Choices,
    Choice,
    ChoiceDelta,
    ToolCalls,
    /// A top-level `delta` object (Anthropic).
    Delta,
}

/// What the value about to start is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Skip,
    Model(Scope),
    Tokens(Scope, Field),
    /// A string whose content counts as content when not empty.
    Content,
    /// A top-level `delta`: content as a string, [`Node::Delta`] as an object.
    TopDelta,
    /// Any value: an element of `tool_calls`.
    AnyContent,
    Container(Node),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    ObjectFirst,
    ObjectNext,
    Colon,
    Value,
    ArrayFirst,
    AfterValue,
    Done,
    String,
    Escape,
    Unicode,
    LowSurrogateBackslash,
    LowSurrogateU,
    Utf8,
    NumberMinus,
    NumberZero,
    NumberInt,
    NumberDot,
    NumberFraction,
    NumberExponent,
    NumberExponentSign,
    NumberExponentDigits,
    Literal,
}

/// What the string being read is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StringRole {
    /// Validated, not decoded.
    Other,
    /// A key of a container on a known path, decoded into `key`.
    Key,
    Model(Scope),
    /// Content: the first byte is all that matters.
    Content,
}

/// Reads one JSON document fed in chunks. See the module docs.
pub struct UsageReader {
    state: State,
    role: StringRole,
    in_key: bool,
    depth: u32,
    /// Bit `d` is set when the container at depth `d + 1` is an array.
    arrays: u128,
    /// The node of each open container up to [`NODE_DEPTH`]; deeper ones are `Other`.
    nodes: [Node; NODE_DEPTH],
    next: Next,
    key: [u8; KEY_BYTES],
    /// Decoded key bytes; more than `KEY_BYTES` means no known key.
    key_len: usize,
    /// The number being read is a token count: its value so far, `None` once it is not a
    /// valid one.
    count: Option<u64>,
    counting: Option<(Scope, Field)>,
    hex_digits: u8,
    code_unit: u32,
    high_surrogate: u32,
    utf8_pending: u8,
    utf8_low: u8,
    utf8_high: u8,
    literal: &'static [u8],
    literal_pos: u8,
    consumed: u64,
    document: Document,
}

impl Default for UsageReader {
    fn default() -> Self {
        Self::new()
    }
}

impl UsageReader {
    pub fn new() -> Self {
        Self {
            state: State::Start,
            role: StringRole::Other,
            in_key: false,
            depth: 0,
            arrays: 0,
            nodes: [Node::Other; NODE_DEPTH],
            next: Next::Container(Node::Root),
            key: [0; KEY_BYTES],
            key_len: 0,
            count: None,
            counting: None,
            hex_digits: 0,
            code_unit: 0,
            high_surrogate: 0,
            utf8_pending: 0,
            utf8_low: 0,
            utf8_high: 0,
            literal: b"",
            literal_pos: 0,
            consumed: 0,
            document: Document::EMPTY,
        }
    }

    /// Starts a new document, as [`UsageReader::new`] would, without giving up the buffers.
    pub fn reset(&mut self) {
        self.state = State::Start;
        self.role = StringRole::Other;
        self.in_key = false;
        self.depth = 0;
        self.next = Next::Container(Node::Root);
        self.counting = None;
        self.high_surrogate = 0;
        self.consumed = 0;
        for scope in &mut self.document.scopes {
            scope.model = ModelSlot::Absent;
            scope.clear_usage();
        }
        self.document.content = false;
    }

    /// Bytes fed so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Whether content has been seen so far (before the document ends).
    pub fn content_seen(&self) -> bool {
        self.document.content
    }

    /// Whether nothing but whitespace has been fed.
    pub fn is_blank(&self) -> bool {
        self.state == State::Start
    }

    /// Reads the next chunk. After an error the reader must be [`reset`](Self::reset).
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ReadError> {
        let mut i = 0;
        while i < chunk.len() {
            // Runs that need no state change are taken whole, not byte by byte.
            match (self.state, self.role) {
                (State::String, StringRole::Other) => {
                    i += skip_string_content(&chunk[i..]);
                }
                (State::String, StringRole::Key | StringRole::Model(_)) => {
                    let (run, non_ascii) = string_content_run(&chunk[i..]);
                    if !non_ascii {
                        self.push_run(&chunk[i..i + run]);
                        i += run;
                    }
                }
                (State::NumberInt, _) if self.counting.is_none() => {
                    i += chunk[i..].iter().take_while(|b| b.is_ascii_digit()).count();
                }
                _ => {}
            }
            if i == chunk.len() {
                break;
            }
            match self.step(chunk[i]) {
                Ok(Step::Next) => i += 1,
                Ok(Step::Again) => {}
                Err(Error::Syntax(kind)) => {
                    return Err(ReadError::Syntax {
                        offset: self.consumed + i as u64,
                        kind,
                    })
                }
                Err(Error::NotAnObject) => return Err(ReadError::NotAnObject),
            }
        }
        self.consumed += chunk.len() as u64;
        Ok(())
    }

    /// Ends the document: what it said, if it was a complete JSON object.
    pub fn finish(&mut self) -> Result<&Document, ReadError> {
        match self.state {
            State::Done => Ok(&self.document),
            State::Start => Err(ReadError::Syntax {
                offset: self.consumed,
                kind: SyntaxError::Empty,
            }),
            _ => Err(ReadError::Syntax {
                offset: self.consumed,
                kind: SyntaxError::Truncated,
            }),
        }
    }

    #[inline]
    fn step(&mut self, byte: u8) -> Result<Step, Error> {
        match self.state {
            State::String => match byte {
                b'"' => self.end_string(),
                b'\\' => self.state = State::Escape,
                0x00..=0x1f => return Err(SyntaxError::ControlCharacterInString.into()),
                0x80..=0xff => self.start_utf8(byte)?,
                _ => self.push(byte),
            },
            State::Value => {
                if !is_whitespace(byte) {
                    self.start_value(byte, "a JSON value")?;
                }
            }
            State::AfterValue => match byte {
                b',' if self.in_array() => {
                    self.next = self.element();
                    self.state = State::Value;
                }
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
                _ => {
                    self.next = self.element();
                    self.start_value(byte, "a JSON value or ']'")?;
                }
            },
            State::Start => match byte {
                b'{' => self.start_value(byte, "")?,
                b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                    return Err(Error::NotAnObject)
                }
                _ if is_whitespace(byte) => {}
                _ => return Err(SyntaxError::Expected("'{' to start a JSON object").into()),
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
                self.push(decoded);
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
                self.push(byte);
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
            State::NumberInt => {
                if byte.is_ascii_digit() {
                    self.count_digit(byte);
                    return Ok(Step::Next);
                }
                return Ok(self.number_tail(byte, true));
            }
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

    /// The node of the innermost open container.
    fn node(&self) -> Node {
        match self.depth {
            0 => Node::Other,
            d if d as usize <= NODE_DEPTH => self.nodes[d as usize - 1],
            _ => Node::Other,
        }
    }

    /// What an element of the current array is.
    fn element(&mut self) -> Next {
        match self.node() {
            Node::Choices => Next::Container(Node::Choice),
            Node::ToolCalls => Next::AnyContent,
            _ => Next::Skip,
        }
    }

    fn open(&mut self, array: bool, node: Node) -> Result<(), Error> {
        if self.depth == MAX_DEPTH {
            return Err(SyntaxError::TooDeep.into());
        }
        let bit = 1u128 << self.depth;
        if array {
            self.arrays |= bit;
        } else {
            self.arrays &= !bit;
        }
        if (self.depth as usize) < NODE_DEPTH {
            self.nodes[self.depth as usize] = node;
        }
        self.depth += 1;
        self.state = if array {
            State::ArrayFirst
        } else {
            State::ObjectFirst
        };
        Ok(())
    }

    fn close(&mut self) {
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

    fn scope_mut(&mut self, scope: Scope) -> &mut ScopeValues {
        &mut self.document.scopes[scope as usize]
    }

    /// Starts the value `byte` begins, as what [`UsageReader::next`] says it is. A new value
    /// at a known path replaces whatever an earlier duplicate key left there.
    fn start_value(&mut self, byte: u8, expected: &'static str) -> Result<(), Error> {
        let next = std::mem::replace(&mut self.next, Next::Skip);
        if next != Next::Skip {
            self.replace(next, byte);
        }
        match byte {
            b'"' => {
                let role = match next {
                    Next::Model(scope) => StringRole::Model(scope),
                    Next::Content | Next::TopDelta => StringRole::Content,
                    _ => StringRole::Other,
                };
                self.role = role;
                self.state = State::String;
            }
            b'{' => {
                let node = match next {
                    Next::Container(
                        node @ (Node::Root
                        | Node::Scope(_)
                        | Node::Usage(_)
                        | Node::Details(..)
                        | Node::Choice
                        | Node::ChoiceDelta),
                    ) => node,
                    Next::TopDelta => Node::Delta,
                    _ => Node::Other,
                };
                self.open(false, node)?;
            }
            b'[' => {
                let node = match next {
                    Next::Container(node @ (Node::Choices | Node::ToolCalls)) => node,
                    _ => Node::Other,
                };
                self.open(true, node)?;
            }
            b'-' => self.state = State::NumberMinus,
            b'0' => self.state = State::NumberZero,
            b'1'..=b'9' => {
                self.state = State::NumberInt;
                self.count_digit(byte);
            }
            b't' => self.start_literal(b"true"),
            b'f' => self.start_literal(b"false"),
            b'n' => self.start_literal(b"null"),
            _ => return Err(SyntaxError::Expected(expected).into()),
        }
        Ok(())
    }

    /// Records what a value starting with `byte` puts at a known path, before it is read.
    #[cold]
    fn replace(&mut self, next: Next, byte: u8) {
        let null = byte == b'n';
        match next {
            Next::Model(scope) => {
                let values = self.scope_mut(scope);
                values.model = match byte {
                    b'"' => {
                        values.model_name.len = 0;
                        ModelSlot::Name
                    }
                    b'n' => ModelSlot::Absent,
                    _ => ModelSlot::Invalid,
                };
            }
            Next::Tokens(scope, field) => {
                self.scope_mut(scope).tokens[field as usize] = match byte {
                    b'n' => Slot::Absent,
                    b'0'..=b'9' => {
                        // Set at the end of the number, if it is a valid count.
                        self.counting = Some((scope, field));
                        self.count = Some(0);
                        Slot::Absent
                    }
                    _ => Slot::Invalid,
                };
            }
            Next::Container(Node::Usage(scope)) => {
                let values = self.scope_mut(scope);
                values.clear_usage();
                values.usage_invalid = byte != b'{' && !null;
            }
            Next::Container(Node::Details(scope, field)) => {
                self.scope_mut(scope).tokens[field as usize] = if byte == b'{' || null {
                    Slot::Absent
                } else {
                    Slot::Invalid
                };
            }
            Next::Container(Node::Scope(scope)) => {
                let values = self.scope_mut(scope);
                values.model = ModelSlot::Absent;
                values.clear_usage();
            }
            Next::AnyContent => self.document.content = true,
            _ => {}
        }
    }

    fn start_literal(&mut self, literal: &'static [u8]) {
        self.literal = literal;
        self.literal_pos = 1;
        self.state = State::Literal;
    }

    fn start_key(&mut self) {
        self.in_key = true;
        self.state = State::String;
        self.role = match self.node() {
            Node::Other | Node::Choices | Node::ToolCalls => StringRole::Other,
            _ => {
                self.key_len = 0;
                StringRole::Key
            }
        };
    }

    fn end_string(&mut self) {
        let role = std::mem::replace(&mut self.role, StringRole::Other);
        if std::mem::take(&mut self.in_key) {
            self.next = if role == StringRole::Key {
                self.child()
            } else {
                Next::Skip
            };
            self.state = State::Colon;
            return;
        }
        self.end_value();
    }

    /// What the value of the key just read is, in the current container.
    fn child(&self) -> Next {
        let key = match self.key.get(..self.key_len) {
            Some(key) => key,
            None => return Next::Skip,
        };
        match self.node() {
            Node::Root => match key {
                b"model" => Next::Model(Scope::Root),
                b"usage" => Next::Container(Node::Usage(Scope::Root)),
                b"response" => Next::Container(Node::Scope(Scope::Response)),
                b"message" => Next::Container(Node::Scope(Scope::Message)),
                b"choices" => Next::Container(Node::Choices),
                b"delta" => Next::TopDelta,
                _ => Next::Skip,
            },
            Node::Scope(scope) => match key {
                b"model" => Next::Model(scope),
                b"usage" => Next::Container(Node::Usage(scope)),
                _ => Next::Skip,
            },
            Node::Usage(scope) => match key {
                b"prompt_tokens" => Next::Tokens(scope, Field::PromptTokens),
                b"completion_tokens" => Next::Tokens(scope, Field::CompletionTokens),
                b"total_tokens" => Next::Tokens(scope, Field::TotalTokens),
                b"input_tokens" => Next::Tokens(scope, Field::InputTokens),
                b"output_tokens" => Next::Tokens(scope, Field::OutputTokens),
                b"cache_read_input_tokens" => Next::Tokens(scope, Field::CacheReadInputTokens),
                b"cache_creation_input_tokens" => {
                    Next::Tokens(scope, Field::CacheCreationInputTokens)
                }
                b"prompt_tokens_details" => {
                    Next::Container(Node::Details(scope, Field::PromptCachedTokens))
                }
                b"input_tokens_details" => {
                    Next::Container(Node::Details(scope, Field::InputCachedTokens))
                }
                _ => Next::Skip,
            },
            Node::Details(scope, field) => match key {
                b"cached_tokens" => Next::Tokens(scope, field),
                _ => Next::Skip,
            },
            Node::Choice => match key {
                b"delta" => Next::Container(Node::ChoiceDelta),
                b"text" => Next::Content,
                _ => Next::Skip,
            },
            Node::ChoiceDelta => match key {
                b"content" | b"reasoning_content" | b"reasoning" | b"refusal" => Next::Content,
                b"tool_calls" => Next::Container(Node::ToolCalls),
                _ => Next::Skip,
            },
            Node::Delta => match key {
                b"text" | b"partial_json" | b"thinking" => Next::Content,
                _ => Next::Skip,
            },
            Node::Other | Node::Choices | Node::ToolCalls => Next::Skip,
        }
    }

    /// Takes a run of plain ASCII bytes of a key or model name (no escapes, no quote).
    fn push_run(&mut self, run: &[u8]) {
        match self.role {
            StringRole::Key => {
                let end = self.key_len.saturating_add(run.len());
                if end <= KEY_BYTES {
                    self.key[self.key_len..end].copy_from_slice(run);
                }
                self.key_len = end;
            }
            StringRole::Model(scope) => {
                let values = self.scope_mut(scope);
                if values.model == ModelSlot::Name {
                    let name = &mut values.model_name;
                    let at = usize::from(name.len);
                    if at + run.len() <= MAX_MODEL_BYTES {
                        name.bytes[at..at + run.len()].copy_from_slice(run);
                        name.len += run.len() as u16;
                    } else {
                        values.model = ModelSlot::TooLong;
                    }
                }
            }
            _ => run.iter().for_each(|&b| self.push(b)),
        }
    }

    /// Takes one decoded byte of the current string.
    #[inline]
    fn push(&mut self, byte: u8) {
        match self.role {
            StringRole::Other => {}
            StringRole::Key => {
                if self.key_len < KEY_BYTES {
                    self.key[self.key_len] = byte;
                }
                self.key_len = self.key_len.saturating_add(1);
            }
            StringRole::Model(scope) => {
                let values = self.scope_mut(scope);
                if values.model == ModelSlot::Name && !values.model_name.push(byte) {
                    values.model = ModelSlot::TooLong;
                }
            }
            StringRole::Content => {
                self.document.content = true;
                // The rest of the string does not matter.
                self.role = StringRole::Other;
            }
        }
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
        self.push(lead);
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
            let ch = char::from_u32(scalar).ok_or(SyntaxError::InvalidUnicodeEscape)?;
            let mut utf8 = [0; 4];
            for &byte in ch.encode_utf8(&mut utf8).as_bytes() {
                self.push(byte);
            }
        }
        Ok(())
    }

    /// Adds a digit of the integer part to the token count being read.
    #[inline]
    fn count_digit(&mut self, digit: u8) {
        if self.counting.is_some() {
            self.count = self
                .count
                .and_then(|count| count.checked_mul(10))
                .and_then(|count| count.checked_add(u64::from(digit - b'0')));
        }
    }

    /// Handles the byte after `0` (`digits` false) or after the integer part's digits.
    fn number_tail(&mut self, byte: u8, digits: bool) -> Step {
        match byte {
            b'0'..=b'9' if digits => {}
            b'.' => {
                self.count = None;
                self.state = State::NumberDot;
            }
            b'e' | b'E' => {
                self.count = None;
                self.state = State::NumberExponent;
            }
            _ => return self.end_number(),
        }
        Step::Next
    }

    /// A number ends at the first byte that cannot continue it; that byte is read again.
    fn end_number(&mut self) -> Step {
        if let Some((scope, field)) = self.counting.take() {
            self.scope_mut(scope).tokens[field as usize] = match self.count {
                Some(count) if count <= MAX_TOKENS => Slot::Count(count),
                _ => Slot::Invalid,
            };
        }
        self.end_value();
        Step::Again
    }
}

/// What the reader does after a byte.
enum Step {
    Next,
    Again,
}

enum Error {
    Syntax(SyntaxError),
    NotAnObject,
}

impl From<SyntaxError> for Error {
    fn from(kind: SyntaxError) -> Self {
        Self::Syntax(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(body: &[u8]) -> Result<Document, ReadError> {
        let mut reader = UsageReader::new();
        reader.feed(body)?;
        reader.finish().cloned()
    }

    fn doc(body: &str) -> Document {
        read(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e:?}"))
    }

    fn tokens(document: &Document, scope: Scope) -> Vec<(Field, Slot)> {
        Field::ALL
            .iter()
            .map(|&field| (field, document.scope(scope).tokens[field as usize]))
            .filter(|(_, slot)| *slot != Slot::Absent)
            .collect()
    }

    fn model(document: &Document, scope: Scope) -> Option<String> {
        document
            .scope(scope)
            .model_name()
            .map(|m| String::from_utf8(m.as_bytes().to_vec()).unwrap())
    }

    #[test]
    fn reads_openai_chat_usage_and_model() {
        let d = doc(
            r#"{"id":"x","object":"chat.completion","model":"m/a:1.0","choices":[{"index":0,
            "message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":12,
            "completion_tokens":3,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":4}}}"#,
        );
        assert_eq!(model(&d, Scope::Root).as_deref(), Some("m/a:1.0"));
        assert_eq!(
            tokens(&d, Scope::Root),
            [
                (Field::PromptTokens, Slot::Count(12)),
                (Field::CompletionTokens, Slot::Count(3)),
                (Field::TotalTokens, Slot::Count(15)),
                (Field::PromptCachedTokens, Slot::Count(4)),
            ]
        );
        // A chat answer's message is not content of a stream.
        assert!(!d.content);
        assert!(!d.invalid());
    }

    #[test]
    fn reads_responses_and_anthropic_scopes() {
        let d = doc(
            r#"{"type":"response.completed","response":{"model":"r","usage":{"input_tokens":7,
            "input_tokens_details":{"cached_tokens":2},"output_tokens":5,"total_tokens":12}}}"#,
        );
        assert_eq!(model(&d, Scope::Response).as_deref(), Some("r"));
        assert_eq!(
            tokens(&d, Scope::Response),
            [
                (Field::TotalTokens, Slot::Count(12)),
                (Field::InputTokens, Slot::Count(7)),
                (Field::OutputTokens, Slot::Count(5)),
                (Field::InputCachedTokens, Slot::Count(2)),
            ]
        );
        let d = doc(
            r#"{"type":"message_start","message":{"model":"claude","content":[],"usage":
            {"input_tokens":9,"cache_read_input_tokens":3,"cache_creation_input_tokens":1,"output_tokens":1}}}"#,
        );
        assert_eq!(model(&d, Scope::Message).as_deref(), Some("claude"));
        assert_eq!(tokens(&d, Scope::Message).len(), 4);
        let d = doc(
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}"#,
        );
        assert_eq!(
            tokens(&d, Scope::Root),
            [(Field::OutputTokens, Slot::Count(15))]
        );
        assert!(!d.content);
    }

    #[test]
    fn sees_content_in_every_api_stream() {
        for (event, content) in [
            (
                r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#,
                false,
            ),
            (r#"{"choices":[{"delta":{"content":"Hi"}}]}"#, true),
            (
                r#"{"choices":[{"index":0,"delta":{"reasoning_content":"h"}}]}"#,
                true,
            ),
            (r#"{"choices":[{"delta":{"tool_calls":[]}}]}"#, false),
            (
                r#"{"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}"#,
                true,
            ),
            (r#"{"choices":[{"text":"a"}]}"#, true),
            (r#"{"choices":[],"usage":{"prompt_tokens":1}}"#, false),
            (
                r#"{"type":"response.output_text.delta","delta":"Hi"}"#,
                true,
            ),
            (
                r#"{"type":"response.created","response":{"usage":null}}"#,
                false,
            ),
            (
                r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"x"}}"#,
                true,
            ),
            (
                r#"{"type":"content_block_delta","delta":{"partial_json":"{"}}"#,
                true,
            ),
            (r#"{"type":"ping"}"#, false),
            (
                r#"{"x":{"choices":[{"text":"a"}]},"delta":{"text":""}}"#,
                false,
            ),
        ] {
            assert_eq!(doc(event).content, content, "{event}");
        }
    }

    #[test]
    fn counts_of_the_wrong_type_or_size_are_invalid() {
        for (usage, slot) in [
            ("12", Slot::Count(12)),
            ("0", Slot::Count(0)),
            ("1000000000", Slot::Count(MAX_TOKENS)),
            ("1000000001", Slot::Invalid),
            ("18446744073709551616", Slot::Invalid),
            ("99999999999999999999999999", Slot::Invalid),
            ("-1", Slot::Invalid),
            ("-0", Slot::Invalid),
            ("1.0", Slot::Invalid),
            ("1e3", Slot::Invalid),
            ("\"12\"", Slot::Invalid),
            ("true", Slot::Invalid),
            ("[]", Slot::Invalid),
            ("{}", Slot::Invalid),
            ("null", Slot::Absent),
        ] {
            let d = doc(&format!(r#"{{"usage":{{"prompt_tokens":{usage}}}}}"#));
            assert_eq!(
                d.scope(Scope::Root).tokens[Field::PromptTokens as usize],
                slot,
                "{usage}"
            );
            assert_eq!(d.invalid(), slot == Slot::Invalid);
        }
        assert!(doc(r#"{"usage":"lots"}"#).scope(Scope::Root).usage_invalid);
        assert!(!doc(r#"{"usage":null}"#).invalid());
        assert!(doc(r#"{"usage":{"prompt_tokens_details":1}}"#).invalid());
        assert!(doc(r#"{"model":1}"#).invalid());
        assert!(!doc(r#"{"response":1,"message":"x"}"#).invalid());
    }

    #[test]
    fn the_last_duplicate_wins() {
        let d = doc(r#"{"usage":{"prompt_tokens":"x","prompt_tokens":3},"model":"a","model":"b"}"#);
        assert_eq!(
            tokens(&d, Scope::Root),
            [(Field::PromptTokens, Slot::Count(3))]
        );
        assert_eq!(model(&d, Scope::Root).as_deref(), Some("b"));
        assert!(!d.invalid());
        let d = doc(r#"{"usage":{"prompt_tokens":3},"usage":null}"#);
        assert!(tokens(&d, Scope::Root).is_empty());
        let d = doc(r#"{"usage":5,"usage":{"total_tokens":1}}"#);
        assert!(!d.invalid());
        let d = doc(r#"{"response":{"model":"a","usage":{"input_tokens":1}},"response":{}}"#);
        assert_eq!(d.scope(Scope::Response), &ScopeValues::EMPTY);
    }

    #[test]
    fn keys_and_models_are_decoded() {
        let d = doc(r#"{"mod\u0065l":"a\u002fb\ud83d\ude00","us\u0061ge":{"total_tokens":2}}"#);
        assert_eq!(model(&d, Scope::Root).as_deref(), Some("a/b😀"));
        assert_eq!(
            tokens(&d, Scope::Root),
            [(Field::TotalTokens, Slot::Count(2))]
        );
        let long = "x".repeat(MAX_MODEL_BYTES + 1);
        let d = doc(&format!(r#"{{"model":"{long}"}}"#));
        assert_eq!(d.scope(Scope::Root).model, ModelSlot::TooLong);
        let exact = "y".repeat(MAX_MODEL_BYTES);
        assert_eq!(
            model(&doc(&format!(r#"{{"model":"{exact}"}}"#)), Scope::Root),
            Some(exact)
        );
        // A key longer than any known one is no known key, whatever it starts with.
        let d = doc(r#"{"usage":{"prompt_tokens_and_a_very_long_suffix_x":1}}"#);
        assert!(tokens(&d, Scope::Root).is_empty());
    }

    #[test]
    fn known_keys_count_only_on_their_path() {
        let d = doc(
            r#"{"data":{"usage":{"prompt_tokens":1},"model":"x"},"choices":[{"usage":
            {"total_tokens":1},"message":{"model":"y"}}],"response":{"response":{"model":"z"}}}"#,
        );
        for scope in Scope::ALL {
            assert_eq!(d.scope(scope), &ScopeValues::EMPTY, "{scope:?}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_json_object() {
        for body in ["[]", "1", "\"x\"", "null", "data: {}"] {
            assert!(read(body.as_bytes()).is_err(), "{body}");
        }
        assert_eq!(read(b"[1]"), Err(ReadError::NotAnObject));
        assert!(matches!(
            read(b"{\"usage\":{\"prompt_tokens\":1}"),
            Err(ReadError::Syntax {
                kind: SyntaxError::Truncated,
                ..
            })
        ));
        assert!(matches!(
            read(b"{} {}"),
            Err(ReadError::Syntax {
                kind: SyntaxError::TrailingData,
                ..
            })
        ));
        assert!(matches!(
            read(b"<html>"),
            Err(ReadError::Syntax { offset: 0, .. })
        ));
    }

    #[test]
    fn any_split_gives_the_same_document() {
        let body = br#" {"model":"m\u00e9","usage":{"prompt_tokens":123,"completion_tokens":45,
            "prompt_tokens_details":{"cached_tokens":6}},"choices":[{"delta":{"content":"\u00e9"}}],
            "response":{"usage":{"input_tokens":7,"output_tokens":-1}}} "#;
        let whole = read(body).unwrap();
        for cut in 0..=body.len() {
            for second in cut..=body.len() {
                let mut reader = UsageReader::new();
                reader.feed(&body[..cut]).unwrap();
                reader.feed(&body[cut..second]).unwrap();
                reader.feed(&body[second..]).unwrap();
                assert_eq!(reader.finish().unwrap(), &whole, "cuts at {cut}, {second}");
            }
        }
    }

    #[test]
    fn a_reset_reader_reads_afresh() {
        let mut reader = UsageReader::new();
        reader
            .feed(br#"{"model":"a","usage":{"total_tokens":1},"delta":"x"}"#)
            .unwrap();
        assert!(reader.finish().is_ok());
        reader.reset();
        reader.feed(br#"{"x":1}"#).unwrap();
        let d = reader.finish().unwrap();
        assert_eq!(d, &Document::EMPTY);
        reader.reset();
        assert!(reader.feed(b"{\"a\":[}").is_err());
        reader.reset();
        reader.feed(b"{}").unwrap();
        assert!(reader.finish().is_ok());
    }
}
