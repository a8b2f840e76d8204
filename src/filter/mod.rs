//! The proxy-wasm host layer: the only code that calls Envoy.

mod gen_ai_metrics;
mod host;
mod http_context;
mod metrics;
mod picking;
mod plugin;
mod poller;
mod root_context;

proxy_wasm::main! {{
    // Records are filtered again by the host; on_configure narrows this to the host's level.
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Trace);
    // After set_log_level, which installs the SDK's own hook: a panic aborts the VM, and
    // Envoy then applies the filter's failure_policy to every request.
    std::panic::set_hook(Box::new(|panic| {
        let _ = proxy_wasm::hostcalls::log(
            proxy_wasm::types::LogLevel::Critical,
            &format!("{panic}; the VM aborts and Envoy applies the failure_policy"),
        );
    }));
    proxy_wasm::set_root_context(|_| Box::new(root_context::ModelRouterRoot::default()));
}}
