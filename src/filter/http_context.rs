//! The per-stream context: strips any client-sent routing header, holds the request while
//! its body is scanned, then sets the header or replies.
//!
//! Envoy clears the route cache whenever a wasm filter changes the request headers, so the
//! route is matched again with the header as set (or removed); the gateway tests prove it.
//! A refusal decided before the body ends is held until it does ([`HeldRefusal`]), so that
//! Envoy keeps the client's HTTP/1.1 connection.

use super::host::send_local_reply;
use super::plugin::Plugin;
use crate::request::{
    inspect_head, BodyRouter, HeadVerdict, HeldRefusal, Rejection, RequestHeaders, Route,
};
use log::debug;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

/// Most body bytes copied into wasm memory at once, so the filter's memory stays flat
/// whatever the size of the chunks Envoy delivers.
const READ_CHUNK: usize = 64 * 1024;

enum Stage {
    /// Nothing more to do for this stream.
    Forwarding,
    /// Headers are held while the body is scanned.
    Scanning(BodyRouter),
    /// The request is refused; the rest of its body is dropped until it ends.
    Refusing(HeldRefusal),
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
                debug!("routed model {:?}", String::from_utf8_lossy(&model));
                Action::Continue
            }
            Ok(Route::Unrouted) => {
                self.plugin.metrics.unrouted();
                debug!("no model in body, forwarded without routing header");
                Action::Continue
            }
            // The whole body has been read (end of stream or trailers).
            Err(rejection) => self.reply(&rejection),
        }
    }

    /// Refuses the request once its body has ended: now if it has (`end_of_stream`) or if
    /// waiting is not worth it, else from [`Stage::Refusing`] when it does. `buffered` body
    /// bytes are in Envoy's buffer.
    fn refuse(&mut self, rejection: Rejection, buffered: usize, end_of_stream: bool) -> Action {
        if end_of_stream {
            return self.reply(&rejection);
        }
        match HeldRefusal::hold(rejection, &self.plugin.settings) {
            Ok(held) => self.drain(held, buffered, false),
            Err(rejection) => self.reply(&rejection),
        }
    }

    /// Drops the body bytes Envoy holds for a refused request; replies once the body ends.
    fn drain(&mut self, held: HeldRefusal, buffered: usize, end_of_stream: bool) -> Action {
        if buffered > 0 {
            self.set_http_request_body(0, buffered, &[]);
        }
        match held.drain(buffered as u64) {
            Ok(held) if end_of_stream => self.reply(&held.release()),
            Ok(held) => {
                self.stage = Stage::Refusing(held);
                Action::Pause
            }
            Err(rejection) => self.reply(&rejection),
        }
    }

    fn reply(&mut self, rejection: &Rejection) -> Action {
        self.stage = Stage::Forwarding;
        self.plugin.metrics.rejected(rejection.code());
        debug!("rejected: {}", rejection.message());
        send_local_reply(&rejection.local_reply());
        Action::Pause
    }
}

impl Context for ModelRouterStream {}

/// The request headers, read from Envoy in one host call: cheaper than one call per header
/// the decision looks at (each call also re-enters the VM to allocate its answer).
struct HeaderList(Vec<(String, Vec<u8>)>);

impl RequestHeaders for HeaderList {
    fn header(&self, name: &str) -> Option<&[u8]> {
        // Envoy hands header names over in lowercase.
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_slice())
    }
}

impl HttpContext for ModelRouterStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let plugin = Rc::clone(&self.plugin);
        let header = &plugin.settings.header;
        let headers = HeaderList(self.get_http_request_headers_bytes());
        // The body is the only source of the routing header.
        if headers.header(header).is_some() {
            self.set_http_request_header(header, None);
            plugin.metrics.client_header_removed();
            debug!("removed client-sent {header} header");
        }
        match inspect_head(&plugin.settings, &headers, end_of_stream) {
            HeadVerdict::Skip => {
                plugin.metrics.skipped();
                Action::Continue
            }
            HeadVerdict::Scan(router) => {
                self.stage = Stage::Scanning(router);
                Action::Pause
            }
            HeadVerdict::Reject(rejection) => self.refuse(rejection, 0, end_of_stream),
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match std::mem::replace(&mut self.stage, Stage::Forwarding) {
            Stage::Forwarding => Action::Continue,
            Stage::Refusing(held) => self.drain(held, body_size, end_of_stream),
            Stage::Scanning(mut router) => {
                if let Err(rejection) = self.scan(&mut router, body_size) {
                    return self.refuse(rejection, body_size, end_of_stream);
                }
                if !end_of_stream {
                    // Envoy keeps buffering the body; the filter keeps only the scanner's state.
                    self.stage = Stage::Scanning(router);
                    return Action::Pause;
                }
                self.route(router)
            }
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        match std::mem::replace(&mut self.stage, Stage::Forwarding) {
            Stage::Scanning(router) => self.route(router),
            Stage::Refusing(held) => self.reply(&held.release()),
            Stage::Forwarding => Action::Continue,
        }
    }
}
