//! The multipart scanner fed arbitrary bytes in arbitrary chunks, checked against testkit's
//! reference reading of the whole form: the same model (and where it stands) or the same
//! refusal at the same offset, whatever the chunking, and nothing may panic.
//!
//! Input: a first byte choosing the boundary, a second `k`, then `k % 8` split offsets (one
//! byte each, taken modulo the body length), then the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use testkit::chunks;
use testkit::form;

const BOUNDARIES: [&[u8]; 4] = [
    b"XyZ",
    b"a",
    b"----WebKitFormBoundary7MA4YWxkTrZu0gW",
    b"b:c=d?",
];

fuzz_target!(|data: &[u8]| {
    let [choice, count, rest @ ..] = data else {
        return;
    };
    let boundary = BOUNDARIES[usize::from(*choice) % BOUNDARIES.len()];
    let count = usize::from(count % 8);
    let (body, chunks) = chunks::from_fuzz_input(count, rest);
    form::check(boundary, 16, body, &chunks);
});
