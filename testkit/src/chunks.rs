//! Ways of cutting a body into the chunks a parser is fed: a deterministic random generator
//! for the property tests (a failure names its seed and replays), random chunkings, and the
//! fuzz targets' reading of cut points from their input.

/// xorshift64*: deterministic, so a failure names its seed and replays.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (which must not be 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// `body` cut at random points into chunks of 1 to `largest` bytes.
pub fn random<'a>(rng: &mut Rng, body: &'a [u8], largest: usize) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let size = 1 + rng.below(rest.len().min(largest));
        let (chunk, tail) = rest.split_at(size);
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

/// Changes one to three bytes of `body` at random (replaced by, or inserted from, `alphabet`,
/// or removed): the corruptions the property tests feed a parser after valid documents.
pub fn corrupt(rng: &mut Rng, body: &mut Vec<u8>, alphabet: &[u8]) {
    for _ in 0..1 + rng.below(3) {
        if body.is_empty() {
            break;
        }
        let at = rng.below(body.len());
        match rng.below(3) {
            0 => body[at] = *rng.pick(alphabet),
            1 => body.insert(at, *rng.pick(alphabet)),
            _ => {
                body.remove(at);
            }
        }
    }
}

/// A fuzz input read as `count` cut offsets (one byte each, taken modulo the body's length)
/// followed by the body: the body and its chunks. `count` is at most the input's length.
pub fn from_fuzz_input(count: usize, input: &[u8]) -> (&[u8], Vec<&[u8]>) {
    let (offsets, body) = input.split_at(count.min(input.len()));
    let mut cuts: Vec<usize> = offsets
        .iter()
        .map(|&o| {
            if body.is_empty() {
                0
            } else {
                usize::from(o) % body.len()
            }
        })
        .collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts {
        chunks.push(&body[start..cut]);
        start = cut;
    }
    chunks.push(&body[start..]);
    (body, chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunkings_put_the_body_back_together() {
        let body = b"the quick brown fox";
        let mut rng = Rng(7);
        for largest in [1, 3, 64] {
            let chunks = random(&mut rng, body, largest);
            assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= largest));
            assert_eq!(chunks.concat(), body);
        }
        let mut input = vec![200, 3, 3];
        input.extend_from_slice(body);
        let (read, chunks) = from_fuzz_input(3, &input);
        assert_eq!(read, body);
        assert_eq!(chunks.concat(), body);
        assert_eq!(chunks.len(), 4);
        let (read, chunks) = from_fuzz_input(5, &[1, 2]);
        assert!(read.is_empty());
        assert_eq!(chunks, [&b""[..]; 3]);
    }
}
