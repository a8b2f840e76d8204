//! The scanner fed arbitrary bytes in arbitrary chunks, checked against serde_json's reading
//! (testkit's oracle): a body serde_json accepts must give the same model or refusal,
//! anything else must be refused (numbers beyond f64 and nesting between serde_json's limit
//! and the scanner's excepted), chunking must not change the outcome, and nothing may panic.
//!
//! Input: a first byte `k`, then `k % 8` split offsets (one byte each, taken modulo the body
//! length), then the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use testkit::chunks;
use testkit::oracle;

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(count % 8);
    let (body, chunks) = chunks::from_fuzz_input(count, rest);
    oracle::check(body, &chunks);
});
