//! The plugin configuration parser on arbitrary bytes: it never panics, and whatever it
//! accepts satisfies the documented limits, its catalogue included (every name and alias
//! finds its own model, names fit a body and a header, model headers are the filter's to set).
#![no_main]

use libfuzzer_sys::fuzz_target;
use model_router::config::{Settings, UnknownModels, MAX_BODY_BYTES_LIMIT, MAX_MODEL_BYTES_LIMIT};
use model_router::request::check_model;

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
    assert!(settings
        .paths
        .iter()
        .all(|p| p.starts_with('/') && !p.contains('?')));
    assert!((1..=MAX_BODY_BYTES_LIMIT).contains(&settings.max_body_bytes));
    assert!((1..=MAX_MODEL_BYTES_LIMIT).contains(&settings.max_model_bytes));
    let catalogue = &settings.catalogue;
    for model in catalogue.models() {
        for name in std::iter::once(&model.name).chain(&model.aliases) {
            assert!(check_model(name.as_bytes()).is_ok());
            assert!(name.len() <= settings.max_model_bytes);
            assert_eq!(
                catalogue.lookup(name.as_bytes()).map(|m| &m.name),
                Some(&model.name)
            );
        }
        assert!(check_model(model.upstream().as_bytes()).is_ok());
        for name in model.headers.keys() {
            assert_ne!(name, &settings.header);
            assert!(name.bytes().all(|b| !b.is_ascii_uppercase()));
        }
    }
    assert!(settings.unknown_models == UnknownModels::PassThrough || !catalogue.is_empty());
    // Path matching and model lookup take any bytes.
    let _ = settings.scans_path(data);
    let _ = catalogue.lookup(data);
});
