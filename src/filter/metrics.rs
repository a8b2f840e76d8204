//! Counters, defined once per plugin and named `model_router.<thing>_<outcome>`; Envoy
//! exposes them under its `wasmcustom.` stats prefix.

use crate::rejection::{Rejection, CODES};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MetricType, Status};

#[derive(Debug)]
pub struct Metrics {
    routed: u32,
    unrouted: u32,
    skipped: u32,
    client_header_removed: u32,
    rejected: [u32; CODES.len()],
}

impl Metrics {
    pub fn define() -> Result<Self, Status> {
        let counter = |name: &str| hostcalls::define_metric(MetricType::Counter, name);
        let mut rejected = [0; CODES.len()];
        for (id, code) in rejected.iter_mut().zip(CODES) {
            *id = counter(&format!("model_router.requests_rejected_{code}"))?;
        }
        Ok(Self {
            routed: counter("model_router.requests_routed")?,
            unrouted: counter("model_router.requests_unrouted")?,
            skipped: counter("model_router.requests_skipped")?,
            client_header_removed: counter("model_router.client_header_removed")?,
            rejected,
        })
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

    /// A client sent the routing header itself; it was removed.
    pub fn client_header_removed(&self) {
        increment(self.client_header_removed);
    }

    pub fn rejected(&self, rejection: &Rejection) {
        increment(self.rejected[rejection.index()]);
    }
}

fn increment(id: u32) {
    // A counter that cannot be incremented must not fail the request.
    let _ = hostcalls::increment_metric(id, 1);
}
