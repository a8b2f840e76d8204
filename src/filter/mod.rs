//! The proxy-wasm host layer: the only code that calls Envoy.

mod http_context;
mod metrics;
mod root_context;

proxy_wasm::main! {{
    // Records are filtered again by the host; on_configure narrows this to the host's level.
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Trace);
    proxy_wasm::set_root_context(|_| Box::new(root_context::ModelRouterRoot::default()));
}}
