//! Server-sent events (`text/event-stream`) read as they arrive: lines split at any byte, the
//! `data:` of each event streamed straight into a [`UsageReader`], never buffered.
//!
//! Follows the WHATWG event stream rules: lines end in CRLF, LF or CR; a line starting with
//! `:` is a comment; `data` lines of one event are joined with LF (fed to the reader as such,
//! JSON whitespace); a blank line dispatches the event; an event without data is no event; a
//! leading UTF-8 byte order mark is dropped; an event still open when the stream ends is
//! discarded (and reported: the stream was cut). Other fields (`event:`, `id:`, `retry:`)
//! are skipped: every API names its events inside the data too.
//!
//! Each event's data is one JSON document, or `[DONE]` (OpenAI's end marker), or blank.

use super::usage::{Document, ReadError, UsageReader};

const DONE: &[u8] = b"[DONE]";
const BOM: &[u8] = b"\xef\xbb\xbf";
/// `done_matched` once the data can no longer be `[DONE]`.
const MISMATCH: u8 = u8::MAX;

/// What one dispatched event was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    Document(&'a Document),
    /// `[DONE]`.
    Done,
    /// Data that is not a JSON object.
    Malformed(ReadError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At the start of a line.
    Start,
    /// In a field name; `matched` bytes of `data` so far, or `MISMATCH`.
    Name { matched: u8 },
    /// Right after `data:`, where one space is dropped.
    DataStart,
    /// In a `data` value.
    Data,
    /// In a line that does not matter.
    Skip,
}

/// Splits an event stream into events and reads their data. See the module docs.
pub struct EventStream {
    reader: UsageReader,
    line: Line,
    /// Bytes of a leading byte order mark matched; `BOM.len()` once past the stream's start.
    bom: u8,
    /// The last line ended with CR: an LF right after it ends nothing more.
    after_cr: bool,
    /// A field line (not a comment) has been read since the last blank line.
    event_open: bool,
    /// `data` lines in the event so far.
    data_lines: u32,
    /// Bytes of `[DONE]` matched by the event's data, or `MISMATCH`.
    done_matched: u8,
    /// The reader refused the event's data.
    failed: Option<ReadError>,
    /// Content was seen in an earlier event.
    content: bool,
}

impl Default for EventStream {
    fn default() -> Self {
        Self::new()
    }
}

impl EventStream {
    pub fn new() -> Self {
        Self {
            reader: UsageReader::new(),
            line: Line::Start,
            bom: 0,
            after_cr: false,
            event_open: false,
            data_lines: 0,
            done_matched: 0,
            failed: None,
            content: false,
        }
    }

    /// Whether any event so far, the one being read included, carried content.
    pub fn content_seen(&self) -> bool {
        self.content || self.reader.content_seen()
    }

