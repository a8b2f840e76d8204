//! Replacing the model value inside the request body as Envoy buffers it, in bounded pieces.
//!
//! Envoy's proxy-wasm buffer API (`proxy_set_buffer_bytes`, Envoy's `Buffer::copyFrom` in
//! source/extensions/common/wasm/context.cc) edits a buffer at its ends only: at offset 0 it
//! drains `length` bytes from the front and prepends the data, at an offset at or past the
//! end it appends, and anything in between is refused. Reading (`proxy_get_buffer_bytes`)
//! copies any range out. So a value in the middle is replaced by turning the buffer like a
//! ring ([`BodyBuffer`]): with `P` before the value `M` and `S` after it,
//!
//! - `P` of at most [`PIECE`] bytes: read `P`, then drain `P M` and prepend `P N` in one call;
//! - otherwise: move `P` to the back piece by piece (read at most [`PIECE`] bytes from the
//!   front, drain them, append them) giving `M S P`; drain `M`; append `N` (`S P N`); move
//!   `S` to the back the same way (`P N S`).
//!
//! What is copied through the filter's memory: the bytes before the value and the
//! replacement when the value starts within the first 64 KiB (a body that names its model
//! first), else every byte of the body but the old value, plus the replacement, in pieces of
//! at most 64 KiB. Envoy's drain only moves slice pointers. The filter never holds more than
//! one piece.

use std::ops::Range;

/// Most bytes copied out of Envoy's buffer at once.
pub const PIECE: usize = 64 * 1024;

/// The request body in Envoy's buffer, edited the only ways Envoy allows.
pub trait BodyBuffer {
    /// Copies `len` bytes from `start` out of the buffer (fewer only if the host fails).
    fn read(&mut self, start: u64, len: usize) -> Vec<u8>;
    /// Drains `drain` bytes from the front, then prepends `data`.
    fn replace_front(&mut self, drain: u64, data: &[u8]);
    /// Appends `data` at the back.
    fn append(&mut self, data: &[u8]);
}

/// The host gave fewer bytes than the buffer holds: the body may be half rewritten and must
/// not be forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortRead;

/// Bytes a rewrite copied between Envoy and the filter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    /// Out of Envoy's buffer into the filter.
    pub out: u64,
    /// From the filter into Envoy's buffer.
    pub back: u64,
}

/// Replaces the bytes at `value` in a body of `len` bytes with `replacement`.
pub fn replace(
    buffer: &mut impl BodyBuffer,
    len: u64,
    value: Range<u64>,
    replacement: &[u8],
) -> Result<Copied, ShortRead> {
    debug_assert!(value.start <= value.end && value.end <= len);
    let mut copied = Copied::default();
    if value.start <= PIECE as u64 {
        let mut front = read(buffer, 0, value.start as usize, &mut copied)?;
        front.extend_from_slice(replacement);
        buffer.replace_front(value.end, &front);
        copied.back += front.len() as u64;
        return Ok(copied);
    }
    rotate(buffer, value.start, &mut copied)?;
    buffer.replace_front(value.end - value.start, &[]);
    buffer.append(replacement);
    copied.back += replacement.len() as u64;
    rotate(buffer, len - value.end, &mut copied)?;
    Ok(copied)
}

/// Moves the first `count` bytes to the back, a piece at a time.
fn rotate(buffer: &mut impl BodyBuffer, count: u64, copied: &mut Copied) -> Result<(), ShortRead> {
    let mut left = count;
    while left > 0 {
        let size = PIECE.min(left as usize);
        let piece = read(buffer, 0, size, copied)?;
        buffer.replace_front(size as u64, &[]);
        buffer.append(&piece);
        copied.back += size as u64;
        left -= size as u64;
    }
    Ok(())
}

