//! Random JSON text for the property tests of the filter's incremental readers: whitespace,
//! escaped strings, numbers, literals and nesting, always valid JSON. Which keys an object
//! holds, and what values they get, is the test's [`Shape`]: a request body is about `model`,
//! an answer about `usage` and its counts.

use crate::chunks::Rng;
use std::fmt::Write;

/// The vocabulary and proportions of the text written.
pub struct Style {
    /// Pieces that strings are made of (0 to `pieces_per_string - 1` of them).
    pub pieces: &'static [&'static str],
    pub pieces_per_string: usize,
    pub numbers: &'static [&'static str],
    /// Percent of characters escaped as `\uXXXX` (or `\/`) that need no escape.
    pub escape_percent: usize,
    /// Percent chance of each further whitespace character between tokens.
    pub space_percent: usize,
    /// No raw line breaks between tokens (a document on one `data:` line of an event stream).
    pub one_line: bool,
    /// Below this depth values may be containers; at or past it only scalars.
    pub container_depth: usize,
    /// Arrays hold 0 to `array_items - 1` values.
    pub array_items: usize,
}

/// What a test's documents hold: the writer calls it for every object.
pub trait Shape {
    fn object(&self, json: &mut RandomJson<'_>, depth: usize);
}

/// Writes random JSON into `out`.
pub struct RandomJson<'a> {
    pub rng: &'a mut Rng,
    pub out: String,
    style: &'a Style,
}

impl<'a> RandomJson<'a> {
    /// A whole document: an object 95 times in 100 (else any value), padded with whitespace.
    pub fn document(rng: &'a mut Rng, style: &'a Style, shape: &impl Shape) -> String {
        let mut json = RandomJson {
            rng,
            out: String::new(),
            style,
        };
        json.space();
        if json.rng.chance(95) {
            shape.object(&mut json, 1);
        } else {
            json.value(shape, 1);
        }
        json.space();
        json.out
    }

    pub fn space(&mut self) {
        while self.rng.chance(self.style.space_percent) {
            let spaces: &[char] = if self.style.one_line {
                &[' ', '\t']
            } else {
                &[' ', '\t', '\n', '\r']
            };
            self.out.push(*self.rng.pick(spaces));
        }
    }

    /// `text` as a JSON string, some characters escaped that need not be.
    pub fn string(&mut self, text: &str) {
        self.out.push('"');
        for ch in text.chars() {
            let escape = self.rng.chance(self.style.escape_percent);
            match ch {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' if !escape => self.out.push_str("\\n"),
                '/' if escape => self.out.push_str("\\/"),
                c if (c as u32) < 0x20 || escape => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        let _ = write!(self.out, "\\u{unit:04x}");
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }

    /// Random text from the style's pieces.
    pub fn text(&mut self) -> String {
        (0..self.rng.below(self.style.pieces_per_string))
            .map(|_| *self.rng.pick(self.style.pieces))
            .collect()
    }

    /// A string of random text.
    pub fn text_string(&mut self) {
        let text = self.text();
        self.string(&text);
    }

    pub fn number(&mut self) {
        let number = *self.rng.pick(self.style.numbers);
        self.out.push_str(number);
    }

    /// Any value: strings most often, containers only above the style's depth.
    pub fn value(&mut self, shape: &impl Shape, depth: usize) {
        let deep = depth >= self.style.container_depth;
        match self.rng.below(if deep { 4 } else { 6 }) {
            0 | 1 => self.text_string(),
            2 => self.number(),
            3 => {
                let literal = *self.rng.pick(&["true", "false", "null"]);
                self.out.push_str(literal);
            }
            4 => self.array(shape, depth + 1),
            _ => shape.object(self, depth + 1),
        }
    }

    pub fn array(&mut self, shape: &impl Shape, depth: usize) {
        self.out.push('[');
        self.space();
        for index in 0..self.rng.below(self.style.array_items) {
            if index > 0 {
                self.out.push(',');
                self.space();
            }
            self.value(shape, depth);
            self.space();
        }
        self.out.push(']');
    }

    /// An object of up to `members - 1` members: `member` writes each value after its key,
    /// `key` chooses the key.
    pub fn object(
        &mut self,
        members: usize,
        mut key: impl FnMut(&mut Self) -> String,
        mut member: impl FnMut(&mut Self, &str),
    ) {
        self.out.push('{');
        self.space();
        for index in 0..self.rng.below(members) {
            if index > 0 {
                self.out.push(',');
                self.space();
            }
            let key = key(self);
            self.string(&key);
            self.space();
            self.out.push(':');
            self.space();
            member(self, &key);
            self.space();
        }
        self.out.push('}');
    }
}
