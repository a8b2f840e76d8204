//! The per-stream context: strips any client-sent header the filter owns, answers the model
//! list, holds the request while its body is scanned, then sets the headers (rewriting the
//! body's model when the backend knows it by another name) or replies.
//!
//! Envoy clears the route cache whenever a wasm filter changes the request headers, so the
//! route is matched again with the header as set (or removed); the gateway tests prove it.
//! A refusal decided before the body ends is held until it does ([`HeldRefusal`]), so that
//! Envoy keeps the client's HTTP/1.1 connection.

use super::host::send_local_reply;
use super::plugin::Plugin;
use crate::request::rewrite::{self, BodyBuffer};
use crate::request::{
    inspect_head, BodyRouter, HeadVerdict, HeldRefusal, Rejection, RequestHeaders, Rewrite, Route,
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

    /// Ends the scan: sets the routing header (and the model's, and rewrites the body's model
    /// if need be), or replies with the refusal.
    fn route(&mut self, router: BodyRouter) -> Action {
        let plugin = Rc::clone(&self.plugin);
        plugin.metrics.record_memory();
        let body_len = router.scanned();
        match router.finish(&plugin.settings.catalogue) {
            Ok(Route::Model(routed)) => {
                if let Some(change) = &routed.rewrite {
                    if let Err(rejection) = self.rewrite(body_len, change) {
                        return self.reply(&rejection);
                    }
                }
                self.set_http_request_header_bytes(&plugin.settings.header, Some(&routed.model));
                for (name, value) in routed.entry.iter().flat_map(|e| &e.headers) {
                    self.set_http_request_header(name, Some(value));
                }
                plugin.metrics.routed();
                debug!("routed model {:?}", String::from_utf8_lossy(&routed.model));
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

    /// Replaces the body's model value in Envoy's buffer and sets the content length to match.
    fn rewrite(&mut self, body_len: u64, change: &Rewrite) -> Result<(), Rejection> {
        let started = self.get_current_time();
        let mut body = RequestBody {
            stream: self,
            len: body_len,
        };
        let copied = rewrite::replace(
            &mut body,
            body_len,
            change.value.clone(),
            &change.replacement,
        )
        .map_err(|_| Rejection::RewriteFailed)?;
        let new_len = body.len;
        // Envoy forwards the content-length it was sent: it must say the new length.
        if self.get_http_request_header("content-length").is_some() {
            self.set_http_request_header("content-length", Some(&new_len.to_string()));
        }
        self.plugin.metrics.rewritten();
        if log::log_enabled!(log::Level::Debug) {
            let took = self
                .get_current_time()
                .duration_since(started)
                .unwrap_or_default();
            debug!(
                "rewrote the model at {:?} in {} us ({} bytes copied out, {} back); body now {new_len} bytes",
                change.value,
                took.as_micros(),
                copied.out,
                copied.back
            );
        }
        Ok(())
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

/// The request body in Envoy's buffer, for [`rewrite::replace`]; `len` follows the edits.
struct RequestBody<'a> {
    stream: &'a ModelRouterStream,
    len: u64,
}

impl BodyBuffer for RequestBody<'_> {
    fn read(&mut self, start: u64, len: usize) -> Vec<u8> {
        self.stream
            .get_http_request_body(start as usize, len)
            .unwrap_or_default()
    }

    fn replace_front(&mut self, drain: u64, data: &[u8]) {
        self.stream.set_http_request_body(0, drain as usize, data);
        self.len = self.len - drain + data.len() as u64;
    }

    fn append(&mut self, data: &[u8]) {
        // Envoy appends when the offset is at or past the end.
        self.stream
            .set_http_request_body(self.len as usize, 0, data);
        self.len += data.len() as u64;
    }
}

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
        let headers = HeaderList(self.get_http_request_headers_bytes());
        // The body (and the catalogue) are the only source of these headers.
        for header in &plugin.owned_headers {
            if headers.header(header).is_some() {
                self.set_http_request_header(header, None);
                plugin.metrics.client_header_removed();
                debug!("removed client-sent {header} header");
            }
        }
        match inspect_head(&plugin.settings, &headers, end_of_stream) {
            HeadVerdict::Skip => {
                plugin.metrics.skipped();
                Action::Continue
            }
            HeadVerdict::Models(request) => {
                plugin.metrics.models_answered();
                send_local_reply(&request.answer(&plugin.settings.catalogue));
                Action::Pause
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
