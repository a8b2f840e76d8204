//! What every stream of one plugin shares: the validated settings, the counters, and the
//! headers the filter owns.

use super::metrics::Metrics;
use crate::config::Settings;

#[derive(Debug)]
pub struct Plugin {
    pub settings: Settings,
    pub metrics: Metrics,
    /// Headers only the filter sets: the routing header and every header a catalogue model
    /// sets. A client-sent copy is removed from every request.
    pub owned_headers: Vec<String>,
}

impl Plugin {
    pub fn new(settings: Settings, metrics: Metrics) -> Self {
        let mut owned_headers = vec![settings.header.clone()];
        owned_headers.extend(
            settings
                .catalogue
                .header_names()
                .into_iter()
                .map(str::to_owned),
        );
        Self {
            settings,
            metrics,
            owned_headers,
        }
    }
}
