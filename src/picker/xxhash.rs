//! XXH64 with seed 0, one-shot, written from the xxHash specification (Yann Collet,
//! `doc/xxhash_spec.md`, "XXH64 Algorithm Description"): the hash the endpoint picker chains
//! over prompt blocks (GIE uses `github.com/cespare/xxhash/v2`'s `Sum64`, the same function).
//!
//! Twenty-odd lines of arithmetic do not earn a dependency: the filter needs only the one-shot
//! 64-bit hash of inputs under a few hundred bytes, which no crate makes faster.

const PRIME_1: u64 = 0x9E37_79B1_85EB_CA87;
const PRIME_2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const PRIME_3: u64 = 0x1656_67B1_9E37_79F9;
const PRIME_4: u64 = 0x85EB_CA77_C2B2_AE63;
const PRIME_5: u64 = 0x27D4_EB2F_1656_67C5;

#[inline]
fn round(acc: u64, lane: u64) -> u64 {
    acc.wrapping_add(lane.wrapping_mul(PRIME_2))
        .rotate_left(31)
        .wrapping_mul(PRIME_1)
}

#[inline]
fn merge(acc: u64, lane: u64) -> u64 {
    (acc ^ round(0, lane))
        .wrapping_mul(PRIME_1)
        .wrapping_add(PRIME_4)
}

#[inline]
fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// XXH64 of `input` with seed 0.
#[inline]
pub fn xxh64(input: &[u8]) -> u64 {
    let len = input.len();
    let mut at = 0;
    let mut acc = if len >= 32 {
        let mut lanes = [
            PRIME_1.wrapping_add(PRIME_2),
            PRIME_2,
            0,
            0u64.wrapping_sub(PRIME_1),
        ];
        let stripes = input.chunks_exact(32);
        at = len - stripes.remainder().len();
        for stripe in stripes {
            for (lane, word) in lanes.iter_mut().zip(stripe.chunks_exact(8)) {
                *lane = round(*lane, u64::from_le_bytes(word.try_into().expect("8 bytes")));
            }
        }
        let [v1, v2, v3, v4] = lanes;
        let mut acc = v1
            .rotate_left(1)
            .wrapping_add(v2.rotate_left(7))
            .wrapping_add(v3.rotate_left(12))
            .wrapping_add(v4.rotate_left(18));
        for lane in lanes {
            acc = merge(acc, lane);
        }
        acc
    } else {
        PRIME_5
    };
    acc = acc.wrapping_add(len as u64);
    while at + 8 <= len {
        acc ^= round(0, u64_at(input, at));
        acc = acc
            .rotate_left(27)
            .wrapping_mul(PRIME_1)
            .wrapping_add(PRIME_4);
        at += 8;
    }
    if at + 4 <= len {
        let lane = u32::from_le_bytes(input[at..at + 4].try_into().expect("4 bytes"));
        acc ^= u64::from(lane).wrapping_mul(PRIME_1);
        acc = acc
            .rotate_left(23)
            .wrapping_mul(PRIME_2)
            .wrapping_add(PRIME_3);
        at += 4;
    }
    for &byte in &input[at..] {
        acc ^= u64::from(byte).wrapping_mul(PRIME_5);
        acc = acc.rotate_left(11).wrapping_mul(PRIME_1);
    }
    acc ^= acc >> 33;
    acc = acc.wrapping_mul(PRIME_2);
    acc ^= acc >> 29;
    acc = acc.wrapping_mul(PRIME_3);
    acc ^ acc >> 32
}

#[cfg(test)]
mod tests {
    use super::xxh64;

    #[test]
    fn published_vectors() {
        // The xxHash project's and cespare/xxhash's test vectors (seed 0); the longer ones
        // were checked against cespare/xxhash v2.3.0, which GIE v1.0.2 hashes prompts with.
        let vectors: [(&[u8], u64); 6] = [
            (b"", 0xef46_db37_51d8_e999),
            (b"a", 0xd24e_c4f1_a98c_6e5b),
            (b"abc", 0x44bc_2cf5_ad77_0999),
            (b"message digest", 0x066e_d728_fcee_b3be),
            (b"abcdefghijklmnopqrstuvwxyz", 0xcfe1_f278_fa89_835c),
            (
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                0xaaa4_6907_d304_7814,
            ),
        ];
        for (input, hash) in vectors {
            assert_eq!(xxh64(input), hash, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn every_length_takes_every_path() {
        // Lengths 0 to 100 cross the 32-byte stripe, 8-byte, 4-byte and byte tails; each
        // prefix must hash differently (no input byte is ignored).
        let input: Vec<u8> = (0..100u8).map(|b| b.wrapping_mul(37)).collect();
        let hashes: std::collections::HashSet<u64> =
            (0..=input.len()).map(|n| xxh64(&input[..n])).collect();
        assert_eq!(hashes.len(), input.len() + 1);
        // A flipped bit anywhere changes the hash.
        for at in 0..input.len() {
            let mut flipped = input.clone();
            flipped[at] ^= 1;
            assert_ne!(xxh64(&flipped), xxh64(&input), "byte {at}");
        }
    }
}
