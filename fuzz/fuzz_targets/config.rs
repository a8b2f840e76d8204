//! The plugin configuration parser on arbitrary bytes: it never panics, and whatever it
//! accepts satisfies the documented limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model_router::config::{Settings, MAX_BODY_BYTES_LIMIT, MAX_MODEL_BYTES_LIMIT};

fuzz_target!(|data: &[u8]| {
    let Ok(settings) = Settings::parse(data) else {
        return;
    };
    assert!(!settings.header.is_empty());
    assert!(settings
        .header
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)));
    assert!(!settings.paths.is_empty());
    assert!(settings.paths.iter().all(|p| p.starts_with('/') && !p.contains('?')));
    assert!((1..=MAX_BODY_BYTES_LIMIT).contains(&settings.max_body_bytes));
    assert!((1..=MAX_MODEL_BYTES_LIMIT).contains(&settings.max_model_bytes));
    // Path matching takes any request path.
    let _ = settings.scans_path(data);
});
