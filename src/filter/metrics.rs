//! Counters, defined once per plugin and named `model_router.<thing>_<outcome>`; Envoy
//! exposes them under its `wasmcustom.` stats prefix.

use super::host::linear_memory_bytes;
use crate::reply::ErrorCode;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MetricType, Status};
use std::cell::Cell;

#[derive(Debug)]
pub struct Metrics {
    routed: u32,
    unrouted: u32,
    skipped: u32,
    client_header_removed: u32,
    rewritten: u32,
    models_answered: u32,
    rejected: [u32; ErrorCode::ALL.len()],
    memory: u32,
    /// The last value given to the memory gauge, to call the host only when it changes.
    memory_recorded: Cell<u64>,
}

impl Metrics {
    pub fn define() -> Result<Self, Status> {
        let counter = |name: &str| hostcalls::define_metric(MetricType::Counter, name);
        let mut rejected = [0; ErrorCode::ALL.len()];
        for (id, code) in rejected.iter_mut().zip(ErrorCode::ALL) {
            *id = counter(&format!("model_router.requests_rejected_{}", code.as_str()))?;
        }
        Ok(Self {
            routed: counter("model_router.requests_routed")?,
            unrouted: counter("model_router.requests_unrouted")?,
            skipped: counter("model_router.requests_skipped")?,
            client_header_removed: counter("model_router.client_header_removed")?,
            rewritten: counter("model_router.requests_rewritten")?,
            models_answered: counter("model_router.models_answered")?,
            rejected,
            memory: hostcalls::define_metric(MetricType::Gauge, "model_router.wasm_memory_bytes")?,
            memory_recorded: Cell::new(0),
        })
    }

    /// Records the size of the VM's linear memory (see [`linear_memory_bytes`]).
    pub fn record_memory(&self) {
        let bytes = linear_memory_bytes();
        if self.memory_recorded.replace(bytes) != bytes {
            let _ = hostcalls::record_metric(self.memory, bytes);
        }
    }

    /// A body named a model and the header was set.
    pub fn routed(&self) {
        increment(self.routed);
    }

    /// A body had no model and was forwarded without the header (`missing_model: pass_through`).
    pub fn unrouted(&self) {
        increment(self.unrouted);
    }

    /// A request on another path, or without a body, was forwarded unscanned.
    pub fn skipped(&self) {
        increment(self.skipped);
    }

    /// A client sent a header only the filter sets (the routing header, a catalogue header);
    /// it was removed.
    pub fn client_header_removed(&self) {
        increment(self.client_header_removed);
    }

    /// A body's model was rewritten to the name its backend knows.
    pub fn rewritten(&self) {
        increment(self.rewritten);
    }

    /// A `GET /v1/models` (list or one model) was answered from the catalogue.
    pub fn models_answered(&self) {
        increment(self.models_answered);
    }

    /// The filter answered the request itself with this error.
    pub fn rejected(&self, code: ErrorCode) {
        increment(self.rejected[code.index()]);
    }
}

fn increment(id: u32) {
    // A counter that cannot be incremented must not fail the request.
    let _ = hostcalls::increment_metric(id, 1);
}
