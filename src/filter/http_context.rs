//! The per-stream context: strips any client-sent routing header, holds the request while
//! its body is scanned, then sets the header or replies.
//!
//! Envoy clears the route cache whenever a wasm filter changes the request headers, so the
//! route is matched again with the header as set (or removed); the gateway tests prove it.

use super::root_context::Plugin;
use crate::rejection::Rejection;
use crate::request::{inspect_head, BodyRouter, HeadVerdict, RequestHeaders, Route};
use log::debug;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, Status};
use std::rc::Rc;

/// Most body bytes copied into wasm memory at once, so the filter's memory stays flat
/// whatever the size of the chunks Envoy delivers.
const READ_CHUNK: usize = 64 * 1024;

enum Stage {
    /// Nothing more to do for this stream.
    Forwarding,
    /// Headers are held while the body is scanned.
    Scanning(BodyRouter),
}

pub struct ModelRouterStream {
    plugin: Rc<Plugin>,
    stage: Stage,
}

impl ModelRouterStream {
    pub fn new(plugin: Rc<Plugin>) -> Self {
        Self {
            plugin,
            stage: Stage::Forwarding,
        }
    }

    /// Reads and scans the body bytes Envoy has buffered since the last call.
    fn scan(&self, router: &mut BodyRouter, buffered: usize) -> Result<(), Rejection> {
        router.check_size(buffered as u64)?;
        while (router.scanned() as usize) < buffered {
            let start = router.scanned() as usize;
            let size = READ_CHUNK.min(buffered - start);
            match self.get_http_request_body(start, size) {
                Some(chunk) if !chunk.is_empty() => router.feed(&chunk)?,
                _ => break,
            }
        }
        Ok(())
    }

    /// Ends the scan: sets the routing header, or replies with the refusal.
    fn route(&mut self, router: BodyRouter) -> Action {
        self.plugin.metrics.record_memory();
        match router.finish() {
            Ok(Route::Model(model)) => {
                let settings = &self.plugin.settings;
                self.set_http_request_header_bytes(&settings.header, Some(&model));
                self.plugin.metrics.routed();
                debug!(
                    "model-router: routed model {:?}",
                    String::from_utf8_lossy(&model)
                );
                Action::Continue
            }
            Ok(Route::Unrouted) => {
                self.plugin.metrics.unrouted();
                debug!("model-router: no model in body, forwarded without routing header");
                Action::Continue
            }
            Err(rejection) => self.reject(&rejection),
        }
    }

    fn reject(&mut self, rejection: &Rejection) -> Action {
        self.stage = Stage::Forwarding;
        self.plugin.metrics.rejected(rejection);
        debug!("model-router: rejected: {}", rejection.message());
        let reply = rejection.local_reply();
        send_local_reply(reply.status, &reply.detail, reply.body.as_bytes());
        Action::Pause
    }
}

impl Context for ModelRouterStream {}

impl RequestHeaders for ModelRouterStream {
    fn header(&self, name: &str) -> Option<String> {
        self.get_http_request_header(name)
    }
}

impl HttpContext for ModelRouterStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let plugin = Rc::clone(&self.plugin);
        let header = &plugin.settings.header;
        // The body is the only source of the routing header.
        if self.get_http_request_header_bytes(header).is_some() {
            self.set_http_request_header(header, None);
            plugin.metrics.client_header_removed();
            debug!("model-router: removed client-sent {header} header");
        }
        match inspect_head(&plugin.settings, self, end_of_stream) {
            HeadVerdict::Skip => {
                plugin.metrics.skipped();
                Action::Continue
            }
            HeadVerdict::Scan(router) => {
                self.stage = Stage::Scanning(router);
                Action::Pause
            }
            HeadVerdict::Reject(rejection) => self.reject(&rejection),
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Stage::Scanning(mut router) = std::mem::replace(&mut self.stage, Stage::Forwarding)
        else {
            return Action::Continue;
        };
        if let Err(rejection) = self.scan(&mut router, body_size) {
            return self.reject(&rejection);
        }
        if !end_of_stream {
            // Envoy keeps buffering the body; the filter keeps only the scanner's state.
            self.stage = Stage::Scanning(router);
            return Action::Pause;
        }
        self.route(router)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        match std::mem::replace(&mut self.stage, Stage::Forwarding) {
            Stage::Scanning(router) => self.route(router),
            Stage::Forwarding => Action::Continue,
        }
    }
}

/// Sends a local reply with a response-code detail, which the SDK's `send_http_response`
/// leaves empty.
fn send_local_reply(status: u32, detail: &str, body: &[u8]) {
    const CONTENT_TYPE: (&str, &str) = ("content-type", "application/json");
    let headers = serialize_headers(&[CONTENT_TYPE]);
    // SAFETY: every pointer and length describes a live slice for the duration of the call.
    let status = unsafe {
        proxy_send_local_response(
            status,
            detail.as_ptr(),
            detail.len(),
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    };
    if status != Status::Ok {
        log::error!("model-router: local reply failed: {status:?}");
    }
}

/// The proxy-wasm header map encoding: count, then each name and value length, then each
/// name and value followed by a NUL.
fn serialize_headers(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    for (name, value) in headers {
        bytes.extend_from_slice(&(name.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in headers {
        for part in [name, value] {
            bytes.extend_from_slice(part.as_bytes());
            bytes.push(0);
        }
    }
    bytes
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> Status;
}
