//! The root context: reads and validates the plugin configuration once, then hands every
//! stream the ready settings and counters; with pools, it publishes them for the metrics
//! singleton and copies the singleton's snapshot on a timer. Run by the `envoy.bootstrap.wasm`
//! extension under the root id [`POLLER_ROOT_ID`], the same module is that singleton instead.

use super::gen_ai_metrics::GenAiMetrics;
use super::http_context::ModelRouterStream;
use super::metrics::Metrics;
use super::picking::WorkerPicker;
use super::plugin::Plugin;
use super::poller::MetricsPoller;
use crate::config::Settings;
use crate::picker::POLLER_ROOT_ID;
use log::{error, info, LevelFilter};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};
use std::rc::Rc;

#[derive(Default)]
pub struct ModelRouterRoot {
    plugin: Option<Rc<Plugin>>,
    /// Set when this root is the metrics singleton.
    poller: Option<MetricsPoller>,
}

impl Context for ModelRouterRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(mut poller) = self.poller.take() {
            poller.on_http_call_response(self, token_id, num_headers, body_size);
            self.poller = Some(poller);
        }
    }
}

impl RootContext for ModelRouterRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        if let Ok(level) = hostcalls::get_log_level() {
            log::set_max_level(level_filter(level));
        }
        let root_id = self
            .get_property(vec!["plugin_root_id"])
            .unwrap_or_default();
        if root_id == POLLER_ROOT_ID.as_bytes() {
            let mut poller = MetricsPoller::default();
            poller.start(self);
            self.poller = Some(poller);
            return true;
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
        let picker = match WorkerPicker::new(&settings) {
            Ok(picker) => picker,
            Err(status) => {
                error!("cannot define counters ({status:?}); the plugin refuses to start");
                return false;
            }
        };
        if let Some(picker) = &picker {
            WorkerPicker::publish_targets(&settings);
            // The snapshot the singleton already holds (a reconfigured filter picks at once),
            // then a copy every period.
            picker.refresh(self.get_current_time());
            let _ = hostcalls::set_tick_period(picker.period());
            for pool in &settings.pools {
                info!(
                    "pool {}: models {:?}, endpoints {:?}, metrics {} every {} ms ({}, {}), weights {:?}",
                    pool.name, pool.models, pool.endpoints, pool.metrics_path, pool.refresh_ms,
                    pool.queue_metric, pool.kv_cache_metric, pool.weights
                );
            }
        }
        self.plugin = Some(Rc::new(Plugin::new(settings, metrics, gen_ai, picker)));
        true
    }

    fn on_tick(&mut self) {
        if let Some(mut poller) = self.poller.take() {
            poller.on_tick(self);
            self.poller = Some(poller);
        } else if let Some(picker) = self.plugin.as_ref().and_then(|p| p.picker.as_ref()) {
            picker.refresh(self.get_current_time());
        }
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
