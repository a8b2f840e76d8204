//! The root context: reads and validates the plugin configuration once, then hands every
//! stream the ready settings and counters.

use super::gen_ai_metrics::GenAiMetrics;
use super::http_context::ModelRouterStream;
use super::metrics::Metrics;
use super::plugin::Plugin;
use crate::config::Settings;
use log::{error, info, LevelFilter};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};
use std::rc::Rc;

#[derive(Default)]
pub struct ModelRouterRoot {
    plugin: Option<Rc<Plugin>>,
}

impl Context for ModelRouterRoot {}

impl RootContext for ModelRouterRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        if let Ok(level) = hostcalls::get_log_level() {
            log::set_max_level(level_filter(level));
        }
        let config = self.get_plugin_configuration().unwrap_or_default();
        let settings = match Settings::parse(&config) {
            Ok(settings) => settings,
            Err(e) => {
                error!("{e}; the plugin refuses to start");
                return false;
            }
        };
        let (metrics, gen_ai) = match (Metrics::define(), GenAiMetrics::define()) {
            (Ok(metrics), Ok(gen_ai)) => (metrics, gen_ai),
            (Err(status), _) | (_, Err(status)) => {
                error!("cannot define counters ({status:?}); the plugin refuses to start");
                return false;
            }
        };
        info!(
            "routing by body model into header {:?} on {:?} (max body {} bytes, max model {} bytes, missing model: {:?}; catalogue of {} models, unknown models: {:?})",
            settings.header, settings.paths, settings.max_body_bytes, settings.max_model_bytes, settings.missing_model,
            settings.catalogue.models().len(), settings.unknown_models
        );
        info!(
            "responses: usage {}, add include_usage {}; model labels: {}",
            settings.response.usage,
            settings.response.add_include_usage,
            if settings.catalogue.is_empty() {
                "learned from answers (no models listed)".to_owned()
            } else {
                format!(
                    "{} listed models, then \"other\"",
                    settings.catalogue.models().len()
                )
            }
        );
        self.plugin = Some(Rc::new(Plugin::new(settings, metrics, gen_ai)));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Envoy creates streams only for a plugin whose on_configure succeeded.
        let plugin = self.plugin.clone()?;
        Some(Box::new(ModelRouterStream::new(plugin)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Trace => LevelFilter::Trace,
        LogLevel::Debug => LevelFilter::Debug,
        LogLevel::Info => LevelFilter::Info,
        LogLevel::Warn => LevelFilter::Warn,
        LogLevel::Error => LevelFilter::Error,
        LogLevel::Critical => LevelFilter::Error,
    }
}
