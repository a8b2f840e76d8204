//! What every stream of one plugin shares: the validated settings, the counters and the
//! model labels of the response metrics.

use super::gen_ai_metrics::GenAiMetrics;
use super::metrics::Metrics;
use crate::config::Settings;
use crate::response::labels::ModelLabels;
use std::cell::RefCell;

#[derive(Debug)]
pub struct Plugin {
    pub settings: Settings,
    pub metrics: Metrics,
    pub gen_ai: GenAiMetrics,
    /// Learned from answers when no models are listed; the VM runs one stream at a time.
    pub labels: RefCell<ModelLabels>,
}
