//! The response readers fed arbitrary bytes in arbitrary chunks, checked against serde_json
//! (testkit's usage oracle): a JSON document must give serde_json's model, counts and content
//! or be refused as serde_json refuses it (numbers beyond f64 and nesting between serde_json's
//! limit and the reader's excepted); an event stream must give the events a line-by-line
//! reading gives; chunking must change nothing, and nothing may panic.
//!
//! Input: a first byte `k` (bit 0: 0 a JSON document, 1 an event stream), then `(k >> 1) % 8`
//! split offsets (one byte each, taken modulo the body length), then the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use testkit::chunks;
use testkit::usage_oracle;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from((first >> 1) % 8);
    let (body, chunks) = chunks::from_fuzz_input(count, rest);
    if first & 1 == 0 {
        usage_oracle::check_document(body, &chunks);
    } else {
        usage_oracle::check_stream(body, &chunks);
    }
});
