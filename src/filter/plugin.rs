//! What every stream of one plugin shares: the validated settings and the counters.

use super::metrics::Metrics;
use crate::config::Settings;

#[derive(Debug)]
pub struct Plugin {
    pub settings: Settings,
    pub metrics: Metrics,
}
