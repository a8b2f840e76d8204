//! What every stream of one plugin shares: the validated settings, the counters, the headers
//! the filter owns and the model labels of the response metrics.

use super::gen_ai_metrics::GenAiMetrics;
use super::metrics::Metrics;
use super::picking::WorkerPicker;
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
    /// Headers only the filter sets: the routing header, the endpoint picker's destination
    /// header and every header a catalogue model sets. A client-sent copy is removed from
    /// every request.
    pub owned_headers: Vec<String>,
    /// The endpoint picker, when pools are configured.
    pub picker: Option<WorkerPicker>,
}

impl Plugin {
    pub fn new(
        settings: Settings,
        metrics: Metrics,
        gen_ai: GenAiMetrics,
        picker: Option<WorkerPicker>,
    ) -> Self {
        let mut owned_headers = vec![
            settings.header.clone(),
            settings.picker.destination_header.clone(),
        ];
        owned_headers.extend(
            settings
                .catalogue
                .header_names()
                .into_iter()
                .map(str::to_owned),
        );
        let labels = RefCell::new(settings.model_labels());
        Self {
            settings,
            metrics,
            gen_ai,
            labels,
            owned_headers,
            picker,
        }
    }
}