fn read(
    buffer: &mut impl BodyBuffer,
    start: u64,
    size: usize,
    copied: &mut Copied,
) -> Result<Vec<u8>, ShortRead> {
    if size == 0 {
        return Ok(Vec::new());
    }
    let bytes = buffer.read(start, size);
    if bytes.len() != size {
        return Err(ShortRead);
    }
    copied.out += size as u64;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Envoy's buffer as the host API exposes it, recording the largest copy.
    #[derive(Default)]
    struct Envoy {
        bytes: VecDeque<u8>,
        largest_copy: usize,
        short: bool,
    }

    impl BodyBuffer for Envoy {
        fn read(&mut self, start: u64, len: usize) -> Vec<u8> {
            self.largest_copy = self.largest_copy.max(len);
            let take = if self.short { len - 1 } else { len };
            self.bytes
                .range(start as usize..)
                .take(take)
                .copied()
                .collect()
        }
        fn replace_front(&mut self, drain: u64, data: &[u8]) {
            assert!(
                drain as usize <= self.bytes.len(),
                "Envoy drains what it has"
            );
            self.bytes.drain(..drain as usize);
            for &byte in data.iter().rev() {
                self.bytes.push_front(byte);
            }
            self.largest_copy = self.largest_copy.max(data.len());
        }
        fn append(&mut self, data: &[u8]) {
            self.bytes.extend(data);
            self.largest_copy = self.largest_copy.max(data.len());
        }
    }

    fn rewrite(body: &[u8], value: Range<usize>, replacement: &[u8]) -> (Vec<u8>, Copied, usize) {
        let mut envoy = Envoy {
            bytes: body.iter().copied().collect(),
            ..Envoy::default()
        };
        let range = value.start as u64..value.end as u64;
        let copied = replace(&mut envoy, body.len() as u64, range, replacement).unwrap();
        (
            envoy.bytes.into_iter().collect(),
            copied,
            envoy.largest_copy,
        )
    }

    fn expected(body: &[u8], value: Range<usize>, replacement: &[u8]) -> Vec<u8> {
        [&body[..value.start], replacement, &body[value.end..]].concat()
    }

    #[test]
    fn a_value_near_the_front_is_replaced_in_one_call() {
        let body = br#"{"model":"gpt-4o","messages":[]}"#;
        let (out, copied, _) = rewrite(body, 10..16, b"meta-llama/Llama-3.1-8B-Instruct");
        assert_eq!(
            out,
            br#"{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[]}"#
        );
        assert_eq!(copied, Copied { out: 10, back: 42 });
    }

    #[test]
    fn a_value_anywhere_in_a_large_body_is_replaced_in_bounded_pieces() {
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for (start, end) in [
            (0, 0),
            (0, 10),
            (PIECE, PIECE + 5),
            (PIECE + 1, PIECE + 5),
            (150_000, 150_003),
            (3 * PIECE, 3 * PIECE + 100),
            (299_990, 300_000),
            (300_000, 300_000),
        ] {
            for replacement in [&b""[..], b"x", &[7u8; 300]] {
                let (out, copied, largest) = rewrite(&body, start..end, replacement);
                assert_eq!(
                    out,
                    expected(&body, start..end, replacement),
                    "{start}..{end}"
                );
                assert!(
                    largest <= PIECE + replacement.len(),
                    "copied {largest} bytes at once"
                );
                let kept = (body.len() - (end - start)) as u64;
                if start <= PIECE {
                    assert_eq!(copied.out, start as u64);
                } else {
                    // Everything but the old value goes out and back once.
                    assert_eq!(copied.out, kept);
                    assert_eq!(copied.back, kept + replacement.len() as u64);
                }
            }
        }
    }

    #[test]
    fn a_short_read_is_reported() {
        let mut envoy = Envoy {
            bytes: vec![b'a'; 200_000].into(),
            short: true,
            ..Envoy::default()
        };
        assert_eq!(
            replace(&mut envoy, 200_000, 100_000..100_001, b"b"),
            Err(ShortRead)
        );
    }
}