    /// Reads the next chunk of the stream, handing each event it completes to `on_event`.
    pub fn feed(&mut self, chunk: &[u8], on_event: &mut impl FnMut(Event<'_>)) {
        let mut i = 0;
        if usize::from(self.bom) < BOM.len() {
            i = self.skip_bom(chunk);
        }
        while i < chunk.len() {
            let byte = chunk[i];
            match self.line {
                Line::Start => {
                    if std::mem::take(&mut self.after_cr) && byte == b'\n' {
                        i += 1;
                        continue;
                    }
                    match byte {
                        b'\n' | b'\r' => {
                            self.after_cr = byte == b'\r';
                            self.dispatch(on_event);
                        }
                        b':' => self.line = Line::Skip,
                        _ => {
                            self.event_open = true;
                            let matched = if byte == b'd' { 1 } else { MISMATCH };
                            self.line = Line::Name { matched };
                        }
                    }
                    i += 1;
                }
                Line::Name { matched } => {
                    match byte {
                        b':' if matched == 4 => {
                            self.line = Line::DataStart;
                            self.start_data_line();
                        }
                        b':' => self.line = Line::Skip,
                        b'\n' | b'\r' => {
                            if matched == 4 {
                                // `data` alone is a data line with an empty value.
                                self.start_data_line();
                            }
                            self.end_line(byte);
                        }
                        _ => {
                            let next = if matched != MISMATCH
                                && b"data".get(usize::from(matched)) == Some(&byte)
                            {
                                matched + 1
                            } else {
                                MISMATCH
                            };
                            self.line = Line::Name { matched: next };
                        }
                    }
                    i += 1;
                }
                Line::DataStart => {
                    self.line = Line::Data;
                    if byte == b' ' {
                        i += 1;
                    }
                }
                Line::Data | Line::Skip => {
                    let rest = &chunk[i..];
                    let end = line_end(rest);
                    if self.line == Line::Data {
                        self.data(&rest[..end]);
                    }
                    i += end;
                    if end < rest.len() {
                        self.end_line(rest[end]);
                        i += 1;
                    }
                }
            }
        }
    }

    /// Ends the stream: false if it was cut inside an event or a line (that event is lost).
    pub fn finish(&mut self) -> bool {
        // A stream that ended inside a byte order mark ended inside its first line.
        let inside_bom = (1..BOM.len()).contains(&usize::from(self.bom));
        let complete = self.line == Line::Start && !self.event_open && !inside_bom;
        self.reset_event();
        self.line = Line::Start;
        complete
    }

    /// Drops a byte order mark at the start of the stream; returns the bytes it used.
    fn skip_bom(&mut self, chunk: &[u8]) -> usize {
        let mut i = 0;
        while usize::from(self.bom) < BOM.len() && i < chunk.len() {
            if chunk[i] != BOM[usize::from(self.bom)] {
                if self.bom > 0 {
                    // Part of a mark and then something else: a broken first line.
                    self.line = Line::Skip;
                    self.event_open = true;
                }
                self.bom = BOM.len() as u8;
                return i;
            }
            self.bom += 1;
            i += 1;
        }
        i
    }

    fn end_line(&mut self, eol: u8) {
        self.after_cr = eol == b'\r';
        self.line = Line::Start;
    }

    fn start_data_line(&mut self) {
        if self.data_lines > 0 {
            self.data(b"\n");
        }
        self.data_lines += 1;
    }

    fn data(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.done_matched != MISMATCH {
            let at = usize::from(self.done_matched);
            self.done_matched = if DONE.get(at..at + bytes.len()) == Some(bytes) {
                self.done_matched + bytes.len() as u8
            } else {
                MISMATCH
            };
        }
        if self.failed.is_none() {
            if let Err(error) = self.reader.feed(bytes) {
                self.failed = Some(error);
            }
        }
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(Event<'_>)) {
        self.event_open = false;
        if self.data_lines == 0 {
            return;
        }
        self.content |= self.reader.content_seen();
        if usize::from(self.done_matched) == DONE.len() {
            on_event(Event::Done);
        } else if let Some(error) = self.failed {
            on_event(Event::Malformed(error));
        } else if !self.reader.is_blank() {
            match self.reader.finish() {
                Ok(document) => on_event(Event::Document(document)),
                Err(error) => on_event(Event::Malformed(error)),
            }
        }
        self.reset_event();
    }

    fn reset_event(&mut self) {
        self.content |= self.reader.content_seen();
        self.data_lines = 0;
        self.done_matched = 0;
        self.failed = None;
        self.reader.reset();
    }
}

/// The index of the first CR or LF in `bytes` (its length if none), eight bytes at a time.
#[inline]
fn line_end(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const LFS: u64 = u64::from_ne_bytes([b'\n'; 8]);
    const CRS: u64 = u64::from_ne_bytes([b'\r'; 8]);
    // The high bit of each zero byte; a false positive only ever follows a true one.
    let zero_bytes = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let mut i = 0;
    while i + 8 <= bytes.len() {
        let word = u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let found = zero_bytes(word ^ LFS) | zero_bytes(word ^ CRS);
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + bytes[i..]
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .unwrap_or(bytes.len() - i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::usage::{Field, Scope, Slot};

    /// What a stream's events were, in a form easy to compare.
    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        Tokens(Vec<Slot>),
        Done,
        Malformed,
    }

    fn events(chunks: &[&[u8]]) -> (Vec<Seen>, bool, bool) {
        let mut stream = EventStream::new();
        let mut seen = Vec::new();
        for chunk in chunks {
            stream.feed(chunk, &mut |event| {
                seen.push(match event {
                    Event::Document(d) => Seen::Tokens(d.scope(Scope::Root).tokens.to_vec()),
                    Event::Done => Seen::Done,
                    Event::Malformed(_) => Seen::Malformed,
                })
            });
        }
        let content = stream.content_seen();
        (seen, stream.finish(), content)
    }

    fn total(n: u64) -> Seen {
        let mut tokens = vec![Slot::Absent; Field::ALL.len()];
        tokens[Field::TotalTokens as usize] = Slot::Count(n);
        Seen::Tokens(tokens)
    }

    const STREAM: &[u8] = b"\xef\xbb\xbf: comment\r\nevent: chunk\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\r\n\r\n\
id: 2\ndata:{\"usage\":\r\ndata: {\"total_tokens\":7}}\n\nretry: 10\n\ndata\n\ndata: [DONE]\r\r";

    #[test]
    fn splits_events_wherever_the_chunks_end() {
        let expected = (
            vec![
                Seen::Tokens(vec![Slot::Absent; Field::ALL.len()]),
                total(7),
                Seen::Done,
            ],
            true,
            true,
        );
        assert_eq!(events(&[STREAM]), expected);
        for cut in 0..=STREAM.len() {
            assert_eq!(
                events(&[&STREAM[..cut], &STREAM[cut..]]),
                expected,
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(events(&bytes), expected);
    }

    #[test]
    fn line_endings_of_every_kind_end_lines() {
        for eol in ["\n", "\r", "\r\n"] {
            let text = format!(
                "data: {{\"usage\":{{\"total_tokens\":1}}}}{eol}{eol}data: [DONE]{eol}{eol}"
            );
            assert_eq!(
                events(&[text.as_bytes()]),
                (vec![total(1), Seen::Done], true, false),
                "{eol:?}"
            );
        }
    }

    #[test]
    fn bad_data_is_malformed_and_blank_data_is_nothing() {
        let (seen, complete, _) =
            events(&[b"data: {\"a\":\n\ndata: [DONE] \n\ndata: <html>\n\ndata: \n\n"]);
        assert_eq!(seen, [Seen::Malformed, Seen::Malformed, Seen::Malformed]);
        assert!(complete);
        // Two lines of `[DONE]` are not the marker.
        let (seen, _, _) = events(&[b"data: [DONE]\ndata: [DONE]\n\n"]);
        assert_eq!(seen, [Seen::Malformed]);
    }

    #[test]
    fn a_stream_cut_inside_an_event_is_incomplete() {
        for cut in [
            &b"data: {\"usage\":{\"total_tokens\":1}}"[..],
            b"data: {\"usage\":{\"total_tokens\":1}}\n",
            b"data: {\"usage\":{\"tot",
            b"event: x",
            b"event: x\n",
        ] {
            let (seen, complete, _) = events(&[cut]);
            assert!(seen.is_empty(), "{cut:?}");
            assert!(!complete, "{cut:?}");
        }
        assert!(events(&[b"event: x\n\n"]).1);
        assert!(events(&[b": keep-alive\n"]).1);
        assert!(events(&[b""]).1);
    }

    #[test]
    fn line_ends_are_found_at_every_position() {
        for eol in [b'\n', b'\r'] {
            for at in 0..20 {
                let mut bytes = vec![b'a'; 20];
                bytes[at] = eol;
                if at + 1 < 20 {
                    bytes[at + 1] = b'\n';
                }
                assert_eq!(line_end(&bytes), at);
            }
        }
        assert_eq!(line_end(&[b'x'; 19]), 19);
        assert_eq!(line_end(&[0x8a; 9]), 9);
        assert_eq!(line_end(b""), 0);
    }

    #[test]
    fn only_the_data_field_is_read() {
        let (seen, _, _) = events(&[b"datax: {}\ndat: {}\nDATA: {}\n data: {}\n\n"]);
        assert!(seen.is_empty());
        let (seen, _, _) = events(&[b"data:{\"usage\":{\"total_tokens\":3}}\n\n"]);
        assert_eq!(seen, [total(3)]);
    }
}
